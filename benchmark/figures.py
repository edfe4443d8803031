"""Figures of a suite (issue 8), from stored runs alone — nothing is trained or re-evaluated.

    <suite>_avg_by_method.{png,pdf}          Avg per method, one panel per setting: the mean over seeds of the per-seed
                                             Avg (pairs averaged within a seed), error bars the sample std over seeds —
                                             the numbers of the tables' Avg column (`tables.aggregate`).
    <suite>_open_detection.{png,pdf}         open setting: Open-set Acc and Detection Acc per method, with the method's
                                             own detector and with the paper's baseline detector (App. B.2).
    <suite>_retrievals_<setting>_<query>-<retrieval>_seed<seed>.{png,pdf}
                                             the poster's retrieval figure: a few queries (rows), each with its top k
                                             for up to four methods side by side, framed green (right class) or red
                                             (dashed orange: a tie, judged by the share of right items in it).
    <suite>_training_<method>.{png,pdf}      per method, every quantity of its runs' histories over the epochs: the
                                             loss terms and what the method logged (cluster counts, merged
                                             prototypes, accept or trust rates), a line per run.

The retrieval figure reads the sample each run stores (benchmark/retrievals.py: the same queries for every method of a
split) and the images from the dataset the run was trained on (its launch.json). Runs done before runs stored a
sample are left out with a one-line message, as is any figure that cannot be drawn; the others are still written.

Matplotlib is used through `Figure` objects (no pyplot, no display, no global backend switch); every file is written
atomically.

Names from the data (classes, domains, methods, datasets) are drawn as they are (`save_figure`): never as mathtext (a
class "$5 and $10 bills" was drawn as "5and10"), in the default font with, for characters it lacks (CJK, Arabic,
...), an installed font that has them; a character no installed font has is drawn transliterated to ASCII (anyascii)
and said in one line. A name that is not a plain file name becomes an ASCII part of the file name with a short hash,
so two such names never share a file.
"""
from __future__ import annotations

import functools
import hashlib
import io
import math
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from anyascii import anyascii
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font
from matplotlib.text import Text
from matplotlib.ticker import FixedFormatter
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from tqdm import tqdm

from datasets.base import DataError
from datasets.registry import get_dataset

from . import store
from .catalogue import DEFAULT_DETECTOR_PREFIX, cell_metrics, dataset_title, method_label, setting_title
from .catalogue import metric as catalogue_metric
from .collect import table_specs, tidy_frame
from .tables import AVG_COLUMN, TableModel, aggregate
from .retrievals import RETRIEVALS_FILE, read_retrieval_sample
from .spec import load_split_domains
from .spec import RunSpec

FORMATS = ("png", "pdf")
DPI = 120
MAX_RETRIEVAL_METHODS = 4       # columns of top-k blocks; more would make thumbnails too small to read

CORRECT_COLOUR = "#1a9641"
WRONG_COLOUR = "#d7191c"
PRIVATE_COLOUR = "#7b3294"
TIED_COLOUR = "#e08214"     # a rank whose score ties with other items: judged by the expected share, not the image
NULL_FACE = "#e3e3e3"

# Retrieval figure layout, in inches.
TILE = 0.9
TILE_GAP = 0.06
BLOCK_GAP = 0.4
MARGIN = 0.25
HEADER = 1.0            # title, method names, rank numbers
TILE_LABEL = 0.24       # the class name under a tile
ROW_GAP = 0.12
LEGEND = 0.75
CLASS_NAME_CHARS = 14

DETECTION_BARS = (  # (metric, legend label, own detector?); each metric's two detectors side by side
    ("open_set_acc", "Open-set Acc, own detector", True),
    (DEFAULT_DETECTOR_PREFIX + "open_set_acc", "Open-set Acc, App. B.2 detector", False),
    ("detection_acc", "Detection Acc, own detector", True),
    (DEFAULT_DETECTOR_PREFIX + "detection_acc", "Detection Acc, App. B.2 detector", False),
)
FOOTNOTE_CHARS_PER_INCH = 15    # at 8 pt: footnotes are wrapped to the figure's width


