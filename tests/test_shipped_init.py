"""The quickstart's SimCLR init ships with the harness (benchmark/shipped_inits/): a fresh cache copies it instead of
training it, only for the exact spec its name's key hashes, and it is checked as a freshly trained init is."""
from __future__ import annotations

import copy

import pytest
import torch

from benchmark import initialisation
from benchmark.backbone_specs import QUICKSTART_BACKBONE
from benchmark.initialisation import (SHIPPED_INITS, cached_simclr_state, check_pretraining, new_backbone,
                                      simclr_file_name)
from datasets.registry import get_dataset, load_domain
from methods.augment import moco_v2_view
from methods.losses import nt_xent


def test_the_quickstart_s_init_is_shipped_and_passes_the_pretraining_check(cache_dir):
    shipped = SHIPPED_INITS / simclr_file_name(QUICKSTART_BACKBONE)
    assert shipped.is_file(), (f"the quickstart's SimCLR recipe or backbone changed: no {shipped.name} in "
                               f"{SHIPPED_INITS}; run `python scripts/ship_quickstart_init.py` and commit its file")
    assert sorted(p.name for p in SHIPPED_INITS.glob("*.pt")) == [shipped.name]       # no stale init left beside it
    net = new_backbone(QUICKSTART_BACKBONE)
    net.load_state_dict(torch.load(shipped, map_location="cpu", weights_only=True))     # strict: every key, no other
    info = get_dataset("synthetic")
    images = torch.cat([load_domain(info, d, None, cache_dir).images for d in info.domains]).float() / 255
    net.eval()
    with torch.no_grad():
        features = net(images)
        torch.manual_seed(0)
        batch = images[torch.randperm(len(images))[:128]]
        loss = float(nt_xent(net(moco_v2_view(batch, min_crop_scale=0.5)), net(moco_v2_view(batch, min_crop_scale=0.5)),
                             QUICKSTART_BACKBONE["init"]["temperature"]))
    check_pretraining(QUICKSTART_BACKBONE, loss, 128, features)     # raises PretrainingFailed for a dead init
    assert loss < 0.6 * torch.log(torch.tensor(255.0)).item()       # well below log(2B - 1) = 5.54: it learnt


def test_a_fresh_cache_copies_the_shipped_init_and_another_recipe_trains(tmp_path, cache_dir, capsys, monkeypatch):
    def no_training(*args):
        raise AssertionError("the shipped init was trained again")
    monkeypatch.setattr(initialisation, "pretrain_simclr", no_training)
    state = cached_simclr_state(QUICKSTART_BACKBONE, tmp_path, None, torch.device("cpu"))
    shipped = torch.load(SHIPPED_INITS / simclr_file_name(QUICKSTART_BACKBONE), weights_only=True)
    assert all(torch.equal(state[k], shipped[k]) for k in shipped) and state.keys() == shipped.keys()
    assert "the one shipped with the harness (benchmark/shipped_inits/small_cnn-simclr-" in capsys.readouterr().err
    other = copy.deepcopy(QUICKSTART_BACKBONE)
    other["init"]["epochs"] = 39                                    # another recipe, another key: trained here
    with pytest.raises(AssertionError, match="trained again"):
        cached_simclr_state(other, tmp_path, None, torch.device("cpu"))
