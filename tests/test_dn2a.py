"""DN2A's pieces on tiny tensors, with the expected values computed by hand in the comments, and a stop/resume run."""
from __future__ import annotations

import json
import math

import pytest
import torch

from benchmark.runner import run_one
from benchmark.suites import plan
from methods.dn2a import (cross_domain_neighbour, in_domain_neighbour, masked_mean,  # registers "dn2a"
                          nearest_slot, neighbour_weight, nn_info_nce, queue_statistics, standardise)
from methods.randaugment import RANDAUG_OPS, apply_randaug_ops, rand_augment

from .conftest import assert_key_encoder_trails, run_stopped_after_one_epoch, tiny_suite


# --- the in-domain neighbour ----------------------------------------------------------------------------------------

def test_in_domain_neighbour_by_hand():
    # Queue: slot 0 (1, 0) of instance 5, slot 1 (0, 1) of 7, slot 2 (0.8, 0.6) of 3, slot 3 (1, 0.05) empty (-1).
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [1.0, 0.05]])
    index = torch.tensor([5, 7, 3, -1])
    # Anchor (1, 0) of instance 5: slot 0 is its own older key (distance 0, excluded), slot 3 is empty (0.05,
    # excluded); slot 1 is sqrt 2 = 1.414 away, slot 2 sqrt(0.04 + 0.36) = 0.632 -> slot 2.
    # Anchor (0, 1) of instance 9: slot 1 at distance 0 -> slot 1.
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    slot, found = in_domain_neighbour(anchors, torch.tensor([5, 9]), keys, index)
    assert slot.tolist() == [2, 1] and found.tolist() == [True, True]
    # An empty queue has no neighbour.
    _, found = in_domain_neighbour(anchors, torch.tensor([5, 9]), keys, torch.full((4,), -1))
    assert found.tolist() == [False, False]


# --- per-domain standardisation -------------------------------------------------------------------------------------

def test_queue_statistics_and_standardisation_by_hand():
    # Filled rows (0, 0) and (2, 4); the empty slot (100, -100) does not count.
    # mean (1, 2); population variance ((1 + 1) / 2, (4 + 4) / 2) = (1, 4); eps 0 -> std (1, 2).
    keys = torch.tensor([[0.0, 0.0], [2.0, 4.0], [100.0, -100.0]])
    filled = torch.tensor([True, True, False])
    mean, std = queue_statistics(keys, filled, eps=0.0)
    assert mean.tolist() == [1.0, 2.0] and std.tolist() == [1.0, 2.0]
    # (0, 0) -> (-1, -1); (2, 4) -> (1, 1); (3, 2) -> (2, 0).
    points = torch.tensor([[0.0, 0.0], [2.0, 4.0], [3.0, 2.0]])
    assert standardise(points, mean, std).tolist() == [[-1.0, -1.0], [1.0, 1.0], [2.0, 0.0]]
    # eps is added to the variance: std (sqrt 1.25, sqrt 4.25).
    _, std = queue_statistics(keys, filled, eps=0.25)
    assert std.tolist() == pytest.approx([math.sqrt(1.25), math.sqrt(4.25)])


# --- the cross-domain neighbour and the reliability check ------------------------------------------------------------

def _two_domain_queues():
    # Domain A (the anchors' own): the unit diamond a0 (1, 0), a1 (-1, 0), a2 (0, 1), a3 (0, -1) of instances
    # 10..13, and an empty slot (0.79, -0.59). Mean (0, 0), variance (0.5, 0.5): a^ = sqrt 2 a.
    own_keys = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.79, -0.59]])
    own_index = torch.tensor([10, 11, 12, 13, -1])
    # Domain B: a rotated diamond shifted by (10, 10): b0 (10.6, 10.8), b1 (9.4, 9.2), b2 (10.8, 9.4),
    # b3 (9.2, 10.6), and an empty slot (0, 0). Mean (10, 10); variance per dim (0.36 + 0.36 + 0.64 + 0.64) / 4
    # = 0.5: b^ = sqrt 2 (b - 10), i.e. sqrt 2 times (0.6, 0.8), (-0.6, -0.8), (0.8, -0.6), (-0.8, 0.6).
    other_keys = torch.tensor([[10.6, 10.8], [9.4, 9.2], [10.8, 9.4], [9.2, 10.6], [0.0, 0.0]])
    other_index = torch.tensor([0, 1, 2, 3, -1])
    return own_keys, own_index, other_keys, other_index


