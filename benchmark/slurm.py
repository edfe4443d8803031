"""The SLURM launcher (DESIGN §3.6): the planned runs that are not done, submitted as job arrays through submitit.

    python run_benchmark.py --suite office_home_partial --data-root ~/data --launcher slurm \\
        --partition gpu --time 240 --gpus 1 --cpus 8 --mem 32 --array-parallelism 64

Every task calls the same `runner.run_one(spec_path)` as the local launcher. Submission returns at once; each run
folder records its job id (`slurm.json`), so that the next invocation (a re-submission, `--dry-run`, `--report`)
asks the cluster which runs are still queued or running and never submits them twice.

Preemption and time limits: `SlurmRun` is submitit `Checkpointable`. SLURM signals the job (USR2, `--signal` 90 s
before the limit, or a preemption); submitit then pickles the call and requeues the job, which resumes from the run's
last finished epoch (`ckpt/last.pt`, written atomically after every epoch: at most one epoch is redone). A job killed
outright (scancel, a node failure, SIGKILL) leaves its run folder without DONE or FAILED: the census counts it
incomplete and the next invocation submits it again, and it resumes from the same checkpoint.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import submitit

from . import store
from .errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
JOB_FILE = "slurm.json"
LOG_FOLDER = "slurm_logs"
# Queue states in which a job will still run (or is running) the run: not submitted again.
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "CONFIGURING", "SUSPENDED",
                 "RESIZING", "SIGNALING", "STAGE_OUT"}
RUNNING_STATES = {"RUNNING", "COMPLETING"}
DEFAULT_MAX_ARRAY_SIZE = 1000
COMMAND_TIMEOUT_S = 60


@dataclass
class SlurmOptions:
    """What one task asks of the cluster. Defaults, then a profile file (TOML, same keys), then the command line."""
    partition: str | None = None
    time: int = 60                          # minutes per task (the run resumes after a requeue, so it may be short)
    gpus: int = 0                           # per task; the paper's suites want 1
    cpus: int = 4                           # per task
    mem: int | None = None                  # GB per task; None: the partition's default
    array_parallelism: int = 64             # tasks of one array running at once
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    max_array_size: int | None = None       # None: the cluster's MaxArraySize (scontrol), else 1000
    sbatch: dict = field(default_factory=dict)   # any other sbatch option: {"exclude": "node[1-2]", ...}
    setup: list = field(default_factory=list)    # shell lines run before each task (module load, conda activate)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def load_profile(path: Path) -> dict:
    """A site's defaults: a TOML file with SlurmOptions' keys, e.g. `partition = "gpu"`, `gpus = 1`,
    `[sbatch] exclude = "node7"`."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--slurm-profile {path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"--slurm-profile {path}: not valid TOML: {error}") from None
    unknown = sorted(set(data) - set(SlurmOptions.keys()))
    if unknown:
        raise UserError(f"--slurm-profile {path}: unknown key(s) {', '.join(unknown)}; expected some of "
                        f"{', '.join(SlurmOptions.keys())}")
    return data


def build_options(profile: Path | None, overrides: dict, extra_sbatch: list[str]) -> SlurmOptions:
    """Profile values, then the command line's (None = not given); `--sbatch key=value` adds to the profile's."""
    values = load_profile(profile) if profile else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    sbatch = dict(values.pop("sbatch", {}) or {})
    for text in extra_sbatch:
        key, sep, value = text.partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise UserError(f"malformed --sbatch {text!r}: expected option=value (e.g. --sbatch exclude=node7) or "
                            f"a flag name (e.g. --sbatch exclusive)")
        sbatch[key.replace("-", "_")] = value if sep else True
    options = SlurmOptions(**values, sbatch=sbatch)
    for name in ("time", "cpus", "array_parallelism"):
        if not (isinstance(getattr(options, name), int) and getattr(options, name) >= 1):
            raise UserError(f"slurm option {name} must be a positive integer, got {getattr(options, name)!r}")
    if not (isinstance(options.gpus, int) and options.gpus >= 0):
        raise UserError(f"slurm option gpus must be an integer >= 0, got {options.gpus!r}")
    return options


