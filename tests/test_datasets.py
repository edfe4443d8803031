from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.base import WHITE, DataError, decode_images, inspect_image, read_folder_layout, read_image_list
from datasets.classmap import ClassMap
from datasets.registry import DatasetInfo, decoded_cache_file, get_dataset, load_domain
from datasets import synthetic

from . import transparent_images

CLASSES = ClassMap.from_names(["zebra", "bird", "teapot"])


def _image(path, colour=(255, 0, 0), size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def test_class_ids_are_positions_in_sorted_names():
    assert CLASSES.names == ("bird", "teapot", "zebra")
    assert CLASSES.ids(["zebra", "bird"]) == [2, 0]
    with pytest.raises(KeyError, match="unknown class 'cat'"):
        CLASSES.id("cat")


def test_folder_layout_uses_the_global_map_not_folder_order(tmp_path):
    # The domain holds only two of the three classes: ids must still be the global ones (zebra = 2, not 1).
    _image(tmp_path / "dom" / "zebra" / "1.png")
    _image(tmp_path / "dom" / "bird" / "a.jpg")
    records = read_folder_layout(tmp_path / "dom", CLASSES)
    assert [(r.path.name, r.label) for r in records] == [("a.jpg", 0), ("1.png", 2)]


def test_folder_layout_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="domain folder not found"):
        read_folder_layout(tmp_path / "nowhere", CLASSES)
    _image(tmp_path / "dom" / "cat" / "1.png")
    with pytest.raises(DataError, match="cat are not classes"):
        read_folder_layout(tmp_path / "dom", CLASSES)
    (tmp_path / "empty" / "bird").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        read_folder_layout(tmp_path / "empty", CLASSES)


def test_image_list_with_spaces_in_paths(tmp_path):
    _image(tmp_path / "Real World" / "bird" / "x 1.png")
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\nReal World/bird/x 1.png 0\n\n")
    records = read_image_list(listing, tmp_path, CLASSES)
    assert len(records) == 1 and records[0].label == 0
    assert records[0].path == tmp_path / "Real World" / "bird" / "x 1.png"


@pytest.mark.parametrize("line, message", [("just_a_path.png", "expected 'relative/path label'"),
                                           ("a.png 7", "label 7 outside 0..2")])
def test_image_list_errors_give_file_and_line(tmp_path, line, message):
    listing = tmp_path / "list.txt"
    listing.write_text(f"ok.png 1\n{line}\n")
    with pytest.raises(DataError, match=message) as error:
        read_image_list(listing, tmp_path, CLASSES)
    assert "list.txt:2" in str(error.value)


def test_unreadable_image_is_reported_by_path(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    _image(good, size=4)
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="unreadable image: .*bad.png"):
        decode_images([good, bad], 4)


def test_decode_resizes_to_square_uint8(tmp_path):
    _image(tmp_path / "a.png", colour=(10, 20, 30), size=6)
    images = decode_images([tmp_path / "a.png"], 4)
    assert images.shape == (1, 3, 4, 4) and images.dtype == torch.uint8
    assert images[0, :, 0, 0].tolist() == [10, 20, 30]


def test_synthetic_rendering_is_deterministic():
    for domain in synthetic.DOMAINS:
        first = np.asarray(synthetic.render("star", domain, 32, np.random.default_rng(5)))
        second = np.asarray(synthetic.render("star", domain, 32, np.random.default_rng(5)))
        other = np.asarray(synthetic.render("star", domain, 32, np.random.default_rng(6)))
        assert first.shape == (32, 32, 3)
        assert np.array_equal(first, second) and not np.array_equal(first, other)


def test_synthetic_dataset_layout_and_loading(cache_dir):
    info = get_dataset("synthetic")
    assert len(info.domains) >= 4 and len(info.class_map) >= 12
    for domain in info.domains:
        loaded = load_domain(info, domain, None, cache_dir)
        counts = torch.bincount(loaded.labels, minlength=len(info.class_map))
        assert counts.min() >= synthetic.IMAGES_PER_CLASS[0] and counts.max() <= synthetic.IMAGES_PER_CLASS[1]
        assert loaded.images.shape[1:] == (3, 32, 32)
    # The styles differ: mean colour statistics of the domains are far apart (sketch is near-white paper).
    means = {d: load_domain(info, d, None, cache_dir).images.float().mean().item() for d in info.domains}
    assert means["sketch"] > means["photo"] + 40


