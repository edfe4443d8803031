"""Result tables of a suite: aggregate the tidy results over seeds, render them as markdown, LaTeX and CSV.

Input: the tidy frame the store collects (DESIGN §3.7), one row per (run, metric), with the columns of `TIDY_COLUMNS`.
Runs that are not done (failed, incomplete, missing) keep rows with value NaN, so that they can be counted.

A `TableSpec` says what one table shows (dataset, setting, methods in row order, pairs in column order, the metric or
metrics of a cell, the expected seeds). `aggregate` turns the frame into a `TableModel`, from which every renderer
(`to_markdown`, `to_latex`, `to_csv_frame`) reads, so the three outputs cannot disagree.

Aggregation rule
----------------
- Pair cell (method x pair x metric): mean, std and n over the expected seeds whose run is done and has the metric.
  std is the sample standard deviation (ddof=1), NaN when n = 1 (the cell then shows the mean alone).
- Avg column, per seed first: for each seed whose runs of *every* pair of the table are done, average the pairs of that
  seed; then mean, std (ddof=1) and n over those seeds.
  Why: the ± of Avg should say how much the method's average performance moves from one seed to the next. Taking the
  std of each pair over seeds and then averaging (or pooling all method x pair values) mixes in how much the pairs differ
  from each other, and overstates the seed noise of the average. This is DomainBed's rule, and the paper's Avg stds
  (smaller than its per-pair stds) read the same way. A seed with a pair missing would shift the average towards the
  pairs it has, so it is left out of Avg, and the Avg's own n and footnote say so.
- Values are multiplied by `TableSpec.scale` (100: percent, as in the paper).
- Best per column (highest mean, compared as displayed, so that ties are all marked) in bold, second best underlined;
  for two-metric cells (open-set "mAP / Acc") each number is ranked and marked on its own. A column where fewer than
  two methods have a number marks nothing.
- Nothing is dropped silently: a method without any done run still gets its row; a cell with fewer done seeds than
  expected carries a footnote "n=k of N seeds (1 failed, ...)", and a cell without any shows "–" with such a footnote.
  Seeds outside `expected_seeds` and methods or pairs outside the spec are not part of the table.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .store import atomic_write_text

TIDY_COLUMNS = (
    "dataset", "setting", "query_domain", "retrieval_domain", "pair", "method", "seed", "status", "metric", "value",
    "run_id",
)
_STRING_COLUMNS = tuple(c for c in TIDY_COLUMNS if c not in ("seed", "value"))

DONE = "done"
NOT_DONE_STATUSES = ("failed", "incomplete", "missing")  # the order in which footnotes count them
AVG_COLUMN = "Avg"
METHOD_HEADER = "Method"
MISSING_CELL = "–"

# Short names of metrics for captions and two-metric cells; TableSpec.metric_short_names adds to or overrides these.
DEFAULT_METRIC_SHORT_NAMES = {
    "map_all_coda": "mAP@All",
    "map_all": "mAP",
    "shared_map_all": "mAP",
    "open_set_acc": "Acc",
    "detection_acc": "Detection Acc",
    "shared_false_null_rate": "False-null rate",
}


# ---------------------------------------------------------------------------------------------------------------------
# The tidy CSV
# ---------------------------------------------------------------------------------------------------------------------

def _check_tidy_columns(frame: pd.DataFrame, source: str) -> None:
    missing = [c for c in TIDY_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: the tidy results lack the columns {missing}; expected the columns {list(TIDY_COLUMNS)}")


def load_tidy(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Read a tidy results CSV written by `save_tidy`; names and run ids stay strings, seed int, value float."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"no tidy results file at {path}")
    frame = pd.read_csv(path, dtype={c: str for c in _STRING_COLUMNS})  # str: a run id like "1e05" stays a string
    _check_tidy_columns(frame, str(path))
    frame["seed"] = frame["seed"].astype(int)
    frame["value"] = frame["value"].astype(float)
    return frame


def save_tidy(frame: pd.DataFrame, csv_path: str | os.PathLike) -> Path:
    """Write the tidy frame as CSV, atomically. Returns the path."""
    _check_tidy_columns(frame, "save_tidy")
    path = Path(csv_path)
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))
    return path


# ---------------------------------------------------------------------------------------------------------------------
# What a table shows, and the model that all renderers read
# ---------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TableSpec:
    """One table: rows `methods` (in order), columns `pairs` (display labels, in order) then Avg.

    A cell shows `cell_metrics` (one metric, or two for open-set "mAP / Acc"). `key` names the table in the CSV and in
    the LaTeX label; by default "<dataset>-<setting>-<metrics>".
    """

    title: str
    dataset: str
    setting: str
    methods: list[str]
    method_labels: dict[str, str]
    pairs: list[str]
    cell_metrics: list[str]
    metric_description: str
    expected_seeds: list[int]
    scale: float = 100.0
    digits: int = 1
    key: str | None = None
    metric_short_names: dict[str, str] = field(default_factory=dict)
    show_avg: bool = True

    def __post_init__(self) -> None:
        for name in ("methods", "pairs", "cell_metrics", "expected_seeds"):
            values = list(getattr(self, name))
            if not values:
                raise ValueError(f"TableSpec {self.title!r}: {name} is empty")
            duplicates = sorted({str(v) for v in values if values.count(v) > 1})
            if duplicates:
                raise ValueError(f"TableSpec {self.title!r}: {name} lists {duplicates} more than once")
        if AVG_COLUMN in self.pairs:
            raise ValueError(f"TableSpec {self.title!r}: {AVG_COLUMN!r} is the average column, not a pair")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"TableSpec {self.title!r}: scale must be a positive number, got {self.scale!r}")
        if not (isinstance(self.digits, int) and self.digits >= 0):
            raise ValueError(f"TableSpec {self.title!r}: digits must be an int >= 0, got {self.digits!r}")

    @property
    def table_key(self) -> str:
        return self.key or f"{self.dataset}-{self.setting}-{'-'.join(self.cell_metrics)}"

    @property
    def columns(self) -> list[str]:
        return list(self.pairs) + ([AVG_COLUMN] if self.show_avg else [])

    def method_label(self, method: str) -> str:
        return self.method_labels.get(method, method)

    def metric_short_name(self, metric: str) -> str:
        return self.metric_short_names.get(metric) or DEFAULT_METRIC_SHORT_NAMES.get(metric, metric)


@dataclass(frozen=True)
class SeedSummary:
    """mean and sample std (ddof=1; NaN when n < 2) over n seeds, already scaled; mean NaN when n = 0."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "SeedSummary":
        n = len(values)
        if n == 0:
            return cls(math.nan, math.nan, 0)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
        return cls(mean, std, n)


