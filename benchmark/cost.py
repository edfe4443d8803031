"""What runs cost in device time, measured after and estimated before.

After (`--report`): a run's cost is what it ran for on its device: its setup (data, backbone, `on_fit_start`), every
epoch's seconds (in its history, kept across resumptions) and its evaluation, from metrics.json; the device is the one
env.json names (the GPU's name, or "cpu"). `cost_frame` holds one row per finished run, `cost_table` sums them per
method and device, `write_cost_table` writes `<suite>_cost.{md,csv}`. Runs that shared a device (`--jobs N` on one
GPU) each count their own wall time, so the sum is the device time a user would book for them one at a time, an
upper bound of the device's busy time.

Before (`--dry-run`): `estimate` prices every run still to run from, per method,
1. a calibration file (`python -m benchmark.perf methods --calibration FILE`, by default
   `<output>/calibration/<device>.json`): the method's images per second at the calibrated shapes (arch, image size,
   precision) on that device, when the run's backbone and image size are the calibrated ones, times the images of
   the run (epochs x steps per epoch x batch x 2 domains, the steps
   from the split's domain sizes), plus its measured setup and evaluation seconds; else
2. the finished runs of the same method, dataset and backbone architecture in the store: their mean seconds per
   epoch times the run's epochs, plus their mean setup and evaluation seconds; else the method is left out of the
   total, and said.
The estimate names its source for every method.
"""
from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from . import store
from .errors import UserError
from .spec import RunSpec

CALIBRATION_FOLDER = "calibration"      # <output>/calibration/<device slug>.json
CALIBRATION_FORMAT = 1
COST_COLUMNS = ("method", "device", "runs", "device_hours", "minutes_per_run", "seconds_per_epoch")


# ---------------------------------------------------------------------------------------------------------------------
# After: what finished runs cost
# ---------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunCost:
    """A finished run's measured time. seconds = setup + epochs + evaluation, in wall-clock seconds."""
    seconds: float
    epoch_seconds: float       # sum over its epochs
    epochs: int
    setup_seconds: float
    evaluation_seconds: float
    device: str                # the GPU's name, or the torch device ("cpu")


def run_cost(run_dir: Path) -> RunCost | None:
    """The measured cost of the finished run in `run_dir` (None when it is not done or its files cannot be read).
    Runs stored before setup and evaluation were timed apart count their process's seconds outside the epochs."""
    run_dir = Path(run_dir)
    if store.run_status(run_dir) != "done":
        return None
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
        env = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").is_file() else {}
    except (OSError, ValueError):
        return None
    epochs = [float(entry.get("seconds", 0.0)) for entry in record.get("history", [])]
    epoch_seconds = sum(epochs)
    if "setup_seconds" in record:
        setup, evaluation = float(record["setup_seconds"]), float(record.get("evaluation_seconds", 0.0))
    else:            # before 2026-11-30: only the last process's wall time, epochs included
        setup, evaluation = 0.0, max(0.0, float(record.get("seconds", 0.0)) - epoch_seconds)
    device = env.get("gpu") or env.get("device") or "unknown"
    return RunCost(setup + epoch_seconds + evaluation, epoch_seconds, len(epochs), setup, evaluation, device)


def cost_frame(specs: Iterable[RunSpec], output_root: Path, row=None) -> pd.DataFrame:
    """One row per finished run of `specs`: method (or `row(spec)`, a table's row key), dataset, setting, device,
    seconds, epochs, epoch_seconds, setup_seconds, evaluation_seconds."""
    rows = []
    for spec in specs:
        cost = run_cost(spec.run_dir(output_root))
        if cost is not None:
            rows.append({"method": row(spec) if row else spec.method, "dataset": spec.dataset,
                         "setting": spec.setting, **asdict(cost)})
    columns = ["method", "dataset", "setting", *(f.name for f in RunCost.__dataclass_fields__.values())]
    return pd.DataFrame(rows, columns=columns)


def cost_table(frame: pd.DataFrame, by: tuple[str, ...] = ("method", "device")) -> pd.DataFrame:
    """Per group of `by` (default: method and device): finished runs, device-hours (their summed seconds / 3600),
    mean minutes per run, mean seconds per epoch; then a total row per device. Groups in first-seen order."""
    if frame.empty:
        return pd.DataFrame(columns=[*by, "runs", "device_hours", "minutes_per_run", "seconds_per_epoch"])
    grouped = frame.groupby(list(by), sort=False)
    table = pd.DataFrame({
        "runs": grouped.size(),
        "device_hours": grouped["seconds"].sum() / 3600,
        "minutes_per_run": grouped["seconds"].mean() / 60,
        "seconds_per_epoch": grouped["epoch_seconds"].sum() / grouped["epochs"].sum().clip(lower=1),
    }).reset_index()
    totals = []
    for device, rows in frame.groupby("device", sort=False):
        totals.append({**{key: "total" for key in by if key != "device"}, "device": device, "runs": len(rows),
                       "device_hours": rows["seconds"].sum() / 3600, "minutes_per_run": rows["seconds"].mean() / 60,
                       "seconds_per_epoch": rows["epoch_seconds"].sum() / max(1, rows["epochs"].sum())})
    return pd.concat([table, pd.DataFrame(totals)], ignore_index=True)


