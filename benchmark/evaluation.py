"""Retrieval metrics for cross-domain image retrieval (DESIGN.md section 3.5).

Queries come from one domain, the gallery ("retrieval set") from the other. Everything here is pure torch
(numpy is accepted at the edges) and knows nothing about methods or datasets.

* ``retrieval_metrics``  -> map_all, map_all_coda, p_at_{k}, n_queries, n_valid_queries
* ``open_set_metrics``   -> shared-class retrieval metrics and private-query ("null") detection metrics
* ``per_query_metrics``  -> the per-query terms the two above average (for checks and analysis)
* ``ranked_topk``        -> gallery indices of the top k per query, ties by gallery index (a utility)
* ``sample_queries``, ``retrieval_sample`` -> a fixed sample of queries and their top k, judged (for figures)

Ranking
-------
Features are L2-normalised here (whatever the caller did), so the score of gallery item ``j`` for query ``q`` is
the cosine similarity ``s(q, j) = <f_q / |f_q|, g_j / |g_j|>`` (a zero feature vector stays zero and scores 0
against everything). Each query ranks the **whole** gallery by descending score. Scores are computed once per
*distinct* gallery vector (the gallery is deduplicated, in a canonical order, before the matrix product), so
identical gallery features always get bitwise equal scores and every score is the same whatever the gallery's
storage order. Scores are computed for ``chunk_size`` queries at a time on ``device``: memory per chunk is
O(chunk_size x G), and there is never a Python loop over queries.

Ties
----
Items with equal scores form a **tied group**; the model does not order them, so no metric may depend on the
order in which they happen to be stored. (Galleries are stored class by class: breaking ties by gallery index
ranks the lowest class ids first, and a collapsed model — every image mapped to one vector — would be rewarded
for it.) Every ranked quantity is the expected value over all orderings within each tied group, the field's
standard (McSherry & Najork, "Computing information retrieval performance measures efficiently in the presence of
tied scores", ECIR 2008). For a tied group of ``t`` items, ``r`` of them relevant, with ``c`` items and ``R_b``
relevant items ranked above it, the position ``p = c + j`` (``j = 1..t``) holds a relevant item with probability
``r / t`` and the expected number of hits in the top ``p`` is ``R_b + j r / t``. Tie-free rankings are the case
``t = 1`` of every formula below, which then reduce to the usual definitions.

Per-query quantities
--------------------
For query ``q`` with label ``y_q``: ``rel_q(p) = 1`` if the gallery item at rank ``p`` (1-based) has label
``y_q``; ``R_q = sum_p rel_q(p)`` is the number of relevant gallery items. A query is **valid** when ``R_q >= 1``;
invalid queries (their class is absent from the gallery) are excluded from every average below and counted by
``n_valid_queries``.

* Plain (non-interpolated) average precision over the whole ranking, ``AP_q = (1 / R_q) sum_{p: rel(p) = 1} P(p)``
  with ``P(p)`` the precision at rank ``p``. With ties, its exact expectation (McSherry & Najork, Eq. for AP)::

      AP_q = (1 / R_q) sum_groups sum_{j=1..t} (r / t) (R_b + 1 + (j - 1)(r - 1) / (t - 1)) / (c + j)

  (the last fraction is 0 when t = 1). A collapsed model (one group holding the whole gallery, G items) scores
  ``(R - 1)/(G - 1) + H_G (G - R) / (G (G - 1))`` (``H_G`` the G-th harmonic number): the expected AP of a
  uniformly random ranking, exactly.

* VOC all-point interpolated average precision (the AP of CoDA's evaluation code): the area under the
  precision envelope ``P~(p) = max_{p' >= p} P(p')`` of the precision-recall curve. Tie-free, recall only changes at
  relevant ranks, by ``1 / R_q`` each, so ``AP~_q = (1 / R_q) sum_{p: rel(p) = 1} P~(p)`` (>= AP_q).
  Example: relevance ``[1,0,0,1,1,0,1]`` gives AP = (1 + 2/4 + 3/5 + 4/7)/4 = 0.668 but
  AP~ = (1 + 3/5 + 3/5 + 4/7)/4 = 0.693.

  With ties, the expected VOC AP over orderings has no closed form (the envelope couples the groups), so
  ``AP~`` is the VOC AP of the **expected** precision-recall curve: at each rank the expected precision
  ``P(p) = (R_b + j r / t) / p`` and the expected recall step ``r / (t R)`` (between two tied groups' end points
  this is the interpolation of Davis & Goadrich, "The relationship between precision-recall and ROC curves",
  ICML 2006, which is what a random order inside the group gives on average), then VOC's envelope::

      AP~_q = (1 / R_q) sum_p (r / t) max_{p' >= p} P(p')

  Why this one: it is exact and vectorised (O(G) per query); it equals the VOC AP on tie-free rankings; it does
  not depend on the storage order; and a tied group only ever gets the precision it has on average, never that
  of its luckiest order: the envelope of an average is at most the average of the envelopes, so ties never
  earn credit (tests/test_evaluation.py checks AP~ <= the expected VOC AP over all orderings by enumeration). A
  collapsed model scores the prevalence ``R / G``, below a random ranking's expected AP above. (Unlike the
  tie-free case, AP~ can then be below AP.)

* Precision at k: ``P@k_q = E[hits in the top k] / k`` (exact under ties: ``R_b + j r / t`` at ``p = k``). If
  ``k > G`` the whole gallery (G items) is counted but the denominator stays ``k`` (a query cannot score 1 on a
  gallery smaller than k; this keeps the value comparable across galleries). Note this is *not* UCDIR's P@k,
  which caps the denominator at ``R_q`` and micro-averages over queries.

* ``tied_top_k`` (label-free, for the collapse diagnostics of benchmark/diagnostics.py): whether a score among the
  query's top k is shared with another gallery item.

Averages
--------
* ``map_all``  = mean of ``AP_q`` over valid queries (**query mean**).
* ``map_all_coda`` = the paper's mAP@All (UEM follows CoDA): ``AP~_q`` averaged within each query class (over
  that class's valid queries), then averaged over the classes having at least one valid query
  (**class-balanced**). Classes are grouped by label value, so non-contiguous label ids are fine (CoDA's code
  indexes a list by label and silently drops queries whose label id is too large; we do not).
* ``p_at_{k}`` = mean of ``P@k_q`` over valid queries (**query mean**).
* With no valid query, these are ``nan`` (not an error); ``n_queries`` and ``n_valid_queries`` are still given.

Open set (``open_set_metrics``)
-------------------------------
A query is truly *private* when its label does not occur in the gallery, otherwise *shared* (for a private
query no item is relevant, so "shared" is the same as "valid" above). ``private_pred`` is the method's detector
output (True = the method returns "null").

* ``shared_map_all`` = ``map_all_coda`` over shared queries, from the ranking whatever the detector says;
  ``shared_map_all_plain`` = ``map_all`` over them; ``shared_p_at_{k}`` likewise.
* ``open_set_acc`` = #{private queries predicted private} / #{private queries} (the paper's "Open-set Acc";
  nan without private queries).
* ``detection_acc`` = #{queries with private_pred == truth} / #{queries}.
* ``shared_false_null_rate`` = #{shared queries predicted private} / #{shared queries} (nan without shared ones).

Why not torchmetrics
--------------------
torchmetrics' retrieval metrics treat items whose score is <= 0 as not retrieved, which silently changes AP on
cosine similarities (negative scores are common). Its AP is also the plain one, query-averaged, so it could not
give the CoDA metric anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "PerQueryMetrics",
    "open_set_metrics",
    "per_query_metrics",
    "ranked_topk",
    "retrieval_metrics",
    "tied_top_k",
    "retrieval_sample",
    "sample_queries",
]


# ----------------------------------------------------------------------------------------------------------------
# Input checking and conversion
# ----------------------------------------------------------------------------------------------------------------

def _to_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    array = np.asarray(x)
    if array.dtype == object:
        raise ValueError(f"{name} must be a numeric array or tensor, got an object array")
    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array))


def _as_feature_matrix(x, name: str) -> torch.Tensor:
    feats = _to_tensor(x, name)
    if feats.dim() != 2:
        raise ValueError(f"{name} must be 2-D [n, dim], got shape {tuple(feats.shape)}")
    if feats.dtype == torch.bool or feats.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {feats.dtype}")
    if feats.dtype != torch.float64:
        feats = feats.float()  # half/bfloat16/int features are scored in float32
    non_finite_rows = (~torch.isfinite(feats)).any(dim=1)
    n_bad = int(non_finite_rows.sum())
    if n_bad:
        first = int(non_finite_rows.nonzero()[0, 0])
        raise ValueError(
            f"{name} has {n_bad} row(s) containing NaN or inf values (first at row {first}) out of {feats.shape[0]}"
        )
    return feats


def _as_label_vector(x, name: str) -> torch.Tensor:
    labels = _to_tensor(x, name)
    if labels.dim() != 1:
        raise ValueError(f"{name} must be 1-D [n], got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    return labels.long()


def _as_bool_vector(x, name: str) -> torch.Tensor:
    flags = _to_tensor(x, name)
    if flags.dim() != 1:
        raise ValueError(f"{name} must be 1-D [n], got shape {tuple(flags.shape)}")
    if flags.dtype != torch.bool:
        if flags.is_floating_point() or flags.is_complex() or not bool(((flags == 0) | (flags == 1)).all()):
            raise ValueError(f"{name} must be boolean (or 0/1 integers), got dtype {flags.dtype}")
        flags = flags.bool()
    return flags


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    checked: list[int] = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every k in ks must be a positive integer, got {k!r}")
        if int(k) not in checked:
            checked.append(int(k))
    return tuple(checked)


def _check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _resolve_device(query_feats, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(query_feats, torch.Tensor):
        return query_feats.device
    return torch.device("cpu")


@dataclass
class _Gallery:
    """The gallery as it is scored: its distinct vectors, L2-normalised, in a canonical order (sorted rows), and for
    each gallery item the row of its vector. Scoring distinct vectors once makes identical items tie exactly (a
    matrix product may round the same dot product differently in different columns) and makes every score the
    same whatever the storage order."""
    vectors: torch.Tensor        # [U, d] float, unit norm (or zero)
    item_vector: torch.Tensor    # [G] int64, row of `vectors` for each gallery item

    def __len__(self) -> int:
        return self.item_vector.shape[0]

    def scores(self, query_chunk: torch.Tensor) -> torch.Tensor:
        """Cosine similarities [c, G] of the (normalised) query chunk with every gallery item."""
        return (query_chunk @ self.vectors.T).index_select(1, self.item_vector)


def _normalised_feature_pair(q_feats: torch.Tensor, g_feats: torch.Tensor, target: torch.device):
    """Check the gallery/dims; return the queries L2-normalised and the gallery as a `_Gallery`, on ``target``, in
    one dtype."""
    if g_feats.shape[0] == 0:
        raise ValueError("the gallery is empty: gallery_feats has 0 rows")
    if q_feats.shape[1] != g_feats.shape[1]:
        raise ValueError(
            f"feature dims differ: query_feats has dim {q_feats.shape[1]}, gallery_feats has dim {g_feats.shape[1]}"
        )
    # Scores in float64 only when both sides are float64, otherwise float32.
    dtype = torch.float64 if q_feats.dtype == g_feats.dtype == torch.float64 else torch.float32
    q_feats = F.normalize(q_feats.to(device=target, dtype=dtype), dim=1)
    distinct, item_vector = torch.unique(g_feats.to(device=target, dtype=dtype), dim=0, return_inverse=True)
    return q_feats, _Gallery(F.normalize(distinct, dim=1), item_vector.reshape(-1))


def _prepare_retrieval_inputs(query_feats, query_labels, gallery_feats, gallery_labels, device):
    """Validate, convert and move everything to the target device; queries come back L2-normalised, the gallery as a
    `_Gallery`."""
    target = _resolve_device(query_feats, device)
    q_feats = _as_feature_matrix(query_feats, "query_feats")
    g_feats = _as_feature_matrix(gallery_feats, "gallery_feats")
    q_labels = _as_label_vector(query_labels, "query_labels")
    g_labels = _as_label_vector(gallery_labels, "gallery_labels")
    if q_feats.shape[0] != q_labels.shape[0]:
        raise ValueError(
            f"query_feats has {q_feats.shape[0]} rows but query_labels has {q_labels.shape[0]} entries"
        )
    if g_feats.shape[0] != g_labels.shape[0]:
        raise ValueError(
            f"gallery_feats has {g_feats.shape[0]} rows but gallery_labels has {g_labels.shape[0]} entries"
        )
    q_feats, gallery = _normalised_feature_pair(q_feats, g_feats, target)
    return q_feats, q_labels.to(target), gallery, g_labels.to(target)


# ----------------------------------------------------------------------------------------------------------------
# Ranking
# ----------------------------------------------------------------------------------------------------------------

def _rank_gallery(query_chunk: torch.Tensor, gallery: _Gallery) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores in rank order, gallery indices in rank order) [c, G] for every query of the chunk; within a tied
    group the indices keep gallery order (no metric depends on it)."""
    return torch.sort(gallery.scores(query_chunk), dim=1, descending=True, stable=True)