def write_figures(suite_name: str, specs: list[RunSpec], output_root: Path, out_dir: Path, *,
                  say: Callable[[str], None] = print) -> list[Path]:
    """Write every figure the stored runs of `specs` allow into `out_dir`; returns the written paths (PNG and PDF of
    each). What cannot be drawn (no done run, runs without a retrieval sample, images not found) is said in one line
    each through `say` and skipped."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", suite_name or ""):
        raise ValueError(f"suite name {suite_name!r} is not a plain file name (letters, digits, '_', '.', '-')")
    output_root, out_dir = Path(output_root), Path(out_dir)
    if not specs:
        say("figures: no run planned, nothing to draw")
        return []
    frame = tidy_frame(specs, output_root)
    models = [aggregate(frame, table) for table in table_specs(suite_name, specs)]
    retrieval_models = [m for m in models if list(m.spec.cell_metrics) == cell_metrics(m.spec.setting)]
    colours = method_colours(list(dict.fromkeys(s.method for s in specs)))
    written: list[Path] = []
    groups, methods = _retrieval_groups(specs), list(dict.fromkeys(s.method for s in specs))
    # a bar when drawing takes more than a few seconds (a suite of many pairs and methods: tens of figures)
    bar = tqdm(total=2 + len(groups) + len(methods), desc="figures", unit="figure", file=sys.stderr, delay=3.0,
               dynamic_ncols=True)

    if any(_avg(model, method).n for model in retrieval_models for method in model.methods):
        written += save_figure(avg_chart(retrieval_models, colours), out_dir / f"{suite_name}_avg_by_method", say=say)
    else:
        say("figures: no Avg bar chart: no method has a seed with every pair of its table done")
    bar.update()

    own = _model_with_metrics(models, [m for m, _, own_detector in DETECTION_BARS if own_detector])
    baseline = _model_with_metrics(models, [m for m, _, own_detector in DETECTION_BARS if not own_detector])
    if own is not None and baseline is not None:
        if any(_avg(m, method).n for m in (own, baseline) for method in m.methods):
            written += save_figure(detection_chart(own, baseline), out_dir / f"{suite_name}_open_detection", say=say)
        else:
            say("figures: no open-set detection chart: no method has a seed with every open-set pair done")
    bar.update()

    averages = {(model.spec.setting, method): _avg(model, method).mean
                for model in retrieval_models for method in model.methods}
    for group in groups:
        written += _write_retrieval_figure(suite_name, group, output_root, out_dir, averages, say)
        bar.update()
    for method in methods:
        histories = _histories([s for s in specs if s.method == method], output_root)
        if histories:
            written += save_figure(training_curves(method_label(method), histories),
                                   out_dir / f"{suite_name}_training_{file_name_part(method)}", say=say)
        bar.update()
    bar.close()
    return written


# ---------------------------------------------------------------------------------------------------------------------
# Bar charts, from the tables' model
# ---------------------------------------------------------------------------------------------------------------------

def method_colours(methods: list[str]) -> dict[str, tuple]:
    """One colour per method, the same in every chart of a suite (tab10, then tab20 for longer lists)."""
    from matplotlib import colormaps
    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {method: palette(i % palette.N) for i, method in enumerate(methods)}


def _avg(model: TableModel, method: str, metric_index: int = 0):
    return model.cell(method, AVG_COLUMN).summaries[metric_index]


def _model_with_metrics(models: list[TableModel], metrics: list[str]) -> TableModel | None:
    return next((m for m in models if list(m.spec.cell_metrics) == metrics), None)


def _label(method: str, spec) -> str:
    return spec.method_labels.get(method) or method_label(method)


def _seeds_text(spec) -> str:
    seeds = spec.expected_seeds
    return f"n={len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(str(s) for s in seeds)})"


def _error(summary) -> float:
    return 0.0 if math.isnan(summary.std) else summary.std


def avg_chart(models: list[TableModel], colours: dict[str, tuple]) -> Figure:
    """One panel per setting: a bar per method, its Avg (first cell metric) mean ± std over seeds."""
    widths = [max(4.0, 0.85 * len(m.methods) + 1.4) for m in models]
    figure = Figure(figsize=(sum(widths), 4.9), layout="constrained")
    axes = figure.subplots(1, len(models), width_ratios=widths, squeeze=False)[0]
    for ax, model in zip(axes, models):
        spec = model.spec
        metric_name = spec.cell_metrics[0]
        summaries = [_avg(model, method) for method in model.methods]
        positions = np.arange(len(model.methods))
        means = [s.mean if s.n else 0.0 for s in summaries]
        errors = [_error(s) for s in summaries]
        ax.bar(positions, means, yerr=errors, capsize=4, color=[colours[m] for m in model.methods],
               edgecolor="black", linewidth=0.6, error_kw={"linewidth": 1})
        top = max([s.mean + _error(s) for s in summaries if s.n] or [1.0])
        for x, summary in zip(positions, summaries):
            if summary.n == 0:
                text = "–\nno seed\nwith every\npair done"
            elif summary.n == 1 or math.isnan(summary.std):
                text = f"{summary.mean:.1f}\n(n=1)"
            else:
                text = f"{summary.mean:.1f}\n±{summary.std:.1f}"
            ax.text(x, (summary.mean + _error(summary) if summary.n else 0) + top * 0.02, text, ha="center",
                    va="bottom", fontsize=8)
        ax.set_ylim(0, top * 1.25)
        ax.set_xticks(positions, [_label(m, spec) for m in model.methods], rotation=35, ha="right")
        ax.set_ylabel(catalogue_metric(metric_name).axis)
        ax.set_title(f"{setting_title(spec.setting)} — Avg over {len(spec.pairs)} pair(s)",
                     fontsize=11)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    spec = models[0].spec
    figure.suptitle(f"Avg per method on {dataset_title(spec.dataset)}", fontsize=12)
    _footnote(figure, "bar: mean over seeds of the per-seed Avg (pairs averaged within a seed); error bar: sample "
                      f"std (ddof=1) over seeds; {_seeds_text(spec)}")
    return figure


def _footnote(figure: Figure, text: str) -> None:
    width = figure.get_figwidth()
    figure.supxlabel(textwrap.fill(text, int(width * FOOTNOTE_CHARS_PER_INCH)), fontsize=8)


def detection_chart(own: TableModel, baseline: TableModel) -> Figure:
    """Grouped bars per method: Open-set Acc and Detection Acc, own detector and App. B.2 detector, Avg ± std."""
    methods = own.methods
    figure = Figure(figsize=(max(6.0, 1.15 * len(methods) + 2.0), 5.0), layout="constrained")
    ax = figure.subplots()
    width = 0.2
    positions = np.arange(len(methods))
    metric_colours = {"open_set_acc": "#2c7bb6", "detection_acc": "#fdae61"}
    for i, (metric, legend, own_detector) in enumerate(DETECTION_BARS):
        model = own if own_detector else baseline
        index = list(model.spec.cell_metrics).index(metric)
        summaries = [_avg(model, method, index) for method in methods]
        colour = metric_colours[metric.removeprefix(DEFAULT_DETECTOR_PREFIX)]
        ax.bar(positions + (i - 1.5) * width, [s.mean if s.n else 0.0 for s in summaries], width,
               yerr=[_error(s) for s in summaries], capsize=2, color=colour, edgecolor="black", linewidth=0.5,
               hatch=None if own_detector else "//", alpha=1.0 if own_detector else 0.75, label=legend,
               error_kw={"linewidth": 0.8})
    ax.set_xticks(positions, [_label(m, own.spec) for m in methods], rotation=35, ha="right")
    ax.set_ylim(0, 105)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    # Above the axes: bars near 100 % would run into a legend drawn inside.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, fontsize=8, frameon=False)
    figure.suptitle(f"Open-set detection on {dataset_title(own.spec.dataset)} — Avg over {len(own.spec.pairs)} pair(s)",
                    fontsize=11)
    _footnote(figure, "Open-set Acc: fraction of private-class queries returned as null; Detection Acc: fraction of all "
                      "queries judged shared or private correctly; a method without a detector of its own uses App. "
                      "B.2's. bar: mean over seeds of the per-seed Avg (pairs averaged within a seed); error bar: "
                      f"sample std (ddof=1) over seeds; {_seeds_text(own.spec)}")
    return figure


# ---------------------------------------------------------------------------------------------------------------------
# Training curves, from the runs' histories
# ---------------------------------------------------------------------------------------------------------------------

HISTORY_SKIP = ("epoch", "seconds")
SEED_LINESTYLES = ("-", "--", ":", "-.")


def _histories(specs: list[RunSpec], output_root: Path) -> dict[tuple[str, int], list[dict]]:
    """(pair label, seed) -> the per-epoch history of each done run of `specs` that trained (has epochs)."""
    histories = {}
    for spec in specs:
        run_dir = spec.run_dir(output_root)
        if store.run_status(run_dir) != "done":
            continue
        history = store.read_history(run_dir)
        if any(set(row) - set(HISTORY_SKIP) for row in history):
            pair = get_dataset(spec.dataset).pair_label(spec.query_domain, spec.retrieval_domain)
            histories[(f"{setting_title(spec.setting)} {pair}", spec.seed)] = history
    return histories


def training_curves(method_label: str, histories: dict[tuple[str, int], list[dict]]) -> Figure:
    """One panel per quantity of the histories (loss terms, logged decisions), epoch on x, one line per run: colour
    by pair, line style by seed. Quantities a run did not log in an epoch (e.g. cluster counts before clustering
    starts) are left out of its line there."""
    keys = sorted(dict.fromkeys(key for history in histories.values() for row in history for key in row
                                if key not in HISTORY_SKIP), key=lambda key: (key != "loss", key))
    n_columns = min(4, len(keys))
    n_rows = math.ceil(len(keys) / n_columns)
    figure = Figure(figsize=(3.3 * n_columns, 2.3 * n_rows + 1.0), layout="constrained")
    axes = figure.subplots(n_rows, n_columns, squeeze=False).flatten()
    pairs = list(dict.fromkeys(pair for pair, _ in histories))
    seeds = sorted({seed for _, seed in histories})
    colours = method_colours(pairs)
    for ax, key in zip(axes, keys):
        for (pair, seed), history in histories.items():
            points = [(row["epoch"], row[key]) for row in history
                      if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]
            if points:
                ax.plot(*zip(*points), color=colours[pair], linestyle=SEED_LINESTYLES[seeds.index(seed) % 4],
                        linewidth=1.0, marker="." if len(points) < 15 else None, markersize=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D
    handles = ([Line2D([], [], color=colours[pair], label=pair) for pair in pairs]
               + [Line2D([], [], color="black", linestyle=SEED_LINESTYLES[i % 4], label=f"seed {seed}")
                  for i, seed in enumerate(seeds)])
    figure.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8,
                  frameon=False)
    figure.suptitle(f"{method_label}: loss terms and logged decisions per epoch (epoch means)", fontsize=11)
    return figure


# ---------------------------------------------------------------------------------------------------------------------
# The retrieval figure
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class RetrievalPanel:
    """What one retrieval figure shows: the split's domains and, per method, its stored sample."""
    title: str
    query_images: object            # uint8 [N, 3, S, S] tensor
    retrieval_images: object
    class_names: tuple[str, ...]
    samples: dict[str, dict]        # method label -> the run's retrievals.json content
    open_setting: bool


