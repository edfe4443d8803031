"""Datasets the harness knows, by name: their domains, short names, global class map, and how to load a domain.

Real datasets (Office-31, Office-Home, DomainNet-7) register here in the same form; the embedded synthetic one needs no
`--data-root`: it is generated into the cache folder on first use.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import real, synthetic
from .base import (DECODER_VERSION, WHITE, DataError, LabelledDomain, decode_images, read_folder_layout,
                   read_image_list)
from .cache import atomic_torch_save, build_once
from .classmap import ClassMap


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    domains: tuple[str, ...]
    short_names: dict[str, str]
    class_map: ClassMap
    image_size: int
    # (data_root, cache_dir) -> folder that holds one sub-folder per domain
    locate: Callable[[Path | None, Path], Path] = field(compare=False)
    description: str = ""
    title: str = ""                      # tables and figures: "Office-Home"; default: the name
    # other accepted names of a domain (library task letters, archive folder names), matched case-insensitively
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    # (dataset folder, domain) -> image records; default: the folder layout <folder>/<domain>/<class>/<image>
    read_domain: Callable[[Path, str], list] | None = field(default=None, compare=False)
    # image-list label -> class name, when the lists number classes in another order than the class map
    list_label_names: dict[int, str] | None = field(default=None, compare=False)
    # RGB (0..255) that transparent pixels are composited onto when decoding (datasets/base.py, to_rgb8)
    background: tuple[int, int, int] = WHITE
    # the budget its suites take unless they name one (methods.base.BUDGETS): "quickstart" for the embedded synthetic
    # data, "paper" for the paper's datasets and folder datasets
    budget: str = "paper"

    def domain_name(self, name_or_short: str) -> str:
        """Accept a full domain name, its short name or an alias (case-insensitive)."""
        lowered = name_or_short.lower()
        for domain in self.domains:
            accepted = (domain, self.short_names[domain], *self.aliases.get(domain, ()))
            if lowered in (name.lower() for name in accepted):
                return domain
        names = ", ".join(f"{d} ({self.short_names[d]})" for d in self.domains)
        raise KeyError(f"dataset {self.name!r} has no domain {name_or_short!r}; its domains are: {names}")

    def __post_init__(self):
        if not self.title:
            object.__setattr__(self, "title", self.name)

    def pair_label(self, query: str, retrieval: str) -> str:
        return f"{self.short_names[query]}→{self.short_names[retrieval]}"


def _locate_synthetic(data_root: Path | None, cache_dir: Path) -> Path:
    return synthetic.ensure_synthetic(cache_dir, seed=0, image_size=32)


def _real_info(dataset: real.RealDataset) -> DatasetInfo:
    return DatasetInfo(
        name=dataset.name, title=dataset.table_title or dataset.title, domains=dataset.domains,
        short_names=dataset.short_names, class_map=dataset.class_map, image_size=224,
        locate=lambda data_root, cache_dir: real.locate(dataset, data_root),
        description=f"{dataset.title}: {dataset.layout}; published at {dataset.published_at}",
        aliases=dataset.aliases,
        read_domain=lambda root, domain: real.read_domain(dataset, root, domain),
        list_label_names=dataset.list_label_names)


DATASETS: dict[str, DatasetInfo] = {}


def add_unique(table: dict, name: str, entry, what: str):
    """table[name] = entry, refusing a name already taken (ValueError naming `what` and the name). Returns `entry`.
    The registries of datasets and suites."""
    if name in table:
        raise ValueError(f"{what} name {name!r} is already registered")
    table[name] = entry
    return entry


def default_budget(dataset: str) -> str:
    """The budget of a registered dataset's suites when they name none; "paper" for a name not registered."""
    info = DATASETS.get(dataset)
    return info.budget if info is not None else "paper"


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Make a dataset known by its name (as `methods.register` and `benchmark.suites.add_suite` do for methods and
    suites); a name already taken is an error. Returns `info`."""
    return add_unique(DATASETS, info.name, info, "dataset")


register_dataset(DatasetInfo(
    name="synthetic",
    title="Synthetic",
    domains=synthetic.DOMAINS,
    short_names=synthetic.SHORT_NAMES,
    class_map=ClassMap.from_names(synthetic.CLASSES),
    image_size=32,
    locate=_locate_synthetic,
    description="embedded: 12 shapes x 4 styles, 32 px, generated on first use (no download)",
    budget="quickstart",
))
for _dataset in real.REAL_DATASETS.values():
    register_dataset(_real_info(_dataset))


def get_dataset(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None


def load_domain(info: DatasetInfo, domain: str, data_root: Path | None, cache_dir: Path,
                image_list: Path | None = None, background: tuple[int, int, int] | None = None) -> LabelledDomain:
    """Read and decode one domain: from its folder (`<root>/<domain>/<class>/<image>`) or, when `image_list` is given,
    from that `relative/path label` file (paths relative to the dataset root). Transparent pixels are composited onto
    `background` (RGB 0..255; default: the dataset's). Decoded images are cached under `cache_dir` (never beside the
    data), keyed by dataset, domain, image size, the files, the background and the decoder's version."""
    root = info.locate(data_root, Path(cache_dir))
    if image_list is not None:
        records = read_image_list(image_list, root, info.class_map, info.list_label_names)
    elif info.read_domain is not None:
        records = info.read_domain(root, domain)
    else:
        records = read_folder_layout(root / domain, info.class_map)
    paths = tuple(str(r.path) for r in records)
    labels = torch.tensor([r.label for r in records], dtype=torch.long)
    background = tuple(background or info.background)
    images = _cached_decode(info, domain, paths, Path(cache_dir), background)
    return LabelledDomain(info.name, domain, images, labels, paths)


def decoded_cache_file(info: DatasetInfo, domain: str, paths: tuple[str, ...], cache_dir: Path,
                       background: tuple[int, int, int]) -> Path:
    """Where the decoded images of `paths` live in the cache. The key covers every file's path, size and modification
    time (a replaced image is decoded again), the background and DECODER_VERSION (images decoded by an older decoder,
    or onto another background, are decoded again). Raises DataError naming a file that cannot be read."""
    listing = [f"decoder {DECODER_VERSION}\tbackground {','.join(map(str, background))}"]
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise DataError(f"unreadable image: {path!r} ({error})") from error
        listing.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}")
    key = hashlib.sha1("\n".join(listing).encode()).hexdigest()[:12]
    return cache_dir / "decoded" / f"{info.name}-{domain}-{info.image_size}px-{key}.pt"


def _cached_decode(info: DatasetInfo, domain: str, paths: tuple[str, ...], cache_dir: Path,
                   background: tuple[int, int, int]) -> torch.Tensor:
    cache_file = decoded_cache_file(info, domain, paths, cache_dir, background)
    # Memory-mapped on load: pages are read when a batch touches them and shared by every run on the machine.
    return build_once(cache_file,
                      lambda target: atomic_torch_save(target, decode_images(
                          [Path(p) for p in paths], info.image_size, background,
                          desc=f"decoding {info.name}/{domain} ({info.image_size} px, once)")),
                      lambda target: torch.load(target, mmap=True, weights_only=True),
                      what=f"the decoded images of {info.name}/{domain} ({len(paths)} images, {info.image_size} px)")


__all__ = ["DATASETS", "DatasetInfo", "DataError", "get_dataset", "load_domain", "register_dataset"]
