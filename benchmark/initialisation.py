"""The starting model of every run (DESIGN §3.3 "Initialisation").

A backbone spec names an architecture, a head and an init:

- `{"kind": "random"}`: untrained (tests, ablations);
- `{"kind": "simclr", ...}`: the quickstart's init — the small CNN self-supervised with two-view SimCLR on the images
  of all synthetic domains together, the toy-scale analogue of the paper's MoCo v2 ImageNet backbone. It is trained
  once per init spec (seeded), cached under `<cache>/backbones/<hash>.pt`, and shared by every method and seed; the
  init spec is part of every run's hash. The quickstart's own init ships with the harness (`SHIPPED_INITS`): a fresh
  checkout copies it into its cache instead of training it (45-60 s of a 2-core CPU); any other recipe trains.

- `{"kind": "moco_v2", "file": ...}`: the paper's start, a MoCo v2 ResNet-50 checkpoint read from a local file (never
  downloaded): `--pretrained PATH`, else `<data root>/weights/<file>`, else `<cache>/weights/<file>`. The published
  format (`state_dict` with `module.encoder_q.*` keys, MLP head `fc.0`/`fc.2`) loads trunk and head; a checkpoint
  without the head, or a torchvision state dict (`conv1.weight`, ..., its 1000-way `fc` ignored), loads the trunk and
  keeps the head's seeded random initialisation (logged).
- `{"kind": "dinov2" | "clip", "weights": ..., "files": [...], "url": ...}`: a ViT's publisher checkpoint
  (benchmark/backbone_specs.py, PublishedWeights), looked for where MoCo v2's is (`--pretrained PATH` first) under
  each of its published names, read and checked by benchmark/publisher_weights.py; trunk only, the head keeps its
  seeded random initialisation (no publisher ships one).
- `{"kind": "torchvision", "files": [...]}`: torchvision's supervised ImageNet weights, the start of the papers of CDS,
  PCS and CoDA (`--baseline-init native`), read from torch's own cache (`$TORCH_HOME/hub/checkpoints/`, where
  `torchvision.models.resnet50(weights=...)` leaves it) or from <data root>/weights/, <cache>/weights/; trunk only,
  the head keeps its seeded random initialisation (those papers replace the 1000-way fc by a new projection).
"""
from __future__ import annotations

import hashlib
import math
import logging
import pickle
import re
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from datasets.base import WHITE
from datasets.cache import build_once
from datasets.registry import get_dataset, load_domain
from methods.augment import moco_v2_view
from methods.backbones import EmbeddingNet, Preprocessing, build_backbone
from methods.losses import nt_xent

from .backbone_specs import PRETRAINED_KINDS, SUITE_FILE_KINDS, weights_of
from .spec import canonical_json
from .store import atomic_torch_save

log = logging.getLogger(__name__)

def new_backbone(backbone_spec: dict) -> EmbeddingNet:
    return build_backbone(backbone_spec["arch"], backbone_spec.get("head", "mlp"), backbone_spec.get("embed_dim", 128),
                          Preprocessing.from_spec(backbone_spec.get("preprocessing")), backbone_spec.get("options"))


def build_initial_backbone(backbone_spec: dict, cache_dir: Path, data_root: Path | None,
                           device: torch.device, pretrained: Path | None = None) -> EmbeddingNet:
    net = new_backbone(backbone_spec)
    init = backbone_spec.get("init", {"kind": "random"})
    if init["kind"] == "random":
        return net.to(device)
    if init["kind"] == "simclr":
        state = cached_simclr_state(backbone_spec, Path(cache_dir), data_root, device)
        net.load_state_dict(state)
        return net.to(device)
    if init["kind"] in PRETRAINED_KINDS:
        path = find_pretrained(init, cache_dir, data_root, pretrained)
        if path is None:
            raise FileNotFoundError(missing_weights_message(init, cache_dir, data_root))
        load_pretrained(net, path, init, backbone_spec["arch"])
        return net.to(device)
    raise ValueError(f"unknown backbone init {init['kind']!r}; expected 'random', 'simclr', "
                     f"{' or '.join(repr(k) for k in PRETRAINED_KINDS)}")


# --- pretrained weights from local files -------------------------------------------------------------------------


def _weight_files(init: dict) -> list[str]:
    return list(init.get("files") or [init["file"]])


