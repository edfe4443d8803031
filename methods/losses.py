"""Contrastive and entropy losses shared by several methods. Inputs are L2-normalised features; logits are dot
products divided by a temperature. Each returns the batch mean."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bank_instance_nce(features: torch.Tensor, bank: torch.Tensor, index: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Non-parametric instance discrimination against a per-image bank (InstDisc, CDS's L_ID, UEM's L_INCE):
    -log exp(f_i . m_i / t) / sum_j exp(f_i . m_j / t), j over every slot of the bank (the own slot is the positive)."""
    logits = features @ bank.t() / temperature
    return F.cross_entropy(logits, index)


def info_nce_logits(positive_logit: torch.Tensor, negative_logits: torch.Tensor,
                    valid: torch.Tensor | None) -> torch.Tensor:
    """Logits [B, 1 + K] of InfoNCE (van den Oord et al., arXiv:1807.03748; MoCo, He et al., CVPR 2020,
    arXiv:1911.05722): column 0 the positive's, column 1 + j the j-th negative's where `valid[i, j]`, -inf elsewhere.

    positive_logit: float [B, 1]; negative_logits: float [B, K]; valid: bool [B, K] or None (every slot). Scaled or
    not: the caller divides by the temperature before or after. A row with no valid slot keeps the positive only."""
    negatives = negative_logits if valid is None else negative_logits.masked_fill(~valid, -math.inf)
    return torch.cat([positive_logit, negatives], dim=1)


def masked_info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None,
                    valid: torch.Tensor | None, temperature: float, reduction: str = "mean", *,
                    similarity: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE with a per-query set of negatives: -log exp(q_i . p_i / t) / (exp(q_i . p_i / t) +
    sum_{j valid} exp(q_i . n_j / t)), the cross-entropy of `info_nce_logits` / t with target 0. The one InfoNCE of
    the harness: UCDIR's L_inst (own bank slot left out), DGDIR's queue terms (own-instance keys left out), DN2A's
    neighbour terms; DARL's per-domain likelihoods use its logits.

    query, positive: float [B, d], L2-normalised; negatives: float [K, d] (a queue, a bank), or None with
    `similarity` [B, K] = query @ negatives.T already computed (several terms sharing it); valid: bool [B, K] or None.
    Returns the batch mean, or [B] with `reduction="none"`."""
    positive_logit = (query * positive).sum(dim=1, keepdim=True)
    if similarity is None:
        similarity = query @ negatives.t()
    logits = info_nce_logits(positive_logit, similarity, valid) / temperature
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device),
                           reduction=reduction)


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
