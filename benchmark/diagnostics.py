"""Label-free diagnostics of a run's retrieval features, and the rule that calls a run collapsed (DESIGN §3.5).

A model that maps every image to (nearly) one vector — what some methods turn into on some data — ranks by ties or
by rounding noise; its table cell is then not a measurement of retrieval. Every run stores, at evaluation, beside
its metrics (names prefixed `diag_`):

- `diag_effective_rank_query`, `_retrieval`, `_both`: the effective rank of the features (Roy & Vetterli, "The
  effective rank: a measure of effective dimensionality", EUSIPCO 2007; the RankMe score of Garrido et al.,
  "RankMe: assessing the downstream performance of pretrained self-supervised representations by their rank",
  ICML 2023, arXiv 2210.02885): exp of the entropy of the normalised singular values of the [N, d] feature matrix
  (L2-normalised rows, not centred). 1 when every feature points the same way; d at most.
- `diag_mean_cosine_query`, `_retrieval`: the mean cosine similarity over all pairs of distinct images of a domain;
  `diag_mean_cosine_across`: over all (query, retrieval) pairs. Near 1 when the features have collapsed onto a
  point; near 0 for features spread over the sphere.
- `diag_tied_top_k`: the fraction of queries whose top k (k = the largest of the run's k values) holds a score
  shared with another gallery item (the metrics then count the expected value over the tie, benchmark/evaluation.py).

`is_collapsed` applies the rule the tables state in their captions (`COLLAPSE_RULE`) to those values.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PREFIX = "diag_"
# A run is called collapsed when the features of either domain span less than this effective rank ...
COLLAPSED_EFFECTIVE_RANK = 2.0
# ... or when more than this fraction of its queries have a tie in their top k.
COLLAPSED_TIED_FRACTION = 0.5
COLLAPSE_RULE = (f"a run is marked collapsed when the retrieval features of either domain have an effective rank (exp "
                 f"of the entropy of the normalised singular values) below {COLLAPSED_EFFECTIVE_RANK:g}, or when "
                 f"more than {COLLAPSED_TIED_FRACTION:.0%} of its queries have tied scores in their top k")
NAMES = tuple(PREFIX + name for name in (
    "effective_rank_query", "effective_rank_retrieval", "effective_rank_both",
    "mean_cosine_query", "mean_cosine_retrieval", "mean_cosine_across", "tied_top_k"))


def effective_rank(features: torch.Tensor) -> float:
    """exp(H(p)) with p_i = s_i / sum(s) over the singular values s of the L2-normalised rows of `features`
    ([N, d], any float dtype and device; computed in float64). 0 for a matrix without a non-zero row."""
    matrix = F.normalize(features.detach().double(), dim=1)
    singular_values = torch.linalg.svdvals(matrix)
    total = singular_values.sum()
    if float(total) == 0.0:
        return 0.0
    p = singular_values / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def mean_pairwise_cosine(a: torch.Tensor, b: torch.Tensor | None = None) -> float:
    """Mean cosine similarity over all pairs of rows (a [N, d] with itself, distinct rows only; or a with b [M, d]),
    in O((N + M) d) from the sums of the unit rows. nan when there is no pair."""
    unit_a = F.normalize(a.detach().double(), dim=1)
    sum_a = unit_a.sum(dim=0)
    if b is None:
        n = len(unit_a)
        if n < 2:
            return math.nan
        return float((sum_a @ sum_a - (unit_a * unit_a).sum()) / (n * (n - 1)))
    unit_b = F.normalize(b.detach().double(), dim=1)
    if len(unit_a) == 0 or len(unit_b) == 0:
        return math.nan
    return float(sum_a @ unit_b.sum(dim=0) / (len(unit_a) * len(unit_b)))


def feature_diagnostics(query_features: torch.Tensor, retrieval_features: torch.Tensor,
                        tied_top_k: torch.Tensor) -> dict[str, float]:
    """The `diag_*` values of a run (module docstring): query_features [Q, d], retrieval_features [G, d] (the
    retrieval features of the last epoch's model), tied_top_k bool [Q] (`PerQueryMetrics.tied_top_k`)."""
    both = torch.cat([query_features, retrieval_features.to(query_features.device)])
    values = {
        "effective_rank_query": effective_rank(query_features),
        "effective_rank_retrieval": effective_rank(retrieval_features),
        "effective_rank_both": effective_rank(both),
        "mean_cosine_query": mean_pairwise_cosine(query_features),
        "mean_cosine_retrieval": mean_pairwise_cosine(retrieval_features),
        "mean_cosine_across": mean_pairwise_cosine(query_features, retrieval_features.to(query_features.device)),
        "tied_top_k": float(tied_top_k.double().mean()) if tied_top_k.numel() else math.nan,
    }
    return {PREFIX + name: value for name, value in values.items()}


def is_collapsed(diagnostics: dict[str, float]) -> bool | None:
    """The collapse rule (`COLLAPSE_RULE`) on a run's stored diagnostics; None when the run has none (a run stored
    before diagnostics existed). Either domain counts: a gallery collapsed onto one point leaves every query to rank
    rounding noise, however varied the queries are."""
    ranks = [diagnostics.get(PREFIX + f"effective_rank_{domain}") for domain in ("query", "retrieval")]
    tied = diagnostics.get(PREFIX + "tied_top_k")
    if any(rank is None or math.isnan(rank) for rank in ranks) or tied is None:
        return None
    return min(ranks) < COLLAPSED_EFFECTIVE_RANK or (not math.isnan(tied) and tied > COLLAPSED_TIED_FRACTION)
