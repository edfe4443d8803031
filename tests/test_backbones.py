"""The ViT backbones: the publishers' checkpoint formats load with every key used and nothing left over, and compute
the publishers' own forward; files that do not fit are refused with their keys; preprocessing is part of the spec.

Checkpoints are written here in each published layout with random values (tests/publisher_checkpoints.py): DINOv2's
ViT-S/14 at its real shapes (one 88 MB file), ViT-B/14 and CLIP ViT-B/16 with the real key names at a reduced width
and depth (2 blocks of width 64), given to the loader with the matching config (the spec's timm options)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.backbone_specs import CLIP_OPENAI, published_weights, vit_backbone_spec
from benchmark.initialisation import find_pretrained, load_pretrained, missing_weights_message, new_backbone
from benchmark.publisher_weights import WeightsError, read_checkpoint
from benchmark.backbone_choice import backbone_spec
from datasets.registry import get_dataset

from .publisher_checkpoints import clip_model, dinov2_state, write_openai_archive, write_openclip_bin

REDUCED = {"depth": 2, "embed_dim": 64, "num_heads": 2}


def spec_of(backbone: str, init: str | None = None, input_size: int | None = None, **options) -> dict:
    spec = backbone_spec(backbone, init or published_weights(backbone).init, get_dataset("office_home"),
                         input_size=input_size)
    spec["options"].update(options)
    return spec


def load(spec: dict, path):
    from benchmark.publisher_weights import load_publisher_weights
    net = new_backbone(spec).eval()
    return net, load_publisher_weights(net.trunk, path, spec["init"], spec["arch"])


# --- DINOv2 ----------------------------------------------------------------------------------------------------------

def test_a_dinov2_vits14_file_of_the_published_shapes_loads_every_key(tmp_path):
    state = dinov2_state(width=384, depth=12)                     # ViT-S/14: 22M weights, at 518 px (37 x 37)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(state, path)
    spec = spec_of("vit_small_patch14_dinov2")                    # at 224 px: 16 x 16 patches
    net, report = load(spec, path)
    assert report.format == "dinov2" and report.ignored == ("mask_token",)
    assert set(report.used) | set(report.ignored) == set(state) and not set(report.used) & set(report.ignored)
    trunk = net.trunk.state_dict()
    assert len(trunk) == len(state) - 1 == 174
    for key in ("cls_token", "blocks.11.ls2.gamma", "blocks.5.attn.qkv.weight", "norm.bias", "patch_embed.proj.weight"):
        assert torch.equal(trunk[key], state[key]), key
    # the 37 x 37 position grid resampled to 16 x 16 once (timm's resample_abs_pos_embed); the CLS position kept
    assert trunk["pos_embed"].shape == (1, 1 + 16 * 16, 384)
    assert torch.equal(trunk["pos_embed"][:, 0], state["pos_embed"][:, 0])
    assert net.features(torch.rand(2, 3, 224, 224)).shape == (2, 384)


def test_the_zero_shot_row_of_a_publisher_s_vit_is_its_trunk_feature(tmp_path):
    from methods.pretrained import Pretrained
    path = tmp_path / "dinov2_vitb14_pretrain.pth"
    torch.save(dinov2_state(width=64, depth=2), path)
    spec = spec_of("vit_base_patch14_dinov2", input_size=28, **REDUCED)
    net = new_backbone(spec)
    assert net.zero_shot_feature == "head"                  # random, or a SimCLR init: the head trains with it
    load_pretrained(net, path, spec["init"], spec["arch"])
    assert net.zero_shot_feature == "trunk"                 # the publisher's feature, no head of theirs
    method = Pretrained(Pretrained.Hparams(), net.eval())
    images = torch.rand(4, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(method.embed(images), F.normalize(net.features(images), dim=1))
        assert method.embed(images).shape == (4, 64)


def _dinov2_reference(state: dict, images: torch.Tensor, heads: int) -> torch.Tensor:
    """DINOv2's forward written from its model definition (facebookresearch/dinov2, models/vision_transformer.py and
    layers/block.py): patch embedding, CLS token + position embeddings, blocks x <- x + ls1 * attn(norm1(x)),
    x <- x + ls2 * mlp(norm2(x)) (GELU), LayerNorm eps 1e-6, then the normalised CLS token."""
    x = F.conv2d(images, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=14)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(len(x), -1, -1), x], dim=1) + state["pos_embed"]
    width = x.shape[-1]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        p = {k[len(f"blocks.{i}."):]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        y = F.layer_norm(x, (width,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        q, k, v = F.linear(y, p["attn.qkv.weight"], p["attn.qkv.bias"]).view(
            len(x), -1, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(width // heads), dim=-1)
        y = (attention @ v).transpose(1, 2).reshape(len(x), -1, width)
        x = x + p["ls1.gamma"] * F.linear(y, p["attn.proj.weight"], p["attn.proj.bias"])
        y = F.layer_norm(x, (width,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, p["mlp.fc1.weight"], p["mlp.fc1.bias"])), p["mlp.fc2.weight"],
                     p["mlp.fc2.bias"])
        x = x + p["ls2.gamma"] * y
    return F.layer_norm(x, (width,), state["norm.weight"], state["norm.bias"], eps=1e-6)[:, 0]


def test_dinov2_vitb14_key_names_give_the_publisher_s_forward(tmp_path):
    # At DINOv2's own 518 px (37 x 37 patches: no resampling), the loaded trunk computes DINOv2's CLS feature.
    state = dinov2_state(width=64, depth=2, seed=1)
    state = {k: v * 20 if k.endswith((".weight", ".bias", "gamma")) and "norm" not in k else v
             for k, v in state.items()}                          # weights large enough that every block matters
    path = tmp_path / "dinov2_vitb14_pretrain.pth"
    torch.save(state, path)
    net, report = load(spec_of("vit_base_patch14_dinov2", input_size=518, **REDUCED), path)
    assert set(report.used) == set(state) - {"mask_token"}
    images = torch.rand(2, 3, 518, 518)
    with torch.no_grad():
        expected = _dinov2_reference(state, (images - net.mean) / net.std, heads=2)
        torch.testing.assert_close(net.features(images), expected, rtol=1e-4, atol=1e-4)


# --- CLIP ------------------------------------------------------------------------------------------------------------

CLIP_SIZES = {"patch_size": 8, "num_classes": 32, **REDUCED}     # CLIPModel's defaults: 32 px, patch 8, proj to 32


def test_openai_s_torchscript_archive_loads_the_image_tower_and_computes_clip_s_embedding(tmp_path):
    model = clip_model(seed=2)
    path = write_openai_archive(model, tmp_path / "ViT-B-16.pt")
    file_keys = set(read_checkpoint(path))
    net, report = load(spec_of("vit_base_patch16_clip_quickgelu_224", "clip_openai", input_size=32, **CLIP_SIZES),
                       path)
    assert report.format == "clip"
    assert set(report.used) == {k for k in file_keys if k.startswith("visual.")}
    assert set(report.ignored) == file_keys - set(report.used)          # the text tower and the model's sizes
    assert {"token_embedding.weight", "text_projection", "logit_scale", "input_resolution", "vocab_size",
            "transformer.resblocks.0.attn.in_proj_weight", "ln_final.weight"} <= set(report.ignored)
    reference = copy.deepcopy(model).half().float()      # the archive's weights are float16, as OpenAI's
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        # CLIP's own normalisation (timm's pretrained config of the OpenAI weights) and its embedding ln_post(CLS) @ proj
        assert net.mean.flatten().tolist() == pytest.approx([0.48145466, 0.4578275, 0.40821073])
        expected = reference((images - net.mean) / net.std)
        torch.testing.assert_close(net.features(images), expected, rtol=1e-5, atol=1e-5)


def test_openclip_s_bin_loads_with_gelu(tmp_path):
    model = clip_model(seed=3, quick_gelu=False)
    path = write_openclip_bin(model, tmp_path / "open_clip_pytorch_model.bin")
    net, report = load(spec_of("vit_base_patch16_clip_224", "openclip_laion2b", input_size=32, **CLIP_SIZES), path)
    assert set(report.used) | set(report.ignored) == set(model.state_dict())
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.features(images), model((images - net.mean) / net.std), rtol=1e-5, atol=1e-5)


def test_timm_model_card_safetensors_load_as_is(tmp_path):
    from safetensors.torch import save_file
    source, _ = load(spec_of("vit_base_patch16_clip_224", "openclip_laion2b", input_size=32, **CLIP_SIZES),
                     write_openclip_bin(clip_model(seed=4, quick_gelu=False), tmp_path / "open_clip.bin"))
    folder = tmp_path / "vit_base_patch16_clip_224.laion2b"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in source.trunk.state_dict().items()}, folder / "model.safetensors")
    spec = spec_of("vit_base_patch16_clip_224", "openclip_laion2b", input_size=32, **CLIP_SIZES)
    # found under its model card's folder name in <data root>/weights/
    (tmp_path / "weights").mkdir()
    (folder).rename(tmp_path / "weights" / folder.name)
    found = find_pretrained(spec["init"], None, tmp_path)
    assert found == tmp_path / "weights" / "vit_base_patch16_clip_224.laion2b" / "model.safetensors"
    net, report = load(spec, found)
    assert report.format == "timm_clip" and report.ignored == ()
    for key, value in source.trunk.state_dict().items():
        assert torch.equal(net.trunk.state_dict()[key], value), key


# --- refusals --------------------------------------------------------------------------------------------------------

def test_a_clip_file_given_for_a_dinov2_backbone_is_refused_saying_what_each_is(tmp_path):
    path = write_openclip_bin(clip_model(), tmp_path / "open_clip_pytorch_model.bin")
    spec = spec_of("vit_base_patch14_dinov2", **REDUCED)
    with pytest.raises(WeightsError) as refused:
        load_pretrained(new_backbone(spec), path, spec["init"], spec["arch"])
    message = str(refused.value)
    assert str(path) in message and "is a CLIP model" in message and "width 64, 2 blocks" in message
    assert "vit_base_patch14_dinov2" in message and "'dinov2'" in message
    assert "dinov2_vitb14_pretrain.pth" in message and "--pretrained" in message


def test_a_file_that_lacks_a_weight_and_has_a_stray_one_names_both_beside_the_expected_keys(tmp_path):
    state = dinov2_state(width=64, depth=2)
    del state["blocks.0.ls1.gamma"]
    state["blocks.1.attn.rope.periods"] = torch.ones(16)           # a key no DINOv2 ViT-B/14 has
    path = tmp_path / "dinov2_vitb14_pretrain.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as refused:
        load(spec_of("vit_base_patch14_dinov2", **REDUCED), path)
    message = str(refused.value)
    assert "1 trunk weights missing (e.g. ['blocks.0.ls1.gamma'])" in message
    assert "1 left over (e.g. ['blocks.1.attn.rope.periods'])" in message
    assert "The file's own keys begin ['cls_token', 'pos_embed', 'patch_embed.proj.weight'" in message
    assert "the backbone expects timm's keys ['cls_token', 'pos_embed'" in message


def test_a_file_of_another_width_is_refused_with_both_shapes(tmp_path):
    path = tmp_path / "dinov2_vitb14_pretrain.pth"
    torch.save(dinov2_state(width=32, depth=2), path)
    with pytest.raises(WeightsError) as refused:
        load(spec_of("vit_base_patch14_dinov2", **REDUCED), path)
    assert "width 32, 2 blocks" in str(refused.value) and "cls_token (1, 1, 32) vs (1, 1, 64)" in str(refused.value)


def test_an_unreadable_file_is_named(tmp_path):
    path = tmp_path / "dinov2_vitb14_pretrain.pth"
    path.write_bytes(b"<html>403 Forbidden</html>")
    with pytest.raises(WeightsError, match=r"cannot read the weights file .*dinov2_vitb14_pretrain.pth"):
        load(spec_of("vit_base_patch14_dinov2", **REDUCED), path)


def test_a_missing_file_is_named_with_its_publisher_and_where_to_put_it(tmp_path):
    spec = spec_of("vit_base_patch14_dinov2")
    assert find_pretrained(spec["init"], tmp_path / "cache", tmp_path / "data") is None
    message = missing_weights_message(spec["init"], tmp_path / "cache", tmp_path / "data")
    assert "DINOv2 ViT-B/14" in message and "dinov2_vitb14_pretrain.pth" in message
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth" in message
    assert "facebookresearch/dinov2" in message and "huggingface.co/timm/vit_base_patch14_dinov2.lvd142m" in message
    assert str(tmp_path / "data" / "weights" / "dinov2_vitb14_pretrain.pth") in message
    assert "--pretrained PATH" in message and "nothing is downloaded" in message
    clip = missing_weights_message(spec_of("vit_base_patch16_clip_quickgelu_224")["init"], None, None)
    assert CLIP_OPENAI.url in clip and "ViT-B-16.pt" in clip


def test_pretrained_path_is_looked_at_first_for_a_vit(tmp_path):
    from benchmark.initialisation import weight_locations
    spec = spec_of("vit_small_patch14_dinov2")
    places = weight_locations(spec["init"], tmp_path / "cache", tmp_path / "data", tmp_path / "mine.pth")
    assert places[0] == tmp_path / "mine.pth"
    assert places[1:] == [tmp_path / root / "weights" / name for root in ("data", "cache")
                          for name in ("dinov2_vits14_pretrain.pth", "vit_small_patch14_dinov2.lvd142m/model.safetensors")]


# --- preprocessing and the specs -------------------------------------------------------------------------------------

def test_each_backbone_s_preprocessing_is_in_its_spec_and_applied_by_the_net():
    dinov2, clip = spec_of("vit_base_patch14_dinov2"), spec_of("vit_base_patch16_clip_quickgelu_224")
    # timm's pretrained configs: ImageNet's statistics for DINOv2, CLIP's own for CLIP; 224 px, bicubic
    assert dinov2["preprocessing"] == {"input_size": 224, "mean": [0.485, 0.456, 0.406],
                                       "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}
    assert clip["preprocessing"]["std"] == [0.26862954, 0.26130258, 0.27577711]
    assert dinov2["options"] == {"img_size": 224} and clip["options"] == {"num_classes": 512, "img_size": 224}
    assert spec_of("vit_base_patch14_dinov2", input_size=518)["preprocessing"]["input_size"] == 518
    with pytest.raises(ValueError, match="not a multiple of vit_base_patch14_dinov2's patch size 14 px"):
        vit_backbone_spec("vit_base_patch14_dinov2", 256)
    # the net resizes what it is given to its input size, then normalises with the spec's statistics
    toy = spec_of("vit_base_patch16_clip_224", "openclip_laion2b", input_size=32, **CLIP_SIZES)
    net = new_backbone(toy).eval()
    images = torch.rand(2, 3, 48, 48)
    resized = F.interpolate(images, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
    mean, std = (torch.tensor(toy["preprocessing"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        assert torch.equal(net.features(images), net.trunk((resized - mean) / std))
    assert net.family == "vit"


def test_the_cnn_specs_carry_no_preprocessing_and_keep_imagenet_statistics():
    from benchmark.backbone_choice import BACKBONES
    for name in ("small_cnn", "resnet18", "resnet50"):
        assert "preprocessing" not in BACKBONES[name]
    net = new_backbone({**BACKBONES["small_cnn"], "init": {"kind": "random"}})
    assert net.family == "cnn" and net.zero_shot_feature == "head" and net.preprocessing.input_size is None
    assert net.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])


def test_the_written_preprocessing_is_timm_s_pretrained_config_and_loading_suites_does_not_import_timm():
    import subprocess
    import sys

    import timm.models

    from benchmark.backbone_specs import VIT_ARCHITECTURES
    for _, weights in VIT_ARCHITECTURES.values():
        for published in weights:
            config = timm.models.get_pretrained_cfg(published.timm_tag)
            assert (tuple(config.mean), tuple(config.std), config.interpolation) == (
                published.normalisation["mean"], published.normalisation["std"],
                published.normalisation["interpolation"]), published.timm_tag
    # timm (with torchvision's models and torch._dynamo: about 1.5 s) is imported when a ViT is built, not by every
    # process that loads the suites (the CLI, each --jobs worker, each SLURM task)
    probe = "import sys, benchmark.cli, benchmark.suites; print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
