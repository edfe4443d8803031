"""Speed checks that print ratios measured in one run (DESIGN.md section 4: no timing in tests).

    python -m benchmark.perf eval [--queries 10000] [--gallery 10000] [--dim 128] [--classes 65]
                                  [--device cpu|cuda] [--reference-queries N] [--threads N]

``eval`` times ``benchmark.evaluation.retrieval_metrics`` on random L2-normalised features with random labels
against a straightforward per-query numpy implementation (full argsort + cumsum, a Python loop over queries),
prints the speed-up, and checks that both agree. The reference can be timed on a subset of the queries and
extrapolated linearly; the output says so.

    python -m benchmark.perf data [--images 512] [--source-size 300] [--size 224] [--batch 64] [--device cpu|cuda]

``data`` writes a folder of JPEG images, then feeds training batches (random resized crop + flip, float in [0, 1])
two ways: the usual per-image PIL pipeline (open, decode, crop, resize, to tensor, stack) and the harness's (decode
once into the uint8 cache, memory-mapped; a batch is an index into it, augmented on the device in one call). It
prints images/s of each and the ratio, measured in one run; the one-time decode is printed apart.

    python -m benchmark.perf train [--arch resnet50|vit_base_patch14_dinov2|...] [--size 224] [--batch 64]
                                   [--steps 20] [--compile] [--device cuda]

    python -m benchmark.perf elbow [--points 4400] [--dim 128] [--classes 65] [--k-max 130] [--rule silhouette]
                                   [--faiss] [--device cpu|cuda]

``elbow`` times UEM's choice of K on one bank (k-means for every K of a range, then a rule) two ways on the same
bank, interleaved: before issue 23 (chains that add one greedy k-means++ point per K, two of them, LocalSearch++
swaps, the chord elbow; K in [2, k-max]) and now (`methods.clustering.kmeans_path`, one bisecting chain, then
`--rule`, UEM's default the cosine silhouette; K in `methods.cluster_count.k_range_for(points)`, [2, 133] for 4,400
points). It prints the seconds per bank of each (the path and the rule apart) and their ratio, measured in one run,
on an Office-Home-sized bank of overlapping clusters (noise 0.6: a nearest-class-mean classifier separates them
perfectly), and the K each picks there (the true K is the class count). `--faiss` adds the faiss elbow (one
uniformly drawn start per K, 20 iterations) that UEM ran until 2026-11-30.

    python -m benchmark.perf backbones [--archs resnet50 vit_base_patch14_dinov2 ...] [--size 224] [--batch 64]
                                       [--steps 10] [--rounds 3] [--precision fp32|bf16] [--device cuda]

``backbones`` times the plain two-view training step of several backbones (interleaved rounds, the median of each),
with each one's weights, forward GFLOP and activation memory per image (``backbone_footprint``), and prints each
one's images/s and its ratio to the first.

``train`` times training steps of the backbone (forward of two views, a contrastive loss, backward, SGD step — the
shape of every method's step) on random images already on the device, in these configurations: fp32 in IEEE float32,
fp32 with TF32 (CUDA), bf16 autocast, channels_last, bf16 + channels_last, and with ``--compile`` the last one with
torch.compile of the backbone; it prints images/s of each and its ratio to the first, measured in one run, after
warm-up steps. A ViT (`--arch vit_...`, at input size `--size`) is timed without the channels_last rows.

    python -m benchmark.perf methods [--suite quickstart] [--methods ...] [--arch small_cnn] [--size 32]
                                     [--precision fp32|bf16] [--channels-last] [--compile] [--no-tf32]
                                     [--calibration [FILE]] [--device cpu|cuda]

``methods`` times one epoch of each of the suite's methods (not the pretrained row) at the suite's shapes: the
first planned run's split (its domain sizes: the published counts of a real dataset, restricted to the split's
classes, or the synthetic generator's mean; random images), each method's own hyper-parameters (batch size, views,
banks, queues, clustering at their real size and cadence: the epoch timed is the middle one of the method's budget,
so clustering and second stages are on), through the runner's own epoch loop, after a warm-up epoch; and, at the
same batch (both domains' images), a plain two-view SimCLR step of the same backbone in the same configuration. It
prints each method's images/s (images of both domains per second, views not counted) and its cost per image as a
ratio to the plain step, measured in one run; then, counted over one more epoch, the host synchronisations per step
in the method's step hooks. `--calibration` writes the rates (and each method's setup and evaluation seconds) for
`run_benchmark.py --dry-run`'s estimate of device-hours (benchmark/cost.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmark.backbone_specs import VIT_ARCHITECTURES
from benchmark.evaluation import per_query_metrics, retrieval_metrics

REPO_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------------------------
# eval: the per-query numpy reference
# ----------------------------------------------------------------------------------------------------------------

def reference_per_query(query_feats, query_labels, gallery_feats, gallery_labels, ks):
    """Per-query AP, VOC-interpolated AP and P@k, one query at a time (the way evaluation code is usually written)."""
    n_query, n_gallery = len(query_labels), len(gallery_labels)
    ranks = np.arange(1, n_gallery + 1)
    ap = np.full(n_query, np.nan)
    ap_interp = np.full(n_query, np.nan)
    precision_at = {k: np.full(n_query, np.nan) for k in ks}
    for i in range(n_query):
        scores = gallery_feats @ query_feats[i]
        order = np.argsort(-scores, kind="stable")  # ties: lower gallery index first
        relevant = gallery_labels[order] == query_labels[i]
        n_relevant = relevant.sum()
        if n_relevant == 0:
            continue
        hits = np.cumsum(relevant)
        precision = hits / ranks
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        ap[i] = precision[relevant].sum() / n_relevant
        ap_interp[i] = envelope[relevant].sum() / n_relevant
        for k in ks:
            precision_at[k][i] = hits[min(k, n_gallery) - 1] / k
    return ap, ap_interp, precision_at


def reference_summary(query_labels, ap, ap_interp, precision_at):
    valid = ~np.isnan(ap)
    by_class: dict[int, list[float]] = {}
    for label, value in zip(query_labels[valid], ap_interp[valid]):
        by_class.setdefault(int(label), []).append(value)
    out = {
        "map_all": float(ap[valid].mean()),
        "map_all_coda": float(np.mean([np.mean(v) for v in by_class.values()])),
    }
    out.update({f"p_at_{k}": float(v[valid].mean()) for k, v in precision_at.items()})
    return out


# ----------------------------------------------------------------------------------------------------------------
# eval: the command
# ----------------------------------------------------------------------------------------------------------------

def _random_problem(args):
    rng = np.random.default_rng(args.seed)

    def unit_rows(n):
        x = rng.standard_normal((n, args.dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return (
        unit_rows(args.queries),
        rng.integers(0, args.classes, size=args.queries),
        unit_rows(args.gallery),
        rng.integers(0, args.classes, size=args.gallery),
    )


def _max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Both nan (a query without relevant items) counts as equal; nan on one side only gives nan."""
    both_nan = np.isnan(a) & np.isnan(b)
    return float(np.max(np.where(both_nan, 0.0, np.abs(a - b)), initial=0.0))


