"""DARL (DARLING)'s pieces on tiny tensors, with the expected values computed by hand in the comments, the routing of
keys to their domain's queue, the pi switches, and a quickstart run that stops and resumes bitwise."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from benchmark.runner import run_one
from benchmark.suites import plan
from methods.backbones import build_backbone
from methods.base import Batch, build_hparams, resolve_hparams
from methods.darl import (DARL, domain_log_likelihoods, mixture_log_weights, mixture_nll,  # registers "darl"
                          queue_length)
from methods.losses import masked_info_nce
from methods.momentum import KeyQueue

from .conftest import assert_key_encoder_trails, run_stopped_after_one_epoch, tiny_suite


def _queue(keys, index) -> KeyQueue:
    queue = KeyQueue(len(keys), len(keys[0]))
    queue.enqueue(torch.tensor(keys, dtype=torch.float64).to(torch.get_default_dtype()), torch.tensor(index))
    return queue


def _two_queues():
    # Q_A holds (1, 0) from A's instance 7; Q_B holds (0, 1) from B's instance 3.
    return [_queue([[1.0, 0.0]], [7]), _queue([[0.0, 1.0]], [3])]


# --- the mixture likelihood ---------------------------------------------------------------------------------------

def test_mixture_likelihood_by_hand():
    # q = (1, 0), k+ = (0.6, 0.8), tau = 1: s+ = 0.6; q . (1, 0) = 1 (Q_A), q . (0, 1) = 0 (Q_B).
    #   p_A = e^0.6 / (e^0.6 + e^1) = 1 / (1 + e^0.4) = 0.401312
    #   p_B = e^0.6 / (e^0.6 + e^0) = 1 / (1 + e^-0.6) = 0.645656
    # pi = (0.7, 0.3):  L = -log(0.7 * 0.401312 + 0.3 * 0.645656) = -log(0.474615) = 0.745250
    # (the pi-weighted sum of losses, 0.7 * 0.913015 + 0.3 * 0.437488 = 0.770357, is a different objective).
    # Row 2: A's instance 7 - its own older key is Q_A's only slot, masked: p_A = 1,
    #   L = -log(0.7 + 0.3 * 0.645656) = 0.112389.
    # Row 3: B's instance 7 - Q_A's key is of A's instance 7, another image (indices are per domain): not masked,
    #   L = 0.745250 as row 1.
    q = torch.tensor([[1.0, 0.0]] * 3)
    k = torch.tensor([[0.6, 0.8]] * 3)
    domain, index = torch.tensor([0, 0, 1]), torch.tensor([5, 7, 7])
    log_p = domain_log_likelihoods(q, k, domain, index, _two_queues(), temperature=1.0)
    assert log_p.exp().tolist() == [pytest.approx([0.401312, 0.645656], abs=1e-6),
                                    pytest.approx([1.0, 0.645656], abs=1e-6),
                                    pytest.approx([0.401312, 0.645656], abs=1e-6)]
    logits = torch.tensor([[math.log(0.7), math.log(0.3)]] * 3)
    log_pi = mixture_log_weights("learned_detached", logits, domain)
    assert mixture_nll(log_pi, log_p).tolist() == pytest.approx([0.745250, 0.112389, 0.745250], abs=1e-6)
    # Without the own-key mask, row 2 contrasts with its own older key as with any other.
    log_p = domain_log_likelihoods(q, k, domain, index, _two_queues(), temperature=1.0, mask_own_keys=False)
    assert mixture_nll(log_pi, log_p).tolist() == pytest.approx([0.745250] * 3, abs=1e-6)


def test_uniform_and_empty_queue_by_hand():
    # pi = (1/2, 1/2): L = -log(0.5 * 0.401312 + 0.5 * 0.645656) = -log(0.523484) = 0.647248.
    q, k = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]])
    domain, index = torch.tensor([0]), torch.tensor([5])
    log_p = domain_log_likelihoods(q, k, domain, index, _two_queues(), temperature=1.0)
    log_pi = mixture_log_weights("uniform", torch.randn(1, 2), domain)
    assert log_pi.exp().tolist() == [[0.5, 0.5]]
    assert mixture_nll(log_pi, log_p).item() == pytest.approx(0.647248, abs=1e-6)
    # Empty queues: only the positive, p = 1 for every domain, L = -log(sum pi) = 0.
    empty = [KeyQueue(3, 2), KeyQueue(3, 2)]
    log_p = domain_log_likelihoods(q, k, domain, index, empty, temperature=1.0)
    assert log_p.tolist() == [[0.0, 0.0]] and mixture_nll(log_pi, log_p).item() == pytest.approx(0.0, abs=1e-7)


def _random_case(n=6, dim=5, sizes=(7, 4), seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=generator, dtype=dtype), dim=-1)
    q, k = unit(n, dim), unit(n, dim)
    queues = []
    for size in sizes:
        queue = KeyQueue(size, dim).to(dtype)
        queue.enqueue(unit(size, dim), torch.arange(100, 100 + size))    # never a query's own instance
        queues.append(queue)
    domain = torch.tensor([0, 1] * (n // 2))
    return q, k, queues, domain, torch.arange(n)


def test_oracle_one_hot_pi_equals_per_domain_info_nce():
    q, k, queues, domain, index = _random_case()
    log_pi = mixture_log_weights("oracle_onehot", torch.randn(len(q), 2, dtype=q.dtype), domain)
    loss = mixture_nll(log_pi, domain_log_likelihoods(q, k, domain, index, queues, temperature=0.2))
    for d in (0, 1):
        rows = domain == d
        expected = masked_info_nce(q[rows], k[rows], queues[d].keys, None, 0.2)   # MoCo with in-domain negatives
        assert loss[rows].mean().item() == pytest.approx(expected.item(), abs=1e-12)
    # ... and not the InfoNCE against the other domain's queue.
    other = masked_info_nce(q[domain == 0], k[domain == 0], queues[1].keys, None, 0.2)
    assert loss[domain == 0].mean().item() != pytest.approx(other.item(), abs=1e-3)


def test_single_domain_equals_plain_moco_info_nce():
    q, k, queues, _, index = _random_case(sizes=(9,), seed=1)
    domain = torch.zeros(len(q), dtype=torch.long)
    log_pi = mixture_log_weights("learned_detached", torch.randn(len(q), 1, dtype=q.dtype), domain)
    assert log_pi.tolist() == [[0.0]] * len(q)                               # softmax over one domain: pi = 1
    loss = mixture_nll(log_pi, domain_log_likelihoods(q, k, domain, index, queues, temperature=0.2)).mean()
    assert loss.item() == pytest.approx(masked_info_nce(q, k, queues[0].keys, None, 0.2).item(), abs=1e-12)


def _naive_float64(q, k, queues, domain, pi, temperature):
    """-log sum_d pi_d p_d with the probabilities themselves (no log-space), in float64."""
    q, k = q.double(), k.double()
    positive = torch.exp((q * k).sum(dim=1) / temperature)
    mixture = torch.zeros(len(q), dtype=torch.float64)
    for d, queue in enumerate(queues):
        negatives = torch.exp(q @ queue.keys.double().t() / temperature).sum(dim=1)
        mixture = mixture + pi[:, d].double() * positive / (positive + negatives)
    return -torch.log(mixture)


def test_logsumexp_form_matches_a_float64_naive_computation():
    q, k, queues, domain, index = _random_case(n=8, dim=6, sizes=(10, 5), seed=2, dtype=torch.float32)
    logits = torch.randn(len(q), 2, generator=torch.Generator().manual_seed(3))
    for temperature in (0.2, 0.05):
        log_p = domain_log_likelihoods(q, k, domain, index, queues, temperature)
        loss = mixture_nll(mixture_log_weights("learned_detached", logits, domain), log_p)
        naive = _naive_float64(q, k, queues, domain, torch.softmax(logits.double(), dim=1), temperature)
        assert torch.allclose(loss.double(), naive, rtol=1e-5, atol=1e-5)
        # Jensen: the pi-weighted sum of per-domain losses is never smaller, and here clearly larger on some rows
        # (a different objective, which this test would catch).
        weighted = -(torch.softmax(logits, dim=1) * log_p).sum(dim=1)
        assert (weighted >= loss - 1e-6).all() and (weighted - loss).max() > 0.1
    # Far from the positive (tau 0.01, the positive's logit 100 below a negative's) every p_d underflows in
    # float32, where the naive product gives -log 0 = inf; the log-space form stays finite and exact.
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.0, 1.0]])                                            # s+ = 0, negatives (1, 0): 1/0.01
    queues = [_queue([[1.0, 0.0]], [3]), _queue([[1.0, 0.0]], [4])]
    log_p = domain_log_likelihoods(q, k, torch.tensor([0]), torch.tensor([0]), queues, temperature=0.01)
    loss = mixture_nll(torch.log(torch.tensor([[0.5, 0.5]])), log_p)
    # p_d = 1 / (1 + e^100) for both d: L = log(1 + e^100) = 100 + log(1 + e^-100) = 100.
    assert loss.item() == pytest.approx(100.0, abs=1e-4)
    naive32 = -torch.log(0.5 * torch.exp(torch.tensor(0.0)) / (1 + torch.exp(torch.tensor(100.0))) * 2)
    assert math.isinf(naive32.item())


def test_pi_modes_and_their_gradients():
    domain = torch.tensor([0, 1])
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    assert mixture_log_weights("oracle_onehot", logits, domain).exp().tolist() == [[1.0, 0.0], [0.0, 1.0]]
    for mode, has_grad in (("learned_detached", False), ("learned_joint", True), ("oracle_onehot", False),
                           ("uniform", False)):
        assert mixture_log_weights(mode, logits, domain).requires_grad == has_grad, mode
    with pytest.raises(ValueError, match="pi_mode"):
        mixture_log_weights("soft", logits, domain)


def test_queue_length_is_capped_by_the_domain_size():
    # K_d = max(1, min(queue_size, N_d - B)): Office-31 DSLR, 498 images, 32 per step -> 466.
    assert [queue_length(65536, 498, 32), queue_length(256, 498, 32), queue_length(65536, 20, 32)] == [466, 256, 1]


# --- the method on a tiny backbone ----------------------------------------------------------------------------------

def _tiny_method(**overrides) -> DARL:
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", embed_dim=8, width=8)
    values = resolve_hparams(DARL, "synthetic", {"batch_size": 4, "predictor_hidden": 16, **overrides})
    method = DARL(build_hparams(DARL, values), backbone)
    ctx = SimpleNamespace(domains=(range(40), range(60)), device=torch.device("cpu"))
    method.on_fit_start(ctx)
    return method


def _batches(seed: int, index_a=(0, 1, 2, 3), index_b=(0, 1, 2, 3)):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(8, 3, 16, 16, generator=generator)
    return (Batch(images[:4], torch.tensor(index_a), 0), Batch(images[4:], torch.tensor(index_b), 1))


def test_keys_go_to_their_own_domains_queue():
    method = _tiny_method()
    assert [len(q) for q in method.queues] == [36, 56]                       # N_d - B: 40 - 4, 60 - 4
    batch_a, batch_b = _batches(1, index_a=(0, 1, 2, 3), index_b=(0, 1, 2, 3))   # same indices, other domain
    method.training_step(batch_a, batch_b, 0)
    # staged, not applied: the queues change only after the optimiser step
    assert all((q.index < 0).all() for q in method.queues)
    (enqueue_a,), (enqueue_b,) = method.queues[0]._staged, method.queues[1]._staged
    keys_a, keys_b = enqueue_a.args[0], enqueue_b.args[0]
    method.after_optimizer_step(0)
    assert not method.queues[0].has_staged and not method.queues[1].has_staged
    for queue, keys in zip(method.queues, (keys_a, keys_b)):
        filled = queue.index >= 0
        assert filled.sum().item() == 4 and queue.index[filled].tolist() == [0, 1, 2, 3]
        assert torch.allclose(queue.keys[filled], keys)                      # A's keys in Q_A, B's in Q_B
    assert not torch.allclose(keys_a, keys_b)
    # A second step: 4 more keys each, still each domain's own.
    batch_a, batch_b = _batches(2, index_a=(10, 11, 12, 13), index_b=(50, 51, 52, 53))
    out = method.training_step(batch_a, batch_b, 1)
    method.after_optimizer_step(1)
    assert sorted(method.queues[0].index[method.queues[0].index >= 0].tolist()) == [0, 1, 2, 3, 10, 11, 12, 13]
    assert sorted(method.queues[1].index[method.queues[1].index >= 0].tolist()) == [0, 1, 2, 3, 50, 51, 52, 53]
    assert out["darl"].item() > 0 and torch.isfinite(out["loss"])


class _ConstantLogits(nn.Module):
    """Logits (ln 3, 0) for every input: softmax (0.75, 0.25)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([math.log(3.0), 0.0]))

    def forward(self, features):
        return self.bias.expand(len(features), 2) + 0 * features[:, :1]


