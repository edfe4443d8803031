"""The embedded synthetic dataset: 12 object classes drawn in 4 visual styles, the default of `--suite quickstart`.

Each class is a shape whose identity survives the change of style (its silhouette); each domain renders that silhouette
its own way:

- `photo`:    a filled object with directional shading and fine texture on a soft, smoothly varying background;
- `sketch`:   thin dark strokes of the object's outline on white paper, with a few stray strokes;
- `clipart`:  flat saturated fill with a thick black outline on a flat background colour;
- `painting`: pastel fill, no outline, soft blur and low-frequency "brush" colour variation.

Instances vary in position, scale, rotation, aspect and colour, so nearest neighbours by pixels or by a random network
mostly match style and colour, not class: an untrained network retrieves near chance across domains, and a method has
to learn shape features that hold across styles. (Feasibility figures from issue 2: the task had to be softened — a
heavily blurred, colour-cast painting style and busy photo backgrounds made it too hard at 32 px.)

Generation is deterministic in (seed, image size, version), takes a few seconds, and is cached on disk in the folder
layout `<cache>/synthetic/<version>-seed<seed>-<size>px/<domain>/<class>/<n>.png`, written to a temporary folder and
renamed into place, so a half-written dataset is never read. The adapter reads it back through the same folder-layout
reader as a real dataset.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .cache import build_once

VERSION = "v4"
DOMAINS = ("photo", "sketch", "clipart", "painting")
SHORT_NAMES = {"photo": "Ph", "sketch": "Sk", "clipart": "Cl", "painting": "Pa"}
CLASSES = ("arrow", "circle", "crescent", "cross", "hexagon", "lightning", "ring", "square", "star", "three_bars",
           "triangle", "two_dots")
IMAGES_PER_CLASS = (30, 46)      # per class and domain, drawn uniformly: classes are mildly imbalanced
TYPICAL_COLOUR_PROBABILITY = 0.9
RENDER_SCALE = 4                 # draw at 4x the output size, then downsample (anti-aliasing)


# --- silhouettes, in unit coordinates (object roughly inside [-1, 1]^2) --------------------------------------------

def _regular_polygon(n: int, radius: float = 1.0, phase: float = 0.0) -> list[tuple[float, float]]:
    return [(radius * math.cos(phase + 2 * math.pi * i / n), radius * math.sin(phase + 2 * math.pi * i / n))
            for i in range(n)]


def _star() -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        radius = 1.0 if i % 2 == 0 else 0.42
        angle = -math.pi / 2 + math.pi * i / 5
        points.append((radius * math.cos(angle), radius * math.sin(angle)))
    return points


POLYGONS = {
    "arrow": [(-1.0, -0.28), (0.15, -0.28), (0.15, -0.7), (1.0, 0.0), (0.15, 0.7), (0.15, 0.28), (-1.0, 0.28)],
    "cross": [(-0.3, -1.0), (0.3, -1.0), (0.3, -0.3), (1.0, -0.3), (1.0, 0.3), (0.3, 0.3), (0.3, 1.0), (-0.3, 1.0),
              (-0.3, 0.3), (-1.0, 0.3), (-1.0, -0.3), (-0.3, -0.3)],
    "hexagon": _regular_polygon(6),
    "lightning": [(-0.2, -1.0), (0.55, -1.0), (0.1, -0.15), (0.6, -0.15), (-0.35, 1.0), (-0.05, 0.1),
                  (-0.55, 0.1)],
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "star": _star(),
    "triangle": _regular_polygon(3, 1.0, -math.pi / 2),
}
# Shapes made of discs or several parts: (kind, centre x, centre y, radius) drawn filled ("add") or cleared ("cut").
DISCS = {
    "circle": [("add", 0.0, 0.0, 0.9)],
    "ring": [("add", 0.0, 0.0, 0.95), ("cut", 0.0, 0.0, 0.55)],
    "crescent": [("add", 0.0, 0.0, 0.9), ("cut", 0.42, -0.18, 0.72)],
    "two_dots": [("add", -0.5, 0.0, 0.42), ("add", 0.5, 0.0, 0.42)],
}
BARS = {"three_bars": [(-0.9, -0.85, 0.9, -0.45), (-0.9, -0.2, 0.9, 0.2), (-0.9, 0.45, 0.9, 0.85)]}


def _silhouette(class_name: str, canvas: int, rng: np.random.Generator) -> Image.Image:
    """Binary mask (mode 'L', 0/255) of one instance: random placement, scale, rotation and aspect."""
    scale = canvas * rng.uniform(0.27, 0.38)
    aspect = rng.uniform(0.85, 1.15)
    angle = rng.uniform(-0.25, 0.25)
    centre = canvas / 2 + rng.uniform(-0.07, 0.07, size=2) * canvas
    cos_a, sin_a = math.cos(angle), math.sin(angle)

    def place(x: float, y: float) -> tuple[float, float]:
        x, y = x * scale * aspect, y * scale / aspect
        return (centre[0] + cos_a * x - sin_a * y, centre[1] + sin_a * x + cos_a * y)

    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    if class_name in POLYGONS:
        draw.polygon([place(x, y) for x, y in POLYGONS[class_name]], fill=255)
    elif class_name in DISCS:
        for kind, x, y, radius in DISCS[class_name]:
            outline = [place(x + radius * math.cos(t), y + radius * math.sin(t))
                       for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
            draw.polygon(outline, fill=255 if kind == "add" else 0)
    else:
        for x0, y0, x1, y1 in BARS[class_name]:
            draw.polygon([place(x0, y0), place(x1, y0), place(x1, y1), place(x0, y1)], fill=255)
    return mask


# --- styles --------------------------------------------------------------------------------------------------------

def _smooth_noise(canvas: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random cells x cells grid upsampled bicubically."""
    grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((canvas, canvas), Image.BICUBIC), dtype=np.float32) / 255.0


