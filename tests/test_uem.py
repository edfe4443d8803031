"""UEM's pieces on tiny tensors, with the expected values computed by hand in the comments."""
from __future__ import annotations

import json
import math

import pytest
import torch

from benchmark.runner import run_one
from benchmark.suites import plan
from methods.uem import (merge_prototypes, merged_pair_bounds, private_by_merged_bounds, product_distance,
                         progressive_weight, semantic_enhanced_loss, semantic_preserving_regulariser,
                         switchable_nn_match, translate)

from .conftest import prepared_run, tiny_suite


@pytest.mark.parametrize("epoch, expected", [
    (50, 0.5),                               # 1 / (1 + e^0)
    (48, 1 / (1 + math.e ** 2)),             # 0.1192
    (55, 1 / (1 + math.e ** -5)),            # 0.99331
    (0, 1 / (1 + math.e ** 50)),             # 1.9e-22: stage 1 starts as pure instance discrimination
])
def test_progressive_weight_eq10(epoch, expected):
    assert progressive_weight(epoch, 100) == pytest.approx(expected, rel=1e-9)


def test_translation_eq8_is_a_mean_shift():
    # p + (mean_to - mean_from) = (1, 0) + ((1, 1) - (0, 0)) = (2, 1)
    moved = translate(torch.tensor([[1.0, 0.0]]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert moved.tolist() == [[2.0, 1.0]]


def test_hungarian_pairing_and_merge_rule_eq9():
    # A: a0 = (0, 0), a1 = (10, 0); B: b0 = (0.5, 5), b1 = (30, 5); bank means (5, 0) and (5, 5).
    # B -> A subtracts (0, 5): b0' = (0.5, 0), b1' = (30, 0). Costs: a0-b0' 0.5, a0-b1' 30, a1-b0' 9.5, a1-b1' 20,
    # so Hungarian pairs (a0, b0') and (a1, b1') (20.5 < 39.5). Threshold = min(|a0 - a1| = 10, |b0 - b1| = 29.5) = 10:
    # the first pair (0.5) merges, the second (20) must not.
    prototypes_a = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    prototypes_b = torch.tensor([[0.5, 5.0], [30.0, 5.0]])
    unified = merge_prototypes(prototypes_a, prototypes_b, torch.tensor([5.0, 0.0]), torch.tensor([5.0, 5.0]))
    assert unified.merged_pairs == [(0, 0)]
    assert unified.merged_a.tolist() == [True, False]
    # P^{A'} = [a1; b1'; (a0 + b0') / 2] = [(10, 0); (30, 0); (0.25, 0)]
    assert unified.set_a.tolist() == [[10.0, 0.0], [30.0, 0.0], [0.25, 0.0]]
    assert unified.a_in_a.tolist() == [2, 0] and unified.b_in_a.tolist() == [2, 1]
    # P^{B'} = [b1; a1''; (b0 + a0'') / 2] with A -> B adding (0, 5): [(30, 5); (10, 5); (0.25, 5)]
    assert unified.set_b.tolist() == [[30.0, 5.0], [10.0, 5.0], [0.25, 5.0]]
    assert unified.b_in_b.tolist() == [2, 0] and unified.a_in_b.tolist() == [2, 1]
    # Without merging (the w/o-PM ablation) both sets keep every prototype.
    separate = merge_prototypes(prototypes_a, prototypes_b, torch.tensor([5.0, 0.0]), torch.tensor([5.0, 5.0]),
                                merging=False)
    assert separate.merged_pairs == [] and len(separate.set_a) == 4


def test_semantic_enhanced_loss_eq11():
    # f = (1, 0); prototypes (1, 0), (0, 1); tau = 1: weights softmax(1, 0) = (0.73106, 0.26894);
    # distances (0, sqrt 2): L_SEL = 0.26894 * 1.41421 = 0.38034.
    f = torch.tensor([[1.0, 0.0]])
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = 1 / (math.e + 1) * math.sqrt(2)
    assert semantic_enhanced_loss(f, prototypes, 1.0).item() == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx(0.38034, abs=1e-4)


def test_semantic_preserving_regulariser_eq14():
    # Current f = [(1, 0), (0, 1)], frozen f' = [(1, 0), (1, 0)]. Off-diagonal: cos 0 vs 1 -> 1; distance sqrt 2 vs 0
    # -> 2; so each off-diagonal pair costs 3, the diagonal 0: (3 + 3) / B^2 = 6 / 4 = 1.5.
    current = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    frozen = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = semantic_preserving_regulariser(current, frozen)
    assert loss.item() == pytest.approx(1.5, abs=1e-5)
    loss.backward()
    assert torch.isfinite(current.grad).all()          # no NaN from the zero distances on the diagonal
    assert semantic_preserving_regulariser(frozen, frozen).item() == pytest.approx(0.0, abs=1e-5)


def test_product_distance():
    # u = (1, 0), v = (0, 2): cos 0, ||u - v|| = sqrt 5 -> delta = sqrt 5; delta(u, u) = 0.
    delta = product_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0], [1.0, 0.0]]))
    assert delta.tolist()[0] == pytest.approx([math.sqrt(5), 0.0], abs=1e-6)


