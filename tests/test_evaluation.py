"""Tests of benchmark/evaluation.py against sklearn, a brute-force oracle, and hand-computed cases.

Tie-heavy data uses "quantised" features: vectors in {-1, 0, 1}^6 with exactly four non-zero entries. Their norm
is 2, so the normalised entries are +-0.5 and every cosine is a multiple of 0.25 — exact in float32 and float64
whatever the summation order, so the oracle (numpy, float64) sees exactly the same ties as the torch code.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from benchmark import evaluation
from benchmark.evaluation import (open_set_metrics, per_query_metrics, ranked_topk, retrieval_metrics,
                                  retrieval_sample, tied_top_k)

KS = (1, 5, 15)
LABELS = np.array([3, 17, 40, 1001])  # non-contiguous class ids


# ----------------------------------------------------------------------------------------------------------------
# Data builders
# ----------------------------------------------------------------------------------------------------------------

def quantised_features(rng, n, dim=6, nonzero=4):
    feats = np.zeros((n, dim))
    for row in feats:
        columns = rng.choice(dim, size=nonzero, replace=False)
        row[columns] = rng.choice([-1.0, 1.0], size=nonzero)
    return feats


def features_in_rank_order(n):
    """Unit 2-D vectors whose cosine with the query [1, 0] strictly decreases with the row index."""
    angles = 0.3 * np.arange(n)  # 0 .. < pi for n <= 10
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


# ----------------------------------------------------------------------------------------------------------------
# Brute-force oracle: one query at a time, straight from the definitions (loops on purpose)
# ----------------------------------------------------------------------------------------------------------------

def oracle_groups(query_feat, query_label, gallery_feats, gallery_labels):
    """The ranking as tied groups, best first: each group the relevance (0/1) of its items (any order inside)."""
    q = query_feat / np.linalg.norm(query_feat)
    scores = [float(np.dot(q, g / np.linalg.norm(g))) for g in gallery_feats]
    return [[int(gallery_labels[j] == query_label) for j in range(len(scores)) if scores[j] == level]
            for level in sorted(set(scores), reverse=True)]


def oracle_expected_ap(groups):
    """McSherry & Najork's expected AP, position by position: a relevant item at position j of a group of t with r
    relevant (probability r/t) has, in expectation, (j - 1)(r - 1)/(t - 1) relevant group members above it."""
    n_relevant = sum(map(sum, groups))
    total, above, relevant_above = 0.0, 0, 0
    for group in groups:
        t, r = len(group), sum(group)
        for j in range(1, t + 1):
            others = (j - 1) * (r - 1) / (t - 1) if t > 1 else 0.0
            total += r / t * (relevant_above + 1 + others) / (above + j)
        above, relevant_above = above + t, relevant_above + r
    return total / n_relevant


def oracle_expected_curve(groups):
    """(expected relevance, expected hits) at every rank position, group by group."""
    relevance, hits, found = [], [], 0.0
    for group in groups:
        share = sum(group) / len(group)
        for _ in group:
            found += share
            relevance.append(share)
            hits.append(found)
    return relevance, hits


def oracle_voc_of_expected_curve(groups):
    """VOC all-point AP of the expected PR curve: recall steps r/(t R), precision E[hits]/p, VOC's envelope."""
    relevance, hits = oracle_expected_curve(groups)
    n_relevant = sum(map(sum, groups))
    precision = [h / (p + 1) for p, h in enumerate(hits)]
    return sum(relevance[p] * max(precision[p:]) for p in range(len(precision))) / n_relevant


def oracle_expected_precision_at(groups, k):
    _, hits = oracle_expected_curve(groups)
    return hits[min(k, len(hits)) - 1] / k


def oracle_plain_ap(rel):
    hits, total = 0, 0.0
    for rank, is_relevant in enumerate(rel, start=1):
        if is_relevant:
            hits += 1
            total += hits / rank
    return total / hits