def _retrieval_groups(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """Specs grouped by (setting, ordered pair), in plan order."""
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.dataset, spec.setting, spec.query_domain, spec.retrieval_domain), []).append(spec)
    return list(groups.values())


def _stored_samples(done: list[RunSpec], output_root: Path, where: str, say) -> tuple[dict, list[RunSpec]]:
    """{(split seed, method): sample} of the done runs that have one, and the runs done before samples were stored;
    a damaged sample is named and left out."""
    samples: dict[tuple[int, str], dict] = {}
    without: list[RunSpec] = []
    for spec in done:
        try:
            sample = read_retrieval_sample(spec.run_dir(output_root))
        except ValueError as error:
            say(f"figures: {where}: left out {spec.method} seed {spec.seed}: {error}")
            continue
        if sample is None:
            without.append(spec)
        else:
            samples[(spec.split_seed, spec.method)] = sample
    return samples, without


def _write_retrieval_figure(suite_name: str, group: list[RunSpec], output_root: Path, out_dir: Path,
                            averages: dict[tuple[str, str], float], say) -> list[Path]:
    first = group[0]
    info = get_dataset(first.dataset)
    shown_setting = setting_title(first.setting)
    where = f"{shown_setting} {info.pair_label(first.query_domain, first.retrieval_domain)}"
    done = [spec for spec in group if store.run_status(spec.run_dir(output_root)) == "done"]
    if not done:
        say(f"figures: no retrieval figure for {where}: no run of it is done")
        return []
    samples, without = _stored_samples(done, output_root, where, say)
    if not samples:
        if without:
            say(f"figures: no retrieval figure for {where}: its {len(without)} done run(s) were made before runs "
                f"stored a retrieval sample ({RETRIEVALS_FILE})")
        return []

    # The split seed whose runs cover the most methods (the first on a tie): its runs share the queries shown.
    seed = max(sorted({seed for seed, _ in samples}), key=lambda s: (sum(1 for k in samples if k[0] == s), -s))
    methods = list(dict.fromkeys(spec.method for spec in group if (seed, spec.method) in samples))
    notes = []
    lacking = sorted({spec.method for spec in without if spec.split_seed == seed})
    if lacking:
        notes.append(f"left out {', '.join(lacking)} (done before runs stored a retrieval sample)")
    shown = choose_methods(methods, {m: averages.get((first.setting, m), math.nan) for m in methods})
    if len(shown) < len(methods):
        notes.append(f"showing {len(shown)} of {len(methods)} methods: the first and last of the table and the "
                     f"best Avg between them (--methods chooses others)")
    reference = [q["query_index"] for q in samples[(seed, shown[0])]["queries"]]
    for method in list(shown[1:]):
        if [q["query_index"] for q in samples[(seed, method)]["queries"]] != reference:
            notes.append(f"left out {method} (its sample holds other queries)")
            shown.remove(method)

    run_spec = next(s for s in group if s.split_seed == seed and s.method == shown[0])
    try:
        query, retrieval = _split_domains(run_spec, output_root)
    except (DataError, OSError, KeyError, ValueError) as error:   # data gone or moved: the other figures go on
        say(f"figures: no retrieval figure for {where}: could not load its images ({type(error).__name__}: {error})")
        return []
    for method in shown:
        sample = samples[(seed, method)]
        if (sample["n_query_images"], sample["n_retrieval_images"]) != (len(query), len(retrieval)):
            say(f"figures: no retrieval figure for {where}: the stored sample indexes {sample['n_query_images']} "
                f"query and {sample['n_retrieval_images']} retrieval images, the data now has {len(query)} and "
                f"{len(retrieval)}")
            return []
    for note in notes:
        say(f"figures: {where}: {note}")
    panel = RetrievalPanel(
        title=f"Top-{samples[(seed, shown[0])]['top_k']} retrievals — {shown_setting} {info.name} "
              f"{info.pair_label(first.query_domain, first.retrieval_domain)}, seed {seed}",
        query_images=query.images, retrieval_images=retrieval.images, class_names=info.class_map.names,
        samples={method_label(m): samples[(seed, m)] for m in shown}, open_setting=first.setting == "open")
    name = (f"{file_name_part(first.setting)}_{file_name_part(first.query_domain)}-"
            f"{file_name_part(first.retrieval_domain)}")
    return save_figure(retrieval_figure(panel), out_dir / f"{suite_name}_retrievals_{name}_seed{seed}", say=say)


