"""Retrieval metrics for cross-domain image retrieval (DESIGN.md section 3.5).

Queries come from one domain, the gallery ("retrieval set") from the other. Everything here is pure torch
(numpy is accepted at the edges) and knows nothing about methods or datasets.

* ``retrieval_metrics``  -> map_all, map_all_coda, p_at_{k}, n_queries, n_valid_queries
* ``open_set_metrics``   -> shared-class retrieval metrics and private-query ("null") detection metrics
* ``per_query_metrics``  -> the per-query terms the two above average (for checks and analysis)
* ``ranked_topk``        -> gallery indices of the top k per query (for figures)
* ``sample_queries``, ``retrieval_sample`` -> a fixed sample of queries and their top k, judged (for figures)

Ranking
-------
Features are L2-normalised here (whatever the caller did), so the score of gallery item ``j`` for query ``q`` is
the cosine similarity ``s(q, j) = <f_q / |f_q|, g_j / |g_j|>`` (a zero feature vector stays zero and scores 0
against everything). Each query ranks the **whole** gallery by descending score; **ties are broken by gallery
index, lower index first** (``torch.sort(descending=True, stable=True)``), so results are deterministic.
Scores are computed for ``chunk_size`` queries at a time on ``device``: memory per chunk is O(chunk_size x G)
(about 20 bytes per element at the peak, during the sort), and there is never a Python loop over queries.

Per-query quantities
--------------------
For query ``q`` with label ``y_q``: ``rel_q(r) = 1`` if the gallery item at rank ``r`` (1-based) has label
``y_q``; ``R_q = sum_r rel_q(r)`` is the number of relevant gallery items; ``P_q(r) = (1/r) sum_{i<=r} rel_q(i)``
is the precision at rank ``r``. A query is **valid** when ``R_q >= 1``; invalid queries (their class is absent
from the gallery) are excluded from every average below and counted by ``n_valid_queries``.

* Plain (non-interpolated) average precision over the whole ranking::

      AP_q = (1 / R_q) * sum_{r : rel_q(r) = 1} P_q(r)

* VOC all-point interpolated average precision (the AP of CoDA's evaluation code). The precision envelope is
  ``P~_q(r) = max_{r' >= r} P_q(r')``; recall only changes at relevant ranks, by ``1 / R_q`` each, so::

      AP~_q = (1 / R_q) * sum_{r : rel_q(r) = 1} P~_q(r)          (AP~_q >= AP_q)

  Example: relevance ``[1,0,0,1,1,0,1]`` gives AP = (1 + 2/4 + 3/5 + 4/7)/4 = 0.668 but
  AP~ = (1 + 3/5 + 3/5 + 4/7)/4 = 0.693.

* Precision at k: ``P@k_q = (sum_{r<=k} rel_q(r)) / k``. If ``k > G`` the whole gallery (G items) is counted
  but the denominator stays ``k`` (a query cannot score 1 on a gallery smaller than k; this keeps the value
  comparable across galleries). Note this is *not* UCDIR's P@k, which caps the denominator at ``R_q`` and
  micro-averages over queries.

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


def _normalised_feature_pair(q_feats: torch.Tensor, g_feats: torch.Tensor, target: torch.device):
    """Check the gallery/dims; return both matrices L2-normalised on ``target``, in one dtype."""
    if g_feats.shape[0] == 0:
        raise ValueError("the gallery is empty: gallery_feats has 0 rows")
    if q_feats.shape[1] != g_feats.shape[1]:
        raise ValueError(
            f"feature dims differ: query_feats has dim {q_feats.shape[1]}, gallery_feats has dim {g_feats.shape[1]}"
        )
    # Scores in float64 only when both sides are float64, otherwise float32.
    dtype = torch.float64 if q_feats.dtype == g_feats.dtype == torch.float64 else torch.float32
    q_feats = F.normalize(q_feats.to(device=target, dtype=dtype), dim=1)
    g_feats = F.normalize(g_feats.to(device=target, dtype=dtype), dim=1)
    return q_feats, g_feats


def _prepare_retrieval_inputs(query_feats, query_labels, gallery_feats, gallery_labels, device):
    """Validate, convert and move everything to the target device; features come back L2-normalised."""
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
    q_feats, g_feats = _normalised_feature_pair(q_feats, g_feats, target)
    return q_feats, q_labels.to(target), g_feats, g_labels.to(target)


# ----------------------------------------------------------------------------------------------------------------
# Ranking
# ----------------------------------------------------------------------------------------------------------------

def _rank_gallery(query_chunk: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Gallery indices of every query of the chunk, best first; equal scores keep gallery order."""
    scores = query_chunk @ gallery.T
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def _chunks(n: int, chunk_size: int):
    for start in range(0, n, chunk_size):
        yield slice(start, min(start + chunk_size, n))