def weight_locations(init: dict, cache_dir: Path | None, data_root: Path | None,
                     pretrained: Path | None = None) -> list[Path]:
    """Where a pretrained init's file is looked for, in order. `--pretrained` names the suite's own file (MoCo v2's,
    a ViT publisher's); the supervised torchvision weights are looked for in torch's cache first."""
    places = [Path(init["path"])] if init.get("path") else []           # a suite file's own checkpoint
    places += [Path(pretrained).expanduser()] if pretrained and init["kind"] in SUITE_FILE_KINDS else []
    if init["kind"] == "torchvision":
        places += [Path(torch.hub.get_dir()) / "checkpoints" / name for name in _weight_files(init)]
    places += [Path(root) / "weights" / name for root in (data_root, cache_dir) if root for name in _weight_files(init)]
    return places


def find_pretrained(init: dict, cache_dir, data_root, pretrained=None) -> Path | None:
    return next((p for p in weight_locations(init, cache_dir, data_root, pretrained) if p.is_file()), None)


def missing_weights_message(init: dict, cache_dir, data_root, pretrained=None) -> str:
    looked = ", ".join(str(p) for p in weight_locations(init, cache_dir, data_root, pretrained)) or "nowhere"
    name = _weight_files(init)[0]
    published = weights_of(init)
    if published is not None:
        others = "".join(f" or {file} (its folder named after the model card)" if "/" in file else f" or {file}"
                         for file in published.files[1:])
        return (f"the pretrained weights of {published.label} are needed and were not found (looked at: {looked}). "
                f"Fetch {name}, published by {published.publisher} at {published.url}{others} (timm's model card "
                f"{published.card} holds model.safetensors) on a machine with network access, then pass "
                f"--pretrained PATH or put it in <data root>/weights/ or <cache dir>/weights/; nothing is "
                f"downloaded here.")
    if init["kind"] == "torchvision":
        where = f"put it in torch's cache ({Path(torch.hub.get_dir()) / 'checkpoints'}/)"
    else:
        where = "pass --pretrained PATH"
    return (f"the pretrained weights {name} ({init['kind']}) are needed and were not found (looked at: "
            f"{looked}). Download {init.get('url', name)} on a machine with network access and {where}, or put it "
            f"in <data root>/weights/ or <cache dir>/weights/.")


def convert_checkpoint(state: dict) -> tuple[dict, bool]:
    """A MoCo v2 checkpoint (query encoder, with or without its MLP head) or a torchvision state dict (also as saved
    from a DataParallel model: every key prefixed `module.`) -> the EmbeddingNet keys ("trunk.*", "head.*").
    Returns (state, whether the head was in it)."""
    state = state.get("state_dict", state)
    prefixes = ("module.encoder_q.", "encoder_q.")
    if state and not any(k.startswith(prefixes) for k in state) and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}     # saved from a DataParallel-wrapped model
    if any(k.startswith(prefixes) for k in state):
        query = {}
        for key, value in state.items():
            for prefix in prefixes:
                if key.startswith(prefix):
                    query[key[len(prefix):]] = value
        state = query
    converted, has_head = {}, False
    for key, value in state.items():
        if key.startswith("fc."):
            # MoCo v2's MLP head is fc.0 (Linear) - fc.1 (ReLU) - fc.2 (Linear), the layout of our "mlp" head;
            # a single fc (torchvision's 1000-way classifier, MoCo v1's 128-d fc) is not a head of ours.
            if key.split(".")[1] in ("0", "2"):
                converted["head." + key[len("fc."):]] = value
                has_head = True
            continue
        converted["trunk." + key] = value
    return converted, has_head


RESAVE_HINT = ("re-save only its weights on a machine where it loads: `import torch; ckpt = torch.load(PATH, "
               "weights_only=False); torch.save(ckpt.get('state_dict', ckpt), 'weights.pth')` (read a checkpoint "
               "that runs code only if you trust where it came from)")


