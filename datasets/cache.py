"""Shared cache entries (generated data, decoded images, initial backbones), each built once by one process.

Many processes may want the same entry at once: `--jobs N` on one machine, a SLURM array landing on many nodes.
`build_once(path, build, what=...)` returns at once when the entry exists; otherwise it takes an exclusive lock
(`<path>.lock`, through the `filelock` library: `flock(2)` on a file that stays in place), checks again, and builds
only if no other process has: every other process waits, then reads the finished entry. Builders write to a
temporary name, fsync, and rename into place, so no process ever reads a half-written entry.

The operating system releases the lock when its holder dies (SIGKILL, a node failure, a preemption without warning):
a killed build leaves no stale lock behind, only its temporary file, and the next process builds again. A process
that has to wait says what it waits for, for whom (host and pid from `<path>.lock.holder`) and where the lock is.

Shared file systems: `flock` must work across the nodes that share the cache folder. It does on NFSv4 and on NFSv3
with the lock manager (Linux emulates flock with POSIX locks there), on GPFS/Spectrum Scale, and on Lustre mounted
with `-o flock`; on a file system without it (Lustre without the flock option, BeeGFS without global file locks)
filelock falls back to a lock file that is *not* released when its holder dies: put the cache on a node-local disk
there (`--cache-dir`). Renames within one folder are atomic on all of them.
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import filelock
import torch

log = logging.getLogger("cache")

T = TypeVar("T")
WAIT_REPORT_S = 60.0        # a waiting process says again that it is waiting after this many seconds


def lock_path(path: Path) -> Path:
    return Path(str(path) + ".lock")


def _holder_text(lock: Path) -> str:
    try:
        return Path(str(lock) + ".holder").read_text().strip()
    except OSError:
        return "another process"


def exclusive(path: Path, what: str) -> filelock.BaseFileLock:
    """The lock of cache entry `path`, acquired: waits (saying so) while another process holds it. Use as a context
    manager: `with exclusive(path, "the decoded images of ..."): ...`."""
    lock_file = lock_path(path)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        started = time.monotonic()
        while True:
            log.warning("waiting for %s, which %s is building (lock %s; released by the system if its holder "
                        "dies)", what, _holder_text(lock_file), lock_file)
            try:
                lock.acquire(timeout=WAIT_REPORT_S)
                break
            except filelock.Timeout:
                continue
        log.warning("%s: waited %.0f s", what, time.monotonic() - started)
    Path(str(lock_file) + ".holder").write_text(f"{socket.gethostname()} pid {os.getpid()} since "
                                                f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    return lock


def build_once(path: Path, build: Callable[[Path], None], load: Callable[[Path], T], *, what: str,
               ready: Callable[[Path], bool] | None = None) -> T:
    """`load(path)` of the cache entry at `path`, built first by `build(path)` if no process has built it yet.

    `build` must create `path` atomically (write elsewhere, then rename); `ready(path)` says whether the entry is
    complete (default: `path` exists). An entry that `load` cannot read (damaged outside the harness) is built
    again, under the lock."""
    ready = ready or (lambda entry: entry.exists())
    if ready(path):
        try:
            return load(path)
        except Exception:                            # looked at again under the lock, below
            pass
    with exclusive(path, what):
        if ready(path):                              # built by another process while this one waited
            try:
                return load(path)
            except Exception as error:
                log.warning("%s at %s is unreadable (%s: %s); building it again", what, path,
                            type(error).__name__, error)
        log.info("building %s at %s", what, path)
        started = time.monotonic()
        build(path)
        log.info("built %s in %.1f s", what, time.monotonic() - started)
        return load(path)


def atomic_write(path: Path, write) -> None:
    """`write(handle)` into a temporary file in the same folder, fsync, then rename over `path`: readers see the old
    file or the whole new one, and a crash right after the rename cannot leave it empty. The folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_torch_save(path: Path, obj) -> None:
    """torch.save, atomically (`atomic_write`)."""
    atomic_write(path, lambda handle: torch.save(obj, handle))
