"""The rules for the cluster count (methods/cluster_count.py): each score against a slow or hand-computed oracle, each
curve rule on a curve computed by hand, the K range rule, and the rules on the bisecting k-means path."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from benchmark.separable import adjusted_rand_index, separated_domains
from methods.cluster_count import (K_RULES, calinski_harabasz_index, choose_k, chord_elbow, cosine_silhouette,
                                   davies_bouldin_index, gap_statistic, jump_method, jump_values, k_range_for,
                                   kmeans_with_k_rule, kneedle)
from methods.clustering import inertia, kmeans_path


def means_of(points: torch.Tensor, assignment: torch.Tensor, k: int) -> torch.Tensor:
    return torch.stack([points[assignment == c].mean(dim=0) for c in range(k)])


def test_cosine_silhouette_by_hand():
    # Four unit vectors: a = (1, 0), b = (0.8, 0.6) in cluster 0; c = (0, 1), d = (-0.6, 0.8) in cluster 1.
    # Cosine distances: ab 0.2, ac 1, ad 1.6, bc 0.4, bd 1.0, cd 0.2.
    # s_a: a = 0.2, b = (1 + 1.6) / 2 = 1.3 -> 1.1 / 1.3;   s_b: a = 0.2, b = (0.4 + 1.0) / 2 = 0.7 -> 0.5 / 0.7
    # s_c: a = 0.2, b = (1 + 0.4) / 2 = 0.7 -> 0.5 / 0.7;   s_d: a = 0.2, b = (1.6 + 1.0) / 2 = 1.3 -> 1.1 / 1.3
    points = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    expected = (2 * 1.1 / 1.3 + 2 * 0.5 / 0.7) / 4                  # 0.78022
    assert cosine_silhouette(points, torch.tensor([0, 0, 1, 1]), 2) == pytest.approx(expected, abs=1e-6)
    # Rows of any norm (cosine), a alone in cluster 0, {b, c, d} in cluster 1: s_a = 0 (alone);
    # s_b: a = (0.4 + 1.0) / 2 = 0.7, b = 0.2 -> -0.5 / 0.7;  s_c: a = (0.4 + 0.2) / 2 = 0.3, b = 1 -> 0.7;
    # s_d: a = (1.0 + 0.2) / 2 = 0.6, b = 1.6 -> 1.0 / 1.6;  mean (0 - 0.71429 + 0.7 + 0.625) / 4 = 0.15268
    scaled = points * torch.tensor([[3.0], [1.0], [0.5], [2.0]])
    expected = (0 - 0.5 / 0.7 + 0.7 + 1.0 / 1.6) / 4
    assert cosine_silhouette(scaled, torch.tensor([0, 1, 1, 1]), 2) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_cosine_silhouette_matches_scikit_learn_with_an_empty_cluster(seed, monkeypatch):
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(300, 24, generator=generator)
    assignment = torch.randint(0, 7, (300,), generator=generator)
    assignment[assignment == 3] = 4             # cluster 3 empty
    assignment[0] = 7                           # cluster 7 a single point
    expected = silhouette_score(points.numpy(), assignment.numpy(), metric="cosine")
    assert cosine_silhouette(points, assignment, 8) == pytest.approx(expected, abs=1e-5)
    monkeypatch.setattr("methods.cluster_count.SILHOUETTE_BLOCK", 64)       # in blocks of rows: the same value
    assert cosine_silhouette(points, assignment, 8) == pytest.approx(expected, abs=1e-5)


def test_davies_bouldin_and_calinski_harabasz_match_scikit_learn():
    query, _, _, _ = separated_domains(6, dim=16, per_class=20, noise=0.8, seed=1)
    path = kmeans_path(query, range(2, 9), seed=0)
    total = float(((query.double() - query.double().mean(dim=0)) ** 2).sum())
    for k in path.ks:
        assignment = path.assignments[k]
        centroids = means_of(query, assignment, k)
        assert davies_bouldin_index(query, centroids, assignment) == pytest.approx(
            davies_bouldin_score(query.numpy(), assignment.numpy()), rel=1e-4)
        assert calinski_harabasz_index(total, inertia(query, centroids, assignment), len(query), k) == pytest.approx(
            calinski_harabasz_score(query.numpy(), assignment.numpy()), rel=1e-4)


def test_chord_elbow_and_kneedle_by_hand():
    # Inertia 100, 50, 20, 15, 12, 10 for K = 1..6, both axes scaled to [0, 1]: the chord from (0, 1) to (1, 0) lies
    # farthest above the curve at K = 3 (chord 0.6 vs curve 0.111); Kneedle's first knee is the same.
    curve = {1: 100, 2: 50, 3: 20, 4: 15, 5: 12, 6: 10}
    assert chord_elbow(curve) == 3 and kneedle(curve) == 3
    # Inertia 100, 50, 45, 5, 2, 0: distances below the chord (1 - x) - y = 0, .3, .15, .35, .18, 0.
    # Chord elbow: the largest, K = 4. Kneedle, step 1/5 = 0.2: the local maximum at K = 2 (0.3) needs a later
    # value below 0.3 - S 0.2; with S = 1 (0.1) the next values 0.15 then 0.35 (higher: not a knee) -> the knee at
    # K = 4 (0.35, then 0.18 and 0 < 0.15); with S = 0.5 (0.2) the 0.15 at K = 3 makes K = 2 the knee.
    curve = {1: 100, 2: 50, 3: 45, 4: 5, 5: 2, 6: 0}
    assert chord_elbow(curve) == 4
    assert kneedle(curve) == 4 and kneedle(curve, sensitivity=0.5) == 2


def test_jump_method_by_hand():
    # W = 8, 2, 1.5 for K = 1..3, N = 2 points in p = 2 dimensions: d_K = W / 4 = 2, 0.5, 0.375.
    # Y = 1: d^-1 = 0.5, 2, 2.667; jumps 0.5, 1.5, 0.667 -> K = 2. Y = 3: d^-3 = 0.125, 8, 18.96; jumps 0.125,
    # 7.875, 10.96 -> K = 3.
    curve = {1: 8.0, 2: 2.0, 3: 1.5}
    assert jump_method(curve, n_points=2, dim=2, power=1.0) == 2
    # The jumps as reported, scaled by the largest d^-Y (2.667): 0.5 / 2.667, 1.5 / 2.667, 0.667 / 2.667
    assert list(jump_values(curve, 2, 2, 1.0).values()) == pytest.approx([0.1875, 0.5625, 0.25])
    assert jump_method(curve, n_points=2, dim=2, power=3.0) == 3


def test_gap_statistic_finds_blobs_and_no_structure():
    generator = torch.Generator().manual_seed(0)
    blobs = torch.cat([centre + 0.05 * torch.randn(40, 2, generator=generator)
                       for centre in torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])])
    assert gap_statistic(blobs, kmeans_path(blobs, range(1, 7), seed=0), seed=0).k == 3
    uniform = torch.rand(120, 2, generator=generator)
    assert gap_statistic(uniform, kmeans_path(uniform, range(1, 7), seed=0), seed=0).k == 1


def test_k_range_is_a_rule_of_the_bank_size():
    # ceil(2 sqrt N): 4,400 points -> 2 sqrt(4400) = 132.7 -> 133; Office-31's DSLR (498) -> 45 >= 31 classes;
    # DomainNet's smallest domain (Clipart, 48,129) -> 439 >= 345 classes.
    assert k_range_for(4400) == range(2, 134)
    assert k_range_for(498).stop - 1 == 45 and k_range_for(48129).stop - 1 == 439
    assert k_range_for(4400, k_max=24) == range(2, 25) and k_range_for(5, k_max=24) == range(2, 6)
    with pytest.raises(ValueError, match="no K range for 1 points"):
        k_range_for(1)
    with pytest.raises(ValueError, match="k_min=30, k_max=10"):
        k_range_for(100, k_min=30, k_max=10)


def test_unknown_rule_is_refused_with_the_known_ones():
    points = torch.randn(20, 4)
    with pytest.raises(ValueError, match="unknown rule for the cluster count 'knee'; expected one of silhouette"):
        kmeans_with_k_rule(points, range(2, 5), rule="knee", seed=0)


@pytest.mark.parametrize("noise", [0.6, 1.0])
def test_the_bisecting_path_finds_noisy_classes_that_the_point_chain_did_not(noise):
    # 10 classes x 50 points in 128-d: a nearest-class-mean classifier separates them perfectly at both noises.
    # The chain that added one k-means++ point per K left two classes on one centre (at noise 1.0 its 10-means
    # had an adjusted Rand index of 0.13); the bisecting path's 10-means are the classes.
    query, labels, _, _ = separated_domains(10, dim=128, per_class=50, noise=noise, seed=0)
    path = kmeans_path(query, range(2, 46), seed=0)
    assert adjusted_rand_index(labels, path.assignments[10]) == 1.0
    curve = [path.inertias[k] for k in path.ks]
    assert all(later <= earlier * (1 + 1e-6) for earlier, later in zip(curve, curve[1:]))
    assert choose_k("silhouette", query, path).k == 10


def test_every_rule_runs_on_a_path_and_reports_its_scores():
    query, _, _, _ = separated_domains(4, dim=16, per_class=15, noise=0.3, seed=2)
    path = kmeans_path(query, range(2, 9), seed=0)
    for rule in K_RULES:
        choice = choose_k(rule, query, path, seed=0)
        assert choice.k in path.ks and set(choice.scores) <= set(path.ks), rule
        assert choice.k == 4, rule                          # four plainly separate classes: every rule agrees
    centroids, assignment, k = kmeans_with_k_rule(query, range(2, 9), rule="silhouette", seed=0)
    assert k == 4 and torch.equal(assignment, path.assignments[4]) and torch.equal(centroids, path.centroids[4])
    assert not math.isnan(float(np.mean(list(choose_k("jump", query, path).scores.values()))))
