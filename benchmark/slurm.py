"""The SLURM launcher (DESIGN §3.6): the planned runs that are not done, submitted as job arrays through submitit.

    python run_benchmark.py --suite office_home_partial --data-root ~/data --launcher slurm \\
        --partition gpu --time 240 --gpus 1 --cpus 8 --mem 32 --array-parallelism 64

Every task calls the same `runner.run_one(spec_path)` as the local launcher. Submission returns at once; each run
folder records its job id (`slurm.json`), so that the next invocation (a re-submission, `--dry-run`, `--report`)
asks the cluster which runs are still queued or running and never submits them twice.

Where users submit from: sbatch runs inside submitit's clean environment (no SLURM_*/SUBMITIT_* variable of a driver
job leaks into the tasks; SLURM_CONF is kept), so a suite can be submitted from inside a SLURM job. A request that no
node of the partition can meet (CPUs, memory, GPUs per task) is refused before anything is submitted, naming what
the partition's nodes offer (sinfo), instead of pending forever.

A task that dies before its run starts (no log.txt: a setup line that fails, a module missing on a node) is counted
at each invocation from the cluster's accounting; `--dry-run` shows its state and the tail of its stderr, and after
`START_FAILURES_BEFORE_FAILED` such deaths in a row the run is FAILED with that tail instead of being submitted
again.

Time limits and preemption: `SlurmRun` is submitit `Checkpointable`. SLURM signals the job (USR2, `--signal`
SIGNAL_LEAD_S before the limit, or at a preemption where the cluster sends one); the task then requeues the same job,
which resumes from the run's last finished epoch (`ckpt/last.pt`, written atomically after every epoch: at most one
epoch is redone). It does so as many times as the run needs, whatever submitit's own count of time-outs
(`slurm_max_num_timeout`, 3 by default, would have marked the run FAILED at the fourth): the one rule that stops it is
a period cut by its time limit that finished no epoch and built nothing for the cache — the time limit is shorter
than an epoch, and more periods would not help. That run is FAILED with the reason and what to do (a longer `--time`,
then `--retry-failed`: it resumes from its last epoch). A preemption (the signal comes well before the limit) always
requeues. A job killed outright (scancel, a node failure, SIGKILL, a requeue that the cluster refused) leaves its run
folder without DONE or FAILED: the census counts it incomplete and the next invocation submits it again, and it
resumes from the same checkpoint. A requeued job that another launch of the same run reaches first finds the run's
lock taken (benchmark/store.py) and leaves the run to it.
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
from contextlib import contextmanager
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
START_FAILURES_BEFORE_FAILED = 3     # deaths of a run's job before the run started, in a row, that make it FAILED
KEPT_VARIABLES = ("SLURM_CONF",)     # where the cluster's configuration lives: the one SLURM_* a submission needs
STDERR_TAIL_LINES = 12


def _flag(default, help: str, kind: str = "text", metavar: str | None = None):
    """A SlurmOptions field that is also a command-line flag (`--<name>` and `--slurm-<name>`): `kind` "text",
    "positive" (an integer >= 1) or "count" (an integer >= 0); the flag's default is None (the profile's, else the
    field's)."""
    return field(default=default, metadata={"help": help, "kind": kind, "metavar": metavar})


@dataclass
class SlurmOptions:
    """What one task asks of the cluster. Defaults, then a profile file (TOML, same keys), then the command line (each
    field with a `_flag` is a flag of cli.py)."""
    partition: str | None = _flag(None, "partition (default: the cluster's)")
    time: int = _flag(60, "time limit per run in minutes (default 60; a run that hits it is requeued and resumes)",
                      "positive", "MIN")
    gpus: int = _flag(0, "GPUs per run (default 0; the paper's suites want 1)", "count", "N")
    cpus: int = _flag(4, "CPUs per run (default 4)", "positive", "N")
    mem: int | None = _flag(None, "memory per run in GB (default: the partition's)", "positive", "GB")
    array_parallelism: int = _flag(64, "array tasks running at once (default 64)", "positive", "N")
    account: str | None = _flag(None, "account to charge")
    qos: str | None = _flag(None, "quality of service")
    constraint: str | None = _flag(None, "node features the task needs, e.g. a100")
    max_array_size: int | None = _flag(None, "split arrays at N tasks (default: the cluster's MaxArraySize)",
                                       "positive", "N")
    sbatch: dict = field(default_factory=dict)   # any other sbatch option: {"exclude": "node[1-2]", ...}
    setup: list = field(default_factory=list)    # shell lines run before each task (module load, conda activate)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def flags(cls) -> list:
        """The fields that are command-line flags (dataclasses.Field, with metadata help, kind, metavar)."""
        return [f for f in fields(cls) if "help" in f.metadata]


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