def _chunks(n: int, chunk_size: int):
    for start in range(0, n, chunk_size):
        yield slice(start, min(start + chunk_size, n))


# ----------------------------------------------------------------------------------------------------------------
# Per-query metrics
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class PerQueryMetrics:
    """Per-query values, all on the evaluation device; AP entries are nan for queries with no relevant item."""

    average_precision: torch.Tensor  # [Q] float64, plain AP_q (expected over the orderings of tied groups)
    interpolated_average_precision: torch.Tensor  # [Q] float64, VOC all-point AP~_q (of the expected PR curve)
    precision_at: dict[int, torch.Tensor]  # k -> [Q] float64, P@k_q (expected)
    n_relevant: torch.Tensor  # [Q] int64, R_q

    @property
    def valid(self) -> torch.Tensor:
        return self.n_relevant > 0


def _relevance_in_rank_order(order: torch.Tensor, chunk_labels: torch.Tensor, gallery_labels: torch.Tensor):
    """rel[i, r] = True when the gallery item at rank r+1 of query i shares the query's label."""
    # Compare in gallery order, then permute the booleans: cheaper than gathering int64 labels.
    return (gallery_labels[None, :] == chunk_labels[:, None]).gather(1, order)


def _ranks_of_relevant_items(relevant: torch.Tensor):
    """[c, G] relevance in rank order -> ([c, R_max] 1-based ranks of the relevant items, ascending, padded
    with +inf; [c] number of relevant items R)."""
    n_queries = relevant.shape[0]
    rows, cols = relevant.nonzero(as_tuple=True)  # row-major, so each row's ranks come out ascending
    n_relevant = torch.bincount(rows, minlength=n_queries)
    width = int(n_relevant.max()) if n_queries else 0
    first_of_row = torch.cumsum(n_relevant, 0) - n_relevant
    slot = torch.arange(rows.numel(), device=relevant.device) - first_of_row[rows]
    ranks = torch.full((n_queries, width), float("inf"), dtype=torch.float64, device=relevant.device)
    ranks[rows, slot] = (cols + 1).to(torch.float64)
    return ranks, n_relevant


