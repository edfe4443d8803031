"""Separable classes as feature vectors, with labels: the inputs of UEM's mechanism test and of the K-estimator grid.

A class is a unit random centre c; its features are normalize(2 c + noise 4 / sqrt(dim) z), z standard normal, so the
noise's norm (about 4 noise) does not depend on the dimension while its share along any one direction shrinks as
1 / sqrt(dim): at noise 1.0 the spread inside a class is twice the centre's norm, yet a nearest-class-mean classifier
still separates 10 classes in 128 dimensions perfectly. A retrieval domain holds the first classes with fresh
noise, moved by a translation (a domain gap that UEM's Eq. 8 can undo), optionally L2-normalised again as a memory
bank's entries are.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["adjusted_rand_index", "nearest_class_mean_accuracy", "separated_domains"]


def separated_domains(n_classes: int, dim: int = 128, per_class: int = 60, shared: int | None = None,
                      noise: float = 0.3, shift: float = 0.0, seed: int = 0, sizes: tuple[int, int] | None = None,
                      renormalise: bool = False):
    """Query domain: `n_classes` classes of `per_class` features each (or, with `sizes` = (low, high), a size per
    class drawn uniformly from [low, high]); retrieval domain: the first `shared` classes (default half, floor: the
    open set) with fresh noise and the same sizes, translated by `shift` along a random unit direction, then
    L2-normalised again if `renormalise`. Returns (query [Q, dim] float32, query labels [Q] int64, retrieval
    [G, dim], retrieval labels [G]), each domain stored class by class. Draws from one generator seeded with
    `seed` (without `sizes` and `renormalise`, the draws of the test suite's generator before this module)."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_classes, dim, generator=generator), dim=1)
    if sizes is None:
        counts = torch.full((n_classes,), per_class, dtype=torch.long)
    else:
        low, high = sizes
        if not 1 <= low <= high:
            raise ValueError(f"class sizes must satisfy 1 <= low <= high, got {sizes}")
        counts = torch.randint(low, high + 1, (n_classes,), generator=generator)

    def domain(classes: int):
        labels = torch.arange(classes).repeat_interleave(counts[:classes])
        noise_term = noise * 4 / math.sqrt(dim) * torch.randn(len(labels), dim, generator=generator)
        return F.normalize(2 * centres[labels] + noise_term, dim=1), labels

    query, query_labels = domain(n_classes)
    retrieval, retrieval_labels = domain(n_classes // 2 if shared is None else shared)
    retrieval = retrieval + shift * F.normalize(torch.randn(dim, generator=generator), dim=0)
    if renormalise:
        retrieval = F.normalize(retrieval, dim=1)
    return query, query_labels, retrieval, retrieval_labels


def nearest_class_mean_accuracy(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of the points ([N, d], labels [N]) whose nearest class mean (Euclidean; the means of the same points)
    is their own class's: how separable the classes are, the ceiling a cluster count can be judged against."""
    classes = labels.unique()
    means = torch.stack([features[labels == c].mean(dim=0) for c in classes])
    predicted = classes[torch.cdist(features.float(), means.float()).argmin(dim=1)]
    return float((predicted == labels).float().mean())


def adjusted_rand_index(labels: torch.Tensor, assignment: torch.Tensor) -> float:
    """Adjusted Rand index (Hubert & Arabie, J. Classification 2, 1985) of a partition against the labels (both [N]
    int64): 1 for the same partition up to renaming, about 0 for a random one."""
    _, label_ids = labels.unique(return_inverse=True)
    _, cluster_ids = assignment.unique(return_inverse=True)
    table = torch.zeros(int(label_ids.max()) + 1, int(cluster_ids.max()) + 1, dtype=torch.float64)
    table.index_put_((label_ids.cpu(), cluster_ids.cpu()), torch.ones(len(labels), dtype=torch.float64),
                     accumulate=True)

    def pairs(counts: torch.Tensor) -> float:
        return float((counts * (counts - 1) / 2).sum())
    together, rows, columns = pairs(table), pairs(table.sum(dim=1)), pairs(table.sum(dim=0))
    expected = rows * columns / (len(labels) * (len(labels) - 1) / 2)
    ceiling = (rows + columns) / 2
    return 1.0 if ceiling == expected else (together - expected) / (ceiling - expected)
