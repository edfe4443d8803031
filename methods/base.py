"""The Method interface (DESIGN §3.2): the harness owns the loop, a method supplies hooks.

Lifecycle, driven by `benchmark.runner`:

    method = MethodClass(hparams, backbone)
    method.on_fit_start(ctx)                 # e.g. fill memory banks (also called when resuming, before the
                                             # checkpoint is loaded over it, so data-sized buffers exist)
    optimizers = method.configure_optimizers()
    for epoch in range(hparams.epochs):
        method.on_epoch_start(epoch, ctx)    # e.g. k-means, stage switches
        for step in ...:
            losses = method.training_step(batch_a, batch_b, step)   # harness back-propagates losses["loss"]
            method.on_train_batch_end(step)                           # after the optimiser step
    features = method.embed(images)          # L2-normalised retrieval features
    private = method.detect_private(query_features, retrieval_features, ...)   # open-set "null"

A method sees only `Batch` objects and the `FitContext`: images, instance indices, domain ids — never labels
(DESIGN §3.1). `state_dict()` / `load_state_dict()` are nn.Module's: register banks and prototypes as buffers, and
return any non-tensor state (a stage flag, a cluster count) from `get_extra_state`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import typing
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import nn

from .augment import crop_flip_view
from .backbones import EmbeddingNet
from .memory_bank import MemoryBank
from .open_set import cluster_radius_detector


DOMAIN_ROLES = ("query", "retrieval")     # domain 0 and domain 1, as logged names say them


@dataclass
class Batch:
    """One domain's mini-batch as a method receives it."""
    images: torch.Tensor      # float [B, 3, S, S] in [0, 1], on the run's device; methods augment it themselves
    index: torch.Tensor       # int64 [B], instance indices into the domain (for memory banks)
    domain_id: int            # 0 = query domain (A), 1 = retrieval domain (B)


class FitContext(Protocol):
    """What the harness tells a method about the fit. No labels; `num_classes_hint` is the protocol's declared
    exception (DESIGN §3.1) for methods that need a cluster count."""
    domains: tuple            # (UnlabeledDomain A, UnlabeledDomain B)
    device: torch.device
    epochs: int
    steps_per_epoch: int
    num_classes_hint: tuple[int, int]
    seed: int

    def embed_domain(self, domain_id: int, embed=None) -> torch.Tensor:
        """Features of every image of a domain (eval mode, no augmentation, no grad), by `embed` (default: the
        method's `embed`)."""


@dataclass
class BaseHparams:
    """Every method has a budget: epochs and the batch size per domain. Method Hparams extend this."""
    epochs: int = 1
    batch_size: int = 64


