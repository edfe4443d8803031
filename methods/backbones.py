"""Backbone factory: a trunk (image -> feature vector) and a projection head (-> L2-normalised embedding).

- `small_cnn`: 4 conv layers for the 32-64 px synthetic images (the quickstart);
- `resnet18`, `resnet50`: torchvision ResNets (fc removed);
- Vision Transformers from timm (`vit_*`, `timm.create_model(arch, pretrained=False, ...)`): DINOv2 ViT-S/14 and
  ViT-B/14, the CLIP ViT-B/16 image tower, and any other timm ViT (the tests' tiny one). The trunk's feature is the
  one its publishers retrieve with: timm's `global_pool="token"`, the CLS token after the final LayerNorm (DINOv2's
  `x_norm_clstoken`); for CLIP (`num_classes` = the projection's width) the CLS token after `ln_post` times the
  projection `proj`, CLIP's image embedding (timm's head holds `proj`, its bias zero).
Initial weights are read from local files only (`benchmark/initialisation.py`, `benchmark/publisher_weights.py`);
nothing is downloaded.

Inputs are images in [0, 1]; the net preprocesses them itself (`Preprocessing`: resize to the trunk's input size
where it has one, then the backbone's mean/std — ImageNet's, or CLIP's own), so augmentations work in [0, 1]. The
head is a 2-layer MLP (MoCo v2 / SimCLR style: trunk -> hidden -> embed_dim) or a linear layer (CDS/PCS/CoDA's
`fc -> 512`).
"""
from __future__ import annotations


from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FAMILIES = ("cnn", "vit")


@dataclass(frozen=True)
class Preprocessing:
    """What the net does to images in [0, 1] before its trunk: resize to `input_size` x `input_size` when they
    are not (`interpolation`, antialiased; None: never resized, the convolutional nets), then (x - mean) / std per
    channel. A backbone spec's "preprocessing" entry (benchmark/backbone_specs.py) holds these values: they are part
    of the run's identity."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int | None = None
    interpolation: str = "bicubic"

    @classmethod
    def from_spec(cls, spec: dict | None) -> "Preprocessing":
        """From a backbone spec's "preprocessing" entry (None: the ImageNet statistics, no resize)."""
        if not spec:
            return cls()
        return cls(mean=tuple(spec["mean"]), std=tuple(spec["std"]), input_size=spec.get("input_size"),
                   interpolation=spec.get("interpolation", "bicubic"))


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


def is_vit(arch: str) -> bool:
    """A Vision Transformer built by timm (its architecture name starts with "vit_")."""
    return arch.startswith("vit_")


def backbone_family(backbone_spec: dict) -> str:
    """"vit" or "cnn": the family of a backbone spec's architecture."""
    return "vit" if is_vit(backbone_spec["arch"]) else "cnn"


def timm_vit(arch: str, **options) -> tuple[nn.Module, int]:
    """timm's `arch` with `options` (img_size, patch_size, depth, embed_dim, num_heads, act_layer, num_classes, ...),
    never pretrained (weights come from local files). `num_classes` 0 (default): the trunk's feature is the pooled
    token (timm's default pool of the architecture, the CLS token for DINOv2 and CLIP), of `num_features`; CLIP's
    image tower has `num_classes` = its projection's width (512 for ViT-B/16), the head then being `proj`.
    Raises ValueError for an architecture timm does not know."""
    import timm
    if not timm.is_model(arch):
        raise ValueError(f"unknown timm architecture {arch!r} (timm {timm.__version__}); e.g. "
                         f"vit_small_patch14_dinov2, vit_base_patch14_dinov2, vit_base_patch16_clip_224")
    options = {"num_classes": 0, **options}
    trunk = timm.create_model(arch, pretrained=False, **options)
    return trunk, options["num_classes"] or trunk.num_features


def make_head(kind: str, feature_dim: int, embed_dim: int) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True),
                             nn.Linear(feature_dim, embed_dim))
    if kind == "linear":
        return nn.Linear(feature_dim, embed_dim)
    raise ValueError(f"unknown head {kind!r}; expected 'mlp' or 'linear'")


class EmbeddingNet(nn.Module):
    """trunk (image -> feature [B, feature_dim]) -> head (-> [B, embed_dim]) -> L2 normalisation.

    `family` is "cnn" or "vit": what the methods' CNN-specific choices (BatchNorm, channels_last, layer-wise lr
    decay) look at. `zero_shot_feature` is the feature the `pretrained` row retrieves with: "head" (the head's
    output: SimCLR and MoCo v2 train it with the trunk), or "trunk", which the loader of a ViT publisher's weights
    sets (benchmark/initialisation.py): no publisher ships a projection head, and the trunk's feature is the one they
    retrieve with (DINOv2's CLS token, CLIP's image embedding)."""

    def __init__(self, trunk: nn.Module, feature_dim: int, head: nn.Module, embed_dim: int,
                 preprocessing: Preprocessing | None = None, family: str = "cnn"):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown backbone family {family!r}; expected one of {', '.join(FAMILIES)}")
        self.trunk, self.head = trunk, head
        self.feature_dim, self.embed_dim = feature_dim, embed_dim
        self.family = family
        self.zero_shot_feature = "head"
        self.preprocessing = preprocessing or Preprocessing()
        self.register_buffer("mean", torch.tensor(self.preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.preprocessing.std).view(1, 3, 1, 1), persistent=False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Trunk features (before the head), not normalised. Images [B, 3, S, S] in [0, 1]; a trunk with an input
        size gets them resized to it (a ViT's position embeddings fix its grid)."""
        size = self.preprocessing.input_size
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode=self.preprocessing.interpolation,
                                   align_corners=False, antialias=True)
        return self.trunk((images - self.mean) / self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(images)), dim=1)

    def replace_head(self, kind: str, embed_dim: int) -> None:
        device = next(self.trunk.parameters()).device
        self.head = make_head(kind, self.feature_dim, embed_dim).to(device)
        self.embed_dim = embed_dim


ARCHITECTURES = {"small_cnn": small_cnn, "resnet18": lambda **_: torchvision_resnet("resnet18"),
                 "resnet50": lambda **_: torchvision_resnet("resnet50")}


def build_backbone(arch: str, head: str = "mlp", embed_dim: int = 128, preprocessing: Preprocessing | None = None,
                   options: dict | None = None, **arch_options) -> EmbeddingNet:
    """`options` and `arch_options` go to the architecture (small_cnn: width, norm; a timm ViT: `timm_vit`'s options,
    whose `embed_dim` is the ViT's width, hence the dict); `embed_dim` is the head's output. Raises ValueError for
    an unknown architecture."""
    arch_options = {**(options or {}), **arch_options}
    if is_vit(arch):
        trunk, feature_dim = timm_vit(arch, **arch_options)
        family = "vit"
    else:
        try:
            factory = ARCHITECTURES[arch]
        except KeyError:
            raise ValueError(f"unknown backbone {arch!r}; expected one of {', '.join(ARCHITECTURES)} or a timm "
                             f"ViT (vit_...)") from None
        trunk, feature_dim = factory(**arch_options)
        family = "cnn"
    return EmbeddingNet(trunk, feature_dim, make_head(head, feature_dim, embed_dim), embed_dim, preprocessing,
                        family)
