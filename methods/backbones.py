"""Backbone factory: a trunk (image -> feature vector) and a projection head (-> L2-normalised embedding).

- `small_cnn`: 4 conv layers for the 32-64 px synthetic images (the quickstart);
- `resnet18`, `resnet50`: torchvision ResNets (fc removed). Initial weights are read from local files only
  (`benchmark/initialisation.py`); nothing is downloaded.

Inputs are images in [0, 1]; the net normalises them itself (ImageNet statistics), so augmentations work in [0, 1].
The head is a 2-layer MLP (MoCo v2 / SimCLR style: trunk -> hidden -> embed_dim) or a linear layer (CDS/PCS/CoDA's
`fc -> 512`).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalisation(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(8, channels)
    raise ValueError(f"unknown normalisation {kind!r}; expected 'batch' or 'group'")


def _conv_block(cin: int, cout: int, stride: int, norm: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), _normalisation(norm, cout),
                         nn.ReLU(inplace=True))


def small_cnn(width: int = 16, norm: str = "group") -> tuple[nn.Module, int]:
    """4 conv layers. GroupNorm by default: a feature then depends on its own image only, never on batch statistics.
    With BatchNorm, the small net's retrieval features moved with its running statistics — which any training
    re-estimates on one domain pair, even at lr 0 — by up to 20 mAP points (issue 2's study), swamping what the
    methods learn."""
    trunk = nn.Sequential(
        _conv_block(3, width, 1, norm), _conv_block(width, 2 * width, 2, norm),
        _conv_block(2 * width, 4 * width, 2, norm), _conv_block(4 * width, 8 * width, 2, norm),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return trunk, 8 * width


def torchvision_resnet(arch: str) -> tuple[nn.Module, int]:
    import torchvision
    net = getattr(torchvision.models, arch)(weights=None)
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


def make_head(kind: str, feature_dim: int, embed_dim: int) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True),
                             nn.Linear(feature_dim, embed_dim))
    if kind == "linear":
        return nn.Linear(feature_dim, embed_dim)
    raise ValueError(f"unknown head {kind!r}; expected 'mlp' or 'linear'")


class EmbeddingNet(nn.Module):
    def __init__(self, trunk: nn.Module, feature_dim: int, head: nn.Module, embed_dim: int):
        super().__init__()
        self.trunk, self.head = trunk, head
        self.feature_dim, self.embed_dim = feature_dim, embed_dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Trunk features (before the head), not normalised."""
        return self.trunk((images - self.mean) / self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(images)), dim=1)

    def replace_head(self, kind: str, embed_dim: int) -> None:
        device = next(self.trunk.parameters()).device
        self.head = make_head(kind, self.feature_dim, embed_dim).to(device)
        self.embed_dim = embed_dim


ARCHITECTURES = {"small_cnn": small_cnn, "resnet18": lambda **_: torchvision_resnet("resnet18"),
                 "resnet50": lambda **_: torchvision_resnet("resnet50")}


def build_backbone(arch: str, head: str = "mlp", embed_dim: int = 128, **arch_options) -> EmbeddingNet:
    """`arch_options` go to the architecture (small_cnn: width, norm)."""
    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown backbone {arch!r}; expected one of {', '.join(ARCHITECTURES)}") from None
    trunk, feature_dim = factory(**arch_options)
    return EmbeddingNet(trunk, feature_dim, make_head(head, feature_dim, embed_dim), embed_dim)
