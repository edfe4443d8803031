"""UEM: Semantic Feature Learning for Universal Unsupervised Cross-domain Retrieval (Wang, Du, Zhu; NeurIPS 2024).

Reconstructed from the paper (arXiv:2403.05690; NeurIPS 2024 camera-ready, Sec. 3 method, Sec. 4 setup, App. B.1
open set); no official code exists (the paper's checklist says the code is not released).
Two stages over one backbone f (L2-normalised embeddings), equations numbered as in the paper:

Stage 1, intra-domain semantic-enhanced learning (IDSE), epochs 0..E-1, for each domain d in {A, B}:
- memory bank M^d, filled by the initial model, m_i <- normalize(beta m_i + (1 - beta) f(x_i))          (Eq. 5)
- L_INCE: instance contrast of f(x_i) against its own bank entry, negatives from the same domain           (Eq. 6)
- prototypes: k-means on each bank for every K of [2, ceil(2 sqrt N)], K by the cosine silhouette (A4)
- unified prototypes: the other domain's prototypes translated by the bank-mean difference (Eq. 8), paired with
  the Hungarian algorithm (scipy), a pair merged (averaged) if closer than the closest two prototypes inside either
  domain (Eq. 9); P^{A'} = A's unpaired + translated B's unpaired + merged averages, P^{B'} symmetric
- L_PNCE: prototype contrast over P^{d'}, the positive being the prototype that replaced the instance's own
  cluster (merged average if its cluster merged)                                                          (Eq. 7)
- alpha = 1 / (1 + exp(0.5 E - e))                                                                        (Eq. 10)
- L_SEL = mean_i sum_c softmax_c(f_i . p_c / tau) ||f_i - p_c||, over P^{d'}                              (Eq. 11)
- L_IDSE = sum_d (L_INCE^d + alpha L_PNCE^d) + alpha sum_d L_SEL^d                                         (Eq. 12)

Stage 2, cross-domain semantic-matched learning (CDSM), epochs E..E+E2-1:
- f' = a frozen copy of f at the end of stage 1
- L_DAL: a 2-layer domain classifier g on f, trained through gradient reversal (binary cross-entropy)      (Eq. 13)
- L_SPR^d: (1/B^2) sum_ij [(cos f_i f_j - cos f'_i f'_j)^2 + (||f_i - f_j|| - ||f'_i - f'_j||)^2]        (Eq. 14)
- L_SN2M^A with delta(u, v) = (1 - cos(u, v)) ||u - v||: the anchor's nearest own prototype p_c (Eq. 15), its
  nearest retrieval-domain instance x^{A,B} (Eq. 16), that instance's nearest prototype in P^{B'}, and p~_c, the
  anchor's prototype translated into B and merge-checked (an element of P^{B'}); if both are the same unified
  prototype the neighbour is a second positive, else the prototype alone; negatives: all of P^{B'} and every
  retrieval-domain feature                                                                                (Eq. 17)
- L_CDSM = L_DAL + L_SPR^A + L_SPR^B + L_SN2M^A + L_SN2M^B                                                (Eq. 18)
Each stage-2 epoch re-extracts both domains' features (no augmentation) and rebuilds prototypes and merges from them.

Open set (`detect_private`, App. B.1, `open_set_detector_b1`): k-means on both domains' final features, translate,
pair, merge; for every merged pair the largest cross-domain delta between their members bounds it; a query is null
if its nearest own prototype is unmerged, or if its nearest retrieval item is farther than its pair's bound.

Logged per epoch (the run's history): `clusters_query`, `clusters_retrieval` (each domain's K; absent before the
first clustering), `merged_pairs`, `alpha`, and in stage 2 `sn2m_trust` (the fraction of anchors whose
switch trusts the cross-domain neighbour, Eq. 17).

Choices where the paper is silent or ambiguous, each the best reading unless a switch says otherwise:
- A1/A3: a per-instance memory bank (as written, not a key encoder); 128-d L2-normalised features; bank entries
  re-normalised after each update; raw k-means centres for Euclidean terms (Eq. 8, 9, 11, 14, delta) and unit-norm
  centres inside softmax logits (Eq. 7, 11's weights, 17).
- A2: L_INCE negatives are the whole bank of the domain (`ince_negatives="bank"`); "batch" uses the batch's own
  bank entries (Eq. 6's j = 1..B).
- A4: the paper clusters each bank by k-means with K "estimated with the Elbow method" (its ref. [34], Liu & Deng,
  IEEE TFS 2020, whose text we could not obtain; a later paper that compares against it reads it as the elbow of
  the inertia curve judged by eye) and gives no rule and no K range. Ours, at the start of every stage-1 epoch
  once alpha >= `alpha_floor` (1e-3; before that alpha L_PNCE is numerically zero), seeded from the run seed,
  epoch and domain: k-means for every K in [`k_min`, ceil(2 sqrt N)] (`k_max` > 0 caps it; a rule of the bank's
  size N, never of a class count: 133 for 4,400 images, 439 for DomainNet's smallest 345-class domain) by one
  bisecting chain (`clustering.kmeans_path`), and K the largest mean silhouette with the cosine distance
  (`k_rule="silhouette"`, exact in O(N K d), `cluster_count.cosine_silhouette`). On 69 cells of separable but
  noisy classes (64-2048 dimensions, 5-65 classes, equal and unequal sizes, noise up to where a nearest-class-mean
  classifier still reaches 0.99, a translated and re-normalised retrieval domain; `python -m
  benchmark.kestimators`, docs/cluster_count.md) it gets both domains' K exactly in 60 cells (mean |K - true K|
  0.2), where the chord elbow on the same path gets 35 (1.8), Davies-Bouldin 51 (3.0), the gap statistic 20 of 29
  (2.1), Kneedle 35, Calinski-Harabasz 33, the jump method 19; and K = 345 / 172 on a DomainNet-sized cell (31,000
  points) where the elbow is off by 178. What UEM ran before (`k_rule="elbow"` keeps its rule: the K farthest
  below the chord of the normalised inertia curve, there over K in [2, 130] and on a chain that added one
  k-means++ point per K) got 13 of the 69 (mean error 10.2): that chain left noisy classes merged (A4's path
  above cuts clusters instead), and on real features (handwritten against printed digits) it found 17-27 clusters
  of 10 classes and merged nothing. The estimate costs less than the one before: 1.1 s against 1.3 s for a
  4,400 x 128 bank on one CPU thread (`python -m benchmark.perf elbow`).
- A5: an instance's positive prototype is the entry of P^{d'} that replaced its own cluster.
- A6: the merge thresholds use distinct pairs inside a set; with fewer than 2 prototypes in a set nothing merges.
- A7: stage 2 refreshes features (eval mode, no augmentation), prototypes and merges at every epoch; the
  retrieval-domain negatives of Eq. 17 are those stored features (detached).
- A8: L_DAL through gradient reversal (coefficient 1), g = Linear(d, 256) - ReLU - Linear(256, 1), same optimiser.
- A13: separate cosine schedules from lr to 0 over stage 1 and from `stage2_lr` (= lr unless set, as in the paper)
  to 0 over stage 2; one SGD optimiser throughout.
- A14: an epoch is one pass over the larger domain, the smaller one cycled (the harness's paired sampler).
- A16: the softmax weights of L_SEL are not detached; alpha multiplies from epoch 0 as Eq. 12 says.
- A18: every term is a batch mean (`loss_scaling="mean"`); "sum" multiplies L_INCE, L_PNCE and L_DAL by the batch
  size, the literal reading of Eq. 6, 7, 13.
- Augmentation (not in the paper): the MoCo v2 view of the UCDIR family, one view per instance and step.
- On a ViT trunk (docs/backbones.md): f is the ViT's feature (DINOv2's CLS token, CLIP's image embedding) through
  the MLP head -> 128-d (seeded random init: no publisher ships one), so banks, prototypes and retrieval stay 128-d;
  f' freezes the whole ViT; no batch statistics under LayerNorm. lr: 2e-4 at the head, the domain classifier and
  the top block, x `layer_decay` (0.9) per block below, the patch embedding x `patch_embed_lr_mult` (0.2) more
  (DINOv2's recipe, `BaseHparams`), in both stages.

Ablations (Table 4), registered as variants: `uem_no_pm` (no prototype merging: own-domain prototypes only in
stage 1; in stage 2 the translated prototype is matched to its nearest retrieval-domain prototype instead of
merged), `uem_no_sel`, `uem_no_spda` (L_DAL without L_SPR), `uem_no_sn2m` (the cross-domain nearest neighbour by
cosine similarity always taken as the positive, UCDIR-style, instead of the switchable match).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .augment import moco_v2_view
from .base import BaseHparams, Batch, Method, cosine_factor, derive_seed, sgd
from .cluster_count import K_RULES, k_range_for, kmeans_with_k_rule
from .grl import grad_reverse
from .losses import bank_instance_nce
from .registry import register


@dataclass
class UEMHparams(BaseHparams):
    epochs: int = 150                 # derived: stage1_epochs + stage2_epochs
    batch_size: int = 64              # per domain
    stage1_epochs: int = 100          # E: 100 on Office-31 / Office-Home, 200 on DomainNet
    stage2_epochs: int = 50
    lr: float = 2e-4
    stage2_lr: float = 0.0            # derived: 0 means `lr` (the paper: one lr for both stages)
    momentum: float = 0.9
    weight_decay: float = 1e-4        # not in the paper: UCDIR's default (conghui1002/UCDIR ad7fa42, main.py --wd)
    temperature: float = 0.07         # tau, every contrastive term
    bank_momentum: float = 0.99       # beta (Eq. 5)
    k_rule: str = "silhouette"        # A4: how K is chosen (cluster_count.K_RULES); "elbow": the rule before issue 23
    k_min: int = 2
    k_max: int = 0                    # A4: 0 = ceil(2 sqrt N) of each bank (cluster_count.k_range_for); > 0 caps it
    alpha_floor: float = 1e-3
    ince_negatives: str = "bank"      # A2: "bank" or "batch"
    loss_scaling: str = "mean"        # A18: "mean" or "sum"
    classifier_hidden: int = 256
    min_crop_scale: float = 0.2       # MoCo v2's
    # Ablation switches (Table 4)
    prototype_merging: bool = True
    use_sel: bool = True
    use_spr: bool = True
    match: str = "sn2m"               # "sn2m" or "nearest_neighbour"


def progressive_weight(epoch: int, stage1_epochs: int) -> float:
    """alpha = 1 / (1 + exp(0.5 E - e)) (Eq. 10)."""
    return 1.0 / (1.0 + math.exp(0.5 * stage1_epochs - epoch))


def product_distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """delta(u, v) = (1 - cos(u, v)) * ||u - v||, all pairs: [len(u), len(v)]."""
    cosine = F.normalize(u, dim=1) @ F.normalize(v, dim=1).t()
    return (1.0 - cosine).clamp_min(0) * torch.cdist(u, v)


def translate(prototypes: torch.Tensor, from_mean: torch.Tensor, to_mean: torch.Tensor) -> torch.Tensor:
    """Move prototypes of one domain into another by the difference of the banks' means (Eq. 8)."""
    return prototypes + (to_mean - from_mean)


