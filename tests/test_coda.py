"""CoDA's pieces on tiny tensors, with the expected values computed by hand in the comments."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import methods.coda as coda
from benchmark.runner import run_one
from benchmark.suites import plan
from methods.base import Batch, resolve_hparams
from methods.clustering import faiss_kmeans
from methods.coda import CoDA, CoDAHparams, classifier_alignment, self_matching_loss, shared_cluster_heads
from methods.memory_bank import MemoryBank

from .conftest import FeatureStub, prepared_run, tiny_suite


def test_kmeans_starts_from_given_centroids():
    # Corners of a 4 x 1 rectangle. From random starts k-means finds the split by x (inertia 4 x 0.25 = 1); started
    # at (2, 0) and (2, 1) every point is nearest to the centroid of its own row, so it stays at the split by y:
    # centroids (2, 0), (2, 1), inertia 4 x 4 = 16, assignment by row.
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [4.0, 0.0], [4.0, 1.0]])
    centroids, assignment = faiss_kmeans(x, 2, seed=0, niter=10,
                                         init_centroids=torch.tensor([[2.0, 0.0], [2.0, 1.0]]))
    assert centroids.tolist() == [[2.0, 0.0], [2.0, 1.0]]
    assert assignment.tolist() == [0, 1, 0, 1]
    free, _ = faiss_kmeans(x, 2, seed=0, niter=10)                          # unchanged behaviour without a start
    assert sorted(free.tolist()) == [[0.0, 0.5], [4.0, 0.5]]
    with pytest.raises(ValueError, match="initial centroids of shape"):
        faiss_kmeans(x, 2, seed=0, init_centroids=torch.zeros(3, 2))


def test_self_matching_loss_sharpened_bank_targets():
    # Bank prediction W m = (0.71, 0.70), sharpened by tau = 0.01: (71, 70) -> t = (e / (1 + e), 1 / (1 + e))
    # = (0.73106, 0.26894). Student logits W f = (1, 0), no temperature: log softmax = (-log(1 + e^-1), -log(1 + e))
    # = (-0.31326, -1.31326); CE = 0.73106 * 0.31326 + 0.26894 * 1.31326 = log(1 + e) - 0.73106 = 0.58220.
    student = torch.tensor([[1.0, 0.0]], requires_grad=True)
    bank = torch.tensor([[0.71, 0.70]], requires_grad=True)
    loss = self_matching_loss(student, bank, target_temperature=0.01)
    t0 = math.e / (1 + math.e)
    assert loss.item() == pytest.approx(math.log(1 + math.e) - t0, abs=1e-5)
    assert loss.item() == pytest.approx(0.58220, abs=1e-5)
    loss.backward()
    assert bank.grad is None                                          # the target is a stopped gradient
    # d CE / d z = softmax(z) - t = (0.73106 - 0.73106, ...) = (0, 0): here the student already matches the target.
    assert student.grad.abs().max().item() < 1e-6
    # A student temperature T_s = 0.5 doubles the student logits: (2, 0): CE = log(1 + e^2) - 2 t0 = 0.65481.
    tempered = self_matching_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.71, 0.70]]), 0.01, 0.5)
    assert tempered.item() == pytest.approx(math.log(1 + math.e ** 2) - 2 * t0, abs=1e-5)


def test_classifier_alignment_is_l1_of_raw_logits():
    # Row 1: |1 - 0| + |2 - 4| = 3; row 2: |0 - 1| + |0 - (-1)| = 2; batch mean = 2.5.
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 4.0], [1.0, -1.0]])
    assert classifier_alignment(a, b).item() == pytest.approx(2.5)
    # The code's softmax switch: row 2, softmax (0.5, 0.5) vs (0.88080, 0.11920): 0.38080 + 0.38080 = 0.76159;
    # row 1, softmax (0.26894, 0.73106) vs (0.01799, 0.98201): 0.25095 * 2 = 0.50190; mean 0.63175.
    assert classifier_alignment(a, b, softmax=True).item() == pytest.approx(0.63175, abs=1e-4)


def _two_domain_banks():
    """Three clusters per domain, two points each, on the directions e_j (domain A) and e_j + 0.2 e_{j+1}
    (domain B), spread +-0.05 along e_{j+2} so that each cluster's spherical centroid is exact."""
    eye = torch.eye(3)
    a, b = [], []
    for j in range(3):
        for sign in (1.0, -1.0):
            spread = sign * 0.05 * eye[(j + 2) % 3]
            a.append(eye[j] + spread)
            b.append(eye[j] + 0.2 * eye[(j + 1) % 3] + spread)
    return F.normalize(torch.stack(a), dim=1), F.normalize(torch.stack(b), dim=1)