def file_name_part(text: str) -> str:
    """A name as part of a file name: itself when plain ("photo", "Real_World"); else its ASCII transliteration with
    the first 6 hex digits of its SHA-1, so that "素描" and "油画", or "Café" and "Cafe", never share a file."""
    if re.fullmatch(r"[A-Za-z0-9_.-]+", text):
        return text
    ascii_part = re.sub(r"[^A-Za-z0-9_.-]+", "_", anyascii(text)).strip("_")
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:6]
    return f"{ascii_part}-{digest}" if ascii_part else digest


def _split_domains(spec: RunSpec, output_root: Path):
    """The run's query and retrieval domains as the runner evaluated them (loaded once per figure)."""
    run_dir = spec.run_dir(output_root)
    launch = store.read_launch(run_dir)
    return load_split_domains(spec, launch.data_path, launch.cache_path(run_dir))


def choose_methods(methods: list[str], averages: dict[str, float], limit: int = MAX_RETRIEVAL_METHODS) -> list[str]:
    """At most `limit` methods, in table order: the first (the starting point) and the last (the paper's own method),
    then those between with the highest Avg (unknown Avg last, ties by table order)."""
    if len(methods) <= limit:
        return list(methods)
    middle = methods[1:-1]
    ranked = sorted(middle, key=lambda m: (math.isnan(averages.get(m, math.nan)),
                                           -np.nan_to_num(averages.get(m, math.nan)), middle.index(m)))
    keep = {methods[0], methods[-1], *ranked[:limit - 2]}
    return [m for m in methods if m in keep]


