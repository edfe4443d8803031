"""Reading one domain of a dataset from disk, and the two views of it: labelled (harness) and unlabeled (methods).

Two on-disk forms are accepted for every dataset:
- the folder layout `<root>/<domain>/<class>/<image>`;
- an image-list file, one `relative/path label` per line (the label is the last whitespace-separated token, so paths
  may contain spaces; paths are relative to the dataset root), the format transfer-learning libraries ship.

Labels are always ids of the dataset's global `ClassMap`. Images are decoded once, resized to a square
`image_size`, and kept as one uint8 tensor per domain (the decoded-image cache): training then never touches the disk.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .classmap import ClassMap

log = logging.getLogger("datasets")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# What operating systems and tools leave beside images and class folders: never data, never a class.
SYSTEM_NAMES = ("__MACOSX", "@eaDir", "lost+found", "Thumbs.db", "desktop.ini")


class DataError(Exception):
    """The data on disk is missing or not in the expected form; the message says where and what was expected."""


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: int


def is_system_entry(path: Path) -> bool:
    """A hidden file or folder (macOS AppleDouble `._x.jpg`, `.DS_Store`, `.ipynb_checkpoints`, `.git`) or one that
    operating systems and NAS boxes leave (`__MACOSX`, `@eaDir`, `Thumbs.db`): skipped everywhere, as data and as a
    class, for every dataset."""
    return path.name.startswith(".") or path.name in SYSTEM_NAMES


def skipped_note(skipped: Sequence[Path]) -> str:
    """One line for every system entry skipped in a domain: how many, and a few of them."""
    examples = ", ".join(sorted({p.name for p in skipped})[:3])
    return (f"{len(skipped)} hidden or system file(s)/folder(s) skipped (e.g. {examples}: macOS '._' files, "
            f".ipynb_checkpoints and the like are never data)")


def class_folders(domain_dir: Path) -> tuple[dict[str, Path], list[Path]]:
    """The class folders of a domain folder by name, and the system entries skipped in it (`is_system_entry`, at
    the class level and among the images)."""
    folders, skipped = {}, []
    for entry in sorted(Path(domain_dir).iterdir()):
        if is_system_entry(entry):
            skipped.append(entry)
        elif entry.is_dir():
            folders[entry.name] = entry
            skipped += [p for p in entry.iterdir() if is_system_entry(p)]
    return folders, skipped


def image_files(class_dir: Path) -> list[Path]:
    """The images of a class folder: known extensions, system entries left out, in name order."""
    return sorted(p for p in Path(class_dir).iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not is_system_entry(p) and p.is_file())


def read_folder_layout(domain_dir: Path, class_map: ClassMap, skip_unknown: bool = False) -> list[ImageRecord]:
    """`<domain_dir>/<class>/<image>`; class folders not in the class map are an error (a stray folder must not
    silently become a class) unless `skip_unknown` (a dataset restricted to some of its classes, e.g. DomainNet-7
    read from the full DomainNet folders), missing class folders are allowed (partial datasets), and an empty result
    is an error. Hidden and system entries (`is_system_entry`) are skipped, with one logged note per domain."""
    domain_dir = Path(domain_dir)
    if not domain_dir.is_dir():
        raise DataError(f"domain folder not found: {domain_dir} (expected <root>/<domain>/<class>/<image>)")
    records: list[ImageRecord] = []
    unknown = []
    folders, skipped = class_folders(domain_dir)
    if skipped:
        log.warning("%s: %s", domain_dir, skipped_note(skipped))
    for name, class_dir in folders.items():
        if name not in class_map:
            if not skip_unknown:
                unknown.append(name)
            continue
        label = class_map.id(name)
        records += [ImageRecord(image_path, label) for image_path in image_files(class_dir)]
    if unknown:
        raise DataError(f"{domain_dir}: folder(s) {', '.join(unknown)} are not classes of this dataset "
                        f"(expected class folders named like: {', '.join(class_map.names[:5])}, ...)")
    if not records:
        raise DataError(f"{domain_dir}: no images found (expected <class>/<image> with extensions "
                        f"{', '.join(IMAGE_EXTENSIONS)})")
    return records


def read_image_list(list_file: Path, root: Path, class_map: ClassMap,
                    label_names: Mapping[int, str] | None = None) -> list[ImageRecord]:
    """One `relative/path label` per line; blank lines and lines starting with '#' are skipped.

    Without `label_names` the label is an id of `class_map`. With it, the label is the list's own numbering (e.g. the
    library's or the dataset's official label order) and `label_names[label]` names the class; lines whose label is
    not in `label_names`, or names a class outside `class_map`, are skipped (a list of the full DomainNet read for its
    7-class subset)."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DataError(f"image list not found: {list_file}")
    records = []
    # utf-8-sig: lists saved by Windows editors start with a byte-order mark; splitlines() takes CRLF too.
    for line_number, line in enumerate(list_file.read_text(encoding="utf-8-sig").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{list_file}:{line_number}: expected 'relative/path label', got {line!r}")
        label = int(parts[1])
        if label_names is not None:
            name = label_names.get(label)
            if name is not None and name in class_map:
                records.append(ImageRecord(Path(root) / parts[0], class_map.id(name)))
            continue
        if not 0 <= label < len(class_map):
            raise DataError(f"{list_file}:{line_number}: label {label} outside 0..{len(class_map) - 1}")
        records.append(ImageRecord(Path(root) / parts[0], label))
    if not records:
        raise DataError(f"{list_file}: the image list is empty")
    return records


def to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB. 16- and 32-bit integer images (16-bit PNGs open as mode "I;16" or "I") are scaled from their full
    range, 0..65535 -> 0..255; PIL's own convert("RGB") clips them at 255, which turns a 16-bit image white."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def decode_images(paths: Sequence[Path], image_size: int) -> torch.Tensor:
    """Decode and resize to image_size x image_size RGB; returns uint8 [N, 3, S, S]. An unreadable file is reported
    by its path."""
    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image = to_rgb8(image)
                if image.size != (image_size, image_size):
                    image = image.resize((image_size, image_size), Image.BILINEAR)
                out[i] = np.asarray(image)
        except (OSError, ValueError) as error:
            raise DataError(f"unreadable image: {path} ({error})") from error
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


@dataclass
class LabelledDomain:
    """What the harness holds for one domain: images, global class ids, and where they came from. Never handed to a
    method: `unlabeled()` is."""
    dataset: str
    name: str
    images: torch.Tensor          # uint8 [N, 3, S, S]
    labels: torch.Tensor          # int64 [N], ids of the dataset's ClassMap
    paths: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def restricted_to(self, class_ids: Sequence[int]) -> "LabelledDomain":
        keep = torch.isin(self.labels, torch.as_tensor(list(class_ids), dtype=torch.long))
        index = keep.nonzero().flatten()
        return LabelledDomain(self.dataset, self.name, self.images[index], self.labels[index],
                              tuple(self.paths[i] for i in index.tolist()))

    def unlabeled(self, domain_id: int) -> "UnlabeledDomain":
        return UnlabeledDomain(self.name, domain_id, self.images)


class UnlabeledDomain:
    """The only view of a domain a method receives (DESIGN §3.1): images, instance indices and the domain id.

    It holds no labels and no class names by construction; `test_methods_receive_no_labels` in `tests/test_runner.py`
    checks that no label can reach a method through it.
    """
    __slots__ = ("name", "domain_id", "_images")

    def __init__(self, name: str, domain_id: int, images: torch.Tensor):
        self.name = name
        self.domain_id = domain_id
        self._images = images

    def __len__(self) -> int:
        return self._images.shape[0]

    @property
    def image_size(self) -> int:
        return self._images.shape[-1]

    def images(self, index: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """float [B, 3, S, S] in [0, 1] on `device`, for the given instance indices."""
        batch = self._images[index.cpu()]
        if torch.device(device).type == "cuda":
            batch = batch.pin_memory()          # page-locked: the copy overlaps with the GPU's work
        batch = batch.to(device, non_blocking=True)
        return batch.float().div_(255.0)
