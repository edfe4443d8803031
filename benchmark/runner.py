"""One run, end to end: `run_one(spec_path)` — the single entry point of every launcher (DESIGN §3.6).

Data (labels stay here) -> initial backbone -> method hooks -> a checkpoint after every epoch -> evaluation ->
metrics.json -> DONE. A run whose folder holds `ckpt/last.pt` resumes from it; a finished run returns its metrics.

Determinism: the run seed fixes the initial state; every epoch starts by reseeding torch from (seed, epoch), so the
batches and augmentations of epoch k+1 do not depend on whether the process restarted after epoch k. Together with
the checkpointed model, optimiser, scheduler and method state, a resumed run ends with the metrics of an uninterrupted
one (tests/test_runner.py checks it on the CPU).

Unreadable files are recovered from, never a crash of the run: a checkpoint that cannot be read is named in the log,
moved aside, and the run resumes from the one before (ckpt/previous.pt) or from epoch 0; a DONE run whose metrics.json
or spec.json cannot be read is evaluated again from its checkpoint.

Losses are summed on the device and checked once per epoch (no host synchronisation per step); a NaN or infinite loss
fails the run with its reason (FAILED) and the suite goes on.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from datasets.base import LabelledDomain, UnlabeledDomain
from datasets.locks import slurm_job
from methods import get_method_class
from methods.base import Batch, Method, Optimization, build_hparams, derive_seed
from methods.plugins import load_plugins

from . import store
from .acceleration import compile_backbones, configure_float32, use_compile_cache
from .catalogue import DEFAULT_DETECTOR_PREFIX
from .diagnostics import feature_diagnostics
from .evaluation import open_set_metrics, retrieval_metrics, tied_top_k
from .initialisation import build_initial_backbone
from .provenance import code_label, code_version, start_record
from .retrievals import store_retrieval_sample
from .spec import RunSpec, load_spec, load_split_domains

log = logging.getLogger("benchmark.run")

EMBED_BATCH_SIZE = 256


class NonFiniteLoss(RuntimeError):
    pass


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


PRECISIONS = ("fp32", "bf16")


def autocast_for(device: torch.device, precision: str = "fp32"):
    """The training step's numeric context: fp32, or bf16 autocast (matmuls and convolutions in bfloat16, reductions
    and losses in float32, as torch.autocast chooses). Launch option, not part of a run's identity, like the device."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def resolve_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass
class RunContext:
    """The FitContext a method receives: unlabeled domains and the fit's shape; no labels."""
    domains: tuple[UnlabeledDomain, UnlabeledDomain]
    device: torch.device
    epochs: int
    steps_per_epoch: int
    num_classes_hint: tuple[int, int]
    seed: int
    method: Method
    precision: str = "fp32"                                  # training steps: fp32 or bf16 autocast
    memory_format: torch.memory_format = torch.contiguous_format   # channels_last on GPUs with tensor cores

    @torch.no_grad()
    def embed_domain(self, domain_id: int, embed=None) -> torch.Tensor:
        embed = embed or self.method.embed
        domain = self.domains[domain_id]
        was_training = self.method.training
        self.method.eval()
        try:
            chunks = [embed(domain.images(torch.arange(i, min(i + EMBED_BATCH_SIZE, len(domain))), self.device))
                      for i in range(0, len(domain), EMBED_BATCH_SIZE)]
        finally:
            self.method.train(was_training)
        return torch.cat(chunks)


def epoch_indices(size: int, steps: int, batch_size: int) -> torch.Tensor:
    """[steps, batch_size] instance indices: shuffled passes over the domain, repeated as needed (the smaller domain
    is cycled), drop_last."""
    needed = steps * batch_size
    passes = [torch.randperm(size) for _ in range(math.ceil(needed / size))]
    return torch.cat(passes)[:needed].view(steps, batch_size)


@contextmanager
def run_logging(run_dir: Path):
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


