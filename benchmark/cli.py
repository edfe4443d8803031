"""The command line: plan -> launch -> collect -> report.

    python run_benchmark.py --suite quickstart
    python run_benchmark.py --suite quickstart --dry-run          # census: done / failed / incomplete / to run
    python run_benchmark.py --suite quickstart --report           # tables from stored runs, no training
    python run_benchmark.py --suite quickstart --methods cds --pairs Ph-Sk --seeds 2024 --set cds.epochs=3
    python run_benchmark.py --check-data --data-root ~/data         # the real datasets on disk vs the published ones

Bad input (unknown suite, method, pair, setting; malformed --set; missing data) stops with a message naming what was
wrong and what was expected, exit status 2, before anything is written.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import time
from pathlib import Path

from datasets.base import DataError
from datasets import real
from datasets.registry import DATASETS, get_dataset
from methods import get_method_class, method_names

from . import slurm, store
from .collect import is_ablation_suite, stored_summary, table_specs, tidy_frame
from .errors import UserError
from .figures import write_figures
from .initialisation import (PRETRAINED_KINDS, find_pretrained, load_pretrained, missing_weights_message,
                             new_backbone)
from .launchers import launch_local
from .paper import ABLATION_SETTING, comparable, compare_with_paper, load_paper_results, write_comparison
from .reports import LatexError, aggregate, compile_pdf, save_tidy, to_markdown, write_report
from .spec import canonical_json
from .suites import SUITES, get_suite, plan

REPO_ROOT = Path(__file__).resolve().parent.parent


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are integers, got {text!r}") from None


def _flatten(values: list | None) -> list | None:
    """`--methods a b`, `--methods a,b` and `--seeds 1,2 3` all mean the same."""
    if values is None:
        return None
    return [part for value in values
            for part in (value if isinstance(value, list) else value.split(",")) if part != ""]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_benchmark.py",
        description="Unsupervised cross-domain image retrieval benchmark (UEM, NeurIPS 2024, and its baselines).")
    parser.add_argument("--suite", default="quickstart", help="suite to run (default: quickstart); see --list")
    parser.add_argument("--methods", nargs="+", metavar="NAME", help="restrict to these methods (registry names)")
    parser.add_argument("--pairs", nargs="+", metavar="Q-R", help="restrict to these ordered pairs, e.g. Ph-Sk")
    parser.add_argument("--seeds", nargs="+", type=_seed_list, metavar="SEED", help="seeds (default: the suite's)")
    parser.add_argument("--settings", nargs="+", metavar="SETTING", help="closed, partial and/or open")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="hyper-parameter override, key=value (every method that has it) or method.key=value; "
                             "repeatable")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "results",
                        help="results folder (default: results/ in the checkout)")
    parser.add_argument("--data-root", type=Path, help="folder holding the real datasets")
    parser.add_argument("--cache-dir", type=Path, help="generated data, decoded images and pretrained backbones "
                                                       "(default: <output>/cache)")
    parser.add_argument("--pretrained", type=Path, metavar="PATH",
                        help="the suite's pretrained weights (the paper's suites: the MoCo v2 ResNet-50 checkpoint "
                             "moco_v2_800ep_pretrain.pth.tar); default: <data root>/weights/ or <cache dir>/weights/")
    parser.add_argument("--baseline-init", choices=("suite", "native"), default="suite",
                        help="suite (default, the paper's rule): every method starts from the suite's weights; "
                             "native: CDS, PCS and CoDA start from torchvision's supervised ImageNet ResNet-50, as in "
                             "their own papers (read from torch's cache, never downloaded)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="training steps in fp32 (default) or under bf16 autocast (GPUs with bf16: faster, "
                             "numbers move slightly; recorded in each run's launch.json)")
    parser.add_argument("--channels-last", action="store_true",
                        help="channels_last memory format for the backbone and batches (faster convolutions on "
                             "tensor-core GPUs; recorded in launch.json)")
    parser.add_argument("--launcher", default="local", choices=("local", "slurm"),
                        help="local (default): on this machine; slurm: submit SLURM job arrays and return")
    parser.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                        help="--launcher local: N runs at once, each in its own process (several GPUs: one each)")
    slurm = parser.add_argument_group(
        "SLURM (--launcher slurm; defaults from --slurm-profile, a TOML file with the same keys)")
    slurm.add_argument("--slurm-profile", type=Path, metavar="FILE", help="a site's defaults, e.g. partition = "
                                                                           "\"gpu\", gpus = 1, [sbatch] exclude = ...")
    slurm.add_argument("--partition", "--slurm-partition", help="partition (default: the cluster's)")
    slurm.add_argument("--time", "--slurm-time", type=_positive_int, metavar="MIN",
                       help="time limit per run in minutes (default 60; a run that hits it is requeued and resumes)")
    slurm.add_argument("--gpus", "--slurm-gpus", type=int, metavar="N", help="GPUs per run (default 0; the paper's suites want 1)")
    slurm.add_argument("--cpus", "--slurm-cpus", type=_positive_int, metavar="N", help="CPUs per run (default 4)")
    slurm.add_argument("--mem", "--slurm-mem", type=_positive_int, metavar="GB", help="memory per run in GB (default: the "
                                                                        "partition's)")
    slurm.add_argument("--array-parallelism", "--slurm-array-parallelism", type=_positive_int, metavar="N",
                       help="array tasks running at once (default 64)")
    slurm.add_argument("--account", "--slurm-account")
    slurm.add_argument("--qos", "--slurm-qos")
    slurm.add_argument("--constraint", "--slurm-constraint")
    slurm.add_argument("--max-array-size", "--slurm-max-array-size", type=_positive_int, metavar="N",
                       help="split arrays at N tasks (default: the cluster's MaxArraySize)")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="OPTION=VALUE",
                       help="any other sbatch option, e.g. --sbatch exclude=node7 --sbatch exclusive; repeatable")
    parser.add_argument("--dry-run", action="store_true", help="print the plan's census and exit")
    parser.add_argument("--report", action="store_true", help="regenerate the tables from stored runs, no training")
    parser.add_argument("--summary", action="store_true",
                        help="with --report: instead of one suite's tables, the tables across every suite with stored "
                             "runs (Avg per dataset x setting x method, and UEM's ablation table) in "
                             "<output>/tables/summary.{md,tex,csv}")
    parser.add_argument("--compare-paper", action="store_true",
                        help="with --report (and --summary): the paper's numbers beside ours, with the difference, in "
                             "<output>/tables/<suite or summary>_vs_paper.{md,tex,csv}")
    parser.add_argument("--figures", action="store_true",
                        help="after the tables (a run or --report): figures from the stored runs, PNG and PDF, in "
                             "<output>/figures/ (top-k retrievals of a fixed sample of queries per method, Avg per "
                             "method with error bars, open-set detection accuracy); no retraining")
    parser.add_argument("--retry-failed", action="store_true", help="run FAILED runs again (from their checkpoint)")
    parser.add_argument("--check-data", action="store_true",
                        help="check the real datasets under --data-root against the published ones (image counts, "
                             "missing or empty class folders, unreadable images) and exit; never trains")
    parser.add_argument("--strict", action="store_true",
                        help="with --check-data and before training: an image count that differs from the published "
                             "dataset's is a problem (default: shown, not a problem, so subsets can be used)")
    parser.add_argument("--list", action="store_true", help="list suites, methods and datasets")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to the terminal too")
    return parser


def list_everything() -> str:
    lines = ["Suites:"]
    lines += [f"  {s.name:<22} {s.dataset}: {s.description}" for s in SUITES.values()]
    lines.append("Methods (table order):")
    lines += [f"  {name:<22} {_summary_line(get_method_class(name))}" for name in method_names()]
    lines.append("Datasets:")
    lines += [f"  {d.name:<22} domains {', '.join(f'{x} ({d.short_names[x]})' for x in d.domains)}; "
              f"{len(d.class_map)} classes. {d.description}" for d in DATASETS.values()]
    return "\n".join(lines)


def _summary_line(method_cls) -> str:
    """First line of the class's own docstring (variants) or of its module's (the paper's title and venue)."""
    doc = (method_cls.__dict__.get("__doc__") or sys.modules[method_cls.__module__].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


CENSUS_STATUSES = ("done", "failed", "queued", "running", "incomplete", "missing")


def census(specs, output_root: Path, record: bool = True) -> dict[str, list]:
    """Each planned run's status from its folder; an incomplete run whose SLURM job is still in the queue is
    `queued` or `running` (asked of the cluster only when some run folder records a job).

    An incomplete run whose job has left the queue without starting the run (no log.txt) died at its start: with
    `record`, the death is noted in its slurm.json, and after `slurm.START_FAILURES_BEFORE_FAILED` in a row the run
    is marked FAILED with the tail of the job's stderr (a dry run records nothing)."""
    groups = {status: [] for status in CENSUS_STATUSES}
    incomplete_with_job = []
    for spec in specs:
        status = store.run_status(spec.run_dir(output_root))
        job = slurm.recorded_job(spec.run_dir(output_root)) if status == "incomplete" else None
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


def start_failure_reason(run_dir: Path, deaths: int) -> str:
    jobs = ", ".join(f"{f['job_id']} ({f['state']})" for f in slurm.read_job_record(run_dir).get("start_failures", []))
    return (f"its SLURM job ended before the run started, {deaths} times in a row (jobs {jobs}); the tail of the last "
            f"job's stderr:\n{slurm.stderr_tail(run_dir)}\nFix the cause (the task's setup lines, the software on "
            f"the nodes), then submit again with --retry-failed.")


def census_text(groups: dict[str, list], retry_failed: bool) -> str:
    to_run = len(groups["missing"]) + len(groups["incomplete"]) + (len(groups["failed"]) if retry_failed else 0)
    total = sum(len(v) for v in groups.values())
    in_queue = (f"{len(groups['queued'])} queued, {len(groups['running'])} running on SLURM, "
                if groups["queued"] or groups["running"] else "")
    return (f"{total} runs planned: {len(groups['done'])} done, {len(groups['failed'])} failed, {in_queue}"
            f"{len(groups['incomplete'])} incomplete, {len(groups['missing'])} not started -> {to_run} to run")


def census_problems(groups: dict[str, list], output_root: Path) -> list[str]:
    """Files of the planned runs that cannot be read, or were moved aside as unreadable, one line each: what the
    next invocation does about them."""
    lines = []
    for status in CENSUS_STATUSES:
        for spec in groups[status]:
            run_dir = spec.run_dir(output_root)
            where = f"{spec.method} {spec.setting} {spec.query_domain}->{spec.retrieval_domain} seed {spec.seed}"
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


def configure_terminal_logging(verbose: bool) -> None:
    """Runs log INFO to their own log.txt; the terminal shows warnings (everything with -v)."""
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.INFO if verbose else logging.WARNING)
    terminal.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(terminal)
    root.setLevel(logging.INFO)
    logging.getLogger("faiss").setLevel(logging.WARNING)   # its loader announces every import at INFO


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    configure_terminal_logging(args.verbose)
    try:
        return _main(args)
    except (UserError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _main(args) -> int:
    if args.list:
        print(list_everything())
        return 0
    if args.check_data:
        return check_data_command(args.data_root, strict=args.strict)
    if args.figures and args.summary:
        raise UserError("--figures draws one suite's runs; use it with --report --suite NAME, not --summary")
    if (args.summary or args.compare_paper) and not args.report:
        raise UserError("--summary and --compare-paper read stored runs and train nothing: use them with --report")
    if args.summary:
        return _report("summary", [], args.output.resolve(), summary=True, compare_paper=args.compare_paper)
    suite = get_suite(args.suite)
    specs = plan(suite, methods=_flatten(args.methods), pairs=_flatten(args.pairs), seeds=_flatten(args.seeds),
                 settings=_flatten(args.settings), assignments=args.assignments, baseline_init=args.baseline_init)
    output_root = args.output.resolve()
    groups = census(specs, output_root, record=not args.dry_run)
    print(census_text(groups, args.retry_failed))
    for line in census_problems(groups, output_root):
        print(line)
    to_run = groups["missing"] + groups["incomplete"] + (groups["failed"] if args.retry_failed else [])
    if args.dry_run:
        _print_census_details(groups, output_root)
        missing = _what_the_plan_lacks(suite, to_run, args, output_root)
        if missing:
            print(f"\nthe {len(to_run)} run(s) to run cannot start as things are:")
            for text in missing:
                print("  " + text.replace("\n", "\n  "))
            return 2
        return 0
    if not args.report:
        _check_data(suite.dataset, args.data_root, domains=_domains_of(to_run), strict=args.strict)
        if args.launcher == "slurm":
            slurm_options = _slurm_options(args)
        else:
            _refuse_slurm_flags(args)
        if to_run:
            cache_dir = (args.cache_dir or output_root / "cache").resolve()
            pretrained = _check_initialisation(suite, to_run, cache_dir, args.data_root, args.pretrained)
            launch = {"data_root": str(args.data_root.resolve()) if args.data_root else None,
                      "cache_dir": str(cache_dir), "device": args.device, "precision": args.precision,
                      "channels_last": args.channels_last,
                      "pretrained": str(pretrained) if pretrained else None}
            spec_paths = []
            new_run_dirs = [spec.run_dir(output_root) for spec in groups["missing"]]
            for spec in to_run:
                run_dir = store.prepare_run_dir(spec, output_root, launch)
                if store.run_status(run_dir) == "failed":          # --retry-failed: counts start again
                    slurm.forget_start_failures(run_dir)
                store.clear_failure(run_dir)
                spec_paths.append(run_dir / "spec.json")
            if args.launcher == "slurm":
                try:
                    return _submit(suite.name, spec_paths, output_root, slurm_options, args)
                except UserError:
                    # sbatch refused: the folders made for this submission go again (nothing half-written); runs
                    # of an array that was accepted before the refusal keep theirs
                    for run_dir in new_run_dirs:
                        if slurm.recorded_job(run_dir) is None:
                            shutil.rmtree(run_dir, ignore_errors=True)
                    raise
            started = time.time()
            outcome = launch_local(spec_paths, jobs=args.jobs, device=args.device)
            print(f"trained {outcome['done']} run(s) in {time.time() - started:.0f} s; "
                  f"{len(outcome['failed'])} failed")
        elif args.launcher == "slurm":
            print("nothing to submit" + (f": {len(groups['queued']) + len(groups['running'])} run(s) still in the "
                                         f"SLURM queue" if groups["queued"] or groups["running"] else ""))
    return _report(suite.name, specs, output_root, compare_paper=args.compare_paper, figures=args.figures)


def _what_the_plan_lacks(suite, to_run, args, output_root: Path) -> list[str]:
    """--dry-run: what a real run of the plan would stop on before training (the data, the pretrained weights), each
    with where it was looked for; [] when it can start."""
    if not to_run:
        return []
    lacking = []
    try:
        _check_data(suite.dataset, args.data_root, domains=_domains_of(to_run), strict=args.strict)
    except (UserError, DataError) as error:
        lacking.append(f"data: {error}")
    try:
        _check_initialisation(suite, to_run, (args.cache_dir or output_root / "cache").resolve(), args.data_root,
                              args.pretrained)
    except (UserError, DataError) as error:
        lacking.append(f"weights: {str(error).removesuffix('; nothing was trained')}")
    return lacking


def _compile_latex(tex_files: list[Path]) -> None:
    """The LaTeX tables compiled to PDF beside them when pdflatex is installed (TeX Live); said when it is not."""
    try:
        pdfs = [compile_pdf(path) for path in tex_files]
    except LatexError as error:
        raise UserError(f"{error}\n(the .tex and the other tables are written; this is a bug of the report, please "
                        f"report it)") from None
    if None in pdfs:
        print("pdflatex not found: the .tex files are standalone documents, compile them with TeX Live "
              "(apt-get install texlive-latex-recommended) for PDFs")
    else:
        print(f"pdf: {', '.join(str(p) for p in pdfs)}")


def _print_census_details(groups: dict[str, list], output_root: Path) -> None:
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


SLURM_FLAGS = ("slurm_profile", "partition", "time", "gpus", "cpus", "mem", "array_parallelism", "account", "qos",
               "constraint", "max_array_size")


def _refuse_slurm_flags(args) -> None:
    given = [f"--{name.replace('_', '-')}" for name in SLURM_FLAGS if getattr(args, name) is not None]
    given += ["--sbatch"] if args.sbatch else []
    if given:
        raise UserError(f"{', '.join(given)} only apply with --launcher slurm")


def _slurm_options(args) -> slurm.SlurmOptions:
    if args.jobs > 1:
        raise UserError("--jobs is for --launcher local; with slurm, --array-parallelism says how many run at once")
    overrides = {"partition": args.partition, "time": args.time, "gpus": args.gpus, "cpus": args.cpus,
                 "mem": args.mem, "array_parallelism": args.array_parallelism, "account": args.account,
                 "qos": args.qos, "constraint": args.constraint, "max_array_size": args.max_array_size}
    return slurm.build_options(args.slurm_profile, overrides, args.sbatch)


def _submit(suite_name: str, spec_paths: list[Path], output_root: Path, options, args) -> int:
    arrays = slurm.submit(spec_paths, output_root, options, job_name=f"cdr-{suite_name}")
    again = shlex.join(args.argv) if args.argv else f"--suite {suite_name}"
    print(f"submitted {len(spec_paths)} run(s) as {len(arrays)} SLURM job array(s): {', '.join(arrays)}")
    print(f"  follow:  squeue -j {','.join(arrays)}    (or: python run_benchmark.py {again} --dry-run)")
    print(f"  logs:    {output_root / slurm.LOG_FOLDER}/<job id>/ and each run's log.txt")
    print(f"  tables:  python run_benchmark.py {again} --report    (when they are done; running the same command "
          f"again submits only what is neither done nor in the queue)")
    return 0


def _domains_of(specs) -> list[str]:
    return list(dict.fromkeys(d for spec in specs for d in (spec.query_domain, spec.retrieval_domain)))


def _check_data(dataset: str, data_root: Path | None, domains: list[str] | None = None,
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


def _check_initialisation(suite, to_run, cache_dir: Path, data_root: Path | None, pretrained: Path | None):
    """The paper's suites start from pretrained weights read from local files: find each one the runs to do need (and
    check it loads into their backbone) before anything starts. Returns the path of the suite's MoCo v2 file (what
    --pretrained names), or None when no run needs one."""
    init = suite.backbone.get("init", {})
    if pretrained and init.get("kind", "random") != "moco_v2":
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
            load_pretrained(new_backbone(backbone), path)
        except ValueError as error:
            raise UserError(f"{error}; nothing was trained") from None
        if init["kind"] == "moco_v2":
            suite_weights = path.resolve()
    return suite_weights


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


def _report(suite_name: str, specs, output_root: Path, summary: bool = False, compare_paper: bool = False,
            figures: bool = False) -> int:
    """Tables of one suite (or, `summary`, across every suite with stored runs), with `compare_paper` their
    companions beside the paper's numbers, with `figures` the suite's figures. Exit status 1 when a run behind the
    tables failed."""
    paper_results = load_paper_results() if compare_paper else None   # a broken file stops before anything is written
    tables_dir = output_root / "tables"
    if summary:
        stored = stored_summary(output_root)
        print(f"summary of the stored runs of the suites: {', '.join(stored.suites)}")
        frame, models = stored.frame, stored.models
        ablation_models = [stored.ablation] if stored.ablation is not None else []
    else:
        statuses = {spec.run_id: status for status, group in census(specs, output_root).items() for spec in group}
        frame = tidy_frame(specs, output_root, statuses)
        save_tidy(frame, tables_dir / f"{suite_name}_runs.csv")
        models = [aggregate(frame, table) for table in table_specs(suite_name, specs)]
        ablation_models = models if is_ablation_suite(suite_name) else []
    paths = write_report(suite_name, models, tables_dir)
    for model in models:
        print()
        print(to_markdown(model))
    runs_note = "" if summary else f"; runs: {tables_dir / f'{suite_name}_runs.csv'}"
    print(f"\ntables: {paths['md']}, {paths['tex']}, {paths['csv']}{runs_note}")
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
    _compile_latex(latex_files)
    if figures:
        figures_dir = output_root / "figures"
        paths = write_figures(suite_name, specs, output_root, figures_dir)
        print(f"figures: {len(paths)} file(s) in {figures_dir}: "
              + ", ".join(p.name for p in paths if p.suffix == ".png"))
    failed = (frame.drop_duplicates("run_id")["status"] == "failed").sum()
    return 1 if failed else 0
