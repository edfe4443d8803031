"""UCDIR's pieces on tiny tensors, with the expected values computed by hand in the comments, and a quickstart run
that stops and resumes bitwise equal."""
from __future__ import annotations

import json
import math

import pytest
import torch

from benchmark.runner import run_one
from benchmark.suites import plan
from methods.augment import moco_v2_view
from methods.backbones import build_backbone
from methods.base import Batch, build_hparams, resolve_hparams
from methods.ucdir import (UCDIR, cluster_contrast, cluster_weight, confidence_filter, distance_of_distance,
                           instance_contrast, prototype_self_entropy)

from .conftest import prepared_run, tiny_suite

SIGMA = math.e / (math.e + 1)            # softmax(1, 0)[0] = 0.7310586


def test_instance_contrast_masks_the_own_slot():
    # q = (1, 0), its key k = (0.6, 0.8); bank rows: own slot 0 = (1, 0) (excluded), (0, 1), (-1, 0); T = 1.
    # logits [q.k = 0.6 | 0, -1]: loss = -0.6 + ln(e^0.6 + 1 + e^-1) = -0.6 + ln(3.19001) = 0.56002.
    # (Counting the own slot would add e^1 to the sum: 1.17636.)
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    loss = instance_contrast(q, k, bank, torch.tensor([0]), temperature=1.0)
    assert loss.item() == pytest.approx(0.56002, abs=1e-4)
    # T = 0.5 doubles every logit: -1.2 + ln(e^1.2 + 1 + e^-2) = -1.2 + ln(4.45545) = 0.29413
    assert instance_contrast(q, k, bank, torch.tensor([0]), 0.5).item() == pytest.approx(0.29413, abs=1e-4)


def test_confidence_filter_keeps_one_and_drops_one():
    # Prototypes e0, e1, e2; both keys (1, 0, 0); the first sample is in cluster 0, the second in cluster 1.
    # T = 0.5: logits (2, 0, 0), softmax = (e^2, 1, 1) / (e^2 + 2) = (0.78699, 0.10650, 0.10650):
    # sample 0: 0.787 > 0.2 kept; sample 1: 0.1065 < 0.2 dropped.
    prototypes = torch.eye(3)
    keys = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1])
    assert confidence_filter(keys, prototypes, labels, 0.5, 0.2).tolist() == [True, False]
    # T = 1: logits (1, 0, 0), softmax = (e, 1, 1) / (e + 2) = (0.57612, 0.21194, 0.21194): both pass 0.2.
    assert confidence_filter(keys, prototypes, labels, 1.0, 0.2).tolist() == [True, True]


def test_cluster_contrast_on_a_tiny_bank():
    # Bank (1, 0), (0, 1), (-1, 0) with clusters 0, 0, 1; unit prototypes mu_0 = (1, 0), mu_1 = (-1, 0); T = 1.
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assignment = torch.tensor([0, 0, 1])
    prototypes = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    index = torch.tensor([0, 2])
    # Sample 0 (slot 0, cluster 0, P = {0, 1}): logits (1, 0, -1), ln(e + 1 + e^-1) = ln 4.08616 = 1.40761;
    #   l_0 = -((1 - 1.40761) + (0 - 1.40761)) / 2 = 0.90761. Filter: softmax(k.mu) = softmax(1, -1)[0]
    #   = 1 / (1 + e^-2) = 0.88080 > 0.2: kept.
    # Sample 1 (slot 2, cluster 1, P = {2}): logits (0, 1, 0), ln(2 + e) = 1.55144; l_1 = 1.55144.
    #   Filter: softmax(1, -1)[1] = 1 / (1 + e^2) = 0.11920 < 0.2: dropped.
    # L_cw = (1 * 0.90761 + 0 * 1.55144) / 1 = 0.90761.
    loss, keep = cluster_contrast(q, k, bank, index, assignment, prototypes, 1.0, 0.2)
    assert keep.tolist() == [True, False]
    assert loss.item() == pytest.approx(0.90761, abs=1e-4)
    # Without the filter (threshold 0) both count: (0.90761 + 1.55144) / 2 = 1.22953.
    assert cluster_contrast(q, k, bank, index, assignment, prototypes, 1.0, 0.0)[0].item() == pytest.approx(
        1.22953, abs=1e-4)
    # Nothing kept: the term is 0, not 0 / 0.
    assert cluster_contrast(q, k, bank, index, assignment, prototypes, 1.0, 0.99)[0].item() == 0.0