def test_domain_predictor_cross_entropy_by_hand():
    # Logits (ln 3, 0) -> pi = (0.75, 0.25) for every image. A's queries (domain 0): -log 0.75 = 0.287682;
    # B's (domain 1): -log 0.25 = 1.386294; mean over 4 + 4 = 0.836988. Accuracy 1/2; pi on the own domain:
    # (4 * 0.75 + 4 * 0.25) / 8 = 0.5. Empty queues at the first step: p_d = 1, L_DARL = -log 1 = 0, so the loss
    # is predictor_weight * 0.836988.
    method = _tiny_method(predictor_weight=2.0)
    method.predictor = _ConstantLogits()
    out = method.training_step(*_batches(3), 0)
    assert out["domain_ce"].item() == pytest.approx(0.836988, abs=1e-6)
    assert out["domain_acc"].item() == 0.5 and out["pi_own"].item() == pytest.approx(0.5)
    assert out["darl"].item() == pytest.approx(0.0, abs=1e-7)
    assert out["loss"].item() == pytest.approx(2 * 0.836988, abs=1e-5)
    # The predictor reads a stop-gradient feature: its loss does not reach the backbone.
    out["loss"].backward()
    assert method.predictor.bias.grad is not None
    assert all(p.grad is None or not p.grad.any() for p in method.backbone.parameters())