def _thumbnail(images, index: int) -> np.ndarray:
    return images[index].permute(1, 2, 0).numpy()


def _short(name: str) -> str:
    return name if len(name) <= CLASS_NAME_CHARS else name[:CLASS_NAME_CHARS - 1] + "…"


def _frame(ax, colour: str, width: float, style: str = "solid") -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)
        spine.set_linestyle(style)


def retrieval_figure(panel: RetrievalPanel) -> Figure:
    """Rows = the sampled queries; the query image, then for each method its top k framed green (same class as the
    query) or red, or one "null" tile where the method returned null."""
    methods = list(panel.samples)
    reference = panel.samples[methods[0]]
    k = reference["top_k"]
    queries = reference["queries"]
    block = k * TILE + (k - 1) * TILE_GAP
    width = 2 * MARGIN + TILE + len(methods) * (BLOCK_GAP + block)
    row_height = TILE + TILE_LABEL + ROW_GAP
    height = HEADER + len(queries) * row_height + LEGEND
    figure = Figure(figsize=(width, height))

    def add_tile(left: float, top: float):
        return figure.add_axes((left / width, (height - top - TILE) / height, TILE / width, TILE / height))

    def label_under(left: float, top: float, text: str, colour: str, bold: bool = False) -> None:
        figure.text((left + TILE / 2) / width, (height - top - TILE - 0.04) / height, text, ha="center", va="top",
                    fontsize=7.5, color=colour, fontweight="bold" if bold else "normal")

    figure.text(0.5, 1 - 0.12 / height, panel.title, ha="center", va="top", fontsize=13)
    block_lefts = [MARGIN + TILE + BLOCK_GAP + i * (BLOCK_GAP + block) for i in range(len(methods))]
    figure.text((MARGIN + TILE / 2) / width, 1 - 0.55 / height, "Query", ha="center", va="center", fontsize=11,
                fontweight="bold")
    for method, left in zip(methods, block_lefts):
        figure.text((left + block / 2) / width, 1 - 0.55 / height, method, ha="center", va="center", fontsize=11,
                    fontweight="bold")
        for rank in range(k):
            figure.text((left + rank * (TILE + TILE_GAP) + TILE / 2) / width, 1 - 0.85 / height, f"{rank + 1}",
                        ha="center", va="center", fontsize=8, color="dimgray")

    for row, query in enumerate(queries):
        top = HEADER + row * row_height
        ax = add_tile(MARGIN, top)
        ax.imshow(_thumbnail(panel.query_images, query["query_index"]))
        name = _short(panel.class_names[query["label"]])
        if query["private"]:
            _frame(ax, PRIVATE_COLOUR, 3.0, "--")
            label_under(MARGIN, top, f"{name} (private)", PRIVATE_COLOUR, bold=True)
        else:
            _frame(ax, "black", 1.0)
            label_under(MARGIN, top, name, "black", bold=True)
        for method, left in zip(methods, block_lefts):
            sample = next(q for q in panel.samples[method]["queries"] if q["query_index"] == query["query_index"])
            if sample["returned_null"]:
                ax = add_tile(left, top)
                ax.set_facecolor(NULL_FACE)
                ax.text(0.5, 0.5, "null", ha="center", va="center", fontsize=15, fontweight="bold",
                        transform=ax.transAxes)
                right = sample["private"]   # null is the right answer for a private query only
                _frame(ax, CORRECT_COLOUR if right else WRONG_COLOUR, 3.5)
                label_under(left, top, "✓ returned null" if right else "✗ returned null",
                            CORRECT_COLOUR if right else WRONG_COLOUR)
                continue
            ranks = zip(sample["retrieved_indices"], sample["retrieved_labels"], sample["retrieved_correct"],
                        sample["retrieved_tied"], sample["retrieved_expected_correct"])
            for rank, (index, label, correct, tied, expected) in enumerate(ranks):
                tile_left = left + rank * (TILE + TILE_GAP)
                ax = add_tile(tile_left, top)
                ax.imshow(_thumbnail(panel.retrieval_images, index))
                if tied:        # which tied item sits here is arbitrary: show the share of right answers instead
                    _frame(ax, TIED_COLOUR, 3.5, "--")
                    label_under(tile_left, top, f"= tie: {expected:.0%} ✓", TIED_COLOUR)
                    continue
                colour = CORRECT_COLOUR if correct else WRONG_COLOUR
                _frame(ax, colour, 3.5)
                label_under(tile_left, top, f"{'✓' if correct else '✗'} {_short(panel.class_names[label])}", colour)

    handles = [Patch(facecolor="white", edgecolor=CORRECT_COLOUR, linewidth=3,
                     label="green ✓ = correct: same class as the query"),
               Patch(facecolor="white", edgecolor=WRONG_COLOUR, linewidth=3,
                     label="red ✗ = wrong: another class")]
    if any(any(q["retrieved_tied"]) for sample in panel.samples.values() for q in sample["queries"]):
        handles.append(Patch(facecolor="white", edgecolor=TIED_COLOUR, linewidth=3, linestyle="--",
                             label="dashed orange = tie: the score equals other items' (image: one of them); "
                                   "% = the tied items of the query's class"))
    if panel.open_setting:
        handles += [Patch(facecolor="white", edgecolor=PRIVATE_COLOUR, linewidth=2, linestyle="--",
                          label="private query: its class is absent from the retrieval domain (right answer: null)"),
                    Patch(facecolor=NULL_FACE, edgecolor="gray",
                          label='"null": the method returned nothing (green for a private query, red for a shared one)')]
    figure.legend(handles=handles, loc="lower center", ncols=2, fontsize=9, frameon=False,
                  bbox_to_anchor=(0.5, 0.1 / height))
    return figure


