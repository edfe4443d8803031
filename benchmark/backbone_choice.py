"""Which backbone a suite's runs start from: the backbone names a suite file and `--backbone` take, their inits, and
the backbone spec (benchmark/backbone_specs.py) each combination gives; kept apart from the suite-file reader so that
the command line's `--backbone` / `--init` and the reader make the same specs.

    backbone_spec("vit_base_patch14_dinov2", "dinov2", dataset)      # DINOv2 ViT-B/14 from its publisher's file
    suite_with_backbone(suite, "vit_toy")                            # the quickstart from the toy ViT
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from datasets.base import WHITE
from datasets.registry import DatasetInfo

from .backbone_specs import (PAPER_BACKBONE, SUPERVISED_RESNET50_INIT, TOY_VIT, VIT_ARCHITECTURES, published_weights,
                             vit_backbone_spec)
from .errors import UserError

if TYPE_CHECKING:
    from .suites import Suite

BACKBONES = {
    "small_cnn": {"arch": "small_cnn", "head": "mlp", "embed_dim": 128, "options": {"width": 16, "norm": "group"}},
    "resnet18": {"arch": "resnet18", "head": "mlp", "embed_dim": 128},
    "resnet50": {"arch": "resnet50", "head": "mlp", "embed_dim": 128},
    "vit_toy": TOY_VIT,
}
BACKBONE_NAMES = (*BACKBONES, *VIT_ARCHITECTURES)     # the ViTs with published weights: specs made at their input size
# The self-supervised init's recipe for a suite file: the quickstart's, with a linear warm-up over the first 5 of its
# 40 epochs (without it, lr 0.05 at batch 128 can collapse on data it was not tuned on;
# tests/test_pretraining_check.py).
SIMCLR_RECIPE = {"epochs": 40, "batch_size": 128, "lr": 0.05, "temperature": 0.2, "weight_decay": 1e-4,
                 "min_crop_scale": 0.5, "seed": 0, "warmup_epochs": 5}


class BackboneChoiceError(ValueError):
    """A backbone name, init or input size that does not exist for the backbone; `key` names the suite-file key."""

    def __init__(self, message: str, key: str = "init"):
        super().__init__(message)
        self.key = key


INIT_NAMES = ("simclr", "random", "moco_v2", "imagenet_supervised", "dinov2", "clip_openai", "openclip_laion2b")


def default_init(backbone: str) -> str:
    """A backbone's init when a suite names none: its publisher's weights (a ViT's), else SimCLR on the suite's
    images."""
    published = published_weights(backbone)
    return published.init if published is not None else "simclr"


def backbone_spec(backbone: str, init: str, dataset: DatasetInfo, recipe: dict | None = None,
                  input_size: int | None = None, checkpoint: Path | None = None) -> dict:
    """The backbone spec (architecture, head, preprocessing, init) of a backbone name (BACKBONE_NAMES) started from
    `init` (INIT_NAMES, or the weights file `checkpoint`), on `dataset` (the SimCLR init's images), with the SimCLR
    `recipe`'s overrides and a ViT's `input_size`. The specs of the CNNs are the ones they had before the ViTs came
    (their run ids stay). Raises BackboneChoiceError saying what does not exist for the backbone."""
    if backbone not in BACKBONE_NAMES:
        raise BackboneChoiceError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONE_NAMES)}",
                                  "backbone")
    if input_size is not None and backbone not in VIT_ARCHITECTURES:
        raise BackboneChoiceError(f"an input size for a ViT with published weights ({', '.join(VIT_ARCHITECTURES)}); "
                                  f"the {backbone} backbone trains at the dataset's image size", "input_size")
    try:
        spec = (vit_backbone_spec(backbone, input_size) if backbone in VIT_ARCHITECTURES
                else copy.deepcopy(BACKBONES[backbone]))
    except ValueError as error:
        raise BackboneChoiceError(str(error), "input_size") from None
    if init == "simclr":
        spec["init"] = {"kind": "simclr", "dataset": dataset.name, **SIMCLR_RECIPE, **(recipe or {})}
        if not spec["init"]["warmup_epochs"]:      # no warm-up: the init (and its hash) of the recipe without it
            del spec["init"]["warmup_epochs"]
        if dataset.background != WHITE:            # pretrained on other pixels: another init; white keeps its hash
            spec["init"]["background"] = list(dataset.background)
    elif init == "random":
        spec["init"] = {"kind": "random"}
    elif init in ("moco_v2", "imagenet_supervised"):
        if backbone != "resnet50":
            raise BackboneChoiceError(f"an init that exists for the {backbone} backbone (moco_v2 and "
                                      f"imagenet_supervised are ResNet-50 weights)")
        spec["init"] = copy.deepcopy(PAPER_BACKBONE["init"] if init == "moco_v2" else SUPERVISED_RESNET50_INIT)
    elif checkpoint is not None:
        published = published_weights(backbone)
        if published is None and spec["arch"].startswith("vit_"):
            raise BackboneChoiceError(f"simclr or random for the {backbone} backbone (a checkpoint file is read in "
                                      f"a publisher's layout, for the ViTs {', '.join(VIT_ARCHITECTURES)})")
        if published is None:
            spec["init"] = {"kind": "moco_v2", "file": checkpoint.name, "path": str(checkpoint)}
        else:                                      # the file is read (and checked) in the publisher's format
            spec["init"] = {**published.init_spec(), "files": [checkpoint.name], "path": str(checkpoint)}
    else:
        try:
            published = published_weights(backbone, init) if init in INIT_NAMES else None
        except ValueError:
            published = None
        if published is None:
            own = ["simclr", "random"] + (["moco_v2", "imagenet_supervised"] if backbone == "resnet50" else [])
            own += [w.init for w in VIT_ARCHITECTURES.get(backbone, (None, ()))[1]]
            owners = [name for name, (_, ws) in VIT_ARCHITECTURES.items() if any(w.init == init for w in ws)]
            hint = f"; {init} weights are those of {' and '.join(owners)}" if owners else ""
            raise BackboneChoiceError(f"an init of the {backbone} backbone ({', '.join(own)}, or a checkpoint file)"
                                      f"{hint}")
        spec["init"] = published.init_spec()
    return spec


def backbone_name(spec: dict) -> str | None:
    """The backbone name (BACKBONE_NAMES) of a backbone spec, from its architecture and options; None for a spec of
    none of them."""
    if spec["arch"] in VIT_ARCHITECTURES:
        return spec["arch"]
    plain = {k: v for k, v in spec.items() if k != "init"}
    return next((name for name, known in BACKBONES.items() if known == plain), None)


def init_name(init: dict) -> str | None:
    """The suite-file name of an init spec (INIT_NAMES); None for a checkpoint file of the suite's own."""
    if init.get("path"):
        return None
    kind = init.get("kind", "random")
    return init.get("weights") or {"torchvision": "imagenet_supervised"}.get(kind, kind)


def suite_with_backbone(suite: Suite, backbone: str | None = None, init: str | None = None) -> Suite:
    """`--backbone NAME` and `--init INIT` over a suite's own: the same suite (name, grid, hyper-parameters) started
    from another backbone or init. Without `init`, a ViT with published weights starts from them, another backbone
    from the suite's init (its SimCLR recipe kept). Raises UserError when the combination does not exist."""
    from datasets.registry import get_dataset
    current = suite.backbone.get("init", {"kind": "random"})
    name = backbone or backbone_name(suite.backbone)
    if name is None:
        raise UserError(f"--init: suite {suite.name!r} has a backbone of its own; name one with --backbone "
                        f"({', '.join(BACKBONE_NAMES)})")
    if init is None:
        published = published_weights(name) if backbone else None
        init = published.init if published is not None else init_name(current)
    recipe = {}
    if init == "simclr" and current.get("kind") == "simclr":     # the suite's recipe, warm-up or not
        recipe = {**{k: current[k] for k in SIMCLR_RECIPE if k in current}, "warmup_epochs":
                  current.get("warmup_epochs", 0)}
    if init is None:                                           # the suite's own checkpoint file, same backbone
        if name != backbone_name(suite.backbone):
            raise UserError(f"--backbone {name}: suite {suite.name!r} starts from its own checkpoint "
                            f"({current.get('path')}); pass --init too ({', '.join(INIT_NAMES)})")
        return suite
    input_size = suite.backbone.get("preprocessing", {}).get("input_size") if name == suite.backbone["arch"] else None
    try:
        spec = backbone_spec(name, init, get_dataset(suite.dataset), recipe,
                             input_size if name in VIT_ARCHITECTURES else None)
    except BackboneChoiceError as error:
        raise UserError(f"--backbone {name} --init {init} (over suite {suite.name!r}): expected {error}") from None
    return dataclasses.replace(suite, backbone=spec)
