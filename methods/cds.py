"""CDS: Cross-Domain Self-supervised pre-training (Kim, Saito, Oh, Plummer, Sclaroff, Saenko; ICCV 2021).

The self-supervised stage of CDS (its few-shot fine-tuning stage needs labels and is not part of retrieval; paper:
arXiv 2003.08264), from the official code, github.com/VisionLearningGroup/CDS at commit 5b3644c (`CDS_pretraining/`):

- one memory bank per domain, N_d x d, filled before training with the initial model's features and updated after
  each step by m_i <- normalize(0.5 m_i + 0.5 f_i);
- in-domain instance discrimination, negatives from the *same* domain only (mixing domains would make the features
  domain-discriminative, the paper's key point):
      L_ID^d = -mean_i log exp(m^d_i . f^d_i / t) / sum_{j=1..N_d} exp(m^d_j . f^d_i / t),   L_ID = (L_ID^A + L_ID^B)/2
- cross-domain matching: entropy of each feature's similarity distribution over the *other* domain's bank,
      z_j = f^A_i . m^B_j / t  (top-`n_neighbors` z kept),  p = softmax(z),  H_i = -sum p log(p + 1e-5)
      (the code's offset inside the log),
      L_CDM = lambda (mean_i H^{A->B}_i + mean_i H^{B->A}_i)
- L = L_ID + L_CDM; SGD (lr 0.003, momentum 0.9, weight decay 5e-4, constant lr), 7 epochs, batch 32 per domain,
  weak augmentation (random crop 224/256 + horizontal flip).

Choices where this harness departs from the official code, each deliberate:
- the bank is filled with un-augmented features (the code runs the training transform for that pass: a quirk);
- both domains use the same batch size and an epoch is one pass over the larger domain (the code scales the larger
  domain's batch so both loaders have as many iterations; an incidental detail);
- both domains go through the network in one forward pass (the code makes two): BatchNorm then trains on the
  statistics of the two domains together, which its running averages — used at evaluation — estimate (single-domain
  batches made the running statistics disagree with the training-time ones; with the quickstart's GroupNorm
  backbone the two are identical);
- no mixed precision on the CPU (the harness decides precision by device);
- head: by default the init's projection head is kept (UEM re-initialised every baseline from the same self-supervised
  model); `head=linear` gives CDS's own fresh `fc -> head_dim` (512) layer.
- `augmentation=moco_v2` is an ablation switch, off by default (docs/methods.md, on the quickstart: on the synthetic
  data, CDS's weak augmentation lets instance discrimination undo the colour invariance of the SimCLR init).

On a ViT trunk (DINOv2, CLIP; docs/backbones.md): the trunk feature (DINOv2's normalised CLS token, CLIP's image
embedding) goes through CDS's own fresh `fc -> head_dim` (512) layer, `head="linear"` (a backbone override: a ViT
init ships no projection head to keep), whose normalised output is the retrieval feature and fills the banks.
LayerNorm has no batch statistics, so the one-pass forward of both domains changes nothing there. lr: 0.003 at the
head and the top block, x `layer_decay` (0.9) per block below, the patch embedding x `patch_embed_lr_mult` (0.2)
more (DINOv2's recipe, `BaseHparams`); 0.003 with SGD momentum 0.9 is inside the grid ViTs are fine-tuned on with
SGD (Dosovitskiy et al., ICLR 2021, App. B.1.1: 0.001-0.03), so the ResNet value is kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .augment import crop_flip_view, moco_v2_view
from .base import BaseHparams, Batch, Method, sgd
from .losses import bank_instance_nce
from .registry import register


@dataclass
class CDSHparams(BaseHparams):
    epochs: int = 7                  # CDS code default
    batch_size: int = 32             # 16 x bs(=2) per domain
    lr: float = 0.003
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 0.1         # `nce-t`
    bank_momentum: float = 0.5
    n_neighbors: int = 700           # top-k of the cross-domain similarity kept in the entropy
    entropy_temperature: float = 1.0  # T2, applied to the already-tempered logits
    cdm_weight: float = 1.0          # lambda
    head: str = "init"               # "init" (keep) or "linear" (CDS's fc -> head_dim)
    head_dim: int = 512
    # "crop_flip" (CDS's own) or "moco_v2" (ablation: the init's strong augmentation, crops >= min_crop_scale)
    augmentation: str = "crop_flip"
    min_crop_scale: float = 0.5


# The official code takes log(p + 1e-5) in its entropy (CDS_pretraining/custom_function/selfsup.py, commit 5b3644c),
# not the exact log: with 700 neighbours the term is about 0.007 lower per direction than the exact entropy.
ENTROPY_LOG_OFFSET = 1e-5


def cross_domain_entropy(features: torch.Tensor, other_bank: torch.Tensor, temperature: float, n_neighbors: int,
                         entropy_temperature: float = 1.0) -> torch.Tensor:
    """L_CDM, one side: the mean over the batch of -sum_j p_j log(p_j + 1e-5), p = softmax over the top-`n_neighbors`
    similarities z_j = f . m_j / t to the other domain's bank, scaled by `entropy_temperature` (T2).

    features [B, d] and other_bank [N, d] L2-normalised float; returns a scalar. Source: CDS (Kim et al., ICCV 2021,
    arXiv 2003.13003), official code VisionLearningGroup/CDS, CDS_pretraining/custom_function/selfsup.py (5b3644c),
    its log offset included."""
    logits = features @ other_bank.t() / temperature
    top = logits.topk(min(n_neighbors, logits.shape[1]), dim=1).values
    p = F.softmax(entropy_temperature * top, dim=1)
    return -(p * torch.log(p + ENTROPY_LOG_OFFSET)).sum(dim=1).mean()


@register("cds")
class CDS(Method):
    label, paper_label = "CDS", "CDS"
    Hparams = CDSHparams
    native_init = "imagenet_supervised"      # its released code: torchvision resnet50(pretrained=True)
    # Quickstart budget: 10 epochs of 15 steps on the synthetic domains (the definition is unchanged).
    budgets = {"quickstart": {"epochs": 10}}
    backbone_overrides = {"vit": {"head": "linear"}}     # no projection head comes with a ViT's weights

    def __init__(self, hparams: CDSHparams, backbone):
        super().__init__(hparams, backbone)
        self.choose_head()
        self.check_choices(augmentation=("crop_flip", "moco_v2"))

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.augmentation == "moco_v2":
            return moco_v2_view(images, min_crop_scale=self.hparams.min_crop_scale)
        return crop_flip_view(images)

    def on_fit_start(self, ctx) -> None:
        self.banks = self.filled_banks(ctx)

    def configure_optimizers(self):
        h = self.hparams
        return sgd(self.optimised_parameters(h.lr, h.weight_decay), lr=h.lr, momentum=h.momentum,
                   weight_decay=h.weight_decay)

    def training_step(self, batch_a: Batch, batch_b: Batch, step: int) -> dict[str, torch.Tensor]:
        h = self.hparams
        batches = (batch_a, batch_b)
        # One forward pass over both domains: BatchNorm then normalises with statistics of the two domains together,
        # the statistics its running averages (used at evaluation) estimate.
        features = self.backbone(torch.cat([self.augment(b.images) for b in batches])).split(
            [len(b.images) for b in batches])
        instance = [bank_instance_nce(f, bank.features, b.index, h.temperature)
                    for f, bank, b in zip(features, self.banks, batches)]
        loss_id = (instance[0] + instance[1]) / 2
        entropy_ab = cross_domain_entropy(features[0], self.banks[1].features, h.temperature, h.n_neighbors,
                                          h.entropy_temperature)
        entropy_ba = cross_domain_entropy(features[1], self.banks[0].features, h.temperature, h.n_neighbors,
                                          h.entropy_temperature)
        loss_cdm = h.cdm_weight * (entropy_ab + entropy_ba)
        for bank, b, f in zip(self.banks, batches, features):   # after the optimiser step, as the official code
            bank.stage_momentum_update(b.index, f, h.bank_momentum)
        return {"loss": loss_id + loss_cdm, "instance": loss_id.detach(), "cross_domain_entropy": loss_cdm.detach()}