def _min_pairwise_distance(prototypes: torch.Tensor) -> float:
    if len(prototypes) < 2:
        return -math.inf                     # A6: nothing can merge
    distances = torch.cdist(prototypes, prototypes)
    distances.fill_diagonal_(math.inf)
    return float(distances.min())


@dataclass
class UnifiedPrototypes:
    """The merged prototype sets of both domains and where each domain's clusters went.

    set_a = P^{A'} = [A's unmerged; translated B's unmerged; merged averages] (raw centres, A's space), set_b likewise
    in B's space; `a_in_a[c]` is the row of set_a that replaced A's cluster c, `b_in_a[c']` the row of set_a holding
    B's cluster c' (translated or merged), and symmetrically for set_b."""
    set_a: torch.Tensor
    set_b: torch.Tensor
    a_in_a: torch.Tensor
    b_in_a: torch.Tensor
    b_in_b: torch.Tensor
    a_in_b: torch.Tensor
    merged_pairs: list[tuple[int, int]]
    merged_a: torch.Tensor                  # bool [K_A]: A's cluster merged


def hungarian_pairs(prototypes_a: torch.Tensor, translated_b: torch.Tensor) -> list[tuple[int, int]]:
    """Pair each A prototype with a translated B prototype, minimising the total Euclidean distance."""
    cost = torch.cdist(prototypes_a.double(), translated_b.double()).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols)]