@dataclass
class Cell:
    """One method x column: a summary per cell metric, the rank marks, and why seeds are missing from it.

    `status_counts` counts the expected seeds of a pair cell by run status ("done", "failed", ...); for the Avg cell it
    counts seeds as "complete" (every pair done) or "incomplete pairs". `marks[i]` is "best", "second" or None.
    """

    method: str
    column: str
    summaries: list[SeedSummary]
    status_counts: dict[str, int]
    n_expected: int
    marks: list[str | None]
    footnote_marker: str | None = None

    @property
    def is_missing(self) -> bool:
        return all(s.n == 0 for s in self.summaries)


@dataclass
class TableModel:
    spec: TableSpec
    cells: dict[tuple[str, str], Cell]  # (method, column) -> cell
    footnotes: list[tuple[str, str]]  # (marker, text), in the order of their first cell
    caption_body: str  # plain text after the title (metric, statistic, seeds, scale); the renderers escape it

    @property
    def caption(self) -> str:
        return f"{self.spec.title.rstrip('. ')}. {self.caption_body}"

    @property
    def methods(self) -> list[str]:
        return list(self.spec.methods)

    @property
    def columns(self) -> list[str]:
        return self.spec.columns

    @property
    def label(self) -> str:
        return "tab:" + re.sub(r"[^A-Za-z0-9_:.-]+", "-", self.spec.table_key)

    def cell(self, method: str, column: str) -> Cell:
        return self.cells[(method, column)]


# ---------------------------------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------------------------------

