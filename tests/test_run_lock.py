"""One writer per run (DESIGN §3.4): a run's lock, held from before its checkpoint is read until DONE, released by the
operating system when its holder dies; a second launch leaves the run to the holder and says who it is.

The launches here are real processes of `run_benchmark.py` on one output folder, on a suite file made in the test."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark import cli, store
from benchmark.runner import run_one
from benchmark.suites import load_suite_file, plan

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 40


def lock_suite(tmp_path: Path, name: str) -> Path:
    """A suite file of one CDS run on the synthetic data (Ph->Sk, seed 2024, EPOCHS epochs: about 15 s on one
    thread) from a one-epoch SimCLR init."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\ndataset = "synthetic"\nsettings = ["partial"]\npairs = [["photo", "sketch"]]\n'
                    f'methods = ["cds"]\nseeds = [2024]\nbackbone = "small_cnn"\ninit = "simclr"\n'
                    f'[simclr]\nepochs = 1\n[hparams.cds]\nepochs = {EPOCHS}\n')
    return path


def launch(suite: Path, output: Path, cache: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "run_benchmark.py"), "--suite", str(suite), "--output",
                             str(output), "--cache-dir", str(cache), "--device", "cpu", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


def the_run_dir(suite: Path, output: Path) -> Path:
    return plan(load_suite_file(suite))[0].run_dir(output)


def wait_for(condition, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def training_starts(run_dir: Path) -> int:
    """How many times a process started training the run (its log's start lines)."""
    log = (run_dir / "log.txt").read_text() if (run_dir / "log.txt").is_file() else ""
    return sum(1 for line in log.splitlines() if " run " in line and " cds partial photo->sketch seed " in line)


@pytest.fixture
def synthetic_cache(tmp_path, cache_dir) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir / "synthetic", cache / "synthetic")
    return cache


@pytest.mark.slow
def test_two_launches_at_once_train_the_run_once(tmp_path, synthetic_cache, clean_registries):
    # The fault: two processes given the same suite and --output at the same moment both trained the run,
    # interleaving ckpt/, log.txt and metrics.json. Now one trains it; the other leaves it and says who holds it.
    suite = lock_suite(tmp_path, "lock_twice")
    output = tmp_path / "out"
    first, second = (launch(suite, output, synthetic_cache) for _ in range(2))
    outputs = [process.communicate(timeout=600) for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], [err[-3000:] for _, err in outputs]
    run_dir = the_run_dir(suite, output)
    assert store.run_status(run_dir) == "done"
    assert training_starts(run_dir) == 1
    assert len(json.loads((run_dir / "env.json").read_text())["starts"]) == 1
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [entry["epoch"] for entry in history] == list(range(1, EPOCHS + 1))
    # the one that did not train it named the one that did (its census, or its attempt at the lock)
    said = "\n".join(out + err for out, err in outputs)
    pids = {first.pid, second.pid}
    held = [line for line in said.splitlines() if "trained by host" in line]
    assert held and any(f"pid {pid}" in line for line in held for pid in pids), said[-3000:]


@pytest.mark.slow
def test_a_second_launch_names_the_holder_and_a_killed_holder_frees_the_run(tmp_path, synthetic_cache, capsys,
                                                                             clean_registries):
    suite = lock_suite(tmp_path, "lock_held")
    output = tmp_path / "out"
    holder = launch(suite, output, synthetic_cache)
    run_dir = the_run_dir(suite, output)
    try:
        wait_for(lambda: store.run_holder(run_dir) is not None and (run_dir / "ckpt" / "last.pt").is_file(),
                 "the first launch to hold the run and checkpoint an epoch")
        record = store.run_holder(run_dir)
        assert record["pid"] == holder.pid and record["host"] and record["since"]
        args = ["--suite", str(suite), "--output", str(output), "--cache-dir", str(synthetic_cache),
                "--device", "cpu"]
        # --dry-run and a real launch: the run is running, trained by the holder; nothing to run here
        assert cli.main(args + ["--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "1 running" in out and "-> 0 to run" in out and f"pid {holder.pid}" in out
        assert cli.main(args) == 0
        out = capsys.readouterr().out
        assert f"trained by host {record['host']} pid {holder.pid}" in out and "left to it" in out
        # a process that got past the census (a race) cannot take the run either, and writes nothing
        log_before = (run_dir / "log.txt").read_text()
        with pytest.raises(store.RunBusy, match=f"pid {holder.pid}"):
            run_one(run_dir / "spec.json")
        assert store.run_status(run_dir) == "incomplete" and not (run_dir / "FAILED").exists()
        assert (run_dir / "log.txt").read_text().startswith(log_before)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)          # the holder dies without a word: SIGKILL
        holder.communicate(timeout=60)
    # the operating system released its lock: the next launch resumes the run and finishes it
    assert store.run_holder(run_dir) is None
    assert cli.main(["--suite", str(suite), "--output", str(output), "--cache-dir", str(synthetic_cache),
                     "--device", "cpu"]) == 0
    assert "trained 1 run(s)" in capsys.readouterr().out
    assert store.run_status(run_dir) == "done" and "resumed from" in (run_dir / "log.txt").read_text()
    assert training_starts(run_dir) == 2


def test_holder_records_say_who_and_since_when(tmp_path):
    from datasets.locks import describe_holder, held_by, read_holder, try_lock
    lock_file = tmp_path / "x.lock"
    assert held_by(lock_file) is None                  # no file: nobody
    lock = try_lock(lock_file, "remedy")
    record = read_holder(lock_file)
    assert record["pid"] == os.getpid() and record["job"] is None
    # another process sees it held, with this record; this process's second try does not get it either
    probe = subprocess.run([sys.executable, "-c", "import json, sys; sys.path.insert(0, sys.argv[2]); "
                            "from datasets.locks import held_by; print(json.dumps(held_by(sys.argv[1])))",
                            str(lock_file), str(REPO)], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(probe.stdout)["pid"] == os.getpid()
    assert try_lock(lock_file, "remedy") is None
    text = describe_holder(record)
    assert text.startswith(f"host {record['host']} pid {os.getpid()} since ") and text.endswith(" s ago)")
    assert describe_holder({**record, "job": "81_3"}).startswith(f"host {record['host']} pid {os.getpid()} "
                                                                 f"(SLURM job 81_3) since")
    lock.release()
    assert held_by(lock_file) is None
