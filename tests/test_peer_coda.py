"""CoDA against its official code: outputs of wangxu-scu/CoDA (commit 67735cd) on tiny recorded inputs.

tests/data/peer/coda/<case>.pt each hold `key` (the harness function it checks), `inputs`, `params`, `official` (what
the official code returned), `source` (the official file and lines) and `tol`; recorded by running the repository's
own loss code on the CPU (faiss-cpu 1.15.1 for the k-means cases: another faiss build may draw other initial
centroids).
"""
from __future__ import annotations


import pytest
import torch

from methods import base as base_module
from methods import coda as coda_module

from .peer import UnitFeatures, assert_every_case_tested, assert_official, case_banks, load_case, replayed_bank









CASE_TESTS = {
    "bank_update": "test_bank_update_matches_the_official_code",
    "cca_r0": "test_classifier_alignment_matches_the_official_code",
    "cca_r1": "test_classifier_alignment_matches_the_official_code",
    "cca_softmax": "test_classifier_alignment_matches_the_official_code",
    "iss_r0": "test_self_matching_loss_matches_the_official_code",
    "iss_r1": "test_self_matching_loss_matches_the_official_code",
    "shared_heads_k4": "test_shared_cluster_heads_match_the_official_code",
    "shared_heads_k8": "test_shared_cluster_heads_match_the_official_code",
    "training_step": "test_training_step_matches_the_official_code",
}


def test_every_recorded_case_is_tested():
    assert_every_case_tested("coda", CASE_TESTS, globals())


def test_bank_update_matches_the_official_code():
    case = load_case("coda", "bank_update")
    assert case["key"] == "memory_bank.momentum_update"
    momentum = case["params"]["momentum"]
    bank = replayed_bank(case, lambda bank, index, features: bank.momentum_update(index, features, momentum))
    assert_official(bank.features, case)


@pytest.mark.parametrize("name", ["cca_r0", "cca_r1", "cca_softmax"])
def test_classifier_alignment_matches_the_official_code(name):
    # One granularity, unweighted: both domains' classifiers (bias-free) on the same features.
    case = load_case("coda", name)
    assert case["key"] == "coda.classifier_alignment"
    inputs = case["inputs"]
    features = inputs["features"]
    loss = coda_module.classifier_alignment(features @ inputs["weight_a"].t(), features @ inputs["weight_b"].t(),
                                            **case["params"])
    assert_official(loss, case)


@pytest.mark.parametrize("name", ["iss_r0", "iss_r1"])
def test_self_matching_loss_matches_the_official_code(name):
    # One granularity: the classifier on the batch's features (student) and on their bank entries (targets).
    case = load_case("coda", name)
    assert case["key"] == "coda.self_matching_loss"
    inputs = case["inputs"]
    weight = inputs["weight"]
    loss = coda_module.self_matching_loss(inputs["features"] @ weight.t(), inputs["bank_entries"] @ weight.t(),
                                          **case["params"])
    assert_official(loss, case)


@pytest.mark.parametrize("name", ["shared_heads_k4", "shared_heads_k8"])
def test_shared_cluster_heads_match_the_official_code(name):
    case = load_case("coda", name)
    assert case["key"] == "coda.shared_cluster_heads"
    inputs, official = case["inputs"], case["official"]
    weights_a, weights_b = coda_module.shared_cluster_heads(inputs["bank_a"], inputs["bank_b"], **case["params"])
    assert_official(weights_a, case, official["w_a"])
    assert_official(weights_b, case, official["w_b"])


def test_training_step_matches_the_official_code(monkeypatch):
    # The official forward/loss composition on fixed features, the crop + flip view replaced by the identity, the
    # case's cluster classifiers (R = 2 granularities per domain); then the banks after the step's update.
    case = load_case("coda", "training_step")
    assert case["key"] == "coda.training_step"
    inputs, official = case["inputs"], case["official"]
    method = coda_module.CoDA(coda_module.CoDAHparams(**case["params"]["hparams"]), UnitFeatures())
    monkeypatch.setattr(coda_module, "crop_flip_view", lambda images: images)
    method.banks = case_banks(inputs)
    with torch.no_grad():
        for d, domain_heads in enumerate(method.heads):
            assert len(domain_heads) == len(inputs[f"heads_{d}"])
            for head, weight in zip(domain_heads, inputs[f"heads_{d}"]):
                head.weight.copy_(weight)
    batch_a = base_module.Batch(inputs["images_a"], inputs["index_a"], 0)
    batch_b = base_module.Batch(inputs["images_b"], inputs["index_b"], 1)
    losses = method.training_step(batch_a, batch_b, step=0)
    method.after_optimizer_step(0)
    for name in ("loss", "iss", "cca"):
        assert_official(losses[name].detach(), case, official[name])
    assert_official(method.banks[0].features, case, official["bank_a"])
    assert_official(method.banks[1].features, case, official["bank_b"])
