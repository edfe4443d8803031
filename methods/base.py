"""The Method interface (DESIGN §3.2): the harness owns the loop, a method supplies hooks.

Lifecycle, driven by `benchmark.runner` (`_prepare_fit`, `_train_and_evaluate`, `_train_epoch`, `evaluate`):

    method = MethodClass(hparams, backbone)       # build modules; no data yet
    method.on_fit_start(ctx)                      # fill memory banks, build data-sized buffers
    optimization = method.configure_optimizers()  # optimisers and their epoch / step schedulers
    (a checkpoint, if any, is loaded here: method, optimisers, schedulers)
    for epoch in range(hparams.epochs):
        method.start_epoch(epoch, ctx)            # sets `method.epoch`, then calls on_epoch_start
        for step in range(ctx.steps_per_epoch):
            losses = method.training_step(batch_a, batch_b, global_step)
            losses["loss"].backward(); optimizer.step() for each optimiser
            method.after_optimizer_step(global_step)   # commits staged bank / queue / EMA updates, then
                                                       # on_train_batch_end; then the step schedulers step
        epoch schedulers step; checkpoint
    features = method.embed(images)               # L2-normalised retrieval features (eval mode, no grad)
    private = method.detect_private(...)          # open-set "null" (open setting only)

What each hook may touch:

- `__init__(hparams, backbone)`: build sub-modules and read `hparams`; no data, no device (the runner moves the
  method to its device afterwards).
- `on_fit_start(ctx)`: the unlabeled domains (`ctx.embed_domain`, `ctx.domains`), to build data-sized state (banks,
  queues). Runs on resume too, before the checkpoint is loaded over it, so those buffers exist with the right shapes.
- `configure_optimizers()`: returns an optimiser, a list of them, (optimisers, epoch schedulers), or an
  `Optimization` (which may hold per-step schedulers, stepped after every optimiser step). Empty: nothing trains.
- `on_epoch_start(epoch, ctx)`: once per epoch, in train mode, `self.epoch` already set: clustering, stage switches,
  per-epoch weights; `self.log(name, value)` records a decision in the run's history.
- `training_step(batch_a, batch_b, step)`: the losses of one step, {"loss": total (back-propagated), other terms
  (detached, averaged over the epoch into the history)}. `step` counts steps from the start of the fit. Banks, key
  queues and momentum encoders must not change here: stage their updates (`bank.stage_momentum_update`,
  `queue.stage_enqueue`, `key_encoder.stage_update`), which the base class commits after the optimiser step.
- `on_train_batch_end(step)`: after the optimiser step and the staged updates; for anything else that must wait.
- `embed(images)`, `detect_private(...)`: evaluation; no state changes.

A method sees only `Batch` objects and the `FitContext`: images, instance indices, domain ids — never labels
(DESIGN §3.1). `state_dict()` / `load_state_dict()` are nn.Module's: register banks and prototypes as buffers, and
return any non-tensor state (a stage flag, a cluster count) from `get_extra_state`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import typing
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch
from torch import nn

from .augment import crop_flip_view
from .backbones import EmbeddingNet
from .memory_bank import MemoryBank
from .open_set import cluster_radius_detector
from .staged import StagedUpdates


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
class Optimization:
    """What `configure_optimizers` may return when a method needs per-step schedules (PCS's inverse decay)."""
    optimizers: list
    epoch_schedulers: list = field(default_factory=list)     # stepped after every epoch
    step_schedulers: list = field(default_factory=list)      # stepped after every optimiser step

    @classmethod
    def of(cls, configured) -> "Optimization":
        """An Optimization from any form `configure_optimizers` may return: an optimiser, a list of them,
        (optimisers, epoch schedulers), or an Optimization. Raises TypeError for anything else."""
        if isinstance(configured, Optimization):
            return configured
        if configured is None:
            return cls([])
        if isinstance(configured, tuple) and len(configured) == 2 and isinstance(configured[0], (list, tuple)):
            return cls(list(configured[0]), list(configured[1]) if isinstance(configured[1], (list, tuple))
                       else [configured[1]])
        if isinstance(configured, torch.optim.Optimizer):
            return cls([configured])
        if isinstance(configured, (list, tuple)) and all(isinstance(o, torch.optim.Optimizer) for o in configured):
            return cls(list(configured))
        raise TypeError(f"configure_optimizers returned {type(configured).__name__}; expected an optimiser, a list "
                        "of them, (optimisers, epoch schedulers) or an Optimization")

    @property
    def schedulers(self) -> list:
        """Every scheduler, in the order a checkpoint stores them."""
        return self.epoch_schedulers + self.step_schedulers


# A hyper-parameter that exists for one backbone family only: resolve_hparams leaves it out of the other families'
# runs (their run ids stay what they were before it existed) and refuses it there.
VIT_ONLY = {"family": "vit"}


@dataclass
class BaseHparams:
    """Every method has a budget: epochs and the batch size per domain. Method Hparams extend this.

    The trunk's optimiser on a ViT (`vit_parameter_groups`, for methods that train one): the method's lr at the top
    block, times `layer_decay` per block below it (the patch embedding, CLS token and position embeddings one step
    lower still), the patch embedding times `patch_embed_lr_mult` on top; no weight decay on biases, LayerNorm and
    LayerScale weights, the CLS token and position embeddings. Source: DINOv2's own training recipe
    (facebookresearch/dinov2, dinov2/configs/ssl_default_config.yaml at fc49f49: optim.layerwise_decay 0.9,
    optim.patch_embed_lr_mult 0.2), with timm's layer groups (`timm.optim.param_groups_layer_decay`). Slowing the
    patch embedding follows MoCo v3's finding that contrastive training of a ViT is unstable through it (Chen, Xie,
    He, ICCV 2021, who froze it). None of the retrieval papers trained a ViT: these are the harness's choices,
    `--set`-able (`--set layer_decay=1.0` gives every layer the method's lr)."""
    epochs: int = 1
    batch_size: int = 64
    layer_decay: float = field(default=0.9, metadata=VIT_ONLY)
    patch_embed_lr_mult: float = field(default=0.2, metadata=VIT_ONLY)


class Method(nn.Module):
    name: ClassVar[str] = "?"                 # set by @register
    label: ClassVar[str | None] = None        # the row label of the harness's tables (None: the registered name)
    paper_label: ClassVar[str | None] = None  # the row of UEM's tables (results/uem_paper_results.csv); None: no row
    Hparams: ClassVar[type] = BaseHparams
    # Per-dataset hyper-parameter overrides on top of the dataclass defaults (e.g. CoDA's cluster count per dataset);
    # the budget, the backbone family's, the suite's and `--set` come after these.
    dataset_overrides: ClassVar[dict[str, dict]] = {}
    # Budgets other than the paper's (the dataclass defaults): name -> overrides, after the dataset's. "quickstart":
    # the small-data recipe (short schedules, small batches and queues) the embedded synthetic dataset takes by
    # default and a suite file asks for with `budget = "quickstart"` (BUDGETS).
    budgets: ClassVar[dict[str, dict]] = {}
    # The method's own distance for the baseline open-set detector (UEM App. B.2): "cosine" or "euclidean".
    open_set_distance: ClassVar[str] = "cosine"
    # A registered ablation of another method (e.g. "uem"): left out of suites that list no methods, kept for
    # ablation suites and `--methods`.
    variant_of: ClassVar[str | None] = None
    # The start of the method's own paper when it is not the suite's (UEM runs every baseline from MoCo v2 for a
    # fair comparison): "imagenet_supervised" for torchvision's ImageNet weights. Used with `--baseline-init native`.
    native_init: ClassVar[str | None] = None
    # Per-backbone-family overrides ("vit": {...}), after the dataset's and before the suite's and `--set`: the choices
    # a method makes differently on a ViT trunk (e.g. a fresh linear head where the CNN init's head was kept).
    backbone_overrides: ClassVar[dict[str, dict]] = {}
    # Python modules the method imports only when it trains (e.g. ("faiss",) for faiss k-means): the harness imports
    # them before any run starts (and --dry-run), so a missing one stops the plan, not a run after its warm-up epochs.
    required_modules: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def derive_hparams(cls, values: dict) -> dict:
        """Hyper-parameters computed from others (e.g. total epochs = stage 1 + stage 2), after every override."""
        return values

    def __init__(self, hparams, backbone: EmbeddingNet):
        super().__init__()
        self.hparams = hparams
        self.backbone = backbone
        self.epoch = 0                          # the current epoch (0-based), set by `start_epoch`
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

    def optimised_parameters(self, lr: float, weight_decay: float, *others: nn.Module) -> list:
        """What an SGD over the backbone (and the modules `others`) optimises: on a CNN its parameters, as a list
        (the optimiser's lr and weight decay apply); on a ViT parameter groups, the trunk's by
        `vit_parameter_groups` (layer-wise lr decay from `lr`, see BaseHparams), the head's and `others`' at `lr`
        and `weight_decay`."""
        if self.backbone.family != "vit":
            return [p for module in (self.backbone, *others) for p in module.parameters()]
        h = self.hparams
        rest = [p for module in (self.backbone.head, *others) for p in module.parameters()]
        return vit_parameter_groups(self.backbone.trunk, lr, weight_decay, h.layer_decay, h.patch_embed_lr_mult) + \
            [{"params": rest, "lr": lr, "weight_decay": weight_decay}]

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

    # --- driven by the runner (not overridden) ---------------------------------------------------------------
    def start_epoch(self, epoch: int, ctx: FitContext) -> None:
        """Sets `self.epoch`, then runs `on_epoch_start`."""
        self.epoch = epoch
        self.on_epoch_start(epoch, ctx)

    def commit_staged_updates(self) -> None:
        """Applies every update staged by this step (banks, queues, momentum encoders), module by module in
        registration order, each module's in the order they were staged."""
        for module in self.modules():
            if isinstance(module, StagedUpdates):
                module.commit()

    def after_optimizer_step(self, step: int) -> None:
        """The staged updates, then `on_train_batch_end(step)`."""
        self.commit_staged_updates()
        self.on_train_batch_end(step)

    # --- hooks -------------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        """An optimizer, a list of them, (optimizers, per-epoch LR schedulers), or an `Optimization` (with
        per-step schedulers). Empty for untrained methods."""
        return []

    def on_fit_start(self, ctx: FitContext) -> None:
        pass

    def on_epoch_start(self, epoch: int, ctx: FitContext) -> None:
        pass

    def training_step(self, batch_a: Batch, batch_b: Batch, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} trains but defines no training_step")

    def on_train_batch_end(self, step: int) -> None:
        """After the optimiser step and the staged updates (banks, queues, EMAs are committed by the base class)."""

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


def sgd(parameters, **options) -> torch.optim.SGD:
    """`torch.optim.SGD(parameters, **options)` (lr, momentum, weight_decay, nesterov, ...), with torch's fused kernel
    when every parameter is on a CUDA device (one kernel for the whole update instead of a few per tensor; the same
    update rule); elsewhere torch's default implementation, so CPU runs are unchanged. `parameters` as SGD takes them:
    tensors or parameter groups (dicts with "params")."""
    groups = list(parameters)
    tensors = [p for group in groups for p in (group["params"] if isinstance(group, dict) else [group])]
    on_cuda = bool(tensors) and all(isinstance(p, torch.Tensor) and p.is_cuda for p in tensors)
    return torch.optim.SGD(groups, fused=True if on_cuda else None, **options)


def vit_parameter_groups(trunk: nn.Module, lr: float, weight_decay: float, layer_decay: float,
                         patch_embed_lr_mult: float = 1.0) -> list[dict]:
    """SGD parameter groups of a timm ViT trunk with layer-wise lr decay: timm's groups
    (`timm.optim.param_groups_layer_decay`: layer 0 = patch embedding, CLS token, position embeddings; layer i = block
    i - 1, the last block sharing the top layer with the final norm; scale layer_decay ** (top - layer); weight decay
    0 on 1-d weights and on the model's `no_weight_decay()` names), each with lr = `lr` x its scale, the patch
    embedding's x `patch_embed_lr_mult` in a group of its own (DINOv2's patch_embed_lr_mult). For a ViT of D blocks
    the patch embedding trains at lr x layer_decay ** D x patch_embed_lr_mult. Returns dicts with "params", "lr",
    "weight_decay"."""
    from timm.optim import param_groups_layer_decay
    no_decay = trunk.no_weight_decay() if hasattr(trunk, "no_weight_decay") else ()
    patch = {id(p) for p in trunk.patch_embed.parameters()} if hasattr(trunk, "patch_embed") else set()
    groups = []
    for group in param_groups_layer_decay(trunk, weight_decay=weight_decay, no_weight_decay_list=no_decay,
                                          layer_decay=layer_decay):
        group_lr = lr * group["lr_scale"]
        for params, multiplier in (([p for p in group["params"] if id(p) not in patch], 1.0),
                                   ([p for p in group["params"] if id(p) in patch], patch_embed_lr_mult)):
            if params:
                groups.append({"params": params, "lr": group_lr * multiplier, "weight_decay": group["weight_decay"]})
    return groups


def sgd_with_cosine(parameters, hparams):
    """SGD (lr, momentum, weight_decay of `hparams`) with the per-epoch cosine decay over `hparams.epochs`, in the
    (optimisers, schedulers) form `configure_optimizers` returns."""
    optimizer = sgd(parameters, lr=hparams.lr, momentum=hparams.momentum, weight_decay=hparams.weight_decay)
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


def family_hparams(method_cls, family: str) -> set[str]:
    """The hyper-parameters of `method_cls` that exist on a backbone of `family` ("cnn" or "vit"): all but those of
    another family (`VIT_ONLY`), and none of the trunk's optimiser for a method that has no optimiser."""
    trains = method_cls.configure_optimizers is not Method.configure_optimizers
    return {name for name, f in hparam_fields(method_cls).items()
            if f.metadata.get("family", family) == family and (trains or "family" not in f.metadata)}


