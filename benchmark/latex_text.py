"""Text in the LaTeX tables: names from a user's data (classes, domains, methods, datasets) in any script, written so
that pdflatex sets them in a paper whose preamble we do not know.

The rule (issue 22): what LaTeX's kernel typesets in every font encoding is written as LaTeX commands, the rest is
transliterated, so the typeset text of a table is pure ASCII and needs neither `inputenc` nor `fontenc`:

- the LaTeX specials ``\\ & % $ # _ { } ~ ^`` and ``< > |`` are escaped;
- the symbols of our tables (→ ± × – — ≤ ≥ † − ²) and Greek letters are written in math mode ($\\pm$, $\\alpha$);
- Latin letters with accents become the kernel's accent commands (é -> \\'{e}, ç -> \\c{c}, ő -> \\H{o}), and the
  letters with a text command of their own become that command (ß -> \\ss{}, ø -> \\o{}, ł -> \\l{}); typographic
  quotes, dashes and a few signs (£ § ¶ © ¡ ¿ …) likewise;
- every other character (CJK, Cyrillic, Arabic, Hebrew, Devanagari, emoji, ...) needs fonts and packages a paper may
  not load (CJKutf8, T2A, xelatex): each run of such characters is transliterated to ASCII with anyascii (ISC
  licence, https://github.com/anyascii/anyascii), e.g. "素描" -> "SuMiao", and the table says so in a note
  (`transliterations` lists the replaced runs). A character anyascii has no transliteration for is written as its
  code point, "U+XXXX".

The markdown, CSV and HTML outputs keep every name as it is; only the LaTeX is transliterated.
"""
from __future__ import annotations

import re
import unicodedata

from anyascii import anyascii

_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "|": r"\textbar{}",
}

_SYMBOLS = {
    "→": r"$\rightarrow$", "←": r"$\leftarrow$", "↔": r"$\leftrightarrow$", "±": r"$\pm$", "×": r"$\times$",
    "÷": r"$\div$", "≤": r"$\leq$", "≥": r"$\geq$", "≠": r"$\neq$", "≈": r"$\approx$", "†": r"$^\dagger$",
    "‡": r"$^\ddagger$", "−": r"$-$", "·": r"$\cdot$", "°": r"$^\circ$", "µ": r"$\mu$", "²": r"\textsuperscript{2}",
    "³": r"\textsuperscript{3}", "¹": r"\textsuperscript{1}", "–": "--", "—": "---", "‘": "`", "’": "'", "“": "``",
    "”": "''", "„": ",,", "…": r"\ldots{}", "•": r"\textbullet{}", "\u00a0": "~", "£": r"\pounds{}", "§": r"\S{}",
    "¶": r"\P{}", "©": r"\copyright{}", "¡": r"\textexclamdown{}", "¿": r"\textquestiondown{}",
    # Latin letters that are not an ASCII letter with accents, each with a text command of the kernel (OT1 and T1).
    "ß": r"\ss{}", "æ": r"\ae{}", "Æ": r"\AE{}", "œ": r"\oe{}", "Œ": r"\OE{}", "ø": r"\o{}", "Ø": r"\O{}",
    "ł": r"\l{}", "Ł": r"\L{}", "ı": r"\i{}", "ȷ": r"\j{}", "å": r"\aa{}", "Å": r"\AA{}",
}

# Combining mark -> the kernel's text accent command (defined in OT1 and T1 alike).
_ACCENTS = {
    "\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0304": "=", "\u0306": "u", "\u0307": ".",
    "\u0308": '"', "\u030a": "r", "\u030b": "H", "\u030c": "v", "\u0327": "c", "\u0323": "d", "\u0331": "b",
}
_ACCENTS_BELOW = {"\u0327", "\u0323", "\u0331"}

# Greek: small letters and the capitals that differ from Latin ones have math commands.
_GREEK_NAMES = {"LAMDA": "lambda", "FINAL SIGMA": "varsigma"}
_GREEK_CAPITALS = {"GAMMA", "DELTA", "THETA", "LAMDA", "XI", "PI", "SIGMA", "UPSILON", "PHI", "PSI", "OMEGA"}


