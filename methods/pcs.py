"""PCS: Prototypical Cross-domain Self-supervised Learning for Few-shot Unsupervised Domain Adaptation (Yue, Zheng,
Zhang, Gao, Darrell, Keutzer, Sangiovanni-Vincentelli; CVPR 2021).

The self-supervised part of PCS (arXiv 2103.16765), from the official code `zhengzangw/PCS-FUDA` at commit 1b82dd0
(`pcs/`, `config/`; no code was copied). PCS's classifier, its adaptive prototype weights (APCU), the
mutual-information terms (MIM) and the few-shot cross entropy read labels and are left out (UEM: "compulsory
customization"); what remains is the paper's in-domain prototypical contrast and cross-domain instance-to-prototype
self-supervision, the two terms its released configs train (`proto-*`, `I2C-cross`).

Network: the backbone with its L2-normalised head output f (the retrieval feature). Domains: A = the query domain
(id 0), B = the retrieval domain (id 1).

- Memory banks (`on_fit_start`, staged updates): one per domain, N_d x dim (`memory_bank.MemoryBank`), filled
  before training with the initial model's features and updated after each optimiser step with that step's features,
  m_i <- normalize(0.5 m_i + 0.5 f_i) (`loss_params.m` 0.5).
- Clustering (`on_epoch_start`, every epoch, as the code's first iteration of each epoch): per domain d, spherical
  faiss k-means (`clustering.faiss_kmeans(spherical=True)`, niter 40, at least 1 and at most 10,000 points per
  centroid) on the bank for every k in the code's list [K_d, 2 K_d] x `n_kmeans` (15 as released: R = 30
  clusterings per domain), K_d = `ctx.num_classes_hint[d]` (the class count of domain d: UEM's partial setting gave
  PCS the true count).
  Each clustering r gives unit centroids mu^r_c, the assignment c^r(i) of every bank entry, and the concentration
  (`cluster_concentration`)
      phi^r_c = sum_{i in c} ||m_i - mu^r_c||_2 / (n_c log(n_c + 10)),
  set to 0.05 for a cluster of one member and clamped from below at 0.05.
- In-domain prototypical contrast (`prototype_nce`, `training_step`), for each domain's batch:
      L_PC^d = (1/R) sum_r mean_i -log [ exp(f_i . mu^r_{c(i)} / phi^r_{c(i)}) / sum_c exp(f_i . mu^r_c / phi^r_c) ]
  with c(i) the cluster of the image's bank entry (ProtoNCE with per-cluster temperature, without PCL's rescaling).
- Cross-domain instance-prototype self-supervision (`cross_domain_prototype_entropy`, `training_step`): entropy of
  each feature's softmax over the *other* domain's centroids, tau = 0.1 (`temp`),
      L_CS^d = (1/R) sum_r mean_i H(softmax_c(f_i . mu^{r,d'}_c / tau)),   minimised.
- Total: L = w_A L_PC^A + w_B L_PC^B + w_CS (L_CS^A + L_CS^B). Released weights: Office-31 (`proto-each` 1,
  `I2C-cross` 1), Office-Home (`proto-src` 1, `proto-tgt` 0.5, `I2C-cross` 1); other datasets (DomainNet, the
  quickstart) have no released config and take 1 / 1 / 1. Source/target map to query/retrieval: the code's
  source -> target order is the order of the benchmark's pair names (its config `officehome_Ar-Cl` trains source Art,
  target Clipart; UEM's pair Ar->Cl queries Art and retrieves Clipart), so w_A = `proto_weight_query` takes
  `proto-src`, w_B = `proto_weight_retrieval` takes `proto-tgt`.
- Optimiser (`configure_optimizers`): one SGD, Nesterov, momentum 0.9, weight decay 5e-4 (0 on normalisation
  parameters); lr 0.01 for the head, 0.1 x 0.01 = 0.001 for the trunk (`conv_lr_ratio`); every group's lr decays per
  optimiser step, lr_it = lr (1 + 1e-4 it)^-0.75 (`lr_decay_factor`, a per-step scheduler the runner steps after
  every optimiser step and checkpoints, so a resumed run continues the schedule).
- Augmentation: one crop + flip view per image and step (`augment.crop_flip_view`: the code's resize 256, random crop
  224, horizontal flip). Batch 64 per domain.
- Retrieval feature (`embed`): the normalised head output. Open set: the paper's baseline detector (App. B.2) with
  the cosine distance.

Budget: the code trains up to 500 epochs and stops early on *labelled target accuracy* (patience 4), which a
label-free benchmark cannot do; the harness reports the last epoch of a fixed budget (DESIGN §3.3). Default 20
epochs on every real dataset (the code's early stopping trains at least 5 epochs; 20 is CoDA's budget, between CDS's
7 and the UCDIR family's 200; a user sets another with `--set pcs.epochs=...`). An epoch is one pass over the larger
domain (about 70 steps on Office-Home at batch 64), except on Office-31, whose released configs fix 100 steps per
epoch (`steps_per_epoch_override`).

Choices where this harness departs from the official code, each deliberate:
- one optimiser step per iteration on the summed loss of both domains, both domains in one forward pass; the code
  makes two steps per iteration (forward, loss, backward, step and bank update on the source batch, then the same on
  the target batch). The lr schedule counts the code's optimiser steps: each harness step advances `it` by
  `lr_decay_steps_per_iteration` (2), so the lr at a given iteration is the code's. With BatchNorm the one-pass
  forward trains on statistics of both domains together (as for CDS); the quickstart's GroupNorm makes it moot.
  Measured on the quickstart (3 pairs x 3 seeds, a throw-away script with the code's two-step loop): Avg mAP@All
  26.4 with two steps against 26.0 with one, well inside the seed spread (std ~4.6).
- the banks are filled with un-augmented (eval) features, as for CDS and CoDA (`bank_fill="eval"`); the code runs
  its training transform for that pass (`bank_fill="train_transform"`: one crop + flip view per image, eval mode).
- head: by default the init's projection head is kept (`head="init"`), as for CDS: UEM re-initialised every
  baseline from one self-supervised model, whose head the retrieval features come from. The kept head is trained
  with the head lr (0.01): the code assigns lrs by position (its `fc`, the layer from the trunk to the embedding,
  gets `learning_rate`, every other layer `conv_lr_ratio` x that), and the head is that layer here.
  `head="linear"` gives PCS's own fresh fc -> `head_dim` (512), Xavier-normal weights and zero bias as the code
  initialises it.
- k-means seeds come from (run seed, epoch, domain, clustering index); the code seeds faiss with
  1234 + r (epoch + iteration + 1), so its first clustering of every epoch (r = 0) always has seed 1234.
- an epoch is one pass over the larger domain (the code: one pass + 1 step); Office-31 keeps the released 100 steps.
- weight decay 0 on every normalisation layer's parameters, found by module type; the code selects them by the name
  "bn", which misses a torchvision ResNet's downsample BatchNorms (`downsample.1`): they get weight decay there.
- no mixed precision on the CPU (the harness decides precision by device).

Quirks of the official code and what is done about them:
- an empty cluster (no bank entry assigned to a centroid after the last k-means iteration) gets phi = -1, a negative
  temperature: its term exp(-f . mu) stays in every ProtoNCE denominator, largest for the features farthest from
  that centroid. Default (`empty_cluster="exclude"`): an empty cluster takes no part in the ProtoNCE softmax (it has
  no member, so it is never a positive, and without members it has no concentration); `empty_cluster="code"` keeps
  phi = -1 as released. The cross-domain entropy has no phi and uses every centroid, empty or not, as the code does.
- early stopping and model selection on labelled target accuracy: not done (the fixed budget above).
- the loss module skips its terms at an epoch equal to the term's start epoch (`epoch <= start`); the code's epochs
  count from 1 and start at 0, so nothing is skipped there, and nothing is here.

On a ViT trunk (docs/backbones.md): PCS's own fresh fc -> `head_dim` (512) on the trunk feature (the CLS token,
CLIP's image embedding), Xavier-normal, `head="linear"` (a backbone override: a ViT init ships no projection head to
keep); its normalised output is the retrieval feature. Optimiser: the head at lr 0.01 (weight decay 5e-4, as on a
CNN), the trunk at 0.1 x 0.01 at the top block, x `layer_decay` (0.9) per block below and the
patch embedding x `patch_embed_lr_mult` (0.2) more (DINOv2's recipe, `BaseHparams`), no weight decay on the ViT's
1-d weights (biases, LayerNorm, LayerScale), CLS token and position embeddings — the counterpart of the code's
normalisation-layer rule. The one-pass forward has no batch statistics to share under LayerNorm.

Logged per epoch (the run's history): `clusters_query`, `clusters_retrieval` (K_d of the list [K_d, 2 K_d]) and
`empty_clusters_query`, `empty_clusters_retrieval` (clusters without a bank entry, summed over the epoch's R
clusterings of the domain).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .augment import crop_flip_view
from .base import DOMAIN_ROLES, BaseHparams, Batch, Method, Optimization, derive_seed, sgd, vit_parameter_groups
from .clustering import empty_clusters, faiss_kmeans
from .losses import softmax_entropy
from .registry import register

# The code's list of cluster counts is [K, 2K] repeated `n_k` times (`k_list = k * n_k`).
GRANULARITIES = (1, 2)
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


@dataclass
class PCSHparams(BaseHparams):
    epochs: int = 20                       # fixed budget (module docstring); the code stops early on target labels
    batch_size: int = 64                   # per domain
    steps_per_epoch_override: int = 0      # 0: one pass over the larger domain; Office-31's configs: 100
    lr: float = 0.01                       # `learning_rate`: the head (fc)
    trunk_lr_ratio: float = 0.1            # `conv_lr_ratio`: the trunk (convolutions and normalisation layers)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4             # 0 on normalisation parameters
    lr_decay_gamma: float = 1e-4           # lr (1 + gamma it)^-power, per optimiser step
    lr_decay_power: float = 0.75
    lr_decay_steps_per_iteration: int = 2  # the code's optimiser steps per iteration (source, then target)
    temperature: float = 0.1               # `temp`: tau of the cross-domain entropy
    bank_momentum: float = 0.5             # `loss_params.m`
    n_kmeans: int = 15                     # `n_k`: repetitions of the list [K, 2K]
    kmeans_niter: int = 40
    phi_alpha: float = 10.0                # phi = sum ||m - mu|| / (n log(n + alpha))
    phi_floor: float = 0.05
    empty_cluster: str = "exclude"         # "exclude" (no part in ProtoNCE) or "code" (phi = -1, as released)
    proto_weight_query: float = 1.0        # `proto-each` / `proto-src`
    proto_weight_retrieval: float = 1.0    # `proto-each` / `proto-tgt`
    i2c_weight: float = 1.0                # `I2C-cross`
    head: str = "init"                     # "init" (keep) or "linear" (PCS's fresh fc -> head_dim)
    head_dim: int = 512
    bank_fill: str = "eval"                # "eval" or "train_transform" (the code's)


def cluster_concentration(bank: torch.Tensor, centroids: torch.Tensor, assignment: torch.Tensor, *,
                          alpha: float = 10.0, floor: float = 0.05, empty_value: float = -1.0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """phi_c = sum_{i in c} ||m_i - mu_c|| / (n_c log(n_c + alpha)); a cluster of one member and any phi below
    `floor` get `floor`; an empty cluster gets `empty_value` (the code's -1). Returns (phi [k], member counts [k])."""
    k = len(centroids)
    bank, centroids = bank.float(), centroids.float()
    distances = (bank - centroids[assignment]).norm(dim=1)
    sums = torch.zeros(k, device=bank.device).index_add_(0, assignment, distances)
    counts = torch.bincount(assignment, minlength=k).to(bank)
    phi = (sums / (counts * torch.log(counts + alpha))).clamp_min(floor)
    phi = torch.where(counts == 1, torch.full_like(phi, floor), phi)
    phi = torch.where(counts == 0, torch.full_like(phi, empty_value), phi)
    return phi, counts


def prototype_nce(features: torch.Tensor, centroids: torch.Tensor, phi: torch.Tensor, positive: torch.Tensor,
                  include: torch.Tensor | None = None) -> torch.Tensor:
    """ProtoNCE with a temperature per cluster: -log exp(f . mu_pos / phi_pos) / sum_c exp(f . mu_c / phi_c), batch
    mean. `include` (bool [k]) leaves the clusters marked False out of the denominator."""
    logits = features @ centroids.t() / phi
    if include is not None:
        logits = logits.masked_fill(~include, float("-inf"))
    return F.cross_entropy(logits, positive)


def cross_domain_prototype_entropy(features: torch.Tensor, other_centroids: torch.Tensor,
                                   temperature: float) -> torch.Tensor:
    """Mean entropy of softmax(f . mu / tau) over the other domain's centroids (L_CS for one clustering)."""
    return softmax_entropy(features @ other_centroids.t() / temperature)


def lr_decay_factor(iteration: float, gamma: float = 1e-4, power: float = 0.75) -> float:
    """(1 + gamma it)^-power, the code's per-step inverse decay (`lr_scheduler_invLR`)."""
    return (1.0 + gamma * iteration) ** -power


def cluster_counts(k: int, n_kmeans: int, size: int) -> list[int]:
    """The code's list [k, 2k] x n_kmeans (in that interleaved order), each clipped to the number of points."""
    return [min(m * k, size) for _ in range(n_kmeans) for m in GRANULARITIES]


@dataclass
class Clustering:
    """One k-means of one domain's bank: unit centroids [k, d], the bank's assignment [N], phi [k], and the clusters
    that take part in the ProtoNCE denominator [k]."""
    centroids: torch.Tensor
    assignment: torch.Tensor
    phi: torch.Tensor
    include: torch.Tensor | None


@register("pcs")
class PCS(Method):
    label, paper_label = "PCS", "PCS"
    Hparams = PCSHparams
    required_modules = ("faiss",)          # faiss k-means, as its official code clusters
    native_init = "imagenet_supervised"      # its released code: torchvision resnet50(pretrained=True)
    # Released per-dataset values (module docstring); the quickstart: a scaled budget and fewer k-means repetitions
    # (the definition is unchanged).
    dataset_overrides = {
        "office31": {"steps_per_epoch_override": 100},
        "office_home": {"proto_weight_query": 1.0, "proto_weight_retrieval": 0.5, "i2c_weight": 1.0},
    }
    # Quickstart: 10 epochs (as CDS and CoDA there) of ~15 steps at batch 32 per domain (about 1 s of CPU per epoch
    # on the synthetic data), 3 repetitions of [K, 2K] (6 clusterings per domain and epoch instead of 30).
    budgets = {"quickstart": {"epochs": 10, "batch_size": 32, "n_kmeans": 3}}
    backbone_overrides = {"vit": {"head": "linear"}}     # no projection head comes with a ViT's weights

    def __init__(self, hparams: PCSHparams, backbone):
        super().__init__(hparams, backbone)
        self.choose_head()
        if hparams.head == "linear":
            nn.init.xavier_normal_(backbone.head.weight)     # the code's `weights_init` on its fresh fc
            nn.init.zeros_(backbone.head.bias)
        self.check_choices(empty_cluster=("exclude", "code"), bank_fill=("eval", "train_transform"))
        if hparams.n_kmeans < 1:
            raise ValueError(f"pcs: n_kmeans must be at least 1, got {hparams.n_kmeans}")
        self.clusterings: list[list[Clustering]] = []

    def steps_per_epoch(self, size_a: int, size_b: int) -> int:
        if self.hparams.steps_per_epoch_override > 0:
            return self.hparams.steps_per_epoch_override
        return super().steps_per_epoch(size_a, size_b)

    # --- optimiser and its per-step schedule -----------------------------------------------------------------------
    def configure_optimizers(self):
        h = self.hparams
        groups = []
        parts = ((self.backbone.trunk, h.lr * h.trunk_lr_ratio), (self.backbone.head, h.lr))
        if self.backbone.family == "vit":       # the trunk by layer, from its lr (methods.base.vit_parameter_groups)
            groups = vit_parameter_groups(self.backbone.trunk, h.lr * h.trunk_lr_ratio, h.weight_decay,
                                          h.layer_decay, h.patch_embed_lr_mult)
            parts = parts[1:]
        for part, lr in parts:
            norm = {id(p) for m in part.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
            decayed = [p for p in part.parameters() if id(p) not in norm]
            undecayed = [p for p in part.parameters() if id(p) in norm]
            for params, weight_decay in ((decayed, h.weight_decay), (undecayed, 0.0)):
                if params:
                    groups.append({"params": params, "lr": lr, "weight_decay": weight_decay})
        optimizer = sgd(groups, lr=h.lr, momentum=h.momentum, nesterov=h.nesterov, weight_decay=h.weight_decay)
        # harness step s (0-based) runs at lr x factor(s x the code's optimiser steps per harness step)
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_decay_factor(
            step * h.lr_decay_steps_per_iteration, h.lr_decay_gamma, h.lr_decay_power))
        return Optimization([optimizer], step_schedulers=[decay])

    # --- banks and clusters ----------------------------------------------------------------------------------------
    def on_fit_start(self, ctx) -> None:
        self.banks = self.filled_banks(ctx)

    @torch.no_grad()
    def cluster_bank(self, bank: torch.Tensor, k: int, seed: int) -> list[Clustering]:
        """Spherical k-means of one bank for every count of the code's list, with each cluster's concentration."""
        h = self.hparams
        result = []
        for r, count in enumerate(cluster_counts(k, h.n_kmeans, len(bank))):
            centroids, assignment = faiss_kmeans(bank, count, seed=derive_seed(seed, r), niter=h.kmeans_niter,
                                                 spherical=True, max_points_per_centroid=10_000)
            centroids = F.normalize(centroids.to(bank), dim=1)
            phi, counts = cluster_concentration(bank, centroids, assignment, alpha=h.phi_alpha, floor=h.phi_floor)
            include = counts > 0 if h.empty_cluster == "exclude" else None
            result.append(Clustering(centroids, assignment, phi.to(bank), include))
        return result

    def on_epoch_start(self, epoch: int, ctx) -> None:
        self.clusterings = [self.cluster_bank(bank.features, ctx.num_classes_hint[d], derive_seed(ctx.seed, epoch, d))
                            for d, bank in enumerate(self.banks)]
        for role, hint, clusterings in zip(DOMAIN_ROLES, ctx.num_classes_hint, self.clusterings):
            self.log(f"clusters_{role}", hint)             # K of [K, 2K]; the empty ones summed over the R clusterings
            self.log(f"empty_clusters_{role}",
                     sum(empty_clusters(c.assignment, len(c.centroids)) for c in clusterings))

    # --- losses ----------------------------------------------------------------------------------------------------
    def training_step(self, batch_a: Batch, batch_b: Batch, step: int) -> dict[str, torch.Tensor]:
        h = self.hparams
        batches = (batch_a, batch_b)
        features = self.backbone(torch.cat([crop_flip_view(b.images) for b in batches])).split(
            [len(b.images) for b in batches])
        proto, cross = [], []
        for d, (batch, f) in enumerate(zip(batches, features)):
            own, other = self.clusterings[d], self.clusterings[1 - d]
            proto.append(sum(prototype_nce(f, c.centroids, c.phi, c.assignment[batch.index], c.include)
                             for c in own) / len(own))
            cross.append(sum(cross_domain_prototype_entropy(f, c.centroids, h.temperature) for c in other)
                         / len(other))
        proto_a = h.proto_weight_query * proto[0]
        proto_b = h.proto_weight_retrieval * proto[1]
        i2c = h.i2c_weight * (cross[0] + cross[1])
        for bank, b, f in zip(self.banks, batches, features):   # after the optimiser step, as the official code
            bank.stage_momentum_update(b.index, f, h.bank_momentum)
        return {"loss": proto_a + proto_b + i2c, "proto_query": proto_a.detach(),
                "proto_retrieval": proto_b.detach(), "i2c_cross": i2c.detach()}

