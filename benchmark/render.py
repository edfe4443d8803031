"""The renderers of the table model (benchmark/tables.py): markdown, LaTeX and CSV, each reading the same
`TableModel`, so the three outputs cannot disagree; and a suite's report files (`write_report`).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .latex_layout import (COMPUTER_MODERN, LINE_BREAK, PAPER, PaperLayout, TableLayout, choose_layout, measure_bold,
                           measure_superscript, paper_for_width)
from .latex_text import latex_escape, latex_label, transliterations
from .store import atomic_write_text
from .tables import (AVG_COLUMN, METHOD_HEADER, MISSING_CELL, SIGNIFICANCE_MARK, Cell, SeedSummary, TableModel,
                     format_number)


def summary_text(summary: SeedSummary, digits: int) -> str:
    """'20.0 ± 10.0', the mean alone when n = 1, '–' when n = 0 (plain text, escaped by each renderer)."""
    if summary.n == 0:
        return MISSING_CELL
    if summary.n == 1 or math.isnan(summary.std):
        return format_number(summary.mean, digits)
    return f"{format_number(summary.mean, digits)} ± {format_number(summary.std, digits)}"


def _render_cell(cell: Cell, digits: int, escape, bold, underline, superscript, with_notes,
                 notes: list[str | None] | None = None) -> str:
    has_notes = notes is not None and any(note is not None for note in notes)
    if cell.is_missing and not has_notes:
        parts = [escape(MISSING_CELL)]
    else:
        parts = []
        significant_marks = cell.significant or [False] * len(cell.marks)
        for summary, mark, significant in zip(cell.summaries, cell.marks, significant_marks):
            text = escape(summary_text(summary, digits))
            if mark == "best":
                text = bold(text)
            elif mark == "second":
                text = underline(text)
            if significant:
                text += escape(SIGNIFICANCE_MARK)
            parts.append(text)
    if has_notes:
        text = with_notes(parts, [escape(note) if note is not None else None for note in notes])
    else:
        text = " / ".join(parts)
    if cell.footnote_marker:
        text += superscript(cell.footnote_marker)
    return text


# Markdown ------------------------------------------------------------------------------------------------------------

_MARKDOWN_SPECIALS = re.compile(r"([\\|*_`<>\[\]])")


def markdown_escape(text: str) -> str:
    """Backslash-escape the characters that would break a pipe table or start emphasis, code, HTML or links."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


def rendered_rows(model: TableModel, escape, bold, underline, superscript, with_notes) -> list[list[str]]:
    """One list of rendered cells per method (its label first), in one output format."""
    return [[escape(model.spec.method_label(method))]
            + [_render_cell(model.cell(method, column), model.spec.digits, escape, bold=bold, underline=underline,
                            superscript=superscript, with_notes=with_notes,
                            notes=model.number_notes.get((method, column)))
               for column in model.columns]
            for method in model.methods]


def _markdown_with_notes(numbers: list[str], notes: list[str | None]) -> str:
    """'12.0 ± 1.0 (22.0 ± 1.1; −10.0)': each note in parentheses after its number."""
    return " / ".join(f"{number} ({note})" if note is not None else number for number, note in zip(numbers, notes))


def to_markdown(model: TableModel) -> str:
    """Caption above, a pipe table (GitHub renders it), footnotes below; bold best, <u>underlined</u> second."""
    spec = model.spec
    headers = [METHOD_HEADER] + [markdown_escape(c) for c in model.columns]
    body = rendered_rows(model, markdown_escape, bold=lambda t: f"**{t}**", underline=lambda t: f"<u>{t}</u>",
                          superscript=lambda m: f"<sup>{m}</sup>", with_notes=_markdown_with_notes)
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
# Names are written by latex_text.latex_escape (any script: accents as commands, other scripts transliterated), the
# layout (type size, table or table*, parts) is chosen by latex_layout.choose_layout; no table is ever scaled.


def _notes_line(notes: list[str | None]) -> str:
    return " / ".join(f"({note})" if note is not None else "" for note in notes)


