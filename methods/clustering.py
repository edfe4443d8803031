"""k-means: the harness's own (greedy k-means++, local search, restarts, on the features' device) and the baselines'.

Where the harness decides with a clustering — UEM's prototypes (Eq. 7-9, App. B.1, K chosen by a rule of
`methods/cluster_count.py`), the paper's baseline open-set detector (App. B.2) — it uses `kmeans` (one K) or
`kmeans_path` (every K of a range) below:

- seeding: greedy k-means++ (Arthur & Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007; the
  greedy variant of scikit-learn's `KMeans`, `sklearn/cluster/_kmeans.py`: at each step 2 + int(ln k) candidates
  are drawn with probability proportional to D(x)^2 and the one that lowers the potential most is kept);
- Lloyd iterations until at most `LLOYD_TOLERANCE` of the points change cluster (or `KMEANS_MAX_ITER`); an empty
  cluster is moved to the point farthest from its centre;
- `kmeans`: LocalSearch++ swaps (Lattanzi & Sohler, "A better k-means++ algorithm via local search", ICML 2019): a
  point drawn by D^2 replaces the centre whose replacement lowers the inertia most, when it lowers it by more than
  `SWAP_GAIN`, then Lloyd again. Two centres on one cluster while another centre covers two clusters is a fixed
  point of Lloyd's iterations that no restart count reliably avoids at 20 clusters or more; a swap undoes it;
  `KMEANS_RESTARTS` independent starts, run side by side as one batch of matrix products, the lowest inertia kept;
- `kmeans_path`: one chain over K (`PATH_RESTARTS`) that goes from K to K + 1 by bisection — the cluster whose cut
  along its principal direction lowers the inertia most is cut in two (`_split_step`) — then Lloyd, then one
  merge-and-cut swap (`_merge_and_cut`: the cheapest merge of two clusters against the best cut of a third, Ward's
  cost against the cut's drop; it undoes the same fixed point at the cost of a K x K table). Before issue 23 the
  chain added one k-means++ point per K (two chains, LocalSearch++ swaps); where the spread inside a class is close
  to the distance between classes a one-point centre captures little but itself, and that chain left classes
  merged at every K (`_split_step` has the numbers; `python -m benchmark.perf elbow` times both);
- the random draws come from a generator seeded with `seed` on the features' device, and the points are put in a
  canonical order (by a fixed projection of their coordinates) before anything is drawn: the result is the same
  for any order in which the points are stored (a gallery stored class by class gives the clusters a shuffled one
  gives), and the same on every call with the same seed. Ties in the canonical key only join identical points,
  which are interchangeable.

Why not faiss here: faiss seeds with k points drawn uniformly. On clusters that are plainly separate one such start
converges to merged-and-split solutions (a centre on two clusters, two centres on one), the inertia curve then has
no clean elbow, and one split pair makes Eq. 9's threshold tiny so that nothing merges (tests/test_clustering.py
holds the input).

The baselines keep their official code's clustering: `faiss_kmeans` with the settings their repositories pass
(PCS, UCDIR, DGDIR, CoDA; each module's docstring names them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["KMEANS_RESTARTS", "KMeansPath", "PATH_RESTARTS", "empty_clusters", "faiss_kmeans", "inertia", "kmeans",
           "kmeans_path"]

KMEANS_RESTARTS = 4       # independent k-means++ starts of `kmeans`; the lowest inertia is kept
KMEANS_MAX_ITER = 100     # Lloyd iterations at most
LLOYD_TOLERANCE = 1e-2    # a restart's Lloyd iterations stop when at most this fraction of the points changes cluster
SWAP_GAIN = 1e-3          # a LocalSearch++ swap is made when it lowers the inertia by more than this fraction
SWAP_CANDIDATES = 64      # points drawn by D^2 for a swap step: in high dimensions a merged pair of clusters holds
                          # a few % of the D^2 mass only, so the 2 + ln k draws of seeding would often miss it
PATH_RESTARTS = 1         # independent chains of `kmeans_path`; per K the lowest inertia is kept
POWER_ITERATIONS = 3      # power iterations for a cluster's principal direction (`_update_cuts`)


# ----------------------------------------------------------------------------------------------------------------
# The harness's k-means (torch)
# ----------------------------------------------------------------------------------------------------------------

def _check_points(features: torch.Tensor, name: str = "features") -> torch.Tensor:
    if features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"k-means needs {name} of shape [N, d] with N >= 1, got {tuple(features.shape)}")
    points = features.detach().float()
    if not bool(torch.isfinite(points).all()):
        raise ValueError(f"k-means: {name} contain NaN or inf values")
    return points


def _canonical_order(points: torch.Tensor) -> torch.Tensor:
    """A permutation that sorts the points by a fixed projection of their coordinates (float64): the same set of
    points gives the same sorted tensor however it was stored."""
    direction = torch.randn(points.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    key = (points.double() * direction.to(points.device)).sum(dim=1)
    return torch.sort(key, stable=True).indices


@dataclass
class _State:
    """r restarts side by side: centres [r, k, d]; per point its squared distance to the nearest centre [r, N] and
    that centre's index [r, N]."""
    centres: torch.Tensor
    nearest: torch.Tensor
    assignment: torch.Tensor

    def select(self, rows: torch.Tensor) -> "_State":
        return _State(self.centres[rows], self.nearest[rows], self.assignment[rows])

    def update(self, rows: torch.Tensor, part: "_State") -> "_State":
        merged = _State(self.centres.clone(), self.nearest.clone(), self.assignment.clone())
        merged.centres[rows], merged.nearest[rows], merged.assignment[rows] = part.centres, part.nearest, part.assignment
        return merged

    def inertias(self) -> torch.Tensor:
        return self.nearest.double().sum(dim=1)


