"""The starting model of every run (DESIGN §3.3 "Initialisation").

A backbone spec names an architecture, a head and an init:

- `{"kind": "random"}`: untrained (tests, ablations);
- `{"kind": "simclr", ...}`: the quickstart's init — the small CNN self-supervised with two-view SimCLR on the images
  of all synthetic domains together, the toy-scale analogue of the paper's MoCo v2 ImageNet backbone. It is trained
  once per init spec (seeded), cached under `<cache>/backbones/<hash>.pt`, and shared by every method and seed; the
  init spec is part of every run's hash.

Real-dataset inits (MoCo v2 / ImageNet weights read from local files) plug in here as further kinds.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import torch

from datasets.registry import get_dataset, load_domain
from methods.augment import moco_v2_view
from methods.backbones import EmbeddingNet, build_backbone
from methods.losses import nt_xent

from .spec import canonical_json
from .store import atomic_torch_save

log = logging.getLogger(__name__)

# The quickstart's backbone: small CNN + MLP head to 128-d, SimCLR on all synthetic images.
QUICKSTART_BACKBONE = {
    "arch": "small_cnn", "head": "mlp", "embed_dim": 128, "options": {"width": 16, "norm": "group"},
    "init": {"kind": "simclr", "dataset": "synthetic", "epochs": 40, "batch_size": 128, "lr": 0.05,
             "temperature": 0.2, "weight_decay": 1e-4, "min_crop_scale": 0.5, "seed": 0},
}


def new_backbone(backbone_spec: dict) -> EmbeddingNet:
    return build_backbone(backbone_spec["arch"], backbone_spec.get("head", "mlp"), backbone_spec.get("embed_dim", 128),
                          **backbone_spec.get("options", {}))


def build_initial_backbone(backbone_spec: dict, cache_dir: Path, data_root: Path | None,
                           device: torch.device) -> EmbeddingNet:
    net = new_backbone(backbone_spec)
    init = backbone_spec.get("init", {"kind": "random"})
    if init["kind"] == "random":
        return net.to(device)
    if init["kind"] == "simclr":
        state = cached_simclr_state(backbone_spec, Path(cache_dir), data_root, device)
        net.load_state_dict(state)
        return net.to(device)
    raise ValueError(f"unknown backbone init {init['kind']!r}; expected 'random' or 'simclr'")


def _init_key(backbone_spec: dict) -> str:
    return hashlib.sha1(canonical_json(backbone_spec).encode()).hexdigest()[:12]


def cached_simclr_state(backbone_spec: dict, cache_dir: Path, data_root: Path | None, device: torch.device) -> dict:
    path = cache_dir / "backbones" / f"{backbone_spec['arch']}-simclr-{_init_key(backbone_spec)}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    lock = path.with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    # One process trains, the others wait for its file (several local jobs or array tasks may start together).
    while True:
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            if path.is_file():
                return torch.load(path, map_location="cpu", weights_only=True)
            if time.time() - lock.stat().st_mtime > 3600:   # a lock left by a killed process
                lock.unlink(missing_ok=True)
            time.sleep(2)
    try:
        os.close(descriptor)
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
        state = pretrain_simclr(backbone_spec, cache_dir, data_root, device)
        atomic_torch_save(path, state)
        return state
    finally:
        lock.unlink(missing_ok=True)


def pretrain_simclr(backbone_spec: dict, cache_dir: Path, data_root: Path | None, device: torch.device) -> dict:
    """Two-view SimCLR (NT-Xent) on the images of every domain of the dataset, labels unused."""
    init = backbone_spec["init"]
    info = get_dataset(init["dataset"])
    images = torch.cat([load_domain(info, d, data_root, cache_dir).images for d in info.domains])
    torch.manual_seed(init["seed"])
    net = new_backbone(backbone_spec).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=init["lr"], momentum=0.9, weight_decay=init["weight_decay"])
    steps_per_epoch = max(1, len(images) // init["batch_size"])
    total = init["epochs"] * steps_per_epoch
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    started = time.time()
    log.info("pretraining %s with SimCLR on %d %s images, %d epochs", backbone_spec["arch"], len(images),
             info.name, init["epochs"])
    net.train()
    for epoch in range(init["epochs"]):
        order = torch.randperm(len(images))
        for step in range(steps_per_epoch):
            batch = images[order[step * init["batch_size"]:(step + 1) * init["batch_size"]]].to(device).float() / 255
            views = [moco_v2_view(batch, min_crop_scale=init["min_crop_scale"]) for _ in range(2)]
            loss = nt_xent(net(views[0]), net(views[1]), init["temperature"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SimCLR pretraining diverged at epoch {epoch} (loss {loss.item()})")
    log.info("pretraining done in %.1f s (last loss %.3f)", time.time() - started, loss.item())
    return {k: v.cpu() for k, v in net.state_dict().items()}
