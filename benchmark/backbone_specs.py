"""Backbone and initialisation specs: plain data the plan puts into every run's identity (benchmark/spec.py), kept
apart from the code that builds and pretrains backbones (benchmark/initialisation.py), so that planning a suite
imports no trainer.

A backbone spec: {"arch", "head", "embed_dim", "options", "init"}; the init kinds are described in
benchmark/initialisation.py.
"""
from __future__ import annotations

# The quickstart's backbone: small CNN + MLP head to 128-d, SimCLR on all synthetic images.
QUICKSTART_BACKBONE = {
    "arch": "small_cnn", "head": "mlp", "embed_dim": 128, "options": {"width": 16, "norm": "group"},
    "init": {"kind": "simclr", "dataset": "synthetic", "epochs": 40, "batch_size": 128, "lr": 0.05,
             "temperature": 0.2, "weight_decay": 1e-4, "min_crop_scale": 0.5, "seed": 0},
}

# Every method of the paper's suites starts from the self-supervised MoCo v2 ResNet-50 (ImageNet, 800 epochs; Chen et
# al., "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297; facebookresearch/moco), read from a
# local file by benchmark/initialisation.py; the file name is the published one.
MOCO_V2_WEIGHTS = "moco_v2_800ep_pretrain.pth.tar"
PAPER_BACKBONE = {
    "arch": "resnet50", "head": "mlp", "embed_dim": 128,
    "init": {"kind": "moco_v2", "file": MOCO_V2_WEIGHTS,
             "url": "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/" + MOCO_V2_WEIGHTS},
}

PRETRAINED_KINDS = ("moco_v2", "torchvision")        # inits read from a local weights file

# torchvision's supervised ImageNet ResNet-50, as `resnet50(pretrained=True)` gave it to the code of CDS, PCS and CoDA
# (IMAGENET1K_V1; the second name is the same weights' legacy file). Source: torchvision's models/resnet.py
# (`ResNet50_Weights.IMAGENET1K_V1`) and, before v0.13, its `model_urls`.
SUPERVISED_RESNET50_INIT = {
    "kind": "torchvision", "files": ["resnet50-0676ba61.pth", "resnet50-19c8e357.pth"],
    "url": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}

# `--baseline-init native`: each baseline's own paper's start, by the method's `native_init` and the architecture.
NATIVE_INITS = {"imagenet_supervised": {"resnet50": SUPERVISED_RESNET50_INIT}}