def test_cross_domain_neighbour_and_reliability_by_hand():
    own_keys, own_index, other_keys, other_index = _two_domain_queues()
    # Both domains scale by sqrt 2 after standardisation, so distances are compared in units of sqrt 2 below.
    # Anchor 1: (0.5, 0.6) of instance 20. In-domain: a2 (0, 1) at sqrt(0.25 + 0.16) = 0.640 beats a0 at 0.781.
    #   Cross: b0' (0.6, 0.8) at sqrt(0.01 + 0.04) = 0.224 (others >= 1.237) -> b0.
    #   Back from b0': a2 0.632, a0 0.894, the anchor 0.224 -> the anchor itself: ACCEPTED.
    # Anchor 2: (0.05, -0.3) of instance 21. In-domain: a3 (0, -1) at sqrt(0.0025 + 0.49) = 0.702 beats a0 at 0.996.
    #   Cross: b2' (0.8, -0.6) at sqrt(0.5625 + 0.09) = 0.808 beats b1' (-0.6, -0.8) at sqrt(0.4225 + 0.25) = 0.820.
    #   Back from b2': a0 (1, 0) at sqrt(0.04 + 0.36) = 0.632, the anchor 0.808, a3 0.894 (the empty slot,
    #   0.014 away, does not count) -> a0, neither the anchor, its instance, nor its in-domain neighbour a3:
    #   REJECTED.
    anchors = torch.tensor([[0.5, 0.6], [0.05, -0.3]])
    anchor_index = torch.tensor([20, 21])
    in_slot, in_found = in_domain_neighbour(anchors, anchor_index, own_keys, own_index)
    assert in_slot.tolist() == [2, 3]
    cross = cross_domain_neighbour(anchors, anchor_index, own_keys, own_index, other_keys, other_index, in_slot,
                                   in_found, eps=0.0)
    assert cross.slot.tolist() == [0, 2]
    assert cross.found.tolist() == [True, True]
    assert cross.accepted.tolist() == [True, False]
    # Without standardisation anchor 2's nearest B key would be b1 (9.4, 9.2) (distance^2 9.35^2 + 9.5^2 = 177.7
    # vs b2's 10.75^2 + 9.7^2 = 209.7): the per-domain standardisation changes the choice.
    raw_slot, _ = nearest_slot(anchors[1:], other_keys, (other_index >= 0)[None, :])
    assert raw_slot.tolist() == [1]


def test_reliability_accepts_the_in_domain_neighbour_and_the_own_instance():
    own_keys, own_index, other_keys, other_index = _two_domain_queues()
    anchors = torch.tensor([[0.05, -0.3]])
    # Anchor 2 of the test above, back-search landing on a0: accepted when a0 is its in-domain neighbour ...
    cross = cross_domain_neighbour(anchors, torch.tensor([21]), own_keys, own_index, other_keys, other_index,
                                   torch.tensor([0]), torch.tensor([True]), eps=0.0)
    assert cross.accepted.tolist() == [True]
    # ... or when a0 holds an older key of the anchor's own instance (10).
    cross = cross_domain_neighbour(anchors, torch.tensor([10]), own_keys, own_index, other_keys, other_index,
                                   torch.tensor([3]), torch.tensor([True]), eps=0.0)
    assert cross.accepted.tolist() == [True]
    # An empty other queue gives no candidate.
    cross = cross_domain_neighbour(anchors, torch.tensor([21]), own_keys, own_index, other_keys,
                                   torch.full((5,), -1), torch.tensor([3]), torch.tensor([True]), eps=0.0)
    assert cross.found.tolist() == [False] and cross.accepted.tolist() == [False]


