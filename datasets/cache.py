"""Shared cache entries (generated data, decoded images, initial backbones), each built once by one process.

Many processes may want the same entry at once: `--jobs N` on one machine, a SLURM array landing on many nodes.
`build_once(path, build, what=...)` returns at once when the entry exists; otherwise it takes an exclusive lock
(`<path>.lock`, through the `filelock` library: `flock(2)` on a file that stays in place), checks again, and builds
only if no other process has: every other process waits, then reads the finished entry. Builders write to a
temporary name, fsync, and rename into place, so no process ever reads a half-written entry.

The operating system releases the lock when its holder dies (SIGKILL, a node failure, a preemption without warning):
a killed build leaves no stale lock behind, only its temporary file, and the next process builds again. A process
that has to wait says what it waits for, who holds the lock (host, pid, SLURM job, since when) and where the lock is.
The locks themselves, and what happens on file systems where they do not work, are `datasets/locks.py`'s: there the
first process stops with the lock's path and the remedy, a cache folder on a node-local disk (`--cache-dir`).
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import filelock
import torch

from .locks import describe_holder, read_holder, stale_hint, try_lock

log = logging.getLogger("cache")

T = TypeVar("T")
WAIT_REPORT_S = 60.0        # a waiting process says again that it is waiting after this many seconds


def lock_path(path: Path) -> Path:
    return Path(str(path) + ".lock")


CACHE_REMEDY = ("Put the cache on a node-local disk (--cache-dir /local/scratch/cdr-cache): each node then builds "
                "its own copy once.")
POLL_S = 0.5
# Entries this process has built: a SLURM task that reaches its time limit before its first epoch still made progress
# if it built one (benchmark/slurm.py: when a time limit stops a run for good)
entries_built = 0


def exclusive(path: Path, what: str) -> filelock.BaseFileLock:
    """The lock of cache entry `path`, acquired: waits while another process holds it, saying every WAIT_REPORT_S
    who holds it and since when. Use as a context manager: `with exclusive(path, "the decoded images of ..."): ...`.
    Raises LockUnavailable (datasets/locks.py) where the cache's file system cannot lock."""
    lock_file = lock_path(path)
    lock = try_lock(lock_file, CACHE_REMEDY)
    if lock is not None:
        return lock
    started = time.monotonic()
    while lock is None:
        holder = read_holder(lock_file)
        log.warning("waiting for %s, which %s is building (lock %s; %s)", what, describe_holder(holder), lock_file,
                    stale_hint(lock_file, holder))
        deadline = time.monotonic() + WAIT_REPORT_S
        while lock is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
            lock = try_lock(lock_file, CACHE_REMEDY)
    log.warning("%s: waited %.0f s", what, time.monotonic() - started)
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
        global entries_built
        entries_built += 1
        return load(path)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc/self/status, `Umask:`), else by
    setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """`write(handle)` into a temporary file in the same folder, fsync, then rename over `path`: readers see the old
    file or the whole new one, and a crash right after the rename cannot leave it empty. The folder is created. The
    file gets the mode a plain `open` would give it (0666 less the umask), not mkstemp's owner-only 0600, so that a
    group sharing a results folder or a cache can read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(descriptor, 0o666 & ~current_umask())
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if _out_of_space(error):
            raise DiskFull(path) from error
        raise


SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _out_of_space(error: BaseException) -> bool:
    """Whether a failed write ran out of space or quota: an OSError ENOSPC/EDQUOT, or one that a library wrapped
    (torch.save turns it into RuntimeError "unexpected pos", keeping the OSError as its context)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in SPACE_ERRNOS:
            return True
        error = error.__cause__ or error.__context__
    return False


class DiskFull(OSError):
    """A write that found no space (or quota) left: names the file and the free bytes of its file system."""

    def __init__(self, path: Path):
        folder = Path(path).parent
        try:
            usage = shutil.disk_usage(folder)
            room = f"{usage.free:,} bytes free of {usage.total:,} on its file system"
        except OSError:
            room = "free space unknown"
        super().__init__(errno.ENOSPC, f"No space left on device (or quota exceeded) writing {path} ({room}); "
                                       f"free some space, or write elsewhere (--output, --cache-dir), and run "
                                       f"again: a run resumes from its last checkpoint")


def atomic_torch_save(path: Path, obj) -> None:
    """torch.save, atomically (`atomic_write`)."""
    atomic_write(path, lambda handle: torch.save(obj, handle))