def environment_record(device: torch.device, code: dict, from_epoch: int, earlier: dict | None = None) -> dict:
    """env.json: versions, host, device, SLURM ids and `code` (benchmark/provenance.py) of this start of the run, with
    every start so far in "starts" (`earlier`: the env.json of the run's previous starts)."""
    import numpy
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    starts = [s for s in (earlier or {}).get("starts", []) if isinstance(s, dict)]
    starts.append(start_record(code, from_epoch, platform.node(), slurm_job(), started))
    record = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
              "platform": platform.platform(), "host": platform.node(), "device": str(device),
              "git_sha": code["commit"], "code": code, "starts": starts, "started": started,
              "torch_threads": torch.get_num_threads(),
              "slurm": {k: v for k, v in os.environ.items() if k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID",
                                                                   "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")}}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


def load_launch_extensions(launch: store.Launch) -> None:
    """What a run needs from outside the harness, imported in this process: its plugins (methods) and its suite
    file (a folder dataset)."""
    load_plugins(launch.plugins)
    if launch.suite_file:
        from .suites import load_suite_file
        load_suite_file(launch.suite_file)


# Epochs this process has finished (any run), and where its run stands (epochs done, epochs in all): a SLURM task
# asks when its time limit comes (benchmark/slurm.py)
epochs_finished = 0
position: tuple[int, int] | None = None
# Set by a SLURM task's signal handler when the cluster stops the job (time limit, preemption): what then unwinds
# through the run is an interruption, not a failure of the run
interruption: str | None = None


def note_interruption(reason: str) -> None:
    global interruption
    interruption = reason


def run_one(spec_path, *, stop_after_epochs: int | None = None, device: str | None = None) -> dict:
    """Train and evaluate the run whose spec.json is given; returns its metrics (from the store if already done).

    One process at a time trains a run: this one holds the run's lock (`store.RunFolder.exclusive`) from before it
    reads the checkpoint until DONE, and raises `store.RunBusy` — leaving the folder alone — when another holds it.

    `device` overrides launch.json's (a local launcher spreading its jobs over several GPUs).

    `stop_after_epochs` stops after that many epochs in this call, leaving the run incomplete with its checkpoint
    (tests use it to simulate a killed run)."""
    folder = store.RunFolder(Path(spec_path).parent)
    if folder.status() == "done":
        return folder.read_metrics()
    with folder.exclusive():
        if folder.status() == "done":             # finished by the process that held the lock a moment ago
            return folder.read_metrics()
        spec = folder.read_spec()
        launch = folder.read_launch().with_device(device)
        load_launch_extensions(launch)            # this process may be a worker or a SLURM task
        with run_logging(folder.path):
            if (folder.path / "DONE").is_file():     # done, but its metrics cannot be read: evaluate again
                for name, (reason, aside) in folder.move_unreadable_aside().items():
                    log.error("%s is unreadable (%s)%s; the run is evaluated again from its checkpoint",
                              folder.path / name, reason, f": moved to {aside.name}" if aside else "")
            try:
                return _train_and_evaluate(spec, folder, launch, stop_after_epochs)
            except NonFiniteLoss as error:
                log.error("run failed: %s", error)
                folder.mark_failed(str(error))
                raise
            except Exception as error:
                if interruption is not None:      # the cluster stopped the job: the run stays as it is
                    log.warning("run interrupted: %s", interruption)
                    raise
                log.error("run failed:\n%s", traceback.format_exc())
                folder.mark_failed(f"{type(error).__name__}: {error}")
                raise


