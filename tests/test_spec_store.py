from __future__ import annotations

import dataclasses
import json

import pytest

from benchmark import store
from benchmark.spec import RunSpec, load_spec
from benchmark.suites import get_suite, plan


def _spec(**changes) -> RunSpec:
    base = RunSpec(dataset="synthetic", setting="partial", query_domain="photo", retrieval_domain="sketch",
                   query_classes=("a", "b"), retrieval_classes=("a", "b", "c", "d"), method="cds",
                   hparams={"lr": 0.003, "epochs": 7}, seed=2024, split_seed=2024,
                   backbone={"arch": "small_cnn", "init": {"kind": "random"}})
    return dataclasses.replace(base, **changes)


def test_hash_is_stable_and_ignores_paths(tmp_path):
    spec = _spec()
    assert spec.run_id == _spec().run_id
    # Key order of the hyper-parameter dict does not matter (canonical JSON sorts keys).
    assert _spec(hparams={"epochs": 7, "lr": 0.003}).run_id == spec.run_id
    # Moving the output folder moves the run folder but keeps the hash in its name.
    first, second = spec.run_dir(tmp_path / "one"), spec.run_dir(tmp_path / "two")
    assert first != second and first.name == second.name == f"seed2024-{spec.run_id}"
    # Data location, device and launcher live in launch.json, not in the spec.
    run_dir = store.prepare_run_dir(spec, tmp_path, {"data_root": "/data/a", "device": "cpu"})
    store.prepare_run_dir(spec, tmp_path, {"data_root": "/elsewhere", "device": "cuda"})
    assert load_spec(run_dir / "spec.json").run_id == spec.run_id


@pytest.mark.parametrize("change", [{"hparams": {"lr": 0.004, "epochs": 7}}, {"seed": 2025},
                                    {"query_classes": ("a", "c")}, {"method": "pcs"}, {"ks": (1, 5)},
                                    {"backbone": {"arch": "small_cnn", "init": {"kind": "simclr"}}}])
def test_what_defines_the_experiment_changes_the_hash(change):
    assert _spec(**change).run_id != _spec().run_id


def test_spec_round_trips_through_json(tmp_path):
    spec = _spec()
    path = tmp_path / "spec.json"
    path.write_text(spec.canonical_json())
    assert load_spec(path) == spec


def test_plan_resolves_hyper_parameters_into_the_spec():
    specs = plan(get_suite("quickstart"), methods=["cds"], seeds=[2024], pairs=["Ph-Sk"],
                 assignments=["cds.temperature=0.05"])
    assert len(specs) == 1
    assert specs[0].hparams["temperature"] == 0.05 and specs[0].hparams["lr"] == 0.003
    baseline = plan(get_suite("quickstart"), methods=["cds"], seeds=[2024], pairs=["Ph-Sk"])[0]
    assert baseline.run_id != specs[0].run_id
    assert len(specs[0].query_classes) == 6 and len(specs[0].retrieval_classes) == 12


def test_status_follows_the_files(tmp_path):
    spec = _spec()
    run_dir = spec.run_dir(tmp_path)
    assert store.run_status(run_dir) == "missing"
    store.prepare_run_dir(spec, tmp_path, {})
    assert store.run_status(run_dir) == "incomplete"
    store.mark_failed(run_dir, "non-finite loss at epoch 3")
    assert store.run_status(run_dir) == "failed" and "epoch 3" in store.failure_reason(run_dir)
    store.clear_failure(run_dir)
    store.atomic_write_json(run_dir / "metrics.json", {"metrics": {"map_all": 0.5}})
    store.mark_done(run_dir)
    assert store.run_status(run_dir) == "done" and store.read_metrics(run_dir) == {"map_all": 0.5}


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    store.atomic_write_json(tmp_path / "x.json", {"a": 1})
    store.atomic_write_json(tmp_path / "x.json", {"a": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    store.atomic_write_json(tmp_path / "x.json", {"a": 1})
    with pytest.raises(TypeError):
        store.atomic_write_json(tmp_path / "x.json", {"a": object()})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