def test_shared_initialisation_pairs_rows_through_the_shared_centroids(monkeypatch):
    bank_a, bank_b = _two_domain_banks()
    starts = []

    def recording_kmeans(features, k, **options):
        starts.append(options.get("init_centroids"))
        return faiss_kmeans(features, k, **options)

    monkeypatch.setattr(coda, "faiss_kmeans", recording_kmeans)
    weights_a, weights_b = shared_cluster_heads(bank_a, bank_b, 3, seed=0, niter=40)
    # Calls: the union (random start), then each domain started from the union's centroids C.
    assert starts[0] is None and starts[1] is starts[2] and starts[1].shape == (3, 3)
    shared = starts[1]
    # Row c of C is the cluster j = pi(c): normalize(sum of its 4 unit points) = normalize(1.99750 e_j + 1.95880
    # (e_j + 0.2 e_{j+1})) = 0.99513 e_j + 0.09854 e_{j+1}; A's row c = e_j; B's row c = normalize(e_j + 0.2 e_{j+1})
    # = 0.98058 e_j + 0.19612 e_{j+1}: all three rows c are the same cluster j.
    order = shared.argmax(dim=1)
    assert sorted(order.tolist()) == [0, 1, 2]
    eye = torch.eye(3)
    following = eye[(order + 1) % 3]
    assert torch.allclose(shared, 0.99513 * eye[order] + 0.09854 * following, atol=1e-4)
    assert torch.allclose(weights_a, eye[order], atol=1e-5)
    assert torch.allclose(weights_b, 0.98058 * eye[order] + 0.19612 * following, atol=1e-4)