def _timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def run_eval(args) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was asked for but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ks = tuple(args.ks)
    query_feats, query_labels, gallery_feats, gallery_labels = _random_problem(args)
    n_ref = min(args.reference_queries, args.queries)

    print(f"retrieval_metrics benchmark: {args.queries} queries x {args.gallery} gallery, dim {args.dim}, "
          f"{args.classes} classes, ks {list(ks)}, chunk_size {args.chunk_size}")
    print(f"torch {torch.__version__}, device {device}, torch threads {torch.get_num_threads()}, "
          f"numpy {np.__version__}")

    # Features on the device before timing: we time the metric, not the host-to-device copy.
    q_dev = torch.from_numpy(query_feats).to(device)
    g_dev = torch.from_numpy(gallery_feats).to(device)
    ql_dev = torch.from_numpy(query_labels).to(device)
    gl_dev = torch.from_numpy(gallery_labels).to(device)

    def ours(n=args.queries):
        return retrieval_metrics(q_dev[:n], ql_dev[:n], g_dev, gl_dev, ks, chunk_size=args.chunk_size)

    ours(n=min(64, args.queries))  # warm-up: first-call allocations and kernel loading are not timed
    ours_metrics, ours_s = _timed(ours, device)

    (ref_ap, ref_ap_interp, ref_precision_at), ref_s_subset = _timed(
        lambda: reference_per_query(query_feats[:n_ref], query_labels[:n_ref], gallery_feats, gallery_labels, ks),
        torch.device("cpu"),
    )
    ref_s = ref_s_subset * args.queries / n_ref

    print()
    print(f"retrieval_metrics (torch, chunked):       {ours_s:10.3f} s for {args.queries} queries")
    if n_ref == args.queries:
        print(f"per-query numpy reference:                {ref_s:10.3f} s for {args.queries} queries (measured)")
    else:
        print(f"per-query numpy reference:                {ref_s:10.3f} s for {args.queries} queries "
              f"(EXTRAPOLATED linearly from {ref_s_subset:.3f} s measured on the first {n_ref} queries)")
    print(f"speed-up:                                 {ref_s / ours_s:10.1f} x")

    # Agreement on the subset the reference saw: per-query values and the averaged metrics.
    ours_subset = per_query_metrics(q_dev[:n_ref], ql_dev[:n_ref], g_dev, gl_dev, ks, chunk_size=args.chunk_size)
    pairs = [
        (ours_subset.average_precision, ref_ap),
        (ours_subset.interpolated_average_precision, ref_ap_interp),
    ] + [(ours_subset.precision_at[k], ref_precision_at[k]) for k in ks]
    per_query_diff = max(_max_abs_difference(o.cpu().numpy(), r) for o, r in pairs)
    ref_summary = reference_summary(query_labels[:n_ref], ref_ap, ref_ap_interp, ref_precision_at)
    ours_summary = ours(n=n_ref)
    summary_diff = max(abs(ours_summary[key] - value) for key, value in ref_summary.items())
    print()
    print(f"agreement on the first {n_ref} queries: max |difference| per query {per_query_diff:.3g}, "
          f"of the averaged metrics {summary_diff:.3g}")
    print("  (both score in float32; numpy's and torch's matmuls round differently in the last bit, which can swap "
          "near-equal gallery items, so per-query differences of ~1e-6 are expected)")
    print("metrics on all queries: " + ", ".join(
        f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in ours_metrics.items()
    ))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# data: the PIL pipeline against the cached one
