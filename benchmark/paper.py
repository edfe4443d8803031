"""The paper's own numbers beside ours (DESIGN §3.7: "beside our numbers the paper's own, and the difference").

The paper's numbers are `results/uem_paper_results.csv`, transcribed from the tables of *Semantic Feature Learning for
Universal Unsupervised Cross-domain Retrieval* (UEM, NeurIPS 2024; see results/README.md): one row per printed number,
with the columns table, dataset, setting, method, pair, metric, mean, std (std empty where the paper prints none:
Tables 3, 4 and 8).

How our numbers map to its rows:
- dataset: the same names (office31, office_home, domainnet); the synthetic data has no paper number.
- setting: the same (closed, partial, open); the ablation table (its Table 4) is setting "open_ablation", pair "Avg".
- method: the paper's row labels, each method's `paper_label` (`pretrained` has none: no row in the paper).
- pair: our "A→C" is its "A->C"; "Avg" is "Avg". A column of a table of averages looks up the Avg of its source.
- metric: the catalogue's `paper_name` (benchmark/catalogue.py): our `map_all_coda` is its `map_all` (the paper's
  mAP@All, which follows CoDA); `shared_map_all` and `open_set_acc` are named alike. Other metrics (the detection
  tables) have no paper number.

A comparison is a companion of a table: the same rows, columns and footnotes, each number reading
"ours (paper; Δ)" with Δ = ours − paper, both as displayed (the paper prints one decimal; comparing what a reader sees
keeps the table checkable by eye); and the counts of its caption: how many numbers have a paper value, how many of our
means lie inside the paper's mean ± std, how many paper values print no std, and the mean |Δ|.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .catalogue import metric as catalogue_metric
from .catalogue import paper_method_label
from .errors import UserError
from .render import write_report
from .tables import (AVG_COLUMN, MISSING_CELL, SeedSummary, TableModel, TableSpec, caption_body, format_number,
                     shown_value)

PAPER_RESULTS_CSV = Path(__file__).resolve().parent.parent / "results" / "uem_paper_results.csv"
PAPER_COLUMNS = ("table", "dataset", "setting", "method", "pair", "metric", "mean", "std")
ABLATION_SETTING = "open_ablation"
PAPER_SCALE = 100.0  # the paper prints percentages

_PaperKey = tuple[str, str, str, str, str]  # (dataset, setting, paper method label, paper pair, paper metric)


@dataclass(frozen=True)
class PaperValue:
    table: str    # "Table 2"
    mean: float   # as printed (×100)
    std: float    # NaN where the paper prints none


def load_paper_results(path: str | os.PathLike = PAPER_RESULTS_CSV) -> dict[_PaperKey, PaperValue]:
    """The paper's numbers by (dataset, setting, method label, pair, metric); a malformed file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"the paper's numbers are not at {path} (expected the committed results/uem_paper_results.csv "
                        f"with the columns {', '.join(PAPER_COLUMNS)})")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PAPER_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: the columns {missing} are missing; expected the columns {', '.join(PAPER_COLUMNS)}")
    results: dict[_PaperKey, PaperValue] = {}
    for line, row in enumerate(frame.itertuples(index=False), start=2):   # line 1 is the header
        key = (row.dataset, row.setting, row.method, row.pair, row.metric)
        try:
            mean = float(row.mean)
            std = float(row.std) if row.std.strip() else math.nan
        except ValueError:
            raise UserError(f"{path}, line {line}: mean {row.mean!r} and std {row.std!r} must be numbers "
                            f"(std may be empty)") from None
        if not math.isfinite(mean) or (not math.isnan(std) and std < 0):
            raise UserError(f"{path}, line {line}: expected a finite mean and a std >= 0, got {row.mean!r}, "
                            f"{row.std!r}")
        if key in results:
            raise UserError(f"{path}, line {line}: a second number for {', '.join(key)}; one row per printed number")
        results[key] = PaperValue(table=row.table, mean=mean, std=std)
    return results


