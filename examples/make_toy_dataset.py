"""Make a small folder dataset, as a user brings one: <out>/<domain>/<class>/<image>.png, three domains of the same
six shapes (photo: a coloured shape on a noisy background; drawing: its outline on paper; negative: a pale shape
on a dark ground), 24 images of 32 px per class and domain.

    python examples/make_toy_dataset.py examples/toys          # what examples/toys.toml reads
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("bar", "circle", "cross", "ring", "square", "triangle")
DOMAINS = ("photo", "drawing", "negative")
SIZE, SCALE, PER_CLASS = 32, 4, 24


def shape(draw: ImageDraw.ImageDraw, name: str, centre, radius: float, fill, outline, width: int) -> None:
    x, y = centre
    box = [x - radius, y - radius, x + radius, y + radius]
    if name == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    elif name == "ring":
        draw.ellipse(box, fill=None, outline=fill if fill is not None else outline, width=max(width, int(radius / 2)))
    elif name == "square":
        draw.rectangle(box, fill=fill, outline=outline, width=width)
    elif name == "triangle":
        draw.polygon([(x, y - radius), (x + radius, y + radius), (x - radius, y + radius)], fill=fill,
                     outline=outline, width=width)
    elif name == "cross":
        arm = radius / 3
        draw.polygon([(x - arm, y - radius), (x + arm, y - radius), (x + arm, y - arm), (x + radius, y - arm),
                      (x + radius, y + arm), (x + arm, y + arm), (x + arm, y + radius), (x - arm, y + radius),
                      (x - arm, y + arm), (x - radius, y + arm), (x - radius, y - arm), (x - arm, y - arm)],
                     fill=fill, outline=outline, width=width)
    else:                                                    # bar
        draw.rectangle([x - radius, y - radius / 3, x + radius, y + radius / 3], fill=fill, outline=outline,
                       width=width)


def image(name: str, domain: str, rng: np.random.Generator) -> Image.Image:
    canvas = SIZE * SCALE
    centre = rng.uniform(0.35, 0.65, size=2) * canvas
    radius = rng.uniform(0.22, 0.34) * canvas
    if domain == "photo":
        background = (rng.normal(0.55, 0.12, size=(canvas // 8, canvas // 8, 3)).clip(0, 1) * 255).astype(np.uint8)
        picture = Image.fromarray(background).resize((canvas, canvas), Image.BILINEAR)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        shape(ImageDraw.Draw(picture), name, centre, radius, colour, None, 1)
    elif domain == "drawing":
        picture = Image.new("RGB", (canvas, canvas), (245, 242, 232))
        shape(ImageDraw.Draw(picture), name, centre, radius, None, (30, 30, 30), SCALE * 2)
    else:                                                    # negative
        picture = Image.new("RGB", (canvas, canvas), tuple(int(c) for c in rng.integers(0, 60, size=3)))
        shape(ImageDraw.Draw(picture), name, centre, radius, (230, 230, 210), None, 1)
    picture = picture.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR, fillcolor=picture.getpixel((0, 0)))
    return picture.filter(ImageFilter.GaussianBlur(SCALE / 3)).resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the dataset folder to write (the suite file's dataset root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=PER_CLASS, help="images per class and domain")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for domain in DOMAINS:
        for name in CLASSES:
            folder = args.out / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(args.per_class):
                image(name, domain, rng).save(folder / f"{name}_{i:03d}.png")
    print(f"wrote {len(DOMAINS) * len(CLASSES) * args.per_class} images under {args.out}")


if __name__ == "__main__":
    main()