# ----------------------------------------------------------------------------------------------------------------

def _write_jpegs(folder, n: int, size: int, seed: int) -> list:
    from PIL import Image
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        # smooth random images (a few blobs) so JPEG sizes are photo-like, not noise
        base = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((size, size), Image.BICUBIC)
        path = folder / f"{i:05d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def _pil_batches(paths, size: int, batch: int, seed: int):
    """The per-image pipeline of the usual training scripts: PIL decode, RandomResizedCrop, flip, to tensor."""
    from torchvision import transforms
    from PIL import Image
    torch.manual_seed(seed)
    transform = transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.2, 1.0)),
                                    transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    order = torch.randperm(len(paths)).tolist()
    for start in range(0, len(order) - batch + 1, batch):
        images = []
        for i in order[start:start + batch]:
            with Image.open(paths[i]) as image:
                images.append(transform(image.convert("RGB")))
        yield torch.stack(images)


def _cached_batches(images: torch.Tensor, batch: int, device: torch.device, seed: int):
    from datasets.base import UnlabeledDomain
    from methods.augment import random_resized_crop
    torch.manual_seed(seed)
    domain = UnlabeledDomain("perf", 0, images)
    order = torch.randperm(len(images))
    for start in range(0, len(order) - batch + 1, batch):
        yield random_resized_crop(domain.images(order[start:start + batch], device), scale=(0.2, 1.0))  # + flip


def _images_per_second(batches, device: torch.device) -> tuple[float, int]:
    started, count = time.perf_counter(), 0
    for batch in batches:
        count += len(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started), count


def run_data(args) -> int:
    import tempfile
    from pathlib import Path

    from datasets.base import decode_images
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        paths = _write_jpegs(Path(folder), args.images, args.source_size, args.seed)
        started = time.perf_counter()
        decoded = decode_images(paths, args.size)
        cache_file = Path(folder) / "decoded.pt"
        torch.save(decoded, cache_file)
        decode_seconds = time.perf_counter() - started
        cached = torch.load(cache_file, mmap=True, weights_only=True)
        pil_rate, n_pil = _images_per_second(_pil_batches(paths, args.size, args.batch, args.seed), torch.device("cpu"))
        list(_cached_batches(cached, args.batch, device, args.seed))          # warm-up (kernels, page cache)
        cached_rate, n_cached = _images_per_second(_cached_batches(cached, args.batch, device, args.seed), device)
    print(f"{args.images} JPEG images of {args.source_size} px -> {args.size} px batches of {args.batch}, "
          f"torch threads {torch.get_num_threads()}, device {device}")
    print(f"  one-time decode into the uint8 cache: {decode_seconds:.1f} s ({args.images / decode_seconds:.0f} images/s)")
    print(f"  PIL per-image pipeline (1 process):   {pil_rate:8.0f} images/s ({n_pil} images)")
    print(f"  cached, batched on {device.type}:            {cached_rate:8.0f} images/s ({n_cached} images)")
    print(f"  ratio cached / PIL: {cached_rate / pil_rate:.1f}x (one run; a DataLoader with W workers multiplies the "
          f"PIL side's rate by at most W)")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# train: backbone training throughput under bf16 autocast and channels_last
# ----------------------------------------------------------------------------------------------------------------

# (precision, channels_last, compile, tf32): the configurations `train` compares, the first one the reference
TRAIN_CONFIGS = (("fp32", False, False, False), ("fp32", False, False, True), ("bf16", False, False, True),
                 ("fp32", True, False, True), ("bf16", True, False, True))
COMPILED_CONFIG = ("bf16", True, True, True)


def perf_backbone(arch: str, size: int):
    """The backbone `arch` (a suite's backbone name: benchmark/suite_files.py, BACKBONE_NAMES) with random weights,
    for timing: a CNN as `build_backbone` makes it, a ViT at input size `size` px (its spec's preprocessing: the
    images it is given are that size, so nothing is resized). Raises ValueError for a size a ViT cannot take."""
    import copy

    from benchmark.backbone_specs import TOY_VIT, VIT_ARCHITECTURES, vit_backbone_spec
    from benchmark.initialisation import new_backbone
    from methods.backbones import build_backbone
    if arch in VIT_ARCHITECTURES:
        return new_backbone(vit_backbone_spec(arch, size))
    if arch == "vit_toy":
        spec = copy.deepcopy(TOY_VIT)
        spec["options"]["img_size"] = spec["preprocessing"]["input_size"] = size
        return new_backbone(spec)
    return build_backbone(arch, "mlp", 128)


def is_vit_name(arch: str) -> bool:
    return arch.startswith("vit_")


