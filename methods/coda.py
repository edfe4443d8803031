"""CoDA: Correspondence-Free Domain Alignment for Unsupervised Cross-Domain Image Retrieval (Wang, Peng, Yan, Hu;
AAAI 2023; arXiv 2302.06081).

From the official code `wangxu-scu/CoDA` at commit 67735cd (Office-Home only: `train_udar_oh_coda.py`,
`shells/run_coda.sh`); the paper body was not read, so where paper and code could differ the code's behaviour is
the default.

Network: the backbone with an L2-normalised head (the retrieval feature f), and per domain d in {A, B}, R = 4
bias-free linear "cluster classifiers" W^d_r (K_r x dim, K_r = r K for r = 1..R; K = `cluster_num`).

- Memory banks: one per domain, N_d x dim, filled before training with the initial model's features and updated
  after each optimiser step by m_i <- normalize(0.95 m_i + 0.05 f_i)          (`on_fit_start`; `stage_momentum_update`)
- Classifier initialisation, once at fit start, never re-clustered (`shared_cluster_heads`): for each r, spherical
  k-means (faiss, 40 iterations) with K_r on the union of both banks gives shared centroids C_r; spherical k-means on
  each domain's bank started from C_r gives C^A_r, C^B_r; W^A_r := C^A_r, W^B_r := C^B_r. Starting both from C_r makes
  row c of W^A_r and of W^B_r the same cross-domain cluster, which is what makes the alignment term meaningful.
- In-domain self-matching supervision (ISS, `self_matching_loss`), per domain d:
      t_i = stopgrad softmax(W^d_r m_i / tau),   L_ISS^d = (1/R) sum_r mean_i CE(W^d_r f_i / T_s, t_i)
  with tau = 0.01 (sharpened bank targets, the bank entry m_i of the same image) and T_s = `student_temperature`.
- Cross-domain classifier alignment (CCA, `classifier_alignment`), for the features f of either domain's batch:
      L_CCA(f) = lambda (1/R) sum_r mean_i || W^A_r f_i - W^B_r f_i ||_1    on raw logits, lambda = 0.01
- Total (`training_step`): L = L_ISS^A + L_ISS^B + L_CCA(f^A) + L_CCA(f^B).
- Two optimisers: the backbone (with its head) by SGD lr 3e-3, momentum 0.9, weight decay 1e-5, constant; the
  cluster classifiers of both domains by SGD lr 1e-4, momentum 0.9, no weight decay. Batch 16 per domain, 20 epochs,
  crop + flip augmentation (resize 256, random crop 224, horizontal flip).
- Retrieval feature: the normalised head output, compared by Euclidean distance (`open_set_distance`).
- Open set (`detect_private`, UEM App. B.2: "CoDA's auxiliary classifiers serve as its prototypes"): each query goes
  to the argmax of the query domain's classifier W^A_r of granularity `detector_granularity` (default r = 1, K_1 = K
  clusters, the coarsest); each cluster is bounded by its largest intra-cluster Euclidean distance; a query whose
  nearest retrieval item is farther than its cluster's bound is null. The coarsest granularity because it is the one
  closest to the class count that the App. B.2 detector's own k-means uses (K ~ 1.5 C against C), and because finer
  heads split the queries into more clusters of one member, whose bound of 0 flags them whatever their neighbour.

Hyper-parameters where the official code gives none: `cluster_num` K = 100 on Office-Home
(released script, 1.54 x 65 classes). The rule used elsewhere is K ~ 1.5-1.6 x the class count, fixed per dataset in
`dataset_overrides` (never read from labels): Office-31 50 (1.61 x 31: the value another stored version of the run
script, commit 304dc94, carries in a commented-out line; the same lines give 12 for Image-CLEF's 12 classes and 100
for Adaptiope's 123, so the authors had no fixed ratio), DomainNet-7 11 (1.57 x 7), the quickstart's synthetic data
18 (1.5 x 12).

Choices where this harness departs from the official code, each deliberate:
- head: by default the init's projection head is kept (`head="init"`), as for CDS: UEM re-initialised every baseline
  from one self-supervised model (its MoCo v2 ResNet-50 with its 128-d head), and a fresh random projection would
  throw away the part of that model the retrieval features come from; `head="linear"` gives CoDA's own fresh
  `fc -> head_dim` (2048 -> 512) layer. The cluster classifiers take the head's dimension either way.
- the banks are filled with un-augmented (eval) features, as for CDS (`bank_fill="eval"`); the official code runs its
  training transform for that pass (`bank_fill="train_transform"` does the same: one crop + flip view per image).
- both domains go through the network in one forward pass (the code makes two), as for CDS: BatchNorm then trains
  on the statistics of the two domains together, which its running averages (used at evaluation) estimate; with the
  quickstart's GroupNorm backbone the two are identical.
- an epoch is one pass over the larger domain with the smaller one cycled (the harness's default); the code's epoch
  is one pass over its "source" loader.
- k-means seeds come from the run seed and r (the code fixes faiss seed 1234 for every clustering).
- the two head optimisers of the code (one per domain, identical settings) are one SGD over both domains' heads:
  SGD is per-parameter, so the updates are the same.
- no mixed precision on the CPU (the harness decides precision by device).

Quirks of the official code and what is done about them:
- best-epoch selection on test labels (it evaluates every epoch and reports the best): not done; the harness
  reports the last epoch (DESIGN §3.3). The per-class bucket indexing of its mAP code is the evaluator's concern.
- the ISS student logits carry no temperature (raw cosine-scale logits W f, in [-1, 1], against targets sharpened by
  tau = 0.01): kept as released (`student_temperature=1.0`); the paper's formula may differ (not checked), so the
  student temperature is a hyper-parameter.
- CCA on raw logits, not probabilities (`cross_domain_softmax False` in the released script): kept;
  `cca_softmax=True` compares softmax outputs instead, the code's other switch.
- one stored version of the run script (commit 304dc94) passes `--lambda_cross_domain 0.0` (CCA off), while the
  argument's default and the other version (commit 57506f5) give 0.01, the value used here (and the only
  one under which the paper's alignment term exists). `cca_weight=0` reproduces the former.
- the cluster classifiers start as unit-norm centroids but are trained without re-normalisation (as released), so
  the logits W f drift away from cosines as training goes.
- a StepLR (7 epochs, x0.1) and a poly schedule are defined but never stepped: the lr is constant, as here.
- the classifier initialisation is switchable in the code (`kmeans_all_features`, on in the released script):
  `shared_init=False` clusters each bank from random starts instead (an ablation: rows then do not correspond).

On a ViT trunk (docs/backbones.md): CoDA's own fresh `fc -> head_dim` (512) on the trunk feature (the CLS token,
CLIP's image embedding), `head="linear"` (a backbone override: a ViT init ships no projection head to keep); the
cluster classifiers take its width. The one-pass forward has no batch statistics to share under LayerNorm. lr: 3e-3
at the head and the top block, x `layer_decay` (0.9) per block below, the patch embedding x `patch_embed_lr_mult`
(0.2) more (DINOv2's recipe, `BaseHparams`; 3e-3 is inside the SGD fine-tuning grid of ViTs, Dosovitskiy et al.,
ICLR 2021, App. B.1.1); the cluster classifiers keep their 1e-4.

Logged per epoch (the run's history, not used by the method): `clusters_query`, `clusters_retrieval` (K of the
first granularity) and `empty_clusters_query`, `empty_clusters_retrieval` (clusters of that classifier to which no
bank entry of the domain is assigned by argmax).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .augment import crop_flip_view
from .base import DOMAIN_ROLES, BaseHparams, Batch, Method, derive_seed, sgd
from .clustering import empty_clusters, faiss_kmeans
from .open_set import radius_detector_from_assignment
from .registry import register


@dataclass
class CoDAHparams(BaseHparams):
    epochs: int = 20                  # `pretrain_epoch`
    batch_size: int = 16              # per domain
    lr: float = 3e-3                  # backbone (+ head)
    momentum: float = 0.9
    weight_decay: float = 1e-5
    head_lr: float = 1e-4             # cluster classifiers
    head_momentum: float = 0.9
    head_weight_decay: float = 0.0
    bank_momentum: float = 0.95       # `nce-m`
    cluster_num: int = 100            # K (Office-Home, released); K_r = r K
    granularities: int = 4            # R
    kmeans_niter: int = 40
    shared_init: bool = True          # `kmeans_all_features`
    target_temperature: float = 0.01  # tau of the bank targets
    student_temperature: float = 1.0  # 1.0 = as released (raw logits)
    cca_weight: float = 0.01          # lambda (`lambda_cross_domain`)
    cca_softmax: bool = False         # `cross_domain_softmax`
    head: str = "init"                # "init" (keep) or "linear" (CoDA's fc -> head_dim)
    head_dim: int = 512
    bank_fill: str = "eval"           # "eval" or "train_transform" (the code's)
    detector_granularity: int = 0     # index r - 1 of the query-domain classifier used by detect_private


def self_matching_loss(student_logits: torch.Tensor, bank_logits: torch.Tensor, target_temperature: float,
                       student_temperature: float = 1.0) -> torch.Tensor:
    """ISS for one classifier: soft-target cross entropy of softmax(student / T_s) against the sharpened, stopped
    prediction on the bank entries, softmax(bank / tau); batch mean."""
    targets = F.softmax(bank_logits.detach() / target_temperature, dim=1)
    return F.cross_entropy(student_logits / student_temperature, targets)


def classifier_alignment(logits_a: torch.Tensor, logits_b: torch.Tensor, softmax: bool = False) -> torch.Tensor:
    """CCA for one granularity: mean over the batch of the L1 distance between two domains' classifier outputs on
    the same features (raw logits unless `softmax`); unweighted."""
    if softmax:
        logits_a, logits_b = F.softmax(logits_a, dim=1), F.softmax(logits_b, dim=1)
    return (logits_a - logits_b).abs().sum(dim=1).mean()


def shared_cluster_heads(bank_a: torch.Tensor, bank_b: torch.Tensor, k: int, *, seed: int, niter: int = 40,
                         shared: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The two domains' classifier weights for one granularity: spherical k-means on each bank, started from the
    centroids of a spherical k-means on both banks together (`shared`), so row c of both refers to the same
    cross-domain cluster. Returns (W^A [k, d], W^B [k, d]), unit rows."""
    options = dict(seed=seed, niter=niter, spherical=True, max_points_per_centroid=10_000)
    start = faiss_kmeans(torch.cat([bank_a, bank_b]), k, **options)[0] if shared else None
    weights_a = faiss_kmeans(bank_a, k, init_centroids=start, **options)[0]
    weights_b = faiss_kmeans(bank_b, k, init_centroids=start, **options)[0]
    return weights_a, weights_b


