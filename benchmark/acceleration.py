"""How a run is made fast on a GPU without changing what it computes: TF32 arithmetic for float32 matmuls and
convolutions, and `torch.compile` of the backbones with a compile cache shared by every run of an output folder.

Both are launch options (launch.json, like `--precision` and `--channels-last`), never part of a run's identity: they
move numbers by rounding only. Fused optimiser steps need no option: `methods.base.sgd` picks them on CUDA.

- TF32 (`Launch.tf32`, on unless `--no-tf32`): on CUDA, float32 matmuls and convolutions round their inputs to
  TF32's 10-bit mantissa and accumulate in float32 (NVIDIA Ampere and later; torch's `fp32_precision` settings).
  Without it, matmuls run in full IEEE float32; torch's default already lets cuDNN's convolutions use TF32, and
  `--no-tf32` turns that off too, so that fp32 means IEEE float32 everywhere. No effect on the CPU.
- `--compile` (`Launch.compile`): the trunk of every `EmbeddingNet` of the method (the online backbone, momentum
  encoders, frozen copies) is compiled in place with `nn.Module.compile` (its parameters and state_dict keys are the
  eager ones, so checkpoints are interchangeable with eager runs). The heads, losses and the method's own code stay
  eager. Inductor's caches (FX graphs, AOTAutograd, Triton kernels) live in `<cache dir>/torch_compile`, shared by
  the runs of a suite: the first process compiles (about 50 s for a ResNet-50 on a GPU), later ones read the
  kernels back.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

COMPILE_CACHE_FOLDER = "torch_compile"
CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def configure_float32(device: torch.device, tf32: bool = True) -> None:
    """TF32 (`tf32`) or IEEE float32 for the float32 matmuls and convolutions of this process on a CUDA `device`;
    nothing on other devices. Process-wide (torch's backends settings)."""
    if torch.device(device).type != "cuda":
        return
    precision = "tf32" if tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision


def use_compile_cache(cache_dir: Path) -> Path:
    """Point Inductor's caches at `<cache_dir>/torch_compile` (the variable TORCHINDUCTOR_CACHE_DIR, which Inductor
    reads when it looks for a cache; torch itself sets it to its default at its first look, so it is set here
    whatever it holds); returns the folder. Switching folders within a process clears Inductor's in-memory caches."""
    folder = (Path(cache_dir) / COMPILE_CACHE_FOLDER).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if os.environ.get(CACHE_VARIABLE) != str(folder):
        os.environ[CACHE_VARIABLE] = str(folder)
        from torch._inductor.utils import clear_caches     # paths remembered from the previous folder
        clear_caches()
    return folder


def backbone_trunks(model: nn.Module) -> list[nn.Module]:
    """The trunk (the body before the head: a CNN's convolutions, a ViT's transformer) of every
    `methods.backbones.EmbeddingNet` inside `model`, once each."""
    from methods.backbones import EmbeddingNet
    trunks = {id(m.trunk): m.trunk for m in model.modules() if isinstance(m, EmbeddingNet)}
    return list(trunks.values())


def compile_backbones(model: nn.Module, cache_dir: Path | None = None) -> int:
    """Compile the trunks of `model`'s backbones in place (`nn.Module.compile`, default mode; shapes made dynamic by
    torch when a second batch size appears, as at the last chunk of an evaluation); with `cache_dir`, the compile
    cache goes there (`use_compile_cache`). Returns how many trunks were compiled. Call it once the model's copies
    exist (after `on_fit_start`): a momentum encoder copied later would copy a compiled module."""
    if cache_dir is not None:
        use_compile_cache(cache_dir)
    trunks = backbone_trunks(model)
    for trunk in trunks:
        trunk.compile()
    return len(trunks)


# ---------------------------------------------------------------------------------------------------------------------
# Host synchronisations: operations whose result the host must wait for
# ---------------------------------------------------------------------------------------------------------------------

# aten operations that make the host wait for the device: a tensor read into Python (item, float, int, bool, an `if`
# on a tensor), an output whose size depends on the values (nonzero, masked_select, unique, bincount,
# repeat_interleave without its output size, indexing with a boolean mask), a comparison returned as a bool
HOST_SYNC_OPS = ("_local_scalar_dense", "is_nonzero", "equal", "nonzero", "masked_select", "_unique", "_unique2",
                 "unique_dim", "unique_consecutive", "unique_dim_consecutive", "bincount", "repeat_interleave")
BOOL_INDEXING_OPS = ("index", "index_put", "index_put_", "_index_put_impl_")


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)


class HostSyncCounter(TorchDispatchMode):
    """Counts, by operation, the aten calls inside the block that synchronise the host with the device on a GPU
    (`HOST_SYNC_OPS`, and indexing with a boolean mask), on any device: the CPU finds what
    `torch.cuda.set_sync_debug_mode` would report on a GPU, as far as the calls are the cause. `counts`: op -> calls.
    Source: the operations that CUDA's sync debug mode flags (c10/cuda/CUDAFunctions.cpp, `warn_or_error_on_sync`
    callers in ATen's CUDA kernels)."""

    def __init__(self):
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in HOST_SYNC_OPS or (name in BOOL_INDEXING_OPS and _bool_index(args)):
            label = f"{name} (boolean mask)" if name in BOOL_INDEXING_OPS else name
            self.counts[label] = self.counts.get(label, 0) + 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())
