"""Tests of benchmark/evaluation.py against sklearn, a brute-force oracle, and hand-computed cases.

Tie-heavy data uses "quantised" features: vectors in {-1, 0, 1}^6 with exactly four non-zero entries. Their norm
is 2, so the normalised entries are +-0.5 and every cosine is a multiple of 0.25 — exact in float32 and float64
whatever the summation order, so the oracle (numpy, float64) sees exactly the same ties as the torch code.
"""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from benchmark.evaluation import open_set_metrics, per_query_metrics, ranked_topk, retrieval_metrics

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

def oracle_relevance(query_feat, query_label, gallery_feats, gallery_labels):
    q = query_feat / np.linalg.norm(query_feat)
    scores = [float(np.dot(q, g / np.linalg.norm(g))) for g in gallery_feats]
    # Descending score; equal scores keep the lower gallery index first.
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    return [int(gallery_labels[j] == query_label) for j in order]


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


def oracle_metrics(query_feats, query_labels, gallery_feats, gallery_labels, ks):
    plain, precision_at = [], {k: [] for k in ks}
    voc_by_class = {}
    for feat, label in zip(query_feats, query_labels):
        rel = oracle_relevance(feat, label, gallery_feats, gallery_labels)
        if sum(rel) == 0:
            continue  # invalid query
        plain.append(oracle_plain_ap(rel))
        voc_by_class.setdefault(int(label), []).append(oracle_voc_ap(rel))
        for k in ks:
            precision_at[k].append(sum(rel[:k]) / k)
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


def test_equal_scores_are_ranked_by_gallery_index():
    # Every gallery row is [1, 0] and the query is [-1, 0]: all scores are -1 (negative scores must still count
    # as retrieved, unlike torchmetrics). Ranking = gallery order; labels [5,9,5,9,9] -> rel [0,1,0,1,1].
    # precision at ranks 2, 4, 5: 1/2, 2/4, 3/5 -> plain AP = (0.5 + 0.5 + 0.6) / 3 = 0.5333333
    # envelope: 0.6 at all three -> interpolated AP = 0.6. P@1 = 0, P@5 = 3/5.
    # (Reverse index order would give rel [1,1,0,1,0] and AP = (1 + 1 + 3/4) / 3 = 0.9166667.)
    gallery_feats = np.tile([1.0, 0.0], (5, 1))
    gallery_labels = np.array([5, 9, 5, 9, 9])
    query_feats, query_labels = np.array([[-1.0, 0.0]]), np.array([9])

    metrics = retrieval_metrics(query_feats, query_labels, gallery_feats, gallery_labels, ks=(1, 5))
    assert metrics["map_all"] == pytest.approx(1.6 / 3, abs=1e-12)
    assert metrics["map_all_coda"] == pytest.approx(0.6, abs=1e-12)
    assert metrics["p_at_1"] == 0.0
    assert metrics["p_at_5"] == pytest.approx(0.6)
    np.testing.assert_array_equal(ranked_topk(query_feats, gallery_feats, 5).numpy(), [[0, 1, 2, 3, 4]])


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