def load_pretrained(net: EmbeddingNet, path: Path, init: dict | None = None, backbone_name: str = "") -> None:
    """The weights file `path` of the init spec `init` into `net`: a ViT publisher's (kind "dinov2" or "clip":
    benchmark/publisher_weights.py), else MoCo v2's or torchvision's ResNet. Raises ValueError when the file cannot
    be read or does not fit, naming its keys beside the expected ones."""
    if init is not None and init.get("kind") in ("dinov2", "clip"):
        from .publisher_weights import load_publisher_weights
        load_publisher_weights(net.trunk, path, init, backbone_name)
        net.zero_shot_feature = "trunk"            # the publishers' retrieval feature; the head is random
        log.info("%s: no publisher ships a projection head; the head keeps its seeded random init", path)
        return
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):          # not a pickle of weights: a truncated or foreign file
            raise ValueError(f"cannot read the pretrained weights {path}: {type(error).__name__}: {error}") from None
        # pickled objects beyond tensors (a model, an optimiser, a namespace of arguments)
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" (e.g. {found.group(1)})" if found else ""
        raise ValueError(f"{path} holds Python objects besides its weights{what}, so torch.load(..., "
                         f"weights_only=True), which the harness uses so that a file cannot run code, refuses it: "
                         f"{RESAVE_HINT}") from None
    except Exception as error:                      # a truncated download, a file of another kind
        raise ValueError(f"cannot read the pretrained weights {path}: {type(error).__name__}: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a state dict (MoCo v2 or torchvision), got {type(raw).__name__}")
    state, has_head = convert_checkpoint(raw)
    expected = net.state_dict()
    trunk_keys = {k for k in expected if k.startswith("trunk.")}
    missing = sorted(trunk_keys - set(state))
    mismatched = sorted(k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or mismatched:
        own = list(raw.get("state_dict", raw))
        expected_keys = sorted(k[len("trunk."):] for k in trunk_keys)
        raise ValueError(f"{path} does not fit the backbone: {len(missing)} trunk weights missing "
                         f"(e.g. {missing[:3]}), {len(mismatched)} of another shape (e.g. {mismatched[:3]}). The "
                         f"file's own keys begin {own[:4]} ({len(own)} in all); a ResNet trunk expects keys like "
                         f"{expected_keys[:3]}, with an optional prefix 'module.', 'module.encoder_q.' or "
                         f"'encoder_q.', under an optional 'state_dict'")
    if not has_head:
        log.warning("%s has no MLP head: the trunk is pretrained, the head keeps its seeded random init", path)
        state = {k: v for k, v in state.items() if k in trunk_keys}
    net.load_state_dict(state, strict=has_head)


def _init_key(backbone_spec: dict) -> str:
    return hashlib.sha1(canonical_json(backbone_spec).encode()).hexdigest()[:12]


# SimCLR inits made by this code and shipped with it, named as in a cache (`<arch>-simclr-<key of the backbone
# spec>.pt`): the quickstart's, made by `python scripts/ship_quickstart_init.py` (its README says when, where and
# with which numbers). A file is used only for the exact spec its name's key hashes; tests/test_shipped_init.py checks
# that the quickstart's spec still has one and that it passes check_pretraining.
SHIPPED_INITS = Path(__file__).resolve().parent / "shipped_inits"


def simclr_file_name(backbone_spec: dict) -> str:
    return f"{backbone_spec['arch']}-simclr-{_init_key(backbone_spec)}.pt"


def cached_simclr_state(backbone_spec: dict, cache_dir: Path, data_root: Path | None, device: torch.device) -> dict:
    """The SimCLR-pretrained state of `backbone_spec`, trained once per cache folder (one process trains, the others
    wait for its file: datasets/cache.py) and shared by every method and seed; copied from SHIPPED_INITS instead when
    the harness ships that exact init."""
    path = cache_dir / "backbones" / simclr_file_name(backbone_spec)
    shipped = SHIPPED_INITS / path.name

    def build(target: Path) -> None:
        if shipped.is_file():
            print(f"SimCLR init of {backbone_spec['arch']} on {backbone_spec['init'].get('dataset')}: the one shipped "
                  f"with the harness ({shipped.relative_to(SHIPPED_INITS.parent.parent)}), not trained here",
                  file=sys.stderr, flush=True)
            atomic_torch_save(target, torch.load(shipped, map_location="cpu", weights_only=True))
        else:
            atomic_torch_save(target, pretrain_simclr(backbone_spec, cache_dir, data_root, device))
    return build_once(path, build, lambda target: torch.load(target, map_location="cpu", weights_only=True),
                      what=f"the {backbone_spec['arch']} backbone pretrained with SimCLR")


# The check after pretraining: the last epoch's mean NT-Xent must be clearly below its value for features that carry
# no information, log(2B - 1) (every one of the 2B - 1 candidates equally likely), and the features of the images must
# not have collapsed onto a point.
SIMCLR_MAX_LOSS_FRACTION = 0.99
SIMCLR_MIN_EFFECTIVE_RANK = 2.0
SIMCLR_MAX_MEAN_COSINE = 0.99


class PretrainingFailed(RuntimeError):
    """The SimCLR init did not learn (the message gives the numbers and what to change); nothing was cached."""


def pretrain_simclr(backbone_spec: dict, cache_dir: Path, data_root: Path | None, device: torch.device) -> dict:
    """Two-view SimCLR (NT-Xent; Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020, arXiv:2002.05709) on the images of every domain of the dataset, labels unused: SGD
    with momentum 0.9, a linear warm-up over `warmup_epochs` (init key, default 0; Goyal et al., arXiv:1706.02677, as
    SimCLR and MoCo v3 do) then cosine decay to 0, per step. Returns the state dict (CPU tensors).

    Raises PretrainingFailed when the result has not learned (`check_pretraining`), FloatingPointError on a
    non-finite loss."""
    init = backbone_spec["init"]
    info = get_dataset(init["dataset"])
    background = tuple(init.get("background", WHITE))       # the init spec's: what its hash says it was trained on
    images = torch.cat([load_domain(info, d, data_root, cache_dir, background=background).images
                        for d in info.domains])
    torch.manual_seed(init["seed"])
    net = new_backbone(backbone_spec).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=init["lr"], momentum=0.9, weight_decay=init["weight_decay"])
    batch_size = min(init["batch_size"], len(images))
    steps_per_epoch = max(1, len(images) // batch_size)
    total = init["epochs"] * steps_per_epoch
    warmup = init.get("warmup_epochs", 0) * steps_per_epoch
    if warmup:
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, total - warmup))
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup)
        schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, decay], milestones=[warmup])
    else:
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    started = time.time()
    log.info("pretraining %s with SimCLR on %d %s images, %d epochs", backbone_spec["arch"], len(images),
             info.name, init["epochs"])
    net.train()
    # The init trains before any run, once per cache folder, for a minute (quickstart) or more: a bar with its epochs,
    # loss and time left, so that it does not look hung
    bar = tqdm(range(init["epochs"]), desc=f"SimCLR init of {backbone_spec['arch']} on {info.name}", unit="epoch",
               file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
    for epoch in bar:
        order = torch.randperm(len(images))
        epoch_losses = []
        for step in range(steps_per_epoch):
            batch = images[order[step * batch_size:(step + 1) * batch_size]].to(device).float() / 255
            views = [moco_v2_view(batch, min_crop_scale=init["min_crop_scale"]) for _ in range(2)]
            loss = nt_xent(net(views[0]), net(views[1]), init["temperature"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            epoch_losses.append(loss.detach())
        epoch_loss = float(torch.stack(epoch_losses).mean())       # one host sync per epoch
        bar.set_postfix_str(f"loss {epoch_loss:.3f}")
        if not math.isfinite(epoch_loss):
            bar.close()
            raise FloatingPointError(f"SimCLR pretraining diverged at epoch {epoch} (loss {epoch_loss})")
    bar.close()
    last_epoch_loss = epoch_loss
    log.info("pretraining done in %.1f s (last epoch's mean loss %.3f)", time.time() - started, last_epoch_loss)
    net.eval()
    with torch.no_grad():
        features = torch.cat([net(images[i:i + 256].to(device).float() / 255) for i in range(0, len(images), 256)])
    check_pretraining(backbone_spec, last_epoch_loss, batch_size, features.cpu())
    return {k: v.cpu() for k, v in net.state_dict().items()}


def check_pretraining(backbone_spec: dict, last_epoch_loss: float, batch_size: int, features: torch.Tensor) -> None:
    """Refuse a SimCLR init that has not learned: the last epoch's mean loss at or above SIMCLR_MAX_LOSS_FRACTION of
    log(2B - 1) (B: the batch size), or features [N, d] of effective rank below SIMCLR_MIN_EFFECTIVE_RANK or a mean
    pairwise cosine above SIMCLR_MAX_MEAN_COSINE (benchmark/diagnostics.py). Raises PretrainingFailed with the
    numbers and what to change."""
    from .diagnostics import effective_rank, mean_pairwise_cosine
    ceiling = math.log(2 * batch_size - 1)
    rank, cosine = effective_rank(features), mean_pairwise_cosine(features)
    problems = []
    if last_epoch_loss >= SIMCLR_MAX_LOSS_FRACTION * ceiling:
        problems.append(f"its last epoch's mean loss is {last_epoch_loss:.3f}, the value of features that carry no "
                        f"information being log(2B - 1) = {ceiling:.3f} (B = {batch_size})")
    if rank < SIMCLR_MIN_EFFECTIVE_RANK or cosine > SIMCLR_MAX_MEAN_COSINE:
        problems.append(f"its features have collapsed (effective rank {rank:.2f}, mean pairwise cosine {cosine:.5f})")
    if problems:
        init = backbone_spec["init"]
        recipe = ", ".join(f"{k}={init[k]}" for k in ("lr", "epochs", "batch_size", "temperature") if k in init)
        raise PretrainingFailed(
            f"the SimCLR initialisation on {init.get('dataset')} did not learn: " + "; and ".join(problems) +
            f". Every method would start from this dead backbone, so nothing was trained. Recipe: {recipe}, "
            f"warmup_epochs={init.get('warmup_epochs', 0)}. Try a smaller lr (e.g. {init['lr'] / 5:g}) with "
            f"warmup_epochs=5, or more epochs; then run again (the failed init is not cached).")
