"""DN2A: Dual Nearest Neighbors contrastive learning with strong Augmentation (Liu, Wang, Chen, Dai, Li, Zou, Xiong;
"Promoting Semantic Connectivity: Dual Nearest Neighbors Contrastive Learning for Unsupervised Domain
Generalization", CVPR 2023, pp. 3510-3519).

RECONSTRUCTION from the paper's abstract and UEM's App. B.2 (both listed below); no official code exists.
Neither the paper's method section nor any code could be read (no arXiv version, no official or third-party
implementation found). Everything beyond those sources is our own reconstruction, written down before coding and
called "the spec" below; no code or prose was copied from anywhere. Sources found (a search of documentation,
issue-tracker, code and web-page collections and of a GitHub file index for "DN2A", "Dual Nearest Neighbors
Contrastive Learning", "Promoting Semantic Connectivity", UDG-FAS and UDG code bases), and what each confirms:
- the abstract (https://openreview.net/forum?id=Iewi8zwGsZr , ICLR 2023 submission; the same text on
  https://www.paperswithcode.com/paper/promoting-semantic-connectivity-dual-nearest ): contrastive learning;
  strong augmentations suppress intra-domain connectivity; a dual nearest-neighbour search finds trustworthy
  cross-domain neighbours along with in-domain neighbours, used to encourage intra-class connectivity. Nothing more.
- UEM (Wang, Du, Zhu, NeurIPS 2024, https://arxiv.org/abs/2403.05690 , App. B.2): DN2A has its own nearest-neighbour
  search and uses the Euclidean distance; UEM's open-set detector for DN2A uses that distance. Classifier parts
  omitted, default settings.
- the sibling paper UDG-FAS (same first author and group, ICCV 2023; CVF abstract page
  https://openaccess.thecvf.com/content/ICCV2023/html/Liu_Towards_Unsupervised_Domain_Generalization_for_Face_Anti-Spoofing_ICCV_2023_paper.html
  and the docsaid.org note "[23.10] UDG-FAS"): nearest neighbours searched *in the same domain* serve as positives;
  cross-domain neighbours are searched after *domain-specific normalisation* (per-domain standardisation of the
  features), by L2 distance; the neighbour losses start after a warm-up. Evidence about the group's design, not
  about DN2A itself.
- DCCL (Wei et al., KDD 2025, arXiv 2510.16704, https://github.com/weitianxin/DCCL ): the same "intra-class
  connectivity" vocabulary with the same two levers (aggressive augmentation, cross-domain positives) - context only.
- DomCLP (AAAI 2025, https://github.com/JINSUBY/DomCLP ): a later UDG code base; it contains its own method only
  (no DN2A re-implementation) and uses RandAugment-type strong augmentation - context for the op pool only.
- A paper list (a GitHub markdown file found by exact-string search) repeats title, authors and DOI
  10.1109/CVPR52729.2023.00342 - nothing on the method.
None of them gives the trust rule, the loss weights, the augmentation list or the schedules. Marks below: [S] the
sibling paper's design, [R] the spec's reconstruction, [H] the spec's harness choice, [ours] our reading where even
the spec is silent.

Model (`training_step`): MoCo v2 style. Query encoder = the backbone (trunk + MLP head -> 128-d, L2-normalised); key
encoder = its EMA copy (`momentum.MomentumEncoder`, m = `key_momentum` 0.999), updated after each optimiser step.
Each image gets two views: the strong view = `augment.moco_v2_view` followed by `rand_augment` (this module: a
batched RandAugment stage, `randaug_ops` = 2 ops per image drawn from 14, magnitude `randaug_magnitude` 10 of 10)
and the MoCo-only view (`strong_views=2` puts RandAugment on both). Both views of both domains go through the
query encoder in one pass and through the key encoder in one pass.

Support sets: one FIFO queue per domain (`momentum.KeyQueue`), created in `on_fit_start` with
min(`queue_size`, N_d - B) slots (spec: K_d <= N_d - B); the anchor view's keys (the MoCo-only view) are enqueued
with their instance index after the optimiser step (staged updates).

Dual nearest neighbours (`training_step` -> `in_domain_neighbour`, `cross_domain_neighbour`), for every anchor key
k_i of domain d (the MoCo-only view's key: [ours], the cleaner of the two views):
- in-domain NN  n_in = argmin_{u in S_d} ||k_i - u||_2 over the filled slots of the own queue that do not hold a key
  of instance i (an older key of the anchor itself is not a neighbour: [ours]).
- cross-domain NN: standardise per domain with the statistics of the filled slots of each queue,
  x^ = (x - mu_d) / sqrt(sigma_d^2 + eps) per dimension (`queue_statistics`, `standardise`; eps 1e-5 [ours]), then
  n_x = the stored (unstandardised) key of argmin_{u in S_d'} ||k^_i - u^||_2, d' the other domain.
- reliability check ("dual"/"trustworthy", the spec's mutual rule; the paper's rule was not found): search back from
  the candidate u^ in S^_d together with the anchor k^_i itself; accept n_x if the back-search returns the anchor, a
  slot holding an older key of the anchor's instance [ours], or the anchor's in-domain neighbour n_in. Ties of the
  back-search go to the queue slot (the anchor is appended last) [ours]. `accept_rate` logs the fraction of anchors
  with a candidate whose candidate is accepted (per step, averaged over the epoch by the harness).

Loss terms (`training_step`; each an InfoNCE with temperature `temperature` 0.2 whose negatives are the filled slots
of *both* domains' queues, minus the slots holding keys of the query's own instance and minus the slot serving as
this term's positive [ours: the positive is not also a negative]; `nn_info_nce`):
- L_self: positive = the key of the other view (q of the strong view with k of the MoCo-only view and vice versa:
  symmetrised, the mean of the two directions);
- L_in: positive = n_in, for both query views, mean over the anchors that have one;
- L_x: positive = n_x, for both query views, mean over the accepted anchors T (0 if none) - the spec's
  (1/|T|) sum_{i in T}, so each accepted pair weighs 1/|T| against 1/B per anchor in L_self;
- L = L_self + w(e) (`in_weight` L_in + `cross_weight` L_x), w(e) = 0 for e < `warmup_epochs` (20), then
  (e - 20 + 1) / (`ramp_end_epoch` - 20) up to 1 (1 from epoch 39 on) ([S] warm-up idea, [H] numbers; the
  spec's "linear ramp to 1.0 by epoch 40"). The searches run and the terms are logged during the warm-up too.
Logged beside `loss`: `self`, `in_domain`, `cross_domain` (unweighted), `nn_weight`, `accept_rate`.
The mean over anchors pools both domains' anchors of the step.

Optimiser: SGD (lr 2e-4, momentum 0.9, weight decay 1e-4 [ours: UCDIR's, the UEM setup gives none]) on the query
encoder, cosine lr per epoch (lr (1 + cos(pi e / E)) / 2), 200 epochs [H], 32 images per domain per step (the UEM
setup's batch 64, balanced over the two domains). Hyper-parameter sources: lr, momentum, cosine schedule, batch 64
and the ResNet-50 MoCo v2 init are UEM's common setup (UEM Sec. 4, Experiment Settings); m = 0.999 and the 128-d MLP
projection are MoCo v2's; tau 0.2 is MoCo v2's (spec [H]); queue size 4096 (capped at N_d - B), warm-up 20 and ramp
to epoch 40, loss weights 1, RandAugment N = 2 / M = 10 with a FixMatch-style op pool are the spec's [H] choices;
200 epochs is the spec's [H] budget (UCDIR's and DGDIR's).

Retrieval feature (`embed`, `retrieval_feature`): the key encoder's 128-d L2-normalised embedding (default,
"key_head"), i.e. the space where DN2A searches its neighbours with the Euclidean distance: on unit vectors the
harness's cosine ranking is exactly the Euclidean ranking, so retrieval uses DN2A's own metric. "query_head" and
"trunk" (the L2-normalised pooled trunk feature, the UDG papers' linear-probe feature) are switches.
Open set: the paper's baseline detector (App. B.2) with the Euclidean distance (`open_set_distance`), as UEM says.

Our readings where the sources are silent (besides the [ours] marks above):
- base framework: MoCo-style queue InfoNCE (spec [H], to share the momentum blocks), not SimCLR/NNCLR/SimSiam;
- the NN search anchor is the key of the MoCo-only view, the found neighbours are positives for both query views;
- one neighbour per anchor and search (k = 1); neighbours are detached queue entries;
- standardisation statistics come from the current queues (the spec's "queue mean/std" option), not running means;
- the features searched are the L2-normalised 128-d keys (so in-domain Euclidean NN = cosine NN; the cross-domain
  search after standardisation is not equivalent to cosine);
- strong view: the MoCo v2 view, then RandAugment (`methods/randaugment.py`: FixMatch's op pool without cutout,
  `randaug_ops` rounds of one uniformly drawn op per image, strength M / 10 or, with `randaug_random_magnitude`,
  U(0, M/10) per image and round).
- BatchNorm backbones: the key batch is shuffled and forwarded in `key_bn_splits` chunks (MoCo's shuffle-BN on one
  GPU, `MomentumEncoder.shuffled_keys`); a GroupNorm backbone (the quickstart) forwards it in one piece. The key
  encoder keeps its own BatchNorm running statistics, as MoCo's does.
- the first step of a run has empty queues: no negatives, no neighbours; its losses are 0 (every term's softmax has
  the positive alone). Empty slots are never negatives, neighbours or part of the statistics.

On a ViT trunk (docs/backbones.md): query and key encoders are the ViT with the MLP head -> 128-d (seeded random
init: no publisher ships one); the retrieval feature stays the key encoder's head output (`retrieval_feature="trunk"`
gives the ViT's CLS token / CLIP embedding instead). Shuffle-BN: a ViT has LayerNorm only, so the key batch goes
through in one piece (`MomentumEncoder.shuffled_keys`, `key_bn_splits` unused). lr: 2e-4 at the head and the top
block, x `layer_decay` (0.9) per block below, the patch embedding x `patch_embed_lr_mult` (0.2) more (DINOv2's
recipe, `BaseHparams`).

Official code: none exists, so there are no code quirks to reproduce or correct; every departure from the paper
cannot be known and every choice is marked above.

Quickstart (`budgets["quickstart"]`): 6 epochs of ~15 steps of 32 + 32 images (the real datasets: 200 epochs of ~15-140
steps): each step forwards two views of 64 images through the query encoder (with backward) and the key encoder,
about three times a one-view method's step, so 6 epochs keep one run near the quickstart's per-run budget;
warm-up 1 epoch and ramp to epoch 2 (the spec's 10 % / 20 % of the budget, rounded up), queues 256 (capped at
N_d - 32), lr 0.003 and key momentum 0.99 (2e-4 and 0.999 leave the model and the key encoder where they started
in ~100 steps, as measured for UCDIR/DGDIR), crops >= 0.5 of the 32-px side (as for the other MoCo-family
methods). The definition is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .augment import moco_v2_view
from .base import BaseHparams, Batch, Method, both_domains, sgd_with_cosine
from .losses import masked_info_nce
from .momentum import KeyQueue, MomentumEncoder
from .randaugment import rand_augment
from .registry import register


@dataclass
class DN2AHparams(BaseHparams):
    epochs: int = 200                 # [H] (UCDIR's / DGDIR's budget)
    batch_size: int = 32              # per domain: UEM's batch 64 balanced over the two domains
    lr: float = 2e-4                  # UEM setup
    momentum: float = 0.9
    weight_decay: float = 1e-4        # [ours] UCDIR's
    key_momentum: float = 0.999       # MoCo's m
    temperature: float = 0.2          # MoCo v2's tau
    queue_size: int = 4096            # per domain, capped at N_d - batch_size in on_fit_start
    warmup_epochs: int = 20           # no NN terms before this epoch
    ramp_end_epoch: int = 40          # the NN weight reaches 1 at the epoch before this one
    in_weight: float = 1.0            # lambda_in
    cross_weight: float = 1.0         # lambda_x
    standardise_eps: float = 1e-5
    randaug_ops: int = 2              # N
    randaug_magnitude: float = 10.0   # M on a 0-10 scale
    randaug_random_magnitude: bool = False
    strong_views: int = 1             # 1: strong + MoCo-only view; 2: both views strong
    min_crop_scale: float = 0.2       # MoCo v2's RandomResizedCrop lower bound
    retrieval_feature: str = "key_head"   # "key_head", "query_head" or "trunk"
    key_bn_splits: int = 2            # shuffle-BN of the key encoder (nets with BatchNorm only)


def strong_view(images: torch.Tensor, num_ops: int = 2, magnitude: float = 10.0, random_magnitude: bool = False,
                min_crop_scale: float = 0.2) -> torch.Tensor:
    """DN2A's strong view: the MoCo v2 view, then RandAugment."""
    return rand_augment(moco_v2_view(images, min_crop_scale=min_crop_scale), num_ops, magnitude, random_magnitude)


