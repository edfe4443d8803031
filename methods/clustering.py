"""k-means through faiss, with every parameter pinned (faiss's defaults would fix seed=1234 for every run and
subsample to 256 points per centroid silently)."""
from __future__ import annotations

import numpy as np
import torch


def kmeans(features: torch.Tensor, k: int, *, seed: int, niter: int = 20, nredo: int = 1, spherical: bool = False,
           max_points_per_centroid: int = 100_000, init_centroids: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (centroids [k, d] float32, assignments [N] int64) on the features' device. `spherical` normalises the
    centroids after each iteration and assigns by inner product (cosine k-means). `init_centroids` ([k, d]) starts
    the iterations from these centroids instead of k random points (faiss `train(x, init_centroids=...)`; CoDA's
    shared initialisation)."""
    import faiss

    # faiss runs its own OpenMP pool; follow torch's thread count so a process set to one thread (tests, several
    # jobs on one machine) does not oversubscribe the cores — small k-means calls then take milliseconds, not 0.5 s.
    faiss.omp_set_num_threads(torch.get_num_threads())
    x = np.ascontiguousarray(features.detach().float().cpu().numpy())
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means with k={k} on {n} points")
    clustering = faiss.Kmeans(d, k, niter=niter, nredo=nredo, seed=int(seed) % (2 ** 31), spherical=spherical,
                              min_points_per_centroid=1, max_points_per_centroid=max_points_per_centroid,
                              verbose=False)
    if init_centroids is None:
        clustering.train(x)
    else:
        if tuple(init_centroids.shape) != (k, d):
            raise ValueError(f"k-means with k={k} on {d}-d points given initial centroids of shape "
                             f"{tuple(init_centroids.shape)}")
        clustering.train(x, init_centroids=np.ascontiguousarray(init_centroids.detach().float().cpu().numpy()))
    _, assignment = clustering.index.search(x, 1)
    centroids = torch.from_numpy(clustering.centroids.copy())
    return centroids.to(features.device), torch.from_numpy(assignment[:, 0].astype(np.int64)).to(features.device)


def inertia(features: torch.Tensor, centroids: torch.Tensor, assignment: torch.Tensor) -> float:
    """Sum of squared Euclidean distances of the points to their centroids (k-means' objective)."""
    return float(((features - centroids[assignment]) ** 2).sum())


def elbow_k(inertias: dict[int, float]) -> int:
    """The elbow of an inertia curve: the K farthest below the chord from the first to the last point, both axes
    scaled to [0, 1] (the "knee" criterion). Ties go to the smaller K; fewer than three points give the smallest K."""
    ks = sorted(inertias)
    if len(ks) < 3:
        return ks[0]
    k0, k1 = ks[0], ks[-1]
    low, high = min(inertias.values()), max(inertias.values())
    span = (high - low) or 1.0
    best, best_gap = k0, 0.0
    for k in ks:
        x = (k - k0) / (k1 - k0)
        y = (inertias[k] - low) / span
        chord = (inertias[k0] - low) / span * (1 - x) + (inertias[k1] - low) / span * x
        if chord - y > best_gap + 1e-12:
            best, best_gap = k, chord - y
    return best


def elbow_kmeans(features: torch.Tensor, k_range: range, *, seed: int, niter: int = 20
                 ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """k-means for every K of `k_range` (clipped to the number of points), K chosen by `elbow_k`.
    Returns (centroids, assignments, K)."""
    results = {}
    for k in k_range:
        if k > len(features):
            break
        centroids, assignment = kmeans(features, k, seed=seed, niter=niter)
        results[k] = (centroids, assignment, inertia(features.float(), centroids, assignment))
    if not results:
        raise ValueError(f"elbow k-means: no K of {k_range} fits {len(features)} points")
    k = elbow_k({k: r[2] for k, r in results.items()})
    return results[k][0], results[k][1], k
