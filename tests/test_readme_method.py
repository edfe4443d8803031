"""The README's "Adding a method" example is a method that trains: its code, taken from the README as written,
registers, runs one epoch through the harness on the synthetic data and stores its metrics."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from benchmark.runner import run_one
from benchmark.suites import SUITES, plan
from methods.registry import REGISTRY

from .conftest import prepared_run, tiny_suite

README = Path(__file__).resolve().parent.parent / "README.md"
SUITE = "test_readme_method"


def readme_method_source() -> str:
    section = README.read_text().split("## Adding a method", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def readme_method():
    """The README's method, registered for this test only (the other tests plan every registered method)."""
    source = readme_method_source().replace("from .", "from methods.")
    module = types.ModuleType("readme_mymethod")
    sys.modules["readme_mymethod"] = module
    try:
        exec(compile(source, str(README), "exec"), module.__dict__)
        yield REGISTRY["mymethod"]
    finally:
        REGISTRY.pop("mymethod", None)
        sys.modules.pop("readme_mymethod", None)
        SUITES.pop(SUITE, None)


def test_the_readme_example_method_trains(readme_method, tmp_path, cache_dir):
    assert readme_method.label == "MyMethod"
    suite = tiny_suite(SUITE, methods=["mymethod"])
    spec = plan(suite, assignments=["mymethod.epochs=1"])[0]
    metrics = run_one(prepared_run(spec, tmp_path, cache_dir))
    assert 0.0 < metrics["map_all_coda"] <= 1.0
    history = (spec.run_dir(tmp_path) / "metrics.json").read_text()
    assert '"loss"' in history