def _squared_distances(points: torch.Tensor, point_norms: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """||x - c||^2 for points [N, d] and a few centres per restart [r, t, d] -> [r, t, N] (clamped at 0: the
    expanded form rounds)."""
    restarts, count, dim = centres.shape
    flat = centres.reshape(restarts * count, dim)
    distances = torch.addmm(point_norms[None, :], flat, points.t(), alpha=-2).add_((flat * flat).sum(dim=1)[:, None])
    return distances.clamp_min_(0).view(restarts, count, -1)


def _partial_distances(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """||c||^2 - 2 x.c for points [N, d] and centres [r, k, d] -> [N, r, k]: the squared distances less the points'
    own norms, which are the same for every centre. One matrix product with the centres' norms fused in."""
    restarts, k, dim = centres.shape
    flat = centres.reshape(restarts * k, dim)
    return torch.addmm((flat * flat).sum(dim=1)[None, :], points, flat.t(), alpha=-2).view(len(points), restarts, k)


def _assign(points: torch.Tensor, point_norms: torch.Tensor, centres: torch.Tensor) -> _State:
    """The nearest centre of every point, for r restarts side by side."""
    values, assignment = _partial_distances(points, centres).min(dim=2)
    nearest = (values + point_norms[:, None]).clamp_min_(0)
    return _State(centres, nearest.t().contiguous(), assignment.t().contiguous())


def _second_nearest(points: torch.Tensor, point_norms: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Squared distance of every point to its second nearest centre [r, N] (k >= 2)."""
    second = _partial_distances(points, centres).topk(2, dim=2, largest=False).values[..., 1]
    return (second + point_norms[:, None]).clamp_min_(0).t().contiguous()


def _draw_candidates(weights: torch.Tensor, n_candidates: int, generator: torch.Generator) -> torch.Tensor:
    """[r, n_candidates] point indices drawn with probability proportional to `weights` [r, N] (uniform where a row
    is all zero: every point already sits on a centre)."""
    empty = weights.sum(dim=1, keepdim=True) <= 0
    weights = torch.where(empty, torch.ones_like(weights), weights)
    return torch.multinomial(weights, n_candidates, replacement=True, generator=generator)


def _greedy_seeding_step(points, point_norms, closest, n_candidates, generator):
    """One greedy k-means++ step for r seedings side by side: draw candidates by D^2 (`closest`, [r, N]), keep the
    one that lowers the potential sum(min(D^2, d(x, candidate)^2)) most. Returns (chosen [r], the squared distances
    of every point to it [r, N])."""
    candidates = _draw_candidates(closest, n_candidates, generator)                     # [r, t]
    candidate_distances = _squared_distances(points, point_norms, points[candidates])   # [r, t, N]
    best = torch.minimum(closest[:, None, :], candidate_distances).sum(dim=2).argmin(dim=1)   # [r]
    rows = torch.arange(len(best), device=points.device)
    return candidates[rows, best], candidate_distances[rows, best]


def _kmeans_pp_seeds(points, point_norms, k, restarts, generator, n_candidates) -> torch.Tensor:
    """[restarts, k, d] greedy k-means++ seeds (the first uniformly at random)."""
    first = torch.randint(len(points), (restarts,), generator=generator, device=points.device)
    closest = _squared_distances(points, point_norms, points[first][:, None, :])[:, 0]
    chosen = [first]
    for _ in range(1, k):
        index, distances = _greedy_seeding_step(points, point_norms, closest, n_candidates, generator)
        closest = torch.minimum(closest, distances)
        chosen.append(index)
    return points[torch.stack(chosen, dim=1)]


def _cluster_sums(points: torch.Tensor, assignment: torch.Tensor, k: int,
                  weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per restart and cluster, the sum of the member points [r, k, d] and their number [r, k]; with `weights`
    ([r, N]) the weighted sums and the sums of the weights. On CUDA a one-hot product (deterministic; index_add_
    uses atomics there), elsewhere index_add_ (O(N d))."""
    if points.is_cuda:
        one_hot = torch.nn.functional.one_hot(assignment, k).to(points.dtype)             # [r, N, k]
        if weights is not None:
            one_hot = one_hot * weights[..., None]
        return one_hot.transpose(1, 2) @ points, one_hot.sum(dim=1)
    sums = torch.zeros(assignment.shape[0], k, points.shape[1], dtype=points.dtype, device=points.device)
    for restart, members in enumerate(assignment):
        sums[restart].index_add_(0, members, points if weights is None else points * weights[restart][:, None])
    counts = torch.stack([torch.bincount(members, weights=None if weights is None else weights[restart],
                                         minlength=k) for restart, members in enumerate(assignment)])
    return sums, counts.to(points.dtype)


def _move_empty_centres(points, centres, empty, nearest):
    """Each empty cluster takes one of the points farthest from their centres (distinct points, farthest first)."""
    centres = centres.clone()
    for restart in torch.nonzero(empty.any(dim=1)).flatten().tolist():
        slots = torch.nonzero(empty[restart]).flatten()
        farthest = nearest[restart].topk(min(len(slots), len(points))).indices
        centres[restart, slots[:len(farthest)]] = points[farthest]
    return centres


def _lloyd(points, point_norms, state: _State, max_iter: int) -> _State:
    """Lloyd iterations from `state` (its assignment must be the nearest centres' or a start to improve on); a
    restart stops when none of its assignments changes, all stop after `max_iter`."""
    k = state.centres.shape[1]
    active = torch.arange(len(state.centres), device=points.device)
    for _ in range(max_iter):
        current = state.select(active)
        sums, counts = _cluster_sums(points, current.assignment, k)
        empty = counts == 0
        moved = torch.where(empty[..., None], current.centres, sums / counts.clamp_min(1)[..., None])
        if bool(empty.any()):
            moved = _move_empty_centres(points, moved, empty, current.nearest)
        new = _assign(points, point_norms, moved)
        changed = (new.assignment != current.assignment).sum(dim=1) > LLOYD_TOLERANCE * len(points)
        state = state.update(active, new)
        active = active[changed]
        if len(active) == 0:
            break
    return state


def _local_search(points, point_norms, state: _State, steps: int, n_candidates: int, generator,
                  max_iter: int) -> _State:
    """`steps` swap steps of LocalSearch++ (Lattanzi & Sohler, ICML 2019), each followed by Lloyd where a swap was
    made: draw candidates by D^2, find the (candidate, centre) swap that lowers the inertia most, and make it in
    the restarts where it lowers it by more than `SWAP_GAIN`. Two centres left on one cluster while another centre
    covers two clusters is a fixed point of Lloyd's iterations; one swap undoes it."""
    restarts, k, _ = state.centres.shape
    if k < 2:
        return state
    for _ in range(steps):
        candidates = _draw_candidates(state.nearest, n_candidates, generator)                   # [r, t]
        to_candidate = _squared_distances(points, point_norms, points[candidates])              # [r, t, N]
        kept = torch.minimum(to_candidate, state.nearest[:, None, :])
        # Removing centre j sends its members to their second centre, or to the candidate if it is nearer.
        second = _second_nearest(points, point_norms, state.centres)
        removal = torch.zeros(restarts, candidates.shape[1], k, dtype=points.dtype, device=points.device)
        removal.scatter_add_(2, state.assignment[:, None, :].expand_as(kept),
                             torch.minimum(to_candidate, second[:, None, :]) - kept)
        best_cost, best = (kept.double().sum(dim=2, keepdim=True) + removal.double()).flatten(1).min(dim=1)
        rows = torch.nonzero(best_cost < state.inertias() * (1 - SWAP_GAIN)).flatten()
        if len(rows) == 0:
            continue
        swapped = state.centres[rows].clone()
        swapped[torch.arange(len(rows), device=points.device), best[rows] % k] = points[candidates[rows,
                                                                                                  best[rows] // k]]
        state = state.update(rows, _lloyd(points, point_norms, _assign(points, point_norms, swapped), max_iter))
    return state


def _principal_directions(points, assignment, means, start, iterations) -> torch.Tensor:
    """Unit principal direction of each of k clusters ([k, d]; points [n, d], assignment [n] in [0, k), their
    means [k, d]): power iterations on the members' scatter from `start` ([k, d]). An iteration is O(n d) (a
    projection per point and a weighted sum per cluster), never a d x d matrix."""
    direction = start
    centred = points - means[assignment]
    for _ in range(iterations):
        projection = (centred * direction[assignment]).sum(dim=1)
        weighted, _ = _cluster_sums(centred, assignment[None], len(start), projection[None])
        direction = F.normalize(weighted[0], dim=1)
    return direction


@dataclass
class _Cuts:
    """Per restart and cluster, the principal direction of its members ([r, k, d]) and how much cutting it in two
    halves by the hyperplane through its mean normal to that direction lowers the inertia ([r, k]), for the
    membership `assignment` ([r, N]) they were computed on."""
    assignment: torch.Tensor
    directions: torch.Tensor
    drops: torch.Tensor


def _cut_drops(points, assignment, k, clusters, start, iterations):
    """Directions ([m, d]) and inertia drops ([m]) of cutting each of `clusters` ([m] ids in [0, k)) of one restart
    (`assignment` [N]), the directions found by power iterations from `start` ([m, d]). Replacing a cluster's mean
    by its halves' means lowers the inertia by n1 n2 / n ||m1 - m2||^2 (0 for an empty cluster)."""
    position = torch.full((k,), -1, dtype=torch.long, device=points.device)
    position[clusters] = torch.arange(len(clusters), device=points.device)
    members = torch.nonzero(position[assignment] >= 0).flatten()
    labels, member_points = position[assignment[members]], points[members]
    sums, counts = (part[0] for part in _cluster_sums(member_points, labels[None], len(clusters)))
    means = sums / counts.clamp_min(1)[:, None]
    directions = _principal_directions(member_points, labels, means, start, iterations)
    upper = (((member_points - means[labels]) * directions[labels]).sum(dim=1) > 0).to(points.dtype)
    upper_sums, upper_counts = (part[0] for part in _cluster_sums(member_points, labels[None], len(clusters),
                                                                   upper[None]))
    lower_counts = counts - upper_counts
    gap = upper_sums / upper_counts.clamp_min(1)[:, None] - (sums - upper_sums) / lower_counts.clamp_min(1)[:, None]
    return directions, upper_counts * lower_counts / counts.clamp_min(1) * (gap ** 2).sum(dim=1)


def _update_cuts(points, state: _State, cuts: _Cuts | None, generator) -> _Cuts:
    """Every cluster's cut for the membership in `state`, computed again only for the clusters whose members
    changed since `cuts` (at a large K, Lloyd's iterations after a cut move points between a few clusters: a K then
    costs O(d) per member of those clusters, not O(N d)). The power iterations of a changed cluster start from its
    previous direction, a new cluster's from a random one."""
    restarts, k, dim = state.centres.shape
    directions = F.normalize(torch.randn(restarts, k, dim, generator=generator, device=points.device,
                                         dtype=points.dtype), dim=2)
    drops = torch.zeros(restarts, k, dtype=points.dtype, device=points.device)
    for restart in range(restarts):
        assignment = state.assignment[restart]
        changed = torch.ones(k, dtype=torch.bool, device=points.device)
        if cuts is not None:
            old_k = cuts.directions.shape[1]
            directions[restart, :old_k], drops[restart, :old_k] = cuts.directions[restart], cuts.drops[restart]
            moved = assignment != cuts.assignment[restart]
            changed = torch.zeros(k, dtype=torch.bool, device=points.device)
            changed[assignment[moved]] = True
            changed[cuts.assignment[restart][moved]] = True
            changed[old_k:] = True
        clusters = torch.nonzero(changed).flatten()
        if len(clusters):
            directions[restart, clusters], drops[restart, clusters] = _cut_drops(
                points, assignment, k, clusters, directions[restart, clusters], POWER_ITERATIONS)
    return _Cuts(state.assignment.clone(), directions, drops)


def _cut(points, assignment, cluster, direction, slot, centres):
    """Cut `cluster` of one restart by the hyperplane through its mean normal to `direction`: it keeps the upper
    half, cluster `slot` takes the lower one. Returns (assignment, centres) with both halves' means as centres
    (`centres` [k', d] is updated in place; an empty half keeps the cluster's mean, Lloyd moves it)."""
    members = torch.nonzero(assignment == cluster).flatten()
    member_points = points[members]
    mean = member_points.mean(dim=0)
    upper = ((member_points - mean) @ direction) > 0
    centres[cluster] = member_points[upper].mean(dim=0) if bool(upper.any()) else mean
    centres[slot] = member_points[~upper].mean(dim=0) if bool((~upper).any()) else mean
    assignment = assignment.clone()
    assignment[members[~upper]] = slot
    return assignment, centres


def _split_step(points: torch.Tensor, state: _State, cuts: _Cuts) -> _State:
    """One more cluster per restart, by bisection: of all clusters, the one whose cut lowers the inertia most
    (`cuts`, for this state's membership) keeps the half of its members above the hyperplane through its mean
    normal to its principal direction, and the new cluster k takes the other half (the split of G-means, Hamerly
    & Elkan, NeurIPS 2003; principal-direction bisecting k-means, Steinbach, Karypis & Kumar, KDD text-mining
    workshop 2000). Returns that start state (centres: the halves' means); Lloyd iterations follow.

    Why not add a k-means++ point (D^2 sampling) as the new centre, as the chain did before: where the spread
    inside a class is close to the distance between classes, a single point lies sqrt(2) times farther from its
    classmates than their mean does, so a centre on one point captures little more than itself and two classes
    that share a centre are never pulled apart (10 classes x 50 points in 128-d at noise 1.0: that chain's
    10-means had 20 % more inertia than scikit-learn's KMeans and an adjusted Rand index of 0.13 against the
    classes; the bisecting chain finds the classes, index 1.0). The halves' means start where the two classes are."""
    restarts, k, dim = state.centres.shape
    centres, assignments = [], []
    for restart in range(restarts):
        cluster = int(cuts.drops[restart].argmax())   # all 0 (clusters of duplicates): a half is empty, Lloyd moves it
        restart_centres = torch.cat([state.centres[restart], state.centres.new_zeros(1, dim)])
        assignment, restart_centres = _cut(points, state.assignment[restart], cluster,
                                           cuts.directions[restart, cluster], k, restart_centres)
        centres.append(restart_centres)
        assignments.append(assignment)
    return _State(torch.stack(centres), state.nearest, torch.stack(assignments))


def _merge_and_cut(points, point_norms, state: _State, cuts: _Cuts, generator, max_iter: int):
    """A swap that keeps K, for every restart: merge the two clusters whose merge raises the inertia least (Ward's
    cost n_i n_j / (n_i + n_j) ||m_i - m_j||^2) and cut, in the freed slot, the other cluster whose cut lowers it
    most, when the cut's drop exceeds the merge's cost; Lloyd; kept where the inertia fell. Two centres left on one
    of several plainly separate clusters while another centre covers two is a fixed point of Lloyd's iterations
    (issue 13); this undoes it at the cost of a K x K table of the clusters' means. Returns (state, cuts)."""
    restarts, k, dim = state.centres.shape
    if k < 3:
        return state, cuts
    sums, counts = _cluster_sums(points, state.assignment, k)
    rows, starts = [], []
    for restart in range(restarts):
        present = counts[restart] > 0
        means = sums[restart] / counts[restart].clamp_min(1)[:, None]
        pair_counts = counts[restart][:, None] * counts[restart][None, :] / (counts[restart][:, None]
                                                                             + counts[restart][None, :]).clamp_min(1)
        cost = pair_counts * torch.cdist(means, means) ** 2
        cost[~present[:, None] | ~present[None, :]] = math.inf
        cost.fill_diagonal_(math.inf)
        flat = int(cost.argmin())
        kept, freed = flat // k, flat % k
        drops = cuts.drops[restart].clone()
        drops[[kept, freed]] = -math.inf
        cluster = int(drops.argmax())
        if not float(drops[cluster]) > float(cost[kept, freed]):
            continue
        assignment = torch.where(state.assignment[restart] == freed, kept, state.assignment[restart])
        centres = state.centres[restart].clone()
        centres[kept] = (sums[restart, kept] + sums[restart, freed]) / (counts[restart, kept] + counts[restart, freed])
        assignment, centres = _cut(points, assignment, cluster, cuts.directions[restart, cluster], freed, centres)
        rows.append(restart)
        starts.append((centres, assignment))
    if not rows:
        return state, cuts
    rows = torch.tensor(rows, device=points.device)
    start = _State(torch.stack([c for c, _ in starts]), state.nearest[rows], torch.stack([a for _, a in starts]))
    swapped = _lloyd(points, point_norms, start, max_iter)
    better = swapped.inertias() < state.inertias()[rows]
    if not bool(better.any()):
        return state, cuts
    state = state.update(rows[better], swapped.select(torch.nonzero(better).flatten()))
    return state, _update_cuts(points, state, cuts, generator)


def _best_restart(points: torch.Tensor, state: _State) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(centroids [k, d], assignment [N], inertia) of the restart with the lowest inertia; the centroids are the
    means of the final assignment's members (Lloyd may stop with up to LLOYD_TOLERANCE of the points just moved)."""
    inertias = state.inertias()
    best = int(inertias.argmin())
    assignment = state.assignment[best]
    sums, counts = _cluster_sums(points, assignment[None], state.centres.shape[1])
    centroids = torch.where(counts[0, :, None] > 0, sums[0] / counts[0].clamp_min(1)[:, None], state.centres[best])
    return centroids, assignment, float(inertias[best])


def _n_candidates(k: int) -> int:
    return 2 + int(math.log(k))         # scikit-learn's n_local_trials


class _Points:
    """The points in canonical order, their squared norms and the seeded generator of one clustering call."""

    def __init__(self, features: torch.Tensor, seed: int):
        points = _check_points(features)
        self.order = _canonical_order(points)
        self.points = points[self.order]
        self.norms = (self.points * self.points).sum(dim=1)
        self.generator = torch.Generator(device=points.device).manual_seed(int(seed) % (2 ** 63))

    def __len__(self) -> int:
        return len(self.points)

    def in_given_order(self, assignment: torch.Tensor) -> torch.Tensor:
        restored = torch.empty_like(assignment)
        restored[self.order] = assignment
        return restored


def kmeans(features: torch.Tensor, k: int, *, seed: int, restarts: int = KMEANS_RESTARTS,
           max_iter: int = KMEANS_MAX_ITER) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean k-means: greedy k-means++ seeding, Lloyd, k LocalSearch++ swap steps, `restarts` times side by
    side, the lowest inertia kept (the module docstring says more).

    features: [N, d] float (any float dtype; computed in float32), on any device. Returns (centroids [k, d] float32,
    assignment [N] int64), both on the features' device; the centroids are the means of their members. The same
    for any order of the rows. Raises ValueError unless 1 <= k <= N, or when the features are not [N, d] finite
    values."""
    data = _Points(features, seed)
    if isinstance(k, bool) or not 1 <= int(k) <= len(data):
        raise ValueError(f"k-means with k={k} on {len(data)} points")
    if restarts < 1:
        raise ValueError(f"k-means needs at least one restart, got restarts={restarts}")
    k = int(k)
    seeds = _kmeans_pp_seeds(data.points, data.norms, k, restarts, data.generator, _n_candidates(k))
    state = _lloyd(data.points, data.norms, _assign(data.points, data.norms, seeds), max_iter)
    state = _local_search(data.points, data.norms, state, k, SWAP_CANDIDATES, data.generator, max_iter)
    centroids, assignment, _ = _best_restart(data.points, state)
    return centroids, data.in_given_order(assignment)


def empty_clusters(assignment: torch.Tensor, k: int) -> int:
    """How many of the k clusters have no member in `assignment` ([N] int64 cluster ids): what methods log."""
    return int(k) - int(torch.unique(assignment).numel())


def inertia(features: torch.Tensor, centroids: torch.Tensor, assignment: torch.Tensor) -> float:
    """Sum of squared Euclidean distances of the points to their centroids (k-means' objective)."""
    return float(((features.float() - centroids[assignment]) ** 2).sum())


# ----------------------------------------------------------------------------------------------------------------
# k-means for every K of a range (what a rule for the cluster count reads: methods/cluster_count.py)
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class KMeansPath:
    """k-means for every K of a range, on one set of points: per K the centroids ([K, d] float32), the assignment
    of every point in the order the points were given ([N] int64) and the inertia (sum of squared Euclidean
    distances to the centroids)."""
    centroids: dict[int, torch.Tensor]
    assignments: dict[int, torch.Tensor]
    inertias: dict[int, float]

    @property
    def ks(self) -> list[int]:
        return sorted(self.inertias)


def kmeans_path(features: torch.Tensor, k_range: range, *, seed: int, restarts: int = PATH_RESTARTS,
                max_iter: int = KMEANS_MAX_ITER) -> KMeansPath:
    """k-means for every K of `k_range` (clipped to the number of points), by chains of bisections.

    Each restart is a chain over K: its first K centres are greedy k-means++ seeds, then Lloyd; each next K cuts
    one cluster in two (`_split_step`: the cluster whose cut along its principal direction lowers the inertia
    most), runs Lloyd iterations, and the chain with the lowest inertia takes one LocalSearch++ swap step (a point
    drawn by D^2 replaces a centre when that lowers the inertia: it undoes two centres left on one of several
    plainly separate clusters). Per K the restart with the lowest inertia is kept. A K costs a few Lloyd
    iterations and O(N d) for the cut, instead of a fresh start.

    features: [N, d] float on any device (computed in float32 there). The result is the same for any order of the
    rows, and the same on every call with the same seed. Raises ValueError when no K of the range fits the
    points, or for fewer than one restart."""
    data = _Points(features, seed)
    ks = [k for k in k_range if 1 <= k <= len(data)]
    if not ks:
        raise ValueError(f"k-means path: no K of {k_range} fits {len(data)} points")
    if restarts < 1:
        raise ValueError(f"k-means needs at least one restart, got restarts={restarts}")
    points, norms, generator = data.points, data.norms, data.generator
    seeds = _kmeans_pp_seeds(points, norms, ks[0], restarts, generator, _n_candidates(ks[0]))
    state = _lloyd(points, norms, _assign(points, norms, seeds), max_iter)
    path = KMeansPath({}, {}, {})

    def keep(k: int) -> None:
        centroids, assignment, value = _best_restart(points, state)
        path.centroids[k], path.assignments[k], path.inertias[k] = centroids, data.in_given_order(assignment), value
    keep(ks[0])
    cuts = _update_cuts(points, state, None, generator)
    for k in range(ks[0] + 1, ks[-1] + 1):
        state = _lloyd(points, norms, _split_step(points, state, cuts), max_iter)
        cuts = _update_cuts(points, state, cuts, generator)
        state, cuts = _merge_and_cut(points, norms, state, cuts, generator, max_iter)
        if k in ks:
            keep(k)
    return path


# ----------------------------------------------------------------------------------------------------------------
# The baselines' k-means (faiss, as their official code runs it)
# ----------------------------------------------------------------------------------------------------------------

def faiss_kmeans(features: torch.Tensor, k: int, *, seed: int, niter: int = 20, nredo: int = 1,
                 spherical: bool = False, max_points_per_centroid: int = 100_000,
                 init_centroids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """faiss k-means with every parameter pinned (faiss's defaults would fix seed=1234 for every run and subsample to
    256 points per centroid silently): the clustering of the baselines' official code (PCS, UCDIR, DGDIR, CoDA).

    Returns (centroids [k, d] float32, assignments [N] int64) on the features' device. `spherical` normalises the
    centroids after each iteration and assigns by inner product (cosine k-means). `init_centroids` ([k, d]) starts
    the iterations from these centroids instead of k random points (faiss `train(x, init_centroids=...)`; CoDA's
    shared initialisation). Raises ValueError unless 1 <= k <= N, or for initial centroids of the wrong shape."""
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