# --- the NN-positive InfoNCE term -----------------------------------------------------------------------------------

def test_nn_info_nce_by_hand():
    # q = (1, 0), positive (the neighbour) n = (0.6, 0.8), tau = 0.5: positive logit 0.6 / 0.5 = 1.2.
    # Queue: n itself (masked: the positive is not also a negative), (0, 1) -> 0, (-1, 0) -> -2, the query's own
    # instance (1, 0) (masked), an empty slot (masked).
    # loss = log(e^1.2 + e^0 + e^-2) - 1.2 = log(3.320117 + 1 + 0.135335) - 1.2 = 1.494127 - 1.2 = 0.294127
    query = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[0.6, 0.8]])
    negatives = torch.tensor([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    valid = torch.tensor([[False, True, True, False, False]])
    loss = nn_info_nce(query, positive, query @ negatives.t(), valid, temperature=0.5)
    assert loss.tolist() == pytest.approx([0.294127], abs=1e-5)
    # With nothing valid the loss is log(e^1.2) - 1.2 = 0 (the first steps, before the queues fill).
    assert nn_info_nce(query, positive, query @ negatives.t(), torch.zeros_like(valid), 0.5).tolist() == [0.0]


def test_masked_mean_and_warm_up():
    assert masked_mean(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([True, False, True])).item() == 2.0
    assert masked_mean(torch.tensor([1.0, 2.0]), torch.tensor([False, False])).item() == 0.0
    # Warm-up 20, ramp end 40: 0 before epoch 20, then (e - 19) / 20: 0.05 at 20, 0.5 at 29, 1 from 39 on.
    assert [neighbour_weight(e, 20, 40) for e in (0, 19, 20, 29, 39, 40, 199)] == [0.0, 0.0, 0.05, 0.5, 1.0, 1.0,
                                                                                      1.0]
    assert [neighbour_weight(e, 1, 2) for e in (0, 1, 5)] == [0.0, 1.0, 1.0]     # the quickstart's schedule


# --- strong augmentation --------------------------------------------------------------------------------------------

def _op(name: str, n: int = 1) -> torch.Tensor:
    return torch.full((n,), RANDAUG_OPS.index(name))


def test_randaug_ops_by_hand():
    one, plus, minus = torch.ones(1), torch.ones(1), -torch.ones(1)
    x = torch.tensor([0.2, 0.4, 0.6, 200 / 255]).view(1, 1, 2, 2).expand(1, 3, 2, 2).clone()
    # Solarize at s = 1: threshold 0, every pixel inverted; at s = 0.5 only the pixels >= 0.5.
    assert torch.allclose(apply_randaug_ops(x, _op("solarize"), one, plus), 1 - x)
    half = apply_randaug_ops(x, _op("solarize"), 0.5 * one, plus)[0, 0].flatten()
    assert half.tolist() == pytest.approx([0.2, 0.4, 0.4, 55 / 255])
    # Posterize at s = 1 keeps 4 bits: level 200 -> floor(200 / 16) * 16 = 192; 0.2 -> level 51 -> 48.
    poster = apply_randaug_ops(x, _op("posterize"), one, plus)[0, 0].flatten()
    assert poster.tolist() == pytest.approx([48 / 255, 96 / 255, 144 / 255, 192 / 255])
    # Brightness at s = 0.5 with sign -1: factor 1 - 0.9 * 0.5 = 0.55.
    assert torch.allclose(apply_randaug_ops(x, _op("brightness"), 0.5 * one, minus), 0.55 * x)
    # Autocontrast stretches [0.2, 200/255] to [0, 1]; identity keeps the image.
    stretched = apply_randaug_ops(x, _op("autocontrast"), one, plus)[0, 0].flatten()
    low, high = 0.2, 200 / 255
    assert stretched.tolist() == pytest.approx([0.0, 0.2 / (high - low), 0.4 / (high - low), 1.0], abs=1e-6)
    assert torch.equal(apply_randaug_ops(x, _op("identity"), one, plus), x)
    # Equalize: levels 0, 0, 128, 255 -> cdf 2, 2, 3, 4, lowest count 2: (cdf - 2) / (4 - 2) = 0, 0, 0.5, 1.
    y = torch.tensor([0.0, 0.0, 128 / 255, 1.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2).clone()
    assert apply_randaug_ops(y, _op("equalize"), one, plus)[0, 0].flatten().tolist() == [0.0, 0.0, 0.5, 1.0]
    # Translate x at s = 1, sign +1 on a 10-px ramp: a shift of 0.3 * 10 = 3 px; column j shows column j + 3, the
    # uncovered columns 7..9 are grey.
    ramp = torch.arange(10.0).div(10).view(1, 1, 1, 10).expand(1, 3, 10, 10).clone()
    moved = apply_randaug_ops(ramp, _op("translate_x"), one, plus)[0, 0, 4]
    assert moved.tolist() == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.5, 0.5, 0.5], abs=1e-5)


def test_strong_augmentation_is_seeded_batched_and_keeps_shape_and_range():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16)
    torch.manual_seed(1)
    a = rand_augment(images)
    torch.manual_seed(1)
    b = rand_augment(images)
    torch.manual_seed(2)
    c = rand_augment(images)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == images.shape and a.dtype == images.dtype
    assert a.min() >= 0 and a.max() <= 1
    # Per-image draws: 24 copies of one image come out in many different versions.
    same = images[:1].expand(24, -1, -1, -1)
    torch.manual_seed(3)
    out = rand_augment(same)
    assert len({tuple(o.flatten()[:64].tolist()) for o in out}) > 8
    # Batched = per image: one round on the batch equals the round on each image with its own draws.
    op = torch.arange(len(RANDAUG_OPS))
    batch = torch.rand(len(op), 3, 12, 12)
    strength, sign = torch.rand(len(op)), torch.where(torch.rand(len(op)) < 0.5, -1.0, 1.0)
    together = apply_randaug_ops(batch, op, strength, sign)
    # The accelerator's way (every op on the whole batch, selected per image) gives the same images.
    assert torch.allclose(apply_randaug_ops(batch, op, strength, sign, per_op_subsets=False), together, atol=1e-6)
    for i in range(len(op)):
        alone = apply_randaug_ops(batch[i:i + 1], op[i:i + 1], strength[i:i + 1], sign[i:i + 1])
        assert torch.allclose(together[i:i + 1], alone, atol=1e-6), RANDAUG_OPS[i]