def _precision_envelope(precision: torch.Tensor) -> torch.Tensor:
    """max over positions m' >= m of precision[:, m'] (VOC interpolation): a reversed running maximum."""
    return precision.flip(1).cummax(dim=1).values.flip(1)


def _untied_metrics(relevant: torch.Tensor, ks: Sequence[int]):
    """AP, interpolated AP, P@k and R for relevance rows [c, G] of rankings without ties.

    Everything is computed from the ranks r_1 < r_2 < ... < r_R of the relevant items: the precision at r_m is
    m / r_m. Between two relevant ranks the precision only falls (same hits, larger rank), so the VOC envelope
    at r_m (max precision at any rank >= r_m) is the max of m' / r_m' over m' >= m: taking the envelope over
    the relevant ranks alone is exact, and the work is O(c x R_max) instead of O(c x G).
    """
    ranks, n_relevant = _ranks_of_relevant_items(relevant)
    hits = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64, device=ranks.device)
    precision = hits / ranks  # 0 on the +inf padding, so padding adds nothing to the sums below
    denom = n_relevant.to(torch.float64)  # R = 0 gives 0/0 = nan: invalid queries
    ap = precision.sum(dim=1) / denom
    ap_interp = _precision_envelope(precision).sum(dim=1) / denom
    # k > G: every relevant item is within the top k, still divided by k.
    precision_at = {k: (ranks <= k).sum(dim=1).to(torch.float64) / k for k in ks}
    return ap, ap_interp, precision_at, n_relevant