def merge_prototypes(prototypes_a: torch.Tensor, prototypes_b: torch.Tensor, mean_a: torch.Tensor,
                     mean_b: torch.Tensor, merging: bool = True) -> UnifiedPrototypes:
    """Eq. 8 translation, Hungarian pairing, Eq. 9 merge test, and the unified sets P^{A'} and P^{B'}.

    The pairing is solved once: the cost ||p^A - (p^B + mA - mB)|| equals ||(p^A + mB - mA) - p^B||, so the
    pairs seen from B are the same."""
    translated_b = translate(prototypes_b, mean_b, mean_a)
    translated_a = translate(prototypes_a, mean_a, mean_b)
    threshold = min(_min_pairwise_distance(prototypes_a), _min_pairwise_distance(prototypes_b))
    merged = []
    if merging:
        for a, b in hungarian_pairs(prototypes_a, translated_b):
            if float(torch.dist(prototypes_a[a], translated_b[b])) < threshold:       # Eq. 9
                merged.append((a, b))
    merged_a = {a for a, _ in merged}
    merged_b = {b for _, b in merged}
    only_a = [c for c in range(len(prototypes_a)) if c not in merged_a]
    only_b = [c for c in range(len(prototypes_b)) if c not in merged_b]

    def unified(own, other_translated, own_only, other_only, pair_own_first):
        rows = [own[c] for c in own_only] + [other_translated[c] for c in other_only]
        rows += [(own[o] + other_translated[t]) / 2 for o, t in pair_own_first]
        own_index = torch.empty(len(own), dtype=torch.long)
        other_index = torch.empty(len(other_translated), dtype=torch.long)
        own_index[own_only] = torch.arange(len(own_only))
        other_index[other_only] = torch.arange(len(own_only), len(own_only) + len(other_only))
        for k, (o, t) in enumerate(pair_own_first):
            own_index[o] = other_index[t] = len(own_only) + len(other_only) + k
        return torch.stack(rows), own_index.to(own.device), other_index.to(own.device)

    set_a, a_in_a, b_in_a = unified(prototypes_a, translated_b, only_a, only_b, merged)
    set_b, b_in_b, a_in_b = unified(prototypes_b, translated_a, only_b, only_a, [(b, a) for a, b in merged])
    merged_mask = torch.zeros(len(prototypes_a), dtype=torch.bool, device=prototypes_a.device)
    merged_mask[list(merged_a)] = True
    return UnifiedPrototypes(set_a, set_b, a_in_a, b_in_a, b_in_b, a_in_b, merged, merged_mask)


