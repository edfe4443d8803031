"""The chaos sweep: a suite submitted as SLURM job arrays while a driver disturbs a third of its tasks at random
moments — SIGKILL of a task, scancel, USR2 (a preemption) — including during the shared backbone's pretraining and
during a checkpoint write; the suite is submitted again until the census says every run is done.

It passes when every run is DONE exactly once (one folder each, none lost), its metrics equal those of an
undisturbed local run of the same suite on one thread (within 1e-6; SLURM tasks run on one CPU, one thread), no
lock is left held, and it prints how many epochs were recomputed. Needs a real cluster (`.ci/run` starts one).
"""
from __future__ import annotations

import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import filelock
import pytest
import torch

from benchmark import cli, slurm, store
from benchmark.suites import plan

from .conftest import tiny_suite
from .test_slurm import cluster  # noqa: F401  (the fixture: a reachable cluster, or skip / fail in CI)

SUITE = "test_chaos"
ASSIGNMENTS = ["cds.epochs=6", "ucdir.epochs=6"]
BUDGET_S = 480


def _squeue() -> dict[str, tuple[str, str]]:
    return slurm.queue_details() or {}


def _kill(job: str, how: str) -> bool:
    """Disturb the job; False when the cluster would not take the signal now (a job between states: scancel then
    retries for ever, so it gets a few seconds)."""
    command = {"SIGKILL": ["scancel", "--signal=KILL", "--full", job],   # every process at once: an OOM kill, a
               "scancel": ["scancel", job],                            # node that dies; SIGTERM then SIGKILL;
               "USR2": ["scancel", "--signal=USR2", job]}[how]         # the time limit near, or a preemption
    try:
        return subprocess.run(command, capture_output=True, timeout=8).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _epochs_started(run_dir: Path) -> int:
    """Epochs the run's attempts started (log.txt keeps every attempt's lines): one interrupted midway counts."""
    log = run_dir / "log.txt"
    return len(re.findall(r" epoch \d+/\d+ started", log.read_text())) if log.is_file() else 0