def _tied_groups(sorted_scores: torch.Tensor):
    """For every rank position (0-based) of rows of scores in rank order [c, G]: (start, end) of its tied group,
    i.e. the number of items ranked above the group and that number plus the group's size."""
    n_rows, n_items = sorted_scores.shape
    position = torch.arange(n_items, device=sorted_scores.device).expand(n_rows, n_items)
    opens = torch.ones_like(sorted_scores, dtype=torch.bool)
    opens[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    closes = torch.ones_like(opens)
    closes[:, :-1] = opens[:, 1:]
    start = torch.where(opens, position, 0).cummax(dim=1).values
    end = torch.where(closes, position + 1, n_items).flip(1).cummin(dim=1).values.flip(1)
    return start, end


def _expected_relevance(sorted_scores: torch.Tensor, relevant: torch.Tensor):
    """Under a uniformly random order inside each tied group, per rank position [c, G] (float64): the share r / t of
    relevant items in its group, the relevant items above the group R_b, the group's size t and the position j in
    it (1-based). See the module docstring."""
    start, end = _tied_groups(sorted_scores)
    hits = torch.zeros(relevant.shape[0], relevant.shape[1] + 1, dtype=torch.float64, device=relevant.device)
    hits[:, 1:] = relevant.cumsum(dim=1)
    above = hits.gather(1, start)
    size = (end - start).to(torch.float64)
    share = (hits.gather(1, end) - above) / size
    within = (torch.arange(relevant.shape[1], device=relevant.device) - start + 1).to(torch.float64)
    return share, above, size, within


def _tied_metrics(sorted_scores: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int]):
    """AP (McSherry & Najork's exact expectation), VOC AP of the expected PR curve, expected P@k and R for rows of
    rankings with tied groups, [c, G] each (module docstring, "Ties")."""
    share, above, size, within = _expected_relevance(sorted_scores, relevant)
    n_items = relevant.shape[1]
    rank = torch.arange(1, n_items + 1, dtype=torch.float64, device=relevant.device)
    n_relevant = relevant.sum(dim=1)
    denom = n_relevant.to(torch.float64)
    in_group = share * size
    # Given a relevant item at position j of its group, the expected number of the group's other relevant items above it
    others_before = torch.where(size > 1, (within - 1) * (in_group - 1) / (size - 1).clamp_min(1), 0.0)
    ap = (share * (above + 1 + others_before) / rank).sum(dim=1) / denom
    expected_hits = above + within * share
    ap_interp = (share * _precision_envelope(expected_hits / rank)).sum(dim=1) / denom
    precision_at = {k: expected_hits[:, min(k, n_items) - 1] / k for k in ks}
    return ap, ap_interp, precision_at, n_relevant


