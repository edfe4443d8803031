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
