"""Device time: what finished runs cost (--report's cost table), the calibration `perf methods` writes, and the
--dry-run's estimate from it or from the store (benchmark/cost.py)."""
from __future__ import annotations

import json
import re

import pytest

from benchmark import cli, cost, perf, store
from benchmark.suites import plan

from .conftest import tiny_suite


def _finished_run(spec, output, history_seconds, setup=None, evaluation=None, total=None, gpu=None):
    """A done run folder with the given timings (metrics.json, env.json) and no training."""
    run_dir = store.prepare_run_dir(spec, output, {"device": "cpu"})
    record = {"metrics": {"map_all": 0.5}, "history": [{"epoch": i + 1, "loss": 1.0, "seconds": s}
                                                       for i, s in enumerate(history_seconds)],
              "seconds": total if total is not None else sum(history_seconds)}
    if setup is not None:
        record.update(setup_seconds=setup, evaluation_seconds=evaluation)
    store.atomic_write_json(run_dir / "metrics.json", record)
    store.atomic_write_json(run_dir / "env.json", {"device": "cuda" if gpu else "cpu", **({"gpu": gpu} if gpu else {})})
    store.mark_done(run_dir)
    return run_dir


def _spec(method="cds", seed=2024, **hparams):
    suite = tiny_suite("test_cost_suite", methods=["pretrained", "cds", "coda"])
    return plan(suite, methods=[method], seeds=[seed], assignments=[f"{k}={v}" for k, v in hparams.items()])[0]


def test_a_runs_cost_is_its_setup_epochs_and_evaluation(tmp_path):
    # seconds of the last process only (a resumed run) must not hide the epochs of the first: setup + every epoch
    # of the history + evaluation
    done = _finished_run(_spec(), tmp_path, [3.0, 5.0], setup=1.0, evaluation=2.0, total=4.0, gpu="NVIDIA H200")
    assert cost.run_cost(done) == cost.RunCost(11.0, 8.0, 2, 1.0, 2.0, "NVIDIA H200")
    # stored before setup and evaluation were timed apart: the process's seconds outside the epochs count as either
    legacy = _finished_run(_spec(seed=2025), tmp_path, [5.0, 5.0], total=20.0)
    assert cost.run_cost(legacy) == cost.RunCost(20.0, 10.0, 2, 0.0, 10.0, "cpu")
    unfinished = store.prepare_run_dir(_spec(seed=2026), tmp_path, {})
    assert cost.run_cost(unfinished) is None


def test_the_cost_table_sums_device_hours_per_method_and_device(tmp_path):
    specs = [_spec(seed=s) for s in (1, 2, 3)] + [_spec("coda", seed=1)]
    for spec, seconds in zip(specs, (1800.0, 3600.0, 1800.0, 7200.0)):
        _finished_run(spec, tmp_path, [seconds / 2, seconds / 2], setup=0.0, evaluation=0.0,
                      gpu="NVIDIA H200" if spec.seed != 3 else None)
    table = cost.cost_table(cost.cost_frame(specs, tmp_path))
    rows = {(r.method, r.device): r for r in table.itertuples()}
    assert rows[("cds", "NVIDIA H200")].runs == 2 and rows[("cds", "NVIDIA H200")].device_hours == 1.5
    assert rows[("cds", "NVIDIA H200")].minutes_per_run == 45.0 and rows[("cds", "NVIDIA H200")].seconds_per_epoch == 1350
    assert rows[("cds", "cpu")].device_hours == 0.5 and rows[("coda", "NVIDIA H200")].device_hours == 2.0
    assert rows[("total", "NVIDIA H200")].runs == 3 and rows[("total", "NVIDIA H200")].device_hours == 3.5
    assert rows[("total", "cpu")].device_hours == 0.5
    paths = cost.write_cost_table("s", table, tmp_path / "tables", "Device time (s)")
    assert "| cds      | NVIDIA H200 |" in paths["md"].read_text()