def prototype_nce(features: torch.Tensor, prototypes: torch.Tensor, positive: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """L_PNCE (Eq. 7), batch mean: -log softmax over the unit-norm prototypes at the positive prototype."""
    return F.cross_entropy(features @ F.normalize(prototypes, dim=1).t() / temperature, positive)


def semantic_enhanced_loss(features: torch.Tensor, prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_SEL (Eq. 11): softmax(f . p / tau)-weighted Euclidean distances to every prototype, batch mean."""
    weights = F.softmax(features @ F.normalize(prototypes, dim=1).t() / temperature, dim=1)
    return (weights * torch.cdist(features, prototypes)).sum(dim=1).mean()


def semantic_preserving_regulariser(features: torch.Tensor, frozen_features: torch.Tensor) -> torch.Tensor:
    """L_SPR (Eq. 14): squared differences of all pairwise cosines and Euclidean distances, current vs frozen."""
    cosine = F.normalize(features, dim=1) @ F.normalize(features, dim=1).t()
    frozen_cosine = F.normalize(frozen_features, dim=1) @ F.normalize(frozen_features, dim=1).t()
    # cdist's gradient is NaN at zero distance (the diagonal); the Gram form is safe there.
    distance = _pairwise_euclidean(features)
    frozen_distance = _pairwise_euclidean(frozen_features)
    return ((cosine - frozen_cosine) ** 2 + (distance - frozen_distance) ** 2).mean()


def _pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    squared = (x * x).sum(dim=1)
    return (squared[:, None] + squared[None, :] - 2 * x @ x.t()).clamp_min(1e-12).sqrt()


def switchable_nn_match(features: torch.Tensor, own_prototypes: torch.Tensor, unified: UnifiedPrototypes,
                        retrieval_features: torch.Tensor, retrieval_prototypes: torch.Tensor,
                        temperature: float, anchor_is_a: bool = True, merging: bool = True,
                        return_trust: bool = False):
    """L_SN2M (Eq. 15-17) for anchors of one domain against the other ("retrieval") domain.

    own_prototypes: the anchor domain's raw k-means centres; retrieval_prototypes: the other domain's;
    unified: the merge of the two (anchor = A if `anchor_is_a`). With `return_trust`, also the switch's decision
    per anchor (bool [B]: the neighbour is a second positive)."""
    target_set = unified.set_b if anchor_is_a else unified.set_a
    own_in_target = unified.a_in_b if anchor_is_a else unified.b_in_a
    other_in_target = unified.b_in_b if anchor_is_a else unified.a_in_a
    with torch.no_grad():
        nearest_own = product_distance(features, own_prototypes).argmin(dim=1)                      # Eq. 15
        neighbour = product_distance(features, retrieval_features).argmin(dim=1)                   # Eq. 16
        neighbour_prototype = product_distance(retrieval_features[neighbour], target_set).argmin(dim=1)
        if merging:
            translated_own = own_in_target[nearest_own]        # p~: translated, or merged if its pair merged
        else:
            # No merging: the translated prototype stands for the retrieval-domain prototype nearest to it.
            nearest_other = product_distance(target_set[own_in_target[nearest_own]], retrieval_prototypes)
            translated_own = other_in_target[nearest_other.argmin(dim=1)]
        trusted = neighbour_prototype == translated_own                                          # the switch
    prototype_logits = features @ F.normalize(target_set, dim=1).t() / temperature
    instance_logits = features @ retrieval_features.t() / temperature
    positive = prototype_logits.gather(1, translated_own[:, None])
    neighbour_logit = instance_logits.gather(1, neighbour[:, None])
    positive = torch.logsumexp(torch.cat([positive, neighbour_logit.masked_fill(~trusted[:, None], -math.inf)],
                                         dim=1), dim=1)
    denominator = torch.logsumexp(torch.cat([prototype_logits, instance_logits], dim=1), dim=1)
    loss = (denominator - positive).mean()                                                        # Eq. 17
    return (loss, trusted) if return_trust else loss


def nearest_neighbour_match(features: torch.Tensor, retrieval_features: torch.Tensor,
                            temperature: float) -> torch.Tensor:
    """Ablation of SN2M: the cross-domain nearest neighbour (cosine) is always the positive, every retrieval-domain
    feature a negative (UCDIR-style search)."""
    logits = features @ retrieval_features.t() / temperature
    return F.cross_entropy(logits, logits.detach().argmax(dim=1))


def merged_pair_bounds(query_features, retrieval_features, query_assignment, retrieval_assignment,
                       merged_pairs) -> dict[int, float]:
    """App. B.1, Eq. 25: for each merged pair, the largest delta between a query-side and a retrieval-side member."""
    bounds = {}
    for a, b in merged_pairs:
        members_a = query_features[query_assignment == a]
        members_b = retrieval_features[retrieval_assignment == b]
        bounds[a] = float(product_distance(members_a, members_b).max()) if len(members_a) and len(members_b) \
            else -math.inf
    return bounds


class DomainClassifier(nn.Sequential):
    """g_omega: two fully connected layers, one logit (domain A)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))