def test_prototype_self_entropy_mean_of_four():
    # q_A = (1, 0), q_B = (0, 1); P_A = {(1, 0), (0, 1)}, P_B = {(1, 0)}; tau_e = 1.
    # Against P_A: softmax(1, 0) or (0, 1): p = (0.73106, 0.26894) in some order,
    #   H = 0.73106 * 0.31326 + 0.26894 * 1.31326 = 0.22901 + 0.35319 = 0.58220, for q_A and for q_B.
    # Against P_B (one prototype): p = (1), H = 0.  Mean of the four: (0.58220 * 2 + 0 * 2) / 4 = 0.29110.
    q_a, q_b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    p_a, p_b = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    assert prototype_self_entropy((q_a, q_b), (p_a, p_b), 1.0).item() == pytest.approx(0.29110, abs=1e-4)
    # A small tau_e sharpens: tau_e = 0.01 gives logits (100, 0), H ~ 100 e^-100 ~ 0.
    assert prototype_self_entropy((q_a, q_b), (p_a, p_b), 0.01).item() == pytest.approx(0.0, abs=1e-6)


def test_distance_of_distance_zero_and_nonzero():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Zero: P_B holds the same prototypes in another order (no correspondence with P_A); each a^B_i is a^A_i
    # permuted, so every cosine and D^B = D^A.
    assert distance_of_distance(features, p_a, p_a.flip(0), temperature=1.0).item() == pytest.approx(0.0, abs=1e-7)
    # Non-zero: P_B = {(1, 0)}: a^B_i = (1) for both samples, D^B = 0. Through P_A (T = 1):
    # a_1 = (s, 1 - s), a_2 = (1 - s, s), s = 0.7310586; cos(a_1, a_2) = 2 s (1 - s) / (s^2 + (1 - s)^2)
    # = 0.3932239 / 0.6067761 = 0.6480543, so D^A = [[0, 0.3519457], [0.3519457, 0]].
    # Each row: ||D^A_i - D^B_i||^2 = 0.3519457^2 = 0.1238658; mean over i = 0.1238658.
    s = SIGMA
    by_hand = (1 - 2 * s * (1 - s) / (s * s + (1 - s) ** 2)) ** 2
    assert by_hand == pytest.approx(0.1238658, abs=1e-6)
    assert distance_of_distance(features, p_a, p_a[:1], temperature=1.0).item() == pytest.approx(0.1238658, abs=1e-5)


@pytest.mark.parametrize("epoch, expected", [
    (0, 0.0), (20, 0.0),                  # nothing until the warm-up ends (the code's weight at epoch 20 is 0)
    (21, 0.5 * 1 / 80),                   # 0.00625: linear from 20 ...
    (60, 0.25),                           # ... half-way ...
    (100, 0.5), (199, 0.5),               # ... to 0.5 at 100, constant after
])
def test_cluster_weight_ramp(epoch, expected):
    assert cluster_weight(epoch, 20, 100, 0.5) == pytest.approx(expected, abs=1e-12)


