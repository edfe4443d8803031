"""A self-supervised init that did not learn stops the suite with its numbers before any method trains (issue 16,
item 4); a linear warm-up rescues the same learning rate.

On the synthetic images, SimCLR at lr 0.5 without warm-up collapses within two epochs (loss log(2B - 1) = 5.541,
every feature the same direction); with a 2-epoch warm-up of 3 epochs the same lr learns. Measured on this CPU.
"""
from __future__ import annotations

import pytest

import copy

from benchmark import cli
from benchmark.backbone_specs import QUICKSTART_BACKBONE
from benchmark.initialisation import _init_key

from .conftest import tiny_suite


def _backbone(**init) -> dict:
    backbone = copy.deepcopy(QUICKSTART_BACKBONE)
    backbone["init"].update(init)
    return backbone


def _args(suite, output, cache_dir) -> list[str]:
    return ["--suite", suite.name, "--output", str(output), "--cache-dir", str(cache_dir), "--device", "cpu",
            "--methods", "pretrained"]


def test_a_collapsed_simclr_init_stops_the_suite_with_its_numbers(tmp_path, cache_dir, capsys, one_thread):
    suite = tiny_suite("test_simclr_collapse", backbone=_backbone(lr=0.5, epochs=2))
    assert cli.main(_args(suite, tmp_path / "out", cache_dir)) == 2
    err = capsys.readouterr().err
    assert "the SimCLR initialisation on synthetic did not learn" in err
    assert "log(2B - 1) = 5.541 (B = 128)" in err and "features have collapsed (effective rank 1.0" in err
    assert "warmup_epochs=5" in err and "nothing was trained" in err
    assert not (tmp_path / "out" / "runs").exists()                        # no run folder
    assert not (cache_dir / "backbones" / f"small_cnn-simclr-{_init_key(suite.backbone)}.pt").exists()  # not cached


@pytest.mark.slow
def test_a_warm_up_rescues_the_same_learning_rate(tmp_path, cache_dir, capsys, one_thread):
    suite = tiny_suite("test_simclr_warmup", backbone=_backbone(lr=0.5, epochs=3, warmup_epochs=2))
    assert cli.main(_args(suite, tmp_path / "out", cache_dir)) == 0
    assert "trained 1 run(s)" in capsys.readouterr().out