@register("uem")
class UEM(Method):
    label, paper_label = "UEM (Ours)", "UEM"
    Hparams = UEMHparams
    # Quickstart budget: 8 + 4 epochs of 15 steps (the paper runs ~7000 stage-1 steps on Office-Home), so the
    # stage-1 lr is raised to keep lr x steps of the same order (at 2e-4, 120 steps leave the model where it
    # started); stage 2, a fine-tuning stage held to the frozen copy, keeps the paper's 2e-4 (at 0.003 its first
    # 15 steps cost 12 mAP points, docs/methods.md); batch 32, crops >= 0.5 of the 32-px side.
    dataset_overrides = {"domainnet": {"stage1_epochs": 200}}
    budgets = {
        "quickstart": {"stage1_epochs": 8, "stage2_epochs": 4, "batch_size": 32, "min_crop_scale": 0.5,
                       "lr": 0.003, "stage2_lr": 2e-4},
    }

    @classmethod
    def derive_hparams(cls, values: dict) -> dict:
        return {**values, "epochs": values["stage1_epochs"] + values["stage2_epochs"],
                "stage2_lr": values["stage2_lr"] or values["lr"]}

    def __init__(self, hparams: UEMHparams, backbone):
        super().__init__(hparams, backbone)
        self.check_choices(ince_negatives=("bank", "batch"), loss_scaling=("mean", "sum"),
                           match=("sn2m", "nearest_neighbour"), k_rule=tuple(K_RULES))
        self.domain_classifier = DomainClassifier(backbone.embed_dim, hparams.classifier_hidden)
        self.frozen = copy.deepcopy(backbone).requires_grad_(False)        # f', filled at the stage switch
        self.prototypes = None     # stage 1: per domain (raw centres, assignment); stage 2: features too
        self.unified = None
        self.alpha = 0.0

    # --- schedule ------------------------------------------------------------------------------------------------
    def in_stage2(self, epoch: int) -> bool:
        return epoch >= self.hparams.stage1_epochs

    def configure_optimizers(self):
        h = self.hparams
        parameters = self.optimised_parameters(h.lr, h.weight_decay, self.domain_classifier)
        optimizer = sgd(parameters, lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)

        def cosine_per_stage(epoch: int) -> float:              # A13, as a factor of `lr`
            if epoch < h.stage1_epochs:
                return cosine_factor(epoch, h.stage1_epochs)
            return h.stage2_lr / h.lr * cosine_factor(epoch - h.stage1_epochs, h.stage2_epochs)
        return [optimizer], [torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_per_stage)]

    def _scale(self, loss: torch.Tensor, batch_size: int) -> torch.Tensor:
        return loss * batch_size if self.hparams.loss_scaling == "sum" else loss

    # --- hooks ---------------------------------------------------------------------------------------------------
    def on_fit_start(self, ctx) -> None:
        self.banks = self.filled_banks(ctx)

    def on_epoch_start(self, epoch: int, ctx) -> None:
        h = self.hparams
        if not self.in_stage2(epoch):
            self.alpha = progressive_weight(epoch, h.stage1_epochs)
            self.log("alpha", self.alpha)
            if self.alpha >= h.alpha_floor:
                self._build_prototypes([bank.features for bank in self.banks], ctx.seed, epoch)
            else:
                self.prototypes = self.unified = None
            return
        self.alpha = 1.0
        self.log("alpha", self.alpha)
        if epoch == h.stage1_epochs:                                   # the stage switch: freeze f'
            self.frozen.load_state_dict(self.backbone.state_dict())
        features = [ctx.embed_domain(d) for d in (0, 1)]              # A7: refreshed every stage-2 epoch
        self._build_prototypes(features, ctx.seed, epoch)
        self.retrieval_features = features

    def _build_prototypes(self, features: list[torch.Tensor], run_seed: int, epoch: int) -> None:
        h = self.hparams
        self.prototypes = [kmeans_with_k_rule(f, k_range_for(len(f), h.k_min, h.k_max), rule=h.k_rule,
                                              seed=derive_seed(run_seed, "kmeans", epoch, d))[:2]
                           for d, f in enumerate(features)]
        self.unified = merge_prototypes(self.prototypes[0][0], self.prototypes[1][0], features[0].mean(dim=0),
                                        features[1].mean(dim=0), merging=h.prototype_merging)
        self.log("clusters_query", len(self.prototypes[0][0]))
        self.log("clusters_retrieval", len(self.prototypes[1][0]))
        self.log("merged_pairs", len(self.unified.merged_pairs))

    def training_step(self, batch_a: Batch, batch_b: Batch, step: int) -> dict[str, torch.Tensor]:
        batches = (batch_a, batch_b)
        views = torch.cat([moco_v2_view(b.images, min_crop_scale=self.hparams.min_crop_scale) for b in batches])
        features = self.backbone(views).split([len(b.images) for b in batches])
        if self.in_stage2(self.epoch):
            return self._stage2_losses(batches, views, features)
        return self._stage1_losses(batches, features)

    def _stage1_losses(self, batches, features) -> dict[str, torch.Tensor]:
        h = self.hparams
        terms = {"ince": 0.0, "pnce": 0.0, "sel": 0.0}
        for d, (batch, f) in enumerate(zip(batches, features)):
            bank = self.banks[d].features
            if h.ince_negatives == "bank":                                                     # Eq. 6, A2
                ince = bank_instance_nce(f, bank, batch.index, h.temperature)
            else:                                                   # the batch's own bank slots only
                ince = bank_instance_nce(f, bank[batch.index], torch.arange(len(f), device=f.device),
                                         h.temperature)
            terms["ince"] = terms["ince"] + self._scale(ince, len(f))
            if self.unified is not None:
                own_set, own_in_set = ((self.unified.set_a, self.unified.a_in_a) if d == 0
                                       else (self.unified.set_b, self.unified.b_in_b))
                if not h.prototype_merging:                      # ablation: own-domain prototypes only
                    own_set, own_in_set = self.prototypes[d][0], torch.arange(len(self.prototypes[d][0]),
                                                                             device=f.device)
                positive = own_in_set[self.prototypes[d][1][batch.index]]                        # A5
                terms["pnce"] = terms["pnce"] + self._scale(prototype_nce(f, own_set, positive, h.temperature),
                                                            len(f))                             # Eq. 7
                if h.use_sel:
                    terms["sel"] = terms["sel"] + semantic_enhanced_loss(f, own_set, h.temperature)  # Eq. 11
        loss = terms["ince"] + self.alpha * terms["pnce"] + self.alpha * terms["sel"]            # Eq. 12
        for bank, b, f in zip(self.banks, batches, features):   # Eq. 5, after the optimiser step
            bank.stage_momentum_update(b.index, f, h.bank_momentum)
        return {"loss": loss, **{k: torch.as_tensor(v).detach() for k, v in terms.items()}}

    def _stage2_losses(self, batches, views, features) -> dict[str, torch.Tensor]:
        h = self.hparams
        f_a, f_b = features
        both = torch.cat(features)
        domain_labels = torch.cat([torch.ones(len(f_a)), torch.zeros(len(f_b))]).to(both.device)
        logits = self.domain_classifier(grad_reverse(both)).squeeze(1)
        dal = self._scale(F.binary_cross_entropy_with_logits(logits, domain_labels), len(both))      # Eq. 13
        spr = torch.zeros((), device=both.device)
        if h.use_spr:
            with torch.no_grad():
                frozen = self.frozen(views).split([len(f) for f in features])
            spr = sum(semantic_preserving_regulariser(f, g) for f, g in zip(features, frozen))         # Eq. 14
        match = torch.zeros((), device=both.device)
        trusted = []
        for d, f in enumerate(features):
            other = 1 - d
            if h.match == "nearest_neighbour":
                match = match + nearest_neighbour_match(f, self.retrieval_features[other], h.temperature)
            else:
                loss, trust = switchable_nn_match(
                    f, self.prototypes[d][0], self.unified, self.retrieval_features[other],
                    self.prototypes[other][0], h.temperature, anchor_is_a=(d == 0),
                    merging=h.prototype_merging, return_trust=True)                                     # Eq. 17
                match, trusted = match + loss, trusted + [trust]
        terms = {"loss": dal + spr + match, "dal": dal.detach(), "spr": spr.detach(), "sn2m": match.detach()}  # Eq. 18
        if trusted:
            terms["sn2m_trust"] = torch.cat(trusted).float().mean()
        return terms

    # --- open set (App. B.1) ------------------------------------------------------------------------------------
    def detect_private(self, query_features: torch.Tensor, retrieval_features: torch.Tensor, *,
                       num_clusters: int, seed: int) -> torch.Tensor:
        """UEM's detector; `num_clusters` (the class hint) is not used: K comes from `k_rule`, as in training.
        It always merges (the w/o-PM ablation removes merging from training, not from this evaluation step)."""
        h = self.hparams
        return open_set_detector_b1(query_features, retrieval_features, seed=seed, k_rule=h.k_rule, k_min=h.k_min,
                                    k_max=h.k_max).private


