"""The publishers' checkpoints of the ViT backbones, read from local files and checked before any training.

Four formats, told apart by their keys (`checkpoint_format`), each converted to timm's layout by timm's own
converters (`timm.models.vision_transformer.checkpoint_filter_fn`, which calls `_convert_dinov2` and
`_convert_openai_clip`, and resamples the position embeddings to the model's grid):

- "dinov2": facebookresearch/dinov2's `dinov2_vit{s,b}14_pretrain.pth`, a pickled state dict of its
  DinoVisionTransformer: `cls_token`, `pos_embed` (1 + 37 x 37 positions: 518 px), `mask_token` (iBOT's masked-patch
  token, unused at inference: ignored), `patch_embed.proj.*`, `blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma,
  norm2, mlp.fc1, mlp.fc2, ls2.gamma}`, `norm.*`.
- "clip": a CLIP model's state dict, `visual.*` for the image tower (`visual.conv1.weight`, `visual.class_embedding`,
  `visual.positional_embedding`, `visual.ln_pre.*`, `visual.transformer.resblocks.N.{ln_1, attn.in_proj_weight,
  attn.in_proj_bias, attn.out_proj.*, ln_2, mlp.c_fc.*, mlp.c_proj.*}`, `visual.ln_post.*`, `visual.proj`), every
  other key being the text tower and the model's scalars (`token_embedding`, `transformer.*`, `ln_final`,
  `text_projection`, `logit_scale`, and in OpenAI's archive `input_resolution`, `context_length`, `vocab_size`):
  ignored. OpenAI's `ViT-B-16.pt` is a TorchScript archive (read with `torch.jit.load(...).state_dict()`, as
  openai/CLIP's `clip.load(jit=False)` does; its weights are float16, converted to float32); OpenCLIP's
  `open_clip_pytorch_model.bin` a pickled state dict with the same names.
- "timm_dinov2", "timm_clip": the `model.safetensors` of timm's Hugging Face model cards, already in timm's layout
  (the CLIP ones with `head.*`, the projection).

Pickles are read with `torch.load(..., weights_only=True)` (a file cannot run code), safetensors with the
safetensors library; a TorchScript archive holds TorchScript, which `torch.jit.load` deserialises without running
Python. Every key of the file must be used or be one of the ignored ones above, and every weight of the trunk must
come from the file: a file that does not fit is refused with its own keys beside the expected ones.
"""
from __future__ import annotations

import logging
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .backbone_specs import weights_of

log = logging.getLogger(__name__)

FORMATS = {
    "dinov2": "facebookresearch/dinov2's pretrained backbone (dinov2_vit*14_pretrain.pth)",
    "clip": "a CLIP model (OpenAI's ViT-*.pt TorchScript archive or OpenCLIP's open_clip_pytorch_model.bin)",
    "timm_dinov2": "a timm DINOv2 ViT (model.safetensors of a timm model card)",
    "timm_clip": "a timm CLIP image tower (model.safetensors of a timm model card)",
}
# The formats each init kind reads
ACCEPTED = {"dinov2": ("dinov2", "timm_dinov2"), "clip": ("clip", "timm_clip")}
DINOV2_IGNORED = ("mask_token",)


class WeightsError(ValueError):
    """A weights file that cannot be read, is of another publisher's format, or does not fit the backbone."""


@dataclass(frozen=True)
class LoadReport:
    """What a load used: `used` file keys (all the trunk's weights come from them), `ignored` file keys (the
    documented ones: DINOv2's mask token, CLIP's text tower), and the file's format."""
    format: str
    used: tuple[str, ...]
    ignored: tuple[str, ...]


def is_torchscript_archive(path: Path) -> bool:
    """A zip whose members hold TorchScript code (`<name>/code/...` and `<name>/constants.pkl`), as torch.jit.save
    writes it; a torch.save zip has neither."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.endswith("constants.pkl") for name in names) and any("/code/" in name for name in names)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file by key, on the CPU, in float32 where they were floating point: a .safetensors
    file, a TorchScript archive (its module's state_dict), or a pickled state dict (optionally under "state_dict" or
    "model"). Raises WeightsError naming the file when it cannot be read as any of these."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path), device="cpu")
        elif is_torchscript_archive(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)      # torch.jit is deprecated, its archives live on
                state = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict):
                state = state.get("state_dict", state.get("model", state))
    except Exception as error:              # truncated downloads, HTML error pages saved as .pth, foreign pickles
        raise WeightsError(f"cannot read the weights file {path}: {type(error).__name__}: {error}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def checkpoint_format(state: dict) -> str | None:
    """The publisher's layout of a state dict (a key of FORMATS), from its keys; None when none fits."""
    if "visual.class_embedding" in state:
        return "clip"
    if "mask_token" in state and "cls_token" in state:
        return "dinov2"
    if "cls_token" in state and "patch_embed.proj.weight" in state:
        return "timm_clip" if "norm_pre.weight" in state else "timm_dinov2"
    return None


