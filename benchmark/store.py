"""The results store (DESIGN §3.4): run folders, atomic writes, and a run's status read from its files alone.

    <output>/runs/<dataset>/<setting>/<query>-<retrieval>/<method>/seed<seed>-<hash>/
        spec.json      the run spec (canonical JSON; its hash names the folder)
        launch.json    where to find data and cache, which device (not part of the identity)
        run.lock       held (flock) by the one process that trains the run, from before it reads the checkpoint to
                       DONE; run.lock.holder says who (host, pid, SLURM job, since when)
        env.json       versions, device, host, SLURM ids, and the code that made the run: the commit, whether the
                       tree was dirty and a hash of the diff, for every start of the run (benchmark/provenance.py)
        tensorboard/   (--tensorboard) the history and metrics as TensorBoard event files
        log.txt        the run's log
        ckpt/last.pt   the last finished epoch (model, optimisers, method state); ckpt/previous.pt the one before
                       (kept until the run is done: an unreadable last.pt is moved aside and the run resumes from it)
        metrics.json   the evaluation
        retrievals.json  the top k of a fixed sample of queries (benchmark/figures.py)
        slurm.json     the SLURM job that runs it (--launcher slurm; benchmark/slurm.py)
        DONE           written last — or FAILED, with the reason

Status: `done` (DONE, with a readable spec.json and metrics.json), `failed` (FAILED), `incomplete` (a folder without
either — crashed, killed or still running — or a DONE run whose spec.json or metrics.json cannot be read:
`unreadable_files` names them, and running the run again evaluates it again from its checkpoint), `missing` (no
folder). Whether a process trains an incomplete run now is its lock's to say (`RunFolder.holder`).

`RunFolder` is the one owner of a run folder's files for the process that trains the run (benchmark/runner.py): its
lock, checkpoints, environment record, metrics and status. The module's functions read and write single files for
the census and the reports.
"""
from __future__ import annotations

import json
import os
import time
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from datasets.cache import atomic_torch_save  # noqa: F401  (re-exported: the store's writer of checkpoints)
from datasets.cache import atomic_write
from datasets.locks import describe_holder, held_by, try_lock

from .spec import RunSpec


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n")


def _check_spec(path: Path) -> None:
    RunSpec.from_dict(json.loads(path.read_text()))


def _check_metrics(path: Path) -> None:
    if not isinstance(json.loads(path.read_text())["metrics"], dict):
        raise ValueError("its 'metrics' is not a mapping")


def unreadable_files(run_dir: Path) -> dict[str, str]:
    """The files a done run needs (spec.json, metrics.json) that cannot be read: file name -> why."""
    problems = {}
    for name, check in (("spec.json", _check_spec), ("metrics.json", _check_metrics)):
        try:
            check(Path(run_dir) / name)
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems[name] = f"{type(error).__name__}: {error}"
    return problems