class Method(nn.Module):
    name: ClassVar[str] = "?"                 # set by @register
    Hparams: ClassVar[type] = BaseHparams
    # Per-dataset budget/hyper-parameter overrides on top of the dataclass defaults (e.g. the quickstart's scaled
    # budget under "synthetic"); the suite and `--set` come after these.
    dataset_overrides: ClassVar[dict[str, dict]] = {}
    # The method's own distance for the baseline open-set detector (UEM App. B.2): "cosine" or "euclidean".
    open_set_distance: ClassVar[str] = "cosine"
    # A registered ablation of another method (e.g. "uem"): left out of suites that list no methods, kept for
    # ablation suites and `--methods`.
    variant_of: ClassVar[str | None] = None
    # The start of the method's own paper when it is not the suite's (UEM runs every baseline from MoCo v2 for a
    # fair comparison): "imagenet_supervised" for torchvision's ImageNet weights. Used with `--baseline-init native`.
    native_init: ClassVar[str | None] = None

    @classmethod
    def derive_hparams(cls, values: dict) -> dict:
        """Hyper-parameters computed from others (e.g. total epochs = stage 1 + stage 2), after every override."""
        return values

    def __init__(self, hparams, backbone: EmbeddingNet):
        super().__init__()
        self.hparams = hparams
        self.backbone = backbone
        self._epoch_log: dict[str, float] = {}

    def log(self, name: str, value) -> None:
        """Record a decision of the current epoch (a cluster count, merged pairs, a weight) under `name`, from any
        hook: the runner writes the last value logged in an epoch into the run's history beside the loss terms.
        Per-step quantities (an accept rate) go in `training_step`'s dict instead, which the runner averages."""
        self._epoch_log[name] = float(value)

    def pop_epoch_log(self) -> dict[str, float]:
        """The values `log` recorded since the last call (the runner calls it at the end of every epoch)."""
        logged, self._epoch_log = self._epoch_log, {}
        return logged

    def check_choices(self, **allowed) -> None:
        """Refuse a switch outside its values, e.g. `self.check_choices(head=("init", "linear"))`."""
        for name, values in allowed.items():
            value = getattr(self.hparams, name)
            if value not in values:
                raise ValueError(f"{self.name}: {name} must be one of {', '.join(map(str, values))}, "
                                 f"got {value!r}")

    def choose_head(self) -> None:
        """The `head` switch of the methods whose code puts a fresh fc on the trunk (CDS, PCS, CoDA): "init" keeps
        the initial model's projection head, "linear" puts the paper's fresh Linear(trunk -> `head_dim`)."""
        self.check_choices(head=("init", "linear"))
        if self.hparams.head == "linear":
            self.backbone.replace_head("linear", self.hparams.head_dim)

    def filled_banks(self, ctx) -> nn.ModuleList:
        """One memory bank per domain, filled before training (CDS, PCS, CoDA, UEM). A `bank_fill` switch of
        "train_transform" fills them as the PCS / CoDA code does, with one crop + flip view per image (eval mode);
        otherwise with the method's eval features."""
        train_transform = getattr(self.hparams, "bank_fill", "eval") == "train_transform"
        fill = (lambda images: self.backbone(crop_flip_view(images))) if train_transform else None
        banks = nn.ModuleList([MemoryBank(len(d), self.backbone.embed_dim).to(ctx.device) for d in ctx.domains])
        for domain_id, bank in enumerate(banks):
            bank.fill(ctx.embed_domain(domain_id, fill))
        return banks

    # --- hooks -------------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        """An optimizer, a list of them, or (optimizers, per-epoch LR schedulers). Empty for untrained methods."""
        return []

    def on_fit_start(self, ctx: FitContext) -> None:
        pass

    def on_epoch_start(self, epoch: int, ctx: FitContext) -> None:
        pass

    def training_step(self, batch_a: Batch, batch_b: Batch, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} trains but defines no training_step")

    def on_train_batch_end(self, step: int) -> None:
        """After the optimiser step (e.g. memory-bank updates with the features of this step)."""

    def steps_per_epoch(self, size_a: int, size_b: int) -> int:
        """Default epoch: one pass over the larger domain (the smaller one is cycled), drop_last, at least 1 step."""
        return max(1, max(size_a, size_b) // self.hparams.batch_size)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised retrieval features of images in [0, 1]."""
        return self.backbone(images)

    def detect_private(self, query_features: torch.Tensor, retrieval_features: torch.Tensor, *,
                       num_clusters: int, seed: int) -> torch.Tensor:
        """Bool [Q]: True where the method returns null (query of a class absent from the retrieval domain).
        Default: the paper's baseline detector (App. B.2) with the method's own distance."""
        return cluster_radius_detector(query_features, retrieval_features, num_clusters=num_clusters, seed=seed,
                                       distance=self.open_set_distance)


def both_domains(batch_a: Batch, batch_b: Batch) -> tuple[torch.Tensor, list[int]]:
    """The two domains' images in one tensor (A, then B) and the size of each part: one forward pass over both,
    split back with `.split(sizes)`."""
    return torch.cat([batch_a.images, batch_b.images]), [len(batch_a.images), len(batch_b.images)]


# --- seeds and optimisation shared by several methods ---------------------------------------------------------

def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (never Python's salted hash()): the harness's per-epoch seeds, a method's
    k-means seeds."""
    return int(hashlib.sha1(repr(parts).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def cosine_factor(epoch: int, epochs: int) -> float:
    """lr factor 0.5 (1 + cos(pi e / E)): from 1 at epoch 0 towards 0 at epoch E, stepped once per epoch (MoCo v2,
    UCDIR, DGDIR; UEM per stage)."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))


def sgd_with_cosine(parameters, hparams):
    """SGD (lr, momentum, weight_decay of `hparams`) with the per-epoch cosine decay over `hparams.epochs`, in the
    (optimisers, schedulers) form `configure_optimizers` returns."""
    optimizer = torch.optim.SGD(parameters, lr=hparams.lr, momentum=hparams.momentum,
                                weight_decay=hparams.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: cosine_factor(epoch, hparams.epochs))
    return [optimizer], [schedule]


# --- hyper-parameter resolution ----------------------------------------------------------------------------------

class HparamError(ValueError):
    pass


def hparam_fields(method_cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(method_cls.Hparams)}


def _coerce(value, annotation, key: str):
    """Convert a `--set` string (or a JSON value) to the field's declared type."""
    kind = annotation if isinstance(annotation, type) else None
    if isinstance(annotation, str):
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(annotation)
    if kind is None or not isinstance(value, str):
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    try:
        if kind is bool:
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return kind(value)
    except ValueError:
        raise HparamError(f"hyper-parameter {key}={value!r}: expected a value of type {kind.__name__}") from None


def resolve_hparams(method_cls, dataset: str, overrides: dict | None = None) -> dict:
    """Dataclass defaults, then the method's overrides for this dataset, then `overrides` (suite, --set)."""
    fields = hparam_fields(method_cls)
    hints = typing.get_type_hints(method_cls.Hparams)
    values = {name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
              for name, f in fields.items()}
    for source in (method_cls.dataset_overrides.get(dataset, {}), overrides or {}):
        for key, value in source.items():
            if key not in fields:
                raise HparamError(f"method {method_cls.name!r} has no hyper-parameter {key!r}; "
                                  f"its hyper-parameters are: {', '.join(sorted(fields))}")
            values[key] = _coerce(value, hints.get(key, fields[key].type), key)
    return method_cls.derive_hparams(values)


def build_hparams(method_cls, resolved: dict):
    return method_cls.Hparams(**resolved)
