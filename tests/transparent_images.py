"""One picture, a black drawing on a transparent background, saved in every form that carries transparency (as icon
sets, clip art and sketches exported with alpha come) that PIL opens in its own way, beside the reference: the same
drawing in RGB on white.

Under every transparent pixel lies what exporters leave there, black or another colour, never white: a decoder that
drops the transparency shows it.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 8
# The drawing: a cross, 12 of the 64 pixels.
DRAWING = np.zeros((SIZE, SIZE), dtype=bool)
DRAWING[1:7, 3] = True
DRAWING[4, 1:7] = True


def write_png16(path: Path, samples: np.ndarray, colour_type: int, trns: bytes | None = None) -> Path:
    """A 16-bit PNG written chunk by chunk (PIL writes no 16-bit colour PNG): `samples` uint16 [H, W] for grey
    (colour type 0) or [H, W, C] (2: RGB, 4: grey + alpha, 6: RGBA), `trns` the raw tRNS chunk. PNG spec (W3C, 2003):
    filter type 0 per row, samples big-endian."""
    samples = samples.reshape(samples.shape[0], samples.shape[1], -1)
    height, width = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    if trns is not None:
        data += chunk(b"tRNS", trns)
    data += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def _palette(colours) -> list[int]:
    return [v for colour in colours for v in colour] + [0] * (768 - 3 * len(colours))


def _palette_image(indices: np.ndarray, colours) -> Image.Image:
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(_palette(colours))
    return image


def save_forms(folder: Path) -> dict[str, Path]:
    """The picture in every form, by name; "rgb_on_white" is the reference. Returns name -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    ink = DRAWING
    forms = {}

    def path(name: str, ext: str = ".png") -> Path:
        forms[name] = folder / f"{name}{ext}"
        return forms[name]

    reference = np.where(ink[..., None], 0, 255).astype(np.uint8).repeat(3, axis=-1)
    Image.fromarray(reference, mode="RGB").save(path("rgb_on_white"))
    # alpha channels, black under the transparent pixels
    rgba = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(ink, 255, 0)
    Image.fromarray(rgba, mode="RGBA").save(path("rgba"))
    Image.fromarray(rgba[..., [0, 3]], mode="LA").save(path("la"))
    # grey with premultiplied ("associated") alpha, a TIFF that PIL opens in mode La: PIL writes LA TIFFs with
    # ExtraSamples = 2 (unassociated alpha), set here to 1 (TIFF 6.0, tag 338); black ink premultiplies to itself
    Image.fromarray(rgba[..., [0, 3]], mode="LA").save(path("la_premultiplied", ".tiff"))
    unassociated, associated = (struct.pack("<HHII", 338, 3, 1, kind) for kind in (2, 1))
    forms["la_premultiplied"].write_bytes(forms["la_premultiplied"].read_bytes().replace(unassociated, associated))
    # a palette with one alpha byte per entry (tRNS bytes: two transparent entries, black and green, in a checkerboard)
    checker = (np.indices((SIZE, SIZE)).sum(axis=0) % 2) + 1
    _palette_image(np.where(ink, 0, checker), [(0, 0, 0), (0, 0, 0), (0, 255, 0)]).save(
        path("palette_alpha_bytes"), transparency=b"\xff\x00\x00")
    # a palette with one transparent index, in a PNG and in a GIF
    _palette_image(np.where(ink, 0, 1), [(0, 0, 0), (0, 0, 0)]).save(path("palette_index"), transparency=1)
    _palette_image(np.where(ink, 0, 1), [(0, 0, 0), (0, 0, 255)]).save(path("gif", ".gif"), transparency=1)
    # a transparent colour (PNG tRNS for grey and RGB images): grey 77, green
    Image.fromarray(np.where(ink, 0, 77).astype(np.uint8), mode="L").save(path("grey_colour_key"), transparency=77)
    key = np.where(ink[..., None], [0, 0, 0], [0, 255, 0]).astype(np.uint8)
    Image.fromarray(key, mode="RGB").save(path("rgb_colour_key"), transparency=(0, 255, 0))
    # 16 bits per sample: RGBA, grey + alpha, grey with a transparent level (1000)
    alpha16 = np.where(ink, 65535, 0).astype(np.uint16)
    zeros16 = np.zeros((SIZE, SIZE), dtype=np.uint16)
    write_png16(path("rgba_16bit"), np.stack([zeros16, zeros16, zeros16, alpha16], axis=-1), colour_type=6)
    write_png16(path("la_16bit"), np.stack([zeros16, alpha16], axis=-1), colour_type=4)
    write_png16(path("grey_colour_key_16bit"), np.where(ink, 0, 1000).astype(np.uint16), colour_type=0,
                trns=struct.pack(">H", 1000))
    return forms


def save_half_transparent(folder: Path) -> dict[str, Path]:
    """A 2 x 1 image: a black pixel and a white one, both at alpha 128 (an anti-aliased edge), as RGBA, LA and a
    palette image with alpha bytes. Returns name -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    rgba = np.array([[[0, 0, 0, 128], [255, 255, 255, 128]]], dtype=np.uint8)
    forms = {name: folder / f"half_{name}.png" for name in ("rgba", "la", "palette_alpha_bytes")}
    Image.fromarray(rgba, mode="RGBA").save(forms["rgba"])
    Image.fromarray(rgba[..., [0, 3]], mode="LA").save(forms["la"])
    _palette_image(np.array([[0, 1]]), [(0, 0, 0), (255, 255, 255)]).save(forms["palette_alpha_bytes"],
                                                                         transparency=b"\x80\x80")
    return forms