def write_cost_table(name: str, table: pd.DataFrame, tables_dir: Path, title: str) -> dict[str, Path]:
    """`<name>_cost.md` (a titled markdown table) and `<name>_cost.csv` in `tables_dir`, written atomically."""
    tables_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": tables_dir / f"{name}_cost.md", "csv": tables_dir / f"{name}_cost.csv"}
    store.atomic_write_text(paths["csv"], table.to_csv(index=False))
    store.atomic_write_text(paths["md"], f"## {title}\n\n" + cost_markdown(table) + "\n")
    return paths


def cost_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no finished run)"
    shown = table.rename(columns={"device_hours": "device-hours", "minutes_per_run": "min / run",
                                  "seconds_per_epoch": "s / epoch"})
    return shown.to_markdown(index=False, floatfmt=".3g")


# ---------------------------------------------------------------------------------------------------------------------
# Calibration files: `perf methods` measures, `--dry-run` reads
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class Calibration:
    """Measured rates of the methods on one device at one configuration (a calibration file's content).

    methods: name -> {"images_per_second": images of both domains per second of training (views not counted),
    "setup_seconds": on_fit_start at the calibrated domain sizes, "evaluation_seconds_per_image": embedding both
    domains, per image}."""
    device: str                   # the GPU's name, or "cpu"
    arch: str
    image_size: int
    precision: str
    channels_last: bool
    compile: bool
    tf32: bool
    suite: str
    measured: str                 # ISO date and time
    torch: str
    methods: dict = field(default_factory=dict)
    path: Path | None = None

    def describe(self) -> str:
        options = [self.precision] + (["channels_last"] if self.channels_last else []) + \
            (["compile"] if self.compile else [])
        return (f"{self.device}, {self.arch} at {self.image_size} px, {' + '.join(options)}; calibrated on suite "
                f"{self.suite} on {self.measured[:10]}")


