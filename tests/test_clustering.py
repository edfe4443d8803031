"""The harness's k-means (greedy k-means++, restarts, canonical order) and its path over K (bisections), on clusters
that are plainly there; the inputs that made the old single-start faiss k-means split and merge them."""
from __future__ import annotations

import math

import pytest
import torch

from methods.cluster_count import kmeans_with_k_rule
from methods.clustering import empty_clusters, inertia, kmeans, kmeans_path
from methods.uem import open_set_detector_b1

from .conftest import separated_domains


def same_partition(assignment: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether the clusters are exactly the label groups (up to renaming)."""
    pairs = set(zip(assignment.tolist(), labels.tolist()))
    return len(pairs) == len(set(assignment.tolist())) == len(set(labels.tolist()))


@pytest.mark.slow
@pytest.mark.parametrize("n_classes", [10, 16])
def test_the_issue_input_gives_the_true_k_every_merge_and_a_working_detector(n_classes):
    # 128-d, a query domain of 10 (16) classes x 60, the retrieval domain the first half, no shift. With one faiss
    # start per K: K = 10 and 7, no merged pair, every query null (detection accuracy 0.50). Right answer: K = C and
    # C/2, C/2 merged pairs (each a shared class with itself), detection accuracy 1.
    query, query_labels, retrieval, retrieval_labels = separated_domains(n_classes)
    detection = open_set_detector_b1(query, retrieval, seed=0)
    assert (detection.clusters_query, detection.clusters_retrieval) == (n_classes, n_classes // 2)
    assert len(detection.merged_pairs) == n_classes // 2
    truly_private = ~torch.isin(query_labels, retrieval_labels)
    assert (detection.private == truly_private).float().mean().item() == 1.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_classes", [3, 8, 20])
def test_kmeans_recovers_separated_clusters(seed, n_classes):
    query, labels, _, _ = separated_domains(n_classes, dim=32, per_class=25, seed=seed)
    centroids, assignment = kmeans(query, n_classes, seed=seed)
    assert same_partition(assignment, labels)
    # The centroids are the means of their members.
    for cluster in range(n_classes):
        torch.testing.assert_close(centroids[cluster], query[assignment == cluster].mean(dim=0))


def test_kmeans_does_not_depend_on_the_storage_order_and_repeats_with_its_seed():
    query, _, _, _ = separated_domains(12, dim=16, per_class=20, noise=0.8)      # overlapping: a real choice
    centroids, assignment = kmeans(query, 7, seed=5)
    again = kmeans(query, 7, seed=5)
    assert torch.equal(centroids, again[0]) and torch.equal(assignment, again[1])
    for permutation in (torch.randperm(len(query), generator=torch.Generator().manual_seed(s)) for s in range(3)):
        moved_centroids, moved_assignment = kmeans(query[permutation], 7, seed=5)
        assert torch.equal(moved_centroids, centroids)
        assert torch.equal(moved_assignment, assignment[permutation])
    chosen = kmeans_with_k_rule(query, range(2, 15), rule="silhouette", seed=1)
    permutation = torch.randperm(len(query), generator=torch.Generator().manual_seed(9))
    moved = kmeans_with_k_rule(query[permutation], range(2, 15), rule="silhouette", seed=1)
    assert moved[2] == chosen[2] and torch.equal(moved[0], chosen[0]) and torch.equal(moved[1],
                                                                                      chosen[1][permutation])


def test_restarts_keep_the_lowest_inertia():
    query, _, _, _ = separated_domains(12, dim=16, per_class=20, noise=0.8)
    one = [inertia(query, *kmeans(query, 7, seed=s, restarts=1)) for s in range(6)]
    best_of_four = inertia(query, *kmeans(query, 7, seed=0, restarts=4))
    assert best_of_four <= sorted(one)[len(one) // 2] + 1e-4     # never worse than a typical single start


def test_the_path_finds_the_true_k_and_its_curve_never_rises():
    for n_classes, seed in [(4, 0), (7, 1), (12, 2), (25, 3)]:
        query, labels, _, _ = separated_domains(n_classes, dim=64, per_class=30, seed=seed)
        path = kmeans_path(query, range(2, 61), seed=seed)
        assert path.ks == list(range(2, 61)) and same_partition(path.assignments[n_classes], labels)
        assert all(len(path.centroids[k]) == k for k in path.ks)
        curve = [path.inertias[k] for k in path.ks]
        assert all(later <= earlier * (1 + 1e-6) for earlier, later in zip(curve, curve[1:]))
        for rule in ("silhouette", "elbow"):
            assert kmeans_with_k_rule(query, range(2, 61), rule=rule, seed=seed)[2] == n_classes, rule


def test_duplicates_empty_clusters_and_bad_input():
    # Three distinct points, each twice: k = 3 is exact; k = 5 leaves centres on duplicates, inertia 0.
    points = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
    centroids, assignment = kmeans(points, 3, seed=0)
    assert sorted(map(tuple, centroids.tolist())) == [(0.0, 0.0), (0.0, 5.0), (5.0, 0.0)]
    assert inertia(points, *kmeans(points, 5, seed=0)) == 0.0
    assert empty_clusters(torch.tensor([0, 0, 2]), 4) == 2
    with pytest.raises(ValueError, match="k=7 on 6 points"):
        kmeans(points, 7, seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        kmeans(torch.tensor([[0.0, math.nan], [1.0, 1.0]]), 1, seed=0)
    with pytest.raises(ValueError, match="no K of range"):
        kmeans_path(points, range(10, 20), seed=0)
    # Six points, three distinct: the path over K = 2..6 cuts clusters of duplicates (zero drop) without failing.
    assert kmeans_path(points, range(2, 7), seed=0).inertias[3] == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kmeans_on_cuda_finds_the_same_clusters():
    query, labels, _, _ = separated_domains(10, seed=3)
    _, assignment = kmeans(query.cuda(), 10, seed=0)
    assert assignment.is_cuda and same_partition(assignment.cpu(), labels)
    _, assignment, k = kmeans_with_k_rule(query.cuda(), range(2, 40), rule="silhouette", seed=0)
    assert k == 10 and assignment.is_cuda and same_partition(assignment.cpu(), labels)


def test_both_open_set_detectors_do_not_depend_on_the_gallery_order():
    # The retrieval domain stored class by class, then shuffled: UEM's detector (k-means on it, K by its rule) and the
    # baseline detector (the nearest retrieval item's distance) flag the same queries.
    from methods.open_set import cluster_radius_detector
    query, _, retrieval, _ = separated_domains(10, dim=32, per_class=30, noise=0.6, shift=0.3, seed=4)
    b1 = open_set_detector_b1(query, retrieval, seed=3, k_max=29).private
    b2 = cluster_radius_detector(query, retrieval, num_clusters=10, seed=3)
    for seed in range(3):
        permutation = torch.randperm(len(retrieval), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(open_set_detector_b1(query, retrieval[permutation], seed=3, k_max=29).private, b1)
        assert torch.equal(cluster_radius_detector(query, retrieval[permutation], num_clusters=10, seed=3), b2)
