"""The paper's baseline open-set detector (UEM, appendix B.2).

k-means on the query domain's features (K = the query domain's class-count hint); for each cluster, the largest
distance between two of its members, D_c; a query is private (the method returns null) if the distance to its nearest
retrieval item is larger than the bound of its own cluster. Distance: the method's own ("cosine": 1 - cos,
"euclidean": ||a - b||). `radius_detector_from_assignment` is the same rule on clusters the caller provides (CoDA:
its query-domain cluster classifiers serve as the prototypes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .clustering import kmeans


def pairwise_distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "cosine":
        return 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()
    if distance == "euclidean":
        return torch.cdist(a, b)
    raise ValueError(f"unknown distance {distance!r}; expected 'cosine' or 'euclidean'")


def nearest_distance(query: torch.Tensor, gallery: torch.Tensor, distance: str, chunk_size: int = 1024) -> torch.Tensor:
    return torch.cat([pairwise_distance(query[i:i + chunk_size], gallery, distance).min(dim=1).values
                      for i in range(0, len(query), chunk_size)])


def cluster_radius_detector(query_features: torch.Tensor, retrieval_features: torch.Tensor, *, num_clusters: int,
                            seed: int, distance: str = "cosine") -> torch.Tensor:
    query_features = query_features.float()
    k = max(1, min(num_clusters, len(query_features)))
    _, assignment = kmeans(query_features, k, seed=seed)
    return radius_detector_from_assignment(query_features, retrieval_features, assignment, num_clusters=k,
                                           distance=distance)


def radius_detector_from_assignment(query_features: torch.Tensor, retrieval_features: torch.Tensor,
                                    assignment: torch.Tensor, *, num_clusters: int | None = None,
                                    distance: str = "cosine") -> torch.Tensor:
    """The App. B.2 rule on given query clusters (k-means labels, or a method's own prototypes, e.g. CoDA's cluster
    classifiers): D_c = the largest distance between two queries of cluster c (0 for a cluster of one); a query is
    private if its nearest retrieval item is farther than D_c of its cluster. `num_clusters` defaults to
    max(assignment) + 1; clusters without members are skipped."""
    query_features = query_features.float()
    retrieval_features = retrieval_features.float().to(query_features.device)
    assignment = assignment.to(query_features.device)
    k = int(assignment.max()) + 1 if num_clusters is None else num_clusters
    bound = torch.zeros(k, device=query_features.device)
    for cluster in assignment.unique().tolist():  # a loop over clusters (K <= a few hundred), never over queries
        members = query_features[assignment == cluster]
        if len(members) > 1:
            bound[cluster] = pairwise_distance(members, members, distance).max()
    return nearest_distance(query_features, retrieval_features, distance) > bound[assignment]
