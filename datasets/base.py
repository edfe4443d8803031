"""Reading one domain of a dataset from disk, and the two views of it: labelled (harness) and unlabeled (methods).

Two on-disk forms are accepted for every dataset:
- the folder layout `<root>/<domain>/<class>/<image>`;
- an image-list file, one `relative/path label` per line (the label is the last whitespace-separated token, so paths
  may contain spaces; paths are relative to the dataset root), the format transfer-learning libraries ship.

Labels are always ids of the dataset's global `ClassMap`. Images are decoded once (transparency composited onto the
dataset's background, white unless it says otherwise), resized to a square `image_size`, and kept as one uint8 tensor
per domain (the decoded-image cache): training then never touches the disk.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

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


# Integer modes PIL opens 16-bit greyscale files in (PNG, TIFF): scaled from 0..65535, never clipped.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Modes with an alpha channel ("a": premultiplied). Other modes carry transparency in `image.info["transparency"]`:
# a PNG tRNS chunk (one transparent grey or RGB colour, or one alpha byte per palette entry) or a GIF's transparent
# palette index.
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
WHITE = (255, 255, 255)
# The version of what `decode_images` makes of a file, part of the decoded-image cache's key: images decoded by an
# older version are decoded again. 2: transparency composited onto the dataset's background (1 dropped the alpha and
# kept whatever colour the exporter left under transparent pixels).
DECODER_VERSION = 2


def colour_name(rgb: tuple[int, int, int]) -> str:
    """"white", "black", or "RGB (r, g, b)": how reports name a dataset's background."""
    return {(255, 255, 255): "white", (0, 0, 0): "black"}.get(tuple(rgb), f"RGB {tuple(rgb)}")


def transparency_note(count: int, background: tuple[int, int, int], whose: str) -> str:
    """The data checks' line for a domain's images with transparent pixels; `whose` says where the background is set."""
    return f"{count} image(s) with transparency: composited onto {colour_name(background)} when decoded ({whose})"


def _sixteen_bit_to_eight(image: Image.Image) -> Image.Image:
    """A 16-bit greyscale image as 8-bit "L", scaled 0..65535 -> 0..255 (PIL's own convert clips at 255, which turns
    it white); with its tRNS grey level, if any, as an alpha channel ("LA"): PIL compares that 16-bit level with
    nothing once the image is 8-bit, so it is applied here on the 16-bit values."""
    values = np.asarray(image, dtype=np.float64)
    grey = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return Image.fromarray(grey, mode="L")
    alpha = np.where(values == transparent, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey, alpha], axis=-1), mode="LA")


def _as_rgba(image: Image.Image) -> Image.Image | None:
    """The 8-bit image as RGBA when it carries transparency (an alpha channel, a transparent colour or palette
    entries), else None. Going through RGBA is also what keeps PIL from warning about palette images whose
    transparency is one byte per entry."""
    if image.mode not in ALPHA_MODES and "transparency" not in image.info:
        return None
    if image.mode == "La":              # grey with premultiplied alpha (TIFF): PIL converts it to LA only
        image = image.convert("LA")
    return image.convert("RGBA")


def to_rgb8(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """8-bit RGB, as the image looks in a viewer on `background` (RGB, 0..255).

    Transparency of every form (RGBA, LA, premultiplied alpha, palette images with a tRNS chunk or a GIF's
    transparent index, greyscale and RGB PNGs with a transparent colour, 16-bit greyscale with one) is composited
    onto `background` with PIL's `Image.alpha_composite`: the same visible picture gives the same pixels whatever mode
    it was saved in, and the colour an exporter left under transparent pixels never shows. 16-bit greyscale is
    scaled from its full range, 0..65535 -> 0..255; 16-bit RGBA and LA PNGs open as 8-bit RGBA in PIL (the high byte
    of each sample).

    Not handled: a 16-bit RGB PNG's transparent colour (PIL keeps only the high bytes of the pixels, against which the
    16-bit key never matches), such pixels stay opaque."""
    if image.mode in SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_eight(image)
    rgba = _as_rgba(image)
    if rgba is None:
        return image.convert("RGB")
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def has_transparent_pixels(image: Image.Image) -> bool:
    """Whether any pixel of `image` is not fully opaque (an RGBA image whose alpha is 255 everywhere has none)."""
    if image.mode in SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_eight(image)
    rgba = _as_rgba(image)
    return rgba is not None and rgba.getchannel("A").getextrema()[0] < 255


def inspect_image(path: Path) -> tuple[str | None, bool]:
    """For the data checks: (None, whether it has transparent pixels) when the image decodes, else (why not, False).
    JPEGs (never transparent) are decoded at reduced size (draft mode): fast, but the whole file is still read, so
    truncation and corruption are caught."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
            return None, has_transparent_pixels(image)
    except Exception as error:   # PIL raises several types for broken files; each is a finding, not a crash
        return f"{type(error).__name__}: {error}", False


PROGRESS_FROM_IMAGES = 500      # decodings of this many images or more show a progress bar after 3 s


def decode_images(paths: Sequence[Path], image_size: int, background: tuple[int, int, int] = WHITE,
                  desc: str = "decoding images") -> torch.Tensor:
    """Decode (`to_rgb8`: transparency composited onto `background`) and resize to image_size x image_size RGB;
    returns uint8 [N, 3, S, S]. An unreadable file is reported by its path. From PROGRESS_FROM_IMAGES images on, a
    progress bar (`desc`) on stderr once it has taken 3 s."""
    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    progress = tqdm(paths, desc=desc, unit="image", file=sys.stderr, dynamic_ncols=True, mininterval=1.0,
                    delay=3.0, disable=len(paths) < PROGRESS_FROM_IMAGES)
    for i, path in enumerate(progress):
        try:
            with Image.open(path) as image:
                image = to_rgb8(image, background)
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