def _train_and_evaluate(spec: RunSpec, folder: store.RunFolder, launch: store.Launch,
                        stop_after_epochs: int | None) -> dict:
    global epochs_finished, position
    started = time.time()
    run_dir = folder.path
    data_root, cache_dir = launch.data_path, launch.cache_path(run_dir)
    device = resolve_device(launch.device)
    log.info("run %s: %s %s %s->%s seed %d on %s", spec.run_id, spec.method, spec.setting, spec.query_domain,
             spec.retrieval_domain, spec.seed, device)

    configure_float32(device, launch.tf32)
    setup_started = time.time()
    query, retrieval, method, ctx = _prepare_fit(spec, launch, data_root, cache_dir, device)
    if launch.compile:
        compile_folder = use_compile_cache(cache_dir)
        log.info("compiling %d backbone trunk(s) with torch.compile (cache: %s)", compile_backbones(method),
                 compile_folder)
    setup_seconds = time.time() - setup_started
    hparams = method.hparams
    optimization = Optimization.of(method.configure_optimizers())
    optimizers, schedulers = optimization.optimizers, optimization.schedulers
    first_epoch, history = 0, []
    found = folder.readable_checkpoint(lambda path: _read_checkpoint(path, device), log.error)
    if found is not None:
        checkpoint_path, checkpoint = found
        method.load_state_dict(checkpoint["method"])
        for optimizer, state in zip(optimizers, checkpoint["optimizers"]):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(schedulers, checkpoint["schedulers"]):
            scheduler.load_state_dict(state)
        first_epoch, history = checkpoint["epoch"], checkpoint["history"]
        log.info("resumed from %s after epoch %d", checkpoint_path, first_epoch)
    elif folder.had_unreadable_checkpoints():
        log.warning("no readable checkpoint left: the run starts again from epoch 0")
    code = code_version(launch.plugins)
    folder.write_environment(environment_record(device, code, first_epoch, folder.read_environment()))
    log.info("code: %s", code_label(code))

    position = (first_epoch, hparams.epochs)
    board = TensorBoardLog(run_dir, history) if launch.tensorboard else None
    for epoch in range(first_epoch, hparams.epochs):
        if stop_after_epochs is not None and epoch - first_epoch >= stop_after_epochs:
            log.info("stopping after %d epoch(s) as asked; the run stays incomplete", stop_after_epochs)
            return {}
        epoch_started = time.time()
        history.append(_train_epoch(method, ctx, optimization, epoch))
        for scheduler in optimization.epoch_schedulers:
            scheduler.step()
        history[-1]["seconds"] = round(time.time() - epoch_started, 3)
        folder.save_checkpoint({
            "epoch": epoch + 1, "history": history, "method": method.state_dict(),
            "optimizers": [o.state_dict() for o in optimizers], "schedulers": [s.state_dict() for s in schedulers]})
        if board is not None:
            board.epoch(history[-1])
        epochs_finished += 1
        position = (epoch + 1, hparams.epochs)
        log.info("epoch %d/%d %s", epoch + 1, hparams.epochs,
                 " ".join(f"{k}={v:.4f}" for k, v in history[-1].items() if k != "epoch"))

    evaluation_started = time.time()
    metrics = evaluate(method, ctx, query, retrieval, spec, run_dir=run_dir)
    log.info("metrics: %s", json.dumps(metrics))
    if board is not None:
        board.metrics(metrics, hparams.epochs)
    # seconds: this process's wall time; setup (data, backbone, on_fit_start) and evaluation apart (with --compile,
    # compiling falls in the first epoch and the evaluation), so that a run's cost (benchmark/cost.py) is setup +
    # every epoch's seconds (kept across resumptions) + evaluation
    folder.write_metrics({
        "metrics": metrics, "history": history, "seconds": round(time.time() - started, 3),
        "setup_seconds": round(setup_seconds, 3), "evaluation_seconds": round(time.time() - evaluation_started, 3)})
    folder.mark_done()
    return metrics