# --- the dual nearest-neighbour search ------------------------------------------------------------------------------

def nearest_slot(anchors: torch.Tensor, candidates: torch.Tensor,
                 valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean nearest valid candidate of each anchor: (slot [B], found [B]); `valid` broadcasts to [B, K]."""
    distance = torch.cdist(anchors, candidates).masked_fill(~valid, math.inf)
    nearest, slot = distance.min(dim=1)
    return slot, torch.isfinite(nearest)


def queue_statistics(keys: torch.Tensor, filled: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and sqrt(variance + eps) of the filled rows (population variance)."""
    weights = filled.to(keys.dtype)[:, None]
    count = weights.sum().clamp_min(1.0)
    mean = (weights * keys).sum(dim=0) / count
    variance = (weights * (keys - mean) ** 2).sum(dim=0) / count
    return mean, torch.sqrt(variance + eps)


def standardise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean) / std


def in_domain_neighbour(anchor: torch.Tensor, anchor_index: torch.Tensor, keys: torch.Tensor,
                        index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """n_in: the nearest filled slot of the own domain's queue that holds no key of the anchor's instance."""
    valid = (index[None, :] >= 0) & (index[None, :] != anchor_index[:, None])
    return nearest_slot(anchor, keys, valid)


@dataclass
class CrossDomainNeighbours:
    slot: torch.Tensor        # [B] slot of the candidate in the other domain's queue
    found: torch.Tensor       # [B] the other queue had a filled slot
    accepted: torch.Tensor    # [B] found and passed the reliability check


def cross_domain_neighbour(anchor: torch.Tensor, anchor_index: torch.Tensor, own_keys: torch.Tensor,
                           own_index: torch.Tensor, other_keys: torch.Tensor, other_index: torch.Tensor,
                           in_slot: torch.Tensor, in_found: torch.Tensor, eps: float) -> CrossDomainNeighbours:
    """n_x after per-domain standardisation, and the mutual check: searching back from the candidate in the anchor's
    standardised queue plus the anchor itself must return the anchor (or an older key of its instance) or its
    in-domain neighbour."""
    own_filled, other_filled = own_index >= 0, other_index >= 0
    own_mean, own_std = queue_statistics(own_keys, own_filled, eps)
    other_mean, other_std = queue_statistics(other_keys, other_filled, eps)
    anchor_hat = standardise(anchor, own_mean, own_std)
    own_hat = standardise(own_keys, own_mean, own_std)
    other_hat = standardise(other_keys, other_mean, other_std)
    slot, found = nearest_slot(anchor_hat, other_hat, other_filled[None, :])
    candidate = other_hat[slot]
    back_distance = torch.cdist(candidate, own_hat).masked_fill(~own_filled[None, :], math.inf)
    to_anchor = (candidate - anchor_hat).norm(dim=1, keepdim=True)
    back = torch.cat([back_distance, to_anchor], dim=1).argmin(dim=1)     # ties: the queue slot (anchor last)
    size = len(own_keys)
    is_anchor = back == size
    back_slot = back.clamp(max=size - 1)
    is_own_instance = ~is_anchor & (own_index[back_slot] == anchor_index)
    is_in_neighbour = ~is_anchor & in_found & (back_slot == in_slot)
    return CrossDomainNeighbours(slot, found, found & (is_anchor | is_own_instance | is_in_neighbour))


# --- losses --------------------------------------------------------------------------------------------------------

def nn_info_nce(query: torch.Tensor, positive: torch.Tensor, negative_similarity: torch.Tensor, valid: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """Per-query InfoNCE [B] of one neighbour term: -log exp(q.p / t) / (exp(q.p / t) + sum_{j valid} exp(s_j / t)),
    `losses.masked_info_nce` without reduction (the terms average over the queries whose neighbour was found)."""
    return masked_info_nce(query, positive, None, valid, temperature, reduction="none", similarity=negative_similarity)


def masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the kept entries (0 when none is kept), without a host synchronisation."""
    weights = keep.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def neighbour_weight(epoch: int, warmup_epochs: int, ramp_end_epoch: int) -> float:
    """0 before `warmup_epochs`, then (e - warmup + 1) / (ramp_end - warmup), capped at 1."""
    if epoch < warmup_epochs:
        return 0.0
    return min(1.0, (epoch - warmup_epochs + 1) / max(1, ramp_end_epoch - warmup_epochs))


# --- the method ----------------------------------------------------------------------------------------------------

@register("dn2a")
class DN2A(Method):
    label, paper_label = "DN2A", "DN2A"
    Hparams = DN2AHparams
    open_set_distance = "euclidean"       # UEM App. B.2: DN2A's own distance
    budgets = {
        "quickstart": {"epochs": 6, "batch_size": 32, "warmup_epochs": 1, "ramp_end_epoch": 2, "queue_size": 256,
                      "lr": 0.003, "key_momentum": 0.99, "min_crop_scale": 0.5},
    }

    def __init__(self, hparams: DN2AHparams, backbone):
        super().__init__(hparams, backbone)
        self.check_choices(retrieval_feature=("key_head", "query_head", "trunk"), strong_views=(1, 2))
        if hparams.key_bn_splits < 1:
            raise ValueError(f"dn2a: key_bn_splits must be >= 1, got {hparams.key_bn_splits}")
        self.key_encoder = MomentumEncoder(backbone)
        self.queues = nn.ModuleList()

    # --- features ----------------------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        feature = self.hparams.retrieval_feature
        if feature == "key_head":
            return self.key_encoder(images)
        if feature == "query_head":
            return self.backbone(images)
        return F.normalize(self.backbone.features(images), dim=1)

    def _keys(self, views: torch.Tensor) -> torch.Tensor:
        """Key-encoder features; with BatchNorm, a shuffled batch in `key_bn_splits` chunks (shuffle-BN)."""
        return self.key_encoder.shuffled_keys(views, self.hparams.key_bn_splits)

    def _strong(self, images: torch.Tensor) -> torch.Tensor:
        h = self.hparams
        return strong_view(images, h.randaug_ops, h.randaug_magnitude, h.randaug_random_magnitude, h.min_crop_scale)

    # --- hooks ---------------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return sgd_with_cosine(self.optimised_parameters(self.hparams.lr, self.hparams.weight_decay), self.hparams)

    def on_fit_start(self, ctx) -> None:
        h = self.hparams
        self.queues = nn.ModuleList([
            KeyQueue(max(1, min(h.queue_size, len(domain) - h.batch_size)), self.backbone.embed_dim).to(ctx.device)
            for domain in ctx.domains])

    def training_step(self, batch_a: Batch, batch_b: Batch, step: int) -> dict[str, torch.Tensor]:
        h = self.hparams
        batches = (batch_a, batch_b)
        images, sizes = both_domains(batch_a, batch_b)
        n = sum(sizes)
        view_strong = self._strong(images)
        view_anchor = self._strong(images) if h.strong_views == 2 else moco_v2_view(images,
                                                                                    min_crop_scale=h.min_crop_scale)
        q_strong, q_anchor = self.backbone(torch.cat([view_strong, view_anchor])).split(n)
        with torch.no_grad():
            k_strong, k_anchor = self._keys(torch.cat([view_strong, view_anchor])).split(n)

        # Both domains' queues are the negatives: [K_A + K_B, d] with their instance indices and domains.
        negatives = torch.cat([q.keys for q in self.queues])
        slot_index = torch.cat([q.index for q in self.queues])
        slot_domain = torch.cat([torch.full((len(q),), d, device=images.device) for d, q in enumerate(self.queues)])
        offsets = [0, len(self.queues[0])]

        # Per anchor (rows of A then B): the two neighbours, as global slots of `negatives`.
        in_slot, in_found, x_slot, x_found, x_accepted, base_valid = [], [], [], [], [], []
        for b, key in zip(batches, k_anchor.split(sizes)):
            d, o = b.domain_id, 1 - b.domain_id
            own, other = self.queues[d], self.queues[o]
            slot, found = in_domain_neighbour(key, b.index, own.keys, own.index)
            cross = cross_domain_neighbour(key, b.index, own.keys, own.index, other.keys, other.index, slot, found,
                                           h.standardise_eps)
            in_slot.append(slot + offsets[d])
            in_found.append(found)
            x_slot.append(cross.slot + offsets[o])
            x_found.append(cross.found)
            x_accepted.append(cross.accepted)
            own_instance = (slot_domain[None, :] == d) & (slot_index[None, :] == b.index[:, None])
            base_valid.append((slot_index[None, :] >= 0) & ~own_instance)
        in_slot, in_found = torch.cat(in_slot), torch.cat(in_found)
        x_slot, x_found, x_accepted = torch.cat(x_slot), torch.cat(x_found), torch.cat(x_accepted)
        base_valid = torch.cat(base_valid)
        slots = torch.arange(len(negatives), device=images.device)[None, :]
        in_valid = base_valid & (slots != in_slot[:, None])
        x_valid = base_valid & (slots != x_slot[:, None])
        n_in, n_x = negatives[in_slot], negatives[x_slot]

        self_terms, in_terms, x_terms = [], [], []
        for query, other_key in ((q_strong, k_anchor), (q_anchor, k_strong)):   # symmetrised over the two views
            similarity = query @ negatives.t()
            self_terms.append(nn_info_nce(query, other_key, similarity, base_valid, h.temperature).mean())
            in_terms.append(masked_mean(nn_info_nce(query, n_in, similarity, in_valid, h.temperature), in_found))
            x_terms.append(masked_mean(nn_info_nce(query, n_x, similarity, x_valid, h.temperature), x_accepted))
        loss_self = (self_terms[0] + self_terms[1]) / 2
        loss_in = (in_terms[0] + in_terms[1]) / 2
        loss_x = (x_terms[0] + x_terms[1]) / 2
        weight = neighbour_weight(self.epoch, h.warmup_epochs, h.ramp_end_epoch)
        loss = loss_self
        if weight > 0:
            loss = loss + weight * (h.in_weight * loss_in + h.cross_weight * loss_x)

        self.key_encoder.stage_update(self.backbone, h.key_momentum)        # after the optimiser step
        for b, key in zip(batches, k_anchor.split(sizes)):
            self.queues[b.domain_id].stage_enqueue(key, b.index)
        return {"loss": loss, "self": loss_self.detach(), "in_domain": loss_in.detach(),
                "cross_domain": loss_x.detach(), "nn_weight": torch.tensor(weight),
                "accept_rate": masked_mean(x_accepted.float(), x_found).detach()}
