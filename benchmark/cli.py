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
import sys
import time
from pathlib import Path

from datasets.base import DataError
from datasets import real
from datasets.registry import DATASETS, get_dataset
from methods import get_method_class, method_names

from . import store
from .collect import table_specs, tidy_frame
from .errors import UserError
from .initialisation import (PRETRAINED_KINDS, find_pretrained, load_pretrained, missing_weights_message,
                             new_backbone)
from .launchers import LAUNCHERS
from .reports import aggregate, save_tidy, to_markdown, write_report
from .spec import canonical_json
from .suites import SUITES, get_suite, plan

REPO_ROOT = Path(__file__).resolve().parent.parent


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
    parser.add_argument("--launcher", default="local", choices=sorted(LAUNCHERS), help="how to run the plan")
    parser.add_argument("--dry-run", action="store_true", help="print the plan's census and exit")
    parser.add_argument("--report", action="store_true", help="regenerate the tables from stored runs, no training")
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


def census(specs, output_root: Path) -> dict[str, list]:
    groups = {status: [] for status in store.STATUSES}
    for spec in specs:
        groups[store.run_status(spec.run_dir(output_root))].append(spec)
    return groups


def census_text(groups: dict[str, list], retry_failed: bool) -> str:
    to_run = len(groups["missing"]) + len(groups["incomplete"]) + (len(groups["failed"]) if retry_failed else 0)
    total = sum(len(v) for v in groups.values())
    return (f"{total} runs planned: {len(groups['done'])} done, {len(groups['failed'])} failed, "
            f"{len(groups['incomplete'])} incomplete, {len(groups['missing'])} not started -> {to_run} to run")


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
    args = build_parser().parse_args(argv)
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
    suite = get_suite(args.suite)
    specs = plan(suite, methods=_flatten(args.methods), pairs=_flatten(args.pairs), seeds=_flatten(args.seeds),
                 settings=_flatten(args.settings), assignments=args.assignments, baseline_init=args.baseline_init)
    output_root = args.output.resolve()
    groups = census(specs, output_root)
    print(census_text(groups, args.retry_failed))
    if args.dry_run:
        for status in ("failed", "incomplete", "missing"):
            for spec in groups[status]:
                print(f"  {status:<10} {spec.method:<12} {spec.setting:<8} {spec.query_domain}->"
                      f"{spec.retrieval_domain} seed {spec.seed}  {spec.run_dir(output_root)}")
                if status == "failed":
                    print(f"             reason: {store.failure_reason(spec.run_dir(output_root))}")
        return 0
    if not args.report:
        to_run = groups["missing"] + groups["incomplete"] + (groups["failed"] if args.retry_failed else [])
        _check_data(suite.dataset, args.data_root, domains=_domains_of(to_run), strict=args.strict)
        if to_run:
            cache_dir = (args.cache_dir or output_root / "cache").resolve()
            pretrained = _check_initialisation(suite, to_run, cache_dir, args.data_root, args.pretrained)
            launch = {"data_root": str(args.data_root.resolve()) if args.data_root else None,
                      "cache_dir": str(cache_dir), "device": args.device, "precision": args.precision,
                      "channels_last": args.channels_last,
                      "pretrained": str(pretrained) if pretrained else None}
            spec_paths = []
            for spec in to_run:
                run_dir = store.prepare_run_dir(spec, output_root, launch)
                store.clear_failure(run_dir)
                spec_paths.append(run_dir / "spec.json")
            started = time.time()
            outcome = LAUNCHERS[args.launcher](spec_paths)
            print(f"trained {outcome['done']} run(s) in {time.time() - started:.0f} s; "
                  f"{len(outcome['failed'])} failed")
    return _report(suite.name, specs, output_root)


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


def _report(suite_name: str, specs, output_root: Path) -> int:
    frame = tidy_frame(specs, output_root)
    tables_dir = output_root / "tables"
    save_tidy(frame, tables_dir / f"{suite_name}_runs.csv")
    models = [aggregate(frame, table) for table in table_specs(suite_name, specs)]
    paths = write_report(suite_name, models, tables_dir)
    for model in models:
        print()
        print(to_markdown(model))
    print(f"\ntables: {paths['md']}, {paths['tex']}, {paths['csv']}; runs: {tables_dir / f'{suite_name}_runs.csv'}")
    failed = (frame.drop_duplicates("run_id")["status"] == "failed").sum()
    return 1 if failed else 0