class TensorBoardLog:
    """`--tensorboard`: a run's history (loss terms and logged method statistics, one point per epoch, under
    "train/") and its final metrics (under "metrics/", at the last epoch) as event files in <run>/tensorboard, so
    that `tensorboard --logdir results/runs` shows a sweep. Needs the optional extra `tensorboard`.

    Every start of the run writes the event files anew from the checkpoint's history: a run resumed after a kill
    (from last.pt, or from previous.pt when last.pt was unreadable) or evaluated again has one value per step, never
    the steps an earlier process wrote beyond its checkpoint, or its metrics, twice."""

    def __init__(self, run_dir: Path, history: list[dict] = ()):
        import shutil

        from torch.utils.tensorboard import SummaryWriter
        folder = Path(run_dir) / "tensorboard"
        shutil.rmtree(folder, ignore_errors=True)
        self.writer = SummaryWriter(log_dir=str(folder))
        for entry in history:
            self.epoch(entry)

    def epoch(self, entry: dict) -> None:
        for name, value in entry.items():
            if name != "epoch":
                self.writer.add_scalar(f"train/{name}", value, entry["epoch"])
        self.writer.flush()

    def metrics(self, metrics: dict, epoch: int) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"metrics/{name}", value, epoch)
        self.writer.close()


CHECKPOINT_KEYS = ("epoch", "history", "method", "optimizers", "schedulers")


def _read_checkpoint(path: Path, device: torch.device) -> dict:
    """A checkpoint read whole before any of it is applied (a damaged one must not leave a half-loaded method)."""
    checkpoint = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(checkpoint, dict) or not set(CHECKPOINT_KEYS) <= set(checkpoint):
        raise ValueError(f"not a checkpoint of this harness (expected the keys {', '.join(CHECKPOINT_KEYS)})")
    return checkpoint


def _prepare_fit(spec: RunSpec, launch: store.Launch, data_root, cache_dir, device: torch.device):
    """The split's labelled domains, the method on its initial backbone after `on_fit_start`, and its context."""
    query, retrieval = load_split_domains(spec, data_root, cache_dir)
    seed_everything(spec.seed)
    backbone = build_initial_backbone(spec.backbone, cache_dir, data_root, device,
                                      pretrained=launch.pretrained)
    method_cls = get_method_class(spec.method)
    hparams = build_hparams(method_cls, spec.hparams)
    seed_everything(spec.seed)
    method = method_cls(hparams, backbone).to(device)
    # channels_last speeds up convolutions; a ViT's only one is its patch embedding, so it stays contiguous
    channels_last = launch.channels_last and backbone.family == "cnn"
    if launch.channels_last and not channels_last:
        log.info("--channels-last has no effect on a %s backbone (a ViT): batches and weights stay contiguous",
                 spec.backbone["arch"])
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    method.to(memory_format=memory_format)
    domains = (query.unlabeled(0), retrieval.unlabeled(1))
    steps = method.steps_per_epoch(len(domains[0]), len(domains[1]))
    ctx = RunContext(domains, device, hparams.epochs, steps, spec.num_classes_hint, spec.seed, method,
                     precision=launch.precision, memory_format=memory_format)
    seed_everything(derive_seed(spec.seed, "fit_start"))
    method.on_fit_start(ctx)
    method.to(device)
    return query, retrieval, method, ctx


def trained_features(run_dir, device: str = "cpu"):
    """The retrieval features of a stored run's last checkpoint (the initial model when it trained no epoch), for
    label-using analyses outside the methods (benchmark/mechanism.py). Returns (query features [Q, d], query labels
    [Q], retrieval features [G, d], retrieval labels [G], the method). Raises FileNotFoundError without spec.json."""
    run_dir = Path(run_dir)
    spec = load_spec(run_dir / "spec.json")
    launch = store.read_launch(run_dir)
    load_launch_extensions(launch)
    query, retrieval, method, ctx = _prepare_fit(spec, launch, launch.data_path, launch.cache_path(run_dir),
                                                 torch.device(device))
    found = store.readable_checkpoint(run_dir, lambda path: _read_checkpoint(path, torch.device(device)), log.error)
    if found is not None:
        method.load_state_dict(found[1]["method"])
    method.eval()
    return ctx.embed_domain(0), query.labels, ctx.embed_domain(1), retrieval.labels, method


