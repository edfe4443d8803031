"""Shared fixtures: one generated synthetic dataset per test session, and small suites that train in seconds."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from benchmark import launchers, suites
from benchmark.backbone_specs import QUICKSTART_BACKBONE
from benchmark.separable import separated_domains  # noqa: F401  (the tests' features with labels)
from datasets.synthetic import ensure_synthetic

# The quickstart's backbone spec with a one-epoch SimCLR init: the same code path, seconds instead of minutes.
TINY_BACKBONE = copy.deepcopy(QUICKSTART_BACKBONE)
TINY_BACKBONE["init"]["epochs"] = 1


@pytest.fixture(autouse=True)
def one_job_in_process(monkeypatch):
    """`--jobs auto` is one job in the tests that call the CLI in this process: they register suites and methods
    and patch the runner, which worker processes would not see (tests/test_launchers.py tests auto_jobs itself; the
    tests that start `run_benchmark.py` as a process run with auto)."""
    monkeypatch.setattr(launchers, "auto_jobs", lambda device: 1)


REAL_AUTO_JOBS = launchers.auto_jobs


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    ensure_synthetic(path)
    return path


def tiny_suite(name: str, settings=("partial",), pairs=(("photo", "sketch"),), seeds=(2024,), methods=None,
               backbone=None) -> suites.Suite:
    """A suite registered for the test session (re-registering the same name returns the existing one)."""
    if name in suites.SUITES:
        return suites.SUITES[name]
    return suites.add_suite(suites.Suite(name=name, dataset="synthetic", settings=tuple(settings),
                                         pairs=tuple(pairs), seeds=tuple(seeds), backbone=backbone or TINY_BACKBONE,
                                         methods=tuple(methods) if methods else None))


@pytest.fixture
def one_thread():
    """Bitwise reproducibility on the CPU needs one thread: several threads reduce gradients (conv, GroupNorm
    backward) in a scheduling-dependent order, which moves the 4th digit of a metric from run to run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def prepared_run(spec, output, cache_dir) -> Path:
    """A run folder for `spec` under `output` (CPU, the test session's cache); returns its spec.json."""
    from benchmark import store
    run_dir = store.prepare_run_dir(spec, output, {"cache_dir": str(cache_dir), "device": "cpu"})
    return run_dir / "spec.json"


def run_stopped_after_one_epoch(spec, tmp_path, cache_dir):
    """Runs `spec` uninterrupted in tmp_path/a and stopped after its first epoch in tmp_path/b (a killed job).
    Returns (the uninterrupted metrics, the stopped run's spec.json, its checkpointed method state)."""
    import torch

    from benchmark.runner import run_one
    uninterrupted = run_one(prepared_run(spec, tmp_path / "a", cache_dir))
    spec_path = prepared_run(spec, tmp_path / "b", cache_dir)
    assert run_one(spec_path, stop_after_epochs=1) == {}
    checkpoint = torch.load(spec_path.parent / "ckpt" / "last.pt", weights_only=False)
    assert checkpoint["epoch"] == 1
    return uninterrupted, spec_path, checkpoint["method"]


def assert_key_encoder_trails(state: dict) -> None:
    """A checkpointed MoCo-style method holds its key encoder, an EMA that differs from the query encoder."""
    import torch
    key = {k.replace("key_encoder.encoder.", "backbone.", 1): v for k, v in state.items()
           if k.startswith("key_encoder.encoder.")}
    assert key and any(not torch.equal(v, state[k]) for k, v in key.items())


class FeatureStub(torch.nn.Module):
    """A 'backbone' whose images are already 2-d features: forward = L2 normalisation (loss tests by hand)."""
    embed_dim = 2

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, images):
        return torch.nn.functional.normalize(self.scale * images.flatten(1), dim=1)


@pytest.fixture
def clean_registries():
    """Methods, datasets, suites, plugins and suite files registered by a test are forgotten after it (the other
    tests plan every registered method)."""
    import sys

    from benchmark import suite_files
    from datasets.registry import DATASETS
    from methods import plugins
    from methods.registry import REGISTRY
    tables = (REGISTRY, DATASETS, suites.SUITES, plugins._LOADED, suites._LOADED_FILES,
              suite_files.FOLDER_DATASETS)
    saved = [dict(table) for table in tables]
    modules = set(sys.modules)
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)
    for name in set(sys.modules) - modules:          # the plugins' modules and any dropped into methods/
        if name.startswith(("cdr_plugin_", "methods.")):
            sys.modules.pop(name)


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def toys(tmp_path) -> Path:
    """docs/extending.md's example, made in a folder outside the repository: the dataset by the example script (three
    domains), the suite file and the method file beside it. Returns the suite file."""
    import shutil
    import subprocess
    import sys
    for name in ("toys.toml", "my_method.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    subprocess.run([sys.executable, str(EXAMPLES / "make_toy_dataset.py"), str(tmp_path / "toys")], check=True,
                   capture_output=True, timeout=120)
    return tmp_path / "toys.toml"