class SlurmRun(submitit.helpers.Checkpointable):
    """The callable of every array task; submitit pickles it with its argument, the run's spec.json.

    On USR2 (time limit near, or preemption) Checkpointable's own `checkpoint` requeues the same call: the run's state
    is already on disk (its last finished epoch), so that is all a resume needs."""

    def __call__(self, spec_path: str) -> dict:
        import torch

        from .runner import run_one
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:                              # torch's default is every core of the node, not the task's share
            torch.set_num_threads(int(cpus))
        return run_one(Path(spec_path))


def cluster_max_array_size() -> int:
    """The cluster's MaxArraySize (array indices go up to MaxArraySize - 1)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=COMMAND_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_MAX_ARRAY_SIZE
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("squeue") is not None


def executor_parameters(options: SlurmOptions, job_name: str) -> dict:
    params = {"name": job_name, "timeout_min": options.time, "cpus_per_task": options.cpus,
              "gpus_per_node": options.gpus, "tasks_per_node": 1, "nodes": 1,
              "slurm_array_parallelism": options.array_parallelism,
              # the tasks import the harness from this checkout, wherever sbatch starts them
              "slurm_setup": [f"export PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}", *options.setup]}
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(options, key):
            params[f"slurm_{key}"] = getattr(options, key)
    if options.mem:
        params["mem_gb"] = options.mem
    if options.sbatch:
        params["slurm_additional_parameters"] = dict(options.sbatch)
    return params


def submit(spec_paths: list[Path], output_root: Path, options: SlurmOptions, job_name: str) -> list[str]:
    """Submit one array task per run (arrays split at the cluster's maximum size); record each job id in its run
    folder. Returns the array job ids. Does not wait."""
    if not spec_paths:
        return []
    if not slurm_available():
        raise UserError("--launcher slurm: sbatch/squeue not found on this machine; submit from a SLURM login node "
                        "(or use --launcher local)")
    executor = submitit.AutoExecutor(folder=Path(output_root) / LOG_FOLDER / "%j", cluster="slurm")
    executor.update_parameters(**executor_parameters(options, job_name))
    chunk = options.max_array_size or cluster_max_array_size()
    task = SlurmRun()
    arrays = []
    for start in range(0, len(spec_paths), chunk):
        part = [str(p) for p in spec_paths[start:start + chunk]]
        try:
            jobs = executor.map_array(task, part)
        except Exception as error:          # sbatch refused (partition, limits, options): say what was asked
            raise UserError(f"sbatch refused the array of {len(part)} run(s): {error}\nasked: "
                            f"{json.dumps(executor_parameters(options, job_name))}") from None
        for spec_path, job in zip(part, jobs):
            store.atomic_write_json(Path(spec_path).parent / JOB_FILE, {
                "job_id": job.job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "logs": str(Path(output_root) / LOG_FOLDER / job.job_id), "options": asdict(options)})
        arrays.append(jobs[0].job_id.split("_")[0])
    return arrays


def recorded_job(run_dir: Path) -> str | None:
    path = Path(run_dir) / JOB_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["job_id"]
    except (ValueError, KeyError):
        return None


def queue_states() -> dict[str, str] | None:
    """job id ("123_4" for an array task) -> state, for this user's jobs in the queue now; None when there is no
    cluster to ask (or it does not answer)."""
    if not slurm_available():
        return None
    try:
        result = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"],
                                capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    states = {}
    for line in result.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state
    return states


def accounting_states(job_ids: list[str]) -> dict[str, str]:
    """Final states from the cluster's accounting (sacct: COMPLETED, CANCELLED, TIMEOUT, FAILED, ...), best effort:
    empty when accounting is off."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    try:
        result = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)],
                                capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in result.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state.split()[0] if state else ""
    return states


def active_state(job_id: str | None, states: dict[str, str] | None) -> str | None:
    """'queued' or 'running' when the run's recorded job will still run it, else None."""
    if job_id is None or not states:
        return None
    state = states.get(job_id)
    if state is None and "_" in job_id:
        # a pending array task can still be listed under its array ("123_[4-9]") by older squeue versions
        master, _, index = job_id.partition("_")
        for listed, listed_state in states.items():
            match = re.fullmatch(rf"{re.escape(master)}_\[(.+)\]", listed)
            if match and _in_ranges(int(index), match.group(1)):
                state = listed_state
                break
    if state in RUNNING_STATES:
        return "running"
    if state in QUEUED_STATES:
        return "queued"
    return None


def _in_ranges(index: int, ranges: str) -> bool:
    for part in ranges.split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (int(low) <= index <= int(high or low)):
            return True
    return False
