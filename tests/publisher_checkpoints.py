"""Checkpoints written in the publishers' own key layouts, with random values, for the loading tests.

The layouts are written from the publishers' model definitions, not from timm (whose converters are what is
tested): facebookresearch/dinov2's DinoVisionTransformer (dinov2/models/vision_transformer.py: `cls_token`,
`pos_embed`, `mask_token`, `patch_embed.proj`, `blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1,
mlp.fc2, ls2.gamma}`, `norm`) and OpenAI's CLIP (openai/CLIP, clip/model.py: `VisionTransformer` under `visual.`,
`ResidualAttentionBlock` with `nn.MultiheadAttention`, `mlp.c_fc` / `mlp.c_proj`, QuickGELU; the text tower beside it).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn


def dinov2_state(width: int, depth: int, patch: int = 14, grid: int = 37, seed: int = 0) -> dict:
    """A DinoVisionTransformer's state dict (MLP blocks, LayerScale) at 518 px (37 x 37 patches of 14)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.02

    state = {"cls_token": rand(1, 1, width), "pos_embed": rand(1, 1 + grid * grid, width),
             "mask_token": torch.zeros(1, width), "patch_embed.proj.weight": rand(width, 3, patch, patch),
             "patch_embed.proj.bias": rand(width)}
    for i in range(depth):
        block = f"blocks.{i}."
        state.update({
            block + "norm1.weight": 1 + rand(width), block + "norm1.bias": rand(width),
            block + "attn.qkv.weight": rand(3 * width, width), block + "attn.qkv.bias": rand(3 * width),
            block + "attn.proj.weight": rand(width, width), block + "attn.proj.bias": rand(width),
            block + "ls1.gamma": 1e-5 + rand(width).abs(),
            block + "norm2.weight": 1 + rand(width), block + "norm2.bias": rand(width),
            block + "mlp.fc1.weight": rand(4 * width, width), block + "mlp.fc1.bias": rand(4 * width),
            block + "mlp.fc2.weight": rand(width, 4 * width), block + "mlp.fc2.bias": rand(width),
            block + "ls2.gamma": 1e-5 + rand(width).abs()})
    state.update({"norm.weight": 1 + rand(width), "norm.bias": rand(width)})
    return state


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, quick_gelu: bool = True):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        activation = QuickGELU() if quick_gelu else nn.GELU()
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", activation),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x):                     # x: [tokens, batch, width], as CLIP's
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, quick_gelu: bool = True):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, quick_gelu) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisualTower(nn.Module):
    def __init__(self, size: int, patch: int, width: int, layers: int, heads: int, output_dim: int,
                 quick_gelu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width ** -0.5)
        self.positional_embedding = nn.Parameter(torch.randn((size // patch) ** 2 + 1, width) * width ** -0.5)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, quick_gelu)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, output_dim) * width ** -0.5)

    def forward(self, x):
        """CLIP's image embedding of normalised images [B, 3, S, S]: ln_post(CLS) @ proj."""
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class CLIPModel(nn.Module):
    """The parameter tree of OpenAI's CLIP (a ViT image tower and a text transformer), with random values;
    `quick_gelu` False: OpenCLIP's LAION-2B ViT-B/16, the same names with GELU."""

    def __init__(self, size: int = 32, patch: int = 8, width: int = 64, layers: int = 2, heads: int = 2,
                 output_dim: int = 32, text_width: int = 32, vocab: int = 50, context: int = 7,
                 quick_gelu: bool = True):
        super().__init__()
        self.visual = VisualTower(size, patch, width, layers, heads, output_dim, quick_gelu)
        self.transformer = Transformer(text_width, 1, 2)
        self.token_embedding = nn.Embedding(vocab, text_width)
        self.positional_embedding = nn.Parameter(torch.randn(context, text_width) * 0.01)
        self.ln_final = nn.LayerNorm(text_width)
        self.text_projection = nn.Parameter(torch.randn(text_width, output_dim) * text_width ** -0.5)
        self.logit_scale = nn.Parameter(torch.ones([]) * 2.659)
        # OpenAI's TorchScript archives carry the model's sizes in its state dict (clip.build_model deletes them)
        self.register_buffer("input_resolution", torch.tensor(size))
        self.register_buffer("context_length", torch.tensor(context))
        self.register_buffer("vocab_size", torch.tensor(vocab))
        with torch.no_grad():                 # LayerNorms off their identity, so a swapped one would show
            for module in self.modules():
                if isinstance(module, nn.LayerNorm):
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_(0, 0.1)

    def forward(self, images):
        return self.visual(images)


def clip_model(seed: int = 0, **sizes) -> CLIPModel:
    torch.manual_seed(seed)
    return CLIPModel(**sizes).eval()


def write_openai_archive(model: CLIPModel, path: Path) -> Path:
    """OpenAI's distribution format: a TorchScript archive of the whole model, float16 weights."""
    import copy
    import warnings
    half = copy.deepcopy(model).half()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(half), str(path))
    return path


def write_openclip_bin(model: CLIPModel, path: Path) -> Path:
    """OpenCLIP's distribution format: the pickled state dict, float32, the same names."""
    torch.save(model.state_dict(), path)
    return path