def paper_pair(column: str) -> str:
    """Our column label as the paper's CSV writes it: "A→C" -> "A->C"."""
    return column.replace("→", "->")


def comparable(spec: TableSpec) -> bool:
    """Whether every number of the table is a metric the paper reports (the detection tables are not)."""
    return all(catalogue_metric(metric).paper_name for column in spec.columns for metric in spec.metrics_of(column))


@dataclass(frozen=True)
class ComparedNumber:
    """One number of a table: ours, the paper's, and how they relate (all scaled like the table)."""

    method: str
    column: str
    metric: str
    ours: SeedSummary
    paper: PaperValue | None  # converted to the table's scale
    delta: float              # ours − paper, both as displayed; NaN unless both exist
    inside: bool | None       # ours within the paper's mean ± std; None without both numbers or without a paper std

    @property
    def compared(self) -> bool:
        return self.paper is not None and self.ours.n > 0


@dataclass
class Comparison:
    """A table's companion (`model`, the numbers reading "ours (paper; Δ)") and every number behind it."""

    model: TableModel
    numbers: list[ComparedNumber]

    @property
    def counts(self) -> dict[str, float]:
        compared = [n for n in self.numbers if n.compared]
        with_std = [n for n in compared if n.inside is not None]
        return {
            "numbers": len(self.numbers),
            "with_paper": sum(n.paper is not None for n in self.numbers),
            "compared": len(compared),
            "with_paper_std": len(with_std),
            "inside_paper_std": sum(bool(n.inside) for n in with_std),
            "without_paper_std": len(compared) - len(with_std),
            "mean_abs_delta": math.fsum(abs(n.delta) for n in compared) / len(compared) if compared else math.nan,
        }

    def summary_line(self) -> str:
        c = self.counts
        digits = self.model.spec.digits
        mean_abs = format_number(c["mean_abs_delta"], digits) if c["compared"] else MISSING_CELL
        return (f"{c['with_paper']} of {c['numbers']} numbers have a paper value ({c['compared']} with ours too); "
                f"inside the paper's mean ± std: {c['inside_paper_std']} of {c['with_paper_std']}; "
                f"paper value without std: {c['without_paper_std']}; mean |Δ| = {mean_abs}.")


def _paper_value(results: dict[_PaperKey, PaperValue], model: TableModel, method: str, column: str, metric: str,
                 paper_setting: str | None) -> PaperValue | None:
    label, paper_metric = paper_method_label(method), catalogue_metric(metric).paper_name
    if label is None or paper_metric is None:
        return None
    if column in model.column_sources:   # a table of averages: the Avg of the source's dataset and setting
        (dataset, setting), pair = model.column_sources[column], AVG_COLUMN
    else:
        dataset, setting, pair = model.spec.dataset, model.spec.setting, paper_pair(column)
    value = results.get((dataset, paper_setting or setting, label, pair, paper_metric))
    if value is None:
        return None
    factor = model.spec.scale / PAPER_SCALE
    return PaperValue(value.table, value.mean * factor, value.std * factor)


def _compare_number(method: str, column: str, metric: str, ours: SeedSummary, paper: PaperValue | None,
                    digits: int) -> ComparedNumber:
    if paper is None or ours.n == 0:
        return ComparedNumber(method, column, metric, ours, paper, math.nan, None)
    delta = shown_value(ours.mean, digits) - paper.mean
    # The tolerance keeps a mean exactly on the edge (40.0 vs 38.5 ± 1.5) inside despite float rounding.
    inside = None if math.isnan(paper.std) else abs(delta) <= paper.std + 1e-9
    return ComparedNumber(method, column, metric, ours, paper, delta, inside)


def _number_note(number: ComparedNumber, digits: int) -> str | None:
    """'22.0 ± 1.1; −10.0': the paper's number and Δ, shown beside ours; the paper's alone where we have none."""
    if number.paper is None:
        return None
    paper = format_number(number.paper.mean, digits)
    if not math.isnan(number.paper.std):
        paper += f" ± {format_number(number.paper.std, digits)}"
    if not number.compared:
        return paper
    delta = format_number(abs(number.delta), digits)
    sign = "−" if number.delta < 0 and float(delta) != 0 else "+"
    return f"{paper}; {sign}{delta}"


