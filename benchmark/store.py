"""The results store (DESIGN §3.4): run folders, atomic writes, and a run's status read from its files alone.

    <output>/runs/<dataset>/<setting>/<query>-<retrieval>/<method>/seed<seed>-<hash>/
        spec.json      the run spec (canonical JSON; its hash names the folder)
        launch.json    where to find data and cache, which device (not part of the identity)
        env.json       versions, git sha, device, host, SLURM ids
        log.txt        the run's log
        ckpt/last.pt   the last finished epoch (model, optimisers, method state)
        metrics.json   the evaluation
        retrievals.json  the top k of a fixed sample of queries (benchmark/figures.py)
        slurm.json     the SLURM job that runs it (--launcher slurm; benchmark/slurm.py)
        DONE           written last — or FAILED, with the reason

Status: `done` (DONE), `failed` (FAILED), `incomplete` (a folder without either: crashed, killed or still running),
`missing` (no folder).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .spec import RunSpec

STATUSES = ("done", "failed", "incomplete", "missing")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n")


def atomic_torch_save(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        torch.save(obj, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def run_status(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    if (run_dir / "DONE").is_file():
        return "done"
    if (run_dir / "FAILED").is_file():
        return "failed"
    if run_dir.is_dir():
        return "incomplete"
    return "missing"


def prepare_run_dir(spec: RunSpec, output_root: Path, launch: dict) -> Path:
    """Create the folder with spec.json and launch.json (idempotent); returns the folder."""
    run_dir = spec.run_dir(output_root)
    spec_path = run_dir / "spec.json"
    if not spec_path.is_file():
        atomic_write_text(spec_path, spec.canonical_json() + "\n")
    atomic_write_json(run_dir / "launch.json", launch)
    return run_dir


def mark_done(run_dir: Path) -> None:
    (Path(run_dir) / "FAILED").unlink(missing_ok=True)
    atomic_write_text(Path(run_dir) / "DONE", "done\n")


def mark_failed(run_dir: Path, reason: str) -> None:
    atomic_write_text(Path(run_dir) / "FAILED", reason.rstrip() + "\n")


def failure_reason(run_dir: Path) -> str:
    path = Path(run_dir) / "FAILED"
    return path.read_text().strip() if path.is_file() else ""


def clear_failure(run_dir: Path) -> None:
    """Before a retry: the old reason goes, the checkpoint stays (the retry resumes from it)."""
    (Path(run_dir) / "FAILED").unlink(missing_ok=True)


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())["metrics"]


def read_history(run_dir: Path) -> list[dict]:
    """The per-epoch history of a done run: one dict per epoch (its number, the mean of every loss term the method
    returned, what it logged, seconds)."""
    return json.loads((Path(run_dir) / "metrics.json").read_text()).get("history", [])
