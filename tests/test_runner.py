"""The runner: resume equals an uninterrupted run, a non-finite loss fails only its run, no labels reach a method."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from benchmark import store
from benchmark.runner import run_one
from benchmark.suites import plan
from datasets.base import UnlabeledDomain
from methods import REGISTRY, register
from methods.base import BaseHparams, Batch, Method

from .conftest import tiny_suite


def _prepare(spec, output, cache_dir):
    run_dir = store.prepare_run_dir(spec, output, {"cache_dir": str(cache_dir), "device": "cpu"})
    return run_dir / "spec.json"


@pytest.mark.slow
def test_resume_after_epoch_k_matches_an_uninterrupted_run(tmp_path, cache_dir, one_thread):
    suite = tiny_suite("test_resume", methods=["cds"])
    spec = plan(suite, assignments=["cds.epochs=3", "cds.batch_size=64"])[0]
    uninterrupted = run_one(_prepare(spec, tmp_path / "a", cache_dir))

    spec_path = _prepare(spec, tmp_path / "b", cache_dir)
    assert run_one(spec_path, stop_after_epochs=1) == {}
    assert store.run_status(spec_path.parent) == "incomplete"
    assert torch.load(spec_path.parent / "ckpt" / "last.pt", weights_only=False)["epoch"] == 1
    resumed = run_one(spec_path)
    assert store.run_status(spec_path.parent) == "done"
    assert resumed == uninterrupted
    history = json.loads((spec_path.parent / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert "resumed from" in (spec_path.parent / "log.txt").read_text()


@pytest.mark.slow
def test_bf16_autocast_and_channels_last_train_and_are_recorded(tmp_path, cache_dir):
    # The launch options of a GPU run work on the CPU too (CPU autocast knows bfloat16); the run stays finite and
    # its launch.json says how it ran. Its numbers are not compared with fp32's: bf16 moves them.
    suite = tiny_suite("test_bf16", methods=["cds"])
    spec = plan(suite, assignments=["cds.epochs=1"])[0]
    run_dir = store.prepare_run_dir(spec, tmp_path, {"cache_dir": str(cache_dir), "device": "cpu",
                                                     "precision": "bf16", "channels_last": True})
    metrics = run_one(run_dir / "spec.json")
    assert store.run_status(run_dir) == "done" and 0 < metrics["map_all"] <= 1
    launch = json.loads((run_dir / "launch.json").read_text())
    assert launch["precision"] == "bf16" and launch["channels_last"] is True


def test_an_unknown_precision_fails_the_run_with_its_name(tmp_path, cache_dir):
    suite = tiny_suite("test_bf16", methods=["cds"])
    spec = plan(suite, assignments=["cds.epochs=1"])[0]
    run_dir = store.prepare_run_dir(spec, tmp_path, {"cache_dir": str(cache_dir), "device": "cpu",
                                                     "precision": "fp8"})
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        run_one(run_dir / "spec.json")
    assert store.run_status(run_dir) == "failed"


def test_a_done_run_is_not_trained_again(tmp_path, cache_dir):
    suite = tiny_suite("test_done", methods=["pretrained"])
    spec_path = _prepare(plan(suite)[0], tmp_path, cache_dir)
    first = run_one(spec_path)
    (spec_path.parent / "log.txt").write_text("")
    assert run_one(spec_path) == first
    assert (spec_path.parent / "log.txt").read_text() == ""     # nothing ran


@dataclasses.dataclass
class ExplodingHparams(BaseHparams):
    epochs: int = 2
    batch_size: int = 32


class Exploding(Method):
    """Test method: its loss becomes NaN in the second epoch."""
    Hparams = ExplodingHparams

    def configure_optimizers(self):
        return torch.optim.SGD(self.backbone.parameters(), lr=0.0)

    def training_step(self, batch_a, batch_b, step):
        loss = self.backbone(batch_a.images).sum() * 0
        if step >= self.steps_seen_first_epoch:
            loss = loss + float("nan")
        return {"loss": loss}

    def on_fit_start(self, ctx):
        self.steps_seen_first_epoch = ctx.steps_per_epoch


class LabelSpy(Method):
    """Test method: records everything it is handed."""
    Hparams = ExplodingHparams
    seen: list = []

    def configure_optimizers(self):
        return torch.optim.SGD(self.backbone.parameters(), lr=0.0)

    def on_fit_start(self, ctx):
        LabelSpy.seen.append(ctx)

    def training_step(self, batch_a, batch_b, step):
        LabelSpy.seen.extend([batch_a, batch_b])
        return {"loss": self.backbone(batch_a.images).sum() * 0}


@pytest.fixture
def test_methods():
    register("test_exploding")(Exploding)
    register("test_label_spy")(LabelSpy)
    yield
    for name in ("test_exploding", "test_label_spy"):
        REGISTRY.pop(name, None)


@pytest.mark.slow
def test_non_finite_loss_fails_the_run_with_its_reason(tmp_path, cache_dir, test_methods):
    suite = tiny_suite("test_nan", methods=["test_exploding"])
    spec_path = _prepare(plan(suite, methods=["test_exploding"])[0], tmp_path, cache_dir)
    with pytest.raises(RuntimeError, match="non-finite loss at epoch 2"):
        run_one(spec_path)
    assert store.run_status(spec_path.parent) == "failed"
    assert "non-finite loss at epoch 2: loss=nan" in store.failure_reason(spec_path.parent)
    assert not (spec_path.parent / "metrics.json").exists()


def test_methods_receive_no_labels(tmp_path, cache_dir, test_methods):
    LabelSpy.seen.clear()
    suite = tiny_suite("test_spy", methods=["test_label_spy"], settings=("open",))
    run_one(_prepare(plan(suite, methods=["test_label_spy"])[0], tmp_path, cache_dir))
    ctx, batches = LabelSpy.seen[0], LabelSpy.seen[1:]
    assert batches and all(isinstance(b, Batch) for b in batches)
    assert {f.name for f in dataclasses.fields(Batch)} == {"images", "index", "domain_id"}
    assert all(isinstance(d, UnlabeledDomain) for d in ctx.domains)
    for domain in ctx.domains:
        assert not any("label" in name for name in dir(domain))
    context_fields = {f.name for f in dataclasses.fields(ctx)}
    assert not any("label" in name or "class" in name.replace("num_classes_hint", "") for name in context_fields)
    # The only class information is the declared hint: the class counts of the split (open-set: 12 and 6).
    assert ctx.num_classes_hint == (12, 6)


@pytest.mark.slow
def test_open_set_runs_also_store_the_baseline_detector(tmp_path, cache_dir, test_methods):
    # A method without its own detector is scored by the App. B.2 detector once; the side-by-side columns repeat it.
    suite = tiny_suite("test_spy", methods=["test_label_spy"], settings=("open",))
    metrics = run_one(_prepare(plan(suite, methods=["test_label_spy"])[0], tmp_path, cache_dir))
    for name in ("open_set_acc", "detection_acc", "shared_false_null_rate"):
        assert metrics[f"default_detector_{name}"] == metrics[name]
