"""Budgets as presets (methods.base.BUDGETS): a suite's `budget = "quickstart"` gives every method the small-data
recipe the synthetic data takes, `[hparams.*]` and `--set` still override it, "paper" is the dataclass defaults; the
built-in suites' runs keep their ids."""
from __future__ import annotations

import dataclasses

import pytest

from benchmark import cli
from benchmark.suites import SUITES, load_suite_file, plan
from datasets.registry import default_budget
from methods import get_method_class, method_names
from methods.base import BUDGETS, resolve_hparams


def _suite_file(folder, toys_root, budget_line: str, hparams: str = "") -> str:
    path = folder / "budget.toml"
    path.write_text(f'name = "budget_toys"\nsettings = ["partial"]\npairs = [["photo", "drawing"]]\nseeds = [1]\n'
                    f'{budget_line}\n[dataset]\nname = "toys"\nroot = "{toys_root}"\n{hparams}')
    return str(path)


def test_the_quickstart_budget_gives_a_folder_dataset_the_synthetic_data_s_recipe(toys, tmp_path, clean_registries):
    root = toys.parent / "toys"
    specs = {s.method: s for s in plan(load_suite_file(_suite_file(tmp_path, root, 'budget = "quickstart"',
                                                                   "[hparams.cds]\nepochs = 3\n")))}
    assert set(specs) == set(method_names(include_variants=False))
    for method, spec in specs.items():
        cls = get_method_class(method)
        expected = resolve_hparams(cls, "synthetic", {"epochs": 3} if method == "cds" else None)
        if method == "coda":       # CoDA's cluster count is the synthetic data's (18), not the budget's
            expected["cluster_num"] = resolve_hparams(cls, "toys", budget="paper")["cluster_num"]
        assert spec.hparams == expected, method
    # stated values: UEM's quickstart schedule 8 + 4 epochs at batch 32, DN2A's 6 epochs and queue of 256
    assert (specs["uem"].hparams["stage1_epochs"], specs["uem"].hparams["stage2_epochs"],
            specs["uem"].hparams["batch_size"]) == (8, 4, 32)
    assert (specs["dn2a"].hparams["epochs"], specs["dn2a"].hparams["queue_size"]) == (6, 256)
    # --dry-run says the budget and each method's schedule before anything trains
    from benchmark.pipeline import budget_text
    line = budget_text(load_suite_file(_suite_file(tmp_path, root, 'budget = "quickstart"')), list(specs.values()))
    assert line.startswith("budget quickstart (epochs x batch per domain): cds 3 x 32, pcs 10 x 32, darl 10 x 32")
    assert specs["cds"].hparams["epochs"] == 3                      # [hparams.cds] after the budget


def test_without_a_budget_a_folder_dataset_takes_the_papers_schedules(toys, tmp_path, clean_registries):
    root = toys.parent / "toys"
    specs = {s.method: s for s in plan(load_suite_file(_suite_file(tmp_path, root, "")), methods=["uem", "cds"])}
    uem_defaults = get_method_class("uem").Hparams()
    assert specs["uem"].hparams["stage1_epochs"] == uem_defaults.stage1_epochs != 8
    assert specs["cds"].hparams["epochs"] == get_method_class("cds").Hparams().epochs != 10


def test_an_unknown_budget_is_refused_with_the_known_ones(toys, tmp_path, capsys, clean_registries):
    path = _suite_file(tmp_path, toys.parent / "toys", 'budget = "fast"')
    output = tmp_path / "results"
    assert cli.main(["--suite", path, "--output", str(output), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "key 'budget' = 'fast': expected one of 'paper', 'quickstart'" in err and not output.exists()
    with pytest.raises(ValueError, match="unknown budget 'fast'; the budgets are: paper, quickstart"):
        resolve_hparams(get_method_class("cds"), "synthetic", budget="fast")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--budget", "fast"])


def test_budget_paper_over_the_quickstart_and_the_quickstart_s_run_ids():
    quickstart = SUITES["quickstart"]
    # the file names its budget (a copy for another dataset keeps it); the synthetic data's default is the same
    assert quickstart.budget == quickstart.budget_name() == default_budget("synthetic") == "quickstart"
    assert BUDGETS == ("paper", "quickstart") and default_budget("office_home") == "paper"
    small = {s.method: s for s in plan(quickstart, seeds=[2024], pairs=["Ph-Sk"])}
    paper = {s.method: s for s in plan(dataclasses.replace(quickstart, budget="paper"), seeds=[2024],
                                       pairs=["Ph-Sk"])}
    assert small["cds"].hparams["epochs"] == 10 and paper["cds"].hparams["epochs"] == 7      # CDS's code default
    assert paper["coda"].hparams["cluster_num"] == small["coda"].hparams["cluster_num"] == 18   # the dataset's
    assert small["cds"].run_id != paper["cds"].run_id
    # The quickstart's run ids (Ph->Sk, seed 2024) as they were before budgets existed (commit e91c404): the recipe
    # moved from the methods' dataset_overrides to their budgets, its values did not.
    assert {m: s.run_id for m, s in small.items()} == {
        "pretrained": "0f7d15b78747", "cds": "302d08c1840d", "pcs": "fe59f97dec46", "darl": "6b5e02ea9849",
        "dn2a": "e6838b943e70", "ucdir": "4ef3eaa49345", "coda": "ed11aaa0b750", "dgdir": "8f129f656d8e",
        "uem": "22ea6f4d10ab"}