def _select_rows(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    rows = frame[
        (frame["dataset"] == spec.dataset)
        & (frame["setting"] == spec.setting)
        & frame["method"].isin(spec.methods)
        & frame["pair"].isin(spec.pairs)
        & frame["seed"].isin(spec.expected_seeds)
    ]
    return rows


def _run_statuses(rows: pd.DataFrame) -> "_Statuses":
    """(method, pair, seed) -> run status; two runs (or two statuses) for one seed of a cell is an error."""
    statuses: dict[tuple[str, str, int], str] = {}
    for (method, pair, seed), run_rows in rows.groupby(["method", "pair", "seed"], sort=False):
        run_ids = sorted(set(run_rows["run_id"].dropna()))
        if len(run_ids) > 1:
            raise ValueError(
                f"the tidy results hold {len(run_ids)} runs for method {method!r}, pair {pair!r}, seed {seed}: "
                f"{run_ids}; one table cell takes one run per seed (filter the frame to one configuration first)"
            )
        run_statuses = sorted(set(run_rows["status"]))
        if len(run_statuses) > 1:
            raise ValueError(
                f"run {run_ids} (method {method!r}, pair {pair!r}, seed {seed}) has the statuses {run_statuses}; "
                f"a run has one status"
            )
        statuses[(str(method), str(pair), int(seed))] = str(run_statuses[0])
    return statuses


def _done_values(rows: pd.DataFrame, metrics: list[str]) -> "_Values":
    """(method, pair, seed, metric) -> value, for done runs whose value is a number."""
    done = rows[(rows["status"] == DONE) & rows["metric"].isin(metrics) & rows["value"].notna()]
    repeated = done[done.duplicated(["method", "pair", "seed", "metric"], keep=False)]
    if not repeated.empty:
        first = repeated.iloc[0]
        raise ValueError(
            f"the tidy results hold {len(repeated)} rows for method {first['method']!r}, pair {first['pair']!r}, "
            f"seed {first['seed']}, metric {first['metric']!r}; expected one"
        )
    return {
        (str(r.method), str(r.pair), int(r.seed), str(r.metric)): float(r.value)
        for r in done.itertuples(index=False)
    }


_Statuses = dict[tuple[str, str, int], str]  # (method, pair, seed) -> run status
_Values = dict[tuple[str, str, int, str], float]  # (method, pair, seed, metric) -> value of a done run, unscaled


def _pair_cell(method: str, pair: str, spec: TableSpec, statuses: _Statuses, values: _Values) -> Cell:
    """mean ± std over the expected seeds of one pair; seeds absent from the frame count as missing runs."""
    seeds = spec.expected_seeds
    status_counts = Counter(statuses.get((method, pair, seed), "missing") for seed in seeds)
    summaries = []
    for metric in spec.cell_metrics:
        seed_values = [values[(method, pair, s, metric)] * spec.scale for s in seeds if (method, pair, s, metric) in values]
        summaries.append(SeedSummary.of(seed_values))
    return Cell(method, pair, summaries, dict(status_counts), len(seeds), [None] * len(summaries))


def _avg_cell(method: str, spec: TableSpec, values: _Values) -> Cell:
    """Avg per seed first: the mean over the pairs of each seed that has every pair, then mean ± std over seeds."""
    summaries = []
    complete_seeds: set[int] = set()
    for metric in spec.cell_metrics:
        per_seed_averages = []
        for seed in spec.expected_seeds:
            keys = [(method, pair, seed, metric) for pair in spec.pairs]
            if all(key in values for key in keys):
                per_seed_averages.append(math.fsum(values[key] for key in keys) / len(keys) * spec.scale)
                complete_seeds.add(seed)
        summaries.append(SeedSummary.of(per_seed_averages))
    n_expected = len(spec.expected_seeds)
    counts = {"complete": len(complete_seeds), "incomplete pairs": n_expected - len(complete_seeds)}
    return Cell(method, AVG_COLUMN, summaries, counts, n_expected, [None] * len(summaries))


def format_number(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def _mark_best_and_second(cells: list[Cell], metric_index: int, digits: int) -> None:
    """Bold the highest mean of a column, underline the next highest; means compared as displayed (ties share)."""
    shown = {
        id(cell): float(format_number(cell.summaries[metric_index].mean, digits))
        for cell in cells
        if cell.summaries[metric_index].n > 0
    }
    if len(shown) < 2:
        return
    ranked = sorted(set(shown.values()), reverse=True)
    best, second = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    for cell in cells:
        value = shown.get(id(cell))
        if value == best:
            cell.marks[metric_index] = "best"
        elif value is not None and value == second:
            cell.marks[metric_index] = "second"


def _reasons(cell: Cell, spec: TableSpec) -> str:
    """Why seeds are missing from a pair cell: '1 failed, 2 missing', then done runs that lack a metric."""
    counts = cell.status_counts
    others = sorted(s for s in counts if s != DONE and s not in NOT_DONE_STATUSES)
    parts = [f"{counts[s]} {s}" for s in (*NOT_DONE_STATUSES, *others) if counts.get(s)]
    for metric, summary in zip(spec.cell_metrics, cell.summaries):
        lacking = counts.get(DONE, 0) - summary.n
        if lacking > 0:
            parts.append(f"{lacking} done without {spec.metric_short_name(metric)}")
    return ", ".join(parts)


def _n_text(cell: Cell, spec: TableSpec) -> str:
    ns = [s.n for s in cell.summaries]
    if len(set(ns)) == 1:
        return f"n={ns[0]}"
    return "n=" + ", ".join(f"{n} ({spec.metric_short_name(m)})" for n, m in zip(ns, spec.cell_metrics))


def _footnote_text(cell: Cell, spec: TableSpec) -> str | None:
    if all(s.n == cell.n_expected for s in cell.summaries):
        return None
    n_text = f"{_n_text(cell, spec)} of {cell.n_expected} seeds"
    if cell.column == AVG_COLUMN:
        if cell.is_missing:
            return f"Avg over {n_text}: no seed has every pair done."
        return f"Avg over {n_text}: only seeds with every pair done enter Avg."
    return f"{n_text} ({_reasons(cell, spec)})."


def _footnote_marker(index: int) -> str:
    """a, b, ..., z, aa, ab, ..."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("a") + remainder) + letters
    return letters


def _assign_footnotes(cells: dict[tuple[str, str], Cell], spec: TableSpec) -> list[tuple[str, str]]:
    """One marker per distinct footnote text, lettered in reading order (row by row)."""
    marker_of_text: dict[str, str] = {}
    for method in spec.methods:
        for column in spec.columns:
            cell = cells[(method, column)]
            text = _footnote_text(cell, spec)
            if text is None:
                continue
            if text not in marker_of_text:
                marker_of_text[text] = _footnote_marker(len(marker_of_text))
            cell.footnote_marker = marker_of_text[text]
    return [(marker, text) for text, marker in marker_of_text.items()]


def _caption_body(spec: TableSpec) -> str:
    """The caption after the title: the metric, the statistic and its n, the seeds, the scale, the marks."""
    seeds = ", ".join(str(s) for s in spec.expected_seeds)
    n_seeds = len(spec.expected_seeds)
    sentences = [f"{spec.metric_description.rstrip('. ')}."]
    if len(spec.cell_metrics) > 1:
        sentences.append(f"Each cell reads {' / '.join(spec.metric_short_name(m) for m in spec.cell_metrics)}.")
    scale = "as fractions" if spec.scale == 1 else f"×{spec.scale:g}"
    sentences.append(
        f"Values {scale}: mean ± std (sample std, ddof=1) over n={n_seeds} seeds ({seeds}), "
        f"unless a footnote gives a smaller n; a cell with n=1 shows the mean alone."
    )
    if spec.show_avg:
        sentences.append(
            "Avg: the mean over the pairs within each seed first, then mean ± std over the seeds with every pair done."
        )
    sentences.append("Best per column in bold, second best underlined.")
    return " ".join(sentences)


def aggregate(frame: pd.DataFrame, spec: TableSpec) -> TableModel:
    """The table model of `spec` from the tidy frame (see the module docstring for the rule)."""
    _check_tidy_columns(frame, f"aggregate({spec.title!r})")
    rows = _select_rows(frame, spec)
    statuses = _run_statuses(rows)
    values = _done_values(rows, spec.cell_metrics)

    cells: dict[tuple[str, str], Cell] = {}
    for method in spec.methods:
        for pair in spec.pairs:
            cells[(method, pair)] = _pair_cell(method, pair, spec, statuses, values)
        if spec.show_avg:
            cells[(method, AVG_COLUMN)] = _avg_cell(method, spec, values)

    for column in spec.columns:
        column_cells = [cells[(method, column)] for method in spec.methods]
        for metric_index in range(len(spec.cell_metrics)):
            _mark_best_and_second(column_cells, metric_index, spec.digits)

    footnotes = _assign_footnotes(cells, spec)
    return TableModel(spec=spec, cells=cells, footnotes=footnotes, caption_body=_caption_body(spec))


# ---------------------------------------------------------------------------------------------------------------------
# Renderers
# ---------------------------------------------------------------------------------------------------------------------

def _summary_text(summary: SeedSummary, digits: int) -> str:
    """'20.0 ± 10.0', the mean alone when n = 1, '–' when n = 0 (plain text, escaped by each renderer)."""
    if summary.n == 0:
        return MISSING_CELL
    if summary.n == 1 or math.isnan(summary.std):
        return format_number(summary.mean, digits)
    return f"{format_number(summary.mean, digits)} ± {format_number(summary.std, digits)}"


def _render_cell(cell: Cell, digits: int, escape, bold, underline, superscript) -> str:
    if cell.is_missing:
        parts = [escape(MISSING_CELL)]
    else:
        parts = []
        for summary, mark in zip(cell.summaries, cell.marks):
            text = escape(_summary_text(summary, digits))
            if mark == "best":
                text = bold(text)
            elif mark == "second":
                text = underline(text)
            parts.append(text)
    text = " / ".join(parts)
    if cell.footnote_marker:
        text += superscript(cell.footnote_marker)
    return text


# Markdown ------------------------------------------------------------------------------------------------------------

_MARKDOWN_SPECIALS = re.compile(r"([\\|*_`<>\[\]])")


def markdown_escape(text: str) -> str:
    """Backslash-escape the characters that would break a pipe table or start emphasis, code, HTML or links."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


def _rendered_rows(model: TableModel, escape, bold, underline, superscript) -> list[list[str]]:
    """One list of rendered cells per method (its label first), in one output format."""
    return [[escape(model.spec.method_label(method))]
            + [_render_cell(model.cell(method, column), model.spec.digits, escape, bold=bold, underline=underline,
                            superscript=superscript) for column in model.columns]
            for method in model.methods]


def to_markdown(model: TableModel) -> str:
    """Caption above, a pipe table (GitHub renders it), footnotes below; bold best, <u>underlined</u> second."""
    spec = model.spec
    headers = [METHOD_HEADER] + [markdown_escape(c) for c in model.columns]
    body = _rendered_rows(model, markdown_escape, bold=lambda t: f"**{t}**", underline=lambda t: f"<u>{t}</u>",
                          superscript=lambda m: f"<sup>{m}</sup>")
    table = tabulate(
        body, headers=headers, tablefmt="pipe", disable_numparse=True,
        colalign=["left"] + ["center"] * len(model.columns),
    )
    title = spec.title.rstrip(". ")
    lines = [f"**{markdown_escape(title)}.** {markdown_escape(model.caption_body)}", "", table]
    if model.footnotes:
        lines.append("")
        lines.append("<br>\n".join(f"<sup>{marker}</sup> {markdown_escape(text)}" for marker, text in model.footnotes))
    return "\n".join(lines) + "\n"


# LaTeX ---------------------------------------------------------------------------------------------------------------

_LATEX_REPLACEMENTS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "→": r"$\rightarrow$",
    "←": r"$\leftarrow$",
    "±": r"$\pm$",
    "×": r"$\times$",
    "–": "--",
    "—": "---",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
}


def latex_escape(text: str) -> str:
    """Text safe in LaTeX: the special characters `\\ & % $ # _ { } ~ ^` (and < > |) escaped, and the unicode
    symbols of our tables (→ ± × –) written as LaTeX. One pass over the characters, so nothing is escaped twice."""
    return "".join(_LATEX_REPLACEMENTS.get(char, char) for char in str(text))


def to_latex(model: TableModel) -> str:
    """A booktabs `table` environment (needs \\usepackage{booktabs,graphicx}); shrunk to the line width only if wider.

    Cells are never truncated; names and the caption are escaped."""
    spec = model.spec
    header = " & ".join([METHOD_HEADER] + [latex_escape(c) for c in model.columns]) + r" \\"
    rows = _rendered_rows(model, latex_escape, bold=lambda t: rf"\textbf{{{t}}}",
                          underline=lambda t: rf"\underline{{{t}}}", superscript=lambda m: rf"\textsuperscript{{{m}}}")
    body = [" & ".join(cells) + r" \\" for cells in rows]
    tabular = [
        rf"\begin{{tabular}}{{l{'c' * len(model.columns)}}}",
        r"\toprule",
        header,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if model.footnotes:
        # Footnotes go in an outer one-column tabular under the table, so they start at its left edge (no package).
        notes = [rf"\footnotesize\textsuperscript{{{marker}}}~{latex_escape(text)} \\" for marker, text in model.footnotes]
        tabular = [r"\begin{tabular}{@{}l@{}}", *tabular[:-1], tabular[-1] + r" \\[2pt]", *notes, r"\end{tabular}"]
    return "\n".join([
        f"% {latex_escape(spec.title)} -- needs \\usepackage{{booktabs,graphicx}}",
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{latex_escape(model.caption)}}}",
        rf"\label{{{model.label}}}",
        r"\smallskip",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%  shrinks only a table wider than the line",
        *tabular[:-1],
        tabular[-1] + "%",
        "}",
        r"\end{table}",
    ]) + "\n"


