"""Every method's quickstart run is bitwise what it was before the Method interface was reworked (issue 15).

The fingerprints (tests/golden/bitwise_quickstart.json, recorded by `python -m tests.bitwise --record` on the code
before the change) hold each method's metrics and per-epoch losses as exact floats and the SHA-256 of its final query
and retrieval features, for the quickstart's photo→sketch run, seed 2024, on one thread. A refactoring that moves any
bit of any of them fails here. Bitwise equality needs the same torch build and CPU kernels as the recording
(`machine` in the file); on another build or CPU the test is skipped, saying so (record there first to compare).
"""
from __future__ import annotations

import json

import pytest

from .bitwise import GOLDEN, fingerprint, machine

RECORDED = json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    return tmp_path_factory.mktemp("bitwise")


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(RECORDED["runs"]))
def test_quickstart_run_is_bitwise_unchanged(method, output, cache_dir):
    if machine() != RECORDED["machine"]:
        pytest.skip(f"fingerprints recorded on {RECORDED['machine']}, this is {machine()}: other kernels, other "
                    "last bits")
    expected = RECORDED["runs"][method]
    actual = fingerprint(method, expected["suite"], output, cache_dir)
    assert actual["losses"] == expected["losses"]
    assert actual["metrics"] == expected["metrics"]
    assert (actual["query_features"], actual["retrieval_features"]) == \
        (expected["query_features"], expected["retrieval_features"])


def test_the_fingerprints_cover_every_registered_method():
    from methods.registry import method_names
    assert sorted(RECORDED["runs"]) == sorted(method_names())
