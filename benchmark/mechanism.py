"""UEM's prototype merging measured with labels: whether the data lets it act (a diagnostic, never part of a run).

    python -m benchmark.mechanism --suite quickstart_ablation [--output results] [--methods uem pretrained]
    python -m benchmark.mechanism --suite examples/digits.toml --methods uem uem_no_pm pretrained

UEM merges a query-domain prototype with a retrieval-domain one when, after Eq. 8's translation by the difference of
the domains' means, they lie closer than the closest two prototypes of one domain (Eq. 9); its open-set detector
(App. B.1) calls every query of an unmerged prototype private. That needs (1) clusters that are classes and (2) a
domain gap that one translation undoes. For every done run of the suite's dataset and the methods asked for, in
the store under --output (whatever hyper-parameters it was made with), this reads the final retrieval
features (the run's last checkpoint, re-embedded) with the labels, which no method ever sees, and prints per run:

- `K query/retrieval (true)`: UEM's K of each domain (its label-free choice: `kmeans_with_k_rule` with the run's
  `k_rule` and K range; for another method's features, UEM's on that dataset) beside the class counts;
- `purity`: the share of images whose cluster's majority class is their own (1 = clusters are classes);
- `oracle merges`: with the class means as prototypes, how many shared classes Eq. 9 merges; `translation error /
  threshold`: the median over shared classes of ||mu^A_c - (mu^B_c + m^A - m^B)|| and Eq. 9's threshold (the
  smallest distance between two class means of one domain): above 1, even perfect prototypes cannot merge;
- `merges (right)`: the merged pairs of those clusters' prototypes, and how many join a class with itself
  (majority labels).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from tabulate import tabulate

from methods import get_method_class
from methods.backbones import backbone_family
from methods.base import resolve_hparams
from methods.cluster_count import k_range_for, kmeans_with_k_rule
from methods.uem import UEMHparams, merge_prototypes

from . import store
from .runner import trained_features
from .spec import load_spec
from .errors import UserError
from .suites import get_suite


def _class_means(features: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    return torch.stack([features[labels == c].mean(dim=0) for c in classes])


def _majority(labels: torch.Tensor, assignment: torch.Tensor) -> dict[int, int]:
    return {int(c): int(labels[assignment == c].mode().values) for c in assignment.unique()}


def merging_report(query: torch.Tensor, query_labels: torch.Tensor, retrieval: torch.Tensor,
                   retrieval_labels: torch.Tensor, *, seed: int, k_rule: str = "silhouette", k_min: int = 2,
                   k_max: int = 0) -> dict:
    """The module docstring's measurements for one pair of feature sets ([Q, d] and [G, d], labels [Q] and [G]);
    K of each domain by `k_rule` over `k_range_for(N, k_min, k_max)`, as UEM chooses it."""
    query, retrieval = query.float(), retrieval.float()
    query_classes = sorted(set(query_labels.tolist()))
    retrieval_classes = sorted(set(retrieval_labels.tolist()))
    shared = sorted(set(query_classes) & set(retrieval_classes))
    query_means = _class_means(query, query_labels, shared)
    retrieval_means = _class_means(retrieval, retrieval_labels, shared)
    offset = query.mean(dim=0) - retrieval.mean(dim=0)                         # Eq. 8: B -> A
    errors = (query_means - (retrieval_means + offset)).norm(dim=1)
    all_query_means = _class_means(query, query_labels, query_classes)
    all_retrieval_means = _class_means(retrieval, retrieval_labels, retrieval_classes)
    oracle = merge_prototypes(all_query_means, all_retrieval_means, query.mean(dim=0), retrieval.mean(dim=0))
    threshold = min(float(torch.pdist(m).min()) if len(m) > 1 else math.inf
                    for m in (all_query_means, all_retrieval_means))
    oracle_right = sum(query_classes[a] == retrieval_classes[b] for a, b in oracle.merged_pairs)

    query_prototypes, query_assignment, query_k = kmeans_with_k_rule(
        query, k_range_for(len(query), k_min, k_max), rule=k_rule, seed=seed)
    retrieval_prototypes, retrieval_assignment, retrieval_k = kmeans_with_k_rule(
        retrieval, k_range_for(len(retrieval), k_min, k_max), rule=k_rule, seed=seed + 1)
    unified = merge_prototypes(query_prototypes, retrieval_prototypes, query.mean(dim=0), retrieval.mean(dim=0))
    query_major, retrieval_major = _majority(query_labels, query_assignment), _majority(retrieval_labels,
                                                                                       retrieval_assignment)
    purity = [float((labels == torch.tensor([major[int(c)] for c in assignment])).float().mean())
              for labels, assignment, major in ((query_labels, query_assignment, query_major),
                                                (retrieval_labels, retrieval_assignment, retrieval_major))]
    return {
        "k": (query_k, retrieval_k), "classes": (len(query_classes), len(retrieval_classes)),
        "purity": tuple(purity), "shared": len(shared),
        "oracle_merges": len(oracle.merged_pairs), "oracle_right": oracle_right,
        "median_error": float(errors.median()), "threshold": threshold,
        "merges": len(unified.merged_pairs),
        "right_merges": sum(query_major[a] == retrieval_major[b] for a, b in unified.merged_pairs),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.mechanism", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True, help="the suite (its dataset) whose stored runs to read: a "
                        "built-in suite's name or a suite file")
    parser.add_argument("--output", type=Path, default=Path("results"))
    parser.add_argument("--methods", nargs="+", default=["pretrained", "uem"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        suite = get_suite(args.suite)          # a built-in suite's name or a suite file (its folder dataset too)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # The runs in the store, whatever hyper-parameters they were made with (a re-plan would find only defaults).
    run_dirs = sorted(path.parent for method in args.methods
                      for path in (args.output / "runs" / suite.dataset).glob(f"*/*/{method}/*/spec.json"))
    rows = []
    for run_dir in run_dirs:
        if store.run_status(run_dir) != "done":
            continue
        spec = load_spec(run_dir / "spec.json")
        query, query_labels, retrieval, retrieval_labels, method = trained_features(run_dir, args.device)
        # UEM's K rule and range: the run's own, or UEM's for the run's dataset when another method made the
        # features.
        hparams = method.hparams if isinstance(method.hparams, UEMHparams) else UEMHparams(
            **resolve_hparams(get_method_class("uem"), spec.dataset, family=backbone_family(spec.backbone)))
        report = merging_report(query, query_labels, retrieval, retrieval_labels, seed=spec.seed,
                                k_rule=hparams.k_rule, k_min=hparams.k_min, k_max=hparams.k_max)
        rows.append([spec.method, spec.setting, f"{spec.query_domain}->{spec.retrieval_domain}", spec.seed,
                     "{}/{} ({}/{})".format(*report["k"], *report["classes"]),
                     "{:.2f}/{:.2f}".format(*report["purity"]),
                     f"{report['oracle_merges']} of {report['shared']} ({report['oracle_right']} right)",
                     f"{report['median_error']:.3f} / {report['threshold']:.3f}",
                     f"{report['merges']} ({report['right_merges']})"])
    if not rows:
        print(f"no done run of {', '.join(args.methods)} in suite {args.suite} under {args.output}", file=sys.stderr)
        return 1
    print(tabulate(rows, headers=["method", "setting", "pair", "seed", "K query/retrieval (true)", "purity",
                                  "oracle merges", "translation error / threshold", "merges (right)"],
                   tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