def run_status(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    if (run_dir / "DONE").is_file():
        return "incomplete" if unreadable_files(run_dir) else "done"
    if (run_dir / "FAILED").is_file():
        return "failed"
    if run_dir.is_dir():
        return "incomplete"
    return "missing"


def move_aside(path: Path) -> Path:
    """Rename an unreadable file to `<name>.unreadable-<time>` beside it (kept for a look, never read again)."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    return aside


def moved_aside(run_dir: Path) -> list[Path]:
    """The files of a run moved aside as unreadable (checkpoints, metrics, spec), oldest first."""
    return sorted(Path(run_dir).rglob("*.unreadable-*"))


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints: the last two finished epochs
# ---------------------------------------------------------------------------------------------------------------------

CHECKPOINTS = ("last.pt", "previous.pt")     # newest first


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """ckpt/last.pt := `state` (written and fsynced under a temporary name), the former last.pt kept as previous.pt.
    A crash between the two renames leaves previous.pt alone, which `readable_checkpoint` falls back to."""
    folder = Path(run_dir) / "ckpt"
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / ".next.pt"
    atomic_torch_save(staged, state)
    _chaos_pause()
    if (folder / "last.pt").is_file():
        os.replace(folder / "last.pt", folder / "previous.pt")
    _chaos_pause()
    os.replace(staged, folder / "last.pt")


CHAOS_PAUSE_VARIABLE = "CDR_CHAOS_CHECKPOINT_PAUSE_S"


def _chaos_pause() -> None:
    """tests/test_chaos.py widens the moments between a checkpoint's write and its renames (seconds, from this
    environment variable) so that its disturbances can land inside them; unset, nothing happens."""
    pause = os.environ.get(CHAOS_PAUSE_VARIABLE)
    if pause:
        time.sleep(float(pause))


def readable_checkpoint(run_dir: Path, load, report) -> tuple[Path, dict] | None:
    """The newest checkpoint that `load(path)` can read, as (path, what it returned); an unreadable one is moved
    aside (`move_aside`) and reported through `report(message)`. None when no checkpoint can be read."""
    for name in CHECKPOINTS:
        path = Path(run_dir) / "ckpt" / name
        if not path.is_file():
            continue
        try:
            return path, load(path)
        except Exception as error:       # truncated, zeroed, not a checkpoint: any reason to not trust it
            aside = move_aside(path)
            report(f"checkpoint {path} is unreadable ({type(error).__name__}: {error}); moved to {aside.name}")
    return None


def checkpoint_looks_readable(path: Path) -> bool:
    """A cheap check for the census, without loading: torch checkpoints are zip archives, and a truncated one has
    lost its central directory (read from the end of the file)."""
    try:
        with zipfile.ZipFile(path):
            return True
    except (OSError, zipfile.BadZipFile):
        return False


@dataclass(frozen=True)
class Launch:
    """launch.json: where and how a run is carried out (not part of its identity). The one reader is `read_launch`.

    data_root: the --data-root folder (None: the embedded synthetic data); cache_dir: the shared cache (synthetic
    data, decoded images, initial backbones); device: "auto", "cpu", "cuda", "cuda:1"; precision: "fp32" or "bf16"
    (the training steps' autocast); channels_last: the NHWC memory format; pretrained: a weights file given with
    --pretrained; plugins: the files or modules that register methods from outside the harness (methods/plugins.py),
    imported again by every process that runs the run; compile, tf32: benchmark/acceleration.py."""
    data_root: str | None = None
    cache_dir: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    pretrained: str | None = None
    plugins: tuple[str, ...] = ()
    suite_file: str | None = None      # a TOML suite's file: loaded again where the run runs (its dataset, plugins)
    tensorboard: bool = False          # each epoch's history and the final metrics as TensorBoard scalars
    compile: bool = False              # torch.compile of the backbones' trunks (benchmark/acceleration.py)
    tf32: bool = True                  # CUDA: TF32 for float32 matmuls and convolutions (False: IEEE float32)

    @classmethod
    def of(cls, values: "Launch | dict | None") -> "Launch":
        """A Launch from a dict of its fields (ValueError naming any other key)."""
        if isinstance(values, Launch):
            return values
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"launch.json: unknown key(s) {unknown}; expected {[f.name for f in fields(cls)]}")
        if "plugins" in values:
            values["plugins"] = tuple(values["plugins"] or ())
        return cls(**values)

    def with_device(self, device: str | None) -> "Launch":
        return self if device is None else Launch(**{**asdict(self), "device": device})

    @property
    def data_path(self) -> Path | None:
        return Path(self.data_root) if self.data_root else None

    def cache_path(self, run_dir: Path) -> Path:
        """The recorded cache folder; for a results folder moved from another machine (the recorded folder's parent
        does not exist here) or a launch without one, `<output>/cache` beside the run's `runs/` folder."""
        if self.cache_dir and (Path(self.cache_dir).is_dir() or Path(self.cache_dir).parent.is_dir()):
            return Path(self.cache_dir)
        return output_root_of(run_dir) / "cache"


def output_root_of(run_dir: Path) -> Path:
    """The --output folder of a run folder (`<output>/runs/<dataset>/<setting>/<pair>/<method>/<seed-hash>`)."""
    return Path(run_dir).parents[5]


def read_launch(run_dir: Path) -> Launch:
    """The run's launch.json (defaults when it has none; a damaged one is refused with its path)."""
    path = Path(run_dir) / "launch.json"
    if not path.is_file():
        return Launch()
    try:
        return Launch.of(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: unreadable launch record ({error})") from None


def stored_specs(output_root: Path, dataset: str | None = None) -> list[RunSpec]:
    """The specs of every run folder under `<output>/runs` (of one dataset), whatever plan made them; folders whose
    spec.json cannot be read are skipped (the census names them)."""
    from .spec import load_spec
    base = Path(output_root) / "runs" / (dataset or "")
    specs = []
    for path in sorted(base.glob("**/spec.json")):
        try:
            specs.append(load_spec(path))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return specs


def prepare_run_dir(spec: RunSpec, output_root: Path, launch: "Launch | dict") -> Path:
    """Create the folder with spec.json and launch.json (idempotent); returns the folder. A spec.json that is not the
    spec's canonical text (damaged: the folder's name is its hash) is moved aside and written again."""
    run_dir = spec.run_dir(output_root)
    spec_path = run_dir / "spec.json"
    text = spec.canonical_json() + "\n"
    if spec_path.is_file():
        try:
            intact = spec_path.read_text() == text
        except (OSError, UnicodeDecodeError):
            intact = False
        if not intact:
            move_aside(spec_path)
    if not spec_path.is_file():
        atomic_write_text(spec_path, text)
    atomic_write_json(run_dir / "launch.json", asdict(Launch.of(launch)))
    return run_dir


def mark_done(run_dir: Path) -> None:
    (Path(run_dir) / "FAILED").unlink(missing_ok=True)
    atomic_write_text(Path(run_dir) / "DONE", "done\n")
    (Path(run_dir) / "ckpt" / "previous.pt").unlink(missing_ok=True)      # a done run keeps its last epoch only


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


# ---------------------------------------------------------------------------------------------------------------------
# One run folder, for the process that trains the run
# ---------------------------------------------------------------------------------------------------------------------

LOCK_FILE = "run.lock"
RUN_LOCK_REMEDY = ("Run folders need them so that two launches never train one run at once: put --output on a file "
                   "system with working locks (NFS with its lock manager, Lustre mounted with -o flock, GPFS) or on a "
                   "local disk.")


class RunBusy(RuntimeError):
    """Another process trains this run now (it holds the run's lock): this one leaves the run alone."""

    def __init__(self, run_dir: Path, holder: dict):
        self.run_dir, self.holder = Path(run_dir), holder
        super().__init__(f"{run_dir} is being trained by {describe_holder(holder)}; left to it")


def run_holder(run_dir: Path) -> dict | None:
    """Who trains the run now (its lock's holder record: host, pid, job, since), or None when nobody does."""
    return held_by(Path(run_dir) / LOCK_FILE)


class RunFolder:
    """A run's folder, as the process that trains the run sees it: `with folder.exclusive():` holds the run's lock
    (RunBusy when another process holds it; LockUnavailable where --output's file system cannot lock), and inside
    it the folder's files are read and written through this object."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir)

    @property
    def spec_path(self) -> Path:
        return self.path / "spec.json"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    def status(self) -> str:
        return run_status(self.path)

    def read_spec(self) -> RunSpec:
        from .spec import load_spec
        return load_spec(self.spec_path)

    def read_launch(self) -> "Launch":
        return read_launch(self.path)

    def read_metrics(self) -> dict:
        return read_metrics(self.path)

    @contextmanager
    def exclusive(self):
        """Hold the run's lock for the block; the operating system releases it if this process dies."""
        lock = try_lock(self.path / LOCK_FILE, RUN_LOCK_REMEDY)
        if lock is None:
            raise RunBusy(self.path, run_holder(self.path) or {})
        try:
            yield self
        finally:
            lock.release()

    def move_unreadable_aside(self) -> dict[str, tuple[str, Path | None]]:
        """A DONE run whose spec.json or metrics.json cannot be read: each such file moved aside and DONE removed,
        so the run is evaluated again. Returns file name -> (why, where it went)."""
        moved = {}
        for name, reason in unreadable_files(self.path).items():
            moved[name] = (reason, move_aside(self.path / name) if (self.path / name).is_file() else None)
        (self.path / "DONE").unlink(missing_ok=True)
        return moved

    def readable_checkpoint(self, load, report) -> tuple[Path, dict] | None:
        return readable_checkpoint(self.path, load, report)

    def had_unreadable_checkpoints(self) -> bool:
        return bool(moved_aside(self.path / "ckpt"))

    def save_checkpoint(self, state: dict) -> None:
        save_checkpoint(self.path, state)

    def read_environment(self) -> dict:
        try:
            record = json.loads((self.path / "env.json").read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def write_environment(self, record: dict) -> None:
        atomic_write_json(self.path / "env.json", record)

    def write_metrics(self, record: dict) -> None:
        atomic_write_json(self.path / "metrics.json", record)

    def mark_done(self) -> None:
        mark_done(self.path)

    def mark_failed(self, reason: str) -> None:
        mark_failed(self.path, reason)