def oracle_voc_ap(rel):
    """VOC all-point AP written the VOC way: padded recall/precision, envelope, sum where recall changes."""
    n_relevant = sum(rel)
    recall, precision, hits = [0.0], [0.0], 0
    for rank, is_relevant in enumerate(rel, start=1):
        hits += is_relevant
        recall.append(hits / n_relevant)
        precision.append(hits / rank)
    recall.append(1.0)
    precision.append(0.0)
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return sum(
        (recall[i + 1] - recall[i]) * precision[i + 1] for i in range(len(recall) - 1) if recall[i + 1] != recall[i]
    )


def every_ordering(groups):
    """Every distinct relevance sequence the tied groups can give (each as likely as the others)."""
    per_group = []
    for group in groups:
        t, r = len(group), sum(group)
        per_group.append([[int(i in chosen) for i in range(t)] for chosen in itertools.combinations(range(t), r)])
    for parts in itertools.product(*per_group):
        yield [x for part in parts for x in part]


def oracle_metrics(query_feats, query_labels, gallery_feats, gallery_labels, ks):
    plain, precision_at = [], {k: [] for k in ks}
    voc_by_class = {}
    for feat, label in zip(query_feats, query_labels):
        groups = oracle_groups(feat, label, gallery_feats, gallery_labels)
        if sum(map(sum, groups)) == 0:
            continue  # invalid query
        plain.append(oracle_expected_ap(groups))
        voc_by_class.setdefault(int(label), []).append(oracle_voc_of_expected_curve(groups))
        for k in ks:
            precision_at[k].append(oracle_expected_precision_at(groups, k))
    nan = float("nan")
    out = {
        "map_all": float(np.mean(plain)) if plain else nan,
        "map_all_coda": float(np.mean([np.mean(v) for v in voc_by_class.values()])) if voc_by_class else nan,
        "n_queries": len(query_labels),
        "n_valid_queries": len(plain),
    }
    for k in ks:
        out[f"p_at_{k}"] = float(np.mean(precision_at[k])) if plain else nan
    return out


def assert_metrics_close(actual, expected, tol=1e-12):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(actual[key]), key
        else:
            assert actual[key] == pytest.approx(value, abs=tol), key


# ----------------------------------------------------------------------------------------------------------------
# Against sklearn (no ties) and the oracle (ties)
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_map_all_matches_sklearn_average_precision(seed):
    rng = np.random.default_rng(seed)
    n_query, n_gallery, dim = 40, 60, 8
    query_feats = rng.standard_normal((n_query, dim))  # continuous features: no tied scores
    gallery_feats = rng.standard_normal((n_gallery, dim))
    # 555 never occurs in the gallery: those queries are invalid and must be left out.
    query_labels = rng.choice(np.append(LABELS, 555), size=n_query)
    gallery_labels = rng.choice(LABELS, size=n_gallery)

    q = query_feats / np.linalg.norm(query_feats, axis=1, keepdims=True)
    g = gallery_feats / np.linalg.norm(gallery_feats, axis=1, keepdims=True)
    scores = q @ g.T
    expected_ap = np.full(n_query, np.nan)
    for i in range(n_query):
        relevant = gallery_labels == query_labels[i]
        if relevant.any():
            expected_ap[i] = average_precision_score(relevant, scores[i])
    valid = ~np.isnan(expected_ap)
    assert 0 < valid.sum() < n_query  # the seed gives both kinds of query

    per_query = per_query_metrics(query_feats, query_labels, gallery_feats, gallery_labels)
    np.testing.assert_allclose(per_query.average_precision.numpy(), expected_ap, rtol=0, atol=1e-12)
    metrics = retrieval_metrics(query_feats, query_labels, gallery_feats, gallery_labels)
    assert metrics["map_all"] == pytest.approx(expected_ap[valid].mean(), abs=1e-12)
    assert metrics["n_valid_queries"] == int(valid.sum())


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_all_metrics_match_bruteforce_oracle_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_query, n_gallery = 30, 25  # n_gallery > 15 and < 15 cases are both covered below
    query_feats = quantised_features(rng, n_query)
    gallery_feats = quantised_features(rng, n_gallery)
    gallery_feats[5] = gallery_feats[2]  # exact duplicate rows tie for every query
    query_labels = rng.choice(np.append(LABELS, 555), size=n_query)
    gallery_labels = rng.choice(LABELS, size=n_gallery)

    expected = oracle_metrics(query_feats, query_labels, gallery_feats, gallery_labels, KS)
    assert 0 < expected["n_valid_queries"] < n_query
    actual = retrieval_metrics(query_feats, query_labels, gallery_feats, gallery_labels, KS)
    assert_metrics_close(actual, expected)

    # A gallery smaller than the largest k: P@15 counts the whole gallery and still divides by 15.
    small = slice(0, 10)
    expected_small = oracle_metrics(query_feats, query_labels, gallery_feats[small], gallery_labels[small], KS)
    actual_small = retrieval_metrics(query_feats, query_labels, gallery_feats[small], gallery_labels[small], KS)
    assert_metrics_close(actual_small, expected_small)


