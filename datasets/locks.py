"""File locks the operating system releases when their holder dies: the shared caches' (datasets/cache.py) and the
run folders' (benchmark/store.py `RunFolder`).

A lock is `flock(2)` on a file that stays in place, through the `filelock` library with its soft-lock fallback turned
off: a lock *file* (what filelock falls back to where flock is missing) outlives a holder that dies, and every other
process would wait for it for ever. Beside the lock, `<lock>.holder` records who holds it — host, pid, SLURM job,
since when — for the messages of the processes that find it taken.

File systems without working locks (NFSv3 without the lock manager, Lustre mounted without `-o flock`, BeeGFS
without global file locks) answer flock with ENOLCK ("No locks available") or ENOSYS: `LockUnavailable` then names
the lock's path and what to do instead, given by the caller (the caches: `--cache-dir` on a local disk).

Where flock does work across nodes (NFSv4, NFSv3 with lockd, GPFS, Lustre with `-o flock`), a holder whose *node*
goes down keeps its lock until the file server notices: NFSv4 after its lease (about 90 s), NFSv3 only when the node
comes back. A waiting process therefore says who holds the lock and since when, and how to free it by hand.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

import filelock

HOLDER_SUFFIX = ".holder"
# flock's answers where the file system cannot lock: ENOLCK (NFS without a lock manager), ENOSYS and EOPNOTSUPP
# (file systems without flock at all)
UNSUPPORTED_ERRNOS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


class LockUnavailable(OSError):
    """The file system of a lock's path cannot lock (flock fails): the message names the path and the remedy."""


def holder_path(lock_file: Path) -> Path:
    return Path(str(lock_file) + HOLDER_SUFFIX)


def slurm_job() -> str | None:
    """This process's SLURM job as squeue shows it: "<array job>_<task>" for an array task, else the job id."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def this_process() -> dict:
    """Who holds a lock taken now: {"host", "pid", "job" (SLURM, or None), "since" (ISO time), "since_epoch" (s)}."""
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": slurm_job(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)), "since_epoch": now}


def read_holder(lock_file: Path) -> dict:
    """The recorded holder of `lock_file` ({} when none is recorded or the record cannot be read). The record is
    written just after the lock is taken: a probe in between reads the previous holder's, or none."""
    try:
        record = json.loads(holder_path(lock_file).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def describe_holder(record: dict) -> str:
    """"host node7 pid 4242 (SLURM job 81_3) since 2026-12-07T10:00:00+0000 (12 min ago)", or "another process"."""
    if not record.get("host"):
        return "another process"
    text = f"host {record['host']} pid {record.get('pid', '?')}"
    if record.get("job"):
        text += f" (SLURM job {record['job']})"
    if record.get("since"):
        text += f" since {record['since']}"
        if isinstance(record.get("since_epoch"), (int, float)):
            text += f" ({_duration(time.time() - record['since_epoch'])} ago)"
    return text


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _unavailable(lock_file: Path, error: OSError, remedy: str) -> LockUnavailable:
    return LockUnavailable(
        error.errno, f"file locks do not work on the file system of {lock_file} (flock: {error.strerror or error}); "
                     f"the harness needs them so that one process builds each cache entry and trains each run. "
                     f"{remedy}")


def try_lock(lock_file: Path, remedy: str) -> filelock.BaseFileLock | None:
    """The lock of `lock_file`, taken without waiting (its holder record written), or None when another process
    holds it. Raises LockUnavailable (naming the path and `remedy`) where the file system cannot lock."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(lock_file, thread_local=False, fallback_to_soft=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return None
    except OSError as error:
        if error.errno in UNSUPPORTED_ERRNOS:
            raise _unavailable(lock_file, error, remedy) from None
        raise
    holder_path(lock_file).write_text(json.dumps(this_process()) + "\n")
    return lock


def held_by(lock_file: Path) -> dict | None:
    """Who holds `lock_file` now: None when nobody does (or it does not exist), else the holder record ({} when none
    is recorded yet). Probes by taking the lock for an instant; a file system that cannot lock answers None."""
    lock_file = Path(lock_file)
    if not lock_file.is_file():
        return None
    probe = filelock.FileLock(lock_file, thread_local=False, fallback_to_soft=False)
    try:
        probe.acquire(timeout=0)
    except filelock.Timeout:
        return read_holder(lock_file)
    except OSError:
        return None
    probe.release()
    return None


def stale_hint(lock_file: Path, record: dict) -> str:
    """How to free a lock whose holder is gone: on this host, whether its pid still runs; elsewhere, how to check."""
    pid, host = record.get("pid"), record.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
            return f"pid {pid} is running on this host"
        except ProcessLookupError:
            return f"no process {pid} runs on this host any more; the system frees its lock"
        except PermissionError:
            return f"pid {pid} is running on this host (another user's)"
    where = f"on {host}" if host else "on its host"
    return (f"the system frees it when that process ends; if its node went down, the file server frees it after its "
            f"lock lease (NFSv4: about 90 s; NFSv3: when the node is back). If `ps -p {pid}` {where} shows no such "
            f"process, delete {lock_file} and the waiting processes go on")
