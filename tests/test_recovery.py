"""Unreadable files are named and recovered from: truncated checkpoints, damaged metrics.json and spec.json."""
from __future__ import annotations

import json

import pytest

from benchmark import cli, pipeline, store
from benchmark.collect import tidy_frame
from benchmark.runner import run_one
from benchmark.suites import plan

from .conftest import prepared_run, tiny_suite


@pytest.fixture(scope="module")
def three_epoch_cds(tmp_path_factory, cache_dir):
    """A CDS run of 3 epochs and its uninterrupted metrics (one thread: bitwise reproducible)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    suite = tiny_suite("test_recovery", methods=["cds"])
    spec = plan(suite, assignments=["cds.epochs=3"])[0]
    metrics = run_one(prepared_run(spec, tmp_path_factory.mktemp("uninterrupted"), cache_dir))
    yield spec, metrics
    torch.set_num_threads(threads)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def stopped_after_two_epochs(spec, tmp_path, cache_dir):
    spec_path = prepared_run(spec, tmp_path, cache_dir)
    assert run_one(spec_path, stop_after_epochs=2) == {}
    ckpt = spec_path.parent / "ckpt"
    assert (ckpt / "last.pt").is_file() and (ckpt / "previous.pt").is_file()
    return spec_path


@pytest.mark.slow
def test_a_truncated_checkpoint_is_moved_aside_and_the_run_resumes_from_the_previous_one(three_epoch_cds, tmp_path,
                                                                                          cache_dir, one_thread):
    spec, uninterrupted = three_epoch_cds
    spec_path = stopped_after_two_epochs(spec, tmp_path, cache_dir)
    run_dir = spec_path.parent
    truncate(run_dir / "ckpt" / "last.pt")
    # The census names it before anything runs.
    groups = pipeline.census([spec], tmp_path)
    assert any("truncated?" in line and "last.pt" in line for line in pipeline.census_problems(groups, tmp_path))
    assert run_one(spec_path) == uninterrupted                      # epoch 2 recomputed from previous.pt (epoch 1)
    log_text = (run_dir / "log.txt").read_text()
    assert "ckpt/last.pt is unreadable" in log_text and "moved to last.pt.unreadable-" in log_text
    assert "resumed from" in log_text and "previous.pt after epoch 1" in log_text
    assert [p.name.split(".unreadable-")[0] for p in store.moved_aside(run_dir)] == ["last.pt"]
    assert not (run_dir / "ckpt" / "previous.pt").exists()           # a done run keeps its last checkpoint only
    lines = pipeline.census_problems(pipeline.census([spec], tmp_path), tmp_path)
    assert len(lines) == 1 and "recovered" in lines[0] and "1 unreadable file(s) moved aside" in lines[0]


@pytest.mark.slow
def test_with_no_readable_checkpoint_the_run_starts_again_from_epoch_0(three_epoch_cds, tmp_path, cache_dir,
                                                                       one_thread):
    spec, uninterrupted = three_epoch_cds
    spec_path = stopped_after_two_epochs(spec, tmp_path, cache_dir)
    truncate(spec_path.parent / "ckpt" / "last.pt")
    (spec_path.parent / "ckpt" / "previous.pt").write_bytes(b"")
    assert run_one(spec_path) == uninterrupted
    log_text = (spec_path.parent / "log.txt").read_text()
    assert "previous.pt is unreadable" in log_text and "starts again from epoch 0" in log_text


def test_a_done_run_with_unreadable_metrics_is_named_counted_incomplete_and_evaluated_again(three_epoch_cds,
                                                                                              tmp_path, cache_dir,
                                                                                              one_thread):
    spec, uninterrupted = three_epoch_cds
    spec_path = prepared_run(spec, tmp_path, cache_dir)
    run_one(spec_path)
    run_dir = spec_path.parent
    (run_dir / "metrics.json").write_text('{"metrics": {"map_all": 0.3')   # cut off mid-write by a full disk
    assert store.run_status(run_dir) == "incomplete"
    lines = pipeline.census_problems(pipeline.census([spec], tmp_path), tmp_path)
    assert any("metrics.json" in line and "counted as incomplete" in line for line in lines)
    frame = tidy_frame([spec], tmp_path)                            # a report goes on, the run counted incomplete
    assert set(frame["status"]) == {"incomplete"}
    assert run_one(spec_path) == uninterrupted                      # no epoch trained again: evaluation only
    assert store.run_status(run_dir) == "done"
    assert "metrics.json is unreadable" in (run_dir / "log.txt").read_text()
    assert (run_dir / "log.txt").read_text().count("epoch 3/3 started") == 1


def test_a_damaged_spec_json_is_rewritten_from_the_plan(three_epoch_cds, tmp_path, cache_dir):
    spec, _ = three_epoch_cds
    spec_path = prepared_run(spec, tmp_path, cache_dir)
    spec_path.write_text("{garbage")
    assert store.unreadable_files(spec_path.parent)["spec.json"].startswith("JSONDecodeError")
    assert prepared_run(spec, tmp_path, cache_dir) == spec_path
    assert json.loads(spec_path.read_text()) == json.loads(spec.canonical_json())
    assert [p.name.split(".unreadable-")[0] for p in store.moved_aside(spec_path.parent)] == ["spec.json"]


@pytest.mark.slow
def test_the_command_line_recovers_a_truncated_checkpoint_instead_of_failing_forever(three_epoch_cds, tmp_path,
                                                                                       cache_dir, capsys):
    # The reproduction: a run's ckpt/last.pt truncated to half, then the same command again: it used to exit
    # 1 with "PytorchStreamReader failed reading zip archive", naming no file, and so did --retry-failed.
    spec, _ = three_epoch_cds
    stopped_after_two_epochs(spec, tmp_path, cache_dir)
    truncate(spec.run_dir(tmp_path) / "ckpt" / "last.pt")
    common = ["--suite", "test_recovery", "--output", str(tmp_path), "--cache-dir", str(cache_dir),
              "--set", "cds.epochs=3"]
    assert cli.main(common + ["--dry-run"]) == 0
    assert "not a whole checkpoint: truncated?" in capsys.readouterr().out
    assert cli.main(common) == 0
    err = capsys.readouterr().err                                  # the terminal shows the run's own error line
    assert "ckpt/last.pt is unreadable (RuntimeError: PytorchStreamReader" in err and "moved to last.pt" in err
    assert store.run_status(spec.run_dir(tmp_path)) == "done"
    assert cli.main(common + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 done" in out and "recovered  cds partial photo->sketch seed 2024: 1 unreadable file(s)" in out