TIED_ROWS_AT_ONCE = 256   # rows of the tied path at a time: it holds about ten [rows, G] float64 tensors


def _chunk_metrics(sorted_scores: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int]):
    """AP, interpolated AP, P@k and R for one chunk [c, G]. Only a tied group that holds relevant and irrelevant
    items changes a metric (inside a group of one kind every order gives the same relevance sequence), so rows
    without such a group take the cheap path over relevant ranks and the others the expected values."""
    mixed_tie = (sorted_scores[:, 1:] == sorted_scores[:, :-1]) & (relevant[:, 1:] != relevant[:, :-1])
    tied_rows = torch.nonzero(mixed_tie.any(dim=1)).flatten()
    ap, ap_interp, precision_at, n_relevant = _untied_metrics(relevant, ks)
    for part in torch.split(tied_rows, TIED_ROWS_AT_ONCE):
        tied = _tied_metrics(sorted_scores[part], relevant[part], ks)
        ap[part], ap_interp[part], n_relevant[part] = tied[0], tied[1], tied[3]
        for k in ks:
            precision_at[k][part] = tied[2][k]
    return ap, ap_interp, precision_at, n_relevant


def _per_query_from_prepared(q_feats, q_labels, gallery, g_labels, ks, chunk_size) -> PerQueryMetrics:
    parts = []
    for rows in _chunks(q_feats.shape[0], chunk_size):
        sorted_scores, order = _rank_gallery(q_feats[rows], gallery)
        relevant = _relevance_in_rank_order(order, q_labels[rows], g_labels)
        del order
        parts.append(_chunk_metrics(sorted_scores, relevant, ks))
    device = q_feats.device
    empty_f = torch.empty(0, dtype=torch.float64, device=device)

    def joined(index, empty):
        return torch.cat([part[index] for part in parts]) if parts else empty
    return PerQueryMetrics(
        average_precision=joined(0, empty_f),
        interpolated_average_precision=joined(1, empty_f),
        precision_at={k: torch.cat([part[2][k] for part in parts]) if parts else empty_f for k in ks},
        n_relevant=joined(3, torch.empty(0, dtype=torch.long, device=device)),
    )


