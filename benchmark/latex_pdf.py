"""The PDF of a suite's report: the generated LaTeX document compiled with pdflatex (TeX Live), when installed."""
from __future__ import annotations

import os
from pathlib import Path


class LatexError(RuntimeError):
    """pdflatex refused a generated document (a bug of ours: every name is escaped)."""


def compile_pdf(tex_path: str | os.PathLike, timeout_s: float = 120) -> Path | None:
    """Compile a generated LaTeX document with pdflatex into <name>.pdf beside it (atomically: built in a temporary
    folder, then moved). Returns the PDF's path, or None when pdflatex is not installed. A LaTeX error raises
    LatexError with pdflatex's own error lines."""
    import shutil
    import subprocess
    import tempfile

    tex_path = Path(tex_path)
    engine = shutil.which("pdflatex")
    if engine is None:
        return None
    with tempfile.TemporaryDirectory(prefix=".pdflatex-", dir=tex_path.parent) as build:
        try:
            result = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "-output-directory",
                                     build, str(tex_path.resolve())], cwd=build, capture_output=True, text=True,
                                    timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise LatexError(f"pdflatex did not finish {tex_path} within {timeout_s:.0f} s") from None
        built = Path(build) / f"{tex_path.stem}.pdf"
        if result.returncode != 0 or not built.is_file():
            errors = [line for line in result.stdout.splitlines() if line.startswith("!") or line.startswith("l.")]
            raise LatexError(f"pdflatex failed on {tex_path}: " + (" | ".join(errors[:6]) or result.stdout[-800:]))
        pdf = tex_path.with_suffix(".pdf")
        os.replace(built, pdf)
    return pdf