def test_oracle_really_sees_ties():
    # Guards the test above: quantised features must produce tied scores, or the tie rule would go untested.
    rng = np.random.default_rng(10)
    q = quantised_features(rng, 5) / 2.0
    g = quantised_features(rng, 25) / 2.0
    scores = q @ g.T
    assert all(len(np.unique(row)) < len(row) for row in scores)


# ----------------------------------------------------------------------------------------------------------------
# Hand-computed cases
# ----------------------------------------------------------------------------------------------------------------

def test_coda_example_interpolated_vs_plain_ap():
    # Relevance in rank order [1,0,0,1,1,0,1]: R = 4, relevant at ranks 1, 4, 5, 7.
    # precision there: 1/1 = 1, 2/4 = 0.5, 3/5 = 0.6, 4/7 = 0.571428...
    # plain AP = (1 + 0.5 + 0.6 + 0.5714286) / 4 = 2.6714286 / 4 = 0.6678571
    # envelope (max precision at that rank or later; rank 6 has 3/6 = 0.5):
    #   rank 1: 1, rank 4: max(0.5, 0.6, 0.5, 0.5714) = 0.6, rank 5: 0.6, rank 7: 0.5714286
    # interpolated AP = (1 + 0.6 + 0.6 + 0.5714286) / 4 = 2.7714286 / 4 = 0.6928571
    relevance_in_rank_order = np.array([1, 0, 0, 1, 1, 0, 1])
    gallery_labels_in_rank_order = np.where(relevance_in_rank_order == 1, 8, 2)
    # Store the gallery shuffled so that the ranking really has to be computed.
    perm = np.array([4, 0, 6, 2, 5, 1, 3])
    gallery_feats = features_in_rank_order(7)[perm]
    gallery_labels = gallery_labels_in_rank_order[perm]
    query_feats, query_labels = np.array([[1.0, 0.0]]), np.array([8])

    metrics = retrieval_metrics(query_feats, query_labels, gallery_feats, gallery_labels, ks=(1, 5, 10))
    assert metrics["map_all"] == pytest.approx((1 + 2 / 4 + 3 / 5 + 4 / 7) / 4, abs=1e-12)
    assert metrics["map_all"] == pytest.approx(0.6678571, abs=1e-7)
    assert metrics["map_all_coda"] == pytest.approx((1 + 3 / 5 + 3 / 5 + 4 / 7) / 4, abs=1e-12)
    assert metrics["map_all_coda"] == pytest.approx(0.6928571, abs=1e-7)
    assert metrics["p_at_1"] == 1.0
    assert metrics["p_at_5"] == pytest.approx(3 / 5)  # ranks 1, 4, 5 in the top 5
    assert metrics["p_at_10"] == pytest.approx(4 / 10)  # k > G = 7: all 4 hits, divided by k = 10
    np.testing.assert_array_equal(ranked_topk(query_feats, gallery_feats, 7)[0].numpy(), np.argsort(perm))


