"""The retrieval sample (`retrievals.json`): the top k of a few queries of every run, written by the runner after the
evaluation and read by the retrieval figure (benchmark/figures.py). Writer and reader live here, with the format.

The queries are drawn from the split alone (its seed and labels), so every method and every seed of a split shows
the same queries and `--figures` needs no retraining. Format 2 carries the tie marks of each rank
(`retrieved_tied`, `retrieved_expected_correct`; benchmark/evaluation.py `retrieval_sample`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from datasets.base import LabelledDomain
from methods.base import derive_seed

from .evaluation import retrieval_sample, sample_queries
from .spec import RunSpec
from .store import atomic_write_json

RETRIEVALS_FILE = "retrievals.json"
RETRIEVALS_FORMAT = 2          # 2: with the tie marks of each rank
FIGURE_SHARED_QUERIES = 4
FIGURE_PRIVATE_QUERIES = 2      # open setting only: queries whose right answer is null
FIGURE_TOP_K = 5


def store_retrieval_sample(run_dir: Path, spec: RunSpec, query_features: torch.Tensor, query: LabelledDomain,
                           retrieval_features: torch.Tensor, retrieval: LabelledDomain,
                           private: torch.Tensor | None) -> None:
    """Write the figures' sample: the top k of a few queries, drawn from the split alone (seed and labels), so every
    method and every seed of a split shows the same queries and `--figures` needs no retraining."""
    sample_seed = derive_seed(spec.split_seed, "figure_queries", spec.query_domain, spec.retrieval_domain)
    indices = sample_queries(query.labels, retrieval.labels, FIGURE_SHARED_QUERIES, seed=sample_seed,
                             n_private=FIGURE_PRIVATE_QUERIES if spec.setting == "open" else 0)
    queries = retrieval_sample(query_features, query.labels, retrieval_features, retrieval.labels, indices,
                               FIGURE_TOP_K, private_pred=private)
    atomic_write_json(Path(run_dir) / RETRIEVALS_FILE, {
        "format": RETRIEVALS_FORMAT, "top_k": FIGURE_TOP_K, "sample_seed": sample_seed,
        "query_domain": spec.query_domain, "retrieval_domain": spec.retrieval_domain,
        # the sizes of the split domains the indices point into: a figure checks them before showing images
        "n_query_images": len(query), "n_retrieval_images": len(retrieval), "queries": queries})


QUERY_KEYS = ("query_index", "label", "private", "returned_null", "retrieved_indices", "retrieved_labels",
              "retrieved_correct", "retrieved_tied", "retrieved_expected_correct")


def read_retrieval_sample(run_dir: Path) -> dict | None:
    """The run's stored sample, or None when it has none (a run done before samples were stored). A file that is
    not a sample of the known format raises ValueError naming it."""
    path = Path(run_dir) / RETRIEVALS_FILE
    if not path.is_file():
        return None
    try:
        sample = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable retrieval sample ({error})") from None
    expected = {"format", "top_k", "n_query_images", "n_retrieval_images", "queries"}
    if (not isinstance(sample, dict) or not expected <= set(sample) or sample["format"] != RETRIEVALS_FORMAT
            or not isinstance(sample["queries"], list) or not sample["queries"]
            or not all(isinstance(q, dict) and set(QUERY_KEYS) <= set(q) for q in sample["queries"])):
        raise ValueError(f"{path}: not a retrieval sample of format {RETRIEVALS_FORMAT} (expected the keys "
                         f"{sorted(expected)}, and queries with the keys {list(QUERY_KEYS)})")
    return sample