def test_hyper_parameters_per_dataset():
    office_home = resolve_hparams(UCDIR, "office_home", {})
    assert (office_home["cw_weight"], office_home["entropy_temperature"], office_home["entropy_weight"],
            office_home["dod_weight"]) == (0.5, 0.01, 1.0, 0.5)
    assert (office_home["epochs"], office_home["warmup_epochs"], office_home["align_start_epoch"]) == (200, 20, 100)
    domainnet = resolve_hparams(UCDIR, "domainnet", {})
    assert (domainnet["cw_weight"], domainnet["entropy_temperature"], domainnet["entropy_weight"],
            domainnet["dod_weight"]) == (1.0, 0.1, 0.5, 0.1)
    assert cluster_weight(60, 20, 100, domainnet["cw_weight"]) == 0.5
    # The quickstart keeps the stage proportions: warm-up 10 %, ramp end and alignment start at 50 %.
    quick = resolve_hparams(UCDIR, "synthetic", {})
    assert quick["warmup_epochs"] / quick["epochs"] == pytest.approx(20 / 200)
    assert quick["cw_ramp_end_epoch"] / quick["epochs"] == quick["align_start_epoch"] / quick["epochs"] == 0.5
    with pytest.raises(ValueError, match="align_start_epoch"):
        UCDIR(build_hparams(UCDIR, resolve_hparams(UCDIR, "office_home", {"align_start_epoch": 10})),
              build_backbone("small_cnn", embed_dim=8, width=8))


class _Domain:
    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


class _Context:
    """A FitContext over random images: enough for on_fit_start / on_epoch_start."""

    def __init__(self, method, sizes=(6, 5)):
        self.method = method
        self.domains = tuple(_Domain(n) for n in sizes)
        self.device = torch.device("cpu")
        self.num_classes_hint = (2, 2)
        self.seed = 0
        generator = torch.Generator().manual_seed(1)
        self.images = [torch.rand(n, 3, 16, 16, generator=generator) for n in sizes]

    @torch.no_grad()
    def embed_domain(self, domain_id, embed=None):
        self.method.eval()
        features = (embed or self.method.embed)(self.images[domain_id])
        self.method.train()
        return features


def _tiny_method(**overrides):
    torch.manual_seed(0)
    values = resolve_hparams(UCDIR, "synthetic", {"warmup_epochs": 0, "cw_ramp_end_epoch": 1, "align_start_epoch": 0,
                                                  **overrides})
    method = UCDIR(build_hparams(UCDIR, values), build_backbone("small_cnn", embed_dim=8, width=8))
    ctx = _Context(method)
    method.on_fit_start(ctx)
    return method, ctx


def test_banks_take_the_keys_before_the_losses_and_embed_is_the_key_encoder():
    method, ctx = _tiny_method()
    h = method.hparams
    # Make the encoders differ, as after training, so that "the key encoder" is a checkable claim.
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    method.start_epoch(1, ctx)                            # clusters, cluster weight 0.5, alignment on
    bank_before = [b.features.clone() for b in method.banks]
    index_a = torch.tensor([0, 3, 3])                     # slot 3 twice: the later key wins
    index_b = torch.tensor([1, 4, 2])
    batch_a = Batch(ctx.images[0][index_a], index_a, 0)
    batch_b = Batch(ctx.images[1][index_b], index_b, 1)
    torch.manual_seed(7)
    out = method.training_step(batch_a, batch_b, 0)
    # Recompute this step's views (same draws) and features: view 1 -> query encoder, view 2 -> key encoder.
    torch.manual_seed(7)
    images = torch.cat([batch_a.images, batch_b.images])
    view_q = moco_v2_view(images, min_crop_scale=h.min_crop_scale)
    view_k = moco_v2_view(images, min_crop_scale=h.min_crop_scale)
    with torch.no_grad():
        q = method.backbone(view_q).split(3)
        k = method.key_encoder(view_k).split(3)
    assert torch.allclose(method.banks[0].features[0], k[0][0], atol=1e-6)
    assert torch.allclose(method.banks[0].features[3], k[0][2], atol=1e-6)          # the later occurrence
    assert torch.allclose(method.banks[1].features[index_b], k[1], atol=1e-6)
    untouched = torch.tensor([1, 2, 4, 5])
    assert torch.equal(method.banks[0].features[untouched], bank_before[0][untouched])
    # The logged instance term is computed against the overwritten banks, not the old ones.
    after = [instance_contrast(q[d], k[d], method.banks[d].features, idx, h.temperature)
             for d, idx in enumerate((index_a, index_b))]
    before = [instance_contrast(q[d], k[d], bank_before[d], idx, h.temperature)
              for d, idx in enumerate((index_a, index_b))]
    assert out["instance"].item() == pytest.approx(((after[0] + after[1]) / 2).item(), abs=1e-5)
    assert out["instance"].item() != pytest.approx(((before[0] + before[1]) / 2).item(), abs=1e-5)
    assert out["cluster_weight"].item() == 0.5 and out["dod"].item() >= 0 and out["entropy"].item() >= 0
    # Retrieval features are the key encoder's, not the query encoder's.
    method.eval()
    assert torch.equal(method.embed(ctx.images[0]), method.key_encoder(ctx.images[0]))
    assert not torch.allclose(method.embed(ctx.images[0]), method.backbone(ctx.images[0]), atol=1e-4)


