"""Rules for the cluster count compared on separable but noisy classes, with labels (a diagnostic, never part of a run).

    python -m benchmark.kestimators [--threads 2] [--output docs/cluster_count_grid.md] [--quick] [--domainnet]

UEM needs one number per domain without the class count: K, from k-means run for every K of a range. Each cell of the
grid draws a query domain of C classes and a retrieval domain of its first C // 2 classes
(`benchmark.separable.separated_domains`): dimension 64 to 2048, C from 5 to 65, 20 or 50 points per class or a size
per class drawn from [10, 90], noise 0.3 to 1.4 (cells where a nearest-class-mean classifier falls below 0.99 on the
query domain are left out: there the classes are not separable, and no count is right), and a retrieval domain
translated by 0 or 1 and L2-normalised again, as UEM's memory banks hold their features. Every rule reads the same
k-means path (`methods.clustering.kmeans_path`, K in `methods.cluster_count.k_range_for(N)`); the first column is
what UEM ran before (chord elbow on the chain that added one k-means++ point per K, `benchmark.perf`'s
`d2_chain_elbow`). It prints |K - true K| of the query / retrieval domain for every rule and cell, a summary per
rule (cells where both domains' K is exact, mean and largest error) and seconds: the path's, and each rule's on top
of it.

Affordable on two CPU cores (about 20 minutes): the 80 cells of (dimension, classes, noise) each get one of the
three size patterns and one of the two translations, in rotation, rather than all 480 combinations; the gap
statistic, which clusters 5 reference sets of the same size per domain, runs only on the cells of 64 and 128
dimensions (elsewhere "-"). `--quick` keeps the 128-d cells; `--domainnet` adds a cell of DomainNet's size (345
classes of 60 to 120 points, about 31,000, where the range reaches K = 353).
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from methods.cluster_count import K_RULES, choose_k, k_range_for
from methods.clustering import kmeans_path

from .separable import adjusted_rand_index, nearest_class_mean_accuracy, separated_domains

DIMENSIONS = (64, 128, 512, 2048)
CLASS_COUNTS = (5, 10, 20, 40, 65)
NOISES = (0.3, 0.6, 1.0, 1.4)
SIZE_PATTERNS = ((20, 20), (50, 50), (10, 90))       # per class: fixed 20, fixed 50, drawn from [10, 90]
SHIFTS = (0.0, 1.0)
GAP_DIMENSIONS = (64, 128)
SEPARABLE = 0.99                                       # nearest-class-mean accuracy a cell needs
PREVIOUS = "elbow before"                             # the column of what UEM ran before


@dataclass
class Cell:
    dim: int
    classes: int
    noise: float
    sizes: tuple[int, int]
    shift: float
    seed: int = 0

    def describe(self) -> list:
        sizes = str(self.sizes[0]) if self.sizes[0] == self.sizes[1] else f"{self.sizes[0]}-{self.sizes[1]}"
        return [self.dim, f"{self.classes}/{self.classes // 2}", self.noise, sizes, self.shift]


@dataclass
class CellResult:
    cell: Cell
    accuracy: float
    errors: dict[str, tuple[int, int]] = field(default_factory=dict)    # rule -> |K - true K| (query, retrieval)
    rand_index: list[float] = field(default_factory=list)              # the path's partition at the true K, per domain
    seconds: dict[str, float] = field(default_factory=dict)             # rule (or "path") -> seconds, both domains


def grid_cells(quick: bool = False, domainnet: bool = False, grid: bool = True) -> list[Cell]:
    cells = []
    for index, (dim, classes, noise) in enumerate(itertools.product(DIMENSIONS, CLASS_COUNTS, NOISES)):
        if not grid or (quick and dim != 128):
            continue
        cells.append(Cell(dim, classes, noise, SIZE_PATTERNS[index % 3], SHIFTS[(index // 3) % 2], seed=index))
    if domainnet:
        cells.append(Cell(128, 345, 0.6, (60, 120), 1.0, seed=len(DIMENSIONS) * len(CLASS_COUNTS) * len(NOISES)))
    return cells


def _timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def evaluate_cell(cell: Cell, rules: list[str], previous) -> CellResult | None:
    """|K - true K| of every rule on both domains of `cell`, or None when its classes are not separable."""
    query, query_labels, retrieval, retrieval_labels = separated_domains(
        cell.classes, dim=cell.dim, noise=cell.noise, shift=cell.shift, seed=cell.seed, sizes=cell.sizes,
        renormalise=True)
    accuracy = nearest_class_mean_accuracy(query, query_labels)
    if accuracy < SEPARABLE:
        return None
    result = CellResult(cell, accuracy)
    errors: dict[str, list[int]] = {}
    for domain, (features, labels) in enumerate(((query, query_labels), (retrieval, retrieval_labels))):
        true_k = int(labels.unique().numel())
        k_range = k_range_for(len(features))
        seed = cell.seed * 2 + domain
        before, seconds = _timed(lambda: previous(features, k_range, seed))
        errors.setdefault(PREVIOUS, []).append(abs(before - true_k))
        result.seconds[PREVIOUS] = result.seconds.get(PREVIOUS, 0.0) + seconds
        path, seconds = _timed(lambda: kmeans_path(features, k_range, seed=seed))
        result.seconds["path"] = result.seconds.get("path", 0.0) + seconds
        if true_k in path.assignments:
            result.rand_index.append(adjusted_rand_index(labels, path.assignments[true_k]))
        for rule in rules:
            if rule == "gap" and (cell.dim not in GAP_DIMENSIONS or cell.classes > 65):
                continue
            choice, seconds = _timed(lambda: choose_k(rule, features, path, seed))
            errors.setdefault(rule, []).append(abs(choice.k - true_k))
            result.seconds[rule] = result.seconds.get(rule, 0.0) + seconds
    result.errors = {rule: tuple(values) for rule, values in errors.items()}
    return result


def _summary(results: list[CellResult], columns: list[str]) -> list[list]:
    rows = []
    for rule in columns:
        scored = [r for r in results if rule in r.errors]
        errors = [e for r in scored for e in r.errors[rule]]
        exact = sum(all(e == 0 for e in r.errors[rule]) for r in scored)
        reachable = [r for r in scored if min(r.rand_index, default=0.0) == 1.0]
        exact_reachable = sum(all(e == 0 for e in r.errors[rule]) for r in reachable)
        seconds = [r.seconds[rule] for r in scored]
        rows.append([rule, f"{exact} of {len(scored)}", f"{exact_reachable} of {len(reachable)}",
                     f"{statistics.mean(errors):.2f}", max(errors), f"{statistics.median(seconds):.3f}",
                     f"{max(seconds):.2f}"])
    return rows


def render(results: list[CellResult], skipped: list[Cell], columns: list[str], header: str) -> str:
    from tabulate import tabulate
    lines = [header, "",
             "Per rule: cells where the K of both domains is the true one, the same among the cells where the "
             "path's partition at the true K is the classes in both domains (adjusted Rand index 1: there a right "
             "K gives clusters that are classes), mean and largest |K - true K| over both domains of every cell it "
             "ran on, and seconds per cell (both domains; a rule's own time on top of the k-means path, whose time "
             f"is the row `path`; `{PREVIOUS}`: its own chain and rule).", ""]
    columns = [rule for rule in columns if any(rule in r.errors for r in results)]   # e.g. no gap on 345 classes
    summary = _summary(results, columns)
    path_seconds = [r.seconds["path"] for r in results]
    summary.append(["path", "", "", "", "", f"{statistics.median(path_seconds):.3f}", f"{max(path_seconds):.2f}"])
    lines.append(tabulate(summary, headers=["rule", "exact cells", "exact where ARI = 1", "mean error", "max error",
                                            "median s", "max s"], tablefmt="github"))
    lines += ["", "Per cell: |K - true K| of the query / retrieval domain; `NCM acc`: the nearest-class-mean accuracy "
              "of the query domain; `ARI at K`: the adjusted Rand index of the path's partition at the true K against "
              "the classes (query / retrieval): below 1, k-means itself does not find the classes there, and no rule "
              "can make its clusters the classes.", ""]
    rows = [cell_result.cell.describe() + [f"{cell_result.accuracy:.2f}",
                                           "/".join(f"{value:.2f}" for value in cell_result.rand_index)]
            + ["{}/{}".format(*cell_result.errors[rule]) if rule in cell_result.errors else "-" for rule in columns]
            for cell_result in results]
    lines.append(tabulate(rows, headers=["dim", "classes", "noise", "per class", "shift", "NCM acc", "ARI at K"]
                          + columns, tablefmt="github"))
    if skipped:
        lines += ["", f"Left out (nearest-class-mean accuracy below {SEPARABLE}): " + "; ".join(
            "dim {} classes {} noise {} per class {} shift {}".format(*cell.describe()) for cell in skipped) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.kestimators", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, help="also write the tables (markdown) to this file")
    parser.add_argument("--quick", action="store_true", help="only the 128-d cells")
    parser.add_argument("--domainnet", action="store_true", help="add a 345-class cell of about 31,000 points")
    parser.add_argument("--no-grid", dest="grid", action="store_false", help="leave the grid out (with --domainnet: "
                        "that cell alone)")
    parser.add_argument("--rules", nargs="+", default=list(K_RULES), choices=list(K_RULES))
    args = parser.parse_args(argv)
    from .perf import d2_chain_elbow
    if args.threads:
        torch.set_num_threads(args.threads)
    results, skipped = [], []
    started = time.perf_counter()
    for cell in grid_cells(args.quick, args.domainnet, args.grid):
        result = evaluate_cell(cell, args.rules, d2_chain_elbow)
        (skipped.append(cell) if result is None else results.append(result))
        if result is not None:
            print("cell", cell.describe(), {rule: e for rule, e in result.errors.items()},
                  f"{sum(result.seconds.values()):.1f} s", file=sys.stderr, flush=True)
    header = (f"K rules on {len(results)} cells of separable classes (`python -m benchmark.kestimators"
              f"{' --quick' if args.quick else ''}{' --domainnet' if args.domainnet else ''}"
              f"{' --no-grid' if not args.grid else ''}`, torch threads "
              f"{torch.get_num_threads()}, {time.perf_counter() - started:.0f} s in all)")
    text = render(results, skipped, [PREVIOUS] + args.rules, header)
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