def test_class_balanced_mean_differs_from_query_mean():
    # Gallery: g0 = [1, 0] (label 7), g1 = [0, 1] (label 42). Scores are 1 or 0, no ties.
    # Queries of label 7: [1,0] -> ranking g0,g1 -> rel [1,0] -> AP 1 (twice); [0,1] -> rel [0,1] -> AP 1/2.
    # Query of label 42: [1,0] -> ranking g0,g1 -> rel [0,1] -> AP 1/2.
    # With a single relevant item the envelope equals the precision, so interpolated AP = plain AP here.
    # query mean     = (1 + 1 + 0.5 + 0.5) / 4 = 0.75
    # class-balanced = (mean(1, 1, 0.5) + 0.5) / 2 = (0.8333333 + 0.5) / 2 = 0.6666667
    gallery_feats = np.array([[1.0, 0.0], [0.0, 1.0]])
    gallery_labels = np.array([7, 42])
    query_feats = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    query_labels = np.array([7, 7, 7, 42])

    metrics = retrieval_metrics(query_feats, query_labels, gallery_feats, gallery_labels, ks=(1,))
    assert metrics["map_all"] == pytest.approx(0.75, abs=1e-12)
    assert metrics["map_all_coda"] == pytest.approx(2 / 3, abs=1e-12)
    assert metrics["p_at_1"] == pytest.approx(2 / 4)  # hits at rank 1: the first two queries only


def test_a_tied_group_scores_its_expected_value_not_its_storage_order():
    # Every gallery row is [1, 0] and the query is [-1, 0]: all scores are -1 (negative scores must still count
    # as retrieved, unlike torchmetrics), one tied group of t = G = 5 items, r = R = 3 relevant (labels [5,9,5,9,9],
    # query label 9). Gallery order would give rel [0,1,0,1,1] and AP 0.533; the reverse order 0.917.
    # Expected AP (McSherry & Najork): (1/3) sum_{j=1..5} (3/5) (1 + (j - 1)(3 - 1)/(5 - 1)) / j
    #   = (1/5) (1/1 + 1.5/2 + 2/3 + 2.5/4 + 3/5) = (1/5) 3.6416667 = 0.7283333,
    # the random-ranking value (R - 1)/(G - 1) + H_5 (G - R)/(G (G - 1)) = 2/4 + 2.2833333 * 2/20 = 0.7283333.
    # Expected precision is 3/5 at every rank, so the VOC AP of the expected curve is 0.6; P@1 = P@5 = 3/5.
    gallery_feats = np.tile([1.0, 0.0], (5, 1))
    gallery_labels = np.array([5, 9, 5, 9, 9])
    query_feats, query_labels = np.array([[-1.0, 0.0]]), np.array([9])

    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [1, 3, 4, 0, 2]):
        metrics = retrieval_metrics(query_feats, query_labels, gallery_feats[order], gallery_labels[order], ks=(1, 5))
        assert metrics["map_all"] == pytest.approx(0.7283333333, abs=1e-9)
        assert metrics["map_all"] == pytest.approx(2 / 4 + (1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) * 2 / 20, abs=1e-12)
        assert metrics["map_all_coda"] == pytest.approx(0.6, abs=1e-12)
        assert metrics["p_at_1"] == pytest.approx(0.6, abs=1e-12)
        assert metrics["p_at_5"] == pytest.approx(0.6, abs=1e-12)
    # ranked_topk, a utility for looking at rankings, shows a tied group in gallery order.
    np.testing.assert_array_equal(ranked_topk(query_feats, gallery_feats, 5).numpy(), [[0, 1, 2, 3, 4]])


def random_ranking_expected_ap(n_relevant, n_gallery):
    """E[AP] of a uniformly random ranking: (R - 1)/(G - 1) + H_G (G - R) / (G (G - 1))."""
    harmonic = sum(1 / i for i in range(1, n_gallery + 1))
    return (n_relevant - 1) / (n_gallery - 1) + harmonic * (n_gallery - n_relevant) / (n_gallery * (n_gallery - 1))