def _latex_with_notes(numbers: list[str], notes: list[str | None]) -> str:
    """The numbers on one line, their notes in parentheses below, smaller: a nested tabular (no package needed)."""
    return (rf"\begin{{tabular}}[c]{{@{{}}c@{{}}}}{' / '.join(numbers)} \\ \footnotesize {_notes_line(notes)}"
            r"\end{tabular}")


def latex_layout(model: TableModel, paper: PaperLayout = PAPER) -> TableLayout:
    """The table's layout in a paper (`latex_layout.choose_layout`), from the width of its cells as they are set."""
    rows = rendered_rows(model, str, bold=measure_bold, underline=lambda text: text, superscript=measure_superscript,
                         with_notes=lambda numbers, notes: " / ".join(numbers) + LINE_BREAK + _notes_line(notes))
    columns = {column: [column] + [row[index + 1] for row in rows] for index, column in enumerate(model.columns)}
    method_column = [METHOD_HEADER] + [row[0] for row in rows]
    return choose_layout(columns, method_column, [AVG_COLUMN] if model.spec.show_avg else [], paper)


def _shown_texts(model: TableModel) -> list[str]:
    """Every text of the model that a LaTeX table shows (for the transliteration note)."""
    spec = model.spec
    texts = [spec.title, model.caption_body, *model.columns, *(spec.method_label(m) for m in model.methods)]
    texts += [text for _, text in model.footnotes]
    texts += [note for notes in model.number_notes.values() for note in notes if note is not None]
    return texts


CAPTIONS = ("full", "short")
# latex_document: landscape letter paper with 2 cm margins, in LaTeX's default font.
STANDALONE_PAPER = paper_for_width(9.4, COMPUTER_MODERN)


def to_latex(model: TableModel, caption: str = "full", label: str | None = None, paper: PaperLayout = PAPER) -> str:
    """The table as LaTeX `table` (or `table*`) environments; needs only \\usepackage{booktabs}.

    `caption="full"`: the whole explanation in the caption (the standalone documents); `"short"`: the title and what a
    number is, the explanation (statistic, n, seeds, marks) in a small note under the table (the fragments a paper
    `\\input`s). `label`: the `\\label` (default "tab:<table key>"). `paper`: the widths the layout must fit
    (benchmark/latex_layout.py: `\\small` or `\\footnotesize`, one column or `table*`, or split into parts by
    columns, never scaled). Cells are never truncated; names and the caption are escaped, names in scripts pdflatex
    cannot set are transliterated with a note (benchmark/latex_text.py)."""
    if caption not in CAPTIONS:
        raise ValueError(f"caption must be one of {', '.join(CAPTIONS)}, got {caption!r}")
    spec = model.spec
    label = label or latex_label(spec.table_key)
    layout = latex_layout(model, paper)
    rows = rendered_rows(model, latex_escape, bold=lambda t: rf"\textbf{{{t}}}",
                          underline=lambda t: rf"\underline{{{t}}}", superscript=lambda m: rf"\textsuperscript{{{m}}}",
                          with_notes=_latex_with_notes)
    replaced = transliterations(_shown_texts(model))
    lead_notes = []
    if caption == "short":
        lead_notes.append(latex_escape(model.caption_body))
    if replaced:
        lead_notes.append(latex_escape(
            "Transliterated to ASCII for pdflatex (the markdown, CSV and HTML reports keep the original): "
            + ", ".join(dict.fromkeys(replaced.values())) + "."))
    header = [f"% {latex_escape(spec.title)} -- needs \\usepackage{{booktabs}} (and nothing else: no inputenc or "
              f"fontenc; every name is written in ASCII)",
              f"% Layout: {layout.describe(paper)}; never scaled (the rule: benchmark/latex_layout.py in the harness)."]
    header += [f"% Transliterated for pdflatex: {run} -> {ascii_form}" for run, ascii_form in replaced.items()]
    parts = [_latex_part(model, rows, layout, index, label, model.caption if caption == "full" else model.short_caption,
                         lead_notes if index == 0 else [])
             for index in range(len(layout.parts))]
    return "\n".join(header + parts) + "\n"


