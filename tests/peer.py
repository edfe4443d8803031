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
import torch.nn.functional as F

from methods.memory_bank import MemoryBank

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


class UnitFeatures(torch.nn.Module):
    """A stub backbone: the cases' "images" are the trunk's 8-d features, only L2-normalised."""
    embed_dim = 8

    def forward(self, images):
        return F.normalize(images.flatten(1), dim=1)


class TrunkAndLinearHead(torch.nn.Module):
    """A stub backbone: the "images" are trunk features (`features` is the identity), the head a fixed bias-free
    linear layer, the output L2-normalised (no BatchNorm: a key encoder takes the batch in one piece)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.head.weight.copy_(weight)
        self.embed_dim = weight.shape[0]

    def features(self, images):
        return images

    def forward(self, images):
        return F.normalize(self.head(self.features(images)), dim=1)


def case_banks(inputs: dict) -> torch.nn.ModuleList:
    """The two domains' memory banks of a training-step case (`bank_a`, `bank_b`)."""
    banks = torch.nn.ModuleList([MemoryBank(*inputs["bank_a"].shape), MemoryBank(*inputs["bank_b"].shape)])
    banks[0].features.copy_(inputs["bank_a"])
    banks[1].features.copy_(inputs["bank_b"])
    return banks


def replayed_bank(case: dict, update) -> MemoryBank:
    """A bank case's `bank` after `update(bank, index, features)` for each of its recorded steps."""
    inputs = case["inputs"]
    bank = MemoryBank(*inputs["bank"].shape)
    bank.features.copy_(inputs["bank"])
    for index, features in zip(inputs["indices"], inputs["features"]):
        update(bank, index, features)
    return bank
