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
    "†": r"$^\dagger$",
    "−": r"$-$",
    "Δ": r"$\Delta$",
    "α": r"$\alpha$",
    "²": r"\textsuperscript{2}",
}


def latex_escape(text: str) -> str:
    """Text safe in LaTeX: the special characters `\\ & % $ # _ { } ~ ^` (and < > |) escaped, and the unicode
    symbols of our tables (→ ± × – † − Δ α ²) written as LaTeX. One pass over the characters, so nothing is escaped
    twice."""
    return "".join(_LATEX_REPLACEMENTS.get(char, char) for char in str(text))


def _latex_with_notes(numbers: list[str], notes: list[str | None]) -> str:
    """The numbers on one line, their notes in parentheses below, smaller: a nested tabular (no package needed)."""
    below = " / ".join(f"({note})" if note is not None else "" for note in notes)
    return rf"\begin{{tabular}}[c]{{@{{}}c@{{}}}}{' / '.join(numbers)} \\ \footnotesize {below}\end{{tabular}}"


CAPTIONS = ("full", "short")


def to_latex(model: TableModel, caption: str = "full") -> str:
    """A booktabs `table` environment (needs \\usepackage{booktabs,graphicx}); shrunk to the line width only if wider.

    `caption="full"`: the whole explanation in the caption (the standalone documents); `"short"`: the title and what a
    number is, the explanation (statistic, n, seeds, marks) in a small note under the table (the fragments a paper
    `\\input`s). Cells are never truncated; names and the caption are escaped."""
    if caption not in CAPTIONS:
        raise ValueError(f"caption must be one of {', '.join(CAPTIONS)}, got {caption!r}")
    spec = model.spec
    header = " & ".join([METHOD_HEADER] + [latex_escape(c) for c in model.columns]) + r" \\"
    rows = rendered_rows(model, latex_escape, bold=lambda t: rf"\textbf{{{t}}}",
                          underline=lambda t: rf"\underline{{{t}}}", superscript=lambda m: rf"\textsuperscript{{{m}}}",
                          with_notes=_latex_with_notes)
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
    note = ([r"\par\smallskip", rf"{{\footnotesize {latex_escape(model.caption_body)}\par}}"]
            if caption == "short" else [])
    return "\n".join([
        f"% {latex_escape(spec.title)} -- needs \\usepackage{{booktabs,graphicx}}",
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{latex_escape(model.caption if caption == 'full' else model.short_caption)}}}",
        rf"\label{{{model.label}}}",
        r"\smallskip",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%  shrinks only a table wider than the line",
        *tabular[:-1],
        tabular[-1] + "%",
        "}",
        *note,
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


def suite_latex(models: list[TableModel]) -> str:
    """All tables of a suite as one standalone LaTeX document."""
    return latex_document([to_latex(model) for model in models])


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
    return [f"{k}_{m.spec.setting}" if kinds.count(k) > 1 and m.spec.setting else k for k, m in zip(kinds, models)]


def write_report(suite_name: str, models: list[TableModel], out_dir: str | os.PathLike,
                 csv_frame: pd.DataFrame | None = None, heading: str | None = None,
                 caption: str = "short") -> dict[str, Path]:
    """Write <suite>.md, <suite>.tex (a compilable document, full captions) and <suite>.csv into out_dir, and each
    table as a fragment for a paper's `\\input{}`, <suite>_<kind>.tex (`fragment_names`; the table environment alone,
    needs booktabs and graphicx; `caption` short or full), each atomically.

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
        "tex": suite_latex(models),
        "csv": (suite_csv_frame(models) if csv_frame is None else csv_frame).to_csv(index=False, lineterminator="\n"),
    }
    for kind, path in paths.items():
        atomic_write_text(path, texts[kind])
    fragments = []
    for name, model in zip(fragment_names(models), models):
        fragments.append(out / f"{suite_name}_{name}.tex")
        atomic_write_text(fragments[-1], to_latex(model, caption))
    return {**paths, "fragments": fragments}