def test_total_loss_iss_plus_cca_on_both_domains(monkeypatch):
    monkeypatch.setattr(coda, "crop_flip_view", lambda images: images)       # no augmentation in this test
    method = CoDA(CoDAHparams(cluster_num=1, granularities=2, cca_weight=0.1), FeatureStub())
    method.banks = nn.ModuleList([MemoryBank(1, 2), MemoryBank(1, 2)])
    method.banks[0].fill(torch.tensor([[1.0, 0.0]]))                         # m_A
    method.banks[1].fill(torch.tensor([[1.0, 0.0]]))                         # m_B (lags behind f_B)
    with torch.no_grad():
        method.heads[0][0].weight.copy_(torch.tensor([[1.0, 0.0]]))          # W^A_1 (K_1 = 1)
        method.heads[1][0].weight.copy_(torch.tensor([[0.0, 1.0]]))          # W^B_1
        method.heads[0][1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))   # W^A_2 (K_2 = 2)
        method.heads[1][1].weight.copy_(torch.tensor([[0.0, 1.0], [0.6, 0.8]]))   # W^B_2
    batch_a = Batch(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), 0)        # f_A = (1, 0)
    batch_b = Batch(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), 1)        # f_B = (0, 1)
    losses = method.training_step(batch_a, batch_b, 0)
    # ISS^A: r = 1 has one cluster (CE 0); r = 2: student (1, 0), target softmax((1, 0) / 0.01) = (1, 0):
    #   log(1 + e^-1) = 0.31326; mean over R = 2: 0.15663.
    # ISS^B: r = 1: 0; r = 2: student W^B_2 f_B = (1, 0.8), target softmax(W^B_2 m_B / 0.01) = softmax(0, 60) = (0, 1):
    #   -log softmax_1(1, 0.8) = log(1 + e^0.2) = 0.79814; mean: 0.39907.   (A's heads on B would give 1.31326 / 2.)
    # CCA(f_A): r = 1: |1 - 0| = 1; r = 2: |(1, 0) - (0, 0.6)| = 1.6; mean 1.3.
    # CCA(f_B): r = 1: |0 - 1| = 1; r = 2: |(0, 1) - (1, 0.8)| = 1.2; mean 1.1.   lambda (1.3 + 1.1) = 0.24.
    iss = (math.log(1 + math.e ** -1) + math.log(1 + math.e ** 0.2)) / 2
    assert losses["iss"].item() == pytest.approx(iss, abs=1e-5)
    assert iss == pytest.approx(0.15663 + 0.39907, abs=1e-4)
    assert losses["cca"].item() == pytest.approx(0.24, abs=1e-6)
    assert losses["loss"].item() == pytest.approx(iss + 0.24, abs=1e-5)
    losses["loss"].backward()
    assert all(p.grad is not None for p in method.heads.parameters())       # the heads learn from both terms
    # After the step, the banks take this step's features: m_B <- normalize(0.95 (1, 0) + 0.05 (0, 1))
    # = (0.95, 0.05) / 0.95131 = (0.99862, 0.05256); m_A stays (1, 0).
    method.after_optimizer_step(0)
    assert method.banks[1].features[0].tolist() == pytest.approx([0.99862, 0.05256], abs=1e-5)
    assert method.banks[0].features[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_detector_uses_the_query_domain_classifier_as_prototypes():
    method = CoDA(CoDAHparams(cluster_num=2, granularities=2), FeatureStub())
    eye = torch.eye(3)
    method.heads = nn.ModuleList(nn.ModuleList(nn.Linear(3, k, bias=False) for k in (2, 4)) for _ in range(2))
    q = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.1, 0.0], [1.0, 0.0, 0.1],
                                  [0.0, 1.0, 0.0], [0.1, 1.0, 0.0], [0.0, 1.0, 0.1]]), dim=1)
    retrieval = eye[:1]                                                      # one retrieval item, at e0
    with torch.no_grad():
        method.heads[0][0].weight.copy_(eye[:2])                             # query domain, K: clusters e0, e1
        method.heads[1][0].weight.copy_(torch.stack([eye[2], -eye[2]]))     # retrieval domain's: must not be used
        method.heads[0][1].weight.copy_(torch.cat([q[:3], eye[1:2]]))        # finer head: q0, q1, q2 alone
    # K: clusters {q0, q1, q2} and {q3, q4, q5}. Bound of each: the largest intra-cluster Euclidean distance,
    # |q1 - q2| = 0.09950 sqrt 2 = 0.14072. Nearest retrieval item (e0): q0 0, q1 |(0.99504, 0.09950) - (1, 0)| =
    # 0.09963, q2 the same: below 0.14072 -> shared; q3 sqrt 2, q4 |(0.0995, 0.99504) - (1, 0)| = 1.34202, q5 sqrt 2:
    # above -> private.
    private = method.detect_private(q, retrieval, num_clusters=99, seed=0)
    assert private.tolist() == [False, False, False, True, True, True]
    # The finer head puts q0, q1, q2 in clusters of one (bound 0): q1 and q2 (distance 0.09963 > 0) become null,
    # q0 (distance 0) does not; the e1 cluster is private either way.
    method.hparams.detector_granularity = 1
    assert method.detect_private(q, retrieval, num_clusters=99, seed=0).tolist() == [False, True, True, True, True,
                                                                                    True]