def test_collapsed_model_scores_a_random_ranking_whatever_the_gallery_order():
    # The input: 4 classes x 5 images, every image mapped to one vector. Gallery index order used to give
    # map_all_coda 0.521 (per-class AP 1.0, 0.5, 0.33, 0.25) and another value for a shuffled gallery.
    # Now: every query has one tied group of G = 20 items with R = 5 relevant.
    #   map_all = (5 - 1)/19 + H_20 * 15/(20 * 19) = 0.2105263 + 3.5977397 * 0.0394737 = 0.3525424
    #   P@k = 5/20 = 0.25 for every k; map_all_coda = prevalence R/G = 0.25.
    labels = torch.arange(4).repeat_interleave(5)
    feats = torch.ones(20, 8)
    expected_ap = random_ranking_expected_ap(5, 20)
    assert expected_ap == pytest.approx(0.3525424, abs=1e-7)
    # The exact expected VOC AP of a random ranking, over all C(20, 5) = 15504 relevance patterns.
    expected_voc = np.mean([oracle_voc_ap(rel) for rel in every_ordering([[1] * 5 + [0] * 15])])
    torch.manual_seed(0)
    for permutation in [torch.arange(20)] + [torch.randperm(20) for _ in range(3)]:
        metrics = retrieval_metrics(feats, labels, feats[permutation], labels[permutation], ks=(1, 5, 15))
        assert metrics["map_all"] == pytest.approx(expected_ap, abs=1e-12)
        assert metrics["map_all_coda"] == pytest.approx(0.25, abs=1e-12)
        assert metrics["map_all_coda"] <= expected_ap < expected_voc       # never above a random ranking
        for k in (1, 5, 15):
            assert metrics[f"p_at_{k}"] == pytest.approx(0.25, abs=1e-12)


def tied_gallery(levels, relevant):
    """2-D unit features whose score against the query [1, 0] falls with the level: equal levels tie exactly."""
    angles = 0.1 * np.asarray(levels, dtype=float)
    feats = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return feats, np.where(np.asarray(relevant) == 1, 7, 3)


@pytest.mark.parametrize("seed", range(6))
def test_tie_formulas_are_the_average_over_every_ordering(seed):
    # Small galleries with random tied groups: enumerate every relevance sequence the groups allow (all equally
    # likely) and average the tie-free metrics. Plain AP and P@k must equal that average exactly; the VOC AP of
    # the expected curve must not exceed the average VOC AP (ties never earn credit) and must equal it without ties.
    rng = np.random.default_rng(seed)
    query = np.array([[1.0, 0.0]])
    for _ in range(15):
        n_gallery = int(rng.integers(2, 10))
        levels = rng.integers(0, 4, size=n_gallery)
        relevant = rng.integers(0, 2, size=n_gallery)
        relevant[rng.integers(n_gallery)] = 1
        feats, labels = tied_gallery(levels, relevant)
        groups = [[int(r) for r, l in zip(relevant, levels) if l == level] for level in sorted(set(levels))]
        orderings = list(every_ordering(groups))
        metrics = retrieval_metrics(query, np.array([7]), feats, labels, ks=(1, 2, 5))
        assert metrics["map_all"] == pytest.approx(np.mean([oracle_plain_ap(o) for o in orderings]), abs=1e-12)
        for k in (1, 2, 5):
            assert metrics[f"p_at_{k}"] == pytest.approx(np.mean([sum(o[:k]) / k for o in orderings]), abs=1e-12)
        average_voc = np.mean([oracle_voc_ap(o) for o in orderings])
        assert metrics["map_all_coda"] <= average_voc + 1e-12
        assert metrics["map_all_coda"] == pytest.approx(oracle_voc_of_expected_curve(groups), abs=1e-12)
        if len(orderings) == 1:
            assert metrics["map_all_coda"] == pytest.approx(average_voc, abs=1e-12)


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_every_ranked_quantity_is_the_same_for_any_gallery_order(seed):
    # Quantised features (many partial ties) plus exact duplicates, stored class by class, then shuffled: every
    # metric, open-set metric and the figures' judgements per rank are equal, not merely close.
    rng = np.random.default_rng(seed)
    gallery_feats = quantised_features(rng, 40)
    gallery_feats[10:14] = gallery_feats[3]
    gallery_labels = rng.choice(LABELS[:3], size=40)
    by_class = np.argsort(gallery_labels, kind="stable")
    query_feats = quantised_features(rng, 25)
    query_labels = rng.choice(LABELS, size=25)          # label 1001 is absent from the gallery: private queries
    private_pred = rng.random(25) < 0.4
    reference = None
    for order in [by_class, by_class[::-1]] + [rng.permutation(40) for _ in range(3)]:
        g, gl = gallery_feats[order], gallery_labels[order]
        result = (retrieval_metrics(query_feats, query_labels, g, gl, KS),
                  open_set_metrics(query_feats, query_labels, g, gl, private_pred, KS),
                  [(q["retrieved_tied"], q["retrieved_expected_correct"])
                   for q in retrieval_sample(query_feats, query_labels, g, gl, np.arange(25), 5)])
        reference = reference or result
        assert result == reference
    assert 0 < int(tied_top_k(query_feats, gallery_feats, 15).sum()) <= 25    # the input really ties in the top 15