@dataclass
class DetectionB1:
    """What UEM's detector decided: `private` bool [Q] (True = null), each domain's clusters (the elbow's K and the
    assignment of every image) and the merged (query cluster, retrieval cluster) pairs."""
    private: torch.Tensor
    query_assignment: torch.Tensor
    retrieval_assignment: torch.Tensor
    merged_pairs: list[tuple[int, int]]

    @property
    def clusters_query(self) -> int:
        return int(self.query_assignment.max()) + 1

    @property
    def clusters_retrieval(self) -> int:
        return int(self.retrieval_assignment.max()) + 1


def open_set_detector_b1(query_features: torch.Tensor, retrieval_features: torch.Tensor, *, seed: int,
                         k_rule: str = "silhouette", k_min: int = 2, k_max: int = 0) -> DetectionB1:
    """App. B.1: k-means on each domain's features (query [Q, d], retrieval [G, d]) with K chosen by `k_rule` over
    `k_range_for(N, k_min, k_max)`, then `detection_from_clusters`. Nothing here depends on the order in which
    either domain is stored (the k-means puts its points in a canonical order)."""
    query_clusters = kmeans_with_k_rule(query_features, k_range_for(len(query_features), k_min, k_max),
                                        rule=k_rule, seed=derive_seed(seed, "query"))[:2]
    retrieval_clusters = kmeans_with_k_rule(retrieval_features, k_range_for(len(retrieval_features), k_min, k_max),
                                            rule=k_rule, seed=derive_seed(seed, "retrieval"))[:2]
    return detection_from_clusters(query_features, retrieval_features, query_clusters, retrieval_clusters)