SIGNAL_LEAD_S = 90              # submitit's --signal=USR2@90: the warning comes this long before the time limit
TIME_LIMIT_SLACK_S = 60         # a signal later than (limit - lead - slack) into a period is the time limit's
UNLIMITED_REQUEUES = 1_000_000  # submitit's time-out budget: never the reason a run stops (SlurmRun decides)


class SlurmRun(submitit.helpers.Checkpointable):
    """The callable of every array task; submitit pickles it with its argument, the run's spec.json.

    On USR2 (time limit near, or preemption) submitit calls `checkpoint`: the run's state is already on disk (its
    last finished epoch), so a requeue of the same call is all a resume needs — unless this period was cut by the
    time limit without finishing an epoch (then the run is FAILED with the reason, and the job is not requeued)."""

    def __init__(self, time_limit_min: int = 60):
        self.time_limit_min = time_limit_min
        self._period = None                 # this period's start: (time, epochs finished, cache entries built)

    def __call__(self, spec_path: str) -> dict:
        import torch

        from datasets import cache

        from . import runner
        self._period = (time.time(), runner.epochs_finished, cache.entries_built)
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:                              # torch's default is every core of the node, not the task's share
            torch.set_num_threads(int(cpus))
        try:
            return runner.run_one(Path(spec_path))
        except store.RunBusy as busy:        # another launch trains it (a second submission, a local run)
            print(f"not trained by this task: {busy}", flush=True)
            return {"skipped": str(busy)}

    def checkpoint(self, spec_path: str):
        """submitit's hook at USR2: the same call to requeue, or None (no requeue) when the time limit cut a period
        that made no progress. Runs in the signal handler, in the task's process."""
        from datasets import cache

        from . import runner
        started, epochs_before, built_before = self._period or (time.time(), runner.epochs_finished,
                                                               cache.entries_built)
        elapsed = time.time() - started
        timed_out = elapsed >= self.time_limit_min * 60 - SIGNAL_LEAD_S - TIME_LIMIT_SLACK_S
        progress = runner.epochs_finished - epochs_before
        if timed_out and progress == 0 and cache.entries_built == built_before:
            reason = stalled_reason(self.time_limit_min, elapsed, runner.position)
            runner.note_interruption(reason)
            store.mark_failed(Path(spec_path).parent, reason)
            return None
        runner.note_interruption(
            f"{'the time limit' if timed_out else 'a preemption'} after {elapsed / 60:.1f} min of this period "
            f"({progress} epoch(s) finished in it): the job is requeued and resumes from the last finished epoch")
        return super().checkpoint(spec_path)


def stalled_reason(time_limit_min: int, elapsed_s: float, position: tuple[int, int] | None) -> str:
    where = (f"the run stands at epoch {position[0]} of {position[1]}" if position
             else "the run had not reached its first epoch")
    return (f"stopped at the time limit: this job's period of {elapsed_s / 60:.1f} min (--time {time_limit_min}) "
            f"finished no epoch and built nothing, so more periods of this length would not finish one either "
            f"({where}). Submit again with a longer --time and --retry-failed: the run resumes from its last "
            f"finished epoch.")


def _ask(command: list[str]) -> str | None:
    """The standard output of a SLURM query (scontrol, sinfo, squeue, sacct); None when it cannot be run, does not
    answer within COMMAND_TIMEOUT_S or fails."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def cluster_max_array_size() -> int:
    """The cluster's MaxArraySize (array indices go up to MaxArraySize - 1)."""
    out = _ask(["scontrol", "show", "config"]) or ""
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