def describe_vit(state: dict, fmt: str | None) -> str:
    """Width, depth and patch of the ViT a state dict holds, e.g. "width 384, 12 blocks, patches of 14 px"."""
    if fmt == "clip":
        blocks, patch_key = r"visual\.transformer\.resblocks\.(\d+)\.", "visual.conv1.weight"
    else:
        blocks, patch_key = r"blocks\.(\d+)\.", "patch_embed.proj.weight"
    depth = len({m.group(1) for k in state if (m := re.match(blocks, k))})
    patch = state.get(patch_key)
    width = patch.shape[0] if patch is not None else "?"
    size = f", patches of {patch.shape[-1]} px" if patch is not None and patch.dim() == 4 else ""
    return f"width {width}, {depth} blocks{size}"


def _preview(keys, count: int = 4) -> str:
    keys = list(keys)
    return f"{keys[:count]}" + (f" ({len(keys)} in all)" if len(keys) > count else "")


def convert(state: dict, fmt: str, model: torch.nn.Module) -> tuple[dict, tuple[str, ...], tuple[str, ...]]:
    """The state dict in timm's layout for `model` (position embeddings resampled to its grid), with the file keys
    it used and those it ignored. timm's converters do the renaming."""
    from timm.models.vision_transformer import checkpoint_filter_fn
    if fmt == "clip":
        ignored = tuple(k for k in state if not k.startswith("visual."))
        kept = {k: v for k, v in state.items() if k.startswith("visual.")}
    elif fmt == "dinov2":
        ignored = tuple(k for k in state if k in DINOV2_IGNORED)
        kept = dict(state)                         # timm's converter pops mask_token from the dict it is given
    else:
        ignored, kept = (), dict(state)
    used = tuple(k for k in state if k not in ignored)
    return checkpoint_filter_fn(kept, model), used, ignored


def load_publisher_weights(trunk: torch.nn.Module, path: Path, init: dict, backbone_name: str = "") -> LoadReport:
    """Load the ViT weights file `path` of the init spec `init` (kind "dinov2" or "clip") into `trunk` (a timm
    VisionTransformer), strictly: every trunk weight from the file, every file key used or documented as ignored.

    Raises WeightsError naming the file: unreadable; of another publisher's format than the init reads (e.g. a CLIP
    file for a DINOv2 backbone), with what it is and what is expected; keys missing, left over or of other shapes,
    with the file's own keys beside the expected ones."""
    path = Path(path)
    kind = init["kind"]
    published = weights_of(init)
    wanted = (f"{published.label}: {' or '.join(published.files)}" if published is not None
              else " or ".join(FORMATS[f] for f in ACCEPTED[kind]))
    state = read_checkpoint(path)
    fmt = checkpoint_format(state)
    if fmt not in ACCEPTED[kind]:
        what = (f"is {FORMATS[fmt]} ({describe_vit(state, fmt)})" if fmt is not None
                else f"is not a checkpoint of a known ViT publisher (its keys begin {_preview(state)})")
        raise WeightsError(f"{path} {what}, but the backbone {backbone_name or 'of this run'} with init "
                           f"{init.get('weights', kind)!r} reads {' or '.join(FORMATS[f] for f in ACCEPTED[kind])} "
                           f"({wanted}); pass the right file with --pretrained, or change the suite's backbone/init")
    try:
        converted, used, ignored = convert(state, fmt, trunk)
    except Exception as error:           # timm's resampling of a pos_embed of another width, and the like
        raise WeightsError(f"{path} ({FORMATS[fmt]}; {describe_vit(state, fmt)}) does not fit the backbone "
                           f"{backbone_name}: {type(error).__name__}: {error}") from None
    expected = trunk.state_dict()
    missing = [k for k in expected if k not in converted]
    left_over = [k for k in converted if k not in expected]
    mismatched = [f"{k} {tuple(converted[k].shape)} vs {tuple(expected[k].shape)}" for k in converted
                  if k in expected and converted[k].shape != expected[k].shape]
    if missing or left_over or mismatched:
        model_width = getattr(trunk, "embed_dim", "?")
        raise WeightsError(
            f"{path} ({FORMATS[fmt]}; {describe_vit(state, fmt)}) does not fit the backbone {backbone_name} "
            f"(width {model_width}, {len(getattr(trunk, 'blocks', []))} blocks): after timm's conversion "
            f"{len(missing)} trunk weights missing (e.g. {missing[:3]}), {len(left_over)} left over (e.g. "
            f"{left_over[:3]}), {len(mismatched)} of another shape (e.g. {mismatched[:3]}, file vs backbone). The "
            f"file's own keys begin {_preview(used)}; the backbone expects timm's keys "
            f"{_preview(expected)} ({wanted})")
    trunk.load_state_dict(converted, strict=True)
    log.info("loaded %s (%s): %d keys used, %d ignored%s", path, FORMATS[fmt], len(used), len(ignored),
             f" (e.g. {list(ignored[:3])})" if ignored else "")
    return LoadReport(fmt, used, ignored)