def per_query_metrics(
    query_feats, query_labels, gallery_feats, gallery_labels, ks=(1, 5, 15), *, chunk_size=1024, device=None
) -> PerQueryMetrics:
    """Per-query AP, interpolated AP, P@k and number of relevant items (the terms averaged by retrieval_metrics)."""
    ks = _check_ks(ks)
    chunk_size = _check_chunk_size(chunk_size)
    prepared = _prepare_retrieval_inputs(query_feats, query_labels, gallery_feats, gallery_labels, device)
    return _per_query_from_prepared(*prepared, ks, chunk_size)


# ----------------------------------------------------------------------------------------------------------------
# Averaging
# ----------------------------------------------------------------------------------------------------------------

def _query_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over the queries selected by ``mask``; nan when none is selected."""
    if not bool(mask.any()):
        return float("nan")
    return float(values[mask].mean())


def _class_balanced_mean(values: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean within each label (over the selected queries), then mean over labels; nan when none is selected."""
    if not bool(mask.any()):
        return float("nan")
    # unique() groups arbitrary label ids (non-contiguous, negative, large) without indexing by label.
    _, class_of_query = torch.unique(labels[mask], return_inverse=True)
    n_classes = int(class_of_query.max()) + 1
    sums = torch.zeros(n_classes, dtype=torch.float64, device=values.device)
    sums.index_add_(0, class_of_query, values[mask].to(torch.float64))
    counts = torch.bincount(class_of_query, minlength=n_classes)
    return float((sums / counts).mean())


def _fraction(flags: torch.Tensor) -> float:
    return float(flags.double().mean()) if flags.numel() else float("nan")


def _summarise(per_query: PerQueryMetrics, labels: torch.Tensor, mask: torch.Tensor, prefix: str = "") -> dict:
    """Averages over the valid queries selected by ``mask``."""
    mask = mask & per_query.valid
    out = {
        f"{prefix}map_all": _query_mean(per_query.average_precision, mask),
        f"{prefix}map_all_coda": _class_balanced_mean(per_query.interpolated_average_precision, labels, mask),
    }
    for k, values in per_query.precision_at.items():
        out[f"{prefix}p_at_{k}"] = _query_mean(values, mask)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------

def retrieval_metrics(
    query_feats, query_labels, gallery_feats, gallery_labels, ks=(1, 5, 15), *, chunk_size=1024, device=None
) -> dict:
    """mAP@All (plain, query-mean), mAP@All CoDA-style (interpolated, class-balanced) and P@k (query-mean).

    Returns ``{"map_all", "map_all_coda", "p_at_<k>"..., "n_queries", "n_valid_queries"}`` as Python numbers;
    metrics are fractions in [0, 1] (nan when no query has a relevant gallery item). See the module docstring.
    """
    ks = _check_ks(ks)
    chunk_size = _check_chunk_size(chunk_size)
    q_feats, q_labels, gallery, g_labels = _prepare_retrieval_inputs(
        query_feats, query_labels, gallery_feats, gallery_labels, device
    )
    per_query = _per_query_from_prepared(q_feats, q_labels, gallery, g_labels, ks, chunk_size)
    everyone = torch.ones_like(per_query.valid)
    out = _summarise(per_query, q_labels, everyone)
    out["n_queries"] = int(q_labels.shape[0])
    out["n_valid_queries"] = int(per_query.valid.sum())
    return out


