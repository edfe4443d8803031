"""The pipeline behind the command line, from a typed `Options`: plan -> census -> pre-flight checks (data, weights) ->
run folders -> a launcher (benchmark/launchers.py) -> the report (tables, the paper's numbers beside them, figures).

`benchmark/cli.py` only parses arguments into an `Options` and calls `run`; tests and scripts can call `run` (or
`census`, `report`) directly.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from datasets import real
from datasets.base import DataError
from datasets.locks import LockUnavailable, describe_holder, holder_path, try_lock
from datasets.registry import get_dataset

from . import slurm, store
from .backbone_specs import PAPER_BACKBONE, PRETRAINED_KINDS, SUITE_FILE_KINDS
from .collect import is_ablation_suite, other_start, stored_summary, table_specs, tidy_frame, with_stored_runs
from .catalogue import method_label
from .cost import cost_frame, cost_table, estimate, estimate_text, find_calibration, write_cost_table
from .errors import UserError
from .figures import write_figures
from .initialisation import (PretrainingFailed, cached_simclr_state, find_pretrained, load_pretrained,
                             missing_weights_message, new_backbone)
from .html_report import run_view, write_html
from .latex_pdf import LatexError, compile_pdf
from .launchers import Launcher, LocalLauncher
from .provenance import mixed_code_warnings
from .paper import ABLATION_SETTING, comparable, compare_with_paper, load_paper_results, write_comparison
from .render import to_markdown, write_report
from .runner import resolve_device
from .spec import canonical_json
from .backbone_choice import suite_with_backbone
from .suite_files import is_suite_file
from .suites import get_suite, plan
from .tables import aggregate, save_tidy


@dataclass
class Options:
    """What one invocation asks for (the command line's flags, parsed and checked). Paths are absolute."""
    suite: str = "quickstart"
    output: Path = Path("results")
    methods: list[str] | None = None           # None: the suite's
    pairs: list[str] | None = None
    seeds: list[int] | None = None
    settings: list[str] | None = None
    assignments: list[str] = field(default_factory=list)    # --set KEY=VALUE
    baseline_init: str = "suite"
    backbone: str | None = None                # --backbone NAME over the suite's (suite_files.suite_with_backbone)
    init: str | None = None                    # --init INIT
    budget: str | None = None                  # --budget NAME over the suite's (methods.base.BUDGETS)
    data_root: Path | None = None
    cache_dir: Path | None = None              # None: <output>/cache
    pretrained: Path | None = None
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False                      # torch.compile of the backbones (benchmark/acceleration.py)
    tf32: bool = True                          # CUDA: TF32 float32 arithmetic
    plugins: list[str] = field(default_factory=list)   # keys of the loaded plugins (methods/plugins.py)
    launcher: Launcher = field(default_factory=LocalLauncher)
    dry_run: bool = False
    report: bool = False                       # tables from stored runs, no training
    summary: bool = False
    compare_paper: bool = False
    figures: bool = False
    retry_failed: bool = False
    caption: str = "short"                     # the LaTeX fragments' captions: short (a paper's) or full
    tensorboard: bool = False                  # runs write TensorBoard event files
    strict: bool = False
    calibration: Path | None = None            # --dry-run's rates (benchmark/cost.py); None: the newest stored one

    def __post_init__(self):
        self.output = Path(self.output).resolve()
        self.cache_dir = Path(self.cache_dir or self.output / "cache").resolve()
        self.data_root = Path(self.data_root).resolve() if self.data_root else None


CENSUS_STATUSES = ("done", "failed", "queued", "running", "incomplete", "missing")


class Census(dict):
    """status -> the planned runs with that status (CENSUS_STATUSES); `holders` maps the run id of each run that a
    process trains now (it holds the run's lock) to that process's record (host, pid, job, since)."""

    def __init__(self):
        super().__init__({status: [] for status in CENSUS_STATUSES})
        self.holders: dict[str, dict] = {}


def census(specs, output_root: Path, record: bool = True) -> Census:
    """Each planned run's status from its folder. An incomplete run that a process trains now (it holds the run's
    lock: a local launch, a --jobs worker, a SLURM task, on this machine or another sharing the folder) is `running`,
    with its holder in `holders`; one whose SLURM job is still in the queue is `queued` or `running` (asked of the
    cluster only when some run folder records a job).

    An incomplete run whose job has left the queue without starting the run (no log.txt) died at its start: with
    `record`, the death is noted in its slurm.json, and after `slurm.START_FAILURES_BEFORE_FAILED` in a row the run
    is marked FAILED with the tail of the job's stderr (a dry run records nothing)."""
    groups = Census()
    incomplete_with_job = []
    for spec in specs:
        run_dir = spec.run_dir(output_root)
        status = store.run_status(run_dir)
        if status in ("incomplete", "failed"):
            holder = store.run_holder(run_dir)
            if holder is not None:
                groups.holders[spec.run_id] = holder
                groups["running"].append(spec)
                continue
        job = slurm.recorded_job(run_dir) if status == "incomplete" else None
        if job is not None:
            incomplete_with_job.append((spec, job))
        else:
            groups[status].append(spec)
    states = slurm.queue_states() if incomplete_with_job else None
    gone = []
    for spec, job in incomplete_with_job:
        active = slurm.active_state(job, states)
        if active:
            groups[active].append(spec)
        else:
            gone.append((spec, job))
    died = [(spec, job) for spec, job in gone
            if states is not None and not (spec.run_dir(output_root) / "log.txt").exists()]
    ended = slurm.accounting_states([job for _, job in died]) if died else {}
    for spec, job in gone:
        run_dir = spec.run_dir(output_root)
        if (spec, job) in died and record:
            deaths = slurm.note_start_failure(run_dir, job, ended.get(job, "left the queue"))
            if deaths >= slurm.START_FAILURES_BEFORE_FAILED:
                store.mark_failed(run_dir, start_failure_reason(run_dir, deaths))
                groups["failed"].append(spec)
                continue
        elif (run_dir / "log.txt").exists():
            slurm.forget_start_failures(run_dir)
        groups["incomplete"].append(spec)
    return groups


def describe_run(spec) -> str:
    return f"{spec.method} {spec.setting} {spec.query_domain}->{spec.retrieval_domain} seed {spec.seed}"


def held_runs_text(groups: Census) -> list[str]:
    """One line per planned run that another process trains now: who (host, pid, SLURM job, since when)."""
    return [f"  running    {describe_run(spec)}: trained by {describe_holder(groups.holders[spec.run_id])}; "
            f"left to it" for spec in groups["running"] if spec.run_id in groups.holders]


def code_warnings(done_specs, output_root: Path) -> list[str]:
    """--dry-run and the reports: the done runs of each table (dataset x setting) made by different code, or resumed
    under other code than they started with (benchmark/provenance.py)."""
    tables: dict[str, list] = {}
    for spec in done_specs:
        tables.setdefault(f"the {spec.dataset} {spec.setting} table", []).append(spec)
    return mixed_code_warnings(tables, output_root, describe_run)


def start_failure_reason(run_dir: Path, deaths: int) -> str:
    jobs = ", ".join(f"{f['job_id']} ({f['state']})" for f in slurm.read_job_record(run_dir).get("start_failures", []))
    return (f"its SLURM job ended before the run started, {deaths} times in a row (jobs {jobs}); the tail of the last "
            f"job's stderr:\n{slurm.stderr_tail(run_dir)}\nFix the cause (the task's setup lines, the software on "
            f"the nodes), then submit again with --retry-failed.")


def census_text(groups: dict[str, list], retry_failed: bool) -> str:
    to_run = len(groups["missing"]) + len(groups["incomplete"]) + (len(groups["failed"]) if retry_failed else 0)
    total = sum(len(v) for v in groups.values())
    in_queue = (f"{len(groups['queued'])} queued, {len(groups['running'])} running, "
                if groups["queued"] or groups["running"] else "")
    return (f"{total} runs planned: {len(groups['done'])} done, {len(groups['failed'])} failed, {in_queue}"
            f"{len(groups['incomplete'])} incomplete, {len(groups['missing'])} not started -> {to_run} to run")


def budget_text(suite, specs) -> str:
    """`--dry-run`'s line on the schedule: the suite's budget and each planned method's epochs and batch size."""
    schedule = {}
    for spec in specs:
        schedule.setdefault(spec.method, f"{spec.hparams.get('epochs', '?')} x {spec.hparams.get('batch_size', '?')}")
    trained = ", ".join(f"{m} {v}" for m, v in schedule.items() if m != "pretrained")
    return f"budget {suite.budget_name()} (epochs x batch per domain): {trained or 'nothing trained'}"


def census_problems(groups: dict[str, list], output_root: Path) -> list[str]:
    """Files of the planned runs that cannot be read, or were moved aside as unreadable, one line each: what the
    next invocation does about them."""
    lines = []
    for status in CENSUS_STATUSES:
        for spec in groups[status]:
            run_dir = spec.run_dir(output_root)
            where = describe_run(spec)
            if status == "incomplete" and (run_dir / "DONE").is_file():
                for name, reason in store.unreadable_files(run_dir).items():
                    lines.append(f"  unreadable {where}: {run_dir / name} ({reason}); counted as incomplete: the "
                                 f"next run of the suite evaluates it again from its checkpoint")
            last = run_dir / "ckpt" / "last.pt"
            if status in ("incomplete", "failed") and last.is_file() and not store.checkpoint_looks_readable(last):
                lines.append(f"  unreadable {where}: {last} (not a whole checkpoint: truncated?); the next run of "
                             f"the suite moves it aside and resumes from ckpt/previous.pt, or from epoch 0")
            aside = store.moved_aside(run_dir)
            if aside:
                lines.append(f"  recovered  {where}: {len(aside)} unreadable file(s) moved aside "
                             f"({', '.join(str(p.relative_to(run_dir)) for p in aside)})")
    return lines


def run(options: Options) -> int:
    """Plan the suite, take the census, then (unless `dry_run` or `report`) check the data and weights, prepare the run
    folders and hand the runs to the launcher; then the tables. Returns the exit status: 0, 1 when a run behind the
    tables failed, 2 when a dry run finds the plan cannot start. Raises UserError / DataError for bad input."""
    if options.summary:
        if options.backbone or options.init:
            raise UserError("--summary shows the stored runs of every backbone; --backbone and --init choose the "
                            "runs of one suite")
        if is_suite_file(options.suite):            # its dataset and methods join the summary's suites
            get_suite(options.suite)
        return report("summary", [], options.output, summary=True, compare_paper=options.compare_paper,
                      caption=options.caption)
    suite = get_suite(options.suite)
    if options.backbone or options.init:
        suite = suite_with_backbone(suite, options.backbone, options.init)
    if options.budget:
        suite = replace(suite, budget=options.budget)
    specs = plan(suite, methods=options.methods, pairs=options.pairs, seeds=options.seeds,
                 settings=options.settings, assignments=options.assignments, baseline_init=options.baseline_init)
    output_root = options.output
    groups = census(specs, output_root, record=not options.dry_run)
    print(census_text(groups, options.retry_failed))
    for line in census_problems(groups, output_root) + held_runs_text(groups):
        print(line)
    if options.dry_run:
        for line in code_warnings(groups["done"], output_root):
            print(line)
    to_run = groups["missing"] + groups["incomplete"] + (groups["failed"] if options.retry_failed else [])
    if options.dry_run:
        print(budget_text(suite, specs))
        print_census_details(groups, output_root)
        calibration = find_calibration(output_root, options.calibration)
        text = estimate_text(estimate(to_run, output_root, calibration), calibration)
        if text:
            print(text)
        missing = what_the_plan_lacks(suite, to_run, options)
        if missing:
            print(f"\nthe {len(to_run)} run(s) to run cannot start as things are:")
            for text in missing:
                print("  " + text.replace("\n", "\n  "))
            return 2
        return 0
    if not options.report:
        check_data(suite.dataset, options.data_root, domains=domains_of(to_run), strict=options.strict)
        missing_modules = modules_the_plan_lacks(to_run, options.tensorboard)
        if missing_modules:
            raise UserError("the plan needs Python modules that cannot be imported here; nothing was trained:\n  "
                            + "\n  ".join(missing_modules))
        if to_run:
            check_locks(options.output, options.cache_dir)
            pretrained = check_initialisation(suite, to_run, options.cache_dir, options.data_root, options.pretrained)
            if isinstance(options.launcher, LocalLauncher):
                pretrain_shared_inits(to_run, options)
            launch = store.Launch(data_root=str(options.data_root) if options.data_root else None,
                                  cache_dir=str(options.cache_dir), device=options.device,
                                  precision=options.precision, channels_last=options.channels_last,
                                  compile=options.compile, tf32=options.tf32,
                                  pretrained=str(pretrained) if pretrained else None,
                                  plugins=tuple(options.plugins), tensorboard=options.tensorboard,
                                  suite_file=str(Path(options.suite).resolve()) if is_suite_file(options.suite)
                                  else None)
            spec_paths = []
            new_run_dirs = [spec.run_dir(output_root) for spec in groups["missing"]]
            for spec in to_run:
                run_dir = store.prepare_run_dir(spec, output_root, launch)
                if store.run_status(run_dir) == "failed":          # --retry-failed: counts start again
                    slurm.forget_start_failures(run_dir)
                store.clear_failure(run_dir)
                spec_paths.append(run_dir / "spec.json")
            try:
                finished_here = options.launcher.launch(spec_paths, output_root, suite.name)
            except UserError:
                # refused (sbatch): the folders made for this launch go again (nothing half-written); runs of an
                # array that was accepted before the refusal keep theirs
                for run_dir in new_run_dirs:
                    if slurm.recorded_job(run_dir) is None:
                        shutil.rmtree(run_dir, ignore_errors=True)
                raise
            if not finished_here:
                return 0
        else:
            message = options.launcher.idle_message(groups)
            if message:
                print(message)
    return report(suite.name, specs, output_root, compare_paper=options.compare_paper, figures=options.figures,
                  caption=options.caption, budget=suite.budget_name())


def what_the_plan_lacks(suite, to_run, options: Options) -> list[str]:
    """--dry-run: what a real run of the plan would stop on before training (the data, the pretrained weights), each
    with where it was looked for; [] when it can start."""
    if not to_run:
        return []
    lacking = []
    try:
        check_data(suite.dataset, options.data_root, domains=domains_of(to_run), strict=options.strict)
    except (UserError, DataError) as error:
        lacking.append(f"data: {error}")
    lacking += [f"modules: {text}" for text in modules_the_plan_lacks(to_run, options.tensorboard)]
    try:
        check_locks(*(folder if folder.is_dir() else None for folder in (options.output, options.cache_dir)))
    except UserError as error:
        lacking.append(f"locks: {error}")
    try:
        check_initialisation(suite, to_run, options.cache_dir, options.data_root, options.pretrained)
    except (UserError, DataError) as error:
        lacking.append(f"weights: {str(error).removesuffix('; nothing was trained')}")
    return lacking


# How to install a module a method or option needs, when its pip name is not its import name
INSTALL_HINTS = {"faiss": "pip install faiss-cpu (on a GPU machine, the project's extra 'gpu': faiss-gpu)",
                 "tensorboard": "pip install tensorboard (the project's optional extra 'tensorboard')"}


def modules_the_plan_lacks(to_run, tensorboard: bool = False) -> list[str]:
    """The Python modules the runs to do need (each method's `required_modules`; tensorboard for --tensorboard)
    that cannot be imported here, one line each: the module, who needs it, the import error, how to install it."""
    import importlib
    from methods import get_method_class
    needed: dict[str, list[str]] = {}
    for method in dict.fromkeys(spec.method for spec in to_run):
        for module in get_method_class(method).required_modules:
            needed.setdefault(module, []).append(method)
    if tensorboard and to_run:
        needed.setdefault("tensorboard", []).append("--tensorboard")
    lacking = []
    for module, users in needed.items():
        try:
            importlib.import_module(module)
        except Exception as error:            # ImportError, or a broken install raising anything at import
            lacking.append(f"{module} (needed by {', '.join(users)}) cannot be imported: {type(error).__name__}: "
                           f"{error}. {INSTALL_HINTS.get(module, f'pip install {module}')}")
    return lacking


def check_locks(output: Path | None, cache_dir: Path | None) -> None:
    """Before anything is written: file locks work in the output and cache folders (a run's lock, a cache entry's);
    UserError naming the folder and the remedy where they do not (some NFS and Lustre mounts). None: not checked."""
    from datasets.cache import CACHE_REMEDY
    for folder, remedy in ((output, store.RUN_LOCK_REMEDY), (cache_dir, CACHE_REMEDY)):
        if folder is None:
            continue
        probe = Path(folder) / f".lock-probe-{os.getpid()}"
        try:
            lock = try_lock(probe, remedy)
        except LockUnavailable as error:
            raise UserError(str(error)) from None
        finally:
            for path in (probe, holder_path(probe)):
                path.unlink(missing_ok=True)
        if lock is not None:
            lock.release()


def compile_latex(tex_files: list[Path]) -> list[str]:
    """The LaTeX documents compiled to PDF beside them when pdflatex is installed (TeX Live); said when it is not.

    Each document on its own: one that pdflatex refuses is named, with pdflatex's error lines and its log's path,
    and the others are still compiled. Returns those messages (empty when every PDF was made or pdflatex is absent);
    the caller prints them last. Nothing here raises: the report's tables, figures and HTML page never depend on the
    PDF."""
    pdfs, failures = [], []
    for path in tex_files:
        try:
            pdfs.append(compile_pdf(path))
        except LatexError as error:
            log = f"; pdflatex's log: {error.log_path}" if error.log_path else ""
            failures.append(f"no PDF of {path.name}: {error}{log}. The .tex, the fragments, the markdown, the CSV, "
                            f"the figures and the HTML page are written; this is a bug of the report, please report "
                            f"it with the log")
    if None in pdfs:
        print("pdflatex not found: the .tex files are standalone documents, compile them with TeX Live "
              "(apt-get install texlive-latex-recommended) for PDFs")
    elif pdfs:
        print(f"pdf: {', '.join(str(p) for p in pdfs)}")
    return failures


def print_census_details(groups: dict[str, list], output_root: Path) -> None:
    """--dry-run: every run that is not done, with its folder; failed ones with their reason, SLURM ones with their
    job id: a queued one with its pending reason, an incomplete one with the job's last state from the cluster's
    accounting, and, when the job ended before the run started (no log.txt), the tail of its stderr."""
    jobs = {id(spec): slurm.recorded_job(spec.run_dir(output_root))
            for status in ("queued", "running", "incomplete") for spec in groups[status]}
    finished = slurm.accounting_states([j for j in jobs.values() if j])
    details = (slurm.queue_details() or {}) if groups["queued"] else {}
    for status in ("failed", "queued", "running", "incomplete", "missing"):
        for spec in groups[status]:
            run_dir = spec.run_dir(output_root)
            job = jobs.get(id(spec))
            job_text = f"  job {job}" if job else ""
            if spec.run_id in groups.holders:
                job_text += f"  trained by {describe_holder(groups.holders[spec.run_id])}"
            if job and status == "incomplete" and job in finished:
                job_text += f" ({finished[job]})"
            if job and status == "queued" and job in details:
                job_text += f" ({details[job][0]}: {details[job][1]})"
            print(f"  {status:<10} {spec.method:<12} {spec.setting:<8} {spec.query_domain}->"
                  f"{spec.retrieval_domain} seed {spec.seed}  {run_dir}" + job_text)
            if status == "failed":
                print("             reason: " + store.failure_reason(run_dir).replace("\n", "\n                     "))
            elif job and status == "incomplete" and not (run_dir / "log.txt").exists():
                recorded = [f.get("job_id") for f in slurm.read_job_record(run_dir).get("start_failures", [])]
                deaths = len(recorded) + (job not in recorded)
                print(f"             the job ended before the run started ({deaths} of "
                      f"{slurm.START_FAILURES_BEFORE_FAILED} in a row before the run is FAILED); its stderr ends:")
                print("               " + slurm.stderr_tail(run_dir).replace("\n", "\n               "))


def domains_of(specs) -> list[str]:
    return list(dict.fromkeys(d for spec in specs for d in (spec.query_domain, spec.retrieval_domain)))


def check_data(dataset: str, data_root: Path | None, domains: list[str] | None = None,
                strict: bool = False) -> None:
    """Before anything is trained: the data the plan needs is there, in a form it can read (the same findings as
    --check-data, without decoding every image: an unreadable one stops its run with its path)."""
    info = get_dataset(dataset)
    if data_root is not None and not data_root.is_dir():
        raise UserError(f"--data-root {data_root}: no such folder")
    if dataset not in real.REAL_DATASETS or domains == []:     # nothing to train: nothing to read
        return
    if data_root is None:
        raise UserError(f"suite needs the {info.name} dataset: pass --data-root DIR (DIR/{info.name}/<domain>/...)\n"
                        + real.absent_message(real.REAL_DATASETS[dataset], None))
    report = real.check_dataset(real.REAL_DATASETS[dataset], data_root, domains=domains, read_images=False,
                                strict_counts=strict)
    if not report.present:
        raise UserError(report.absent_message)
    if not report.complete:
        raise UserError(f"the {info.name} data under {report.root} is not usable; nothing was trained:\n"
                        + report.text() + "\n(python run_benchmark.py --check-data --data-root DIR for the full check)")


def check_initialisation(suite, to_run, cache_dir: Path, data_root: Path | None, pretrained: Path | None):
    """The paper's suites start from pretrained weights read from local files: find each one the runs to do need (and
    check it loads into their backbone) before anything starts. Returns the path of the suite's own weights file (what
    --pretrained names: MoCo v2's, a ViT publisher's), or None when no run needs one."""
    init = suite.backbone.get("init", {})
    if pretrained and init.get("kind", "random") not in SUITE_FILE_KINDS:
        raise UserError(f"--pretrained: suite {suite.name!r} starts from its own {init.get('kind', 'random')} "
                        f"init and reads no weights file")
    if pretrained and not Path(pretrained).expanduser().is_file():
        raise UserError(f"--pretrained {pretrained}: no such file")
    suite_weights = None
    backbones = {canonical_json(spec.backbone): spec.backbone for spec in to_run}
    for backbone in backbones.values():
        init = backbone.get("init", {})
        if init.get("kind", "random") not in PRETRAINED_KINDS:
            continue
        path = find_pretrained(init, cache_dir, data_root, pretrained)
        if path is None:
            raise UserError(missing_weights_message(init, cache_dir, data_root, pretrained) + "; nothing was trained")
        try:
            load_pretrained(new_backbone(backbone), path, init, backbone["arch"])
        except ValueError as error:
            raise UserError(f"{error}; nothing was trained") from None
        if init["kind"] in SUITE_FILE_KINDS:
            suite_weights = path.resolve()
    return suite_weights


def pretrain_shared_inits(to_run, options: Options) -> None:
    """The self-supervised inits the runs share (SimCLR on the suite's images), trained and checked here, once, before
    any run starts: an init that did not learn stops the suite with its numbers instead of failing every run (local
    launcher; under SLURM the first task trains it and a failure marks the runs FAILED with the same message)."""
    backbones = {canonical_json(spec.backbone): spec.backbone for spec in to_run}
    for backbone in backbones.values():
        if backbone.get("init", {}).get("kind") != "simclr":
            continue
        try:
            cached_simclr_state(backbone, options.cache_dir, options.data_root, resolve_device(options.device))
        except PretrainingFailed as error:
            raise UserError(str(error)) from None


def check_data_command(data_root: Path | None, strict: bool = False) -> int:
    """`--check-data`: every real dataset under --data-root, domain by domain. 0 when every dataset found is complete
    (and at least one was found), 1 otherwise."""
    if data_root is None:
        raise UserError("--check-data needs --data-root DIR, the folder that holds office31/, office_home/, "
                        "domainnet/")
    if not data_root.is_dir():
        raise UserError(f"--data-root {data_root}: no such folder")
    reports = [real.check_dataset(dataset, data_root, strict_counts=strict) for dataset in real.REAL_DATASETS.values()]
    for report in reports:
        print(report.text())
        print()
    present = [r for r in reports if r.present]
    incomplete = [r.dataset.name for r in present if not r.complete]
    absent = [r.dataset.name for r in reports if not r.present]
    summary = (f"{len(present)} dataset(s) found, {len(present) - len(incomplete)} complete"
               + (f"; incomplete: {', '.join(incomplete)}" if incomplete else "")
               + (f"; absent: {', '.join(absent)}" if absent else ""))
    print(summary)
    return 0 if present and not incomplete else 1


def _defaults(spec, budget: str | None) -> dict | None:
    """The hyper-parameters a run of `spec.method` has by default on its dataset and the suite's `budget` (None: a
    method not registered)."""
    from methods.backbones import backbone_family
    from methods.base import resolve_hparams
    from methods.registry import REGISTRY
    cls = REGISTRY.get(spec.method)
    return (resolve_hparams(cls, spec.dataset, family=backbone_family(spec.backbone), budget=budget)
            if cls is not None else None)


def report(suite_name: str, specs, output_root: Path, summary: bool = False, compare_paper: bool = False,
            figures: bool = False, caption: str = "short", budget: str | None = None) -> int:
    """Tables of one suite (or, `summary`, across every suite with stored runs), with `compare_paper` their
    companions beside the paper's numbers, with `figures` the suite's figures, the HTML page, and last the PDFs of
    the LaTeX documents (a pdflatex failure is a warning with its log's path; it stops nothing). Exit status 1 when a
    run behind the tables failed."""
    start = next(filter(None, (other_start(spec.backbone, PAPER_BACKBONE) for spec in specs)), None)
    if compare_paper and start:              # a companion suite: the paper's numbers are another backbone's
        print(f"--compare-paper: the paper's numbers start from MoCo v2 ResNet-50, the runs of {suite_name} from "
              f"{start}: not compared (the report of a suite from MoCo v2 ResNet-50 shows them as rows of their own)")
        compare_paper = False
    paper_results = load_paper_results() if compare_paper else None   # a broken file stops before anything is written
    tables_dir = output_root / "tables"
    if summary:
        stored = stored_summary(output_root)
        print(f"summary of the stored runs of the suites: {', '.join(stored.suites)}")
        for line in stored.left_out:
            print(line)
        frame, models = stored.frame, stored.models
        ablation_models = [stored.ablation] if stored.ablation is not None else []
    else:
        statuses = {spec.run_id: status for status, group in census(specs, output_root).items() for spec in group}
        if specs and "done" not in statuses.values():
            print(f"note: none of the {len(specs)} planned runs of {suite_name} is finished in {output_root}: the "
                  f"tables are empty (-); train them first, or give the --output that holds them")
        grid = with_stored_runs(specs, output_root)        # and the stored runs that differ from the plan
        for line in grid.left_out:
            print(line)
        frame = tidy_frame(grid.specs, output_root, statuses, grid=grid)
        save_tidy(frame, tables_dir / f"{suite_name}_runs.csv")
        models = [aggregate(frame, table) for table in table_specs(suite_name, grid.specs, grid)]
        ablation_models = models if is_ablation_suite(suite_name) else []
    warnings = code_warnings([spec for spec in (store.stored_specs(output_root) if summary else grid.specs)
                              if store.run_status(spec.run_dir(output_root)) == "done"], output_root)
    for line in warnings:
        print(line)
    paths = write_report(suite_name, models, tables_dir, caption=caption)
    if summary:
        every_run = cost_frame(store.stored_specs(output_root), output_root, row=lambda s: method_label(s.method))
        cost = cost_table(every_run, by=("dataset", "setting", "method", "device"))
    else:
        cost = cost_table(cost_frame(grid.specs, output_root, row=grid.label))
    cost_paths = write_cost_table(suite_name, cost, tables_dir, f"Device time of the finished runs ({suite_name})")
    for model in models:
        print()
        print(to_markdown(model))
    runs_note = "" if summary else f"; runs: {tables_dir / f'{suite_name}_runs.csv'}"
    print(f"\ntables: {paths['md']}, {paths['tex']}, {paths['csv']}{runs_note}")
    print(f"LaTeX fragments for \\input (booktabs): {', '.join(p.name for p in paths['fragments'])}")
    print(f"device time of the finished runs: {cost_paths['md']}, {cost_paths['csv']}")
    latex_files = [paths["tex"]]
    if compare_paper:
        comparisons = [compare_with_paper(model, paper_results,
                                          ABLATION_SETTING if any(model is m for m in ablation_models) else None)
                       for model in models if comparable(model.spec)]
        compared = write_comparison(suite_name, comparisons, tables_dir)
        for comparison in comparisons:
            print(f"{comparison.model.spec.title}: {comparison.summary_line()}")
        print(f"comparison with the paper: {compared['md']}, {compared['tex']}, {compared['csv']}")
        latex_files.append(compared["tex"])
    if figures:
        figures_dir = output_root / "figures"
        paths = write_figures(suite_name, specs, output_root, figures_dir)
        print(f"figures: {len(paths)} file(s) in {figures_dir}: "
              + ", ".join(p.name for p in paths if p.suffix == ".png"))
    page = write_html(suite_name, models + ([c.model for c in comparisons] if compare_paper else []),
                      output_root / "report", cost=cost,
                      runs=[] if summary else [run_view(spec, output_root, _defaults(spec, budget))
                                               for spec in grid.specs],
                      figures=sorted((output_root / "figures").glob(f"{suite_name}_*.png")),
                      warnings=warnings,
                      subtitle=f"From the runs stored in the output folder {output_root.name}/ "
                               f"({'every suite' if summary else f'{len(specs)} planned runs'}).")
    print(f"html: {page}")
    # The PDF last: pdflatex is an optional extra (absent on many machines), so its failure is said but changes
    # neither what was written before it nor the exit status, which says whether a run failed.
    for failure in compile_latex(latex_files):
        print(f"warning: {failure}", file=sys.stderr)
    failed = (frame.drop_duplicates("run_id")["status"] == "failed").sum()
    print(f"\nresults: the tables in {tables_dir}/, the page {page}, "
          + (f"the figures in {output_root / 'figures'}/" if figures else "figures with --report --figures")
          + (f"; {failed} failed run(s): --dry-run says why" if failed else ""))
    return 1 if failed else 0
