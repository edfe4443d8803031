"""Shared blocks and CDS's loss terms on tiny tensors, with the expected values computed by hand (see comments)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods import REGISTRY, get_method_class, method_names, register
from methods.augment import color_jitter, crop_flip_view, gaussian_blur, moco_v2_view, random_resized_crop
from methods.base import HparamError, Method, resolve_hparams
from methods.cds import cross_domain_entropy
from methods.grl import grad_reverse
from methods.losses import bank_instance_nce, info_nce_logits, masked_info_nce, nt_xent, softmax_entropy
from methods.memory_bank import MemoryBank
from methods.open_set import cluster_radius_detector


def test_bank_instance_nce_by_hand():
    # f = (1, 0); bank rows (1, 0), (0, 1); t = 1; positive = row 0.
    # logits = (1, 0); loss = -log(e / (e + 1)) = log(1 + e^-1) = 0.31326...
    f = torch.tensor([[1.0, 0.0]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = bank_instance_nce(f, bank, torch.tensor([0]), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # t = 0.5 doubles the logits: -log(e^2 / (e^2 + 1)) = log(1 + e^-2) = 0.12693...
    assert bank_instance_nce(f, bank, torch.tensor([0]), 0.5).item() == pytest.approx(math.log(1 + math.exp(-2)),
                                                                                      abs=1e-6)


def test_cds_cross_domain_entropy_by_hand():
    # f = (1, 0); other bank rows (1, 0), (0, 1), (-1, 0); t = 1. logits (1, 0, -1).
    # Top-2 keeps (1, 0): p = (e/(e+1), 1/(e+1)) = (0.73106, 0.26894);
    # H = -(0.73106 ln(0.73106 + 1e-5) + 0.26894 ln(0.26894 + 1e-5)) = 0.22900 + 0.35318 = 0.58218 (the official
    # code's offset 1e-5 inside the log lowers the exact 0.582204 by sum_j p_j 1e-5 / p_j = 2e-5).
    f = torch.tensor([[1.0, 0.0]])
    other = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    p = torch.tensor([math.e / (math.e + 1), 1 / (math.e + 1)], dtype=torch.float64)
    expected_top2 = -(p * (p + 1e-5).log()).sum().item()
    assert expected_top2 == pytest.approx(0.582204 - 2e-5, abs=1e-6)
    assert cross_domain_entropy(f, other, 1.0, n_neighbors=2).item() == pytest.approx(expected_top2, abs=1e-6)
    # All three neighbours: p = (e, 1, e^-1) / (e + 1 + e^-1) = (0.66524, 0.24473, 0.09003); H = 0.83240 - 3e-5.
    assert cross_domain_entropy(f, other, 1.0, n_neighbors=700).item() == pytest.approx(0.83237, abs=1e-5)


def test_softmax_entropy_uniform_is_log_n():
    assert softmax_entropy(torch.zeros(3, 4)).item() == pytest.approx(math.log(4), abs=1e-6)


def test_info_nce_by_hand():
    # q = k+ = (1, 0); negatives (0, 1), (-1, 0); t = 1: logits (1, 0, -1); loss = -log(e / (e + 1 + e^-1)) = 0.40761.
    q = torch.tensor([[1.0, 0.0]])
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    assert masked_info_nce(q, q, negatives, None, 1.0).item() == pytest.approx(0.40761, abs=1e-4)
    # Masking (-1, 0) out: logits (1, 0); loss = -log(e / (e + 1)) = 0.31326.
    valid = torch.tensor([[True, False]])
    assert masked_info_nce(q, q, negatives, valid, 1.0).item() == pytest.approx(0.31326, abs=1e-4)
    # The logits themselves: the positive first, a masked slot -inf; the same with the similarity given.
    assert info_nce_logits(torch.tensor([[1.0]]), q @ negatives.t(), valid).tolist() == [[1.0, 0.0, float("-inf")]]
    assert masked_info_nce(q, q, None, valid, 1.0, similarity=q @ negatives.t()).item() == pytest.approx(0.31326,
                                                                                                        abs=1e-4)
    # reduction="none": one loss per query
    two = masked_info_nce(q.repeat(2, 1), q.repeat(2, 1), negatives, torch.tensor([[True, True], [True, False]]),
                          1.0, reduction="none")
    assert two.tolist() == pytest.approx([0.40761, 0.31326], abs=1e-4)


def test_nt_xent_by_hand():
    # Two samples, views identical and orthogonal to the other sample: z1 = z2 = I (2x2), t = 1.
    # For view 0 (row (1,0)): candidates exclude itself: (0,1)->0, (1,0)->1 [positive], (0,1)->0.
    # loss = -log(e / (e + 2)) = log(1 + 2/e) = 0.55144, the same for every view.
    z = torch.eye(2)
    assert nt_xent(z, z, 1.0).item() == pytest.approx(math.log(1 + 2 / math.e), abs=1e-5)


def test_memory_bank_momentum_update_by_hand():
    bank = MemoryBank(2, 2)
    bank.fill(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # slot 0: 0.5 (1, 0) + 0.5 (0, 1) = (0.5, 0.5) -> normalised (0.70711, 0.70711); slot 1 untouched.
    bank.momentum_update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]), momentum=0.5)
    assert bank.features.tolist()[0] == pytest.approx([2 ** -0.5, 2 ** -0.5], abs=1e-6)
    assert bank.features.tolist()[1] == [0.0, 1.0]
    bank.overwrite(torch.tensor([1]), torch.tensor([[3.0, 4.0]]))
    assert bank.features.tolist()[1] == pytest.approx([0.6, 0.8])
    assert "features" in bank.state_dict()


def test_gradient_reversal():
    x = torch.ones(3, requires_grad=True)
    grad_reverse(x, 0.5).sum().backward()
    assert x.grad.tolist() == [-0.5, -0.5, -0.5]


def test_augmentations_keep_shape_range_and_are_seeded():
    images = torch.rand(4, 3, 16, 16)
    for transform in (moco_v2_view, crop_flip_view, random_resized_crop, color_jitter, gaussian_blur):
        torch.manual_seed(0)
        first = transform(images)
        torch.manual_seed(0)
        second = transform(images)
        assert first.shape == images.shape and torch.equal(first, second)
        assert first.min() >= -1e-5 and first.max() <= 1 + 1e-5


def test_full_crop_without_flip_is_the_identity():
    images = torch.rand(2, 3, 8, 8)
    same = random_resized_crop(images, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    assert torch.allclose(same, images, atol=1e-5)
    flipped = random_resized_crop(images, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    assert torch.allclose(flipped, images.flip(-1), atol=1e-5)


def test_registry_refuses_duplicates_and_lists_names():
    with pytest.raises(ValueError, match="already registered"):
        register("cds")(type("Other", (Method,), {}))
    with pytest.raises(KeyError, match="registered methods: pretrained, cds"):
        get_method_class("nope")
    assert method_names()[:2] == ["pretrained", "cds"]


def test_hparams_resolution_order_and_types():
    cds = get_method_class("cds")
    defaults = resolve_hparams(cds, "office_home")
    assert defaults["epochs"] == 7 and defaults["lr"] == 0.003
    quick = resolve_hparams(cds, "synthetic")                         # the synthetic data's budget: quickstart
    assert quick["epochs"] == cds.budgets["quickstart"]["epochs"] == 10
    assert resolve_hparams(cds, "office_home", budget="quickstart")["epochs"] == 10
    coda = get_method_class("coda")                                   # the dataset's own value, then the budget's
    assert resolve_hparams(coda, "synthetic", budget="paper")["cluster_num"] == 18
    assert resolve_hparams(coda, "synthetic", budget="paper")["epochs"] == coda.Hparams().epochs
    overridden = resolve_hparams(cds, "synthetic", {"epochs": "3", "lr": "0.01"})   # strings from --set
    assert overridden["epochs"] == 3 and overridden["lr"] == 0.01
    with pytest.raises(HparamError, match="no hyper-parameter 'lrr'"):
        resolve_hparams(cds, "synthetic", {"lrr": 1})
    with pytest.raises(HparamError, match="expected a value of type int"):
        resolve_hparams(cds, "synthetic", {"epochs": "three"})


def test_baseline_detector_flags_far_queries_only():
    # Query domain: two tight clusters around e0 and e1, plus a tight cluster around e2 whose class has no retrieval
    # item. Retrieval items sit on e0 and e1 only. Cosine distance to the nearest retrieval item is ~0 for the first
    # two clusters (below their diameters) and ~1 for the third (above its diameter ~0) -> exactly the third flagged.
    torch.manual_seed(0)
    centres = torch.eye(8)[:3]
    query = F.normalize(centres.repeat_interleave(10, 0) + 0.05 * torch.randn(30, 8), dim=1)
    retrieval = F.normalize(centres[:2].repeat_interleave(5, 0) + 0.01 * torch.randn(10, 8), dim=1)
    private = cluster_radius_detector(query, retrieval, num_clusters=3, seed=0)
    assert private.tolist() == [False] * 20 + [True] * 10
    euclidean = cluster_radius_detector(query, retrieval, num_clusters=3, seed=0, distance="euclidean")
    assert euclidean.tolist() == [False] * 20 + [True] * 10


def test_every_registered_method_has_a_docstring_and_hparams():
    import sys
    for name, cls in REGISTRY.items():
        # The module docstring names the paper and lists every choice made where it is silent (STYLE.md).
        assert (sys.modules[cls.__module__].__doc__ or "").strip(), name
        assert "epochs" in resolve_hparams(cls, "synthetic")


def test_momentum_encoder_moves_towards_the_online_net_by_hand():
    from methods.momentum import MomentumEncoder
    online = torch.nn.Linear(1, 1, bias=False)
    online.weight.data.fill_(1.0)
    key = MomentumEncoder(online)
    assert not any(p.requires_grad for p in key.parameters())
    online.weight.data.fill_(3.0)
    key.update(online, momentum=0.75)               # 0.75 * 1 + 0.25 * 3 = 1.5
    assert key.encoder.weight.item() == pytest.approx(1.5)
    assert key(torch.tensor([[2.0]])).item() == pytest.approx(3.0)


def test_key_queue_is_fifo_and_masks_own_instance():
    from methods.momentum import KeyQueue
    queue = KeyQueue(size=3, dim=2)
    assert not queue.negatives_mask(torch.tensor([0])).any()            # empty slots are never negatives
    queue.enqueue(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([7, 8]))
    queue.enqueue(torch.tensor([[0.0, 3.0], [1.0, 1.0]]), torch.tensor([9, 7]))   # the 4th key overwrites slot 0
    assert queue.index.tolist() == [7, 8, 9] and int(queue.pointer) == 1
    assert queue.keys[0].tolist() == pytest.approx([2 ** -0.5, 2 ** -0.5])          # stored normalised
    assert queue.negatives_mask(torch.tensor([7, 5])).tolist() == [[False, True, True], [True, True, True]]


def test_momentum_encoder_keeps_its_own_batchnorm_statistics():
    from methods.momentum import MomentumEncoder
    online = torch.nn.BatchNorm1d(1)
    key = MomentumEncoder(online)
    online.running_mean.fill_(5.0)
    key.update(online, momentum=0.5)
    assert key.encoder.running_mean.item() == 0.0           # MoCo: statistics come from the key encoder's own passes


def test_staged_updates_wait_for_the_commit_and_keep_their_order():
    from methods.memory_bank import MemoryBank
    from methods.momentum import KeyQueue, MomentumEncoder

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.online = torch.nn.Linear(2, 2)
            self.bank = MemoryBank(3, 2)
            self.queue = KeyQueue(4, 2)
            self.key_encoder = MomentumEncoder(self.online)

    from methods.base import Method
    holder = Holder()
    holder.bank.fill(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    with torch.no_grad():
        holder.online.weight.add_(1.0)               # the online net moved by an optimiser step
    before = holder.bank.features.clone()
    index = torch.tensor([0])
    holder.bank.stage_overwrite(index, torch.tensor([[0.0, 3.0]]))
    holder.bank.stage_momentum_update(index, torch.tensor([[1.0, 0.0]]), 0.5)
    holder.queue.stage_enqueue(torch.tensor([[3.0, 4.0]]), index)
    holder.key_encoder.stage_update(holder.online, 0.0)
    # nothing moved yet: a loss still to be back-propagated reads the old state
    assert torch.equal(holder.bank.features, before) and (holder.queue.index < 0).all()
    assert not torch.equal(holder.key_encoder.encoder.weight, holder.online.weight)
    Method.commit_staged_updates(holder)
    # in the order staged: overwrite with (0, 1), then normalize(0.5 (0, 1) + 0.5 (1, 0))
    assert holder.bank.features[0].tolist() == pytest.approx([2 ** -0.5, 2 ** -0.5])
    assert holder.queue.keys[0].tolist() == pytest.approx([0.6, 0.8]) and holder.queue.index[0] == 0
    assert torch.equal(holder.key_encoder.encoder.weight, holder.online.weight)     # momentum 0: a copy
    assert not any(m.has_staged for m in (holder.bank, holder.queue, holder.key_encoder))