def test_domain_short_names_resolve():
    info = get_dataset("synthetic")
    assert info.domain_name("Ph") == "photo" and info.domain_name("SKETCH") == "sketch"
    with pytest.raises(KeyError, match="has no domain 'xx'"):
        info.domain_name("xx")


def test_a_domain_loads_the_same_from_an_image_list(cache_dir, tmp_path):
    info = get_dataset("synthetic")
    from_folder = load_domain(info, "sketch", None, cache_dir)
    root = info.locate(None, cache_dir)
    listing = tmp_path / "sketch.txt"
    listing.write_text("".join(f"{Path(p).relative_to(root)} {int(label)}\n"
                               for p, label in zip(from_folder.paths, from_folder.labels)))
    from_list = load_domain(info, "sketch", None, cache_dir, image_list=listing)
    assert torch.equal(from_list.labels, from_folder.labels) and torch.equal(from_list.images, from_folder.images)


def test_perf_data_script_runs_and_reports_both_pipelines(capsys):
    # A smoke run of `python -m benchmark.perf data` on a few tiny images: both pipelines deliver every full batch.
    from benchmark import perf
    assert perf.main(["data", "--images", "8", "--source-size", "20", "--size", "16", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "PIL per-image pipeline (1 process)" in out and "(8 images)" in out and "ratio cached / PIL" in out


@pytest.mark.slow
def test_perf_train_script_times_the_four_configurations(capsys):
    from benchmark import perf
    assert perf.main(["train", "--arch", "small_cnn", "--size", "16", "--batch", "4", "--steps", "1", "--warmup", "1",
                      "--device", "cpu"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  small_cnn at 16 px, ")]
    labels = [row.split(", ")[1].split("  ")[0] for row in rows]
    assert labels == ["fp32", "bf16", "fp32 + channels_last", "bf16 + channels_last"]     # TF32 is CUDA's only
    assert rows[0].endswith("x1.00 vs the first")


def test_decoded_cache_is_memory_mapped_on_reload(tmp_path, cache_dir, monkeypatch):
    info = get_dataset("synthetic")
    first = load_domain(info, "photo", None, cache_dir)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    again = load_domain(info, "photo", None, cache_dir)
    assert torch.equal(first.images, again.images) and again.images.dtype == torch.uint8
    assert calls and calls[-1].get("mmap") is True and calls[-1].get("weights_only") is True


# --- transparency ---------------------------------------------------------------------------------------------------

def _decode_quietly(paths, size, background=WHITE):
    """decode_images, with every warning it emits."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = decode_images(paths, size, background)
    return images, [str(w.message) for w in caught]


def test_the_forms_are_what_pil_opens_them_as(tmp_path):
    # What the decoder has to handle: PIL opens 16-bit RGBA and grey + alpha PNGs as 8-bit RGBA, a 16-bit grey PNG
    # with a transparent level as I;16 with that level in info; the other forms keep their transparency in info.
    forms = transparent_images.save_forms(tmp_path)
    opened = {}
    for name, path in forms.items():
        with Image.open(path) as image:
            opened[name] = (image.mode, image.info.get("transparency"))
    assert opened == {"rgb_on_white": ("RGB", None), "rgba": ("RGBA", None), "la": ("LA", None),
                      "la_premultiplied": ("La", None),
                      "palette_alpha_bytes": ("P", b"\xff\x00\x00"), "palette_index": ("P", 1), "gif": ("P", 1),
                      "grey_colour_key": ("L", 77), "rgb_colour_key": ("RGB", (0, 255, 0)),
                      "rgba_16bit": ("RGBA", None), "la_16bit": ("RGBA", None),
                      "grey_colour_key_16bit": ("I;16", 1000)}
    # the palette with alpha bytes is the form PIL warns about when converted straight to RGB
    with Image.open(forms["palette_alpha_bytes"]) as image, pytest.warns(UserWarning, match="Transparency expressed"):
        image.convert("RGB")


def test_a_drawing_on_a_transparent_background_decodes_as_the_same_drawing_on_white_in_every_form(tmp_path):
    # Every form of the picture decodes to exactly the uint8 tensor of the RGB reference drawn on white: 0 on the 12
    # pixels of the cross, 255 elsewhere (before: the alpha was dropped, and RGBA, LA, the palette with alpha bytes,
    # the 16-bit forms showed the black left under the transparent pixels: a black square). No warning is printed.
    forms = transparent_images.save_forms(tmp_path)
    names = list(forms)
    images, messages = _decode_quietly([forms[n] for n in names], transparent_images.SIZE)
    assert messages == []
    reference = images[names.index("rgb_on_white")]
    expected = torch.from_numpy(np.where(transparent_images.DRAWING, 0, 255).astype(np.uint8)).expand(3, -1, -1)
    assert torch.equal(reference, expected)
    differing = [n for n, image in zip(names, images) if not torch.equal(image, reference)]
    assert differing == []
    # resized as well (compositing comes before the resize): the same tensor for every form
    resized, _ = _decode_quietly([forms[n] for n in names], 5)
    assert all(torch.equal(image, resized[0]) for image in resized)


@pytest.mark.parametrize("background", [(0, 0, 0), (0, 128, 255)])
def test_the_transparent_area_takes_the_background_given(tmp_path, background):
    forms = transparent_images.save_forms(tmp_path)
    transparent = [n for n in forms if n != "rgb_on_white"]
    images, messages = _decode_quietly([forms[n] for n in transparent], transparent_images.SIZE, background)
    assert messages == []
    drawing = torch.from_numpy(transparent_images.DRAWING)
    expected = torch.tensor(background, dtype=torch.uint8)[:, None, None] * (~drawing)     # black on the cross
    assert [n for n, image in zip(transparent, images) if not torch.equal(image, expected)] == []


def test_partial_transparency_is_composited_by_its_alpha(tmp_path):
    # alpha 128 of 255: out = colour * 128/255 + background * 127/255, rounded. Black over white: 255 * 127/255 = 127;
    # white over black: 255 * 128/255 = 128; black over black 0, white over white 255. Same in every form.
    forms = transparent_images.save_half_transparent(tmp_path)
    on_white, messages = _decode_quietly(list(forms.values()), 2)
    on_black, more = _decode_quietly(list(forms.values()), 2, (0, 0, 0))
    assert messages == more == []
    for image in on_white:
        assert image[:, 0, :].tolist() == [[127, 255]] * 3
    for image in on_black:
        assert image[:, 0, :].tolist() == [[0, 128]] * 3


def test_transparent_pixels_are_found_in_every_form_and_not_in_opaque_alpha(tmp_path):
    forms = transparent_images.save_forms(tmp_path)
    opaque = tmp_path / "opaque_rgba.png"
    Image.new("RGBA", (4, 4), (10, 20, 30, 255)).save(opaque)        # an alpha channel, but nothing transparent
    found = {}
    for name, path in {**forms, "opaque_rgba": opaque}.items():
        reason, found[name] = inspect_image(path)
        assert reason is None
    assert [n for n, transparent in found.items() if not transparent] == ["rgb_on_white", "opaque_rgba"]
    assert inspect_image(tmp_path / "missing.png")[1] is False


def test_images_decoded_before_transparency_was_composited_are_not_reused(tmp_path):
    # A cache entry under the name the decoder gave it before transparency was composited (sha1 of the listing of
    # path, size and mtime alone) holds what that decoder made of a transparent drawing: a black square. It must not
    # be read: the key now carries the decoder's version and the background.
    rgba = tmp_path / "data" / "dom" / "cross" / "rgba.png"                 # a one-image dataset: the RGBA form
    rgba.parent.mkdir(parents=True)
    transparent_images.save_forms(tmp_path / "forms")["rgba"].replace(rgba)
    info = DatasetInfo(name="icons", domains=("dom",), short_names={"dom": "D"},
                       class_map=ClassMap.from_names(["cross"]), image_size=8,
                       locate=lambda data_root, cache_dir: tmp_path / "data")
    cache = tmp_path / "cache"
    stat = rgba.stat()
    old_key = hashlib.sha1(f"{rgba}\t{stat.st_size}\t{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    old_entry = cache / "decoded" / f"icons-dom-8px-{old_key}.pt"
    old_entry.parent.mkdir(parents=True)
    torch.save(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), old_entry)
    white = decoded_cache_file(info, "dom", (str(rgba),), cache, WHITE)
    black = decoded_cache_file(info, "dom", (str(rgba),), cache, (0, 0, 0))
    assert len({old_entry, white, black}) == 3
    loaded = load_domain(info, "dom", None, cache)
    assert loaded.images[0, :, 0, 0].tolist() == [255, 255, 255] and white.is_file()
    # the dataset's background decides; a background passed for one load (the run spec's) overrides it
    black_info = dataclasses.replace(info, background=(0, 0, 0))
    assert load_domain(black_info, "dom", None, cache).images[0, :, 0, 0].tolist() == [0, 0, 0] and black.is_file()
    assert load_domain(black_info, "dom", None, cache, background=WHITE).images[0, :, 0, 0].tolist() == [255] * 3