def device_slug(device: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "device"


def default_calibration_path(output_root: Path, device: str) -> Path:
    return Path(output_root) / CALIBRATION_FOLDER / f"{device_slug(device)}.json"


def write_calibration(path: Path, calibration: Calibration) -> Path:
    record = {"format": CALIBRATION_FORMAT, **{k: v for k, v in asdict(calibration).items() if k != "path"}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    store.atomic_write_json(Path(path), record)
    return Path(path)


def read_calibration(path: Path) -> Calibration:
    """A calibration file; UserError naming the file and what is wrong when it cannot be used."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"calibration file {path}: cannot be read ({error})") from None
    if not isinstance(record, dict) or record.get("format") != CALIBRATION_FORMAT:
        raise UserError(f"calibration file {path}: not a calibration of this harness (expected \"format\": "
                        f"{CALIBRATION_FORMAT}; write one with python -m benchmark.perf methods --calibration FILE)")
    record.pop("format")
    try:
        calibration = Calibration(**record, path=path)
    except TypeError as error:
        raise UserError(f"calibration file {path}: {error}") from None
    for name, rates in calibration.methods.items():
        rate = rates.get("images_per_second") if isinstance(rates, dict) else None
        if not isinstance(rate, (int, float)) or not rate > 0:
            raise UserError(f"calibration file {path}: method {name!r} has no positive images_per_second")
    return calibration


def find_calibration(output_root: Path, explicit: Path | None = None) -> Calibration | None:
    """`explicit`, else the newest file of `<output>/calibration/`, else None."""
    if explicit is not None:
        return read_calibration(explicit)
    files = sorted((Path(output_root) / CALIBRATION_FOLDER).glob("*.json"), key=lambda p: p.stat().st_mtime)
    return read_calibration(files[-1]) if files else None


# ---------------------------------------------------------------------------------------------------------------------
# Before: the plan's estimate
# ---------------------------------------------------------------------------------------------------------------------

def estimated_domain_sizes(spec: RunSpec) -> tuple[int, int] | None:
    """The images of the run's query and retrieval domains restricted to its split's classes, from the published
    counts (real datasets; classes taken as equally large) or the generator's mean (the synthetic one); None for a
    dataset whose sizes are not known without reading it."""
    from datasets import real, synthetic
    from datasets.registry import get_dataset
    info = get_dataset(spec.dataset)
    n_classes = len(info.class_map)
    if spec.dataset in real.REAL_DATASETS:
        counts = real.REAL_DATASETS[spec.dataset].published_counts
        per_class = {d: counts[d] / n_classes for d in (spec.query_domain, spec.retrieval_domain)}
    elif spec.dataset == "synthetic":
        mean = sum(synthetic.IMAGES_PER_CLASS) / 2
        per_class = {spec.query_domain: mean, spec.retrieval_domain: mean}
    else:
        return None
    return (round(per_class[spec.query_domain] * len(spec.query_classes)),
            round(per_class[spec.retrieval_domain] * len(spec.retrieval_classes)))


def _steps_and_batch(spec: RunSpec, sizes: tuple[int, int]) -> tuple[int, int, int] | None:
    """(epochs, steps per epoch, batch size per domain) of the run, from its method's own `steps_per_epoch` (called
    on an instance that holds only its hyper-parameters: no backbone is built to price a plan)."""
    from torch import nn

    from methods.base import build_hparams
    from methods.registry import REGISTRY
    cls = REGISTRY.get(spec.method)
    if cls is None:
        return None
    hparams = build_hparams(cls, spec.hparams)
    shell = cls.__new__(cls)
    nn.Module.__init__(shell)
    shell.hparams = hparams
    return int(hparams.epochs), int(shell.steps_per_epoch(*sizes)), int(hparams.batch_size)


def _epochs(spec: RunSpec) -> int:
    from methods.base import build_hparams
    from methods.registry import REGISTRY
    cls = REGISTRY.get(spec.method)
    return int(build_hparams(cls, spec.hparams).epochs) if cls is not None else int(spec.hparams.get("epochs", 1))


@dataclass
class MethodEstimate:
    method: str
    runs: int = 0
    seconds: float = 0.0
    priced: int = 0               # runs with an estimate
    sources: set = field(default_factory=set)
    devices: set = field(default_factory=set)    # the devices the figures were measured on
    unpriced_because: str = ""                  # why the calibration could not price a run of it


def estimate(to_run: list[RunSpec], output_root: Path, calibration: Calibration | None) -> list[MethodEstimate]:
    """Device seconds of every run still to run, per method (in plan order), with where each figure came from."""
    measured: dict[tuple[str, str, str], list[RunCost]] = {}
    for spec in store.stored_specs(output_root):
        cost = run_cost(spec.run_dir(output_root))
        if cost is not None:
            measured.setdefault((spec.method, spec.dataset, architecture_key(spec.backbone)), []).append(cost)
    estimates: dict[str, MethodEstimate] = {}
    for spec in to_run:
        entry = estimates.setdefault(spec.method, MethodEstimate(spec.method))
        entry.runs += 1
        seconds, source = _calibrated_seconds(spec, calibration)
        devices = {calibration.device} if seconds is not None else set()
        if seconds is None:
            entry.unpriced_because = source
            costs = measured.get((spec.method, spec.dataset, architecture_key(spec.backbone)), [])
            seconds, source = _stored_seconds(spec, costs)
            devices = {c.device for c in costs}
        if seconds is not None:
            entry.seconds += seconds
            entry.priced += 1
            entry.sources.add(source)
            entry.devices |= devices
    return list(estimates.values())


def architecture_key(backbone: dict) -> str:
    """What a run's speed depends on in its backbone spec: the architecture, its options and input size (not the
    init): a ViT-B/14's runs are not priced by a ResNet-50's."""
    from .spec import canonical_json
    return canonical_json({k: backbone.get(k) for k in ("arch", "options", "preprocessing")})


def calibrated_name(backbone: dict) -> str:
    """The backbone name `perf methods --arch` calibrates (a suite's backbone name; the architecture for a spec of
    none of them)."""
    from .backbone_choice import backbone_name
    return backbone_name(backbone) or backbone.get("arch", "?")


def calibration_fits(spec: RunSpec, calibration: Calibration) -> bool:
    """The calibration measured the run's backbone at its dataset's image size (and a ViT at its input size:
    `perf methods` gives a ViT the images' size as input size)."""
    from datasets.registry import get_dataset
    input_size = spec.backbone.get("preprocessing", {}).get("input_size", calibration.image_size)
    return (calibrated_name(spec.backbone) == calibration.arch and input_size == calibration.image_size
            and get_dataset(spec.dataset).image_size == calibration.image_size)


def _calibrated_seconds(spec: RunSpec, calibration: Calibration | None) -> tuple[float | None, str]:
    """(seconds, its source), or (None, why the calibration cannot price the run)."""
    if calibration is None:
        return None, "no calibration file"
    if not calibration_fits(spec, calibration):
        from datasets.registry import get_dataset
        return None, (f"the calibration measured {calibration.arch} at {calibration.image_size} px, these runs train "
                      f"{calibrated_name(spec.backbone)} at {get_dataset(spec.dataset).image_size} px")
    sizes = estimated_domain_sizes(spec)
    shape = _steps_and_batch(spec, sizes) if sizes else None
    if shape is None:
        return None, f"the domain sizes of {spec.dataset} are not known without reading it"
    epochs, steps, batch = shape
    if spec.method not in calibration.methods:
        if epochs == 0 and calibration.methods:      # evaluation only (the pretrained row): any method's embedding
            per_image = min(r.get("evaluation_seconds_per_image", 0.0) for r in calibration.methods.values())
            return per_image * sum(sizes), f"calibration ({calibration.device}; evaluation only)"
        return None, "the calibration has no rate of this method"
    rates = calibration.methods[spec.method]
    seconds = (epochs * steps * batch * 2 / rates["images_per_second"] + rates.get("setup_seconds", 0.0)
               + rates.get("evaluation_seconds_per_image", 0.0) * sum(sizes))
    return seconds, f"calibration ({calibration.device})"


def _stored_seconds(spec: RunSpec, costs: list[RunCost]) -> tuple[float | None, str]:
    if not costs:
        return None, ""
    per_epoch = sum(c.epoch_seconds for c in costs) / max(1, sum(c.epochs for c in costs))   # 0 epochs: pretrained
    overhead = sum(c.setup_seconds + c.evaluation_seconds for c in costs) / len(costs)
    devices = ", ".join(sorted({c.device for c in costs}))
    return per_epoch * _epochs(spec) + overhead, f"{len(costs)} finished run(s) on {spec.dataset} ({devices})"


def estimate_text(estimates: list[MethodEstimate], calibration: Calibration | None) -> str:
    """The --dry-run's lines: hours per method and in total, and the source of each figure."""
    if not estimates:
        return ""
    devices = set().union(*(entry.devices for entry in estimates))
    hours_name = ("CPU-hours" if devices == {"cpu"} else "GPU-hours" if devices and "cpu" not in devices
                  else "device-hours" + (" (measured on GPUs and CPUs)" if devices else ""))
    lines = ["estimated device time of the runs to run "
             + (f"(calibration {calibration.path}: {calibration.describe()}):" if calibration else
                "(no calibration file: python -m benchmark.perf methods --calibration FILE writes one):")]
    lines.append(f"  {'method':<14} {'runs':>5} {'hours':>9}  from")
    total, priced, runs = 0.0, 0, 0
    for entry in estimates:
        runs += entry.runs
        if entry.priced == 0:
            lines.append(f"  {entry.method:<14} {entry.runs:>5} {'?':>9}  not in the total: {entry.unpriced_because}, "
                         f"and the store has no finished run of it on this dataset")
            continue
        part = "" if entry.priced == entry.runs else f" ({entry.priced} of {entry.runs} runs priced)"
        lines.append(f"  {entry.method:<14} {entry.runs:>5} {entry.seconds / 3600:>9.3f}  "
                     f"{'; '.join(sorted(entry.sources))}{part}")
        total += entry.seconds
        priced += entry.priced
    if priced:
        lines.append(f"  {'total':<14} {runs:>5} {total / 3600:>9.3f}  {hours_name}"
                     + ("" if priced == runs else f" for the {priced} priced runs"))
    else:       # nothing to price from: no number, rather than a total of 0 hours
        lines.append(f"  {'total':<14} {runs:>5} {'?':>9}  no run could be priced (a calibration, `python -m "
                     f"benchmark.perf methods --calibration`, or finished runs of these methods price them)")
    lines.append("  (device time, one run at a time; runs sharing a GPU with --jobs N or a SLURM array take less "
                 "wall time, not less device time)")
    return "\n".join(lines)


def calibration_from_rates(device: str, suite: str, arch: str, image_size: int, precision: str, channels_last: bool,
                           compile: bool, tf32: bool, methods: dict) -> Calibration:
    import torch
    return Calibration(device=device, arch=arch, image_size=image_size, precision=precision,
                       channels_last=channels_last, compile=compile, tf32=tf32, suite=suite,
                       measured=time.strftime("%Y-%m-%dT%H:%M:%S%z"), torch=torch.__version__,
                       methods={name: {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                                       for k, v in rates.items()} for name, rates in methods.items()})