def _random_colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float],
                   hue: float | None = None) -> np.ndarray:
    hue = rng.random() if hue is None else hue % 1.0
    s, v = rng.uniform(*saturation), rng.uniform(*value)
    i, f = int(hue * 6) % 6, hue * 6 - int(hue * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _object_hue(class_name: str, rng: np.random.Generator) -> float:
    """Objects of a class have a typical hue in the coloured domains (as bananas are yellow in photos, paintings and
    clip art), with exceptions: TYPICAL_COLOUR_PROBABILITY of the instances take it, the rest any hue. Without
    this the colour of an instance is pure nuisance, which real images are not: instance discrimination then learns
    colour and erases class structure, and no method can adapt."""
    if rng.random() < TYPICAL_COLOUR_PROBABILITY:
        return CLASSES.index(class_name) * 5 / len(CLASSES) + rng.normal(0, 0.03)
    return rng.random()


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray, saturation: tuple[float, float],
                        value: tuple[float, float], min_difference: float = 0.3, hue: float | None = None) -> np.ndarray:
    """A colour whose brightness differs from the background's by at least `min_difference` (else a shape can
    vanish into its background, which teaches nothing about shape)."""
    for _ in range(50):
        colour = _random_colour(rng, saturation, value, hue)
        if abs(colour.mean() - background.mean()) >= min_difference:
            return colour
    return colour


def _edges(mask: Image.Image, width: int) -> np.ndarray:
    """Outline of a mask as a float map in [0, 1], about `width` pixels thick."""
    size = 2 * (width // 2) + 1
    grown = mask.filter(ImageFilter.MaxFilter(size))
    shrunk = mask.filter(ImageFilter.MinFilter(size))
    return (np.asarray(grown, dtype=np.float32) - np.asarray(shrunk, dtype=np.float32)) / 255.0


def _photo(mask: np.ndarray, canvas: int, rng: np.random.Generator, hue: float) -> np.ndarray:
    base = _random_colour(rng, (0.0, 0.2), (0.45, 0.85))
    background = base * (0.8 + 0.35 * _smooth_noise(canvas, 4, rng))[..., None]
    background += 0.04 * (rng.random((canvas, canvas, 1)) - 0.5)
    colour = _contrasting_colour(rng, base, (0.5, 0.95), (0.2, 1.0), hue=hue)
    direction = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:canvas, 0:canvas] / canvas - 0.5
    shading = 0.8 + 0.5 * (xs * math.cos(direction) + ys * math.sin(direction))
    texture = 1.0 + 0.1 * (_smooth_noise(canvas, 16, rng) - 0.5)
    obj = colour * (shading * texture)[..., None]
    return background * (1 - mask[..., None]) + obj * mask[..., None]


