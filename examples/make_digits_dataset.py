"""Make a small real two-domain dataset from data that installed packages ship: handwritten digits against printed ones.

    python examples/make_digits_dataset.py examples/digits          # what examples/digits.toml reads

- `handwritten`: scikit-learn's handwritten digits (`sklearn.datasets.load_digits`: 1,797 scans of 8 x 8 pixels
  with 17 grey levels, from the UCI "Optical Recognition of Handwritten Digits" set), dark ink on white, scaled to
  32 px (bilinear: soft and blocky);
- `printed`: the digits "0" to "9" drawn with the TrueType fonts that matplotlib ships (DejaVu Sans / Serif / Mono in
  several weights and slants, STIX, Computer Modern), at random sizes, rotations (up to 15 degrees) and offsets,
  drawn at 4x and downsampled to 32 px (crisp).

Ten classes, the same in both domains; `--per-class` images of each class and domain (default 100; the handwritten
ones drawn without replacement, seeded). Needs scikit-learn and matplotlib (for their data files) and Pillow; writes
<out>/<domain>/<digit>/<n>.png, the folder layout a suite file's `[dataset]` reads.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE, SCALE = 32, 4
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
         "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf",
         "cmb10.ttf")
DIGITS = tuple(str(d) for d in range(10))


def font_files() -> list[Path]:
    """The matplotlib font files of FONTS (an error names the missing ones)."""
    import matplotlib
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    missing = [name for name in FONTS if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"error: matplotlib's font folder {folder} lacks {', '.join(missing)}")
    return [folder / name for name in FONTS]


def handwritten(per_class: int, rng: np.random.Generator) -> dict[str, list[Image.Image]]:
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = {}
    for digit in range(10):
        rows = np.flatnonzero(digits.target == digit)
        if per_class > len(rows):
            raise SystemExit(f"error: --per-class {per_class}: scikit-learn's digits hold {len(rows)} of digit {digit}")
        images[str(digit)] = [
            Image.fromarray((255 * (1 - digits.images[i] / 16)).astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR)
            for i in rng.choice(rows, size=per_class, replace=False)]
    return images


def printed_digit(digit: str, font: Path, rng: np.random.Generator) -> Image.Image:
    canvas = SIZE * SCALE
    picture = Image.new("L", (canvas, canvas), 255)
    draw = ImageDraw.Draw(picture)
    typeface = ImageFont.truetype(str(font), int(rng.integers(int(0.7 * canvas), canvas)))
    left, top, right, bottom = draw.textbbox((0, 0), digit, font=typeface)
    offset = rng.uniform(-0.08, 0.08, size=2) * canvas
    draw.text(((canvas - (right - left)) / 2 - left + offset[0], (canvas - (bottom - top)) / 2 - top + offset[1]),
              digit, fill=0, font=typeface)
    picture = picture.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR, fillcolor=255)
    return picture.filter(ImageFilter.GaussianBlur(SCALE / 4)).resize((SIZE, SIZE), Image.LANCZOS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the dataset folder to write (the suite file's dataset root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=100, help="images per class and domain (at most 174)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    fonts = font_files()
    domains = {"handwritten": handwritten(args.per_class, rng),
               "printed": {digit: [printed_digit(digit, fonts[int(rng.integers(len(fonts)))], rng)
                                   for _ in range(args.per_class)] for digit in DIGITS}}
    for domain, classes in domains.items():
        for digit, images in classes.items():
            folder = args.out / domain / digit
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                image.convert("RGB").save(folder / f"{i:03d}.png")
    print(f"wrote {2 * 10 * args.per_class} images under {args.out}")


if __name__ == "__main__":
    main()
