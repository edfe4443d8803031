"""What code made a run (benchmark/provenance.py): env.json records it at every start, and --dry-run, --report and
the HTML page warn when one table's runs come from different code. The other code here is a real second checkout
(a clone of this repository with a change in methods/cds.py), run as its own process on the same output folder."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import cli, store
from benchmark.provenance import code_label, code_version
from benchmark.runner import run_one
from benchmark.suites import load_suite_file, plan

REPO = Path(__file__).resolve().parent.parent


def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "provenance.toml"
    path.write_text('name = "provenance"\ndataset = "synthetic"\nsettings = ["partial"]\npairs = [["photo", "sketch"]]\n'
                    'methods = ["cds"]\nseeds = [2024, 2025, 2026]\nbackbone = "small_cnn"\ninit = "simclr"\n'
                    '[simclr]\nepochs = 1\n[hparams.cds]\nepochs = 2\n')
    return path


def other_checkout(tmp_path: Path) -> Path:
    """A clone of this repository's last commit with one line changed in methods/cds.py (a dirty tree)."""
    clone = tmp_path / "other_checkout"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    cds = clone / "methods" / "cds.py"
    cds.write_text(cds.read_text() + "\n# a change that is not a hyper-parameter: the run ids stay\n")
    return clone


def run_in(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(checkout / "run_benchmark.py"), *args], cwd=checkout, text=True,
                          capture_output=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_runs_of_other_code_are_recorded_and_the_reports_say_so(tmp_path, cache_dir, capsys, clean_registries):
    if shutil.which("git") is None or code_version()["commit"] == "":
        pytest.fail("this test needs git and a git checkout of the harness")
    suite = suite_file(tmp_path)
    clone = other_checkout(tmp_path)
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir / "synthetic", cache / "synthetic")
    common = ["--suite", str(suite), "--output", str(tmp_path / "out"), "--cache-dir", str(cache), "--device", "cpu"]
    specs = {spec.seed: spec for spec in plan(load_suite_file(suite))}
    run_dirs = {seed: spec.run_dir(tmp_path / "out") for seed, spec in specs.items()}

    # seed 2024 by this checkout; seed 2025 by the other; seed 2026 started here and finished there
    assert cli.main(common + ["--seeds", "2024"]) == 0
    done = run_in(clone, *common, "--seeds", "2025")
    assert done.returncode == 0, done.stderr[-3000:]
    store.prepare_run_dir(specs[2026], tmp_path / "out", {"cache_dir": str(cache), "device": "cpu",
                                                          "suite_file": str(suite)})
    assert run_one(run_dirs[2026] / "spec.json", stop_after_epochs=1) == {}
    done = run_in(clone, *common, "--seeds", "2026")
    assert done.returncode == 0, done.stderr[-3000:]
    capsys.readouterr()

    here = code_label(code_version())
    env = json.loads((run_dirs[2025] / "env.json").read_text())
    assert env["code"]["commit"] == code_version()["commit"] and env["code"]["dirty"] is True
    assert re.fullmatch(r"[0-9a-f]{64}", env["code"]["diff_sha256"])
    there = code_label(env["code"])
    assert there != here and there.startswith(code_version()["commit"][:12] + "+dirty.")
    starts = json.loads((run_dirs[2026] / "env.json").read_text())["starts"]
    assert [s["from_epoch"] for s in starts] == [0, 1] and [code_label(s["code"]) for s in starts] == [here, there]

    assert cli.main(common + ["--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert cli.main(common + ["--report"]) == 0
    reported = capsys.readouterr().out
    for out in (dry, reported):
        assert "warning: the done runs of the synthetic partial table were made by 3 versions of the code" in out
        assert f"{here} (1 run(s), e.g. cds partial photo->sketch seed 2024)" in out
        assert f"{there} (1 run(s), e.g. cds partial photo->sketch seed 2025)" in out
        assert (f"1 run(s) were resumed under other code than they started with ({here} then {there}): e.g. cds "
                f"partial photo->sketch seed 2026") in out
    page = (tmp_path / "out" / "report" / "provenance.html").read_text()
    assert "were made by 3 versions of the code" in page and f"code {there}" in page


def test_the_checkout_version_changes_with_the_diff_and_untracked_files(tmp_path):
    if shutil.which("git") is None:
        pytest.fail("this test needs git")
    clone = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)

    def version() -> dict:
        out = subprocess.run([sys.executable, "-c", "import json, sys; sys.path.insert(0, '.'); from benchmark."
                              "provenance import checkout_version; print(json.dumps(checkout_version()))"],
                             cwd=clone, capture_output=True, text=True, timeout=60, check=True).stdout
        return json.loads(out)

    clean = version()
    assert clean["dirty"] is False and clean["diff_sha256"] == "" and len(clean["commit"]) == 40
    (clone / "methods" / "cds.py").write_text((clone / "methods" / "cds.py").read_text() + "# x\n")
    edited = version()
    assert edited["dirty"] and edited["commit"] == clean["commit"]
    (clone / "methods" / "my_new_method.py").write_text("# a method file dropped into the checkout\n")
    with_new_file = version()
    assert with_new_file["dirty"] and with_new_file["diff_sha256"] != edited["diff_sha256"]
    (clone / "results" / "runs").mkdir(parents=True)
    (clone / "results" / "runs" / "x.json").write_text("{}")        # ignored by git: not code
    assert version() == with_new_file
