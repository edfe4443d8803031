"""The suite's HTML page (benchmark/html_report.py), looked at in a real browser: headless Chromium loads it, every
table and figure is in the page, and names that come from the data are text, never markup."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from benchmark import cli

EVIL = "<img src=x onerror=alert(1)>"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def evil_suite(tmp_path):
    """A folder dataset whose second domain and one class are named like markup, and a suite file over it."""
    rng = np.random.default_rng(0)
    for domain in ("photo", EVIL):
        for name in ("circle", EVIL, "square"):
            folder = tmp_path / "data" / domain / name
            folder.mkdir(parents=True)
            for i in range(12):
                pixels = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
                Image.fromarray(pixels).resize((32, 32)).save(folder / f"{i}.png")
    suite = tmp_path / "evil.toml"
    suite.write_text('\n'.join([
        'name = "evil_suite"', 'settings = ["closed"]', 'methods = ["pretrained"]', 'seeds = [1]',
        'backbone = "small_cnn"', 'init = "random"', 'image_size = 32',
        '[dataset]', 'name = "evil"', 'root = "data"', '']))
    return suite


def test_the_html_page_has_every_table_and_figure_and_escapes_names(evil_suite, tmp_path, capsys, clean_registries):
    output = tmp_path / "results"
    assert cli.main(["--suite", str(evil_suite), "--output", str(output), "--device", "cpu", "--figures"]) == 0
    page = output / "report" / "evil_suite.html"
    assert page.is_file() and f"html: {page}" in capsys.readouterr().out
    html = page.read_text()
    assert EVIL not in html and "&lt;img src=x onerror=alert(1)&gt;" in html      # escaped wherever it appears
    assert html.count('<section class="result-table">') == 1
    figures = sorted(p.name for p in (output / "figures").glob("evil_suite_*.png"))
    assert figures and all(name in html for name in figures)
    assert html.count('src="data:image/png;base64,') == len(figures)
    assert "<h2>Runs (2)</h2>" in html                       # one row per run: both ordered pairs
    # the device time of the runs: a table per method and device, and each run's own minutes
    assert html.count('<section class="cost-table">') == 1 and html.count(" min on cpu</small>") == 2
    browser = _chromium()
    if browser is None:
        if os.environ.get("CDR_REQUIRE_CHROMIUM") == "1":
            pytest.fail("CDR_REQUIRE_CHROMIUM=1 but no chromium on PATH (.ci/run installs it)")
        pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium)")
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not re.search(r'<img[^>]*src="x"', dom.stdout)               # the browser made no element of the name
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom.stdout
    assert dom.stdout.count("<figure>") == len(figures) and dom.stdout.count("<table") == 3   # result, cost, runs
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr  # no script error, no console message
    shot = tmp_path / "page.png"
    taken = subprocess.run([*common, "--window-size=1400,2000", f"--screenshot={shot}", page.as_uri()],
                           capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0 and shot.stat().st_size > 10_000


DOLLARS = "$5 and $10 bills"
SKETCH = "素描"


@pytest.fixture
def unicode_suite(tmp_path):
    """A folder dataset with a domain named in Chinese and classes named with dollar signs and accents."""
    rng = np.random.default_rng(1)
    for domain in ("photo", SKETCH):
        for name in ("circle", DOLLARS, "Éclair"):
            folder = tmp_path / "data" / domain / name
            folder.mkdir(parents=True)
            for i in range(12):
                pixels = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
                Image.fromarray(pixels).resize((32, 32)).save(folder / f"{i}.png")
    suite = tmp_path / "unicode.toml"
    suite.write_text('\n'.join([
        'name = "unicode_suite"', 'settings = ["closed"]', 'methods = ["pretrained"]', 'seeds = [1]',
        'backbone = "small_cnn"', 'init = "random"', 'image_size = 32',
        '[dataset]', 'name = "sketches"', 'root = "data"', '']), encoding="utf-8")
    return suite


FAILING_PDFLATEX = """#!/bin/sh
# pdflatex as it fails: its error lines on stdout, a log in the output directory, exit status 1.
build="$4"; stem=$(basename "$5" .tex)
echo "! LaTeX Error: simulated failure."
echo "l.7 \\\\begin{table}"
echo "simulated pdflatex log" > "$build/$stem.log"
exit 1
"""


@pytest.mark.slow
def test_names_in_any_script_reach_every_output_and_a_pdf_failure_stops_nothing(unicode_suite, tmp_path, capsys,
                                                                                 monkeypatch, clean_registries):
    output = tmp_path / "results"
    assert cli.main(["--suite", str(unicode_suite), "--output", str(output), "--device", "cpu", "--figures"]) == 0
    captured = capsys.readouterr()
    tables = output / "tables"
    assert f"{SKETCH}→photo" in (tables / "unicode_suite.md").read_text(encoding="utf-8")
    fragment = (tables / "unicode_suite_table.tex").read_text(encoding="utf-8")
    assert "SuMiao$\\rightarrow$photo" in fragment and "Transliterated to ASCII for pdflatex" in fragment
    if shutil.which("pdflatex"):            # before: "Unicode character 素 (U+7D20)", exit status 2, no figures
        assert (tables / "unicode_suite.pdf").read_bytes().startswith(b"%PDF") and "warning" not in captured.err
    html = (output / "report" / "unicode_suite.html").read_text(encoding="utf-8")
    assert f"{SKETCH}→photo" in html
    figures = sorted(p.name for p in (output / "figures").glob("unicode_suite_*.png"))
    assert "unicode_suite_retrievals_closed_SuMiao-23aabd-photo_seed1.png" in figures   # distinct ASCII file names
    assert all(name in html for name in figures)

    # pdflatex fails (an old TeX, a missing package): the figures and the page are still written, the exit status
    # still says whether a run failed, and the warning names pdflatex's log.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pdflatex").write_text(FAILING_PDFLATEX)
    (fake / "pdflatex").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    shutil.rmtree(output / "figures")
    (output / "report" / "unicode_suite.html").unlink()
    (tables / "unicode_suite.pdf").unlink(missing_ok=True)
    assert cli.main(["--suite", str(unicode_suite), "--output", str(output), "--report", "--figures"]) == 0
    captured = capsys.readouterr()
    log = tables / "unicode_suite.pdflatex.log"
    assert f"warning: no PDF of unicode_suite.tex: pdflatex failed on {tables / 'unicode_suite.tex'}: ! LaTeX " \
           f"Error: simulated failure." in captured.err and f"pdflatex's log: {log}" in captured.err
    assert log.read_text() == "simulated pdflatex log\n" and not (tables / "unicode_suite.pdf").exists()
    assert (output / "report" / "unicode_suite.html").is_file()
    assert sorted(p.name for p in (output / "figures").glob("unicode_suite_*.png")) == figures