@pytest.mark.parametrize("mode,predictor_gets_darl_gradient", [("learned_detached", False), ("learned_joint", True)])
def test_darl_gradient_reaches_the_predictor_only_when_joint(mode, predictor_gets_darl_gradient):
    method = _tiny_method(pi_mode=mode, predictor_weight=0.0)
    method.training_step(*_batches(4), 0)
    method.after_optimizer_step(0)                                             # queues now hold keys
    out = method.training_step(*_batches(5, index_a=(4, 5, 6, 7), index_b=(8, 9, 10, 11)), 1)
    out["loss"].backward()
    grads = [p.grad for p in method.predictor.parameters()]
    assert any(g is not None and g.any() for g in grads) == predictor_gets_darl_gradient
    assert any(p.grad is not None and p.grad.any() for p in method.backbone.parameters())


def test_hyper_parameters_per_dataset():
    real = resolve_hparams(DARL, "office_home", {})
    assert (real["lr"], real["momentum"], real["weight_decay"], real["batch_size"], real["epochs"],
            real["temperature"], real["key_momentum"], real["pi_mode"]) == \
        (2e-4, 0.9, 1e-4, 32, 200, 0.2, 0.999, "learned_detached")
    with pytest.raises(ValueError, match="pi_mode"):
        _tiny_method(pi_mode="oracle")


# --- a run ------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_quickstart_run_stops_and_resumes_bitwise(tmp_path, cache_dir, one_thread):
    suite = tiny_suite("test_darl_resume", methods=["darl"])
    spec = plan(suite, assignments=["darl.epochs=2"])[0]

    uninterrupted, spec_path, state = run_stopped_after_one_epoch(spec, tmp_path, cache_dir)
    # The key encoder (an EMA, behind the query encoder), the predictor and both queues are in the checkpoint.
    assert_key_encoder_trails(state)
    assert any(k.startswith("predictor.") for k in state)
    for domain in (0, 1):
        assert (state[f"queues.{domain}.index"] >= 0).any()
    resumed = run_one(spec_path)
    assert resumed == uninterrupted
    history = json.loads((spec_path.parent / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all(h["darl"] > 0 for h in history)
