"""UCDIR: Feature Representation Learning for Unsupervised Cross-domain Image Retrieval (Hu & Lee, ECCV 2022).

Implemented from the official code `conghui1002/UCDIR` at commit ad7fa42 (`builder.py`, `main.py`,
`scripts/office-home.sh`, `scripts/domainnet.sh`); no code was copied. Paper: arXiv 2207.09721.

Model: MoCo v2 with per-image banks. The query encoder is the backbone (trunk + 2-layer MLP head -> 128-d,
L2-normalised); the key encoder is its EMA copy (`momentum.MomentumEncoder`, m = 0.999), both starting from the
init, head included. Each step takes two MoCo v2 views of every image of the A and B batches (`augment.moco_v2_view`);
view 1 goes through the query encoder, view 2 through the key encoder, both domains in one forward pass.

Banks (`memory_bank.MemoryBank`, one slot per image and domain, 128 x N_d): filled in `on_fit_start` with the key
encoder's features of every image (eval mode, no augmentation); at every step the batch's slots are overwritten with
the new keys *before* the losses are computed (`training_step`), as the official code does.

Clusters (`on_epoch_start`, from `warmup_epochs` on): key-encoder features of every image (eval mode, no
augmentation), per-domain faiss k-means (Euclidean, niter 20, nredo 5), K_d = `ctx.num_classes_hint[d]` (the paper's
partial setting gave UCDIR the true class count; the official scripts pass one K = the class count), centroids
L2-normalised -> assignments c_d(.) and prototypes P_d.

Loss terms (q = query of view 1, k = key of view 2, T = `temperature` 0.2), in `training_step`:
- L_inst^d (`instance_contrast`): logits [q_i . k_i, q_i . M^d_j for every slot j != i] / T, cross-entropy with
  the positive first: negatives are the whole own-domain bank except the image's own slot.
- L_cw^d (`cluster_contrast`, from `warmup_epochs`): supervised contrast over the bank with the pseudo-labels,
  l_i = -(1/|P_i|) sum_{j in P_i} log softmax_l(q_i . M^d_l / T)_j, P_i = the slots of i's cluster (its own fresh
  slot included); kept only if the key is confidently in its cluster (`confidence_filter`:
  softmax_c(k_i . mu_c / T)[c(i)] > `cw_filter_threshold` 0.2); L_cw = sum_i w_i l_i / sum_i w_i (0 if none kept).
  Weight (`cluster_weight`): 0 until `warmup_epochs` (20), linear to `cw_weight` (0.5 Office-Home, 1.0 DomainNet) at
  `cw_ramp_end_epoch` (100), constant after.
- L_ent (`prototype_self_entropy`, from `align_start_epoch` 100): H(softmax(q . P^T / tau_e)) for the queries of
  each domain against each domain's prototypes, the mean of the four; minimised. tau_e = `entropy_temperature`
  (0.01 OH, 0.1 DN), weight `entropy_weight` (1.0 OH, 0.5 DN).
- L_DoD (`distance_of_distance`, from `align_start_epoch`): for the queries Q of one domain,
  a^X_i = softmax(q_i . P_X^T / 0.01), D^X_ij = 1 - cos(a^X_i, a^X_j) (X in {A, B}),
  L = mean_i ||D^A_i,: - D^B_i,:||^2; computed for Q from A and from B and averaged. Weight `dod_weight` (0.5 OH,
  0.1 DN).
- total: [(L_inst^A + w_cw L_cw^A) + (L_inst^B + w_cw L_cw^B)] / 2 + w_e L_ent + w_d L_DoD.
Logged beside `loss`: `instance`, `cluster`, `cluster_weight`, `kept` (fraction of the batch the filter keeps),
`entropy`, `dod` (each the unweighted mean over domains); per epoch once clustering starts, `clusters_query`,
`clusters_retrieval` (k) and `empty_clusters_query`, `empty_clusters_retrieval` (clusters without a member).

Optimiser: SGD (lr 2e-4, momentum 0.9, weight decay 1e-4) on the query encoder, lr x 1/2 (1 + cos(pi e / E)) set at
the start of every epoch, 200 epochs, batch 64 per domain. Retrieval feature (`embed`): the key encoder's 128-d
L2-normalised output, as the official code evaluates. Open set: the paper's baseline detector (App. B.2) with the
cosine distance (the base class's `open_set_distance`).

Quirks of the official code, and what is done here:
- Model selection on test labels: the code evaluates after every epoch and reports the best epoch by P@1 (P@50) on
  the test labels (its `main.py`). The harness reports the last epoch; nothing here reads a label.
- Split BatchNorm + batch shuffle in the key encoder (a 1-GPU emulation of MoCo's shuffle-BN). For nets with
  BatchNorm the key batch (A and B together) is shuffled with a random permutation and forwarded in `key_bn_splits`
  (2) chunks, so each chunk normalises with its own batch statistics, as SplitBatchNorm does; the keys are then put
  back in order. The quickstart's small CNN uses GroupNorm, where a feature depends on its own image only: there the
  key batch goes through in one piece and no permutation is drawn (`MomentumEncoder.shuffled_keys`). Running
  statistics: the key encoder keeps its own, estimated from its split passes, as the official one does.
- Order of the EMA update: the code moves the key encoder at the start of each step, before the key forward; here it
  moves after the optimiser step (staged updates). The sequence of key encoders is the same except that the
  update before the very first key forward (a no-op: both encoders are equal) is not made and the last step's update
  is applied before evaluation (the code evaluates without it).
- k-means seed: the code seeds faiss with 0 (the index of the K in its list) at every epoch and for both domains;
  here the seed comes from (run seed, epoch, domain), so seeds differ as a benchmark's seeds should. faiss'
  min/max points per centroid (2 / 2000 in the code) only warn or subsample beyond sizes these datasets reach.
- DoD uses torch's `pairwise_distance`, which adds 1e-6 to every difference before the norm; here the squared norm
  is exact (the two differ by about 2e-6 x the sum of a row's differences: negligible).
- Data: the code's dataset pairs A[i] with B[i] and substitutes a random index for the smaller domain when
  i >= its size; the harness draws both domains' batches independently (the smaller one cycled) - no method reads the
  pairing. When a cycled domain repeats an image inside a batch, its slot takes the key of the later occurrence
  (a deterministic rule where a scatter with repeated indices would not be on the GPU).
- The code's cluster-wise loss multiplies the masks of several K when more than one is given; the scripts use one
  K, as here.
- The code's blur draws sigma in [0.1, 2] px at 224 px (PIL); the shared view keeps the same blur relative to the
  image side.

On a ViT trunk (docs/backbones.md): query and key encoders are the ViT with the 2-layer MLP head -> 128-d (seeded
random init: no publisher ships a projection head; MoCo v2's own head starts random too); the retrieval feature
stays the key encoder's head output, the official evaluation feature. Split BatchNorm: a ViT has LayerNorm only, so
the key batch goes through in one piece, no permutation drawn (`MomentumEncoder.shuffled_keys`), as for the
quickstart's GroupNorm CNN; the EMA moves every weight and there are no running statistics to keep. lr: 2e-4 (the
official ResNet value) at the head and the top block, x `layer_decay` (0.9) per block below, the patch embedding x
`patch_embed_lr_mult` (0.2) more (DINOv2's recipe, `BaseHparams`): small for SGD, a cautious start for a pretrained
ViT, set with `--set ucdir.lr=...`.

Office-31: the official code ships no Office-31 script; the Office-Home values (the defaults) are used.

Quickstart budget (`budgets["quickstart"]`): 10 epochs of ~15 steps of 32 + 32 images, instead of 200 epochs of ~70
steps of 64 + 64 (Office-Home). The stages keep their proportions: warm-up 1 epoch (10 %), cluster-wise ramp to epoch 5
and alignment from epoch 5 (50 %). Crops keep >= 0.5 of the 32-px side (as for UEM: a toy object fills a third of the
frame). The lr stays at the official 2e-4: the alignment terms are softmaxes at temperature 0.01, and at a raised lr
(1e-3, 3e-3) they collapsed the features within one epoch on the quickstart data (instance loss back to ~ln N, entropy
to ~ln K, no sample passing the confidence filter). The key momentum is scaled to 0.99: the banks are rewritten once per
epoch, and MoCo needs the key encoder to change little within that period; 0.999 over 1000 steps is ~14 official epochs,
0.99 over ~100 steps is ~7 quickstart epochs (0.999 would leave the retrieval feature, the key encoder, ~85 % the init
after 150 steps; 0.9 would change it within a fraction of an epoch).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .augment import moco_v2_view
from .base import DOMAIN_ROLES, BaseHparams, Batch, Method, both_domains, derive_seed, sgd_with_cosine
from .clustering import empty_clusters, faiss_kmeans
from .losses import masked_info_nce, softmax_entropy
from .momentum import MomentumEncoder
from .registry import register


@dataclass
class UCDIRHparams(BaseHparams):
    epochs: int = 200
    batch_size: int = 64              # per domain
    lr: float = 2e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    key_momentum: float = 0.999       # MoCo's m
    temperature: float = 0.2          # T: instance and cluster-wise contrast, confidence filter
    warmup_epochs: int = 20           # clustering and the cluster-wise contrast from this epoch on
    cw_ramp_end_epoch: int = 100      # the cluster-wise weight reaches cw_weight here
    cw_weight: float = 0.5            # Office-Home 0.5, DomainNet 1.0
    cw_filter_threshold: float = 0.2
    align_start_epoch: int = 100      # prototype self-entropy and distance-of-distance from this epoch on
    entropy_temperature: float = 0.01  # tau_e: Office-Home 0.01, DomainNet 0.1
    entropy_weight: float = 1.0       # Office-Home 1.0, DomainNet 0.5
    dod_temperature: float = 0.01     # fixed in the code
    dod_weight: float = 0.5           # Office-Home 0.5, DomainNet 0.1
    kmeans_niter: int = 20
    kmeans_nredo: int = 5
    min_crop_scale: float = 0.2       # MoCo v2's RandomResizedCrop lower bound
    key_bn_splits: int = 2            # split BatchNorm of the key encoder (nets with BatchNorm only)


# --- the loss terms ------------------------------------------------------------------------------------------------

def instance_contrast(query: torch.Tensor, key: torch.Tensor, bank: torch.Tensor, index: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """L_inst: the key of the other view is the positive; every bank slot but the image's own is a negative."""
    own_slot = torch.arange(len(bank), device=bank.device)[None, :] == index[:, None]
    return masked_info_nce(query, key, bank, ~own_slot, temperature)


