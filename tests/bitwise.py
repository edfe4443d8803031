"""Bitwise fingerprints of one quickstart run per registered method, on one thread (issue 15).

The quickstart's methods run its photo→sketch partial-set run (seed 2024); UEM's ablation variants the same pair
in the open set, from `quickstart_ablation`.

A fingerprint is what a refactoring must not move: the run's metrics and per-epoch losses (exact floats) and the
SHA-256 of its final query and retrieval features. `tests/golden/bitwise_quickstart.json` holds the fingerprints
recorded before the Method interface was reworked; `tests/test_bitwise.py` checks every method against them.

Record again (only after a change that is meant to move the numbers, saying so in the commit):

    python -m tests.bitwise --record                       # every method
    python -m tests.bitwise --record --methods coda uem    # only these; the others keep their fingerprints

Recorded on 2026-11-30 before issue 15's refactoring (on an AVX2 CPU); CoDA, DGDIR, UCDIR and UEM (with its ablations)
recorded again after their k-means seeds moved to derive_seed (PROTOCOL_VERSION 3). Recorded again, every method, on
2026-12-07 on the AVX-512 CPU the project's machines and CI have (the AVX2 fingerprints only ever compared there, and
UEM's had moved with issue 23's cluster count, PROTOCOL_VERSION 4), from the shipped quickstart init.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from benchmark.spec import PROTOCOL_VERSION

GOLDEN = Path(__file__).parent / "golden" / "bitwise_quickstart.json"
SUITES_RECORDED = ("quickstart", "quickstart_ablation")
QUERY, RETRIEVAL, SEED = "photo", "sketch", 2024


def tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def recorded_methods() -> dict[str, str]:
    """method -> the suite its fingerprint is recorded from (the first of SUITES_RECORDED that holds it)."""
    from benchmark.suites import SUITES, plan
    methods = {}
    for suite in SUITES_RECORDED:
        for spec in plan(SUITES[suite]):
            methods.setdefault(spec.method, suite)
    return methods


def quickstart_spec(method: str, suite: str):
    from benchmark.suites import SUITES, plan
    specs = [s for s in plan(SUITES[suite], methods=[method])
             if (s.query_domain, s.retrieval_domain, s.seed) == (QUERY, RETRIEVAL, SEED)]
    assert len(specs) == 1, specs
    return specs[0]


def fingerprint(method: str, suite: str, output: Path, cache_dir: Path) -> dict:
    """Runs the quickstart's photo→sketch seed-2024 run of `method` on one thread; returns its fingerprint."""
    from benchmark import store
    from benchmark.runner import run_one, trained_features
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = store.prepare_run_dir(quickstart_spec(method, suite), output, {"cache_dir": str(cache_dir),
                                                                          "device": "cpu"})
        metrics = run_one(run_dir / "spec.json")
        history = json.loads((run_dir / "metrics.json").read_text())["history"]
        query_features, _, retrieval_features, _, _ = trained_features(run_dir)
    finally:
        torch.set_num_threads(threads)
    return {"metrics": metrics,
            "losses": [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history],
            "query_features": tensor_digest(query_features),
            "retrieval_features": tensor_digest(retrieval_features)}


def machine() -> dict:
    """What a bitwise comparison depends on besides the code: torch's build and the CPU kernels it dispatches to."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine()}


def record(cache_dir: Path, methods: list[str] | None = None) -> None:
    """Record every method's fingerprint, or only `methods`' (the file keeps the others', and says which were
    recorded again, when and why in its `rerecorded` list)."""
    kept = json.loads(GOLDEN.read_text()) if methods and GOLDEN.is_file() else {"runs": {}, "rerecorded": []}
    with tempfile.TemporaryDirectory() as output:
        runs = dict(kept["runs"])
        for method, suite in recorded_methods().items():
            if methods and method not in methods:
                continue
            runs[method] = {"suite": suite, **fingerprint(method, suite, Path(output), cache_dir)}
            print(method, runs[method]["metrics"], flush=True)
    rerecorded = kept.get("rerecorded", []) + ([{"methods": sorted(methods), "protocol_version": PROTOCOL_VERSION}]
                                               if methods else [])
    GOLDEN.write_text(json.dumps({"machine": machine(), "run": [QUERY, RETRIEVAL, SEED], "runs": runs,
                                  "rerecorded": rerecorded}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", required=True)
    parser.add_argument("--methods", nargs="+", help="record these methods again, keep the others' fingerprints "
                                                     "(after a change meant to move only their numbers)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="a synthetic-data cache (default: a temporary one)")
    args = parser.parse_args()
    from datasets.synthetic import ensure_synthetic
    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache_dir or Path(scratch)
        ensure_synthetic(cache)
        record(cache, args.methods)
    sys.exit(0)