def open_set_metrics(
    query_feats,
    query_labels,
    gallery_feats,
    gallery_labels,
    private_pred,
    ks=(1, 5, 15),
    *,
    chunk_size=1024,
    device=None,
) -> dict:
    """Shared-class retrieval quality plus private-query ("null") detection quality. See the module docstring.

    ``private_pred[i]`` is True when the method answers "null" for query ``i``.
    """
    ks = _check_ks(ks)
    chunk_size = _check_chunk_size(chunk_size)
    q_feats, q_labels, gallery, g_labels = _prepare_retrieval_inputs(
        query_feats, query_labels, gallery_feats, gallery_labels, device
    )
    predicted_private = _as_bool_vector(private_pred, "private_pred").to(q_labels.device)
    if predicted_private.shape[0] != q_labels.shape[0]:
        raise ValueError(
            f"private_pred has {predicted_private.shape[0]} entries but there are {q_labels.shape[0]} queries"
        )
    per_query = _per_query_from_prepared(q_feats, q_labels, gallery, g_labels, ks, chunk_size)
    truly_private = torch.isin(q_labels, g_labels, invert=True)
    shared = ~truly_private

    # Retrieval quality is measured on every shared query, also those the detector wrongly flags as private.
    retrieval = _summarise(per_query, q_labels, shared, prefix="shared_")
    out = {
        "shared_map_all": retrieval["shared_map_all_coda"],
        "shared_map_all_plain": retrieval["shared_map_all"],
    }
    out.update({f"shared_p_at_{k}": retrieval[f"shared_p_at_{k}"] for k in ks})
    out["open_set_acc"] = _fraction(predicted_private[truly_private])
    out["detection_acc"] = _fraction(predicted_private == truly_private)
    out["shared_false_null_rate"] = _fraction(predicted_private[shared])
    out["n_queries"] = int(q_labels.shape[0])
    out["n_shared_queries"] = int(shared.sum())
    out["n_private_queries"] = int(truly_private.sum())
    return out


def _unlabelled_inputs(query_feats, gallery_feats, k, chunk_size, device):
    """Checks of the label-free functions (`ranked_topk`, `tied_top_k`): (normalised queries, `_Gallery`, chunk
    size)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    chunk_size = _check_chunk_size(chunk_size)
    target = _resolve_device(query_feats, device)
    q_feats, gallery = _normalised_feature_pair(
        _as_feature_matrix(query_feats, "query_feats"), _as_feature_matrix(gallery_feats, "gallery_feats"), target
    )
    return q_feats, gallery, chunk_size


def ranked_topk(query_feats, gallery_feats, k, *, chunk_size=1024, device=None) -> torch.Tensor:
    """Gallery indices of the k best items per query, best first, equal scores by lower gallery index.

    A utility for looking at rankings: which items a tied group shows first depends on the storage order, so no
    metric and no figure judges by it (`retrieval_sample` marks tied items). Returns a LongTensor [Q, min(k, G)] on
    the evaluation device (k larger than the gallery is clipped to G).
    """
    q_feats, gallery, chunk_size = _unlabelled_inputs(query_feats, gallery_feats, k, chunk_size, device)
    top = min(int(k), len(gallery))
    # A full stable sort rather than torch.topk: topk does not promise the tie order.
    parts = [_rank_gallery(q_feats[rows], gallery)[1][:, :top] for rows in _chunks(q_feats.shape[0], chunk_size)]
    if not parts:
        return torch.empty(0, top, dtype=torch.long, device=q_feats.device)
    return torch.cat(parts)


def tied_top_k(query_feats, gallery_feats, k, *, chunk_size=1024, device=None) -> torch.Tensor:
    """Bool [Q] on the evaluation device: True where a score among the query's top k (scored as everywhere in this
    module) is shared with another gallery item, the item just below the top k included. No labels: a diagnostic
    of collapse (benchmark/diagnostics.py)."""
    q_feats, gallery, chunk_size = _unlabelled_inputs(query_feats, gallery_feats, k, chunk_size, device)
    width = min(int(k) + 1, len(gallery))
    parts = []
    for rows in _chunks(q_feats.shape[0], chunk_size):
        best = gallery.scores(q_feats[rows]).topk(width, dim=1).values            # sorted, largest first
        parts.append((best[:, 1:] == best[:, :-1]).any(dim=1))
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.bool, device=q_feats.device)


# ----------------------------------------------------------------------------------------------------------------
# A sample of queries for figures
# ----------------------------------------------------------------------------------------------------------------

def sample_queries(query_labels, gallery_labels, n_shared, *, seed, n_private=0) -> torch.Tensor:
    """Indices of a fixed sample of queries: ``n_shared`` whose class occurs in the gallery, then ``n_private``
    whose class does not (fewer when there are fewer), drawn with a generator seeded by ``seed``.

    The sample depends on the labels and the seed only, so every method evaluated on the same split shows the same
    queries. Within each part, classes are spread: one query per class in drawn order before any class repeats.
    """
    for name, value in (("n_shared", n_shared), ("n_private", n_private)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    q_labels = _as_label_vector(query_labels, "query_labels").cpu()
    g_labels = _as_label_vector(gallery_labels, "gallery_labels").cpu()
    generator = torch.Generator().manual_seed(int(seed))
    private = torch.isin(q_labels, g_labels, invert=True)
    # One permutation over all queries, then split: the shared part does not depend on n_private.
    order = torch.randperm(q_labels.shape[0], generator=generator)
    parts = [_one_per_class_first(order[~private[order]], q_labels, n_shared),
             _one_per_class_first(order[private[order]], q_labels, n_private)]
    return torch.cat(parts)


def _one_per_class_first(candidates: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` of ``candidates`` (kept in their order), taking each class's first candidate before any
    second one."""
    if candidates.numel() == 0 or count == 0:
        return candidates[:0]
    _, class_of = torch.unique(labels[candidates], return_inverse=True)
    positions = torch.arange(candidates.numel())
    first_position = torch.full((int(class_of.max()) + 1,), candidates.numel()).scatter_reduce(
        0, class_of, positions, reduce="amin")
    is_first = torch.zeros(candidates.numel(), dtype=torch.bool)
    is_first[first_position] = True
    return torch.cat([candidates[is_first], candidates[~is_first]])[:count]


