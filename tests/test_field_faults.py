"""Faults users met in the field (issue 22, item 6), each with the behaviour a user should see: file systems where
locks do not work, a lock whose holder is gone, a module a planned method needs that is missing, a full disk."""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmark import cli, store
from benchmark.runner import run_one
from benchmark.suites import plan
from datasets import cache
from datasets.locks import LockUnavailable, holder_path

from .conftest import prepared_run, tiny_suite


@pytest.fixture
def flock_says_no_locks(monkeypatch):
    """A file system whose flock answers ENOLCK, as NFSv3 without its lock manager does."""
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", no_locks)


def test_a_file_system_without_locks_is_named_with_the_remedy(tmp_path, cache_dir, capsys, flock_says_no_locks):
    tiny_suite("test_no_locks", methods=["pretrained"])
    output = tmp_path / "out"
    assert cli.main(["--suite", "test_no_locks", "--output", str(output), "--cache-dir", str(cache_dir),
                     "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "file locks do not work on the file system of" in err and str(output) in err
    assert "No locks available" in err and "put --output on a file system with working locks" in err
    assert not (output / "runs").exists()                  # nothing half-written
    # the cache says the same with its own remedy
    with pytest.raises(LockUnavailable, match=r"x\.pt\.lock .*No locks available.*--cache-dir"):
        cache.exclusive(tmp_path / "cache" / "x.pt", "an entry")


def test_a_waiting_process_says_who_holds_the_lock_and_how_to_free_it(tmp_path, caplog, monkeypatch):
    # The holder's record names another node; the lock is held (by this test). The waiting process says which host
    # holds it and since when, and how to free it; deleting the lock file (as it says) lets it go on.
    monkeypatch.setattr(cache, "WAIT_REPORT_S", 0.5)
    entry = tmp_path / "entry.pt"
    lock_file = cache.lock_path(entry)
    held = cache.exclusive(entry, "the entry")
    holder_path(lock_file).write_text('{"host": "node7", "pid": 4242, "job": "81_3", "since": '
                                      '"2026-12-07T09:00:00+0000", "since_epoch": %f}\n' % (time.time() - 7200))
    got = []
    waiter = threading.Thread(target=lambda: got.append(cache.exclusive(entry, "the decoded images of x")))
    with caplog.at_level(logging.WARNING, logger="cache"):
        waiter.start()
        deadline = time.monotonic() + 30
        while "waiting for" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not got
        lock_file.unlink()                                  # the remedy the message gives
        waiter.join(timeout=30)
    assert got and got[0].is_locked
    message = caplog.text
    assert ("waiting for the decoded images of x, which host node7 pid 4242 (SLURM job 81_3) since "
            "2026-12-07T09:00:00+0000 (2.0 h ago) is building") in message
    assert f"If `ps -p 4242` on node7 shows no such process, delete {lock_file}" in message
    got[0].release()
    held.release()


def test_a_missing_module_of_a_planned_method_stops_the_plan_before_training(tmp_path, cache_dir, capsys,
                                                                              monkeypatch):
    # UCDIR and DGDIR cluster with faiss after warm-up epochs: without faiss they used to train those first.
    monkeypatch.setitem(sys.modules, "faiss", None)        # import faiss now raises ImportError
    tiny_suite("test_no_faiss", methods=["pretrained", "cds", "ucdir", "dgdir"])
    args = ["--suite", "test_no_faiss", "--output", str(tmp_path), "--cache-dir", str(cache_dir), "--device", "cpu"]
    assert cli.main(args + ["--dry-run"]) == 2
    out = capsys.readouterr().out
    assert "modules: faiss (needed by ucdir, dgdir) cannot be imported" in out and "pip install faiss-cpu" in out
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "faiss (needed by ucdir, dgdir)" in err and "nothing was trained" in err
    assert not (tmp_path / "runs").exists()
    # a plan without those methods needs no faiss
    assert cli.main(args + ["--methods", "pretrained", "cds", "--dry-run"]) == 0


def test_every_method_that_clusters_with_faiss_declares_it():
    import inspect

    from methods import get_method_class, method_names
    for name in method_names():
        cls = get_method_class(name)
        if "faiss_kmeans" in inspect.getsource(sys.modules[cls.__module__]):
            assert "faiss" in cls.required_modules, name


def _full_disk(tmp_path: Path, size_kb: int):
    """A folder on a file system of `size_kb` KiB (tmpfs; root only), or None where it cannot be mounted."""
    folder = tmp_path / "small_disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                             capture_output=True, timeout=30)
    return folder if mounted.returncode == 0 else None


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """An output folder whose file system has room for a run's small files, not for its checkpoint: a real 160 KiB
    tmpfs where the test may mount one, else a write that fails as a full disk does (ENOSPC) past 160 KiB."""
    folder = _full_disk(tmp_path, 160)
    if folder is not None:
        yield folder
        subprocess.run(["umount", "-l", str(folder)], timeout=30)
        return
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 160 * 1024:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

    monkeypatch.setattr(cache.os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    yield tmp_path / "out"


@pytest.mark.slow
def test_a_full_disk_fails_the_run_with_its_reason_not_torchs(small_disk, cache_dir):
    suite = tiny_suite("test_full_disk", methods=["cds"])
    spec = plan(suite, assignments=["cds.epochs=2"])[0]
    spec_path = prepared_run(spec, small_disk, cache_dir)
    with pytest.raises(OSError, match="No space left on device"):
        run_one(spec_path)
    reason = store.failure_reason(spec_path.parent)
    assert "No space left on device (or quota exceeded) writing " in reason and "/ckpt/" in reason
    assert "bytes free of" in reason and "unexpected pos" not in reason
    assert store.run_status(spec_path.parent) == "failed" and not (spec_path.parent / "DONE").exists()
    assert not list((spec_path.parent / "ckpt").glob(".*.tmp"))       # no temporary file left behind
