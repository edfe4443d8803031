"""The command line as a user meets it: bad input, dry-run census, idempotence, --report, an end-to-end suite."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmark import cli

from .conftest import tiny_suite

REPO = Path(__file__).resolve().parent.parent


def _run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "run_benchmark.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--suite", "nope"], "unknown suite 'nope'; available suites: quickstart"),
    (["--methods", "cds", "magic"], "unknown method(s) magic; registered methods: pretrained, cds"),
    (["--set", "lr"], "malformed --set 'lr': expected key=value"),
    (["--set", "cds.lrr=1"], "method 'cds' has no hyper-parameter 'lrr'"),
    (["--set", "cds.epochs=many"], "epochs='many': expected a value of type int"),
    (["--pairs", "Ph-Xx"], "has no domain 'Xx'"),
    (["--settings", "semi"], "unknown setting 'semi'"),
    (["--data-root", "/nonexistent/data"], "--data-root /nonexistent/data: no such folder"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, args, message):
    result = _run_cli("--output", str(tmp_path / "out"), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.slow
def test_list_names_suites_methods_datasets():
    result = _run_cli("--list")
    assert result.returncode == 0
    for word in ("quickstart", "pretrained", "cds", "synthetic", "photo (Ph)"):
        assert word in result.stdout


@pytest.mark.slow
def test_dry_run_idempotence_and_report(tmp_path, cache_dir, capsys):
    tiny_suite("test_cli_suite", methods=["pretrained", "cds"], seeds=(2024, 2025))
    common = ["--suite", "test_cli_suite", "--output", str(tmp_path), "--cache-dir", str(cache_dir),
              "--set", "cds.epochs=1"]

    assert cli.main(common + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs planned: 0 done, 0 failed, 0 incomplete, 4 not started -> 4 to run" in out
    assert not (tmp_path / "runs").exists()                          # a dry run writes nothing

    assert cli.main(common) == 0
    out = capsys.readouterr().out
    assert "-> 4 to run" in out and "trained 4 run(s)" in out
    assert "| Pretrained (init)" in out and "| CDS" in out
    table = (tmp_path / "tables" / "test_cli_suite.md").read_text()
    assert "Ph→Sk" in table and "n=2 seeds" in table
    assert (tmp_path / "tables" / "test_cli_suite.tex").read_text().startswith("\\documentclass")

    assert cli.main(common) == 0                                     # idempotent: nothing is trained again
    out = capsys.readouterr().out
    assert "4 runs planned: 4 done, 0 failed, 0 incomplete, 0 not started -> 0 to run" in out
    assert "run(s) in" not in out

    (tmp_path / "tables" / "test_cli_suite.md").unlink()
    assert cli.main(common + ["--report"]) == 0                      # tables again from the store alone
    assert (tmp_path / "tables" / "test_cli_suite.md").read_text() == table
    runs = pd.read_csv(tmp_path / "tables" / "test_cli_suite_runs.csv")
    assert set(runs["status"]) == {"done"} and runs["run_id"].nunique() == 4
    assert {"map_all", "map_all_coda", "p_at_1", "n_valid_queries"} <= set(runs["metric"])

    # the device time of the finished runs, per method (and a total), from their measured seconds
    cost = pd.read_csv(tmp_path / "tables" / "test_cli_suite_cost.csv")
    assert list(cost["method"]) == ["Pretrained (init)", "CDS", "total"] and set(cost["device"]) == {"cpu"}
    assert list(cost["runs"]) == [2, 2, 4]
    assert cost["device_hours"].iloc[2] == pytest.approx(cost["device_hours"].iloc[:2].sum())
    assert cost["seconds_per_epoch"].iloc[1] > 0
    # a plan with new runs is priced from them: the cds runs at their measured seconds per epoch, twice the epochs
    assert cli.main(common[:-1] + ["cds.epochs=2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\n  cds +2 +[0-9.]+  2 finished run\(s\) on synthetic \(cpu\)\n", out) and "CPU-hours" in out


@pytest.mark.slow
def test_changing_a_hyper_parameter_plans_new_runs(tmp_path, cache_dir, capsys):
    tiny_suite("test_cli_hparam", methods=["cds"])
    common = ["--suite", "test_cli_hparam", "--output", str(tmp_path), "--cache-dir", str(cache_dir)]
    assert cli.main(common + ["--set", "epochs=1"]) == 0
    capsys.readouterr()
    assert cli.main(common + ["--set", "epochs=1", "--dry-run"]) == 0
    assert "1 done" in capsys.readouterr().out
    assert cli.main(common + ["--set", "epochs=1", "--set", "temperature=0.2", "--dry-run"]) == 0
    assert "0 done, 0 failed, 0 incomplete, 1 not started" in capsys.readouterr().out


@pytest.mark.slow
def test_the_quickstart_plans_every_method_on_three_pairs_and_seeds(tmp_path):
    from methods import method_names
    result = _run_cli("--suite", "quickstart", "--dry-run", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    methods = method_names(include_variants=False)           # ablation variants are not in the quickstart
    assert "uem" in methods and "uem_no_sel" not in methods
    assert f"{len(methods) * 3 * 3} runs planned: 0 done" in result.stdout   # x 3 pairs x 3 seeds, partial
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_lists_may_be_comma_or_space_separated(tmp_path):
    spaced = _run_cli("--dry-run", "--output", str(tmp_path), "--methods", "pretrained", "cds",
                      "--seeds", "2024", "2025", "--pairs", "Ph-Sk", "Cl-Pa")
    commas = _run_cli("--dry-run", "--output", str(tmp_path), "--methods", "pretrained,cds",
                      "--seeds", "2024,2025", "--pairs", "Ph-Sk,Cl-Pa")
    assert spaced.returncode == commas.returncode == 0, spaced.stderr + commas.stderr
    assert "8 runs planned" in spaced.stdout and spaced.stdout == commas.stdout
    bad = _run_cli("--dry-run", "--output", str(tmp_path), "--seeds", "2024,x")
    assert bad.returncode == 2 and "seeds are integers, got '2024,x'" in bad.stderr


def test_requested_methods_come_in_table_order():
    from benchmark.suites import get_suite, plan
    specs = plan(get_suite("quickstart"), methods=["uem", "pretrained", "cds", "uem"], seeds=[2024],
                 pairs=["Ph-Sk"])
    assert [s.method for s in specs] == ["pretrained", "cds", "uem"]


def test_a_report_of_a_folder_with_no_finished_run_says_so(tmp_path, capsys):
    output = tmp_path / "elsewhere"
    assert cli.main(["--suite", "quickstart", "--report", "--methods", "pretrained", "--pairs", "Ph-Sk", "--seeds",
                     "2024", "--output", str(output)]) == 0
    assert (f"note: none of the 1 planned runs of quickstart is finished in {output}: the tables are empty (-); "
            f"train them first, or give the --output that holds them") in capsys.readouterr().out