@register("coda")
class CoDA(Method):
    label, paper_label = "CoDA", "CoDA"
    Hparams = CoDAHparams
    required_modules = ("faiss",)          # faiss k-means, as its official code clusters
    native_init = "imagenet_supervised"      # its released code: torchvision resnet50(pretrained=True)
    open_set_distance = "euclidean"
    # K per dataset (module docstring); the quickstart: K for 12 classes and a scaled budget (the definition is
    # unchanged).
    dataset_overrides = {
        "office_home": {"cluster_num": 100},
        "office31": {"cluster_num": 50},
        "domainnet": {"cluster_num": 11},
        "synthetic": {"cluster_num": 18},
    }
    budgets = {"quickstart": {"epochs": 10}}
    backbone_overrides = {"vit": {"head": "linear"}}     # no projection head comes with a ViT's weights

    def __init__(self, hparams: CoDAHparams, backbone):
        super().__init__(hparams, backbone)
        self.choose_head()
        self.check_choices(bank_fill=("eval", "train_transform"))
        if not 0 <= hparams.detector_granularity < hparams.granularities:
            raise ValueError(f"coda: detector_granularity must be in [0, {hparams.granularities}), "
                             f"got {hparams.detector_granularity}")
        dim = backbone.embed_dim
        # heads[d][r]: domain d's classifier of K_r = (r + 1) K clusters (initialised by k-means in on_fit_start).
        self.heads = nn.ModuleList(
            nn.ModuleList(nn.Linear(dim, (r + 1) * hparams.cluster_num, bias=False)
                          for r in range(hparams.granularities))
            for _ in range(2))

    def on_fit_start(self, ctx) -> None:
        h = self.hparams
        self.banks = self.filled_banks(ctx)
        for r in range(h.granularities):
            weights = shared_cluster_heads(self.banks[0].features, self.banks[1].features, (r + 1) * h.cluster_num,
                                           seed=derive_seed(ctx.seed, "kmeans", r), niter=h.kmeans_niter,
                                           shared=h.shared_init)
            with torch.no_grad():
                for domain_heads, w in zip(self.heads, weights):
                    domain_heads[r].weight.copy_(w)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, ctx) -> None:
        # Logged, not used: how many of the K clusters of the first granularity each domain's classifier still
        # assigns some bank entry to (argmax of its logits).
        for role, bank, domain_heads in zip(DOMAIN_ROLES, self.banks, self.heads):
            k = domain_heads[0].weight.shape[0]
            self.log(f"clusters_{role}", k)
            self.log(f"empty_clusters_{role}", empty_clusters(domain_heads[0](bank.features).argmax(dim=1), k))

    def configure_optimizers(self):
        h = self.hparams
        return [sgd(self.optimised_parameters(h.lr, h.weight_decay), lr=h.lr, momentum=h.momentum,
                    weight_decay=h.weight_decay),
                sgd(self.heads.parameters(), lr=h.head_lr, momentum=h.head_momentum, weight_decay=h.head_weight_decay)]

    def training_step(self, batch_a: Batch, batch_b: Batch, step: int) -> dict[str, torch.Tensor]:
        h = self.hparams
        batches = (batch_a, batch_b)
        features = self.backbone(torch.cat([crop_flip_view(b.images) for b in batches])).split(
            [len(b.images) for b in batches])
        iss = features[0].new_zeros(())
        cca = features[0].new_zeros(())
        for d, (batch, f) in enumerate(zip(batches, features)):
            bank_entries = self.banks[d].features[batch.index]
            for r in range(h.granularities):
                head = self.heads[d][r]
                iss = iss + self_matching_loss(head(f), head(bank_entries), h.target_temperature,
                                               h.student_temperature) / h.granularities
                cca = cca + h.cca_weight * classifier_alignment(self.heads[0][r](f), self.heads[1][r](f),
                                                                h.cca_softmax) / h.granularities
        for bank, b, f in zip(self.banks, batches, features):   # after the optimiser steps, as the official code
            bank.stage_momentum_update(b.index, f, h.bank_momentum)
        return {"loss": iss + cca, "iss": iss.detach(), "cca": cca.detach()}

    def cluster_assignment(self, features: torch.Tensor, domain_id: int, granularity: int) -> torch.Tensor:
        """Argmax of domain `domain_id`'s classifier of granularity index `granularity` (K_r = (index + 1) K)."""
        head = self.heads[domain_id][granularity]
        return head(features.to(head.weight)).argmax(dim=1)

    @torch.no_grad()
    def detect_private(self, query_features: torch.Tensor, retrieval_features: torch.Tensor, *,
                       num_clusters: int, seed: int) -> torch.Tensor:
        """App. B.2 with CoDA's query-domain classifier as the prototypes (module docstring); `num_clusters` (the
        class hint) and `seed` are not used: the clusters are the classifier's K_r rows."""
        granularity = self.hparams.detector_granularity
        assignment = self.cluster_assignment(query_features, 0, granularity)
        return radius_detector_from_assignment(query_features, retrieval_features, assignment,
                                               num_clusters=self.heads[0][granularity].out_features,
                                               distance=self.open_set_distance)