def confidence_filter(key: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor, temperature: float,
                      threshold: float) -> torch.Tensor:
    """Bool [B]: softmax_c(k_i . mu_c / T) at the sample's own cluster c(i) is above `threshold`."""
    probability = F.softmax(key @ prototypes.t() / temperature, dim=1)
    return probability.gather(1, labels[:, None]).squeeze(1) > threshold


def cluster_contrast(query: torch.Tensor, key: torch.Tensor, bank: torch.Tensor, index: torch.Tensor,
                     assignment: torch.Tensor, prototypes: torch.Tensor, temperature: float,
                     threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_cw and the filter's keep mask: supervised contrast over the whole bank with the cluster pseudo-labels,
    averaged over the samples the confidence filter keeps (0 when it keeps none)."""
    labels = assignment[index]
    positives = (labels[:, None] == assignment[None, :]).to(query.dtype)          # [B, N], own slot included
    log_probability = F.log_softmax(query @ bank.t() / temperature, dim=1)
    per_sample = -(positives * log_probability).sum(dim=1) / positives.sum(dim=1)
    keep = confidence_filter(key, prototypes, labels, temperature, threshold)
    weights = keep.to(query.dtype)
    return (weights * per_sample).sum() / weights.sum().clamp_min(1.0), keep


def prototype_self_entropy(queries: tuple[torch.Tensor, ...], prototypes: tuple[torch.Tensor, ...],
                           temperature: float) -> torch.Tensor:
    """L_ent: mean over (query domain, prototype domain) of the batch-mean entropy of softmax(q . P^T / tau_e)."""
    return torch.stack([softmax_entropy(q @ p.t() / temperature) for q in queries for p in prototypes]).mean()


def _relation_matrix(features: torch.Tensor, prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    """D_ij = 1 - cos(a_i, a_j) with a_i = softmax(f_i . P^T / t)."""
    assignment = F.normalize(F.softmax(features @ prototypes.t() / temperature, dim=1), dim=1)
    return 1.0 - assignment @ assignment.t()


def distance_of_distance(features: torch.Tensor, prototypes_a: torch.Tensor, prototypes_b: torch.Tensor,
                         temperature: float = 0.01) -> torch.Tensor:
    """L_DoD for one batch of features: mean_i ||D^A_i - D^B_i||^2, the sample relations seen through either
    domain's prototypes (no prototype correspondence needed)."""
    difference = _relation_matrix(features, prototypes_a, temperature) - \
        _relation_matrix(features, prototypes_b, temperature)
    return (difference ** 2).sum(dim=1).mean()


def cluster_weight(epoch: int, start: int, end: int, weight: float) -> float:
    """0 until `start`, linear to `weight` at `end`, constant after (the code's cwcon ramp)."""
    if epoch <= start:
        return 0.0
    if epoch >= end:
        return weight
    return weight * (epoch - start) / (end - start)


def _last_occurrence(index: torch.Tensor) -> torch.Tensor:
    """Int64 [B]: for each position, the last position of the batch that holds the same instance index. Writing
    key[_last_occurrence(index)] at `index` gives every duplicate the latest key (the official code's sequential
    overwrite), without a boolean mask (which would make the host wait for the device)."""
    same = index[:, None] == index[None, :]
    positions = torch.arange(len(index), device=index.device)
    return torch.where(same, positions, -1).amax(dim=1)


@dataclass
class DomainClusters:
    assignment: torch.Tensor     # [N_d] int64
    prototypes: torch.Tensor     # [K_d, dim], L2-normalised centroids


@register("ucdir")
class UCDIR(Method):
    label, paper_label = "UCDIR", "UCDIR"
    Hparams = UCDIRHparams
    required_modules = ("faiss",)          # faiss k-means, as its official code clusters
    # Quickstart budget (`budgets["quickstart"]`): see "Quickstart budget" in the module docstring.
    dataset_overrides = {
        "domainnet": {"cw_weight": 1.0, "entropy_temperature": 0.1, "entropy_weight": 0.5, "dod_weight": 0.1},
    }
    budgets = {
        "quickstart": {"epochs": 10, "batch_size": 32, "warmup_epochs": 1, "cw_ramp_end_epoch": 5,
                       "align_start_epoch": 5, "key_momentum": 0.99, "min_crop_scale": 0.5},
    }

    def __init__(self, hparams: UCDIRHparams, backbone):
        super().__init__(hparams, backbone)
        if hparams.align_start_epoch < hparams.warmup_epochs:
            raise ValueError(f"ucdir: align_start_epoch ({hparams.align_start_epoch}) must not come before "
                             f"warmup_epochs ({hparams.warmup_epochs}): the alignment terms need the clusters")
        if hparams.key_bn_splits < 1:
            raise ValueError(f"ucdir: key_bn_splits must be >= 1, got {hparams.key_bn_splits}")
        self.key_encoder = MomentumEncoder(backbone)
        self.clusters: list[DomainClusters] | None = None

    # --- schedule ------------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return sgd_with_cosine(self.optimised_parameters(self.hparams.lr, self.hparams.weight_decay), self.hparams)

    # --- hooks ---------------------------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The key encoder's L2-normalised 128-d output (the official evaluation feature)."""
        return self.key_encoder(images)

    def on_fit_start(self, ctx) -> None:
        self.banks = self.filled_banks(ctx)                      # key encoder (`embed`), eval mode, no augmentation

    def on_epoch_start(self, epoch: int, ctx) -> None:
        h = self.hparams
        if epoch < h.warmup_epochs:
            self.clusters = None
            return
        self.clusters = []
        for d in range(2):
            features = ctx.embed_domain(d)                        # key encoder, eval mode, no augmentation
            k = max(1, min(int(ctx.num_classes_hint[d]), len(features)))
            centroids, assignment = faiss_kmeans(features, k, seed=derive_seed(ctx.seed, "kmeans", epoch, d),
                                                 niter=h.kmeans_niter, nredo=h.kmeans_nredo)
            self.clusters.append(DomainClusters(assignment, F.normalize(centroids, dim=1)))
            self.log(f"clusters_{DOMAIN_ROLES[d]}", k)
            self.log(f"empty_clusters_{DOMAIN_ROLES[d]}", empty_clusters(assignment, k))

    def _keys(self, views: torch.Tensor) -> torch.Tensor:
        """Key-encoder features; with BatchNorm, a shuffled batch in `key_bn_splits` chunks (split BN)."""
        return self.key_encoder.shuffled_keys(views, self.hparams.key_bn_splits)

    def training_step(self, batch_a: Batch, batch_b: Batch, step: int) -> dict[str, torch.Tensor]:
        h = self.hparams
        batches = (batch_a, batch_b)
        images, sizes = both_domains(batch_a, batch_b)
        view_query = moco_v2_view(images, min_crop_scale=h.min_crop_scale)
        view_key = moco_v2_view(images, min_crop_scale=h.min_crop_scale)
        queries = self.backbone(view_query).split(sizes)          # one forward over A and B
        with torch.no_grad():
            keys = self._keys(view_key).split(sizes)
        for batch, key, bank in zip(batches, keys, self.banks):  # overwrite before the losses (official order)
            bank.overwrite(batch.index, key[_last_occurrence(batch.index)])

        zero = torch.zeros((), device=images.device)
        instance = [instance_contrast(q, k, bank.features, b.index, h.temperature)
                    for q, k, bank, b in zip(queries, keys, self.banks, batches)]
        cluster, kept = [zero, zero], [zero, zero]
        w_cw = cluster_weight(self.epoch, h.warmup_epochs, h.cw_ramp_end_epoch, h.cw_weight)
        if self.clusters is not None:
            for d, (q, k, bank, b, c) in enumerate(zip(queries, keys, self.banks, batches, self.clusters)):
                cluster[d], keep = cluster_contrast(q, k, bank.features, b.index, c.assignment, c.prototypes,
                                                    h.temperature, h.cw_filter_threshold)
                kept[d] = keep.float().mean()
        loss = ((instance[0] + w_cw * cluster[0]) + (instance[1] + w_cw * cluster[1])) / 2
        self.key_encoder.stage_update(self.backbone, h.key_momentum)        # after the optimiser step
        entropy = dod = zero
        if self.clusters is not None and self.epoch >= h.align_start_epoch:
            prototypes = tuple(c.prototypes for c in self.clusters)
            entropy = prototype_self_entropy(queries, prototypes, h.entropy_temperature)
            dod = torch.stack([distance_of_distance(q, *prototypes, temperature=h.dod_temperature)
                               for q in queries]).mean()
            loss = loss + h.entropy_weight * entropy + h.dod_weight * dod
        return {"loss": loss, "instance": ((instance[0] + instance[1]) / 2).detach(),
                "cluster": ((cluster[0] + cluster[1]) / 2).detach(), "cluster_weight": torch.tensor(w_cw),
                "kept": ((kept[0] + kept[1]) / 2).detach(), "entropy": entropy.detach(), "dod": dod.detach()}
