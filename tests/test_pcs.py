"""PCS's pieces on tiny tensors, with the expected values computed by hand in the comments."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import methods.pcs as pcs
from benchmark.runner import run_one
from benchmark.suites import plan
from methods.base import Batch, resolve_hparams
from methods.memory_bank import MemoryBank
from methods.pcs import (PCS, Clustering, PCSHparams, cluster_concentration, cluster_counts,
                         cross_domain_prototype_entropy, lr_decay_factor, prototype_nce)

from .conftest import FeatureStub, prepared_run, tiny_suite


def _entropy_of_two(gap: float) -> float:
    """H(softmax(a, a - gap)) = log(1 + e^-gap) + gap e^-gap / (1 + e^-gap)."""
    return math.log(1 + math.exp(-gap)) + gap * math.exp(-gap) / (1 + math.exp(-gap))


def test_concentration_phi_with_its_clamps_and_empty_clusters():
    # Cluster 0, centroid (1, 0): members (1, 0.3), (1, -0.3), (1, 0.6) at distances 0.3, 0.3, 0.6:
    #   phi = 1.2 / (3 log(3 + 10)) = 0.4 / 2.564949 = 0.155948.
    # Cluster 1, centroid (0, 1): one member (0, 2) at distance 1 -> 1 / log 11 = 0.417 unclamped, 0.05 (singleton).
    # Cluster 2, centroid (-1, 0): members (-1, 0.01), (-1, -0.03): 0.04 / (2 log 12) = 0.00805 < 0.05 -> 0.05.
    # Cluster 3, centroid (0, -1): no member -> -1, the code's value (the method leaves it out of the ProtoNCE).
    bank = torch.tensor([[1.0, 0.3], [0.0, 2.0], [1.0, -0.3], [-1.0, 0.01], [1.0, 0.6], [-1.0, -0.03]])
    assignment = torch.tensor([0, 1, 0, 2, 0, 2])
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    phi, counts = cluster_concentration(bank, centroids, assignment)
    assert counts.tolist() == [3, 1, 2, 0]
    assert phi.tolist() == pytest.approx([0.155948, 0.05, 0.05, -1.0], abs=1e-6)
    assert 0.4 / math.log(13) == pytest.approx(0.155948, abs=1e-6)
    # alpha and the floor are the code's constants; another floor moves both clamps.
    phi, _ = cluster_concentration(bank, centroids, assignment, alpha=10.0, floor=0.2, empty_value=-1.0)
    assert phi.tolist() == pytest.approx([0.2, 0.2, 0.2, -1.0], abs=1e-6)


def test_proto_nce_with_a_temperature_per_cluster():
    # Centroids (1, 0), (0, 1), (-1, 0) with phi 0.5, 1, 0.25.
    # f1 = (1, 0), positive 0: logits (2, 0, -4) -> log(1 + e^-2 + e^-6) = log(1.137814) = 0.129109.
    # f2 = (0, 1), positive 1: logits (0, 1, 0)  -> log(1 + 2 e^-1) = log(1.735759) = 0.551445.   Mean 0.340277.
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    phi = torch.tensor([0.5, 1.0, 0.25])
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([0, 1])
    expected = (math.log(1 + math.exp(-2) + math.exp(-6)) + math.log(1 + 2 * math.exp(-1))) / 2
    assert expected == pytest.approx((0.129109 + 0.551445) / 2, abs=1e-6)
    assert prototype_nce(features, centroids, phi, positive).item() == pytest.approx(expected, abs=1e-6)
    # One temperature for all (0.5) would give (log(1 + e^-2 + e^-4) + log(1 + 2 e^-2)) / 2: phi matters.
    single = prototype_nce(features, centroids, torch.full((3,), 0.5), positive).item()
    assert single == pytest.approx((math.log(1 + math.exp(-2) + math.exp(-4)) + math.log(1 + 2 * math.exp(-2))) / 2,
                                   abs=1e-6)
    # Cluster 2 empty, default: no part in the denominator -> (log(1 + e^-2) + log(1 + e^-1)) / 2 = 0.220095.
    include = torch.tensor([True, True, False])
    excluded = prototype_nce(features, centroids, phi, positive, include).item()
    assert excluded == pytest.approx((math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2, abs=1e-6)
    # The code's phi = -1 for it: a negative temperature, logit -(f . mu): f1 -> (2, 0, 1), f2 -> (0, 1, 0):
    # (log(1 + e^-2 + e^-1) + log(1 + 2 e^-1)) / 2.
    code = prototype_nce(features, centroids, torch.tensor([0.5, 1.0, -1.0]), positive).item()
    assert code == pytest.approx((math.log(1 + math.exp(-2) + math.exp(-1)) + math.log(1 + 2 * math.exp(-1))) / 2,
                                 abs=1e-6)


def test_cross_domain_prototype_entropy():
    # f = (1, 0) against the other domain's centroids (1, 0), (0, 1), tau 0.5: logits (2, 0),
    # p = (0.880797, 0.119203), H = log(1 + e^-2) + 2 e^-2 / (1 + e^-2) = 0.126928 + 0.238406 = 0.365334.
    # f = (0, 1) against (1, 0), (0, 1), (-1, 0): logits (0, 2, 0), H = log(2 + e^2) - 2 e^2 / (2 + e^2)
    # = 2.239545 - 1.573972 = 0.665573.
    f = torch.tensor([[1.0, 0.0]])
    assert cross_domain_prototype_entropy(f, torch.eye(2), 0.5).item() == pytest.approx(0.365334, abs=1e-6)
    assert _entropy_of_two(2.0) == pytest.approx(0.365334, abs=1e-6)
    other = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    h = cross_domain_prototype_entropy(torch.tensor([[0.0, 1.0]]), other, 0.5).item()
    assert h == pytest.approx(math.log(2 + math.e ** 2) - 2 * math.e ** 2 / (2 + math.e ** 2), abs=1e-6)
    assert h == pytest.approx(0.665573, abs=1e-6)
    # tau 0.1 sharpens the same logits (10, 0): H = log(1 + e^-10) + 10 e^-10 / (1 + e^-10) = 0.000499.
    assert cross_domain_prototype_entropy(f, torch.eye(2), 0.1).item() == pytest.approx(0.000499, abs=1e-6)


@pytest.mark.parametrize("step, factor", [
    (0, 1.0),                                  # (1 + 0)^-0.75
    (1, 1.0002 ** -0.75),                      # it = 2 (two code steps per harness step): 0.999850
    (5000, 2 ** -0.75),                        # it = 10000: 2^-0.75 = 0.594604
    (15000, 4 ** -0.75),                       # it = 30000: 4^-0.75 = 2^-1.5 = 0.353553
])
def test_per_step_lr_decay_on_every_group(step, factor):
    from methods.backbones import build_backbone
    method = PCS(PCSHparams(), build_backbone("small_cnn", width=8))
    optimization = method.configure_optimizers()
    (optimizer,), (decay,) = optimization.optimizers, optimization.step_schedulers
    assert not optimization.epoch_schedulers
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9
    for _ in range(step):                                          # the runner steps it after every optimiser step
        optimizer.step()                                           # (no gradients: moves nothing)
        decay.step()
    head = {id(p) for p in method.backbone.head.parameters()}
    norm = {id(p) for m in method.backbone.modules() if isinstance(m, nn.GroupNorm) for p in m.parameters()}
    seen = set()
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        seen |= ids
        in_head = ids <= head
        assert in_head or not ids & head                           # a group is all head or all trunk
        # lr 0.01 on the head, 0.1 x 0.01 on the trunk, times (1 + 1e-4 it)^-0.75
        assert group["lr"] == pytest.approx((0.01 if in_head else 0.001) * factor, rel=1e-12)
        assert group["weight_decay"] == (0.0 if ids <= norm else 5e-4)  # no decay on normalisation parameters
        assert ids <= norm or not ids & norm
    assert seen == {id(p) for p in method.backbone.parameters()}
    assert lr_decay_factor(10000) == pytest.approx(0.594604, abs=1e-6)



def _clustering(centroids, phi, assignment, include=None):
    return Clustering(torch.tensor(centroids), torch.tensor(assignment), torch.tensor(phi),
                      None if include is None else torch.tensor(include))


def test_total_loss_own_domain_prototypes_other_domain_entropy(monkeypatch):
    monkeypatch.setattr(pcs, "crop_flip_view", lambda images: images)       # no augmentation in this test
    method = PCS(PCSHparams(proto_weight_retrieval=0.5, temperature=0.5), FeatureStub())
    method.banks = nn.ModuleList([MemoryBank(1, 2), MemoryBank(1, 2)])
    method.banks[0].fill(torch.tensor([[1.0, 0.0]]))
    method.banks[1].fill(torch.tensor([[1.0, 0.0]]))                         # m_B lags behind f_B
    # R = 2 clusterings per domain; both bank entries are in cluster 0 of each.
    method.clusterings = [
        [_clustering([[1.0, 0.0], [0.0, 1.0]], [0.5, 1.0], [0]),                                   # A, r = 0
         _clustering([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], [1.0, 0.5, -1.0], [0], [True, True, False])],  # A, r = 1
        [_clustering([[0.0, 1.0], [0.6, 0.8]], [1.0, 1.0], [0]),                                   # B, r = 0
         _clustering([[0.0, 1.0]], [0.05], [0])],                                                  # B, r = 1
    ]
    batch_a = Batch(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), 0)        # f_A = (1, 0)
    batch_b = Batch(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), 1)        # f_B = (0, 1)
    losses = method.training_step(batch_a, batch_b, 0)
    # PC^A: r0 logits (1/0.5, 0/1) = (2, 0) -> log(1 + e^-2) = 0.126928; r1 logits (1, 0) with the empty cluster
    #   left out -> log(1 + e^-1) = 0.313262; mean 0.220095.
    # PC^B: r0 logits (1, 0.8) -> log(1 + e^-0.2) = 0.598139; r1 one cluster -> 0; mean 0.299070; x 0.5 = 0.149535.
    # CS^A (B's centroids, tau 0.5): r0 logits (0, 1.2) -> H = 0.541053; r1 one centroid -> 0; mean 0.270526.
    # CS^B (A's centroids): r0 logits (0, 2) -> 0.365334; r1 logits (0, 2, 0), every centroid (the empty one too)
    #   -> 0.665573; mean 0.515453.   I2C = 0.270526 + 0.515453 = 0.785979.
    pc_a = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    pc_b = 0.5 * math.log(1 + math.exp(-0.2)) / 2
    cs = _entropy_of_two(1.2) / 2 + (_entropy_of_two(2.0) + math.log(2 + math.e ** 2)
                                     - 2 * math.e ** 2 / (2 + math.e ** 2)) / 2
    assert (pc_a, pc_b, cs) == pytest.approx((0.220095, 0.149535, 0.785979), abs=1e-6)
    assert losses["proto_query"].item() == pytest.approx(pc_a, abs=1e-6)
    assert losses["proto_retrieval"].item() == pytest.approx(pc_b, abs=1e-6)
    assert losses["i2c_cross"].item() == pytest.approx(cs, abs=1e-6)
    assert losses["loss"].item() == pytest.approx(pc_a + pc_b + cs, abs=1e-6)
    # After the step the banks take this step's features: m_B <- normalize(0.5 (1, 0) + 0.5 (0, 1)) = (0.70711,
    # 0.70711); m_A = normalize(0.5 (1, 0) + 0.5 (1, 0)) stays (1, 0).
    method.after_optimizer_step(0)
    assert method.banks[1].features[0].tolist() == pytest.approx([0.70711, 0.70711], abs=1e-5)
    assert method.banks[0].features[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_clusterings_per_epoch_k_and_2k_spherical():
    # The code's list [K, 2K] x n_k, clipped to the bank size.
    assert cluster_counts(3, 2, 100) == [3, 6, 3, 6]
    assert cluster_counts(3, 1, 5) == [3, 5]
    # Three tight groups of unit vectors around e0, e1, e2 (4 each): K = 3 recovers them, with unit centroids and
    # phi at the floor (spreads ~0.01-0.03 give sum / (4 log 14) < 0.05).
    torch.manual_seed(0)
    eye = torch.eye(3)
    bank = F.normalize(eye.repeat_interleave(4, dim=0) + 0.02 * torch.randn(12, 3), dim=1)
    method = PCS(PCSHparams(n_kmeans=2), FeatureStub())
    clusterings = method.cluster_bank(bank, 3, seed=7)
    assert [len(c.centroids) for c in clusterings] == [3, 6, 3, 6]
    for c in clusterings:
        assert torch.allclose(c.centroids.norm(dim=1), torch.ones(len(c.centroids)), atol=1e-5)
        assert c.include is not None and c.include.tolist() == (torch.bincount(c.assignment, minlength=len(
            c.centroids)) > 0).tolist()
    groups = clusterings[0].assignment.view(3, 4)
    assert all(len(set(g.tolist())) == 1 for g in groups) and len(set(groups[:, 0].tolist())) == 3
    assert clusterings[0].phi.tolist() == pytest.approx([0.05, 0.05, 0.05])
    code = PCS(PCSHparams(n_kmeans=1, empty_cluster="code"), FeatureStub()).cluster_bank(bank, 3, seed=7)
    assert code[0].include is None
    # Every epoch, each domain's bank with its own class count: K_A = 2 (the partial query domain), K_B = 3.
    method.banks = nn.ModuleList([MemoryBank(12, 3), MemoryBank(12, 3)])
    for b in method.banks:
        b.fill(bank)
    ctx = type("Ctx", (), {"num_classes_hint": (2, 3), "seed": 2024})()
    method.on_epoch_start(0, ctx)
    assert [[len(c.centroids) for c in domain] for domain in method.clusterings] == [[2, 4, 2, 4], [3, 6, 3, 6]]


def test_hyper_parameters_and_heads():
    office_home = resolve_hparams(PCS, "office_home")
    assert (office_home["proto_weight_query"], office_home["proto_weight_retrieval"], office_home["i2c_weight"]) \
        == (1.0, 0.5, 1.0)
    office31 = resolve_hparams(PCS, "office31")
    assert (office31["proto_weight_query"], office31["proto_weight_retrieval"], office31["i2c_weight"]) \
        == (1.0, 1.0, 1.0)
    assert office31["steps_per_epoch_override"] == 100 and office_home["steps_per_epoch_override"] == 0
    assert (office31["n_kmeans"], office31["kmeans_niter"], office31["bank_momentum"], office31["temperature"],
            office31["batch_size"], office31["empty_cluster"]) == (15, 40, 0.5, 0.1, 64, "exclude")
    from methods.backbones import build_backbone
    method = PCS(PCSHparams(**{**office31, "head": "linear"}), build_backbone("small_cnn", width=8))
    assert isinstance(method.backbone.head, nn.Linear) and method.backbone.head.out_features == 512
    assert torch.all(method.backbone.head.bias == 0)
    assert method.steps_per_epoch(2817, 795) == 100                           # Office-31's released 100 steps
    assert PCS(PCSHparams(), build_backbone("small_cnn", width=8)).steps_per_epoch(4365, 2427) == 4365 // 64
    with pytest.raises(ValueError, match="empty_cluster"):
        PCS(PCSHparams(empty_cluster="negative"), FeatureStub())


def test_stop_after_an_epoch_and_resume_bitwise(tmp_path, cache_dir, one_thread):
    suite = tiny_suite("test_pcs_resume", methods=["pcs"], settings=("open",))
    spec = plan(suite, assignments=["pcs.epochs=2", "pcs.n_kmeans=1", "pcs.batch_size=32",
                                       "pcs.steps_per_epoch_override=4"])[0]


    uninterrupted = run_one(prepared_run(spec, tmp_path / "a", cache_dir))
    spec_path = prepared_run(spec, tmp_path / "b", cache_dir)
    run_one(spec_path, stop_after_epochs=1)
    checkpoint = torch.load(spec_path.parent / "ckpt" / "last.pt", weights_only=False)
    assert checkpoint["epoch"] == 1 and "banks.0.features" in checkpoint["method"]
    # The lr saved is the next step's, one decay factor (1 + 1e-4 it)^-0.75 < 1 for every group, and the per-step
    # scheduler is checkpointed at step 4: the schedule continues from there on resume.
    groups = checkpoint["optimizers"][0]["param_groups"]
    assert {g["initial_lr"] for g in groups} == {0.01, 0.001}
    factors = {round(g["lr"] / g["initial_lr"], 12) for g in groups}
    assert len(factors) == 1 and 0.99 < factors.pop() < 1.0
    assert [s["last_epoch"] for s in checkpoint["schedulers"]] == [4]
    resumed = run_one(spec_path)
    assert resumed == uninterrupted
    assert 0 <= resumed["open_set_acc"] <= 1