def _latex_part(model: TableModel, rows: list[list[str]], layout: TableLayout, index: int, label: str,
                caption: str, lead_notes: list[str]) -> str:
    """One float of the table: the method column and the columns of part `index`, the footnotes its cells mark."""
    columns = layout.parts[index]
    positions = [0] + [model.columns.index(column) + 1 for column in columns]
    n_parts = len(layout.parts)
    labels = [label]
    if n_parts > 1:
        caption = f"{caption.rstrip()} Part {index + 1} of {n_parts} ({columns[0]} to {columns[-1]})."
        labels = ([label] if index == 0 else []) + [f"{label}-part{index + 1}"]
    markers = {model.cell(method, column).footnote_marker for method in model.methods for column in columns}
    notes = lead_notes + [rf"\textsuperscript{{{marker}}}~{latex_escape(text)}" for marker, text in model.footnotes
                          if marker in markers]
    environment = layout.environment
    lines = [
        rf"\begin{{{environment}}}[{'tp' if environment == 'table*' else 'htbp'}]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        *(rf"\label{{{name}}}" for name in labels),
        r"\smallskip",
        rf"{{\{layout.size}%",
        rf"\begin{{tabular}}{{l{'c' * len(columns)}}}",
        r"\toprule",
        " & ".join([METHOD_HEADER] + [latex_escape(c) for c in columns]) + r" \\",
        r"\midrule",
        *(" & ".join(row[i] for i in positions) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}\par}",
    ]
    if notes:
        # Under the table, as wide as the float and wrapped: a footnote never widens the table.
        lines += [r"\smallskip", r"{\footnotesize\raggedright", *(note + r"\par" for note in notes), "}"]
    lines.append(rf"\end{{{environment}}}")
    return "\n".join(lines)


def latex_document(tables: list[str]) -> str:
    """A minimal standalone document (pdflatex) holding the given `table` environments, landscape for wide tables."""
    preamble = [
        r"\documentclass{article}",
        r"\usepackage{booktabs}",
        r"\usepackage[landscape,margin=2cm]{geometry}",
        r"\begin{document}",
    ]
    return "\n".join(preamble) + "\n\n" + "\n".join(tables) + "\n" + r"\end{document}" + "\n"


# CSV -----------------------------------------------------------------------------------------------------------------

CSV_COLUMNS = ("dataset", "setting", "method", "method_label", "pair", "metric", "mean", "std", "n", "n_expected",
               "scale", "significant", "p_value")


def to_csv_frame(model: TableModel) -> pd.DataFrame:
    """The aggregated numbers (scaled like the table): one row per method x column (pairs and Avg) x cell metric.

    In a table of averages a column's row names the dataset and setting it averages, with pair "Avg". `significant`:
    the cell is the column's best and passed the paired test against the runner-up; `p_value` that test's p, on the
    best's row (empty elsewhere, and where no test was made)."""
    spec = model.spec
    records = []
    for method in model.methods:
        for column in model.columns:
            cell = model.cell(method, column)
            dataset, setting = model.column_sources.get(column, (spec.dataset, spec.setting))
            pair = AVG_COLUMN if column in model.column_sources else column
            for index, (metric, summary) in enumerate(zip(spec.metrics_of(column), cell.summaries)):
                test = model.significance.get((column, index))
                records.append({
                    "dataset": dataset, "setting": setting, "method": method,
                    "method_label": spec.method_label(method), "pair": pair, "metric": metric,
                    "mean": summary.mean, "std": summary.std, "n": summary.n, "n_expected": cell.n_expected,
                    "scale": spec.scale, "significant": bool(cell.significant and cell.significant[index]),
                    "p_value": test.p_value if test is not None and test.best == method else math.nan,
                })
    return pd.DataFrame.from_records(records, columns=list(CSV_COLUMNS))


# ---------------------------------------------------------------------------------------------------------------------
# A suite's report
# ---------------------------------------------------------------------------------------------------------------------

def suite_markdown(suite_name: str, models: list[TableModel], heading: str | None = None) -> str:
    """All tables of a suite, one after another, under one heading (by default "Results: <suite>")."""
    heading = heading if heading is not None else f"Results: {suite_name}"
    parts = [f"# {markdown_escape(heading)}\n"] + [to_markdown(model) for model in models]
    return "\n".join(parts)