def test_tied_path_equals_the_untied_path_on_tie_free_rankings():
    # The general (tied) formulas reduce to the usual ones when every group has one item.
    rng = np.random.default_rng(30)
    relevant = torch.from_numpy(rng.random((12, 50)) < 0.3)
    relevant[:, 0] = True
    distinct_scores = torch.linspace(1, -1, 50, dtype=torch.float64).expand(12, 50)
    untied = evaluation._untied_metrics(relevant, KS)
    tied = evaluation._tied_metrics(distinct_scores, relevant, KS)
    for a, b in [(untied[0], tied[0]), (untied[1], tied[1])] + [(untied[2][k], tied[2][k]) for k in KS]:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert torch.equal(untied[3], tied[3])


def test_queries_without_relevant_items_are_excluded_and_counted():
    rng = np.random.default_rng(5)
    gallery_feats = quantised_features(rng, 12)
    gallery_labels = rng.choice([3, 17], size=12)
    valid_feats = quantised_features(rng, 6)
    valid_labels = rng.choice([3, 17], size=6)
    invalid_feats = quantised_features(rng, 4)
    invalid_labels = np.array([99, 100, 99, 4])  # absent from the gallery

    only_valid = retrieval_metrics(valid_feats, valid_labels, gallery_feats, gallery_labels)
    mixed = retrieval_metrics(
        np.concatenate([invalid_feats[:2], valid_feats, invalid_feats[2:]]),
        np.concatenate([invalid_labels[:2], valid_labels, invalid_labels[2:]]),
        gallery_feats,
        gallery_labels,
    )
    assert (mixed["n_queries"], mixed["n_valid_queries"]) == (10, 6)
    for key in ["map_all", "map_all_coda"] + [f"p_at_{k}" for k in KS]:
        assert mixed[key] == pytest.approx(only_valid[key], abs=1e-12), key


def test_no_valid_query_gives_nan_not_an_error():
    metrics = retrieval_metrics(np.eye(2), np.array([1, 2]), np.eye(2), np.array([5, 6]))
    assert (metrics["n_queries"], metrics["n_valid_queries"]) == (2, 0)
    for key in ["map_all", "map_all_coda", "p_at_1", "p_at_5", "p_at_15"]:
        assert math.isnan(metrics[key]), key


def test_results_are_python_numbers_and_inputs_may_be_tensors_or_arrays():
    rng = np.random.default_rng(3)
    qf, gf = quantised_features(rng, 8), quantised_features(rng, 9)
    ql, gl = rng.choice([3, 17], size=8), rng.choice([3, 17], size=9)
    from_numpy = retrieval_metrics(qf, ql, gf, gl)
    from_torch = retrieval_metrics(torch.from_numpy(qf).float(), torch.from_numpy(ql), torch.from_numpy(gf), gl)
    assert from_numpy == from_torch
    assert all(type(v) is float for k, v in from_numpy.items() if not k.startswith("n_"))
    assert type(from_numpy["n_queries"]) is int and type(from_numpy["n_valid_queries"]) is int


