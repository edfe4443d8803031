"""The table model of a suite's results: what a table shows (`TableSpec`), the tidy CSV it is read from, and the
aggregation over seeds with its statistics (`aggregate` -> `TableModel`). The renderers are in benchmark/render.py,
the PDF compile in benchmark/latex_pdf.py.

Input: the tidy frame the store collects (DESIGN §3.7), one row per (run, metric), with the columns of `TIDY_COLUMNS`.
Runs that are not done (failed, queued or running, incomplete, missing) keep rows with value NaN, so that they can be counted.

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
- Significance of the best: in each column (and for each number of a two-number cell) the best mean is tested against
  the runner-up's with a paired t-test over the seeds both methods have (same seed = same split and same init, so the
  seeds pair the runs; Avg uses the per-seed averages). Two-sided, α = 0.05: see `paired_p_value` for why. A best
  whose advantage is significant carries "†". Fewer than two paired seeds: no test, no mark.
- Nothing is dropped silently: a method without any done run still gets its row; a cell with fewer done seeds than
  expected carries a footnote "n=k of N seeds (1 failed, ...)", and a cell without any shows "–" with such a footnote.
- Collapse is marked: a cell with a done run whose features collapsed (the rule of benchmark/diagnostics.py, read
  from the run's stored `diag_*` values) carries a footnote "Collapsed: k of n done runs", and the caption states
  the rule. Its number stays: it is what the protocol measures, but it ranks ties, not retrieval.
  Seeds outside `expected_seeds` and methods or pairs outside the spec are not part of the table.

Tables of averages (`combine_averages`): the Avg columns of several tables (one per dataset and setting) side by side,
as the paper's ablation table and our summary show them; same model, same renderers, marks and tests redone per column.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from scipy import stats

from . import diagnostics
from .catalogue import metric as catalogue_metric
from .store import atomic_write_text

TIDY_COLUMNS = (
    "dataset", "setting", "query_domain", "retrieval_domain", "pair", "method", "seed", "status", "metric", "value",
    "run_id",
)
_STRING_COLUMNS = tuple(c for c in TIDY_COLUMNS if c not in ("seed", "value"))

DONE = "done"
NOT_DONE_STATUSES = ("failed", "queued", "running", "incomplete", "missing")  # footnotes count them in this order
AVG_COLUMN = "Avg"
METHOD_HEADER = "Method"
MISSING_CELL = "–"
SIGNIFICANCE_MARK = "†"
SIGNIFICANCE_ALPHA = 0.05



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

    A cell shows `cell_metrics` (one metric, or two for open-set "mAP / Acc"); `column_metrics` may give a column its
    own (a table of averages mixing closed and open settings). `key` names the table in the CSV (and in the LaTeX label of a table rendered outside a suite's report);
    by default "<dataset>-<setting>-<metrics>". `columns_are_averages`: every column is the Avg of another table
    (`combine_averages`); `caption_note` is a sentence the caption adds after the metric.
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
    column_metrics: dict[str, list[str]] = field(default_factory=dict)
    columns_are_averages: bool = False
    caption_note: str = ""

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
        unknown = sorted(set(self.column_metrics) - set(self.columns))
        if unknown:
            raise ValueError(f"TableSpec {self.title!r}: column_metrics names {unknown}, which are not columns "
                             f"({self.columns})")
        empty = sorted(column for column, metrics in self.column_metrics.items() if not metrics)
        if empty:
            raise ValueError(f"TableSpec {self.title!r}: column_metrics gives the columns {empty} no metric")

    @property
    def table_key(self) -> str:
        return self.key or f"{self.dataset}-{self.setting}-{'-'.join(self.cell_metrics)}"

    @property
    def columns(self) -> list[str]:
        return list(self.pairs) + ([AVG_COLUMN] if self.show_avg else [])

    def method_label(self, method: str) -> str:
        return self.method_labels.get(method, method)

    def metrics_of(self, column: str) -> list[str]:
        """The metrics of the numbers of a cell of `column`."""
        return list(self.column_metrics.get(column, self.cell_metrics))

    def metric_short_name(self, metric: str) -> str:
        """Captions and two-metric cells: `metric_short_names`, else the catalogue's (benchmark/catalogue.py)."""
        return self.metric_short_names.get(metric) or catalogue_metric(metric).short


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
    counts seeds as "complete" (every pair done) or "incomplete pairs", and `run_counts` counts its runs (pairs x
    seeds) by status. `marks[i]` is "best", "second" or None; `significant[i]` is True for a best whose advantage over
    the runner-up passed the paired test. `seed_values[i]` maps each seed to its (scaled) value: a pair cell's runs,
    an Avg cell's per-seed averages; the paired test reads them.
    """

    method: str
    column: str
    summaries: list[SeedSummary]
    status_counts: dict[str, int]
    n_expected: int
    marks: list[str | None]
    footnote_marker: str | None = None
    kind: str = "pair"  # "pair" or "avg"
    seed_values: list[dict[int, float]] = field(default_factory=list)
    significant: list[bool] = field(default_factory=list)
    run_counts: dict[str, int] = field(default_factory=dict)
    # Done runs behind the cell (a pair cell: its seeds; Avg: every pair x seed) that collapsed, by the rule of
    # benchmark/diagnostics.py, and how many done runs had diagnostics to judge.
    collapsed_runs: int = 0
    judged_runs: int = 0

    @property
    def is_missing(self) -> bool:
        return all(s.n == 0 for s in self.summaries)


@dataclass(frozen=True)
class SignificanceTest:
    """The best mean of a column (one number of its cells) against the runner-up: paired over the seeds both have.

    With several runner-ups (a tie for second) the best is tested against each: `n_paired` is the smallest number of
    paired seeds and `p_value` the largest p. `p_value` is NaN when no test could be made (fewer than 2 paired seeds,
    or a difference of zero on every seed)."""

    column: str
    metric: str
    best: str
    runner_up: tuple[str, ...]
    n_paired: int
    p_value: float
    significant: bool


@dataclass
class TableModel:
    spec: TableSpec
    cells: dict[tuple[str, str], Cell]  # (method, column) -> cell
    footnotes: list[tuple[str, str]]  # (marker, text), in the order of their first cell
    caption_body: str  # plain text after the title (metric, statistic, seeds, scale); the renderers escape it
    significance: dict[tuple[str, int], SignificanceTest] = field(default_factory=dict)  # (column, number index)
    # A table of averages: column -> (dataset, setting) of the table whose Avg it shows (the CSV and the paper's
    # numbers are looked up by it).
    column_sources: dict[str, tuple[str, str]] = field(default_factory=dict)
    # A note to each number of a cell (plain text, or None), e.g. the paper's value beside ours: markdown shows it in
    # parentheses after the number, LaTeX on a second line of the cell (a table as wide as the plain one).
    number_notes: dict[tuple[str, str], list[str | None]] = field(default_factory=dict)

    @property
    def caption(self) -> str:
        return f"{self.spec.title.rstrip('. ')}. {self.caption_body}"

    @property
    def short_caption(self) -> str:
        """The title and what a number is, in one sentence (a paper's caption); `caption_body` explains the rest."""
        n_seeds = len(self.spec.expected_seeds)
        metrics = " / ".join(dict.fromkeys(self.spec.metric_short_name(m) for m in self.spec.cell_metrics))
        scale = "" if self.spec.scale == 1 else f" (×{self.spec.scale:g})"
        return f"{self.spec.title.rstrip('. ')}: {metrics}{scale}, mean ± std over {n_seeds} seeds."

    @property
    def methods(self) -> list[str]:
        return list(self.spec.methods)

    @property
    def columns(self) -> list[str]:
        return self.spec.columns

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
    seed_values = [{s: values[(method, pair, s, metric)] * spec.scale
                    for s in seeds if (method, pair, s, metric) in values}
                   for metric in spec.metrics_of(pair)]
    summaries = [SeedSummary.of(list(by_seed.values())) for by_seed in seed_values]
    return Cell(method, pair, summaries, dict(status_counts), len(seeds), [None] * len(summaries),
                seed_values=seed_values, significant=[False] * len(summaries))


def _avg_cell(method: str, spec: TableSpec, statuses: _Statuses, values: _Values) -> Cell:
    """Avg per seed first: the mean over the pairs of each seed that has every pair, then mean ± std over seeds."""
    seed_values = []
    complete_seeds: set[int] = set()
    for metric in spec.metrics_of(AVG_COLUMN):
        per_seed_averages = {}
        for seed in spec.expected_seeds:
            keys = [(method, pair, seed, metric) for pair in spec.pairs]
            if all(key in values for key in keys):
                per_seed_averages[seed] = math.fsum(values[key] for key in keys) / len(keys) * spec.scale
                complete_seeds.add(seed)
        seed_values.append(per_seed_averages)
    summaries = [SeedSummary.of(list(by_seed.values())) for by_seed in seed_values]
    n_expected = len(spec.expected_seeds)
    counts = {"complete": len(complete_seeds), "incomplete pairs": n_expected - len(complete_seeds)}
    run_counts = Counter(statuses.get((method, pair, seed), "missing") for pair in spec.pairs
                         for seed in spec.expected_seeds)
    return Cell(method, AVG_COLUMN, summaries, counts, n_expected, [None] * len(summaries), kind="avg",
                seed_values=seed_values, significant=[False] * len(summaries), run_counts=dict(run_counts))


def format_number(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def shown_value(value: float, digits: int) -> float:
    """A number as the table displays it (rounded to `digits`): marks and paper comparisons use what a reader sees."""
    return float(format_number(value, digits))


def _mark_best_and_second(cells: list[Cell], metric_index: int, digits: int) -> None:
    """Bold the highest mean of a column, underline the next highest; means compared as displayed (ties share)."""
    shown = {
        id(cell): shown_value(cell.summaries[metric_index].mean, digits)
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


def paired_p_value(best: dict[int, float], other: dict[int, float]) -> tuple[int, float]:
    """(number of paired seeds, p) of the paired t-test of `best` against `other` over the seeds both have.

    Two-sided: which method is "best" is read from these same seeds, so a one-sided test in the direction the data
    chose would reject a true tie twice as often as its α says; the two-sided p is the honest one. p is NaN with fewer
    than two paired seeds, or when every paired difference is zero (no evidence either way)."""
    seeds = sorted(set(best) & set(other))
    if len(seeds) < 2:
        return len(seeds), math.nan
    differences = [best[s] - other[s] for s in seeds]
    # Equal up to float rounding (0.6 - 0.2 vs 0.7 - 0.3): scipy would test the rounding noise.
    if all(math.isclose(d, differences[0], rel_tol=1e-9, abs_tol=1e-12) for d in differences):
        # No seed-to-seed variation in the difference: the t statistic is infinite (a constant lead, p = 0) or
        # undefined (no lead). scipy says the same, with a precision warning we do not want in a report.
        return len(seeds), (0.0 if differences[0] > 0 else math.nan)
    result = stats.ttest_rel([best[s] for s in seeds], [other[s] for s in seeds], alternative="two-sided")
    return len(seeds), float(result.pvalue)


def _test_best(cells: list[Cell], metric_index: int, column: str, metric: str) -> SignificanceTest | None:
    """The paired test of the column's single best against its runner-up(s); None when there is no single best."""
    best = [cell for cell in cells if cell.marks[metric_index] == "best"]
    runner_ups = [cell for cell in cells if cell.marks[metric_index] == "second"]
    if len(best) != 1 or not runner_ups:   # a tie for best has no advantage to test
        return None
    tests = [paired_p_value(best[0].seed_values[metric_index], other.seed_values[metric_index]) for other in runner_ups]
    n_paired = min(n for n, _ in tests)
    p_values = [p for _, p in tests]
    p_value = math.nan if any(math.isnan(p) for p in p_values) else max(p_values)
    significant = n_paired >= 2 and not math.isnan(p_value) and p_value < SIGNIFICANCE_ALPHA
    best[0].significant[metric_index] = significant
    return SignificanceTest(column=column, metric=metric, best=best[0].method,
                            runner_up=tuple(cell.method for cell in runner_ups), n_paired=n_paired,
                            p_value=p_value, significant=significant)


def _rank_and_test(cells: dict[tuple[str, str], Cell], spec: TableSpec) -> dict[tuple[str, int], SignificanceTest]:
    """Marks best and second of every column (each number of a cell on its own), then tests each best."""
    significance = {}
    for column in spec.columns:
        column_cells = [cells[(method, column)] for method in spec.methods]
        for metric_index, metric in enumerate(spec.metrics_of(column)):
            _mark_best_and_second(column_cells, metric_index, spec.digits)
            test = _test_best(column_cells, metric_index, column, metric)
            if test is not None:
                significance[(column, metric_index)] = test
    return significance


def _reasons(cell: Cell, spec: TableSpec) -> str:
    """Why seeds are missing from a pair cell: '1 failed, 2 missing', then done runs that lack a metric."""
    counts = cell.status_counts
    parts = [_count_text(counts, exclude=(DONE,))]
    for metric, summary in zip(spec.metrics_of(cell.column), cell.summaries):
        lacking = counts.get(DONE, 0) - summary.n
        if lacking > 0:
            parts.append(f"{lacking} done without {spec.metric_short_name(metric)}")
    return ", ".join(part for part in parts if part)


def _count_text(counts: dict[str, int], exclude=()) -> str:
    """'1 failed, 2 missing': run statuses in a fixed order (done first, then NOT_DONE_STATUSES, then others)."""
    others = sorted(s for s in counts if s != DONE and s not in NOT_DONE_STATUSES)
    return ", ".join(f"{counts[s]} {s}" for s in (DONE, *NOT_DONE_STATUSES, *others)
                     if counts.get(s) and s not in exclude)


def _n_text(cell: Cell, spec: TableSpec) -> str:
    ns = [s.n for s in cell.summaries]
    if len(set(ns)) == 1:
        return f"n={ns[0]}"
    return "n=" + ", ".join(f"{n} ({spec.metric_short_name(m)})" for n, m in zip(ns, spec.metrics_of(cell.column)))


def _footnote_text(cell: Cell, spec: TableSpec) -> str | None:
    parts = [text for text in (_missing_seeds_text(cell, spec), _collapse_text(cell)) if text]
    return " ".join(parts) or None


def _collapse_text(cell: Cell) -> str | None:
    if not cell.collapsed_runs:
        return None
    runs = "run" if cell.judged_runs == 1 else "runs"
    where = " behind this average" if cell.kind == "avg" else ""
    return f"Collapsed: {cell.collapsed_runs} of {cell.judged_runs} done {runs}{where} (rule in the caption)."


def _missing_seeds_text(cell: Cell, spec: TableSpec) -> str | None:
    if all(s.n == cell.n_expected for s in cell.summaries):
        return None
    n_text = f"{_n_text(cell, spec)} of {cell.n_expected} seeds"
    if cell.kind == "avg" and spec.columns_are_averages:
        # The pair cells behind this average are not in this table: say what their runs are.
        runs = f" (runs: {_count_text(cell.run_counts)})" if cell.run_counts else ""
        if cell.is_missing:
            return f"{n_text}: no seed has every pair done{runs}."
        return f"{n_text}: only seeds with every pair done enter the average{runs}."
    if cell.kind == "avg":
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


def _cell_reading(spec: TableSpec) -> str:
    """'Each cell reads mAP / Acc.' for two-number cells; per column group when columns differ."""
    def reading(metrics):
        return " / ".join(spec.metric_short_name(m) for m in metrics)

    groups: dict[tuple[str, ...], list[str]] = {}
    for column in spec.columns:
        groups.setdefault(tuple(spec.metrics_of(column)), []).append(column)
    if len(groups) == 1:
        metrics = next(iter(groups))
        return f"Each cell reads {reading(metrics)}." if len(metrics) > 1 else ""
    return " ".join(f"{', '.join(columns)}: {reading(metrics)}." for metrics, columns in groups.items())


def caption_body(spec: TableSpec, ranking: bool = True) -> str:
    """The caption after the title: the metric, the statistic and its n, the seeds, the scale, and (`ranking`) what
    bold, underline and † mean."""
    seeds = ", ".join(str(s) for s in spec.expected_seeds)
    n_seeds = len(spec.expected_seeds)
    sentences = [f"{spec.metric_description.rstrip('. ')}."]
    if spec.caption_note:
        sentences.append(f"{spec.caption_note.rstrip('. ')}.")
    if _cell_reading(spec):
        sentences.append(_cell_reading(spec))
    scale = "as fractions" if spec.scale == 1 else f"×{spec.scale:g}"
    sentences.append(
        f"Values {scale}: mean ± std (sample std, ddof=1) over n={n_seeds} seeds ({seeds}), "
        f"unless a footnote gives a smaller n; a cell with n=1 shows the mean alone."
    )
    if spec.show_avg:
        sentences.append(
            "Avg: the mean over the pairs within each seed first, then mean ± std over the seeds with every pair done."
        )
    if not ranking:
        return " ".join(sentences)
    sentences.append("Best per column in bold, second best underlined.")
    sentences.append(
        f"{SIGNIFICANCE_MARK}: the best is significantly above the second best (two-sided paired t-test over the "
        f"seeds both have, α={SIGNIFICANCE_ALPHA:g}); with n={n_seeds} seeds the test has little power, so a best "
        f"without {SIGNIFICANCE_MARK} is no evidence of a tie."
    )
    return " ".join(sentences)


def _collapse_of_runs(rows: pd.DataFrame) -> dict[tuple[str, str, int], bool]:
    """(method, pair, seed) -> whether the done run collapsed (benchmark/diagnostics.py), for done runs that stored
    the diagnostics."""
    done = rows[(rows["status"] == DONE) & rows["metric"].isin(diagnostics.NAMES)]
    verdicts = {}
    for (method, pair, seed), run_rows in done.groupby(["method", "pair", "seed"], sort=False):
        verdict = diagnostics.is_collapsed(dict(zip(run_rows["metric"], run_rows["value"])))
        if verdict is not None:
            verdicts[(str(method), str(pair), int(seed))] = verdict
    return verdicts


def _count_collapsed(cell: Cell, spec: TableSpec, verdicts: dict[tuple[str, str, int], bool]) -> None:
    pairs = spec.pairs if cell.kind == "avg" else [cell.column]
    judged = [verdicts[key] for key in ((cell.method, pair, seed) for pair in pairs for seed in spec.expected_seeds)
              if key in verdicts]
    cell.collapsed_runs, cell.judged_runs = sum(judged), len(judged)


def _with_collapse_rule(body: str, cells: dict[tuple[str, str], Cell]) -> str:
    """The caption states the collapse rule when a footnote marks a collapsed cell."""
    if not any(cell.collapsed_runs for cell in cells.values()):
        return body
    return f"{body} Collapsed: {diagnostics.COLLAPSE_RULE}; such numbers rank ties, not retrieval."


def aggregate(frame: pd.DataFrame, spec: TableSpec) -> TableModel:
    """The table model of `spec` from the tidy frame (see the module docstring for the rule)."""
    _check_tidy_columns(frame, f"aggregate({spec.title!r})")
    rows = _select_rows(frame, spec)
    statuses = _run_statuses(rows)
    values = _done_values(rows, sorted({m for column in spec.columns for m in spec.metrics_of(column)}))
    verdicts = _collapse_of_runs(rows)

    cells: dict[tuple[str, str], Cell] = {}
    for method in spec.methods:
        for pair in spec.pairs:
            cells[(method, pair)] = _pair_cell(method, pair, spec, statuses, values)
        if spec.show_avg:
            cells[(method, AVG_COLUMN)] = _avg_cell(method, spec, statuses, values)
    for cell in cells.values():
        _count_collapsed(cell, spec, verdicts)

    significance = _rank_and_test(cells, spec)
    footnotes = _assign_footnotes(cells, spec)
    return TableModel(spec=spec, cells=cells, footnotes=footnotes,
                      caption_body=_with_collapse_rule(caption_body(spec), cells), significance=significance)


def has_runs(model: TableModel, method: str, column: str | None = None) -> bool:
    """Whether any run of `method` (in `column`, or in any column) exists in the store: done, failed or incomplete."""
    columns = [column] if column is not None else model.columns
    for name in columns:
        cell = model.cell(method, name)
        counts = cell.run_counts if cell.kind == "avg" else cell.status_counts
        if any(count for status, count in counts.items() if status != "missing"):
            return True
    return False


def combine_averages(title: str, key: str, sources: list[tuple[str, TableModel]], methods: list[str],
                     method_labels: dict[str, str], metric_description: str, caption_note: str = "") -> TableModel:
    """One table whose columns are the Avg columns of other tables: `sources` is (column label, table) in column order.

    The Avg cells are taken as they are (their per-seed averages included), so marks, the paired tests and the
    footnotes are redone on the new columns. A method that a source table has no row for gets a missing cell."""
    if not sources:
        raise ValueError(f"{title!r}: a table of averages needs at least one source table")
    labels = [label for label, _ in sources]
    for label, source in sources:
        if not source.spec.show_avg:
            raise ValueError(f"{title!r}: the source table {source.spec.title!r} (column {label!r}) has no Avg column")
    column_metrics = {label: source.spec.cell_metrics for label, source in sources}
    spec = TableSpec(
        title=title, dataset="+".join(dict.fromkeys(s.spec.dataset for _, s in sources)),
        setting="+".join(dict.fromkeys(s.spec.setting for _, s in sources)), methods=list(methods),
        method_labels=method_labels, pairs=labels,
        cell_metrics=list(dict.fromkeys(m for metrics in column_metrics.values() for m in metrics)),
        metric_description=metric_description,
        expected_seeds=sorted({seed for _, s in sources for seed in s.spec.expected_seeds}),
        scale=sources[0][1].spec.scale, digits=sources[0][1].spec.digits, key=key,
        metric_short_names={name: short for _, s in sources for name, short in s.spec.metric_short_names.items()},
        show_avg=False, column_metrics=column_metrics, columns_are_averages=True, caption_note=caption_note)
    for label, source in sources:
        if (source.spec.scale, source.spec.digits) != (spec.scale, spec.digits):
            raise ValueError(f"{title!r}: column {label!r} is scaled or rounded unlike the first column; the "
                             f"numbers of one table share scale and digits")
    cells = {}
    for label, source in sources:
        for method in methods:
            if method in source.spec.methods:
                cells[(method, label)] = dataclasses.replace(
                    source.cell(method, AVG_COLUMN), column=label, marks=[None] * len(column_metrics[label]),
                    significant=[False] * len(column_metrics[label]), footnote_marker=None)
            else:
                n_expected = len(source.spec.expected_seeds)
                empty = [SeedSummary.of([]) for _ in column_metrics[label]]
                cells[(method, label)] = Cell(
                    method, label, empty, {"complete": 0, "incomplete pairs": n_expected}, n_expected,
                    [None] * len(empty), kind="avg", seed_values=[{} for _ in empty], significant=[False] * len(empty),
                    run_counts={"missing": len(source.spec.pairs) * n_expected})
    significance = _rank_and_test(cells, spec)
    footnotes = _assign_footnotes(cells, spec)
    return TableModel(spec=spec, cells=cells, footnotes=footnotes,
                      caption_body=_with_collapse_rule(caption_body(spec), cells), significance=significance,
                      column_sources={label: (source.spec.dataset, source.spec.setting) for label, source in sources})