def _aligned_prototypes():
    # A and B both have prototypes (1, 0) and (0, 1), equal bank means: every pair merges, P^{B'} = [(1, 0), (0, 1)].
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zero = torch.zeros(2)
    return prototypes, merge_prototypes(prototypes, prototypes.clone(), zero, zero)


def test_switchable_match_trusts_a_neighbour_of_the_same_unified_prototype():
    prototypes, unified = _aligned_prototypes()
    anchor = torch.tensor([[1.0, 0.0]])
    retrieval = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Nearest own prototype 0 -> p~ = P^{B'}[0]; the nearest retrieval item (1, 0) maps to P^{B'}[0] too: trusted.
    # tau = 1: prototype logits (1, 0), instance logits (1, 0).
    # loss = log(e + 1 + e + 1) - log(e + e) = log(e + 1) - 1 = 0.31326
    loss = switchable_nn_match(anchor, prototypes, unified, retrieval, prototypes, 1.0)
    assert loss.item() == pytest.approx(math.log(math.e + 1) - 1, abs=1e-5)


def test_switchable_match_drops_a_neighbour_of_another_prototype():
    prototypes, unified = _aligned_prototypes()
    anchor = torch.tensor([[1.0, 0.0]])
    retrieval = torch.tensor([[0.0, 1.0]])
    # The only retrieval item maps to P^{B'}[1] != p~ = P^{B'}[0]: the prototype alone is the positive.
    # loss = log(e + 1 + 1) - 1 = 0.55144
    loss = switchable_nn_match(anchor, prototypes, unified, retrieval, prototypes, 1.0)
    assert loss.item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-5)


def test_uem_open_set_detector_b1():
    # Query clusters around e0, e1 (shared) and e2 (private); retrieval clusters around e0 and e1.
    torch.manual_seed(0)
    eye = torch.eye(3)
    query = torch.cat([eye[c] + 0.02 * torch.randn(5, 3) for c in (0, 1, 2)])
    retrieval = torch.cat([eye[c] + 0.02 * torch.randn(5, 3) for c in (0, 1)])
    query_assignment = torch.arange(3).repeat_interleave(5)
    retrieval_assignment = torch.arange(2).repeat_interleave(5)
    query_prototypes = torch.stack([query[query_assignment == c].mean(0) for c in range(3)])
    retrieval_prototypes = torch.stack([retrieval[retrieval_assignment == c].mean(0) for c in range(2)])
    # Means: query ~ (1/3, 1/3, 1/3), retrieval ~ (1/2, 1/2, 0); translated e0 ~ (5/6, -1/6, 1/3) is 0.41 from e0,
    # e1 likewise, e2 is 1.08 from either: pairs (e0, e0) and (e1, e1), both under the threshold sqrt 2 -> merged;
    # e2 stays unmerged, so its queries are null; shared queries are within their pair's bound.
    unified = merge_prototypes(query_prototypes, retrieval_prototypes, query.mean(0), retrieval.mean(0))
    assert sorted(unified.merged_pairs) == [(0, 0), (1, 1)]
    bounds = merged_pair_bounds(query, retrieval, query_assignment, retrieval_assignment, unified.merged_pairs)
    private = private_by_merged_bounds(query, retrieval, query_prototypes, bounds)
    assert private.tolist() == [False] * 10 + [True] * 5


@pytest.mark.slow
def test_stage_switch_and_resume_in_stage_two(tmp_path, cache_dir, one_thread):
    suite = tiny_suite("test_uem_resume", methods=["uem"], settings=("open",))
    spec = plan(suite, assignments=["uem.stage1_epochs=2", "uem.stage2_epochs=2", "uem.k_max=6"])[0]
    assert spec.hparams["epochs"] == 4                                # derived: stage 1 + stage 2


    uninterrupted = run_one(prepared_run(spec, tmp_path / "a", cache_dir))
    spec_path = prepared_run(spec, tmp_path / "b", cache_dir)
    run_one(spec_path, stop_after_epochs=3)                          # stops after the first stage-2 epoch
    checkpoint = torch.load(spec_path.parent / "ckpt" / "last.pt", weights_only=False)
    assert checkpoint["epoch"] == 3
    frozen = {k: v for k, v in checkpoint["method"].items() if k.startswith("frozen.")}
    live = {k.replace("frozen.", "backbone.", 1): v for k, v in frozen.items()}
    assert frozen and any(not torch.equal(v, checkpoint["method"][k]) for k, v in live.items())
    resumed = run_one(spec_path)
    assert resumed == uninterrupted
    history = json.loads((spec_path.parent / "metrics.json").read_text())["history"]
    assert "ince" in history[1] and "sn2m" in history[2]             # stage 1 terms, then stage 2 terms
    assert 0 <= resumed["open_set_acc"] <= 1
    assert 0 <= resumed["default_detector_open_set_acc"] <= 1       # the App. B.2 detector, side by side


