"""Shared by the tests against the official code's recorded outputs (tests/test_peer_<method>.py).

tests/data/peer/<method>/<case>.pt each hold `key` (the harness function it checks), `inputs`, `params`, `official`
(what the official code returned), `source` (the official file and lines), `tol` (the largest absolute difference
allowed) and, for some, `documented` (a deviation the harness's docstrings declare). Recorded by running each
official repository's own loss code on the CPU (faiss-cpu 1.15.1 for the k-means cases); commits:
VisionLearningGroup/CDS 5b3644c, zhengzangw/PCS-FUDA 1b82dd0, conghui1002/UCDIR ad7fa42, wangxu-scu/CoDA 67735cd,
conghui1002/DG-UCDIR 38635d8.
"""
from __future__ import annotations

from pathlib import Path

import torch

PEER_DATA = Path(__file__).parent / "data" / "peer"


def case_names(method: str) -> set[str]:
    return {path.stem for path in (PEER_DATA / method).glob("*.pt")}


def load_case(method: str, name: str) -> dict:
    return torch.load(PEER_DATA / method / f"{name}.pt", weights_only=False)


def assert_official(actual, case: dict, official=None) -> None:
    """`actual` equals the case's official output (or `official`) within the case's `tol`, absolutely."""
    expected = case["official"] if official is None else official
    torch.testing.assert_close(torch.as_tensor(actual).float(), torch.as_tensor(expected).float(), rtol=0,
                               atol=case["tol"])


def max_difference(actual, expected) -> float:
    return float((torch.as_tensor(actual).float() - torch.as_tensor(expected).float()).abs().max())


def assert_every_case_tested(method: str, case_tests: dict[str, str], test_module_globals: dict) -> None:
    """Every recorded case of `method` is named in `case_tests` (case -> test function), and every such test exists:
    a new recording cannot go untested."""
    assert case_names(method) == set(case_tests)
    assert set(case_tests.values()) <= {name for name in test_module_globals if name.startswith("test_")}