def test_the_estimate_from_a_calibration_is_the_runs_images_at_the_measured_rate(tmp_path):
    spec = _spec()
    # the quickstart's partial split: 6 query classes, 12 retrieval classes, 38 images per class on average
    assert spec.num_classes_hint == (6, 12) and cost.estimated_domain_sizes(spec) == (228, 456)
    assert spec.hparams["epochs"] == 10 and spec.hparams["batch_size"] == 32
    calibration = cost.Calibration(device="NVIDIA H200", arch="small_cnn", image_size=32, precision="bf16",
                                   channels_last=True, compile=False, tf32=True, suite="quickstart",
                                   measured="2026-11-30T10:00:00", torch="2.14",
                                   methods={"cds": {"images_per_second": 100.0, "setup_seconds": 2.0,
                                                    "evaluation_seconds_per_image": 0.001}})
    path = cost.write_calibration(tmp_path / "calibration" / "h200.json", calibration)
    read = cost.read_calibration(path)
    assert read.methods == calibration.methods and read.device == "NVIDIA H200"
    # 10 epochs x (456 // 32 = 14 steps) x 32 x 2 images at 100 images/s, + 2 s setup + 684 images x 1 ms
    [estimate] = cost.estimate([spec], tmp_path, read)
    assert estimate.priced == 1 and estimate.seconds == pytest.approx(89.6 + 2.0 + 0.684)
    assert estimate.sources == {"calibration (NVIDIA H200)"}
    # the pretrained row trains nothing: its evaluation at the calibrated embedding rate
    [pretrained] = cost.estimate([_spec("pretrained")], tmp_path, read)
    assert pretrained.seconds == pytest.approx(0.684)
    # another method, or another backbone: not priced by it, and said why
    [coda] = cost.estimate([_spec("coda")], tmp_path, read)
    assert coda.priced == 0 and coda.unpriced_because == "the calibration has no rate of this method"
    text = cost.estimate_text(cost.estimate([spec, _spec("coda")], tmp_path, read), read)
    assert re.search(r"cds +1 +0\.026  calibration \(NVIDIA H200\)", text)
    assert "coda" in text and "not in the total" in text and "GPU-hours for the 1 priced runs" in text
    # nothing priced: no total of 0 hours, but why and what would price it
    text = cost.estimate_text(cost.estimate([_spec("coda")], tmp_path, read), read)
    assert "0.000" not in text and "no run could be priced" in text and "--calibration" in text


def test_the_estimate_falls_back_on_the_stores_finished_runs(tmp_path):
    _finished_run(_spec(seed=1), tmp_path, [3.0, 5.0], setup=1.0, evaluation=2.0, gpu="NVIDIA H200")
    [estimate] = cost.estimate([_spec(seed=7)], tmp_path, None)
    assert estimate.seconds == pytest.approx(4.0 * 10 + 3.0)      # 4 s per epoch x 10 epochs + setup + evaluation
    assert estimate.sources == {"1 finished run(s) on synthetic (NVIDIA H200)"}
    # a method that trains no epoch (the pretrained row) costs its setup and evaluation
    _finished_run(_spec("pretrained", seed=1), tmp_path, [], setup=0.5, evaluation=1.5)
    [pretrained] = cost.estimate([_spec("pretrained", seed=7)], tmp_path, None)
    assert pretrained.priced == 1 and pretrained.seconds == pytest.approx(2.0)


