"""Contrastive and entropy losses shared by several methods. Inputs are L2-normalised features; logits are dot
products divided by a temperature. Each returns the batch mean."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bank_instance_nce(features: torch.Tensor, bank: torch.Tensor, index: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Non-parametric instance discrimination against a per-image bank (InstDisc, CDS's L_ID, UEM's L_INCE):
    -log exp(f_i . m_i / t) / sum_j exp(f_i . m_j / t), j over every slot of the bank (the own slot is the positive)."""
    logits = features @ bank.t() / temperature
    return F.cross_entropy(logits, index)


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """MoCo-style InfoNCE: one positive key per query ([B, d]), shared negatives ([K, d])."""
    positive_logits = (query * positive).sum(dim=1, keepdim=True)
    logits = torch.cat([positive_logits, query @ negatives.t()], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each of the 2B views has its other view as positive and the other 2B - 2 as negatives."""
    z = torch.cat([z1, z2])
    logits = z @ z.t() / temperature
    logits.fill_diagonal_(float("-inf"))
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of H(softmax(logits)) = -sum_j p_j log p_j."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()