def latex_document(tables: list[str]) -> str:
    """A minimal standalone document (pdflatex) holding the given `table` environments, landscape for wide tables."""
    preamble = [
        r"\documentclass{article}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\usepackage[landscape,margin=2cm]{geometry}",
        r"\begin{document}",
    ]
    return "\n".join(preamble) + "\n\n" + "\n".join(tables) + "\n" + r"\end{document}" + "\n"


# CSV -----------------------------------------------------------------------------------------------------------------

CSV_COLUMNS = ("dataset", "setting", "method", "method_label", "pair", "metric", "mean", "std", "n", "n_expected", "scale")


def to_csv_frame(model: TableModel) -> pd.DataFrame:
    """The aggregated numbers (scaled like the table): one row per method x column (pairs and Avg) x cell metric."""
    spec = model.spec
    records = []
    for method in model.methods:
        for column in model.columns:
            cell = model.cell(method, column)
            for metric, summary in zip(spec.cell_metrics, cell.summaries):
                records.append({
                    "dataset": spec.dataset, "setting": spec.setting, "method": method,
                    "method_label": spec.method_label(method), "pair": column, "metric": metric,
                    "mean": summary.mean, "std": summary.std, "n": summary.n, "n_expected": cell.n_expected,
                    "scale": spec.scale,
                })
    return pd.DataFrame.from_records(records, columns=list(CSV_COLUMNS))