def test_a_broken_calibration_file_stops_the_dry_run_with_its_path(tmp_path, capsys):
    tiny_suite("test_cost_suite", methods=["pretrained", "cds", "coda"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["--suite", "test_cost_suite", "--output", str(tmp_path), "--dry-run", "--calibration",
                     str(bad)]) == 2
    assert f"calibration file {bad}: cannot be read" in capsys.readouterr().err
    bad.write_text(json.dumps({"format": 1, "device": "cpu", "arch": "small_cnn", "image_size": 32,
                               "precision": "fp32", "channels_last": False, "compile": False, "tf32": True,
                               "suite": "quickstart", "measured": "", "torch": "", "methods": {"cds": {}}}))
    assert cli.main(["--suite", "test_cost_suite", "--output", str(tmp_path), "--dry-run", "--calibration",
                     str(bad)]) == 2
    assert "method 'cds' has no positive images_per_second" in capsys.readouterr().err


@pytest.mark.slow
def test_perf_methods_times_each_method_and_writes_the_calibration_the_dry_run_uses(tmp_path, capsys, cache_dir):
    # `python -m benchmark.perf methods` at the quickstart's shapes (32 px, the partial split's domains of 228 and
    # 456 images): one row per method with its own batch and steps, images/s, the ratio to a plain two-view step;
    # then a calibration file that prices the quickstart's runs of those methods
    calibration_file = tmp_path / "calibration" / "cpu.json"
    assert perf.main(["methods", "--methods", "cds", "coda", "--plain-steps", "1", "--device", "cpu",
                      "--calibration", str(calibration_file)]) == 0
    out = capsys.readouterr().out
    assert "at the shapes of suite quickstart (synthetic partial photo->sketch, domains of 228/456 images" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("  cds", "  coda"))}
    assert rows["cds"][1:3] == ["32", "14"] and rows["coda"][1:3] == ["16", "28"]     # own batch, 456 // batch
    assert all(row[5].startswith("x") and float(row[5][1:]) > 0 for row in rows.values())
    calibration = cost.read_calibration(calibration_file)
    assert set(calibration.methods) == {"cds", "coda"} and calibration.device == "cpu"
    assert (calibration.arch, calibration.image_size) == ("small_cnn", 32)
    assert calibration.methods["cds"]["images_per_second"] == pytest.approx(float(rows["cds"][3]), rel=1e-3)

    tiny_suite("test_cost_suite", methods=["pretrained", "cds", "coda"])
    assert cli.main(["--suite", "test_cost_suite", "--output", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"calibration {calibration_file}: cpu, small_cnn at 32 px, fp32" in out        # the newest in <output>
    assert re.search(r"cds +1 +[0-9.]+  calibration \(cpu\)", out) and "CPU-hours" in out


def _vit_spec(method="cds", seed=2024):
    from benchmark.backbone_specs import TOY_VIT
    suite = tiny_suite("test_cost_vit_suite", methods=["pretrained", "cds"],
                       backbone={**TOY_VIT, "init": {"kind": "random"}})
    return plan(suite, methods=[method], seeds=[seed])[0]


def test_a_vit_s_runs_are_priced_by_runs_and_calibrations_of_the_same_backbone_only(tmp_path):
    _finished_run(_spec(seed=1), tmp_path, [3.0, 5.0], setup=1.0, evaluation=2.0)              # a CNN's CDS run
    [vit] = cost.estimate([_vit_spec()], tmp_path, None)
    assert vit.priced == 0
    _finished_run(_vit_spec(seed=1), tmp_path, [30.0], setup=1.0, evaluation=1.0)
    [vit] = cost.estimate([_vit_spec(seed=7)], tmp_path, None)
    assert vit.priced == 1 and vit.seconds == pytest.approx(30.0 * 10 + 2.0)      # its 10 epochs at 30 s, + 2 s
    calibration = cost.Calibration(device="cpu", arch="small_cnn", image_size=32, precision="fp32",
                                   channels_last=False, compile=False, tf32=True, suite="quickstart", measured="",
                                   torch="", methods={"cds": {"images_per_second": 100.0}})
    assert cost.calibration_fits(_spec(), calibration) and not cost.calibration_fits(_vit_spec(), calibration)
    assert cost.calibration_fits(_vit_spec(), cost.Calibration(**{**calibration.__dict__, "arch": "vit_toy"}))


def test_perf_times_a_vit_without_channels_last_and_calibrates_its_methods(tmp_path, capsys):
    assert perf.main(["train", "--arch", "vit_toy", "--size", "32", "--batch", "2", "--steps", "1", "--warmup", "1",
                      "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("  ")[1] for line in out.splitlines() if "images/s" in line]
    assert rows == ["vit_toy at 32 px, fp32", "vit_toy at 32 px, bf16"]            # no channels_last rows
    assert "0.126 M weights; per image at 32 px: 0.00391 GFLOP forward" in out      # the footprint test's count
    calibration_file = tmp_path / "cpu.json"
    assert perf.main(["methods", "--arch", "vit_toy", "--methods", "cds", "--plain-steps", "1", "--no-syncs",
                      "--device", "cpu", "--calibration", str(calibration_file)]) == 0
    assert "vit_toy at 32 px, fp32" in capsys.readouterr().out
    calibration = cost.read_calibration(calibration_file)
    assert (calibration.arch, calibration.image_size, calibration.channels_last) == ("vit_toy", 32, False)
    [estimate] = cost.estimate([_vit_spec()], tmp_path, calibration)
    assert estimate.priced == 1 and estimate.sources == {"calibration (cpu)"}
    assert perf.main(["backbones", "--archs", "small_cnn", "vit_toy", "--size", "32", "--batch", "2", "--steps", "1",
                      "--warmup", "1", "--rounds", "1", "--device", "cpu"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(("  small", "  vit"))]
    assert [row[0] for row in rows] == ["small_cnn", "vit_toy"] and rows[0][5] == "x1.00"
    assert rows[1][1:3] == ["0.1M", "0.00391"]
    # a ViT of patch 14 cannot take 32-px images: said, exit 2
    assert perf.main(["train", "--arch", "vit_base_patch14_dinov2", "--size", "32", "--device", "cpu"]) == 2
    assert "not a multiple of vit_base_patch14_dinov2's patch size 14 px" in capsys.readouterr().err


def test_the_footprint_of_a_backbone_counts_its_flops_and_saved_activations():
    # ResNet-50 at 224 px: 4.09 G multiply-adds (torchvision's model card: 4.09 GFLOPS, counted as MACs), i.e. 8.18
    # GFLOP at 2 per multiply-add; weights: torchvision's 25,557,032 without its fc (2048 x 1000 + 1000), with the
    # MLP head 2048 -> 2048 -> 128
    weights, gflops, _ = perf.backbone_footprint("resnet50", 224)
    assert gflops == pytest.approx(8.18, abs=0.01)
    assert weights == 25_557_032 - 2_049_000 + (2048 * 2048 + 2048) + (2048 * 128 + 128)
    # the toy ViT (2 blocks of width 64, 2 heads of 32, 17 tokens) by hand, in multiply-adds: per block the qkv,
    # projection and MLP matmuls 17 x (64 x 192 + 64 x 64 + 2 x 64 x 256) = 835,584 and the attention
    # 2 (q k^T, then x v) x 2 heads x 17 x 17 x 32 = 36,992; the patch embedding 16 x 64 x (3 x 8 x 8) = 196,608;
    # the MLP head 64 x 64 + 64 x 128 = 12,288; in all 2 x 872,576 + 196,608 + 12,288 = 1,954,048, x 2 FLOP
    _, toy, saved = perf.backbone_footprint("vit_toy", 32)
    assert toy * 1e9 == pytest.approx(2 * 1_954_048, rel=1e-9)
    assert saved > 0
