"""Backbone and initialisation specs: plain data the plan puts into every run's identity (benchmark/spec.py), kept
apart from the code that builds and pretrains backbones (benchmark/initialisation.py), so that planning a suite
imports no trainer.

A backbone spec: {"arch", "head", "embed_dim", "options", "init"}; the init kinds are described in
benchmark/initialisation.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

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

PRETRAINED_KINDS = ("moco_v2", "torchvision", "dinov2", "clip")      # inits read from a local weights file
# The inits whose file `--pretrained PATH` names (the suite's own start; not the native inits of --baseline-init)
SUITE_FILE_KINDS = ("moco_v2", "dinov2", "clip")

# torchvision's supervised ImageNet ResNet-50, as `resnet50(pretrained=True)` gave it to the code of CDS, PCS and CoDA
# (IMAGENET1K_V1; the second name is the same weights' legacy file). Source: torchvision's models/resnet.py
# (`ResNet50_Weights.IMAGENET1K_V1`) and, before v0.13, its `model_urls`.
SUPERVISED_RESNET50_INIT = {
    "kind": "torchvision", "files": ["resnet50-0676ba61.pth", "resnet50-19c8e357.pth"],
    "url": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}

# `--baseline-init native`: each baseline's own paper's start, by the method's `native_init` and the architecture.
NATIVE_INITS = {"imagenet_supervised": {"resnet50": SUPERVISED_RESNET50_INIT}}


# --- Vision Transformers (timm) and their publishers' weights ------------------------------------------------------
#
# A ViT backbone spec: {"arch": timm name, "head", "embed_dim", "options": timm.create_model's keyword arguments
# (img_size, ...), "preprocessing": {"input_size", "mean", "std", "interpolation"}, "init"}. The preprocessing values
# are those of timm's pretrained config of the weights (`timm.models.get_pretrained_cfg(arch.tag)`: mean, std,
# interpolation; written here so that loading the suites does not import timm, and compared with timm's by
# tests/test_backbones.py), at the input size the suite trains at: 224 px (DINOv2 ViT-S/14 and ViT-B/14: 16 x 16
# patches of 14 px; DINOv2 trained at 518 = 37 x 14, which `input_size = 518` gives).
IMAGENET_NORMALISATION = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bicubic"}
OPENAI_CLIP_NORMALISATION = {"mean": (0.48145466, 0.4578275, 0.40821073),
                             "std": (0.26862954, 0.26130258, 0.27577711), "interpolation": "bicubic"}

@dataclass(frozen=True)
class PublishedWeights:
    """One publisher's checkpoint of a backbone: what to fetch, from whom, in which format (the `kind` of loader in
    benchmark/publisher_weights.py). `files` are the published names, looked for in that order in each place
    (benchmark/initialisation.py, weight_locations); a name with a folder is a file of a Hugging Face model card
    kept in a folder named after the card."""
    init: str                    # the suite file's `init` name
    kind: str                    # "dinov2" or "clip": the key layouts benchmark/publisher_weights.py reads
    label: str                   # the backbone and its weights, as tables name them
    files: tuple[str, ...]
    url: str                     # where the first file is published
    publisher: str
    card: str                    # timm's Hugging Face model card of the same weights (its model.safetensors)
    timm_tag: str                # timm's pretrained tag: arch.tag names the config of the preprocessing
    normalisation: dict          # mean, std, interpolation of timm's pretrained config of `timm_tag`

    def init_spec(self) -> dict:
        return {"kind": self.kind, "weights": self.init, "files": list(self.files), "url": self.url}


def _dinov2(size: str, letter: str) -> PublishedWeights:
    arch = f"vit_{size}_patch14_dinov2"
    name = f"dinov2_vit{letter}14_pretrain.pth"
    return PublishedWeights(
        init="dinov2", kind="dinov2", label=f"DINOv2 ViT-{letter.upper()}/14",
        files=(name, f"{arch}.lvd142m/model.safetensors"),
        url=f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{letter}14/{name}",
        publisher="facebookresearch/dinov2 (Meta AI; the 'pretrained backbones' table of its README)",
        card=f"https://huggingface.co/timm/{arch}.lvd142m", timm_tag=f"{arch}.lvd142m",
        normalisation=IMAGENET_NORMALISATION)


# Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024 (arXiv:2304.07193);
# Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021 (OpenAI's
# URLs: openai/CLIP, clip/clip.py `_MODELS`); Cherti et al., "Reproducible scaling laws for contrastive
# language-image learning", CVPR 2023 (OpenCLIP's ViT-B-16 laion2b_s34b_b88k).
CLIP_OPENAI = PublishedWeights(
    init="clip_openai", kind="clip", label="CLIP ViT-B/16 (OpenAI)",
    files=("ViT-B-16.pt", "vit_base_patch16_clip_224.openai/model.safetensors"),
    url="https://openaipublic.azureedge.net/clip/models/"
        "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    publisher="openai/CLIP (OpenAI; a TorchScript archive, as clip.load reads it)",
    card="https://huggingface.co/timm/vit_base_patch16_clip_224.openai",
    timm_tag="vit_base_patch16_clip_quickgelu_224.openai", normalisation=OPENAI_CLIP_NORMALISATION)
OPENCLIP_LAION2B = PublishedWeights(
    init="openclip_laion2b", kind="clip", label="OpenCLIP ViT-B/16 (LAION-2B)",
    files=("CLIP-ViT-B-16-laion2B-s34B-b88K/open_clip_pytorch_model.bin", "open_clip_pytorch_model.bin",
           "vit_base_patch16_clip_224.laion2b/model.safetensors"),
    url="https://huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K/resolve/main/open_clip_pytorch_model.bin",
    publisher="mlfoundations/open_clip (LAION; the model card laion/CLIP-ViT-B-16-laion2B-s34B-b88K)",
    card="https://huggingface.co/timm/vit_base_patch16_clip_224.laion2b",
    timm_tag="vit_base_patch16_clip_224.laion2b", normalisation=OPENAI_CLIP_NORMALISATION)

# backbone name -> (its timm architecture and options, its published weights: the first is its default init)
VIT_ARCHITECTURES: dict[str, tuple[dict, tuple[PublishedWeights, ...]]] = {
    "vit_small_patch14_dinov2": ({"arch": "vit_small_patch14_dinov2"}, (_dinov2("small", "s"),)),
    "vit_base_patch14_dinov2": ({"arch": "vit_base_patch14_dinov2"}, (_dinov2("base", "b"),)),
    # OpenAI's CLIP was trained with QuickGELU (timm's note on vit_base_patch16_clip_224.openai), LAION-2B's with GELU
    "vit_base_patch16_clip_quickgelu_224": ({"arch": "vit_base_patch16_clip_quickgelu_224",
                                             "options": {"num_classes": 512}}, (CLIP_OPENAI,)),
    "vit_base_patch16_clip_224": ({"arch": "vit_base_patch16_clip_224", "options": {"num_classes": 512}},
                                  (OPENCLIP_LAION2B,)),
}
DEFAULT_INPUT_SIZE = 224

# The tests' and the quickstart's ViT: timm's ViT-Ti/16 shrunk to 2 blocks of width 64 (2 heads), patches of 8 px
# at the quickstart's 32 px (4 x 4 patches + the CLS token); no published weights (SimCLR on the synthetic images, or
# random).
TOY_VIT = {"arch": "vit_tiny_patch16_224", "head": "mlp", "embed_dim": 128,
           "options": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2},
           "preprocessing": {"input_size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                             "interpolation": "bicubic"}}


def published_weights(backbone: str, init: str | None = None) -> PublishedWeights | None:
    """The published weights `init` (default: the backbone's first) of a ViT backbone name; None when `backbone`
    has none. Raises ValueError naming the inits that exist for it."""
    if backbone not in VIT_ARCHITECTURES:
        return None
    weights = VIT_ARCHITECTURES[backbone][1]
    if init is None:
        return weights[0]
    for candidate in weights:
        if candidate.init == init:
            return candidate
    elsewhere = [name for name, (_, ws) in VIT_ARCHITECTURES.items() if any(w.init == init for w in ws)]
    hint = f"; {init} weights are for the backbone {' or '.join(elsewhere)}" if elsewhere else ""
    raise ValueError(f"init {init!r} does not exist for the backbone {backbone} (its published weights: "
                     f"{', '.join(w.init for w in weights)}){hint}")


def vit_backbone_spec(backbone: str, input_size: int | None = None) -> dict:
    """The spec of a ViT backbone name (VIT_ARCHITECTURES) at `input_size` px (default 224), without its init; the
    preprocessing of timm's pretrained config of its default weights. Raises ValueError when the input size is not a
    multiple of the patch size."""
    base, weights = VIT_ARCHITECTURES[backbone]
    size = input_size or DEFAULT_INPUT_SIZE
    patch = int(re.search(r"patch(\d+)", base["arch"]).group(1))      # timm's names say it: vit_base_patch14_...
    if size < patch or size % patch:
        raise ValueError(f"input size {size} px is not a multiple of {backbone}'s patch size {patch} px (e.g. "
                         f"{DEFAULT_INPUT_SIZE // patch * patch} or {518 // patch * patch})")
    config = weights[0].normalisation
    return {"arch": base["arch"], "head": "mlp", "embed_dim": 128,
            "options": {**base.get("options", {}), "img_size": size},
            "preprocessing": {"input_size": size, "mean": list(config["mean"]), "std": list(config["std"]),
                              "interpolation": config["interpolation"]}}


def backbone_label(backbone: dict) -> str:
    """A backbone spec as tables name it: its published weights' label ("DINOv2 ViT-B/14"), else its init and
    architecture ("MoCo v2 ResNet-50", "SimCLR small_cnn")."""
    init = backbone.get("init", {})
    published = weights_of(init)
    if published is not None:
        return published.label
    arch = {"resnet50": "ResNet-50", "resnet18": "ResNet-18", "small_cnn": "small CNN"}.get(
        backbone.get("arch"), backbone.get("arch", "?"))
    if backbone == TOY_VIT or {k: v for k, v in backbone.items() if k != "init"} == TOY_VIT:
        arch = "toy ViT"
    kind = {"moco_v2": "MoCo v2", "simclr": "SimCLR", "random": "random", "torchvision": "ImageNet-supervised",
            "dinov2": "DINOv2", "clip": "CLIP"}.get(init.get("kind", "random"), init.get("kind", "random"))
    return f"{kind} {arch}"


def weights_of(init: dict) -> PublishedWeights | None:
    """The published weights an init spec was made from (`PublishedWeights.init_spec`), None for the other inits."""
    for _, weights in VIT_ARCHITECTURES.values():
        for candidate in weights:
            if (init.get("kind"), init.get("weights"), init.get("url")) == (candidate.kind, candidate.init,
                                                                            candidate.url):
                return candidate
    return None