# ---------------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------------

def save_figure(figure: Figure, stem: Path, say: Callable[[str], None] = print) -> list[Path]:
    """`stem`.png and `stem`.pdf, each rendered in memory and written atomically; returns both paths. Every text is
    drawn as it is (`draw_text_as_is`); a character no installed font has is transliterated and said through `say`."""
    for line in draw_text_as_is(figure):
        say(f"figures: {stem.name}: {line}")
    paths = []
    for file_format in FORMATS:
        buffer = io.BytesIO()
        # No creation date in the PDF: the same runs give the same bytes.
        metadata = {"CreationDate": None} if file_format == "pdf" else None
        # Texts matplotlib makes while drawing (tick labels) are not mathtext either.
        with matplotlib.rc_context({"text.parse_math": False}):
            figure.savefig(buffer, format=file_format, dpi=DPI, metadata=metadata)
        path = stem.with_name(f"{stem.name}.{file_format}")
        store.atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# Names drawn as they are: no mathtext, a font that has their characters
# ---------------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _glyphs(path: str) -> frozenset[int]:
    """The code points a font file has glyphs for (empty for a file FreeType cannot read)."""
    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def _font_path(family: str) -> str | None:
    try:
        return font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
    except ValueError:
        return None


def fallback_families(characters: set[str]) -> list[str]:
    """Installed font families that have glyphs for some of `characters`, in the order that covers them with the
    fewest fonts (each next family the one that adds the most). Matplotlib's "Last Resort" font (a box per code
    point block) does not count."""
    wanted = {ord(c) for c in characters}
    families: dict[str, frozenset[int]] = {}
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith("Last Resort") or entry.name in families:
            continue
        covered = _glyphs(entry.fname) & wanted
        if covered:
            families[entry.name] = covered
    chosen = []
    while wanted and families:
        name = max(families, key=lambda n: (len(families[n] & wanted), n))
        if not families[name] & wanted:
            break
        chosen.append(name)
        wanted -= families.pop(name)
    return chosen


