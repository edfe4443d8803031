"""Speed options that must not change what a run computes (benchmark/acceleration.py, methods.base.sgd): TF32 on
CUDA, torch.compile of the backbones with a shared compile cache, fused SGD on CUDA."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark import store
from benchmark.acceleration import (COMPILE_CACHE_FOLDER, HostSyncCounter, backbone_trunks, compile_backbones,
                                    configure_float32)
from benchmark.runner import run_one
from benchmark.suites import plan
from methods.backbones import build_backbone
from methods.base import sgd
from methods.registry import get_method_class

from .conftest import tiny_suite

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_tf32_is_set_for_cuda_only_and_can_be_turned_off():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    try:
        configure_float32(torch.device("cpu"), tf32=True)
        assert (matmul.fp32_precision, conv.fp32_precision) == before          # the CPU: nothing changes
        configure_float32(torch.device("cuda"), tf32=True)
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        configure_float32(torch.device("cuda:1"), tf32=False)
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def test_sgd_is_fused_only_when_every_parameter_is_on_cuda():
    net = build_backbone("small_cnn", "mlp", 16)
    groups = [{"params": list(net.trunk.parameters()), "lr": 0.1}, {"params": list(net.head.parameters())}]
    optimizer = sgd(groups, lr=0.5, momentum=0.9, weight_decay=1e-4)
    assert not optimizer.defaults["fused"] and [g["lr"] for g in optimizer.param_groups] == [0.1, 0.5]
    plain = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    assert sgd(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4).defaults == plain.defaults
    if torch.cuda.is_available():
        assert sgd(net.cuda().parameters(), lr=0.5).defaults["fused"] is True


def test_compile_finds_every_backbone_of_a_method_and_keeps_its_state_dict():
    # UCDIR holds the online backbone and its momentum encoder's copy: both trunks are compiled, in place, so that
    # checkpoints keep the eager keys
    cls = get_method_class("ucdir")
    method = cls(cls.Hparams(), build_backbone("small_cnn", "mlp", 16))
    keys = list(method.state_dict())
    trunks = backbone_trunks(method)
    assert len(trunks) == 2 and trunks[0] is method.backbone.trunk
    assert compile_backbones(method) == 2
    assert list(method.state_dict()) == keys


def _run(spec, output: Path, cache: Path, **launch) -> Path:
    run_dir = store.prepare_run_dir(spec, output, {"cache_dir": str(cache), "device": "cpu", **launch})
    return run_dir / "spec.json"


@pytest.mark.slow
def test_a_compiled_run_matches_the_eager_one_and_the_next_process_reuses_the_compiled_code(tmp_path, cache_dir):
    # one epoch of CDS eager and compiled, from the same init: the metrics agree to rounding; the compiled code is
    # cached in <cache>/torch_compile, and a second run in a new process (another seed) compiles nothing new
    import shutil
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    suite = tiny_suite("test_compile_suite", methods=["cds"], seeds=(2024, 2025))
    first, second = plan(suite, assignments=["cds.epochs=1"])
    eager = run_one(_run(first, tmp_path / "eager", cache))
    compiled_spec = _run(first, tmp_path / "compiled", cache, compile=True)
    compiled = run_one(compiled_spec)
    assert json.loads((compiled_spec.parent / "launch.json").read_text())["compile"] is True
    assert "compiling 1 backbone trunk(s) with torch.compile" in (compiled_spec.parent / "log.txt").read_text()
    for name in ("map_all", "map_all_coda", "p_at_1"):
        assert compiled[name] == pytest.approx(eager[name], abs=0.02), name
    compile_cache = cache / COMPILE_CACHE_FOLDER
    cached = sorted(p.relative_to(compile_cache) for p in compile_cache.rglob("*") if p.is_file())
    assert cached, "the compiled code was not cached"

    later = _run(second, tmp_path / "compiled", cache, compile=True)
    code = "import sys; from benchmark.runner import run_one; run_one(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", code, str(later)], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert store.run_status(later.parent) == "done"
    new = sorted(p.relative_to(compile_cache) for p in compile_cache.rglob("*") if p.is_file())
    assert [str(p) for p in new if p not in cached and "lock" not in p.name] == []


def test_the_host_sync_counter_finds_reads_into_python_and_boolean_masks():
    x = torch.arange(6.0)
    with HostSyncCounter() as counter:
        y = x * 2 + 1                                   # no wait: shapes known, nothing read back
        y[torch.tensor([0, 2])] = 0.0                   # integer indices: no wait
    assert counter.counts == {}
    with HostSyncCounter() as counter:
        float(x.sum())
        bool(x.max() > 3)
        x[x > 2]                                        # boolean mask: its size depends on the values
        x[x > 4] = 0.0
        torch.nonzero(x)
    assert counter.counts == {"_local_scalar_dense": 2, "index (boolean mask)": 1, "index_put_ (boolean mask)": 1,
                              "nonzero": 1}


def test_ucdirs_bank_overwrite_keeps_the_latest_key_without_a_boolean_mask():
    from methods.ucdir import _last_occurrence
    index = torch.tensor([4, 7, 4, 1, 7, 4])
    assert _last_occurrence(index).tolist() == [5, 4, 5, 3, 4, 5]
    # one UCDIR step on the CPU makes no call that would wait for a GPU
    cls = get_method_class("ucdir")
    method = cls(cls.Hparams(batch_size=4), build_backbone("small_cnn", "mlp", 16))
    from benchmark.runner import RunContext
    from datasets.base import UnlabeledDomain
    from methods.base import Batch
    domains = tuple(UnlabeledDomain(f"d{d}", d, torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8))
                    for d in (0, 1))
    method.on_fit_start(RunContext(domains, torch.device("cpu"), 2, 3, (3, 3), 0, method))
    batches = [Batch(domains[d].images(torch.tensor([0, 1, 0, 2]), torch.device("cpu")), torch.tensor([0, 1, 0, 2]),
                     d) for d in (0, 1)]
    with HostSyncCounter() as counter:
        method.training_step(batches[0], batches[1], 0)
    assert counter.counts == {}