# --- a quickstart run that stops and resumes ------------------------------------------------------------------------

@pytest.mark.slow
def test_quickstart_run_stops_and_resumes_bitwise(tmp_path, cache_dir, one_thread):
    suite = tiny_suite("test_dn2a_resume", methods=["dn2a"])
    # Two epochs, the neighbour terms from the second (warm-up 1); the run is stopped after the first.
    spec = plan(suite, assignments=["dn2a.epochs=2", "dn2a.warmup_epochs=1", "dn2a.ramp_end_epoch=2"])[0]

    uninterrupted, spec_path, state = run_stopped_after_one_epoch(spec, tmp_path, cache_dir)
    # The key encoder (an EMA, behind the query encoder) and both support queues are in the checkpoint; the queues
    # hold min(256, N_d - 32) slots.
    assert_key_encoder_trails(state)
    for domain in (0, 1):
        assert (state[f"queues.{domain}.index"] >= 0).any()
        assert len(state[f"queues.{domain}.keys"]) <= 256
    resumed = run_one(spec_path)
    assert resumed == uninterrupted
    history = json.loads((spec_path.parent / "metrics.json").read_text())["history"]
    assert [h["nn_weight"] for h in history] == [0.0, 1.0]
    assert all(0.0 <= h["accept_rate"] <= 1.0 for h in history) and history[1]["accept_rate"] > 0
    assert history[1]["loss"] > history[1]["self"]                    # the neighbour terms count in epoch 2