def _sketch(mask_image: Image.Image, canvas: int, rng: np.random.Generator) -> np.ndarray:
    strokes = _edges(mask_image, width=int(rng.integers(3, 6)))
    paper = np.ones((canvas, canvas), dtype=np.float32) * rng.uniform(0.92, 1.0)
    stray = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(stray)
    for _ in range(int(rng.integers(0, 3))):
        x0, y0 = rng.uniform(0, canvas, size=2)
        draw.line([(x0, y0), (x0 + rng.uniform(-20, 20), y0 + rng.uniform(-20, 20))], fill=255, width=3)
    strokes = np.maximum(strokes, np.asarray(stray, dtype=np.float32) / 255.0)
    ink = rng.uniform(0.0, 0.3)
    grey = paper * (1 - strokes) + ink * strokes
    return np.repeat(grey[..., None], 3, axis=2)


def _clipart(mask_image: Image.Image, mask: np.ndarray, canvas: int, rng: np.random.Generator,
             hue: float) -> np.ndarray:
    # Clip art mostly sits on white, sometimes on a light flat colour.
    background = np.ones(3, dtype=np.float32) if rng.random() < 0.6 else _random_colour(rng, (0.1, 0.4), (0.85, 1.0))
    colour = _contrasting_colour(rng, background, (0.8, 1.0), (0.4, 1.0), min_difference=0.2, hue=hue)
    image = np.where(mask[..., None] > 0.5, colour, background)
    outline = _edges(mask_image, width=int(rng.integers(7, 11)))[..., None]
    return image * (1 - outline)


def _painting(mask: np.ndarray, canvas: int, rng: np.random.Generator, hue: float) -> np.ndarray:
    background = _random_colour(rng, (0.1, 0.3), (0.75, 0.95))
    colour = _contrasting_colour(rng, background, (0.35, 0.6), (0.3, 0.9), min_difference=0.25, hue=hue)
    brush = (_smooth_noise(canvas, 8, rng) - 0.5)[..., None]
    image = np.where(mask[..., None] > 0.5, colour, background) + 0.12 * brush
    blurred = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    return np.asarray(blurred, dtype=np.float32) / 255.0


def render(class_name: str, domain: str, image_size: int, rng: np.random.Generator) -> Image.Image:
    canvas = image_size * RENDER_SCALE
    mask_image = _silhouette(class_name, canvas, rng)
    mask = np.asarray(mask_image, dtype=np.float32) / 255.0
    hue = _object_hue(class_name, rng)
    if domain == "photo":
        pixels = _photo(mask, canvas, rng, hue)
    elif domain == "sketch":
        pixels = _sketch(mask_image, canvas, rng)
    elif domain == "clipart":
        pixels = _clipart(mask_image, mask, canvas, rng, hue)
    elif domain == "painting":
        pixels = _painting(mask, canvas, rng, hue)
    else:
        raise ValueError(f"unknown synthetic domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    return image.resize((image_size, image_size), Image.LANCZOS)


def dataset_folder(cache_dir: Path, seed: int, image_size: int) -> Path:
    return Path(cache_dir) / "synthetic" / f"{VERSION}-seed{seed}-{image_size}px"


def ensure_synthetic(cache_dir: Path, seed: int = 0, image_size: int = 32) -> Path:
    """Generate the dataset once (deterministic in seed and size) and return its root; a finished copy is reused.
    Several processes starting together generate it once (datasets/cache.py)."""
    root = dataset_folder(cache_dir, seed, image_size)
    return build_once(root, lambda target: _generate(target, seed, image_size), lambda target: target,
                      what=f"the synthetic dataset ({image_size} px, seed {seed})",
                      ready=lambda target: (target / "COMPLETE").is_file())


def _generate(root: Path, seed: int, image_size: int) -> None:
    """Draw every image into a staging folder beside `root`, then rename it into place (a crash leaves only the
    staging folder, which the next build ignores)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
    try:
        for domain_index, domain in enumerate(DOMAINS):
            for class_index, class_name in enumerate(CLASSES):
                rng = np.random.default_rng([seed, domain_index, class_index])
                folder = staging / domain / class_name
                folder.mkdir(parents=True)
                for n in range(int(rng.integers(IMAGES_PER_CLASS[0], IMAGES_PER_CLASS[1] + 1))):
                    render(class_name, domain, image_size, rng).save(folder / f"{n:03d}.png")
        (staging / "COMPLETE").write_text(f"synthetic {VERSION} seed={seed} size={image_size}\n")
        if root.exists():                      # an incomplete folder of a build that died before this lock scheme
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
