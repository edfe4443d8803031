"""The command line: parses the arguments into a `pipeline.Options` and runs the pipeline (benchmark/pipeline.py:
plan -> census -> checks -> launch -> report).

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
import sys
from pathlib import Path

from datasets.base import DataError
from datasets.registry import DATASETS
from methods import get_method_class, method_names
from methods.base import BUDGETS
from methods.plugins import PluginError, load_plugins

from . import slurm
from .slurm import SlurmOptions
from .errors import UserError
from .launchers import Launcher, LocalLauncher, SlurmLauncher
from .pipeline import Options, check_data_command, run
from .suite_files import FOLDER_DATASETS, check_folder_dataset, is_suite_file
from .suites import SUITES, get_suite


REPO_ROOT = Path(__file__).resolve().parent.parent


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _jobs(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
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
    parser.add_argument("--backbone", metavar="NAME",
                        help="start every run from this backbone instead of the suite's (resnet50, "
                             "vit_base_patch14_dinov2, vit_base_patch16_clip_quickgelu_224, ...; docs/backbones.md): "
                             "a ViT from its publisher's weights, another from the suite's init")
    parser.add_argument("--init", metavar="INIT", help="with or without --backbone: the backbone's init (simclr, "
                                                       "random, moco_v2, dinov2, clip_openai, openclip_laion2b, ...)")
    parser.add_argument("--budget", choices=BUDGETS,
                        help="every method's schedule: paper (the papers' epochs and batches) or quickstart (each "
                             "method's small-data recipe, minutes on a CPU); default: the suite's (a suite file's "
                             "`budget`, else its dataset's: quickstart for the synthetic data, else paper)")
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
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the backbones (GPUs: faster steps after a one-time compilation, cached in "
                             "<cache dir>/torch_compile for the next runs; recorded in launch.json)")
    parser.add_argument("--no-tf32", dest="tf32", action="store_false",
                        help="CUDA: IEEE float32 for fp32 matmuls and convolutions (default: TF32, faster on Ampere "
                             "and later GPUs; recorded in launch.json)")
    parser.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="PATH_OR_MODULE",
                        help="a Python file or module that registers more methods (repeatable); every process "
                             "that runs a run imports it again: code run with your rights (docs/extending.md)")
    parser.add_argument("--launcher", default="local", choices=("local", "slurm"),
                        help="local (default): on this machine; slurm: submit SLURM job arrays and return")
    parser.add_argument("--jobs", type=_jobs, default="auto", metavar="N",
                        help="--launcher local: N runs at once, each in its own process (several GPUs: one each); "
                             "auto (default): one per GPU, or on a CPU as many as its cores, up to 4, with the "
                             "cores shared out")
    slurm = parser.add_argument_group(
        "SLURM (--launcher slurm; defaults from --slurm-profile, a TOML file with the same keys)")
    slurm.add_argument("--slurm-profile", type=Path, metavar="FILE", help="a site's defaults, e.g. partition = "
                                                                           "\"gpu\", gpus = 1, [sbatch] exclude = ...")
    kinds = {"text": str, "positive": _positive_int, "count": _count}
    for option in SlurmOptions.flags():
        name = option.name.replace("_", "-")
        slurm.add_argument(f"--{name}", f"--slurm-{name}", type=kinds[option.metadata["kind"]],
                           metavar=option.metadata["metavar"], help=option.metadata["help"])
    slurm.add_argument("--sbatch", action="append", default=[], metavar="OPTION=VALUE",
                       help="any other sbatch option, e.g. --sbatch exclude=node7 --sbatch exclusive; repeatable")
    parser.add_argument("--dry-run", action="store_true", help="print the plan's census and exit")
    parser.add_argument("--calibration", type=Path, metavar="FILE",
                        help="with --dry-run: the measured rates to price the plan with (written by python -m "
                             "benchmark.perf methods --calibration FILE; default: the newest file in "
                             "<output>/calibration/, else the finished runs in the store)")
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
    parser.add_argument("--tensorboard", action="store_true",
                        help="runs write their loss terms and method statistics per epoch and their final metrics as "
                             "TensorBoard event files (<run>/tensorboard; tensorboard --logdir results/runs); needs "
                             "pip install tensorboard")
    parser.add_argument("--caption", choices=("short", "full"), default="short",
                        help="the captions of the LaTeX fragments <suite>_<table>.tex written for a paper's \\input: "
                             "short (default; the explanation in a note under the table) or full")
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
        return _dispatch(args)
    except (UserError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    try:
        plugins = load_plugins(args.plugins)       # before --list and the plan: their methods are registered
    except PluginError as error:
        raise UserError(str(error)) from None
    if args.list:
        print(list_everything())
        return 0
    if args.check_data and is_suite_file(args.suite) and get_suite(args.suite).dataset in FOLDER_DATASETS:
        text, usable = check_folder_dataset(DATASETS[get_suite(args.suite).dataset])   # the suite file's own
        print(text)
        return 0 if usable else 1
    if args.check_data:
        return check_data_command(args.data_root, strict=args.strict)
    if args.figures and args.summary:
        raise UserError("--figures draws one suite's runs; use it with --report --suite NAME, not --summary")
    if (args.summary or args.compare_paper) and not args.report:
        raise UserError("--summary and --compare-paper read stored runs and train nothing: use them with --report")
    return run(options_from(args, plugins))


def options_from(args, plugins: list[str] | None = None) -> Options:
    """The parsed arguments as the pipeline's Options; the launcher's flags are checked only when it will launch."""
    launches = not (args.report or args.dry_run or args.summary)
    if args.dry_run and args.launcher == "slurm":
        _slurm_options(args)            # the profile and SLURM flags are checked before a submission, not at it
    return Options(
        suite=args.suite, output=args.output, methods=_flatten(args.methods), pairs=_flatten(args.pairs),
        seeds=_flatten(args.seeds), settings=_flatten(args.settings), assignments=args.assignments,
        baseline_init=args.baseline_init, backbone=args.backbone, init=args.init, budget=args.budget,
        data_root=args.data_root, cache_dir=args.cache_dir,
        pretrained=args.pretrained, device=args.device, precision=args.precision, channels_last=args.channels_last,
        compile=args.compile, tf32=args.tf32,
        plugins=list(plugins or []),
        launcher=_launcher(args) if launches else LocalLauncher(args.jobs, args.device), dry_run=args.dry_run,
        report=args.report, summary=args.summary, compare_paper=args.compare_paper, figures=args.figures,
        retry_failed=args.retry_failed, strict=args.strict, calibration=args.calibration, caption=args.caption,
        tensorboard=args.tensorboard)


def _launcher(args) -> Launcher:
    if args.launcher == "slurm":
        return SlurmLauncher(_slurm_options(args), shlex.join(args.argv) if args.argv else "")
    _refuse_slurm_flags(args)
    return LocalLauncher(args.jobs, args.device)


SLURM_FLAGS = ("slurm_profile", *(option.name for option in SlurmOptions.flags()))


def _refuse_slurm_flags(args) -> None:
    given = [f"--{name.replace('_', '-')}" for name in SLURM_FLAGS if getattr(args, name) is not None]
    given += ["--sbatch"] if args.sbatch else []
    if given:
        raise UserError(f"{', '.join(given)} only apply with --launcher slurm")


def _slurm_options(args) -> slurm.SlurmOptions:
    if args.jobs not in ("auto", 1):
        raise UserError("--jobs is for --launcher local; with slurm, --array-parallelism says how many run at once")
    overrides = {option.name: getattr(args, option.name) for option in SlurmOptions.flags()}
    return slurm.build_options(args.slurm_profile, overrides, args.sbatch)