def suite_latex(models: list[TableModel], labels: list[str] | None = None) -> str:
    """All tables of a suite as one standalone LaTeX document (full captions, laid out for its landscape page);
    `labels` the tables' `\\label`s (default: from their keys)."""
    labels = labels or [None] * len(models)
    return latex_document([to_latex(model, label=label, paper=STANDALONE_PAPER)
                           for model, label in zip(models, labels)])


def suite_csv_frame(models: list[TableModel]) -> pd.DataFrame:
    frames = [to_csv_frame(model).assign(table=model.spec.table_key) for model in models]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CSV_COLUMNS) + ["table"])
    return frame[["table", *CSV_COLUMNS]]


def fragment_names(models: list[TableModel]) -> list[str]:
    """The file stem of each table's LaTeX fragment: "table" for a retrieval table (the summary's too), "ablation",
    "detection_own", "detection_b2"; a kind a suite has more than once gets its setting ("table_partial")."""
    def kind(model: TableModel) -> str:
        key = model.spec.table_key
        for suffix, name in (("-open-detection-own", "detection_own"), ("-open-detection-b2", "detection_b2")):
            if key.endswith(suffix):
                return name
        return "ablation" if key == "ablation" else "table"
    kinds = [kind(model) for model in models]
    names = [f"{k}_{m.spec.setting}" if kinds.count(k) > 1 and m.spec.setting else k for k, m in zip(kinds, models)]
    # Two tables of one kind and setting (never in a planned suite): numbered, so no fragment overwrites another.
    return [f"{name}_{names[:index].count(name) + 1}" if names.count(name) > 1 else name
            for index, name in enumerate(names)]


def latex_labels(suite_name: str, models: list[TableModel]) -> list[str]:
    """Each table's `\\label`, "tab:<suite>-<fragment name>" (`latex_text.latex_label`): unique across the suites
    of one output folder, so a paper can \\input the fragments of several suites (before, the open-set suite's table
    and the ablation suite's open-set table shared "tab:<dataset>-open-...")."""
    return [latex_label(suite_name, name) for name in fragment_names(models)]


def write_report(suite_name: str, models: list[TableModel], out_dir: str | os.PathLike,
                 csv_frame: pd.DataFrame | None = None, heading: str | None = None,
                 caption: str = "short") -> dict[str, Path]:
    """Write <suite>.md, <suite>.tex (a compilable document, full captions) and <suite>.csv into out_dir, and each
    table as a fragment for a paper's `\\input{}`, <suite>_<kind>.tex (`fragment_names`; the table environment alone,
    needs booktabs; laid out for a two-column paper by `latex_layout`; labelled "tab:<suite>-<kind>"; `caption`
    short or full), each atomically.

    The CSV holds `suite_csv_frame(models)` unless `csv_frame` is given (a comparison with the paper has its own
    columns); `heading` replaces the markdown's "Results: <suite>". Returns {"md": path, "tex": path, "csv": path,
    "fragments": [paths]}."""
    if not suite_name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", suite_name):
        raise ValueError(f"suite name {suite_name!r} is not a plain file name (letters, digits, '_', '.', '-')")
    keys = [model.spec.table_key for model in models]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"suite {suite_name!r}: the tables {repeated} share a key; give each TableSpec its own key")
    out = Path(out_dir)
    paths = {"md": out / f"{suite_name}.md", "tex": out / f"{suite_name}.tex", "csv": out / f"{suite_name}.csv"}
    texts = {
        "md": suite_markdown(suite_name, models, heading),
        "tex": suite_latex(models, latex_labels(suite_name, models)),
        "csv": (suite_csv_frame(models) if csv_frame is None else csv_frame).to_csv(index=False, lineterminator="\n"),
    }
    for kind, path in paths.items():
        atomic_write_text(path, texts[kind])
    fragments = []
    for name, label, model in zip(fragment_names(models), latex_labels(suite_name, models), models):
        fragments.append(out / f"{suite_name}_{name}.tex")
        atomic_write_text(fragments[-1], to_latex(model, caption, label=label))
    return {**paths, "fragments": fragments}
