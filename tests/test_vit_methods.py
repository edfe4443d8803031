"""Every registered method on a ViT trunk: the ViT's optimiser groups, the hyper-parameters a ViT adds (and that a
CNN's runs never see), the zero-shot row's feature, and one epoch of every method from the toy ViT on the
quickstart's data, through the runner."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from benchmark.backbone_specs import TOY_VIT
from methods.backbones import build_backbone
from methods.base import HparamError, resolve_hparams, vit_parameter_groups
from methods.registry import REGISTRY, method_names

from .conftest import prepared_run, tiny_suite

TOY_RANDOM = {**copy.deepcopy(TOY_VIT), "init": {"kind": "random"}}


def toy_vit(depth: int = 2):
    return build_backbone("vit_tiny_patch16_224", "mlp", 16, options={**TOY_VIT["options"], "embed_dim": 16,
                                                                      "depth": depth})


def test_vit_parameter_groups_decay_the_lr_layer_by_layer():
    net = toy_vit(depth=2)
    names = {id(p): n for n, p in net.trunk.named_parameters()}
    lrs, decays = {}, {}
    for group in vit_parameter_groups(net.trunk, lr=0.01, weight_decay=1e-4, layer_decay=0.9,
                                      patch_embed_lr_mult=0.2):
        for p in group["params"]:
            lrs[names[id(p)]], decays[names[id(p)]] = group["lr"], group["weight_decay"]
    assert set(lrs) == set(names.values())                       # every weight of the trunk, once
    # By hand, 2 blocks: the top layer (block 1 and the final norm) at 0.01, block 0 at 0.01 x 0.9 = 0.009, the stem
    # (CLS token, position embeddings) at 0.01 x 0.9^2 = 0.0081, the patch embedding at 0.0081 x 0.2 = 0.00162.
    assert lrs["norm.weight"] == lrs["blocks.1.mlp.fc1.weight"] == pytest.approx(0.01)
    assert lrs["blocks.0.attn.qkv.weight"] == pytest.approx(0.009)
    assert lrs["cls_token"] == lrs["pos_embed"] == pytest.approx(0.0081)
    assert lrs["patch_embed.proj.weight"] == lrs["patch_embed.proj.bias"] == pytest.approx(0.00162)
    # no weight decay on 1-d weights (biases, LayerNorm), the CLS token and position embeddings
    assert decays["blocks.0.attn.qkv.weight"] == decays["patch_embed.proj.weight"] == 1e-4
    assert decays["blocks.0.norm1.weight"] == decays["blocks.0.attn.qkv.bias"] == decays["pos_embed"] == 0.0


def test_a_method_s_optimiser_on_a_vit_holds_the_head_and_its_own_modules_at_its_lr():
    cls = REGISTRY["darl"]
    hparams = cls.Hparams(**resolve_hparams(cls, "office_home", family="vit"))
    method = cls(hparams, toy_vit())
    groups = method.optimised_parameters(hparams.lr, hparams.weight_decay, method.predictor)
    assert sum(len(g["params"]) for g in groups) == \
        len(list(method.backbone.parameters())) + len(list(method.predictor.parameters()))
    last = groups[-1]
    assert last["lr"] == 2e-4 and {id(p) for p in method.predictor.parameters()} <= {id(p) for p in last["params"]}
    assert min(g["lr"] for g in groups) == pytest.approx(2e-4 * 0.9 ** 2 * 0.2)


def test_vit_hyper_parameters_exist_on_vits_only_and_cnn_runs_keep_theirs():
    for name in method_names():
        cls = REGISTRY[name]
        cnn = resolve_hparams(cls, "office_home")
        assert "layer_decay" not in cnn and "patch_embed_lr_mult" not in cnn     # the CNN run ids stay
        vit = resolve_hparams(cls, "office_home", family="vit")
        trains = name != "pretrained"
        assert ("layer_decay" in vit) == trains and vit.get("layer_decay", 0.9) == 0.9
    # the methods whose CNN init kept its head put their own fresh linear head on a ViT
    for name in ("cds", "pcs", "coda"):
        assert resolve_hparams(REGISTRY[name], "office_home")["head"] == "init"
        assert resolve_hparams(REGISTRY[name], "office_home", family="vit")["head"] == "linear"
    assert resolve_hparams(REGISTRY["uem"], "office_home", {"layer_decay": "0.75"}, family="vit")["layer_decay"] \
        == 0.75
    with pytest.raises(HparamError, match="'layer_decay' of method 'uem' applies to vit backbones that it trains; "
                                          "this run's backbone is a cnn"):
        resolve_hparams(REGISTRY["uem"], "office_home", {"layer_decay": "0.75"})


# The overrides that make one epoch (two for UEM: one per stage) reach every loss term of each method.
ONE_EPOCH = {"cds": ["epochs=1"], "pcs": ["epochs=1"], "coda": ["epochs=1"], "darl": ["epochs=1"],
             "dgdir": ["epochs=1", "warmup_epochs=0"],
             "ucdir": ["epochs=1", "warmup_epochs=0", "cw_ramp_end_epoch=1", "align_start_epoch=0"],
             "dn2a": ["epochs=1", "warmup_epochs=0", "ramp_end_epoch=1"]}
UEM_STAGES = ["stage1_epochs=1", "stage2_epochs=1"]


def one_epoch_assignments() -> list[str]:
    return [f"{method}.{value}" for method in method_names() if method != "pretrained"
            for value in ONE_EPOCH.get(method, UEM_STAGES)]


@pytest.mark.slow
def test_every_registered_method_trains_an_epoch_on_a_toy_vit(tmp_path, cache_dir, one_thread):
    from benchmark.runner import run_one
    from benchmark.suites import plan
    suite = tiny_suite("test_toy_vit", backbone=TOY_RANDOM, methods=method_names())
    specs = plan(suite, assignments=one_epoch_assignments())
    assert {s.method for s in specs} == set(method_names())
    for spec in specs:
        metrics = run_one(prepared_run(spec, tmp_path, cache_dir))
        assert math.isfinite(metrics["map_all_coda"]) and metrics["n_queries"] > 0, spec.method
        checkpoint = torch.load(spec.run_dir(tmp_path) / "ckpt" / "last.pt", weights_only=False) \
            if spec.method != "pretrained" else None
        if checkpoint is not None:                 # the ViT's lowest weights moved: training reached the trunk
            assert not torch.equal(checkpoint["method"]["backbone.trunk.patch_embed.proj.weight"].cpu(),
                                   _initial_patch_embedding(spec, cache_dir)), spec.method


def _initial_patch_embedding(spec, cache_dir) -> torch.Tensor:
    from benchmark.initialisation import build_initial_backbone
    from benchmark.runner import seed_everything
    seed_everything(spec.seed)
    return build_initial_backbone(spec.backbone, cache_dir, None, torch.device("cpu")).trunk.patch_embed.proj.weight
