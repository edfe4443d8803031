"""The PDF of a suite's report: the generated LaTeX document compiled with pdflatex (TeX Live), when installed."""
from __future__ import annotations

import os
from pathlib import Path

from .store import atomic_write_text


class LatexError(RuntimeError):
    """pdflatex refused a generated document (a bug of ours: every name is escaped or transliterated); `log_path`
    holds pdflatex's log, kept beside the document."""

    def __init__(self, message: str, log_path: Path | None = None):
        super().__init__(message)
        self.log_path = log_path


def failure_log_path(tex_path: str | os.PathLike) -> Path:
    """Where pdflatex's log of a failed compile of `tex_path` is kept: <name>.pdflatex.log beside it."""
    tex_path = Path(tex_path)
    return tex_path.with_name(f"{tex_path.stem}.pdflatex.log")


def compile_pdf(tex_path: str | os.PathLike, timeout_s: float = 120) -> Path | None:
    """Compile a generated LaTeX document with pdflatex into <name>.pdf beside it (atomically: built in a temporary
    folder, then moved). Returns the PDF's path, or None when pdflatex is not installed. A LaTeX error or a timeout
    raises LatexError with pdflatex's own error lines; its log is kept as <name>.pdflatex.log (`failure_log_path`),
    which a later successful compile removes."""
    import shutil
    import subprocess
    import tempfile

    tex_path = Path(tex_path)
    engine = shutil.which("pdflatex")
    if engine is None:
        return None
    log_path = failure_log_path(tex_path)
    with tempfile.TemporaryDirectory(prefix=".pdflatex-", dir=tex_path.parent) as build:
        built_log = Path(build) / f"{tex_path.stem}.log"

        def keep_log() -> Path | None:
            if not built_log.is_file():
                return None
            atomic_write_text(log_path, built_log.read_text(encoding="utf-8", errors="replace"))
            return log_path

        try:
            result = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "-output-directory",
                                     build, str(tex_path.resolve())], cwd=build, capture_output=True, text=True,
                                    errors="replace", timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise LatexError(f"pdflatex did not finish {tex_path} within {timeout_s:.0f} s", keep_log()) from None
        built = Path(build) / f"{tex_path.stem}.pdf"
        if result.returncode != 0 or not built.is_file():
            errors = [line for line in result.stdout.splitlines() if line.startswith("!") or line.startswith("l.")]
            raise LatexError(f"pdflatex failed on {tex_path}: " + (" | ".join(errors[:6]) or result.stdout[-800:]),
                             keep_log())
        pdf = tex_path.with_suffix(".pdf")
        os.replace(built, pdf)
    log_path.unlink(missing_ok=True)
    return pdf