# ----------------------------------------------------------------------------------------------------------------
# Per-query metrics
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class PerQueryMetrics:
    """Per-query values, all on the evaluation device; AP entries are nan for queries with no relevant item."""

    average_precision: torch.Tensor  # [Q] float64, plain AP_q
    interpolated_average_precision: torch.Tensor  # [Q] float64, VOC all-point AP~_q
    precision_at: dict[int, torch.Tensor]  # k -> [Q] float64, P@k_q
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


def _chunk_metrics(relevant: torch.Tensor, ks: Sequence[int]):
    """AP, interpolated AP, P@k and R for one chunk of relevance rows [c, G].

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


def _per_query_from_prepared(q_feats, q_labels, g_feats, g_labels, ks, chunk_size) -> PerQueryMetrics:
    aps, aps_interp, n_rels = [], [], []
    precisions: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for rows in _chunks(q_feats.shape[0], chunk_size):
        order = _rank_gallery(q_feats[rows], g_feats)
        relevant = _relevance_in_rank_order(order, q_labels[rows], g_labels)
        del order
        ap, ap_interp, precision_at, n_rel = _chunk_metrics(relevant, ks)
        aps.append(ap)
        aps_interp.append(ap_interp)
        n_rels.append(n_rel)
        for k in ks:
            precisions[k].append(precision_at[k])
    device = q_feats.device
    empty_f = torch.empty(0, dtype=torch.float64, device=device)
    empty_l = torch.empty(0, dtype=torch.long, device=device)
    return PerQueryMetrics(
        average_precision=torch.cat(aps) if aps else empty_f,
        interpolated_average_precision=torch.cat(aps_interp) if aps_interp else empty_f,
        precision_at={k: torch.cat(v) if v else empty_f for k, v in precisions.items()},
        n_relevant=torch.cat(n_rels) if n_rels else empty_l,
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
    q_feats, q_labels, g_feats, g_labels = _prepare_retrieval_inputs(
        query_feats, query_labels, gallery_feats, gallery_labels, device
    )
    per_query = _per_query_from_prepared(q_feats, q_labels, g_feats, g_labels, ks, chunk_size)
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
    q_feats, q_labels, g_feats, g_labels = _prepare_retrieval_inputs(
        query_feats, query_labels, gallery_feats, gallery_labels, device
    )
    predicted_private = _as_bool_vector(private_pred, "private_pred").to(q_labels.device)
    if predicted_private.shape[0] != q_labels.shape[0]:
        raise ValueError(
            f"private_pred has {predicted_private.shape[0]} entries but there are {q_labels.shape[0]} queries"
        )
    per_query = _per_query_from_prepared(q_feats, q_labels, g_feats, g_labels, ks, chunk_size)
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


def ranked_topk(query_feats, gallery_feats, k, *, chunk_size=1024, device=None) -> torch.Tensor:
    """Gallery indices of the k best items per query, best first, ties by lower gallery index.

    Returns a LongTensor [Q, min(k, G)] on the evaluation device (k larger than the gallery is clipped to G).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    chunk_size = _check_chunk_size(chunk_size)
    target = _resolve_device(query_feats, device)
    q_feats, g_feats = _normalised_feature_pair(
        _as_feature_matrix(query_feats, "query_feats"), _as_feature_matrix(gallery_feats, "gallery_feats"), target
    )
    top = min(int(k), g_feats.shape[0])
    # A full stable sort rather than torch.topk: topk does not promise the tie order.
    parts = [_rank_gallery(q_feats[rows], g_feats)[:, :top] for rows in _chunks(q_feats.shape[0], chunk_size)]
    if not parts:
        return torch.empty(0, top, dtype=torch.long, device=target)
    return torch.cat(parts)


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
    (``private_pred`` at that query; None when no detector ran), ``retrieved_indices`` (the top ``k`` gallery
    items, ranked as everywhere in this module), ``retrieved_labels`` and ``retrieved_correct`` (each item shares
    the query's label). Plain Python values, ready for JSON.
    """
    q_feats, q_labels, g_feats, g_labels = _prepare_retrieval_inputs(
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
    top = ranked_topk(q_feats[indices], g_feats, k)
    top_labels = g_labels[top]
    labels = q_labels[indices]
    private = torch.isin(labels, g_labels, invert=True)
    correct = top_labels == labels[:, None]
    sample = []
    for row, query_index in enumerate(indices.tolist()):
        sample.append({
            "query_index": query_index,
            "label": int(labels[row]),
            "private": bool(private[row]),
            "returned_null": None if private_pred is None else bool(private_pred[query_index]),
            "retrieved_indices": top[row].tolist(),
            "retrieved_labels": top_labels[row].tolist(),
            "retrieved_correct": correct[row].tolist(),
        })
    return sample