@contextmanager
def submission_environment():
    """submitit's clean environment (no SLURM_*, SUBMITIT_* or distributed variables: a driver job's would leak into
    the tasks — SLURM_MEM_PER_CPU against the task's own memory request, SLURM_ARRAY_* making a one-run job wait for
    the driver's pickle), with SLURM_CONF kept."""
    kept = {name: os.environ[name] for name in KEPT_VARIABLES if name in os.environ}
    with submitit.helpers.clean_env():
        os.environ.update(kept)
        yield


@dataclass(frozen=True)
class NodeOffer:
    """What one node of a partition offers a task."""
    name: str
    cpus: int
    memory_gb: float
    gpus: int


def _gres_gpus(gres: str) -> int:
    """GPUs in a sinfo GRES field: "gpu:4", "gpu:a100:4(S:0-1)", "gpu:2,shard:8", "(null)"."""
    total = 0
    for part in gres.split(","):
        fields_ = part.split("(")[0].split(":")
        if fields_[0] == "gpu" and fields_[-1].isdigit():
            total += int(fields_[-1])
    return total


def partition_offers(partition: str | None) -> tuple[str, list[NodeOffer]] | None:
    """(the partition asked for, or the cluster's default, and what each of its nodes offers), from sinfo; None when
    sinfo cannot say (then sbatch alone judges the request)."""
    if partition is None:
        defaults = [name[:-1] for name in (_ask(["sinfo", "-h", "-o", "%P"]) or "").split() if name.endswith("*")]
        if not defaults:
            return None
        partition = defaults[0]
    listing = _ask(["sinfo", "-h", "-N", "-p", partition, "-o", "%N|%c|%m|%G"])
    if listing is None:
        return None
    offers = {}
    for line in listing.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[1].isdigit():
            memory = float(parts[2].rstrip("+")) / 1024 if parts[2].rstrip("+").isdigit() else 0.0
            offers[parts[0]] = NodeOffer(parts[0], int(parts[1]), memory, _gres_gpus(parts[3]))
    return partition, list(offers.values())


def check_request_fits(options: SlurmOptions) -> None:
    """Refuse a request that no node of the partition can meet (it would stay PENDING for ever, Reason=
    PartitionConfig or Resources), naming what was asked and what the nodes offer. Silent when sinfo cannot say."""
    found = partition_offers(options.partition)
    if found is None:
        return
    partition, offers = found
    if not offers:
        names = (_ask(["sinfo", "-h", "-o", "%P"]) or "").split()
        raise UserError(f"--partition {partition}: no such partition on this cluster (partitions: "
                        f"{', '.join(n.rstrip('*') for n in names) or 'none listed'})")
    fits = [n for n in offers if n.cpus >= options.cpus and n.gpus >= options.gpus
            and (options.mem is None or n.memory_gb >= options.mem)]
    if fits:
        return
    best = (max(n.cpus for n in offers), max(n.memory_gb for n in offers), max(n.gpus for n in offers))
    asked = f"{options.cpus} CPU(s), {options.gpus} GPU(s)" + (f", {options.mem} GB" if options.mem else "")
    raise UserError(
        f"no node of partition {partition!r} can run a task asking for {asked}: its {len(offers)} node(s) offer at "
        f"most {best[0]} CPU(s), {best[1]:.0f} GB of memory and {best[2]} GPU(s) each; the job would stay pending "
        f"for ever. Ask for less (e.g. --cpus {min(options.cpus, best[0])} --gpus {min(options.gpus, best[2])}) or "
        f"choose another --partition. Nothing was submitted.")


