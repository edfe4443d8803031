"""--tensorboard: each run's history (loss terms, method statistics per epoch) and final metrics as TensorBoard
scalars in its run folder, readable by TensorBoard's own reader."""
from __future__ import annotations

import json

import pytest

from benchmark import cli, store
from benchmark.suites import plan

from .conftest import tiny_suite


def test_runs_write_their_curves_and_metrics_for_tensorboard(tmp_path, cache_dir, capsys):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    suite = tiny_suite("test_tensorboard", methods=["ucdir"])
    args = ["--suite", suite.name, "--output", str(tmp_path), "--cache-dir", str(cache_dir), "--device", "cpu",
            "--set", "ucdir.epochs=3", "--tensorboard"]
    assert cli.main(args) == 0
    run_dir = plan(suite, assignments=["ucdir.epochs=3"])[0].run_dir(tmp_path)
    assert store.read_launch(run_dir).tensorboard
    events = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert {f"train/{k}" for k in history[-1] if k != "epoch"} <= scalars      # every loss term and statistic
    assert "train/clusters_query" in scalars and "metrics/map_all_coda" in scalars
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([h["loss"] for h in history], rel=1e-6)
    final = events.Scalars("metrics/map_all_coda")[-1]
    assert final.step == 3 and final.value == pytest.approx(store.read_metrics(run_dir)["map_all_coda"], rel=1e-6)