def retrieval_sample(query_feats, query_labels, gallery_feats, gallery_labels, query_indices, k, *,
                     private_pred=None, device=None) -> list[dict]:
    """What a figure shows of the selected queries: for each, in the order given, a dict with

    ``query_index``, ``label``, ``private`` (its class is absent from the gallery), ``returned_null``
    (``private_pred`` at that query; None when no detector ran), and for the top ``k`` ranks:
    ``retrieved_indices`` (the gallery item shown at each rank; inside a tied group, by gallery index),
    ``retrieved_labels`` and ``retrieved_correct`` (that item shares the query's label), ``retrieved_tied`` (the
    rank's score is shared with another gallery item: which of them sits at this rank is arbitrary) and
    ``retrieved_expected_correct`` (the probability that the rank holds an item of the query's class under a random
    order of its tied group: r / t, equal to ``retrieved_correct`` where not tied). A figure judges tied ranks by
    the expected value, so nothing it shows depends on the storage order. Plain Python values, ready for JSON.
    """
    q_feats, q_labels, gallery, g_labels = _prepare_retrieval_inputs(
        query_feats, query_labels, gallery_feats, gallery_labels, device
    )
    indices = _as_label_vector(query_indices, "query_indices").to(q_labels.device)
    n_queries = q_labels.shape[0]
    out_of_range = (indices < 0) | (indices >= n_queries)
    if bool(out_of_range.any()):
        raise ValueError(f"query_indices must lie in [0, {n_queries}), got {indices[out_of_range].tolist()}")
    if private_pred is not None:
        private_pred = _as_bool_vector(private_pred, "private_pred")
        if private_pred.shape[0] != n_queries:
            raise ValueError(f"private_pred has {private_pred.shape[0]} entries but there are {n_queries} queries")
    labels = q_labels[indices]
    sorted_scores, order = _rank_gallery(q_feats[indices], gallery)
    relevant = _relevance_in_rank_order(order, labels, g_labels)
    share, _, size, _ = _expected_relevance(sorted_scores, relevant)
    top = min(int(k), len(gallery))
    top_indices, top_labels = order[:, :top], g_labels[order[:, :top]]
    private = torch.isin(labels, g_labels, invert=True)
    sample = []
    for row, query_index in enumerate(indices.tolist()):
        sample.append({
            "query_index": query_index,
            "label": int(labels[row]),
            "private": bool(private[row]),
            "returned_null": None if private_pred is None else bool(private_pred[query_index]),
            "retrieved_indices": top_indices[row].tolist(),
            "retrieved_labels": top_labels[row].tolist(),
            "retrieved_correct": relevant[row, :top].tolist(),
            "retrieved_tied": (size[row, :top] > 1).tolist(),
            "retrieved_expected_correct": share[row, :top].tolist(),
        })
    return sample
