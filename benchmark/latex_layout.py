"""How a LaTeX table is laid out in a paper: its type size, `table` or `table*`, and whether it is split by columns.

A table is never scaled (no `\\resizebox`): scaled to the column, a 12-pair Office-Home table was set in 2.5 pt type.
Instead its natural width is estimated at each readable size and the rule is, for a 10 pt paper (CVPR, ICCV, ECCV,
NeurIPS, ICML and ICLR all are):

1. `table` in one column, at `\\small` (9 pt) if the table fits the column at 9 pt, else at `\\footnotesize` (8 pt)
   if it fits at 8 pt;
2. else `table*` across the text width, at `\\small`, else at `\\footnotesize`;
3. else split into the fewest parts whose every part fits the text width at `\\footnotesize`: the pairs shared out
   evenly in their order (the first parts get one more when they do not divide), Avg in the last part, the method
   column in every part; each part is a `table*` of its own with "Part i of k" in its caption and its own label
   (`<label>-part<i>`; the first part also carries `<label>`, so a `\\ref` to the table works in any layout).

Never below 8 pt: that is the smaller of the two sizes. The widths (`PAPER`): a column of 3.25 in (ICML's; CVPR's and
ICCV's are 3.28 in) and a text width of 5.5 in (NeurIPS' and ICLR's one column; CVPR's text is 6.875 in, ICML's
6.75 in), so that a `table*` or a part fits a one-column paper too, where `table*` is `table`. Not covered: ECCV's
LNCS text (4.8 in, Computer Modern), where a part can be wider than the text.

The estimate: each column is as wide as its widest cell plus LaTeX's \\tabcolsep (6 pt) on each side; a cell's width
is the sum of its characters' widths in the paper's font (`FontMetrics`: Times, which the templates of these venues
load, for the fragments; Computer Modern for the standalone document), bold text wider by the font's bold/regular
ratio, superscripts at 0.7 of the size. Against pdflatex's own widths (\\wd of the tabular, at \\small, on three of
the tests' tables: 2 and 4 pairs, closed and open) it was within 0.7 % in Computer Modern and 5-6 % wider than the
real one in Times (the letters' mean widths); the tests compile every table kind in a CVPR-like and a NeurIPS-like
paper and find no overfull box.
"""
from __future__ import annotations

from dataclasses import dataclass

from .latex_text import ascii_text

POINTS_PER_INCH = 72.27
TABCOLSEP_PT = 6.0          # LaTeX's default, on each side of every column, whatever the type size
SUPERSCRIPT_SCALE = 0.7     # \textsuperscript in a 10 pt paper: 7 pt over 10 pt

# (LaTeX size command, its size in a 10 pt paper), the larger first.
SIZES = (("small", 9.0), ("footnotesize", 8.0))
MIN_SIZE_PT = min(size for _, size in SIZES)


@dataclass(frozen=True)
class TableLayout:
    """Where and how large a table is set: `environment` "table" or "table*", `size` a LaTeX size command, `parts`
    the columns (after the method column) of each part, `width_pt` the estimated width of each part."""

    environment: str
    size: str
    size_pt: float
    parts: list[list[str]]
    width_pt: list[float]

    def describe(self, paper: PaperLayout) -> str:
        widest = max(self.width_pt) / POINTS_PER_INCH
        if self.environment == "table" and paper.two_column:
            where = f"one column ({paper.column_width_pt / POINTS_PER_INCH:.2f} in)"
        else:
            where = f"the text width ({paper.text_width_pt / POINTS_PER_INCH:.2f} in)"
        split = f", split into {len(self.parts)} parts by columns" if len(self.parts) > 1 else ""
        return (f"\\{self.size} ({self.size_pt:g} pt in a 10 pt paper) in {where}{split}; "
                f"estimated width {widest:.2f} in")


@dataclass(frozen=True)
class FontMetrics:
    """Character widths in em of a text font: `widths` for the characters that differ from the mean, `lower` and
    `upper` the mean width of the ASCII letters, `other` any other character; `bold_scale` bold text against regular.
    Math symbols (± × → †) come from Computer Modern's math fonts in both (times.sty keeps them)."""

    name: str
    widths: dict[str, float]
    lower: float
    upper: float
    other: float
    bold_scale: float


_MATH_EM = {"±": 0.778, "×": 0.778, "→": 1.0, "←": 1.0, "−": 0.778, "+": 0.778, "=": 0.778, "†": 0.444}

# From the TFM files of TeX Live 2022 (tftopl): cmr10 and cmbx10 (Computer Modern), ptmr7t and ptmb7t (Times, what
# times.sty loads); letters at their mean width (cmr10: lower case 0.489 em, capitals 0.717 em; ptmr7t: 0.459, 0.667).
COMPUTER_MODERN = FontMetrics(
    name="Computer Modern", lower=0.489, upper=0.717, other=0.75, bold_scale=1.15,       # cmbx10 digits 0.575 em
    widths={**{digit: 0.5 for digit in "0123456789"}, **_MATH_EM, " ": 0.333, ".": 0.278, ",": 0.278, ":": 0.278,
            ";": 0.278, "(": 0.389, ")": 0.389, "[": 0.278, "]": 0.278, "/": 0.5, "-": 0.333, "–": 0.5, "—": 1.0,
            "%": 0.833, "'": 0.278, "i": 0.278, "l": 0.278, "j": 0.306, "m": 0.833, "w": 0.722, "I": 0.361,
            "M": 0.917, "W": 1.028})