def test_split_batchnorm_keys_for_batchnorm_nets_only():
    torch.manual_seed(0)
    values = resolve_hparams(UCDIR, "synthetic", {})
    views = torch.rand(8, 3, 16, 16)
    grouped = UCDIR(build_hparams(UCDIR, values), build_backbone("small_cnn", embed_dim=8, width=8))
    state = torch.random.get_rng_state()
    assert torch.equal(grouped._keys(views), grouped.key_encoder(views))       # GroupNorm: one piece ...
    assert torch.equal(torch.random.get_rng_state(), state)                    # ... and no permutation drawn
    batch = UCDIR(build_hparams(UCDIR, values), build_backbone("small_cnn", embed_dim=8, width=8, norm="batch"))
    batch.train()
    torch.manual_seed(3)
    keys = batch._keys(views)
    torch.manual_seed(3)
    order = torch.randperm(8)
    # Each key is normalised with the statistics of its own half of the shuffled batch, then put back in place.
    for half in order.chunk(2):
        assert torch.allclose(keys[half], batch.key_encoder(views[half]), atol=1e-5)
    assert not torch.allclose(keys, batch.key_encoder(views), atol=1e-3)


@pytest.mark.slow
def test_stop_after_an_epoch_and_resume_bitwise(tmp_path, cache_dir, one_thread):
    suite = tiny_suite("test_ucdir_resume", methods=["ucdir"])
    # Epoch 0: warm-up (instance contrast only); epoch 1: clusters, cluster weight 0; epoch 2: weight 0.5 and the
    # alignment terms.
    spec = plan(suite, assignments=["ucdir.epochs=3", "ucdir.warmup_epochs=1", "ucdir.cw_ramp_end_epoch=2",
                                    "ucdir.align_start_epoch=2"])[0]


    uninterrupted = run_one(prepared_run(spec, tmp_path / "a", cache_dir))
    spec_path = prepared_run(spec, tmp_path / "b", cache_dir)
    assert run_one(spec_path, stop_after_epochs=1) == {}
    checkpoint = torch.load(spec_path.parent / "ckpt" / "last.pt", weights_only=False)
    state = checkpoint["method"]
    assert checkpoint["epoch"] == 1
    # The banks and the key encoder are part of the checkpoint; the key encoder lags the query encoder (EMA).
    assert {"banks.0.features", "banks.1.features"} <= set(state)
    assert torch.allclose(state["banks.0.features"].norm(dim=1), torch.ones(1), atol=1e-5)
    keys = {k: v for k, v in state.items() if k.startswith("key_encoder.encoder.")}
    assert keys and any(not torch.equal(v, state[k.replace("key_encoder.encoder.", "backbone.", 1)])
                        for k, v in keys.items())
    resumed = run_one(spec_path)
    assert resumed == uninterrupted
    history = json.loads((spec_path.parent / "metrics.json").read_text())["history"]
    assert [h["cluster_weight"] for h in history] == [0.0, 0.0, 0.5]
    assert history[0]["kept"] == 0.0 and history[1]["kept"] > 0              # no clusters during the warm-up
    assert history[1]["dod"] == 0.0 and history[2]["dod"] > 0 and history[2]["entropy"] > 0
    assert all(math.isfinite(h["loss"]) for h in history)
