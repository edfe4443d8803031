"""k-means through faiss, with every parameter pinned (faiss's defaults would fix seed=1234 for every run and
subsample to 256 points per centroid silently)."""
from __future__ import annotations

import numpy as np
import torch


def kmeans(features: torch.Tensor, k: int, *, seed: int, niter: int = 20, nredo: int = 1, spherical: bool = False,
           max_points_per_centroid: int = 100_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (centroids [k, d] float32, assignments [N] int64) on the features' device. `spherical` normalises the
    centroids after each iteration and assigns by inner product (cosine k-means)."""
    import faiss

    x = np.ascontiguousarray(features.detach().float().cpu().numpy())
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means with k={k} on {n} points")
    clustering = faiss.Kmeans(d, k, niter=niter, nredo=nredo, seed=int(seed) % (2 ** 31), spherical=spherical,
                              min_points_per_centroid=1, max_points_per_centroid=max_points_per_centroid,
                              verbose=False)
    clustering.train(x)
    _, assignment = clustering.index.search(x, 1)
    centroids = torch.from_numpy(clustering.centroids.copy())
    return centroids.to(features.device), torch.from_numpy(assignment[:, 0].astype(np.int64)).to(features.device)