TIMES = FontMetrics(
    name="Times", lower=0.459, upper=0.667, other=0.7, bold_scale=1.07,    # ptmb7t letters 0.489 em, digits 0.5 em
    widths={**{digit: 0.5 for digit in "0123456789"}, **_MATH_EM, " ": 0.25, ".": 0.25, ",": 0.25, ":": 0.278,
            ";": 0.278, "(": 0.333, ")": 0.333, "[": 0.333, "]": 0.333, "/": 0.278, "-": 0.333, "–": 0.5, "—": 1.0,
            "%": 0.833, "'": 0.333, "i": 0.278, "l": 0.278, "j": 0.278, "m": 0.778, "w": 0.722, "I": 0.333,
            "M": 0.889, "W": 0.944})


@dataclass(frozen=True)
class PaperLayout:
    """The widths a table must fit, in pt: one column, and the whole text (`table*`), and the font its widths are
    estimated in. `two_column`: whether a table wider than a column can span the text (`table*`); in a one-column
    document column and text are one width."""

    column_width_pt: float
    text_width_pt: float
    font: FontMetrics = TIMES
    two_column: bool = True


PAPER = PaperLayout(column_width_pt=3.25 * POINTS_PER_INCH, text_width_pt=5.5 * POINTS_PER_INCH)


# Markers the measured text carries (control characters never in a name): bold and superscript spans, cell lines.
BOLD_START, BOLD_END, SUPERSCRIPT_START, SUPERSCRIPT_END, LINE_BREAK = "\x01", "\x02", "\x03", "\x04", "\n"


def measure_bold(text: str) -> str:
    return f"{BOLD_START}{text}{BOLD_END}"


def measure_superscript(text: str) -> str:
    return f"{SUPERSCRIPT_START}{text}{SUPERSCRIPT_END}"


def _char_em(char: str, font: FontMetrics) -> float:
    if char in font.widths:
        return font.widths[char]
    if char.isascii():
        return font.lower if char.islower() else font.upper if char.isupper() else font.other
    return sum(_char_em(c, font) for c in ascii_text(char)) or font.other     # transliterated in the LaTeX


def text_width_em(text: str, font: FontMetrics) -> float:
    """The width of a measured text in em of its type size: the widest of its lines (`LINE_BREAK`), bold and
    superscript spans marked with `measure_bold` and `measure_superscript`."""
    widest = 0.0
    for line in str(text).split(LINE_BREAK):
        width, scale = 0.0, [1.0]
        for char in line:
            if char == BOLD_START:
                scale.append(scale[-1] * font.bold_scale)
            elif char == SUPERSCRIPT_START:
                scale.append(scale[-1] * SUPERSCRIPT_SCALE)
            elif char in (BOLD_END, SUPERSCRIPT_END):
                scale.pop()
            else:
                width += _char_em(char, font) * scale[-1]
        widest = max(widest, width)
    return widest


def table_width_pt(columns: list[list[str]], size_pt: float, font: FontMetrics) -> float:
    """The natural width of a tabular whose columns hold these measured texts (header first), at `size_pt`."""
    return sum(max(text_width_em(text, font) for text in column) * size_pt + 2 * TABCOLSEP_PT for column in columns)


def _split(items: list, parts: int) -> list[list]:
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def choose_layout(columns: dict[str, list[str]], method_column: list[str], trailing: list[str],
                  paper: PaperLayout = PAPER) -> TableLayout:
    """The layout of a table by the rule of the module docstring.

    `columns`: column name -> its measured texts (header first), in order; `method_column` the method column's;
    `trailing`: the names of the columns kept in the last part when the table is split (Avg). Widths in pt."""
    names = list(columns)

    def width(part: list[str], size_pt: float) -> float:
        return table_width_pt([method_column] + [columns[name] for name in part], size_pt, paper.font)

    candidates = [("table", paper.column_width_pt)]
    if paper.two_column:
        candidates.append(("table*", paper.text_width_pt))
    for environment, room in candidates:
        for size, size_pt in SIZES:
            whole = width(names, size_pt)
            if whole <= room:
                return TableLayout(environment, size, size_pt, [names], [whole])
    size, size_pt = SIZES[-1]
    environment = "table*" if paper.two_column else "table"
    leading = [name for name in names if name not in trailing]
    kept = [name for name in names if name in trailing]
    for count in range(2, max(len(leading), 1) + 1):
        parts = _split(leading, count)
        parts[-1] = parts[-1] + kept
        widths = [width(part, size_pt) for part in parts]
        if max(widths) <= paper.text_width_pt:
            return TableLayout(environment, size, size_pt, parts, widths)
    # Not even one column per part fits (method names of a column's width): one per part, wider than the text.
    parts = [[name] for name in leading] or [[]]
    parts[-1] = parts[-1] + kept
    return TableLayout(environment, size, size_pt, parts, [width(part, size_pt) for part in parts])


def paper_for_width(text_width_in: float, font: FontMetrics) -> PaperLayout:
    """A one-column document `text_width_in` wide (the standalone report): column and text are one width."""
    width = text_width_in * POINTS_PER_INCH
    return PaperLayout(column_width_pt=width, text_width_pt=width, font=font, two_column=False)

