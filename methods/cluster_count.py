"""How many clusters: rules that choose K from k-means run for every K of a range, and the range itself.

UEM clusters each memory bank without the class count (the paper's Sec. 3.2: "the Elbow method", its ref. [34], Liu &
Deng, IEEE TFS 2020, which gives neither a numeric rule nor a K range). `kmeans_with_k_rule` runs
`methods.clustering.kmeans_path` over the range and lets one of `K_RULES` choose:

- `silhouette` (default): the K of the largest mean silhouette (Rousseeuw, J. Comput. Appl. Math. 20, 1987) with the
  cosine distance 1 - cos(x, y). On unit vectors 1 - x.y summed over a cluster is |C| - x.S_C (S_C the sum of its
  members), so every point's mean distance to every cluster costs one [N, d] x [d, K] product: the silhouette is
  exact in O(N K d) per K, on the features' device, with no N x N matrix and no sample;
- `elbow`: the K farthest below the chord of the inertia curve, both axes scaled to [0, 1] (what UEM ran before);
- `davies_bouldin`: the smallest Davies-Bouldin index (IEEE TPAMI 1(2), 1979), Euclidean;
- `calinski_harabasz`: the largest Calinski-Harabasz ratio (Commun. Stat. 3(1), 1974);
- `kneedle`: the first knee of the inertia curve by Kneedle (Satopaa, Albrecht, Irwin & Raghavan, ICDCS workshops
  2011), sensitivity S = 1;
- `jump`: the largest jump of the transformed distortion d_K^(-Y), Y = p/2 (Sugar & James, JASA 98(463), 2003),
  with p the participation ratio of the covariance spectrum (the features' effective dimension);
- `gap`: the smallest K with Gap(K) >= Gap(K+1) - s_(K+1) (Tibshirani, Walther & Hastie, JRSS B 63(2), 2001),
  reference sets uniform in the box of the data's principal axes, `GAP_REFERENCES` of them, each clustered by
  its own k-means path (so it costs that many paths more).

docs/cluster_count.md compares them on a grid of separable but noisy classes (`python -m benchmark.kestimators`);
UEM's docstring gives the numbers behind the default.

The K range is a rule of the number of points N, never of a dataset's class count: K in [2, ceil(2 sqrt N)]
(`k_range_for`). A cluster then holds sqrt(N) / 2 points on average at the top of the range; the range covers
Office-31's 31 classes from N = 241 on (DSLR has 498 images), Office-Home's 65 from N = 1,057 (its smallest domain,
Art, has 2,427), DomainNet's 345 from N = 29,757 (its smallest domain, Clipart, has 48,129 images), and a k-means
path over it costs O(N^2 d), like the silhouette.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .clustering import KMeansPath, _cluster_sums, kmeans_path

__all__ = ["K_RULES", "KChoice", "calinski_harabasz_index", "choose_k", "chord_elbow", "cosine_silhouette",
           "davies_bouldin_index", "gap_statistic", "jump_method", "jump_values", "k_range_for", "kmeans_with_k_rule",
           "kneedle"]

K_RANGE_FACTOR = 2.0          # K_max = ceil(K_RANGE_FACTOR sqrt N)
GAP_REFERENCES = 5            # B, the gap statistic's reference sets
KNEEDLE_SENSITIVITY = 1.0     # S of Kneedle (its authors' default)
SILHOUETTE_BLOCK = 16384      # rows of `cosine_silhouette`'s product at a time


@dataclass
class KChoice:
    """The K a rule chose and the value it read at every K of the path ({K: score}; for `kneedle` and `elbow` the
    normalised curve's distance below its chord, for `jump` the jump, for `gap` Gap(K))."""
    k: int
    scores: dict[int, float]


def k_range_for(n_points: int, k_min: int = 2, k_max: int = 0) -> range:
    """The K range for a bank of `n_points`: [k_min, ceil(2 sqrt(n_points))], or [k_min, k_max] when k_max > 0;
    never above n_points. Raises ValueError for fewer than k_min points or k_max < k_min."""
    top = k_max if k_max > 0 else math.ceil(K_RANGE_FACTOR * math.sqrt(n_points))
    top = min(top, n_points)
    if n_points < k_min or top < k_min:
        raise ValueError(f"no K range for {n_points} points with k_min={k_min}, k_max={k_max} (0: "
                         f"ceil({K_RANGE_FACTOR:g} sqrt N)); expected k_min <= k_max <= the number of points")
    return range(k_min, top + 1)


# ----------------------------------------------------------------------------------------------------------------
# Scores of one partition
# ----------------------------------------------------------------------------------------------------------------

def cosine_silhouette(features: torch.Tensor, assignment: torch.Tensor, k: int) -> float:
    """Mean silhouette s_i = (b_i - a_i) / max(a_i, b_i) with the cosine distance 1 - cos (Rousseeuw 1987; as
    scikit-learn's `silhouette_score(..., metric="cosine")`); a point alone in its cluster scores 0.

    features [N, d] float (any norm: rows are normalised), assignment [N] int64 in [0, k). Exact, O(N k d): the
    sum of 1 - u_i.u_j over a cluster C is |C| - u_i.S_C, so a point's mean distance to every cluster is one row
    of a [N, d] x [d, k] product, computed `SILHOUETTE_BLOCK` rows at a time (memory O(block k), never N x N).
    Empty clusters are ignored."""
    units = F.normalize(features.float(), dim=1)
    sums, counts = (part[0] for part in _cluster_sums(units, assignment[None], k))
    means = (sums / counts.clamp_min(1)[:, None]).t().contiguous()                    # [d, k]: S_C / |C|
    empty = torch.zeros(k, dtype=units.dtype, device=units.device).masked_fill_(counts == 0, -math.inf)
    total = torch.zeros((), dtype=torch.float64, device=units.device)
    for start in range(0, len(units), SILHOUETTE_BLOCK):
        rows = slice(start, start + SILHOUETTE_BLOCK)
        block, members = units[rows], assignment[rows]
        closeness = torch.addmm(empty[None, :], block, means)       # u_i . S_C / |C|, -inf for an empty cluster
        own_count = counts[members]
        # a_i: mean distance to the other members of its own cluster (u_i . u_i = 1 is in u_i . S_C);
        # b_i: the smallest mean distance to another cluster, 1 - max over C of u_i . S_C / |C|
        own = own_count * (1 - closeness.gather(1, members[:, None])[:, 0]) / (own_count - 1).clamp_min(1)
        nearest_other = 1 - closeness.scatter_(1, members[:, None], -math.inf).max(dim=1).values
        silhouette = (nearest_other - own) / torch.maximum(own, nearest_other).clamp_min(1e-12)
        total += torch.where((own_count > 1) & torch.isfinite(nearest_other), silhouette,
                             torch.zeros_like(silhouette)).double().sum()
    return float(total) / len(units)


def davies_bouldin_index(features: torch.Tensor, centroids: torch.Tensor, assignment: torch.Tensor) -> float:
    """Davies-Bouldin index (1979), Euclidean, over the non-empty clusters: mean over i of max over j != i of
    (s_i + s_j) / ||c_i - c_j||, s_i the mean distance of cluster i's members to its centroid. Lower is better."""
    points = features.float()
    k = len(centroids)
    distances = (points - centroids[assignment]).norm(dim=1)
    spread, counts = (part[0, :, 0] if part.dim() == 3 else part[0]
                      for part in _cluster_sums(distances[:, None], assignment[None], k))
    present = counts > 0
    spread = spread[present] / counts[present]
    separation = torch.cdist(centroids[present].float(), centroids[present].float())
    ratio = (spread[:, None] + spread[None, :]) / separation
    ratio.fill_diagonal_(-math.inf)
    return float(ratio.max(dim=1).values.double().mean())


def calinski_harabasz_index(total_scatter: float, inertia: float, n_points: int, k: int) -> float:
    """Calinski-Harabasz ratio (1974): (B / (k - 1)) / (W / (N - k)), W the inertia and B = T - W the scatter
    between clusters. Higher is better; +inf for W = 0."""
    if inertia <= 0:
        return math.inf
    return ((total_scatter - inertia) / (k - 1)) / (inertia / (n_points - k))


# ----------------------------------------------------------------------------------------------------------------
# Rules on the inertia curve
# ----------------------------------------------------------------------------------------------------------------

def _below_chord(inertias: dict[int, float], log: bool = False) -> dict[int, float]:
    """Both axes scaled to [0, 1]; per K, how far the curve lies below the chord from its first to its last point
    (Kneedle's difference curve for a decreasing convex curve)."""
    ks = sorted(inertias)
    values = {k: math.log(max(inertias[k], 1e-300)) if log else inertias[k] for k in ks}
    low, high = min(values.values()), max(values.values())
    span = (high - low) or 1.0
    k0, k1 = ks[0], ks[-1]
    gaps = {}
    for k in ks:
        x = (k - k0) / ((k1 - k0) or 1)
        chord = (values[k0] - low) / span * (1 - x) + (values[k1] - low) / span * x
        gaps[k] = chord - (values[k] - low) / span
    return gaps


def chord_elbow(inertias: dict[int, float]) -> int:
    """The K farthest below the chord of the inertia curve, both axes scaled to [0, 1] (the "knee" criterion).
    Ties (within 1e-12) go to the smaller K; fewer than three points, or none below the chord, give the smallest K."""
    ks = sorted(inertias)
    if len(ks) < 3:
        return ks[0]
    best, best_gap = ks[0], 0.0
    for k, gap in sorted(_below_chord(inertias).items()):
        if gap > best_gap + 1e-12:
            best, best_gap = k, gap
    return best


def kneedle(inertias: dict[int, float], sensitivity: float = KNEEDLE_SENSITIVITY) -> int:
    """Kneedle (Satopaa et al. 2011), offline: the first local maximum of the difference curve (`_below_chord`)
    after which the curve falls below that maximum minus `sensitivity` times the mean K step (both scaled to
    [0, 1]) before rising above it. Without such a knee, the global maximum (the chord elbow)."""
    ks = sorted(inertias)
    if len(ks) < 3:
        return ks[0]
    gaps = [_below_chord(inertias)[k] for k in ks]
    step = 1.0 / (len(ks) - 1)
    for i in range(1, len(ks) - 1):
        if gaps[i] >= gaps[i - 1] and gaps[i] >= gaps[i + 1]:
            threshold = gaps[i] - sensitivity * step
            for later in gaps[i + 1:]:
                if later > gaps[i]:
                    break
                if later < threshold:
                    return ks[i]
    return chord_elbow(inertias)


def jump_values(inertias: dict[int, float], n_points: int, dim: int, power: float) -> dict[int, float]:
    """Sugar & James (2003): distortion d_K = W_K / (N p) (the mean squared distance per dimension), transformed to
    d_K^(-Y) with Y = `power`; per K the jump d_K^(-Y) - d_(K-1)^(-Y), with d_0^(-Y) = 0 when the range starts at
    K = 1 (else the first K has no jump). Computed in logarithms (d^(-Y) overflows for Y ~ 64) and scaled by the
    largest transformed distortion, which leaves the arg max unchanged."""
    ks = sorted(inertias)
    log_transformed = {k: -power * math.log(max(inertias[k], 1e-300) / (n_points * dim)) for k in ks}
    top = max(log_transformed.values())
    transformed = {k: math.exp(v - top) for k, v in log_transformed.items()}
    return {k: transformed[k] - (0.0 if k == 1 else transformed[k - 1]) for k in ks if k == 1 or k - 1 in ks}


def jump_method(inertias: dict[int, float], n_points: int, dim: int, power: float) -> int:
    """The K of the largest jump (`jump_values`); ties go to the smaller K."""
    jumps = jump_values(inertias, n_points, dim, power)
    return max(jumps, key=lambda k: (jumps[k], -k)) if jumps else min(inertias)


def effective_dimension(features: torch.Tensor) -> float:
    """Participation ratio of the covariance spectrum, (sum lambda)^2 / sum lambda^2 (between 1 and d)."""
    centred = features.double() - features.double().mean(dim=0)
    eigenvalues = torch.linalg.svdvals(centred) ** 2
    return float(eigenvalues.sum() ** 2 / (eigenvalues ** 2).sum().clamp_min(1e-300))


def gap_statistic(features: torch.Tensor, path: KMeansPath, *, seed: int, references: int = GAP_REFERENCES,
                  restarts: int = 1) -> KChoice:
    """Gap statistic (Tibshirani et al. 2001, the "1-standard-error" rule, their reference (b): uniform over the box
    aligned with the data's principal axes). Each reference set has N points and is clustered by its own k-means
    path over the same K (`restarts` chains). Returns the smallest K with Gap(K) >= Gap(K+1) - s_(K+1), s the
    references' standard deviation times sqrt(1 + 1/B); the last K if none."""
    points = features.float()
    centre = points.mean(dim=0)
    _, _, axes = torch.linalg.svd(points - centre, full_matrices=False)
    projected = (points - centre) @ axes.t()
    low, high = projected.min(dim=0).values, projected.max(dim=0).values
    generator = torch.Generator(device=points.device).manual_seed(int(seed) % (2 ** 63))
    ks = path.ks
    reference_logs = []
    for b in range(references):
        uniform = torch.rand(len(points), len(low), generator=generator, device=points.device)
        reference = (low + (high - low) * uniform) @ axes + centre
        reference_path = kmeans_path(reference, range(ks[0], ks[-1] + 1), seed=seed + 1 + b, restarts=restarts)
        reference_logs.append([math.log(max(reference_path.inertias[k], 1e-300)) for k in ks])
    logs = torch.tensor(reference_logs, dtype=torch.float64)                       # [B, |ks|]
    gaps = logs.mean(dim=0) - torch.tensor([math.log(max(path.inertias[k], 1e-300)) for k in ks],
                                           dtype=torch.float64)
    spread = logs.std(dim=0, unbiased=False) * math.sqrt(1 + 1 / references)
    scores = {k: float(g) for k, g in zip(ks, gaps)}
    for i in range(len(ks) - 1):
        if gaps[i] >= gaps[i + 1] - spread[i + 1]:
            return KChoice(ks[i], scores)
    return KChoice(ks[-1], scores)


# ----------------------------------------------------------------------------------------------------------------
# The rules by name, and k-means with K chosen by one
# ----------------------------------------------------------------------------------------------------------------

def _best(scores: dict[int, float], larger: bool = True) -> int:
    """The K of the best score; ties go to the smaller K."""
    return max(scores, key=lambda k: ((scores[k] if larger else -scores[k]), -k))


def _silhouette_rule(features, path, seed):
    scores = {k: cosine_silhouette(features, path.assignments[k], k) if k > 1 else 0.0 for k in path.ks}
    return KChoice(_best(scores), scores)


def _elbow_rule(features, path, seed):
    return KChoice(chord_elbow(path.inertias), _below_chord(path.inertias))


def _davies_bouldin_rule(features, path, seed):
    scores = {k: davies_bouldin_index(features, path.centroids[k], path.assignments[k]) for k in path.ks if k > 1}
    return KChoice(_best(scores, larger=False), scores)


def _calinski_harabasz_rule(features, path, seed):
    points = features.double()
    total = float(((points - points.mean(dim=0)) ** 2).sum())
    scores = {k: calinski_harabasz_index(total, path.inertias[k], len(points), k)
              for k in path.ks if 1 < k < len(points)}
    return KChoice(_best(scores), scores)


def _kneedle_rule(features, path, seed):
    return KChoice(kneedle(path.inertias), _below_chord(path.inertias))


def _jump_rule(features, path, seed):
    power = effective_dimension(features) / 2
    return KChoice(jump_method(path.inertias, len(features), features.shape[1], power),
                   jump_values(path.inertias, len(features), features.shape[1], power))


def _gap_rule(features, path, seed):
    return gap_statistic(features, path, seed=seed)


K_RULES: dict[str, Callable[[torch.Tensor, KMeansPath, int], KChoice]] = {
    "silhouette": _silhouette_rule,
    "elbow": _elbow_rule,
    "davies_bouldin": _davies_bouldin_rule,
    "calinski_harabasz": _calinski_harabasz_rule,
    "kneedle": _kneedle_rule,
    "jump": _jump_rule,
    "gap": _gap_rule,
}


def choose_k(rule: str, features: torch.Tensor, path: KMeansPath, seed: int = 0) -> KChoice:
    """The K that `rule` (a key of K_RULES) reads from `path`, the k-means path of `features` ([N, d])."""
    if rule not in K_RULES:
        raise ValueError(f"unknown rule for the cluster count {rule!r}; expected one of {', '.join(K_RULES)}")
    return K_RULES[rule](features, path, seed)


def kmeans_with_k_rule(features: torch.Tensor, k_range: range, *, rule: str, seed: int,
                       return_choice: bool = False):
    """k-means for every K of `k_range` (`kmeans_path`), K chosen by `rule` (a key of K_RULES).

    features: [N, d] float on any device. Returns (centroids [K, d] float32, assignment [N] int64, K) on the
    features' device, and with `return_choice` also the KChoice (every K's score). The same for any order of the
    rows. Raises ValueError for an unknown rule or when no K of the range fits the points."""
    if rule not in K_RULES:
        raise ValueError(f"unknown rule for the cluster count {rule!r}; expected one of {', '.join(K_RULES)}")
    path = kmeans_path(features, k_range, seed=seed)
    choice = choose_k(rule, features, path, seed)
    result = (path.centroids[choice.k], path.assignments[choice.k], choice.k)
    return (*result, choice) if return_choice else result
