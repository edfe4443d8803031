"""Shared caches under locks the operating system releases: built once by many processes, never stale, never half
read (datasets/cache.py)."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import filelock
import pytest

from datasets.cache import build_once, exclusive, lock_path

REPO = Path(__file__).resolve().parent.parent

# One process of the "array landing on a cold cache": the synthetic data, its decoded domains and the quickstart's
# backbone (a one-epoch SimCLR), each logged when built; prints a digest of what it got.
WORKER = textwrap.dedent("""
    import hashlib, json, logging, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    sys.path.insert(0, {repo!r})
    from benchmark.initialisation import cached_simclr_state
    from tests.conftest import TINY_BACKBONE
    from datasets.registry import get_dataset, load_domain
    cache = Path(sys.argv[1])
    state = cached_simclr_state(TINY_BACKBONE, cache, None, torch.device("cpu"))
    images = load_domain(get_dataset("synthetic"), "photo", None, cache).images
    digest = hashlib.sha1()
    for key in sorted(state):
        digest.update(state[key].numpy().tobytes())
    digest.update(images.numpy().tobytes())
    print(json.dumps({{"digest": digest.hexdigest()}}))
""").format(repo=str(REPO))


def start_worker(cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(cache)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)


@pytest.mark.slow
def test_six_processes_on_a_cold_cache_build_each_entry_once_and_read_the_same(tmp_path):
    workers = [start_worker(tmp_path / "cache") for _ in range(6)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 6, [err[-2000:] for _, err in outputs]
    logs = "".join(err for _, err in outputs)
    for what in ("building the synthetic dataset", "building the decoded images of synthetic/photo",
                 "building the small_cnn backbone pretrained with SimCLR"):
        assert logs.count(what) == 1, (what, logs[-3000:])
    assert len({json.loads(out.strip().splitlines()[-1])["digest"] for out, _ in outputs}) == 1
    assert "waiting for the small_cnn backbone" in logs          # the others said what they waited for
    assert not list((tmp_path / "cache").rglob("*.tmp*"))        # no temporary file left behind


@pytest.mark.slow
def test_a_build_killed_midway_leaves_no_lock_that_blocks_the_next(tmp_path):
    # The reproduction: SIGKILL the process group during the backbone's pretraining, run again.
    cache = tmp_path / "cache"
    victim = start_worker(cache)
    backbone_lock = None
    deadline = time.monotonic() + 300
    while backbone_lock is None and time.monotonic() < deadline:
        time.sleep(0.2)
        locks = list((cache / "backbones").glob("*.lock.holder")) if (cache / "backbones").is_dir() else []
        backbone_lock = Path(str(locks[0])[:-len(".holder")]) if locks else None
    assert backbone_lock is not None, "the pretraining never started"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert backbone_lock.is_file()                               # the file stays; its lock died with its holder
    probe = filelock.FileLock(backbone_lock)
    probe.acquire(timeout=0)                                     # free at once: no stale lock
    probe.release()
    again = start_worker(cache)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert "building the small_cnn backbone" in err and "waiting for" not in err


@pytest.mark.slow
def test_a_waiting_process_says_what_it_waits_for_and_who_holds_it(tmp_path, caplog):
    entry = tmp_path / "entry.pt"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from datasets.cache import exclusive
        with exclusive(__import__("pathlib").Path({str(entry)!r}), "a test entry"):
            print("held", flush=True)
            time.sleep(2)
    """)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    with caplog.at_level(logging.WARNING, logger="cache"):
        started = time.monotonic()
        with exclusive(entry, "the test entry"):
            waited = time.monotonic() - started
    holder.wait(timeout=30)
    assert waited > 0.5
    message = caplog.records[0].getMessage()
    assert "waiting for the test entry" in message and f"pid {holder.pid}" in message
    assert str(lock_path(entry)) in message


def test_build_once_builds_once_rebuilds_a_damaged_entry_and_cleans_up_a_failed_build(tmp_path):
    entry = tmp_path / "value.txt"
    builds = []

    def build(path):
        builds.append(path)
        path.write_text("42")

    assert build_once(entry, build, lambda p: int(p.read_text()), what="a value") == 42
    assert build_once(entry, build, lambda p: int(p.read_text()), what="a value") == 42
    assert len(builds) == 1
    entry.write_text("not a number")                             # damaged outside the harness
    assert build_once(entry, build, lambda p: int(p.read_text()), what="a value") == 42
    assert len(builds) == 2

    def failing(path):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(tmp_path / "other", failing, lambda p: p, what="another value")
    probe = filelock.FileLock(lock_path(tmp_path / "other"))
    probe.acquire(timeout=0)                                     # the lock went with the failed build
    probe.release()


def test_files_written_atomically_follow_the_umask_not_mkstemp_s_owner_only_mode(tmp_path):
    # A results folder or cache shared by a group: tables, pages, run files and cache entries are written through
    # atomic_write, whose temporary file mkstemp creates with mode 0600; they must end with 0666 less the umask, as a
    # plain open() gives (0644 under umask 022, 0600 under 077, 0664 under 002).
    import stat

    from benchmark.store import atomic_write_text
    from datasets.cache import current_umask
    previous = os.umask(0o022)
    try:
        for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
            os.umask(mask)
            assert current_umask() == mask
            target = tmp_path / f"table-{mask:o}.md"
            atomic_write_text(target, "| a |\n")
            assert stat.S_IMODE(target.stat().st_mode) == mode, oct(target.stat().st_mode)
    finally:
        os.umask(previous)