def compare_with_paper(model: TableModel, results: dict[_PaperKey, PaperValue],
                       paper_setting: str | None = None) -> Comparison:
    """The companion of `model` with the paper's numbers; `paper_setting` looks them up under another setting (the
    ablation table: `ABLATION_SETTING`)."""
    spec = model.spec
    numbers: list[ComparedNumber] = []
    number_notes: dict[tuple[str, str], list[str | None]] = {}
    for method in model.methods:
        for column in model.columns:
            cell = model.cell(method, column)
            cell_numbers = [
                _compare_number(method, column, metric, summary,
                                _paper_value(results, model, method, column, metric, paper_setting), spec.digits)
                for metric, summary in zip(spec.metrics_of(column), cell.summaries)]
            numbers += cell_numbers
            number_notes[(method, column)] = [_number_note(n, spec.digits) for n in cell_numbers]

    tables = sorted({n.paper.table for n in numbers if n.paper is not None}, key=lambda t: (len(t), t))
    companion = Comparison(model=model, numbers=numbers)   # counts first, for the caption
    if tables:
        explanation = (f"Each number reads: ours (the paper's mean ± std as printed in its {', '.join(tables)}; "
                       f"Δ = ours − paper, both as shown); ours alone where the paper has no number. "
                       f"Ours beside the paper: {companion.summary_line()}")
    else:
        explanation = f"The paper has no number for this table: ours alone. {companion.summary_line()}"
    cells = {key: dataclasses.replace(cell, marks=[None] * len(cell.marks), significant=[False] * len(cell.marks))
             for key, cell in model.cells.items()}
    companion_spec = dataclasses.replace(spec, title=f"{spec.title.rstrip('. ')}: ours vs the paper",
                                         key=f"{spec.table_key}-vs-paper")
    companion.model = dataclasses.replace(
        model, spec=companion_spec, cells=cells, significance={}, number_notes=number_notes,
        caption_body=f"{caption_body(companion_spec, ranking=False)} {explanation}")
    return companion


COMPARISON_CSV_COLUMNS = ("table", "dataset", "setting", "method", "method_label", "pair", "metric", "mean", "std", "n",
                          "scale", "paper_table", "paper_mean", "paper_std", "delta", "inside_paper_std")


def comparison_csv_frame(comparisons: list[Comparison]) -> pd.DataFrame:
    """One row per number of every compared table: ours (mean, std, n), the paper's, Δ and whether ours lies inside."""
    records = []
    for comparison in comparisons:
        model, spec = comparison.model, comparison.model.spec
        for number in comparison.numbers:
            dataset, setting = model.column_sources.get(number.column, (spec.dataset, spec.setting))
            paper = number.paper
            records.append({
                "table": spec.table_key, "dataset": dataset, "setting": setting, "method": number.method,
                "method_label": spec.method_label(number.method),
                "pair": AVG_COLUMN if number.column in model.column_sources else number.column, "metric": number.metric,
                "mean": number.ours.mean, "std": number.ours.std, "n": number.ours.n, "scale": spec.scale,
                "paper_table": paper.table if paper else "", "paper_mean": paper.mean if paper else math.nan,
                "paper_std": paper.std if paper else math.nan, "delta": number.delta,
                "inside_paper_std": "" if number.inside is None else number.inside,
            })
    return pd.DataFrame.from_records(records, columns=list(COMPARISON_CSV_COLUMNS))


def write_comparison(name: str, comparisons: list[Comparison], out_dir: str | os.PathLike) -> dict[str, Path]:
    """<name>_vs_paper.md, .tex (a compilable document) and .csv in out_dir, each atomically; returns their paths."""
    return write_report(f"{name}_vs_paper", [c.model for c in comparisons], out_dir,
                        csv_frame=comparison_csv_frame(comparisons),
                        heading=f"{name}: ours vs the paper (UEM, NeurIPS 2024)")