def submit(spec_paths: list[Path], output_root: Path, options: SlurmOptions, job_name: str) -> list[str]:
    """Submit one array task per run (arrays split at the cluster's maximum size); record each job id in its run
    folder (with the run's earlier jobs). Returns the array job ids. Does not wait."""
    if not spec_paths:
        return []
    if not slurm_available():
        raise UserError("--launcher slurm: sbatch/squeue not found on this machine; submit from a SLURM login node "
                        "(or use --launcher local)")
    check_request_fits(options)
    executor = submitit.AutoExecutor(folder=Path(output_root) / LOG_FOLDER / "%j", cluster="slurm",
                                     slurm_max_num_timeout=UNLIMITED_REQUEUES)
    executor.update_parameters(**executor_parameters(options, job_name))
    chunk = options.max_array_size or cluster_max_array_size()
    task = SlurmRun(options.time)
    arrays = []
    for start in range(0, len(spec_paths), chunk):
        part = [str(p) for p in spec_paths[start:start + chunk]]
        try:
            with submission_environment():
                jobs = executor.map_array(task, part)
        except Exception as error:          # sbatch refused (partition, limits, options): say what was asked
            raise UserError(f"sbatch refused the array of {len(part)} run(s): {error}\nasked: "
                            f"{json.dumps(executor_parameters(options, job_name))}") from None
        for spec_path, job in zip(part, jobs):
            run_dir = Path(spec_path).parent
            earlier = read_job_record(run_dir)
            store.atomic_write_json(run_dir / JOB_FILE, {
                "job_id": job.job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "logs": str(Path(output_root) / LOG_FOLDER / job.job_id), "options": asdict(options),
                "start_failures": earlier.get("start_failures", [])})
        arrays.append(jobs[0].job_id.split("_")[0])
    return arrays


def read_job_record(run_dir: Path) -> dict:
    """The run's slurm.json ({} when there is none, or it cannot be read)."""
    try:
        record = json.loads((Path(run_dir) / JOB_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def recorded_job(run_dir: Path) -> str | None:
    job = read_job_record(run_dir).get("job_id")
    return job if isinstance(job, str) else None


def queue_details() -> dict[str, tuple[str, str]] | None:
    """job id ("123_4" for an array task) -> (state, reason), for this user's jobs in the queue now; None when there
    is no cluster to ask (or it does not answer)."""
    if not slurm_available():
        return None
    listing = _ask(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"])
    if listing is None:
        return None
    details = {}
    for line in listing.splitlines():
        job_id, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if job_id:
            details[job_id] = (state, reason)
    return details


def queue_states() -> dict[str, str] | None:
    """job id -> state, for this user's jobs in the queue now (`queue_details` without the reasons)."""
    details = queue_details()
    return None if details is None else {job: state for job, (state, _) in details.items()}


def stderr_tail(run_dir: Path, lines: int = STDERR_TAIL_LINES) -> str:
    """The last lines of the stderr of the run's recorded job (submitit's `<job id>_<task>_log.err`)."""
    record = read_job_record(run_dir)
    logs = Path(record.get("logs", "")) if record.get("logs") else None
    files = sorted(logs.glob("*_log.err")) if logs and logs.is_dir() else []
    if not files:
        return "(no stderr file)"
    text = files[-1].read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(empty stderr)"


def note_start_failure(run_dir: Path, job_id: str, state: str) -> int:
    """Record that the run's job `job_id` ended (`state`) before the run started (no log.txt); returns how many such
    deaths the run has had in a row. A job already counted is not counted again."""
    record = read_job_record(run_dir)
    failures = [f for f in record.get("start_failures", []) if isinstance(f, dict)]
    if not any(f.get("job_id") == job_id for f in failures):
        failures.append({"job_id": job_id, "state": state, "seen": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        record["start_failures"] = failures
        store.atomic_write_json(Path(run_dir) / JOB_FILE, record)
    return len(failures)


def forget_start_failures(run_dir: Path) -> None:
    """A retried or started run starts counting again."""
    record = read_job_record(run_dir)
    if record.get("start_failures"):
        record["start_failures"] = []
        store.atomic_write_json(Path(run_dir) / JOB_FILE, record)


def accounting_states(job_ids: list[str]) -> dict[str, str]:
    """Final states from the cluster's accounting (sacct: COMPLETED, CANCELLED, TIMEOUT, FAILED, ...), best effort:
    empty when accounting is off."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    states = {}
    for line in (_ask(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)]) or "").splitlines():
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
