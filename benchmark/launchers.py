"""Launchers: how planned runs are executed, behind one small interface (as submitit's executors are). Every
launcher ends in the same `runner.run_one(spec_path)`.

    launcher.launch(spec_paths, output_root, suite_name) -> bool   # True: carried out here, the tables may follow
    launcher.idle_message(census) -> str | None                     # said when there is nothing to launch

`LocalLauncher`: on this machine, with a progress bar; a failed run is recorded (FAILED) and the suite goes on.
`jobs` > 1 runs that many at once, each in its own process (CPU threads shared out; with several GPUs, each process
on its own GPU); `jobs="auto"` (the default) picks that number (auto_jobs). `SlurmLauncher`: submits SLURM job
arrays (benchmark/slurm.py) and returns; the cluster runs them.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from . import slurm
from .runner import run_one
from .store import RunBusy
from .spec import load_spec

log = logging.getLogger(__name__)


class Launcher(Protocol):
    def launch(self, spec_paths: list[Path], output_root: Path, suite_name: str) -> bool:
        """Carry out (or hand over) the prepared runs; True when they were carried out here and the tables may
        follow, False when a scheduler runs them later. Raises UserError when the runs cannot be handed over."""

    def idle_message(self, groups: dict[str, list]) -> str | None:
        """What to say when the census leaves nothing to launch (None: nothing)."""


# Runs at once on a CPU-only machine with "auto": small runs (the quickstart's) do more per core as single-threaded
# processes than as one process with several threads (whose small kernels wait on each other), and a
# single-threaded run is bitwise reproducible; above 4, the gain no longer pays for a copy of the data per process.
AUTO_CPU_JOBS = 4


def auto_jobs(device: str) -> int:
    """`--jobs auto`: one run per GPU where runs go to CUDA (`device` "auto" on a machine with a GPU, or "cuda"),
    else min(CPU cores this process may use, AUTO_CPU_JOBS)."""
    import torch
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return max(1, torch.cuda.device_count()) if device in ("auto", "cuda") else 1
    return max(1, min(usable_cores(), AUTO_CPU_JOBS))


def threads_per_job(jobs: int) -> int:
    """The CPU threads of each of `jobs` local worker processes: the usable cores shared out, at least one."""
    return max(1, usable_cores() // jobs)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: what `srun -c N` or `taskset` gave it), not the node's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class LocalLauncher:
    jobs: int | str = "auto"          # a count, or "auto" (auto_jobs)
    device: str = "auto"

    def launch(self, spec_paths: list[Path], output_root: Path, suite_name: str) -> bool:
        jobs = auto_jobs(self.device) if self.jobs == "auto" else int(self.jobs)
        outcome = launch_local(spec_paths, jobs=min(jobs, max(1, len(spec_paths))), device=self.device)
        skipped = (f"; {len(outcome['skipped'])} left to the process that trains them (skipped)"
                   if outcome["skipped"] else "")
        print(f"trained {outcome['done']} run(s) in {outcome['seconds']:.0f} s; {len(outcome['failed'])} failed"
              + skipped)
        return True

    def idle_message(self, groups: dict[str, list]) -> str | None:
        return None


@dataclass
class SlurmLauncher:
    options: slurm.SlurmOptions
    command: str = ""           # the arguments that submitted the suite, to say how to follow it

    def launch(self, spec_paths: list[Path], output_root: Path, suite_name: str) -> bool:
        arrays = slurm.submit(spec_paths, output_root, self.options, job_name=f"cdr-{suite_name}")
        again = self.command or f"--suite {suite_name}"
        print(f"submitted {len(spec_paths)} run(s) as {len(arrays)} SLURM job array(s): {', '.join(arrays)}")
        print(f"  follow:  squeue -j {','.join(arrays)}    (or: python run_benchmark.py {again} --dry-run)")
        print(f"  logs:    {output_root / slurm.LOG_FOLDER}/<job id>/ and each run's log.txt")
        print(f"  tables:  python run_benchmark.py {again} --report    (when they are done; running the same "
              f"command again submits only what is neither done nor in the queue)")
        return False

    def idle_message(self, groups: dict[str, list]) -> str | None:
        waiting = len(groups["queued"]) + len(groups["running"])
        return "nothing to submit" + (f": {waiting} run(s) still in the SLURM queue" if waiting else "")


def _describe(spec_path: Path) -> str:
    spec = load_spec(spec_path)
    return f"{spec.method} {spec.setting} {spec.query_domain}->{spec.retrieval_domain} seed {spec.seed}"


def worker_devices(requested: str, jobs: int) -> list[str | None]:
    """The device of each of `jobs` worker processes: with `auto`/`cuda` and several GPUs, one GPU each in turn;
    otherwise the launch's own device for all (None: leave launch.json's)."""
    if jobs <= 1 or requested not in ("auto", "cuda"):
        return [None] * max(jobs, 1)
    import torch
    count = torch.cuda.device_count()
    if count < 2:
        return [None] * jobs
    return [f"cuda:{i % count}" for i in range(jobs)]


def launch_local(spec_paths: list[Path], jobs: int = 1, device: str = "auto") -> dict:
    """Returns {"done": n, "failed": [(spec_path, reason)], "skipped": [(spec_path, who trains it)], "seconds": s}.
    A run that another process trains at the moment (it holds the run's lock) is skipped, and said so."""
    started = time.time()
    failed, skipped, done = [], [], 0
    bar = tqdm(total=len(spec_paths), desc="runs", unit="run", file=sys.stderr, dynamic_ncols=True)
    outcomes = (_sequential(spec_paths, bar) if jobs <= 1 else
                _parallel(spec_paths, jobs, worker_devices(device, jobs), bar))
    for spec_path, (outcome, text) in outcomes:
        bar.update(1)
        if outcome == DONE:
            done += 1
        elif outcome == SKIPPED:
            skipped.append((spec_path, text))
            tqdm.write(f"run skipped: {text}", file=sys.stderr)
        else:   # recorded in FAILED by run_one; the suite goes on
            failed.append((spec_path, text))
            tqdm.write(f"run failed: {Path(spec_path).parent}: {text}", file=sys.stderr)
    bar.close()
    return {"done": done, "failed": failed, "skipped": skipped, "seconds": time.time() - started}


def _sequential(spec_paths, bar):
    for spec_path in spec_paths:
        bar.set_postfix_str(_describe(spec_path))
        yield spec_path, _run_reporting_errors(spec_path)


DONE, SKIPPED, FAILED = "done", "skipped", "failed"


def _run_reporting_errors(spec_path, device: str | None = None) -> tuple[str, str]:
    """(DONE, ""), (SKIPPED, who trains the run) or (FAILED, why)."""
    try:
        run_one(spec_path, device=device)
        return DONE, ""
    except RunBusy as busy:
        return SKIPPED, str(busy)
    except Exception as error:
        return FAILED, f"{type(error).__name__}: {error}"


# --- several runs at once ------------------------------------------------------------------------------------------

_WORKER_DEVICE: str | None = None


def _init_worker(slots, devices: list, threads: int) -> None:
    """Each worker process takes a slot (its GPU, when there are several) and its share of the CPU threads."""
    global _WORKER_DEVICE
    import torch
    torch.set_num_threads(threads)
    _WORKER_DEVICE = devices[slots.get()]


def _run_in_worker(spec_path) -> tuple[str, str]:
    return _run_reporting_errors(spec_path, device=_WORKER_DEVICE)


def _parallel(spec_paths, jobs: int, devices: list, bar):
    context = multiprocessing.get_context("spawn")      # no fork of a process that holds CUDA or OpenMP state
    slots = context.Queue()
    for slot in range(jobs):
        slots.put(slot)
    threads = threads_per_job(jobs)
    bar.set_postfix_str(f"{jobs} at once, {threads} thread(s) each")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                             initargs=(slots, devices, threads)) as pool:
        futures = {pool.submit(_run_in_worker, path): path for path in spec_paths}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as error:          # the worker process itself died (killed, out of memory)
                yield futures[future], (FAILED, f"{type(error).__name__}: {error}")
