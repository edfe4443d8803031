"""--tensorboard: each run's history (loss terms, method statistics per epoch) and final metrics as TensorBoard
scalars in its run folder, readable by TensorBoard's own reader."""
from __future__ import annotations

import json

import pytest

from benchmark import cli, store
from benchmark.suites import plan

from .conftest import tiny_suite


@pytest.mark.slow
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


def test_a_resumed_or_reevaluated_run_has_one_value_per_step(tmp_path, cache_dir):
    # A run killed after its second epoch whose last checkpoint is then unreadable resumes from the first (previous.pt)
    # and trains epoch 2 again; a done run whose metrics.json is damaged is evaluated again. TensorBoard used to get
    # those steps and the metrics a second time.
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from benchmark.runner import run_one
    suite = tiny_suite("test_tensorboard_resume", methods=["cds"])
    spec = plan(suite, assignments=["cds.epochs=3"])[0]
    run_dir = store.prepare_run_dir(spec, tmp_path, {"cache_dir": str(cache_dir), "device": "cpu",
                                                     "tensorboard": True})
    assert run_one(run_dir / "spec.json", stop_after_epochs=2) == {}
    last = run_dir / "ckpt" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])              # a checkpoint cut short: the run resumes from epoch 1
    run_one(run_dir / "spec.json")
    assert "resumed from" in (run_dir / "log.txt").read_text() and "previous.pt after epoch 1" in \
        (run_dir / "log.txt").read_text()

    def steps(tag):
        events = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
        events.Reload()
        return [event.step for event in events.Scalars(tag)]

    assert steps("train/loss") == [1, 2, 3] and steps("metrics/map_all_coda") == [3]
    (run_dir / "metrics.json").write_text("{")             # damaged: evaluated again from the checkpoint
    run_one(run_dir / "spec.json")
    assert steps("train/loss") == [1, 2, 3] and steps("metrics/map_all_coda") == [3]