def _train_epoch(method: Method, ctx: RunContext, optimization: Optimization, epoch: int) -> dict:
    log.info("epoch %d/%d started", epoch + 1, ctx.epochs)     # where a killed run stood, read from its log
    seed_everything(derive_seed(ctx.seed, "epoch", epoch))
    method.train()
    method.start_epoch(epoch, ctx)
    batch_size = method.hparams.batch_size
    order = [epoch_indices(len(domain), ctx.steps_per_epoch, batch_size) for domain in ctx.domains]
    totals: dict[str, torch.Tensor] = {}
    for step in range(ctx.steps_per_epoch):
        batches = [Batch(domain.images(order[d][step], ctx.device).contiguous(memory_format=ctx.memory_format),
                         order[d][step].to(ctx.device), d)
                   for d, domain in enumerate(ctx.domains)]
        with autocast_for(ctx.device, ctx.precision):
            losses = method.training_step(batches[0], batches[1], epoch * ctx.steps_per_epoch + step)
        for optimizer in optimization.optimizers:
            optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        for optimizer in optimization.optimizers:
            optimizer.step()
        method.after_optimizer_step(epoch * ctx.steps_per_epoch + step)
        for scheduler in optimization.step_schedulers:
            scheduler.step()
        for name, value in losses.items():
            value = value.detach().float()
            totals[name] = totals[name] + value if name in totals else value
    summary = {name: (total / ctx.steps_per_epoch).item() for name, total in totals.items()}
    bad = [name for name, value in summary.items() if not math.isfinite(value)]
    if bad:
        raise NonFiniteLoss(f"non-finite loss at epoch {epoch + 1}: " + ", ".join(f"{n}={summary[n]}" for n in bad))
    return {"epoch": epoch + 1, **summary, **method.pop_epoch_log()}


def evaluate(method: Method, ctx: RunContext, query: LabelledDomain, retrieval: LabelledDomain,
             spec: RunSpec, run_dir: Path | None = None) -> dict:
    """Retrieval features of both domains (the last epoch's model: no selection on labels), then the metrics and the
    label-free diagnostics of the features (benchmark/diagnostics.py).

    With `run_dir`, also stores the figures' retrieval sample there (`RETRIEVALS_FILE`)."""
    method.eval()
    query_features = ctx.embed_domain(0)
    retrieval_features = ctx.embed_domain(1)
    metrics = retrieval_metrics(query_features, query.labels, retrieval_features, retrieval.labels, ks=spec.ks)
    metrics.update(feature_diagnostics(query_features, retrieval_features,
                                       tied_top_k(query_features, retrieval_features, max(spec.ks))))
    private = None
    if spec.setting == "open":
        private = method.detect_private(query_features, retrieval_features, num_clusters=spec.num_classes_hint[0],
                                        seed=derive_seed(spec.seed, "detector"))
        metrics.update(open_set_metrics(query_features, query.labels, retrieval_features, retrieval.labels,
                                        private.cpu(), ks=spec.ks))
        # Every open-set run is also scored with the paper's baseline detector (App. B.2), so a method with its own
        # detector (UEM, App. B.1) can be read beside it and every method compared under one detector.
        if type(method).detect_private is Method.detect_private:
            baseline_scores = metrics
        else:
            baseline = Method.detect_private(method, query_features, retrieval_features,
                                             num_clusters=spec.num_classes_hint[0],
                                             seed=derive_seed(spec.seed, "detector"))
            baseline_scores = open_set_metrics(query_features, query.labels, retrieval_features, retrieval.labels,
                                               baseline.cpu(), ks=spec.ks)
        metrics.update({f"{DEFAULT_DETECTOR_PREFIX}{k}": baseline_scores[k] for k in
                        ("open_set_acc", "detection_acc", "shared_false_null_rate")})
    if run_dir is not None:
        store_retrieval_sample(run_dir, spec, query_features, query, retrieval_features, retrieval,
                               None if private is None else private.cpu())
    return metrics