def test_hyper_parameters_and_two_optimisers():
    assert resolve_hparams(CoDA, "office_home")["cluster_num"] == 100
    assert resolve_hparams(CoDA, "office31")["cluster_num"] == 50
    assert resolve_hparams(CoDA, "domainnet")["cluster_num"] == 11
    defaults = resolve_hparams(CoDA, "office_home")
    assert (defaults["epochs"], defaults["batch_size"], defaults["target_temperature"], defaults["cca_weight"],
            defaults["bank_momentum"], defaults["student_temperature"]) == (20, 16, 0.01, 0.01, 0.95, 1.0)
    from methods.backbones import build_backbone
    method = CoDA(CoDAHparams(cluster_num=3, head="linear", head_dim=16), build_backbone("small_cnn", width=8))
    assert [head.weight.shape for head in method.heads[1]] == [(3 * r, 16) for r in (1, 2, 3, 4)]
    backbone_opt, heads_opt = method.configure_optimizers()
    assert backbone_opt.defaults["lr"] == 3e-3 and backbone_opt.defaults["weight_decay"] == 1e-5
    assert heads_opt.defaults["lr"] == 1e-4 and heads_opt.defaults["weight_decay"] == 0.0
    assert {id(p) for p in heads_opt.param_groups[0]["params"]} == {id(p) for p in method.heads.parameters()}
    assert {id(p) for p in backbone_opt.param_groups[0]["params"]} == {id(p) for p in method.backbone.parameters()}


@pytest.mark.slow
def test_stop_after_an_epoch_and_resume_bitwise(tmp_path, cache_dir, one_thread):
    suite = tiny_suite("test_coda_resume", methods=["coda"], settings=("open",))
    spec = plan(suite, assignments=["coda.epochs=2", "coda.cluster_num=4", "coda.batch_size=32"])[0]


    uninterrupted = run_one(prepared_run(spec, tmp_path / "a", cache_dir))
    spec_path = prepared_run(spec, tmp_path / "b", cache_dir)
    run_one(spec_path, stop_after_epochs=1)
    checkpoint = torch.load(spec_path.parent / "ckpt" / "last.pt", weights_only=False)
    assert checkpoint["epoch"] == 1
    # Both optimisers' states are saved (momentum buffers for the backbone and for every cluster head).
    backbone_state, heads_state = checkpoint["optimizers"]
    assert backbone_state["param_groups"][0]["lr"] == 3e-3 and heads_state["param_groups"][0]["lr"] == 1e-4
    assert len(heads_state["state"]) == 8 and all("momentum_buffer" in s for s in heads_state["state"].values())
    assert any(k.startswith("heads.") for k in checkpoint["method"]) and "banks.1.features" in checkpoint["method"]
    resumed = run_one(spec_path)
    assert resumed == uninterrupted
    assert 0 <= resumed["open_set_acc"] <= 1


class _Context:
    """The FitContext of two domains of random images (no runner)."""
    def __init__(self, method, images):
        self.method, self.images = method, images
        self.domains, self.device, self.seed = images, torch.device("cpu"), 0

    @torch.no_grad()
    def embed_domain(self, domain_id, embed=None):
        return (embed or self.method.embed)(self.images[domain_id])


@pytest.mark.parametrize("bank_fill", ["eval", "train_transform"])
def test_fit_start_fills_banks_and_initialises_unit_heads(bank_fill):
    from methods.backbones import build_backbone
    torch.manual_seed(0)
    method = CoDA(CoDAHparams(cluster_num=2, granularities=2, kmeans_niter=5, bank_fill=bank_fill),
                  build_backbone("small_cnn", embed_dim=8, width=8))
    images = [torch.rand(10, 3, 16, 16), torch.rand(9, 3, 16, 16)]
    method.on_fit_start(_Context(method, images))
    for d in (0, 1):
        with torch.no_grad():
            plain = method.embed(images[d])
        bank = method.banks[d].features
        assert bank.shape == (len(images[d]), 8)
        # "eval": the initial model's un-augmented features; "train_transform": one crop + flip view (the code's).
        assert torch.allclose(bank, plain, atol=1e-6) == (bank_fill == "eval")
        for r, head in enumerate(method.heads[d]):
            assert head.weight.shape == (2 * (r + 1), 8)
            assert torch.allclose(head.weight.norm(dim=1), torch.ones(2 * (r + 1)), atol=1e-5)  # spherical