@pytest.mark.slow
def test_chaos_sweep_every_run_done_once_with_undisturbed_metrics(cluster, tmp_path, cache_dir,  # noqa: F811
                                                                   monkeypatch, capsys):
    suite = tiny_suite(SUITE, methods=["cds", "ucdir"], pairs=(("photo", "sketch"), ("clipart", "painting"),
                                                              ("sketch", "clipart")), seeds=(2024, 2025))
    specs = plan(suite, assignments=ASSIGNMENTS)
    assert len(specs) == 12
    cache = tmp_path / "cache"                          # cold: the tasks pretrain the backbone themselves
    shutil.copytree(cache_dir / "synthetic", cache / "synthetic")
    output = tmp_path / "slurm"
    args = ["--suite", SUITE, "--output", str(output), "--cache-dir", str(cache), "--device", "cpu",
            "--launcher", "slurm", "--cpus", "1", "--time", "10", "--array-parallelism", "2", "--max-array-size", "6"]
    for assignment in ASSIGNMENTS:
        args += ["--set", assignment]
    monkeypatch.setenv(store.CHAOS_PAUSE_VARIABLE, "0.4")      # the tasks inherit it: checkpoint writes last longer
    run_dirs = [spec.run_dir(output) for spec in specs]
    rng = random.Random(7)
    to_disturb = len(specs) // 3
    disturbed: list[tuple[str, str, str]] = []                # (job, how, when)
    actions = ["SIGKILL", "scancel", "USR2"]
    backbones = cache / "backbones"
    started = time.monotonic()
    submissions = 0
    released: set[str] = set()
    next_disturbance = time.monotonic() + rng.uniform(1, 4)
    while not all(store.run_status(d) == "done" for d in run_dirs):
        assert time.monotonic() - started < BUDGET_S, f"not done after {BUDGET_S} s; disturbed {disturbed}"
        queue = _squeue()
        states = {job: state for job, (state, _) in queue.items()}
        ours = {d: slurm.recorded_job(d) for d in run_dirs}
        active = {job for job in ours.values() if job and slurm.active_state(job, states)}
        if not active:                                        # nothing queued or running: submit what is not done
            assert cli.main(args) in (0, 1)
            capsys.readouterr()
            submissions += 1
            continue
        for job, (state, reason) in queue.items():            # a requeued job is held 121 s (BeginTime): release it
            if job in active and state == "PENDING" and reason == "BeginTime" and job not in released:
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], timeout=60)
                released.add(job)
        hit = {job for job, _, _ in disturbed}
        running = [d for d in run_dirs if ours[d] and states.get(ours[d]) == "RUNNING" and ours[d] not in hit]
        if len(disturbed) < to_disturb and running:
            pretraining = backbones.is_dir() and any(backbones.glob("*.lock.holder")) and \
                not any(backbones.glob("*.pt"))
            writing = [d for d in running if (d / "ckpt" / ".next.pt").exists()]
            when = None
            if pretraining and not any(w == "pretraining" for _, _, w in disturbed):
                when, victim = "pretraining", running[0]
            elif writing and not any(w == "checkpoint write" for _, _, w in disturbed):
                when, victim = "checkpoint write", writing[0]
            elif time.monotonic() >= next_disturbance and _epochs_started(running[0]) > 0:
                when, victim = "training", rng.choice(running)
                next_disturbance = time.monotonic() + rng.uniform(2, 8)
            if when:
                how = "SIGKILL" if when != "training" else actions[len(disturbed) % len(actions)]
                if _kill(ours[victim], how):
                    disturbed.append((ours[victim], how, when))
        time.sleep(0.3)
    elapsed = time.monotonic() - started

    # Every run DONE, exactly once: one folder per planned run, none extra.
    assert sorted(p.parent for p in (output / "runs").rglob("spec.json")) == sorted(run_dirs)
    assert len(disturbed) >= to_disturb and {w for _, _, w in disturbed} >= {"pretraining", "checkpoint write"}
    # No lock held: every lock file of the caches can be taken at once.
    for lock_file in cache.rglob("*.lock"):
        lock = filelock.FileLock(lock_file)
        lock.acquire(timeout=0)
        lock.release()
    # The same numbers as an undisturbed local run on one thread (its own cold cache: the backbone too).
    local = tmp_path / "local"
    shutil.copytree(cache_dir / "synthetic", local / "cache" / "synthetic")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local_args = ["--suite", SUITE, "--output", str(local), "--cache-dir", str(local / "cache"), "--device", "cpu"]
        for assignment in ASSIGNMENTS:
            local_args += ["--set", assignment]
        monkeypatch.delenv(store.CHAOS_PAUSE_VARIABLE)
        assert cli.main(local_args) == 0
    finally:
        torch.set_num_threads(threads)
    for spec in specs:
        disturbed_metrics, undisturbed = (store.read_metrics(spec.run_dir(root)) for root in (output, local))
        assert disturbed_metrics.keys() == undisturbed.keys()
        for key, value in undisturbed.items():
            assert abs(disturbed_metrics[key] - value) <= 1e-6, (spec.method, spec.query_domain, spec.seed, key)
    recomputed = sum(_epochs_started(d) for d in run_dirs) - 6 * len(run_dirs)
    print(f"\nchaos sweep: {len(specs)} runs, {len(disturbed)} tasks disturbed "
          f"({', '.join(f'{how} during {when}' for _, how, when in disturbed)}), {submissions} submission(s), "
          f"{recomputed} epoch(s) recomputed, {elapsed:.0f} s")
    with capsys.disabled():
        print(f"chaos sweep: {len(specs)} runs, {len(disturbed)} disturbed, {submissions} submissions, "
              f"{recomputed} epochs recomputed, {elapsed:.0f} s")