def test_learning_rate_per_stage_a13():
    # lr 0.1 for 2 stage-1 epochs, stage2_lr 0.01 for 2 stage-2 epochs, cosine to 0 within each stage:
    # stage 1: 0.1 * (1 + cos 0) / 2 = 0.1, 0.1 * (1 + cos(pi/2)) / 2 = 0.05; stage 2: 0.01, 0.005.
    from methods.backbones import build_backbone
    from methods.base import build_hparams, resolve_hparams
    from methods.uem import UEM
    backbone = build_backbone("small_cnn", embed_dim=8, width=8)
    values = resolve_hparams(UEM, "synthetic", {"stage1_epochs": 2, "stage2_epochs": 2, "lr": 0.1,
                                                "stage2_lr": 0.01})
    optimizers, schedulers = UEM(build_hparams(UEM, values), backbone).configure_optimizers()
    rates = []
    for _ in range(4):
        rates.append(optimizers[0].param_groups[0]["lr"])
        optimizers[0].step()                                          # no gradients: a no-op, in the usual order
        schedulers[0].step()
    assert rates == pytest.approx([0.1, 0.05, 0.01, 0.005])
    # Unset, stage 2 uses `lr`, as the paper does (one lr, a cosine schedule per stage).
    assert resolve_hparams(UEM, "office31", {})["stage2_lr"] == 2e-4
    assert resolve_hparams(UEM, "office31", {"lr": 0.01})["stage2_lr"] == 0.01


def test_ablation_suite_has_the_rows_of_table_4():
    from benchmark.suites import get_suite
    specs = plan(get_suite("quickstart_ablation"))
    assert list(dict.fromkeys(s.method for s in specs)) == [
        "pretrained", "uem_no_pm", "uem_no_sel", "uem_no_spda", "uem_no_sn2m", "uem"]
    assert {s.setting for s in specs} == {"open"} and len(specs) == 6 * 3 * 3
    switches = {s.method: (s.hparams["prototype_merging"], s.hparams["use_sel"], s.hparams["use_spr"],
                           s.hparams["match"]) for s in specs if s.method.startswith("uem")}
    assert switches == {"uem": (True, True, True, "sn2m"), "uem_no_pm": (False, True, True, "sn2m"),
                        "uem_no_sel": (True, False, True, "sn2m"), "uem_no_spda": (True, True, False, "sn2m"),
                        "uem_no_sn2m": (True, True, True, "nearest_neighbour")}


def test_prototypes_count_clusters_by_the_k_rule_and_never_read_the_class_count():
    # Stage-1 prototypes on banks of 10 and 5 separable classes (32-d, noise 0.3): the context has no
    # `num_classes_hint` at all, so reading it would fail; K comes from the silhouette (10 / 5), or from the chord
    # elbow with `k_rule="elbow"`; an unknown rule is refused with the known ones.
    from types import SimpleNamespace

    from methods.backbones import build_backbone
    from methods.base import build_hparams, resolve_hparams
    from methods.memory_bank import MemoryBank
    from methods.uem import UEM

    from .conftest import separated_domains
    query, _, retrieval, _ = separated_domains(10, dim=32, per_class=30, noise=0.3, seed=0)
    counts = {}
    for rule in ("silhouette", "elbow"):
        values = resolve_hparams(UEM, "synthetic", {"stage1_epochs": 2, "k_rule": rule})
        method = UEM(build_hparams(UEM, values), build_backbone("small_cnn", embed_dim=8, width=8))
        method.banks = torch.nn.ModuleList([MemoryBank(len(f), 32) for f in (query, retrieval)])
        for bank, features in zip(method.banks, (query, retrieval)):
            bank.fill(features)
        method.start_epoch(1, SimpleNamespace(seed=2024))            # alpha(1, E=2) = 0.5: prototypes are built
        counts[rule] = method.pop_epoch_log()
    assert (counts["silhouette"]["clusters_query"], counts["silhouette"]["clusters_retrieval"]) == (10, 5)
    assert counts["silhouette"]["merged_pairs"] == 5 and "clusters_query" in counts["elbow"]
    with pytest.raises(ValueError, match="k_rule must be one of silhouette, elbow"):
        UEM(build_hparams(UEM, resolve_hparams(UEM, "synthetic", {"k_rule": "knee"})),
            build_backbone("small_cnn", embed_dim=8, width=8))