# ---------------------------------------------------------------------------------------------------------------------
# A suite's report
# ---------------------------------------------------------------------------------------------------------------------

def suite_markdown(suite_name: str, models: list[TableModel]) -> str:
    """All tables of a suite, one after another, under one heading."""
    parts = [f"# Results: {markdown_escape(suite_name)}\n"] + [to_markdown(model) for model in models]
    return "\n".join(parts)


def suite_latex(models: list[TableModel]) -> str:
    """All tables of a suite as one standalone LaTeX document."""
    return latex_document([to_latex(model) for model in models])


def suite_csv_frame(models: list[TableModel]) -> pd.DataFrame:
    frames = [to_csv_frame(model).assign(table=model.spec.table_key) for model in models]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CSV_COLUMNS) + ["table"])
    return frame[["table", *CSV_COLUMNS]]


def write_report(suite_name: str, models: list[TableModel], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write <suite>.md, <suite>.tex (a compilable document) and <suite>.csv into out_dir, each atomically.

    Returns {"md": path, "tex": path, "csv": path}."""
    if not suite_name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", suite_name):
        raise ValueError(f"suite name {suite_name!r} is not a plain file name (letters, digits, '_', '.', '-')")
    keys = [model.spec.table_key for model in models]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"suite {suite_name!r}: the tables {repeated} share a key; give each TableSpec its own key")
    out = Path(out_dir)
    paths = {"md": out / f"{suite_name}.md", "tex": out / f"{suite_name}.tex", "csv": out / f"{suite_name}.csv"}
    texts = {
        "md": suite_markdown(suite_name, models),
        "tex": suite_latex(models),
        "csv": suite_csv_frame(models).to_csv(index=False, lineterminator="\n"),
    }
    for kind, path in paths.items():
        atomic_write_text(path, texts[kind])
    return paths