def detection_from_clusters(query_features: torch.Tensor, retrieval_features: torch.Tensor, query_clusters,
                            retrieval_clusters) -> DetectionB1:
    """App. B.1 given each domain's clusters ((centroids [K, d], assignment [N]) per domain): Eq. 8 translation,
    Hungarian pairing, Eq. 9 merge, Eq. 25 bounds, then `private_by_merged_bounds`."""
    (query_prototypes, query_assignment), (retrieval_prototypes, retrieval_assignment) = (query_clusters,
                                                                                          retrieval_clusters)
    unified = merge_prototypes(query_prototypes, retrieval_prototypes, query_features.mean(dim=0),
                               retrieval_features.mean(dim=0))
    bounds = merged_pair_bounds(query_features, retrieval_features, query_assignment, retrieval_assignment,
                                unified.merged_pairs)
    private = private_by_merged_bounds(query_features, retrieval_features, query_prototypes, bounds)
    return DetectionB1(private, query_assignment, retrieval_assignment, unified.merged_pairs)


def private_by_merged_bounds(query_features, retrieval_features, query_prototypes, bounds: dict[int, float]):
    """A query is private if its nearest own prototype (delta) is unmerged, or if its nearest retrieval item is
    farther (delta, Eq. 27) than the bound of its merged pair (Eq. 25-26)."""
    nearest_prototype = product_distance(query_features, query_prototypes).argmin(dim=1)
    bound = torch.full((len(query_prototypes),), -math.inf, device=query_features.device)
    for cluster, value in bounds.items():
        bound[cluster] = value
    nearest_item = torch.cat([product_distance(query_features[i:i + 1024], retrieval_features).min(dim=1).values
                              for i in range(0, len(query_features), 1024)])
    return nearest_item > bound[nearest_prototype]


def _variant(name: str, label: str, paper_label: str, **switches):
    """A registered ablation of UEM, labelled as the rows of the paper's Table 4 (`paper_label` as its CSV spells it)."""
    hparams_cls = dataclass(type(f"{name}_Hparams", (UEMHparams,), {
        "__annotations__": {k: type(v) for k, v in switches.items()}, **switches}))
    cls = type(name, (UEM,), {"Hparams": hparams_cls, "variant_of": "uem", "label": label, "paper_label": paper_label,
                              "__doc__": f"UEM ablation ({', '.join(f'{k}={v}' for k, v in switches.items())})."})
    return register(name)(cls)


UEMNoPrototypeMerging = _variant("uem_no_pm", "w/o PM", "w/o P.M.", prototype_merging=False)
UEMNoSEL = _variant("uem_no_sel", "w/o SEL", "w/o SEL", use_sel=False)
UEMNoSPDA = _variant("uem_no_spda", "w/o SPDA", "w/o SPDA", use_spr=False)
UEMNoSN2M = _variant("uem_no_sn2m", "w/o SN²M", "w/o SN2M", match="nearest_neighbour")