def run_train(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{args.arch} training steps: batch {args.batch} x 2 views of {args.size} px, {args.warmup} warm-up + "
          f"{args.steps} timed steps, device {_device_name(device)}"
          + ("" if device.type == "cuda" else f", torch threads {torch.get_num_threads()}"))
    # channels_last is for convolutions: a ViT (one convolution, its patch embedding) is timed without it
    vit = is_vit_name(args.arch)
    configs = [StepConfig(args.arch, args.size, device, precision, channels_last and not vit, compiled, tf32)
               for precision, channels_last, compiled, tf32 in TRAIN_CONFIGS + ((COMPILED_CONFIG,) if args.compile
                                                                                else ())]
    configs = list({config.describe(): config for config in configs}.values())   # TF32 is CUDA's: one fp32 row
    parameters, gflops, saved = backbone_footprint(args.arch, args.size)
    print(f"  {parameters / 1e6:.3g} M weights; per image at {args.size} px: {gflops:.3g} GFLOP forward, "
          f"{saved:.3g} MB of fp32 activations kept for the backward pass (each view)")
    rates = [_plain_rate(config, args.batch, args.steps, args.warmup, args.seed) for config in configs]
    for config, rate in zip(configs, rates):
        print(f"  {config.describe():<52} {_rate_text(rate)} images/s   x{rate / rates[0]:.2f} vs the first")
    return 0


def _rate_text(rate: float) -> str:
    return f"{rate:9.1f}" if rate >= 10 else f"{rate:9.3f}"