def _texts(figure: Figure) -> list[Text]:
    return [artist for artist in figure.findobj(Text) if artist.get_text()]


def _formatters(figure: Figure) -> list[FixedFormatter]:
    """The tick label lists of the axes (`set_xticks(positions, labels)`): matplotlib sets them at each draw."""
    return [formatter for ax in figure.axes for axis in (ax.xaxis, ax.yaxis)
            for formatter in (axis.get_major_formatter(), axis.get_minor_formatter())
            if isinstance(formatter, FixedFormatter)]


def _missing_runs(missing: set[str]) -> re.Pattern:
    return re.compile("[" + re.escape("".join(sorted(missing))) + "]+")


def _transliterated(text: str, missing: set[str]) -> str:
    """`text` with each run of `missing` characters replaced by its anyascii transliteration."""
    return _missing_runs(missing).sub(lambda match: anyascii(match.group(0)) or "?", text)


def draw_text_as_is(figure: Figure) -> list[str]:
    """Prepares every text of `figure` to be drawn as it is: not as mathtext (a "$" is a dollar sign), in the default
    font followed by installed fonts that have the characters it lacks (matplotlib falls back glyph by glyph); a
    character no installed font has is transliterated with anyascii. Returns one line per transliterated name."""
    texts, formatters = _texts(figure), _formatters(figure)
    for text in texts:
        text.set_parse_math(False)
    strings = [text.get_text() for text in texts] + [str(label) for f in formatters for label in f.seq]
    characters = {c for string in strings for c in string if c.isprintable() and not c.isspace()}
    default_glyphs = _glyphs(font_manager.findfont(font_manager.FontProperties()))   # rcParams' font, DejaVu Sans
    lacking = {c for c in characters if ord(c) not in default_glyphs}
    if not lacking:
        return []
    fallbacks = fallback_families(lacking)
    for family in fallbacks:
        path = _font_path(family)
        lacking -= {c for c in lacking if path is not None and ord(c) in _glyphs(path)}
    families = list(matplotlib.rcParams["font.family"]) + fallbacks
    for text in texts:
        text.set_fontfamily(families)
    if not lacking:
        return []
    replaced = {string: _transliterated(string, lacking) for string in strings if set(string) & lacking}
    for text in texts:
        text.set_text(replaced.get(text.get_text(), text.get_text()))
    for formatter in formatters:
        formatter.seq = [replaced.get(str(label), label) for label in formatter.seq]
    points = ", ".join(f"U+{ord(c):04X}" for c in sorted(lacking)[:8]) + (" ..." if len(lacking) > 8 else "")
    runs = dict.fromkeys(run for string in replaced for run in _missing_runs(lacking).findall(string))
    return [f"no installed font has the characters {points}: drawn transliterated, "
            + ", ".join(f"{run!r} as {_transliterated(run, lacking)!r}" for run in list(runs)[:6])
            + " (install a font that has them, e.g. Noto Sans CJK for Chinese and Japanese)"]