# The budgets a suite can name (`budget = ...` in a suite file, `--budget`): "paper", the dataclass defaults (each
# method's paper's schedule), and "quickstart", each method's `budgets["quickstart"]` (minutes on a CPU).
BUDGETS = ("paper", "quickstart")


def check_budget(budget: str) -> str:
    """`budget` if it is one of BUDGETS, else ValueError naming it and the known ones."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; the budgets are: {', '.join(BUDGETS)}")
    return budget


def resolve_hparams(method_cls, dataset: str, overrides: dict | None = None, family: str = "cnn",
                    budget: str | None = None) -> dict:
    """Dataclass defaults, then the method's overrides for this dataset, then its `budgets[budget]` (None: the
    dataset's default budget, datasets.registry.default_budget: "quickstart" for the synthetic dataset, else
    "paper"), then its overrides for the backbone `family`, then `overrides` (suite, --set). A hyper-parameter of
    another backbone family is left out (and refused in `overrides`). Raises HparamError for an unknown key and
    ValueError for an unknown budget."""
    if budget is None:
        from datasets.registry import default_budget   # the dataset's budget: the registry's, read at call time
        budget = default_budget(dataset)
    fields = hparam_fields(method_cls)
    present = family_hparams(method_cls, family)
    hints = typing.get_type_hints(method_cls.Hparams)
    values = {name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
              for name, f in fields.items() if name in present}
    for source in (method_cls.dataset_overrides.get(dataset, {}), method_cls.budgets.get(check_budget(budget), {}),
                   method_cls.backbone_overrides.get(family, {}), overrides or {}):
        for key, value in source.items():
            if key not in fields:
                raise HparamError(f"method {method_cls.name!r} has no hyper-parameter {key!r}; "
                                  f"its hyper-parameters are: {', '.join(sorted(present))}")
            if key not in present:
                raise HparamError(f"hyper-parameter {key!r} of method {method_cls.name!r} applies to "
                                  f"{fields[key].metadata.get('family', '?')} backbones that it trains; this run's "
                                  f"backbone is a {family}")
            values[key] = _coerce(value, hints.get(key, fields[key].type), key)
    return method_cls.derive_hparams(values)


def build_hparams(method_cls, resolved: dict):
    return method_cls.Hparams(**resolved)