def run_backbones(args) -> int:
    """`backbones`: the plain two-view training step of several backbones at one image size, interleaved (each round
    times every backbone once, so a machine's changing load falls on all of them), the median over the rounds; with
    each one's footprint per image (`backbone_footprint`)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    configs = [StepConfig(arch, args.size, device, args.precision) for arch in args.archs]
    print(f"plain two-view training steps at {args.size} px, batch {args.batch} x 2 views, {args.precision}, "
          f"{args.warmup} warm-up + {args.steps} timed steps per round, median of {args.rounds} interleaved rounds, "
          f"device {_device_name(device)}" + ("" if device.type == "cuda" else
                                             f", torch threads {torch.get_num_threads()}"))
    footprints = {arch: backbone_footprint(arch, args.size) for arch in args.archs}
    rates: dict[str, list[float]] = {arch: [] for arch in args.archs}
    for _ in range(args.rounds):
        for config in configs:
            rates[config.arch].append(_plain_rate(config, args.batch, args.steps, args.warmup, args.seed))
    print(f"  {'backbone':<38} {'weights':>8} {'GFLOP':>7} {'act. MB':>8} {'images/s':>10} {'vs first':>9} "
          f"rounds")
    first = float(np.median(rates[args.archs[0]]))
    for arch in args.archs:
        weights, gflops, saved = footprints[arch]
        rate = float(np.median(rates[arch]))
        print(f"  {arch:<38} {weights / 1e6:>7.1f}M {gflops:>7.3g} {saved:>8.3g} {_rate_text(rate):>10} "
              f"{'x' + format(rate / first, '.2f'):>9} {', '.join(_rate_text(r).strip() for r in rates[arch])}")
    print("  GFLOP: forward per image; act. MB: float32 activations kept for the backward pass per image and view")
    return 0


def backbone_footprint(arch: str, size: int) -> tuple[int, float, float]:
    """(weights, forward GFLOP per image, MB of float32 tensors autograd keeps for the backward pass per image) of
    the backbone `arch` at `size` px, counted on the CPU in one forward of one image: the FLOPs by
    `torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions, 2 per multiply-add; a ViT's attention with
    timm's explicit q k^T and attention x v matmuls, which the counter sees, where the fused kernel of the CPU it
    does not), the memory as the bytes of the distinct tensors `torch.autograd.graph.saved_tensors_hooks` sees saved
    on the path a run takes (fused attention; the weights excluded). What the device's speed and memory scale with,
    whatever the device."""
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    net = perf_backbone(arch, size)
    images = torch.rand(1, 3, size, size)
    weights = {p.data_ptr() for p in net.parameters()}
    saved: dict[int, int] = {}

    def keep(tensor):
        if tensor.data_ptr() not in weights:
            saved[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        net(images)
    fused = [m for m in net.modules() if getattr(m, "fused_attn", False)]
    for module in fused:
        module.fused_attn = False
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(images)
    for module in fused:
        module.fused_attn = True
    return sum(p.numel() for p in net.parameters()), counter.get_total_flops() / 1e9, sum(saved.values()) / 2 ** 20


# ----------------------------------------------------------------------------------------------------------------
# elbow: UEM's elbow, before and after 2026-11-30
# ----------------------------------------------------------------------------------------------------------------

def faiss_single_start_elbow(features: torch.Tensor, k_range: range, seed: int):
    """The elbow before 2026-11-30: one faiss k-means start (k points drawn uniformly) and 20 iterations per K."""
    from methods.cluster_count import chord_elbow
    from methods.clustering import faiss_kmeans, inertia
    results = {}
    for k in k_range:
        centroids, assignment = faiss_kmeans(features, k, seed=seed, niter=20)
        results[k] = (centroids, assignment, inertia(features.float().cpu(), centroids.cpu(), assignment.cpu()))
    k = chord_elbow({k: r[2] for k, r in results.items()})
    return results[k][0], results[k][1], k


def d2_chain_elbow(features: torch.Tensor, k_range: range, seed: int, restarts: int = 2) -> int:
    """UEM's K from 2026-11-30 until issue 23: chains over K that add one greedy k-means++ point (D^2 sampling) as
    the next centre, Lloyd, a LocalSearch++ swap on the best chain, and the chord elbow of the inertia curve. Kept
    here to time and judge it against its successor; returns K."""
    from methods import clustering as c
    from methods.cluster_count import chord_elbow
    data = c._Points(features, seed)
    ks = [k for k in k_range if 1 <= k <= len(data)]
    points, norms, generator = data.points, data.norms, data.generator
    n_candidates = c._n_candidates(max(ks))
    state = c._lloyd(points, norms, c._assign(points, norms, c._kmeans_pp_seeds(points, norms, ks[0], restarts,
                                                                                 generator, n_candidates)),
                     c.KMEANS_MAX_ITER)
    inertias = {ks[0]: float(state.inertias().min())}
    for k in range(ks[0] + 1, ks[-1] + 1):
        index, to_new_centre = c._greedy_seeding_step(points, norms, state.nearest, n_candidates, generator)
        closer = to_new_centre < state.nearest
        start = c._State(torch.cat([state.centres, points[index][:, None, :]], dim=1),
                         torch.where(closer, to_new_centre, state.nearest),
                         torch.where(closer, k - 1, state.assignment))
        state = c._lloyd(points, norms, start, c.KMEANS_MAX_ITER)
        best = state.inertias().argmin().reshape(1)
        state = state.update(best, c._local_search(points, norms, state.select(best), 1, c.SWAP_CANDIDATES,
                                                   generator, c.KMEANS_MAX_ITER))
        if k in ks:
            inertias[k] = c._best_restart(points, state)[2]
    return chord_elbow(inertias)


def _clustered_bank(args, noise: float, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(args.seed)
    centres = torch.nn.functional.normalize(torch.randn(args.classes, args.dim, generator=generator), dim=1)
    labels = torch.arange(args.points) % args.classes
    noise_term = noise * 4 / args.dim ** 0.5 * torch.randn(args.points, args.dim, generator=generator)
    return torch.nn.functional.normalize(2 * centres[labels] + noise_term, dim=1).to(device)


def run_elbow(args) -> int:
    from methods.cluster_count import choose_k, k_range_for
    from methods.clustering import kmeans_path
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was asked for but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    previous_range = range(2, args.k_max + 1)
    new_range = k_range_for(args.points)
    print(f"UEM's K per bank: a bank of {args.points} x {args.dim} ({args.classes} clusters, noise 0.6), "
          f"device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
             f", torch threads {torch.get_num_threads()}") + f"; median of {args.repeats} runs, interleaved")
    bank = _clustered_bank(args, noise=0.6, device=device)      # overlapping clusters, as real banks are
    kmeans_path(bank[:256], range(2, 6), seed=args.seed)          # warm-up (CUDA context, kernel loading)
    times = {"faiss": [], "chain": [], "path": [], "rule": []}
    for _ in range(args.repeats):                                 # interleaved: all see the same machine
        if args.faiss:
            times["faiss"].append(_timed(lambda: faiss_single_start_elbow(bank, previous_range, args.seed),
                                         device)[1])
        times["chain"].append(_timed(lambda: d2_chain_elbow(bank, previous_range, args.seed), device)[1])
        path, seconds = _timed(lambda: kmeans_path(bank, new_range, seed=args.seed), device)
        times["path"].append(seconds)
        times["rule"].append(_timed(lambda: choose_k(args.rule, bank, path, args.seed), device)[1])
    median = {name: float(np.median(values)) for name, values in times.items() if values}
    new_total = float(np.median([p + r for p, r in zip(times["path"], times["rule"])]))

    def row(label: str, seconds: float, runs: list[float]) -> None:
        print(f"  {label:<66} {seconds:7.2f} s  ({', '.join(f'{t:.2f}' for t in runs)})")
    if args.faiss:
        row(f"until 2026-11-30: faiss, 1 start per K, chord elbow, K in [2, {args.k_max}]", median["faiss"],
            times["faiss"])
    row(f"before (k-means++ chains x2, chord elbow), K in [2, {args.k_max}]", median["chain"], times["chain"])
    row(f"now: bisecting k-means path, K in [{new_range.start}, {new_range.stop - 1}]", median["path"], times["path"])
    row(f"now: + the {args.rule} rule on that path", median["rule"], times["rule"])
    print(f"  now, path + rule: {new_total:.2f} s per bank; ratio before / now: {median['chain'] / new_total:.2f}x")
    print(f"  K picked on this bank ({args.classes} clusters): before "
          f"{d2_chain_elbow(bank, previous_range, args.seed)}, now "
          f"{choose_k(args.rule, bank, kmeans_path(bank, new_range, seed=args.seed), args.seed).k}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# methods: one epoch of every method at a suite's shapes, against a plain two-view step
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class StepConfig:
    """How the steps run: what a launch records (launch.json) and the benchmark's own shapes."""
    arch: str
    size: int
    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    tf32: bool = True                  # CUDA only (benchmark.acceleration.configure_float32)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        options = [self.precision + (" (TF32)" if self.tf32 and self.precision == "fp32" and
                                     self.device.type == "cuda" else "")]
        options += (["channels_last"] if self.channels_last else []) + (["compile"] if self.compile else [])
        return f"{self.arch} at {self.size} px, {' + '.join(options)}"


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def _plain_rate(config: StepConfig, batch: int, steps: int, warmup: int, seed: int = 0, repeats: int = 1) -> float:
    """Images/s (views not counted) of a plain two-view SimCLR step of the backbone on `batch` random images already
    on the device: two views forwarded, NT-Xent, backward, SGD step; after `warmup` untimed steps, the median of
    `repeats` timed blocks of `steps` steps."""
    from benchmark.acceleration import compile_backbones, configure_float32
    from benchmark.runner import autocast_for
    from methods.base import sgd
    from methods.losses import nt_xent
    configure_float32(config.device, config.tf32)
    torch.manual_seed(seed)
    net = perf_backbone(config.arch, config.size).to(config.device).to(memory_format=config.memory_format)
    if config.compile:
        compile_backbones(net)
    optimizer = sgd(net.parameters(), lr=1e-3, momentum=0.9)
    views = [v.contiguous(memory_format=config.memory_format)
             for v in torch.rand(2, batch, 3, config.size, config.size, device=config.device)]

    def step():
        with autocast_for(config.device, config.precision):
            loss = nt_xent(net(views[0]), net(views[1]), 0.2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for _ in range(warmup):
        step()
    seconds = float(np.median([_timed(lambda: [step() for _ in range(steps)], config.device)[1]
                               for _ in range(repeats)]))
    return steps * batch / seconds


@contextmanager
def _sync_counting(device: torch.device):
    """Counts host synchronisations inside the block: on CUDA those torch's sync debug mode reports (real waits); on
    other devices the calls `benchmark.acceleration.HostSyncCounter` finds (the ones that would wait on a GPU, plus
    those on host tensors, which would not: an upper bound). Yields a one-element list holding the count."""
    from benchmark.acceleration import HostSyncCounter
    count = [0]
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield count
            finally:
                torch.cuda.set_sync_debug_mode("default")
        count[0] += sum("synchroniz" in str(w.message) for w in caught)
    else:
        counter = HostSyncCounter()
        with counter:
            yield count
        count[0] += counter.total


def _step_syncs(method, ctx, optimization, epoch: int) -> float:
    """Host synchronisations per step inside the method's step hooks (training_step, after_optimizer_step) over one
    more epoch, counted apart from the timed one (counting slows the step)."""
    from benchmark.runner import _train_epoch
    total = [0]
    hooks = {name: getattr(method, name) for name in ("training_step", "after_optimizer_step")}

    def counted(hook):
        def call(*args, **kwargs):
            with _sync_counting(ctx.device) as count:
                result = hook(*args, **kwargs)
            total[0] += count[0]
            return result
        return call
    for name, hook in hooks.items():
        object.__setattr__(method, name, counted(hook))
    try:
        _train_epoch(method, ctx, optimization, epoch)
    finally:
        for name in hooks:
            object.__delattr__(method, name)
    return total[0] / max(1, ctx.steps_per_epoch)


def _quiet_run_log():
    """The run logger at WARNING while timing (no "epoch started" lines), restored afterwards."""
    runs_log = logging.getLogger("benchmark.run")
    level = runs_log.level
    runs_log.setLevel(logging.WARNING)
    return runs_log, level


def _method_rate(spec, config: StepConfig, warmup_epochs: int, seed: int, count_syncs: bool = True) -> dict:
    """One epoch of the run `spec` describes (its method, hyper-parameters and estimated domain sizes; random
    images), timed after `warmup_epochs` untimed ones: images/s (images of both domains, views not counted), batch,
    steps, seconds of `on_fit_start` (setup), of embedding both domains per image (evaluation), host
    synchronisations per step in the method's step hooks (`_step_syncs`, an epoch more; None without
    `count_syncs`)."""
    from benchmark.acceleration import compile_backbones
    from benchmark.cost import estimated_domain_sizes
    from benchmark.runner import RunContext, _train_epoch
    from datasets.base import UnlabeledDomain
    from methods import get_method_class
    from methods.base import Optimization, build_hparams
    cls = get_method_class(spec.method)
    hparams = build_hparams(cls, spec.hparams)
    torch.manual_seed(seed)
    method = cls(hparams, perf_backbone(config.arch, config.size)).to(config.device)
    method.to(memory_format=config.memory_format)
    sizes = estimated_domain_sizes(spec) or (300, 300)
    domains = tuple(UnlabeledDomain(f"d{d}", d, torch.randint(0, 256, (n, 3, config.size, config.size),
                                                               dtype=torch.uint8))
                    for d, n in enumerate(sizes))
    steps = method.steps_per_epoch(*sizes)
    ctx = RunContext(domains, config.device, hparams.epochs, steps, spec.num_classes_hint, seed, method,
                     precision=config.precision, memory_format=config.memory_format)
    _, setup_seconds = _timed(lambda: method.on_fit_start(ctx), config.device)
    method.to(config.device)
    if config.compile:
        compile_backbones(method)
    optimization = Optimization.of(method.configure_optimizers())
    middle = hparams.epochs // 2
    runs_log, level = _quiet_run_log()
    try:
        for epoch in range(max(0, middle - warmup_epochs), middle):
            _train_epoch(method, ctx, optimization, epoch)
        for _ in range(warmup_epochs - middle):       # a budget too short to warm up before the middle epoch
            _train_epoch(method, ctx, optimization, middle)
        _, seconds = _timed(lambda: _train_epoch(method, ctx, optimization, middle), config.device)
        syncs = _step_syncs(method, ctx, optimization, middle) if count_syncs else None
    finally:
        runs_log.setLevel(level)
    _, embed_seconds = _timed(lambda: [ctx.embed_domain(d) for d in (0, 1)], config.device)
    return {"images_per_second": steps * hparams.batch_size * 2 / seconds, "batch": hparams.batch_size,
            "steps": steps, "epoch_seconds": seconds, "setup_seconds": setup_seconds,
            "evaluation_seconds_per_image": embed_seconds / sum(sizes),
            "host_syncs_per_step": syncs}


def run_methods(args) -> int:
    from benchmark.acceleration import configure_float32, use_compile_cache
    from benchmark.cost import (calibration_from_rates, default_calibration_path, estimated_domain_sizes,
                                write_calibration)
    from benchmark.suites import get_suite, plan
    from methods.registry import method_names
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was asked for but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    vit = is_vit_name(args.arch)
    config = StepConfig(args.arch, args.size, torch.device(args.device), args.precision,
                        args.channels_last and not vit, args.compile, args.tf32)
    configure_float32(config.device, args.tf32)
    if args.compile and args.compile_cache:
        use_compile_cache(args.compile_cache)
    suite = get_suite(args.suite)
    if vit:              # the runs a suite makes on that backbone: the ViT's hyper-parameters (head, layer decay)
        from benchmark.backbone_choice import suite_with_backbone
        suite = suite_with_backbone(suite, args.arch, "random")
    names = args.methods or [m for m in suite.method_list() if m != "pretrained"]
    unknown = sorted(set(names) - set(method_names()))
    if unknown:
        print(f"error: unknown method(s) {', '.join(unknown)}; registered: {', '.join(method_names())}",
              file=sys.stderr)
        return 2
    specs = {name: plan(suite, methods=[name], seeds=suite.seeds[:1])[0] for name in names}
    first = next(iter(specs.values()))
    print(f"one epoch of each method at the shapes of suite {suite.name} ({suite.dataset} "
          f"{first.setting} {first.query_domain}->{first.retrieval_domain}, domains of "
          f"{'/'.join(map(str, estimated_domain_sizes(first) or (300, 300)))} images, random images), "
          f"{config.describe()}, tf32 {'on' if args.tf32 else 'off'}, device {_device_name(config.device)}"
          + ("" if config.device.type == "cuda" else f", torch threads {torch.get_num_threads()}")
          + f"; {args.warmup_epochs} warm-up epoch(s) before the timed one")
    print(f"  {'method':<10} {'batch':>6} {'steps':>6} {'images/s':>10} {'plain step':>11} {'cost/image':>11} "
          f"{'syncs/step':>11}")
    rates = {}
    for name, spec in specs.items():
        rates[name] = _method_rate(spec, config, args.warmup_epochs, args.seed, count_syncs=args.syncs)
        plain = _plain_rate(config, 2 * rates[name]["batch"], args.plain_steps, warmup=2, repeats=3)  # both domains
        rate, syncs = rates[name]["images_per_second"], rates[name]["host_syncs_per_step"]
        print(f"  {name:<10} {rates[name]['batch']:>6} {rates[name]['steps']:>6} {rate:>10.1f} {plain:>11.1f} "
              f"{'x' + format(plain / rate, '.2f'):>11} {'-' if syncs is None else format(syncs, '.1f'):>11}")
    print("  cost/image: the plain step's images/s over the method's (x1.00: as cheap as a plain two-view step)")
    if args.syncs:
        print("  syncs/step: host synchronisations per step in the method's training_step and after_optimizer_step, "
              + ("from torch.cuda's sync debug mode" if config.device.type == "cuda" else
                 "found by benchmark.acceleration.HostSyncCounter on the CPU (an upper bound of a GPU's: calls on "
                 "host tensors count too)"))
    if args.calibration:
        device = _device_name(config.device)
        path = (default_calibration_path(REPO_ROOT / "results", device) if args.calibration == "auto"
                else Path(args.calibration))
        calibration = calibration_from_rates(device, suite.name, args.arch, args.size, args.precision,
                                             args.channels_last, args.compile, args.tf32, rates)
        print(f"calibration written: {write_calibration(path, calibration)} (run_benchmark.py --dry-run reads "
              f"<output>/calibration/ or --calibration FILE)")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_common_options(command: argparse.ArgumentParser, device: str = "cpu") -> None:
    """--device, --seed and --threads, the same for every command."""
    command.add_argument("--device", choices=["cpu", "cuda"], default=device)
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--threads", type=_positive_int, default=None,
                         help="torch CPU threads (default: torch's choice; 1 helps on a machine busy with other work)")


def _add_counts(command: argparse.ArgumentParser, **defaults: int) -> None:
    """Positive-integer options, `--name-with-dashes` for each keyword name, with their defaults."""
    for name, default in defaults.items():
        command.add_argument(f"--{name.replace('_', '-')}", type=_positive_int, default=default)


PERF_BACKBONES = ("resnet50", "resnet18", "small_cnn", "vit_toy", *VIT_ARCHITECTURES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark.perf", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    accelerator = "cuda" if torch.cuda.is_available() else "cpu"

    ev = commands.add_parser("eval", help="retrieval_metrics against a per-query numpy reference")
    _add_counts(ev, queries=10000, gallery=10000, dim=128, classes=65)
    ev.add_argument("--ks", type=_positive_int, nargs="+", default=[1, 5, 15])
    _add_counts(ev, chunk_size=1024)
    _add_common_options(ev)
    ev.add_argument(
        "--reference-queries", type=_positive_int, default=1000,
        help="time the slow reference on the first N queries and extrapolate linearly (default 1000; "
        "pass the number of queries to measure it on all of them)",
    )
    ev.set_defaults(handler=run_eval)

    data = commands.add_parser("data", help="training images/s: per-image PIL pipeline against the cached one")
    _add_counts(data, images=512, source_size=300, size=224, batch=64)
    _add_common_options(data)
    data.set_defaults(handler=run_data)

    elbow = commands.add_parser("elbow", help="UEM's K per bank: the chain and elbow before issue 23 against "
                                "the bisecting path and its rule")
    _add_counts(elbow, points=4400, dim=128, classes=65, k_max=130, repeats=3)
    elbow.add_argument("--rule", default="silhouette", help="the rule timed on the path (methods.cluster_count."
                       "K_RULES; default: UEM's)")
    elbow.add_argument("--faiss", action="store_true", help="also time the faiss elbow UEM ran until 2026-11-30")
    _add_common_options(elbow, device=accelerator)
    elbow.set_defaults(handler=run_elbow)

    train = commands.add_parser("train", help="backbone training images/s: fp32, bf16 autocast, channels_last")
    train.add_argument("--arch", choices=PERF_BACKBONES, default="resnet50",
                       help="a suite's backbone name (a ViT is timed without channels_last)")
    _add_counts(train, size=224, batch=64, steps=20, warmup=3)
    train.add_argument("--compile", action="store_true", help="also bf16 + channels_last with torch.compile")
    _add_common_options(train, device=accelerator)
    train.set_defaults(handler=run_train)

    backbones = commands.add_parser("backbones", help="the plain training step of several backbones, interleaved")
    backbones.add_argument("--archs", nargs="+", choices=PERF_BACKBONES, metavar="NAME",
                           default=["resnet50", "vit_small_patch14_dinov2", "vit_base_patch14_dinov2",
                                    "vit_base_patch16_clip_quickgelu_224"],
                           help="suite backbone names (default: ResNet-50, DINOv2 ViT-S/14 and ViT-B/14, CLIP ViT-B/16)")
    backbones.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    _add_counts(backbones, size=224, batch=64, steps=10, warmup=2, rounds=3)
    _add_common_options(backbones, device=accelerator)
    backbones.set_defaults(handler=run_backbones)

    every = commands.add_parser("methods", help="one epoch of every method at a suite's shapes vs a plain step")
    every.add_argument("--suite", default="quickstart")
    every.add_argument("--methods", nargs="+", help="these methods (default: the suite's, but pretrained)")
    every.add_argument("--arch", choices=PERF_BACKBONES, default="small_cnn",
                       help="a suite's backbone name; a ViT runs the suite's methods with their ViT hyper-parameters")
    _add_counts(every, size=32, plain_steps=10)
    every.add_argument("--warmup-epochs", type=int, default=1,
                       help="untimed epochs before the timed one (kernel loading, compilation, caches); default 1")
    every.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    every.add_argument("--channels-last", action="store_true")
    every.add_argument("--compile", action="store_true", help="torch.compile the backbones, as run_benchmark.py "
                       "--compile (compilation falls in the warm-up epoch)")
    every.add_argument("--compile-cache", type=Path, metavar="DIR", help="Inductor's cache folder (default: torch's)")
    every.add_argument("--no-tf32", dest="tf32", action="store_false", help="CUDA: IEEE float32 (default: TF32)")
    every.add_argument("--no-syncs", dest="syncs", action="store_false",
                       help="skip the extra epoch that counts host synchronisations per step")
    every.add_argument("--calibration", nargs="?", const="auto", metavar="FILE",
                       help="write the measured rates for run_benchmark.py --dry-run's estimate: to FILE, or without "
                            "FILE to results/calibration/<device>.json in the checkout")
    _add_common_options(every, device=accelerator)
    every.set_defaults(handler=run_methods)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:          # a backbone at a size it cannot take, a suite that cannot run on it
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