def test_unnormalised_features_are_normalised():
    rng = np.random.default_rng(4)
    qf, gf = rng.standard_normal((10, 5)), rng.standard_normal((12, 5))
    ql, gl = rng.choice([1, 2], size=10), rng.choice([1, 2], size=12)
    scaled = retrieval_metrics(qf * rng.uniform(0.1, 10, (10, 1)), ql, gf * rng.uniform(0.1, 10, (12, 1)), gl)
    assert_metrics_close(scaled, retrieval_metrics(qf, ql, gf, gl), tol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Chunking and devices
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("quantised", [True, False])
def test_chunk_size_does_not_change_results(quantised):
    rng = np.random.default_rng(7)
    make = quantised_features if quantised else (lambda r, n: r.standard_normal((n, 6)))
    qf, gf = make(rng, 23), make(rng, 31)
    ql, gl = rng.choice(np.append(LABELS, 555), size=23), rng.choice(LABELS, size=31)
    results = [retrieval_metrics(qf, ql, gf, gl, chunk_size=c) for c in (1, 3, 1024)]
    for other in results[1:]:
        assert_metrics_close(other, results[0], tol=0.0)
    private = rng.random(23) < 0.5
    open_results = [open_set_metrics(qf, ql, gf, gl, private, chunk_size=c) for c in (1, 3, 1024)]
    for other in open_results[1:]:
        assert_metrics_close(other, open_results[0], tol=0.0)
    tops = [ranked_topk(qf, gf, 10, chunk_size=c) for c in (1, 3, 1024)]
    for other in tops[1:]:
        assert torch.equal(other, tops[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(8)
    qf, gf = quantised_features(rng, 50), quantised_features(rng, 70)
    ql, gl = rng.choice(np.append(LABELS, 555), size=50), rng.choice(LABELS, size=70)
    on_cpu = retrieval_metrics(qf, ql, gf, gl, chunk_size=16)
    on_cuda = retrieval_metrics(torch.from_numpy(qf).cuda(), ql, gf, gl, chunk_size=16)
    assert_metrics_close(on_cuda, on_cpu, tol=1e-12)
    assert ranked_topk(qf, gf, 9, device="cuda").is_cuda


# ----------------------------------------------------------------------------------------------------------------
# Open set
# ----------------------------------------------------------------------------------------------------------------

def test_open_set_metrics_hand_built_case():
    # Gallery: g0 = [1, 0] (label 3), g1 = [0, 1] (label 8), g2 = [0.6, 0.8] (label 3). Gallery labels {3, 8}.
    # Shared queries (their label is in the gallery):
    #   q0 = [1, 0], label 3: scores [1, 0, 0.6] -> g0, g2, g1 -> rel [1,1,0] -> AP 1, AP~ 1, hit@1
    #   q1 = [1, 0], label 8: same ranking    -> rel [0,0,1] -> AP 1/3, AP~ 1/3, miss@1 (flagged private!)
    #   q2 = [0, 1], label 3: scores [0, 1, 0.8] -> g1, g2, g0 -> rel [0,1,1]
    #       precision 1/2, 2/3 -> AP = (1/2 + 2/3) / 2 = 7/12; envelope 2/3, 2/3 -> AP~ = 2/3; miss@1
    # Private queries: q3 (label 5), q4 (label 5), q5 (label 9).
    # shared_map_all_plain = (1 + 1/3 + 7/12) / 3 = 23/36 = 0.6388889
    # shared_map_all (class-balanced AP~) = (mean(1, 2/3) [label 3] + 1/3 [label 8]) / 2 = (5/6 + 1/3)/2 = 7/12
    # shared_p_at_1 = 1/3
    # private_pred [F, T, F, T, F, T] vs truth [F, F, F, T, T, T]:
    #   open_set_acc = 2/3 (q3, q5 caught, q4 missed); detection_acc = 4/6 (q0, q2, q3, q5 right);
    #   shared_false_null_rate = 1/3 (q1).
    gallery_feats = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    gallery_labels = np.array([3, 8, 3])
    query_feats = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    query_labels = np.array([3, 8, 3, 5, 5, 9])
    private_pred = np.array([False, True, False, True, False, True])

    metrics = open_set_metrics(query_feats, query_labels, gallery_feats, gallery_labels, private_pred, ks=(1,))
    expected = {
        "shared_map_all": 7 / 12,
        "shared_map_all_plain": 23 / 36,
        "shared_p_at_1": 1 / 3,
        "open_set_acc": 2 / 3,
        "detection_acc": 4 / 6,
        "shared_false_null_rate": 1 / 3,
        "n_queries": 6,
        "n_shared_queries": 3,
        "n_private_queries": 3,
    }
    assert_metrics_close(metrics, expected)

    # The shared retrieval metrics do not depend on the detector.
    flipped = open_set_metrics(query_feats, query_labels, gallery_feats, gallery_labels, ~private_pred, ks=(1,))
    assert flipped["shared_map_all"] == metrics["shared_map_all"]
    assert flipped["open_set_acc"] == pytest.approx(1 / 3)


def test_open_set_acc_is_nan_without_private_queries():
    metrics = open_set_metrics(np.eye(2), np.array([0, 1]), np.eye(2), np.array([0, 1]), np.array([True, False]))
    assert math.isnan(metrics["open_set_acc"])
    assert metrics["detection_acc"] == 0.5
    assert metrics["shared_false_null_rate"] == 0.5
    assert metrics["shared_map_all"] == 1.0


# ----------------------------------------------------------------------------------------------------------------
# ranked_topk
# ----------------------------------------------------------------------------------------------------------------

def test_ranked_topk_agrees_with_full_argsort_under_the_tie_rule():
    rng = np.random.default_rng(9)
    qf, gf = quantised_features(rng, 17), quantised_features(rng, 20)
    scores = (qf / 2.0) @ (gf / 2.0).T  # exact multiples of 0.25, many ties
    # lexsort: the last key is primary (descending score), then the gallery index.
    expected = np.stack([np.lexsort((np.arange(20), -row)) for row in scores])
    top = ranked_topk(qf, gf, 6, chunk_size=5)
    assert top.dtype == torch.long and top.shape == (17, 6)
    np.testing.assert_array_equal(top.numpy(), expected[:, :6])
    np.testing.assert_array_equal(ranked_topk(qf, gf, 50).numpy(), expected)  # k > G is clipped to G


# ----------------------------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------------------------

def test_invalid_inputs_raise_value_errors_naming_the_problem():
    feats, labels = np.eye(3), np.array([0, 1, 2])
    with pytest.raises(ValueError, match="query_feats has 3 rows but query_labels has 2"):
        retrieval_metrics(feats, labels[:2], feats, labels)
    with pytest.raises(ValueError, match="gallery_feats has 3 rows but gallery_labels has 4"):
        retrieval_metrics(feats, labels, feats, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="feature dims differ"):
        retrieval_metrics(feats, labels, np.eye(3, 4), labels)
    with pytest.raises(ValueError, match="gallery is empty"):
        retrieval_metrics(feats, labels, np.zeros((0, 3)), np.zeros(0, dtype=int))
    bad = feats.copy()
    bad[0, 1], bad[2, 2] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"query_feats has 2 row\(s\) containing NaN or inf"):
        retrieval_metrics(bad, labels, feats, labels)
    with pytest.raises(ValueError, match=r"gallery_feats has 2 row\(s\)"):
        retrieval_metrics(feats, labels, bad, labels)
    with pytest.raises(ValueError, match="integer class ids"):
        retrieval_metrics(feats, labels.astype(float), feats, labels)
    with pytest.raises(ValueError, match="positive integer"):
        retrieval_metrics(feats, labels, feats, labels, ks=(0,))
    with pytest.raises(ValueError, match="private_pred has 2 entries but there are 3 queries"):
        open_set_metrics(feats, labels, feats, labels, np.array([True, False]))
    with pytest.raises(ValueError, match="NaN or inf"):
        ranked_topk(bad, feats, 2)