def _greek(char: str) -> str | None:
    name = unicodedata.name(char, "")
    for prefix, capital in (("GREEK SMALL LETTER ", False), ("GREEK CAPITAL LETTER ", True)):
        if name.startswith(prefix):
            letter = name.removeprefix(prefix)
            if " " in letter and letter not in _GREEK_NAMES:        # letters with tonos, dialytika, ...
                return None
            if letter == "OMICRON":
                return "O" if capital else "o"
            command = _GREEK_NAMES.get(letter, letter.lower())
            if capital:
                if letter not in _GREEK_CAPITALS:
                    return None            # Alpha, Beta, ... look like Latin capitals: anyascii gives those
                command = command.capitalize()
            return rf"$\{command}$"
    return None


def _accented(char: str) -> str | None:
    """An ASCII letter with combining accents, as nested accent commands (é -> \\'{e}, ǘ -> \\'{\\"{u}})."""
    decomposed = unicodedata.normalize("NFD", char)
    base, marks = decomposed[0], decomposed[1:]
    if not (base.isascii() and base.isalpha()) or not marks or any(m not in _ACCENTS for m in marks):
        return None
    text = base
    if base in "ij" and any(m not in _ACCENTS_BELOW for m in marks):
        text = rf"\{base}"                  # dotless i and j under an accent above, as LaTeX's utf8 does
    for mark in marks:
        text = rf"\{_ACCENTS[mark]}{{{text}}}"
    return text


def _latex_char(char: str) -> str | None:
    """The LaTeX for one character, or None when pdflatex cannot set it without packages we cannot assume."""
    if char in _SPECIALS:
        return _SPECIALS[char]
    if char.isascii():
        return char
    return _SYMBOLS.get(char) or _greek(char) or _accented(char)


def _transliteration(run: str) -> str:
    ascii_text = anyascii(run).strip()
    return ascii_text or " ".join(f"U+{ord(c):04X}" for c in run)


def _pieces(text: str) -> list[tuple[str, str | None]]:
    """The text cut into (piece, LaTeX) for characters LaTeX sets and (run, None) for runs it cannot."""
    pieces: list[tuple[str, str | None]] = []
    for char in unicodedata.normalize("NFC", str(text)):
        latex = _latex_char(char)
        if latex is None and pieces and pieces[-1][1] is None:
            pieces[-1] = (pieces[-1][0] + char, None)
        else:
            pieces.append((char, latex))
    return pieces


def latex_escape(text: str) -> str:
    """`text` as LaTeX that pdflatex sets in any preamble (the module docstring gives the rule). One pass over the
    characters, so nothing is escaped twice. Transliterated runs are escaped too (anyascii may give '^' or '_')."""
    return "".join(latex if latex is not None else "".join(_SPECIALS.get(c, c) for c in _transliteration(piece))
                   for piece, latex in _pieces(text))


def transliterations(texts) -> dict[str, str]:
    """{run: its ASCII transliteration} for every run of characters that `latex_escape` transliterates in `texts`,
    in order of appearance."""
    found: dict[str, str] = {}
    for text in texts:
        for piece, latex in _pieces(text):
            if latex is None:
                found.setdefault(piece, _transliteration(piece))
    return found


def ascii_text(text: str) -> str:
    """The text as plain ASCII (a label, a file name, a width estimate): anyascii's transliteration."""
    return anyascii(unicodedata.normalize("NFC", str(text)))


def latex_label(*parts: str) -> str:
    """A `\\label` key "tab:<part>-<part>...": each part transliterated to ASCII, every run of characters other than
    letters, digits, '_', '.' and ':' replaced by '-' (what `\\label` and `\\ref` take in any preamble, hyperref's
    included)."""
    cleaned = [re.sub(r"[^A-Za-z0-9_.:]+", "-", ascii_text(part)).strip("-") for part in parts]
    return "tab:" + "-".join(part for part in cleaned if part)
