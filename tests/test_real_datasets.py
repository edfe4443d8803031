"""The real datasets' adapters, data check and suites, on tiny generated trees in the real layouts (no real data, no
network): Office-31, Office-Home and DomainNet-7, as folders (ours and the archives') and as image lists."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmark import cli, suites
from datasets import real
from datasets.base import DataError
from datasets.registry import get_dataset, load_domain
from datasets.splits import build_split
from methods import method_names

from . import transparent_images

REPO = Path(__file__).resolve().parent.parent
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def _image(path: Path, index: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), COLOURS[index % len(COLOURS)]).save(path)
    return path


def make_tree(dataset_dir: Path, domain_folders: dict[str, str], classes, per_class: int = 2, ext: str = ".jpg",
              images_level: bool = False) -> dict[str, list[Path]]:
    """`dataset_dir/<domain folder>[/images]/<class>/<n><ext>` for the given classes; returns domain -> images."""
    written = {}
    for domain, folder in domain_folders.items():
        base = dataset_dir / folder / ("images" if images_level else "")
        written[domain] = [_image(base / name / f"{n:05d}{ext}", c + n)
                           for c, name in enumerate(classes) for n in range(per_class)]
    return written


def full_office31(root: Path, images_level: bool = False) -> Path:
    folder = root / "office31"
    make_tree(folder, {d: d for d in real.OFFICE31.domains}, real.OFFICE31_CLASSES, per_class=1,
              images_level=images_level)
    return folder


def full_office_home_archive(root: Path) -> Path:
    folder = root / "OfficeHomeDataset_10072016"
    make_tree(folder, {"Art": "Art", "Clipart": "Clipart", "Product": "Product", "Real_World": "Real World"},
              real.OFFICE_HOME.classes, per_class=1)
    return folder


def full_domainnet(root: Path, extra_classes=("aircraft_carrier", "shark")) -> Path:
    folder = root / "domainnet"
    for domain in real.DOMAINNET.domains:
        ext = ".png" if domain == "quickdraw" else ".jpg"
        make_tree(folder, {domain: domain}, real.DOMAINNET7_CLASSES + tuple(extra_classes), per_class=2, ext=ext)
    return folder


# --- class maps ------------------------------------------------------------------

def test_class_maps_are_the_full_published_lists():
    office31 = get_dataset("office31").class_map
    assert len(office31) == 31 and office31.names[0] == "back_pack" and office31.names[-1] == "trash_can"
    office_home = get_dataset("office_home").class_map
    assert len(office_home) == 65 and len(set(real.OFFICE_HOME_LIST_ORDER)) == 65
    # code-point order: TV before Table, ToothBrush before Toys
    assert office_home.id("TV") < office_home.id("Table") and office_home.id("ToothBrush") < office_home.id("Toys")
    assert office_home.names[0] == "Alarm_Clock" and office_home.names[-1] == "Webcam"
    domainnet = get_dataset("domainnet").class_map
    assert domainnet.names == ("bird", "feather", "teapot", "tiger", "whale", "windmill", "zebra")
    assert get_dataset("domainnet").domains == ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")


def test_office_home_partial_and_open_splits_on_the_real_class_list():
    names = get_dataset("office_home").class_map.names
    partial = build_split("partial", names, split_seed=2024)
    assert len(partial.query_classes) == 32 and len(partial.retrieval_classes) == 65
    assert set(partial.query_classes) < set(names)
    opened = build_split("open", names, split_seed=2024)
    assert len(opened.query_classes) == 65 and len(opened.retrieval_classes) == 32
    assert len(opened.private_query_classes) == 33
    assert len(build_split("partial", get_dataset("office31").class_map.names, 2025).query_classes) == 15
    assert len(build_split("open", get_dataset("domainnet").class_map.names, 2026).retrieval_classes) == 3


# --- domain discovery and loading ------------------------------------------------------------------

@pytest.mark.parametrize("images_level", [False, True])
def test_office31_both_layouts_load_with_global_labels(tmp_path, images_level):
    folder = tmp_path / "office31"
    make_tree(folder, {"dslr": "dslr"}, ["trash_can", "back_pack"], per_class=2, images_level=images_level)
    info = get_dataset("office31")
    domain = load_domain(info, "dslr", tmp_path, tmp_path / "cache")
    assert len(domain) == 4 and domain.images.shape == (4, 3, 224, 224) and domain.images.dtype == torch.uint8
    assert sorted(set(domain.labels.tolist())) == [0, 30]          # back_pack = 0, trash_can = 30 of 31
    assert all(("images" in Path(p).parts) == images_level for p in domain.paths)


def test_office_home_archive_with_real_world_space(tmp_path):
    folder = tmp_path / "OfficeHomeDataset_10072016"
    make_tree(folder, {"Real_World": "Real World", "Art": "Art"}, ["Webcam", "Alarm_Clock", "TV"], per_class=1)
    info = get_dataset("office_home")
    assert info.locate(tmp_path, tmp_path / "cache") == folder
    domain = load_domain(info, "Real_World", tmp_path, tmp_path / "cache")
    assert sorted(domain.labels.tolist()) == [0, info.class_map.id("TV"), 64]
    assert all("Real World" in p for p in domain.paths)


def test_domainnet_reads_only_the_seven_classes_from_full_folders(tmp_path):
    full_domainnet(tmp_path)
    info = get_dataset("domainnet")
    domain = load_domain(info, "quickdraw", tmp_path, tmp_path / "cache")
    assert len(domain) == 14 and sorted(set(domain.labels.tolist())) == list(range(7))
    assert all(p.endswith(".png") and "shark" not in p for p in domain.paths)


def test_image_lists_in_library_label_order(tmp_path):
    # Office-Home lists number classes in the library's order (Drill = 0), not ours (sorted: Alarm_Clock = 0).
    folder = tmp_path / "office_home"
    make_tree(folder, {"Art": "Art"}, ["Drill", "Marker"], per_class=1)
    (folder / "image_list").mkdir()
    (folder / "image_list" / "Clipart.txt").write_text("Art/Drill/00000.jpg 0\nArt/Marker/00000.jpg 64\n")
    info = get_dataset("office_home")
    from_list = load_domain(info, "Clipart", tmp_path, tmp_path / "cache")    # no Clipart folder: the list is read
    assert from_list.labels.tolist() == [info.class_map.id("Drill"), info.class_map.id("Marker")]
    # DomainNet's official lists: labels 0..344; only the 7 classes' lines are kept, train and test together.
    dn = tmp_path / "domainnet"
    make_tree(dn, {"sketch": "sketch"}, ["bird", "zebra", "aircraft_carrier"], per_class=1)
    (dn / "image_list").mkdir()
    (dn / "image_list" / "sketch_train.txt").write_text(
        "sketch/bird/00000.jpg 31\nsketch/aircraft_carrier/00000.jpg 0\n")
    (dn / "image_list" / "sketch_test.txt").write_text("sketch/zebra/00000.jpg 343\n")
    (dn / "sketch").rename(dn / "sketch_images")
    for name in ("sketch_train.txt", "sketch_test.txt"):
        listing = dn / "image_list" / name
        listing.write_text(listing.read_text().replace("sketch/", "sketch_images/"))
    domain = load_domain(get_dataset("domainnet"), "sketch", tmp_path, tmp_path / "cache")
    assert domain.labels.tolist() == [0, 6]


def test_absent_dataset_message_names_layout_and_source(tmp_path):
    with pytest.raises(DataError) as error:
        load_domain(get_dataset("office_home"), "Art", tmp_path, tmp_path / "cache")
    message = str(error.value)
    assert "Office-Home dataset was not found" in message
    assert "DIR/office_home/{Art,Clipart,Product,Real_World}/<class>/<image>" in message
    assert "hemanthdv.org" in message


# --- the data check ------------------------------------------------------------------

def _check(tmp_path, capsys):
    code = cli.main(["--check-data", "--data-root", str(tmp_path)])
    return code, capsys.readouterr().out


def test_check_data_complete_trees_exit_zero(tmp_path, capsys):
    full_office31(tmp_path, images_level=True)
    full_office_home_archive(tmp_path)
    full_domainnet(tmp_path)
    code, out = _check(tmp_path, capsys)
    assert code == 0, out
    assert "amazon" in out and "31 images (published 2817: 2786 fewer)" in out
    assert "Real_World" in out and "65 images (published 4357" in out
    assert "quickdraw" in out and "14 images (published 3500" in out
    assert "2 other class folder(s) ignored" in out
    assert "3 dataset(s) found, 3 complete" in out


def test_strict_check_makes_a_count_that_differs_from_the_published_one_a_problem(tmp_path, capsys):
    full_office31(tmp_path, images_level=True)
    full_domainnet(tmp_path)
    assert cli.main(["--check-data", "--strict", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "problem: 31 images where the published dataset has 2817 (--strict)" in out
    assert "14 images where the published dataset has 3500 (--strict)" in out            # quickdraw
    assert "against an estimated" in out and "not checked (--strict)" in out              # real: an estimate
    assert "the uncleaned release has 1964" in out                                        # clipart's note kept
    # a run with --strict stops before training on the same finding
    common = ["--suite", "office31_closed", "--methods", "pretrained", "--seeds", "2024", "--pairs", "A-D",
              "--data-root", str(tmp_path), "--output", str(tmp_path / "out")]
    assert cli.main(common + ["--strict"]) == 2
    assert "not usable; nothing was trained" in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()


def test_check_data_reports_missing_domain_empty_class_and_corrupt_jpeg(tmp_path, capsys):
    folder = full_office31(tmp_path)
    import shutil
    shutil.rmtree(folder / "webcam")
    for image in (folder / "dslr" / "ruler").iterdir():
        image.unlink()
    shutil.rmtree(folder / "amazon" / "mug")
    corrupt = folder / "amazon" / "pen" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = folder / "amazon" / "bike" / "cut.jpg"
    whole = (folder / "amazon" / "bike" / "00000.jpg").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    code, out = _check(tmp_path, capsys)
    assert code == 1
    assert "webcam" in out and "MISSING" in out and str(folder / "webcam") in out
    assert "1 empty class folder(s): ruler" in out
    assert "1 missing class folder(s): mug" in out
    assert f"unreadable image: {corrupt}" in out
    assert f"unreadable image: {truncated}" in out
    assert "incomplete: office31" in out
    assert "office_home: ABSENT" in out and "domainnet: ABSENT" in out


def test_check_data_absent_datasets(tmp_path, capsys):
    code, out = _check(tmp_path, capsys)
    assert code == 1                                            # nothing found under the root is not a success
    assert "the Office-31 dataset was not found" in out
    assert "DIR/office31/{amazon,dslr,webcam}/<class>/<image>" in out
    assert "faculty.cc.gatech.edu" in out and "ai.bu.edu/M3SDA" in out
    assert "DIR/domainnet/{clipart,infograph,painting,quickdraw,real,sketch}/<class>/<image>" in out


def test_check_data_foreign_folder_is_a_problem_except_for_domainnet(tmp_path, capsys):
    folder = full_office31(tmp_path)
    _image(folder / "amazon" / "cat" / "1.jpg")
    code, out = _check(tmp_path, capsys)
    assert code == 1 and "folder(s) that are not Office-31 classes: cat" in out


def test_a_run_on_missing_or_broken_data_stops_before_training(tmp_path, capsys):
    out_dir = tmp_path / "out"
    common = ["--suite", "office31_closed", "--output", str(out_dir), "--methods", "pretrained", "--seeds", "2024"]
    assert cli.main(common + ["--data-root", str(tmp_path)]) == 2
    assert "the Office-31 dataset was not found" in capsys.readouterr().err
    folder = full_office31(tmp_path)
    for image in (folder / "dslr" / "ruler").iterdir():
        image.unlink()
    assert cli.main(common + ["--data-root", str(tmp_path), "--pairs", "A-D"]) == 2
    err = capsys.readouterr().err
    assert "not usable; nothing was trained" in err and "empty class folder(s): ruler" in err
    assert not (out_dir / "runs").exists()
    # complete data: the missing piece is then the pretrained weights, named with the file
    _image(folder / "dslr" / "ruler" / "1.jpg")
    assert cli.main(common + ["--data-root", str(tmp_path), "--pairs", "A-D"]) == 2
    err = capsys.readouterr().err
    assert "moco_v2_800ep_pretrain.pth.tar" in err and "nothing was trained" in err
    assert not (out_dir / "runs").exists()


def test_a_dry_run_says_whether_the_plan_can_run(tmp_path, capsys):
    # The census first, then what is missing and where it was looked for; exit 2. Nothing is written.
    common = ["--suite", "office31_closed", "--output", str(tmp_path / "out"), "--methods", "pretrained", "--seeds",
              "2024", "--pairs", "A-D", "--dry-run"]
    assert cli.main(common) == 2
    out = capsys.readouterr().out
    assert out.index("1 runs planned") < out.index("cannot start as things are")
    assert "data: suite needs the office31 dataset: pass --data-root DIR" in out
    assert cli.main(common + ["--data-root", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "data: the Office-31 dataset was not found" in out and str(tmp_path) in out
    assert "weights: the pretrained weights moco_v2_800ep_pretrain.pth.tar" in out and "looked at:" in out
    full_office31(tmp_path)
    assert cli.main(common + ["--data-root", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "data:" not in out and "weights: the pretrained weights" in out
    assert not (tmp_path / "out").exists()


# --- suites ------------------------------------------------------------------

def _planned(capsys, *args) -> str:
    # No data and no weights here: the dry run prints the plan, then says it cannot start (exit 2).
    assert cli.main(list(args) + ["--dry-run"]) == 2
    out = capsys.readouterr().out
    assert "cannot start as things are" in out
    return out


@pytest.mark.parametrize("dataset, n_pairs", [("office31", 6), ("office_home", 12), ("domainnet", 5)])
@pytest.mark.parametrize("setting", ["closed", "partial", "open"])
def test_paper_suites_plan_every_method_pair_and_seed(tmp_path, capsys, dataset, n_pairs, setting):
    suite = suites.get_suite(f"{dataset}_{setting}")
    assert suite.settings == (setting,) and suite.seeds == (2024, 2025, 2026)
    n_methods = len(method_names(include_variants=False))
    out = _planned(capsys, "--suite", suite.name, "--output", str(tmp_path))
    expected = n_pairs * n_methods * 3
    assert f"{expected} runs planned: 0 done, 0 failed, 0 incomplete, {expected} not started" in out


@pytest.mark.parametrize("dataset, n_pairs", [("office31", 6), ("office_home", 12), ("domainnet", 5)])
def test_ablation_suites(tmp_path, capsys, dataset, n_pairs):
    suite = suites.get_suite(f"{dataset}_ablation")
    assert suite.settings == ("open",)
    assert suite.methods == ("pretrained", "uem_no_pm", "uem_no_sel", "uem_no_spda", "uem_no_sn2m", "uem")
    out = _planned(capsys, "--suite", suite.name, "--output", str(tmp_path))
    assert f"{n_pairs * 6 * 3} runs planned" in out


def test_domainnet_pairs_are_the_papers():
    info = get_dataset("domainnet")
    labels = [info.pair_label(q, r) for q, r in suites.get_suite("domainnet_open").pairs]
    assert labels == ["Qu→Cl", "Cl→Pa", "Pa→In", "In→Sk", "Sk→Re"]
    office31 = get_dataset("office31")
    assert [office31.pair_label(q, r) for q, r in suites.get_suite("office31_closed").pairs] == [
        "A→D", "A→W", "D→A", "D→W", "W→A", "W→D"]


@pytest.mark.parametrize("suite, pairs, expected", [
    ("office31_partial", ["A-D", "W->A"], [("amazon", "dslr"), ("webcam", "amazon")]),
    ("office_home_open", ["A-C", "Rw-Pr", "Ar2Cl", "R→A"],
     [("Art", "Clipart"), ("Real_World", "Product"), ("Art", "Clipart"), ("Real_World", "Art")]),
    ("domainnet_closed", ["Qu-Cl", "sk-re", "In>Sk"], [("quickdraw", "clipart"), ("sketch", "real"),
                                                      ("infograph", "sketch")]),
])
def test_pairs_accept_the_papers_short_names(suite, pairs, expected):
    assert suites.select_pairs(suites.get_suite(suite), pairs) == expected


def test_pairs_cli_with_short_names(tmp_path, capsys):
    out = _planned(capsys, "--suite", "office_home_partial", "--output", str(tmp_path), "--pairs", "R-C", "Pr-Ar",
                   "--methods", "uem")
    assert "6 runs planned" in out and "Real_World->Clipart" in out and "Product->Art" in out
    assert cli.main(["--suite", "office31_open", "--output", str(tmp_path), "--pairs", "A-Q", "--dry-run"]) == 2
    assert "has no domain 'Q'" in capsys.readouterr().err


@pytest.mark.slow
def test_check_data_cli_subprocess(tmp_path):
    full_office31(tmp_path)
    result = subprocess.run([sys.executable, str(REPO / "run_benchmark.py"), "--check-data", "--data-root",
                             str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-> office31: complete" in result.stdout and "Traceback" not in result.stderr


def test_check_data_on_image_lists(tmp_path, capsys):
    folder = tmp_path / "office31"
    make_tree(folder, {"amazon": "amazon"}, real.OFFICE31_CLASSES, per_class=1)
    (folder / "image_list").mkdir()
    lines = [f"amazon/{name}/00000.jpg {i}" for i, name in enumerate(real.OFFICE31_CLASSES[:-1])]
    lines.append("amazon/trash_can/gone.jpg 30")
    for domain in ("dslr", "webcam"):
        (folder / "image_list" / f"{domain}.txt").write_text("\n".join(lines) + "\n")
    (folder / "image_list" / "webcam.txt").write_text("\n".join(lines[:-1]) + "\n")
    code, out = _check(tmp_path, capsys)
    assert code == 1
    assert f"1 listed image(s) not found: {str(folder / 'amazon' / 'trash_can' / 'gone.jpg')!r}" in out
    assert "1 class(es) with no image in the list(s): trash_can" in out
    assert str(folder / "image_list" / "dslr.txt") in out


# --- data as users have it ---------------------------------------------------------------------------------------

def litter(domain_folder: Path) -> int:
    """What macOS, Jupyter and NAS boxes leave in a copied dataset: an AppleDouble `._` file beside every image (not
    an image, though it ends in .jpg), .DS_Store, a .ipynb_checkpoints folder with a copy of an image, __MACOSX.
    Returns how many entries were added."""
    added = 0
    for class_dir in [p for p in domain_folder.iterdir() if p.is_dir()]:
        for image in list(class_dir.iterdir()):
            (class_dir / f"._{image.name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
            added += 1
        (class_dir / ".DS_Store").write_bytes(b"Bud1")
        added += 1
    _image(domain_folder / ".ipynb_checkpoints" / "00000-checkpoint.jpg")
    (domain_folder / "__MACOSX").mkdir()
    return added + 2


@pytest.mark.parametrize("dataset", ["office31", "domainnet"])
def test_hidden_and_system_files_are_skipped_with_one_note_for_every_dataset(tmp_path, capsys, dataset):
    folder = full_office31(tmp_path) if dataset == "office31" else full_domainnet(tmp_path, extra_classes=())
    domain = "amazon" if dataset == "office31" else "sketch"
    clean = len(load_domain(get_dataset(dataset), domain, tmp_path, tmp_path / "cache_clean"))
    added = litter(folder / domain)
    code, out = _check(tmp_path, capsys)
    assert code == 0, out                                             # counts as before, nothing unreadable
    assert out.count("hidden or system file(s)/folder(s) skipped") == 1
    assert f"{added} hidden or system file(s)/folder(s) skipped (e.g. ." in out
    assert "unreadable image" not in out and "not Office-31 classes" not in out
    assert len(load_domain(get_dataset(dataset), domain, tmp_path, tmp_path / "cache")) == clean


def test_image_lists_with_a_byte_order_mark_and_crlf_are_read(tmp_path, capsys):
    folder = tmp_path / "office31"
    make_tree(folder, {"amazon": "amazon"}, ["back_pack", "bike"], per_class=1)
    (folder / "image_list").mkdir()
    text = "amazon/back_pack/00000.jpg 0\r\namazon/bike/00000.jpg 1\r\n"
    (folder / "image_list" / "dslr.txt").write_bytes("\ufeff".encode("utf-8") + text.encode("utf-8"))
    domain = load_domain(get_dataset("office31"), "dslr", tmp_path, tmp_path / "cache")
    assert domain.labels.tolist() == [0, 1]
    # A listed path that is not there is shown with repr(): the trailing space a spreadsheet left is visible.
    (folder / "image_list" / "webcam.txt").write_text("amazon/bike/00000.jpg \t1\namazon/bike/gone .jpg 1\n")
    code, out = _check(tmp_path, capsys)
    assert f"1 listed image(s) not found: {str(folder / 'amazon' / 'bike' / 'gone .jpg')!r}" in out


def test_sixteen_bit_pngs_are_scaled_to_eight_bits_not_clipped_to_white(tmp_path):
    from datasets.base import decode_images
    import numpy as np
    path = tmp_path / "depth16.png"
    Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)).save(path)     # 32896 / 257 = 128
    with Image.open(path) as image:
        assert image.mode.startswith("I")                                 # PIL opens it as a 16-bit image
    decoded = decode_images([path], 8)
    assert decoded.unique().tolist() == [128]                             # was 255: white


def test_check_data_counts_the_images_with_transparency(tmp_path, capsys):
    # Office-31's amazon gets the transparent drawing in its 11 transparent forms and an RGBA image with nothing
    # transparent: 11 counted, a note (not a problem); the other domains have none and no note.
    folder = full_office31(tmp_path)
    forms = transparent_images.save_forms(folder / "amazon" / "ruler")
    Image.new("RGBA", (4, 4), (10, 20, 30, 255)).save(folder / "amazon" / "ruler" / "opaque_rgba.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out = _check(tmp_path, capsys)
    assert code == 0, out
    assert [str(w.message) for w in caught] == []
    assert f"{31 + len(forms) + 1} images" in out
    assert out.count("with transparency") == 1
    assert ("note: 11 image(s) with transparency: composited onto white when decoded (the background of the "
            "built-in datasets)") in out
    # and the dataset reads them (at its 224 px) as the one drawing on white
    decoded = load_domain(get_dataset("office31"), "amazon", tmp_path, tmp_path / "cache")
    reference = decoded.images[decoded.paths.index(str(forms["rgb_on_white"]))]
    assert all(torch.equal(decoded.images[decoded.paths.index(str(path))], reference) for path in forms.values())


# --- pretrained weights from local files -------------------------------------------------------------------------

def _moco_checkpoint(net, with_head: bool = True) -> dict:
    """The published MoCo v2 layout: {'state_dict': {'module.encoder_q.<resnet key>', 'module.encoder_q.fc.0/2.*',
    'module.encoder_k.*', 'module.queue'}, ...}."""
    state = {f"module.encoder_q.{k[len('trunk.'):]}": v.clone() for k, v in net.state_dict().items()
             if k.startswith("trunk.")}
    if with_head:
        state.update({f"module.encoder_q.fc.{k[len('head.'):]}": v.clone() for k, v in net.state_dict().items()
                      if k.startswith("head.")})
    state["module.encoder_k.conv1.weight"] = torch.zeros(1)
    state["module.queue"] = torch.zeros(128, 4)
    return {"epoch": 800, "arch": "resnet50", "state_dict": state}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["moco_with_head", "moco_without_head", "torchvision", "dataparallel"])
def test_pretrained_checkpoints_load_into_the_backbone(tmp_path, layout):
    from benchmark.initialisation import build_initial_backbone
    spec = {"arch": "resnet18", "head": "mlp", "embed_dim": 128,
            "init": {"kind": "moco_v2", "file": "weights.pth.tar", "url": "https://example.org/weights.pth.tar"}}
    torch.manual_seed(1)
    source = build_initial_backbone({**spec, "init": {"kind": "random"}}, tmp_path, None, torch.device("cpu"))
    if layout in ("torchvision", "dataparallel"):
        checkpoint = {k[len("trunk."):]: v for k, v in source.state_dict().items() if k.startswith("trunk.")}
        checkpoint["fc.weight"], checkpoint["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
        if layout == "dataparallel":                    # saved from nn.DataParallel(model): every key 'module.'
            checkpoint = {f"module.{k}": v for k, v in checkpoint.items()}
    else:
        checkpoint = _moco_checkpoint(source, with_head=layout == "moco_with_head")
    (tmp_path / "weights").mkdir()
    torch.save(checkpoint, tmp_path / "weights" / "weights.pth.tar")
    torch.manual_seed(2)
    loaded = build_initial_backbone(spec, tmp_path, None, torch.device("cpu"))     # found in <cache>/weights/
    for key, value in source.state_dict().items():
        same = torch.equal(value, loaded.state_dict()[key])
        assert same == (key.startswith("trunk.") or layout == "moco_with_head"), key


def test_missing_or_unfit_weights_are_clear_errors(tmp_path):
    from benchmark.initialisation import build_initial_backbone, load_pretrained, new_backbone
    spec = {"arch": "resnet18", "head": "mlp", "embed_dim": 128,
            "init": {"kind": "moco_v2", "file": "weights.pth.tar", "url": "https://example.org/weights.pth.tar"}}
    with pytest.raises(FileNotFoundError, match=r"weights.pth.tar .* not found .*https://example.org/weights.pth.tar"):
        build_initial_backbone(spec, tmp_path, None, torch.device("cpu"))
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read the pretrained weights"):
        load_pretrained(new_backbone(spec), tmp_path / "broken.pth")
    torch.save({"encoder.conv1.weight": torch.zeros(3), "encoder.bn1.weight": torch.zeros(3)},
               tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not fit the backbone") as refused:
        load_pretrained(new_backbone(spec), tmp_path / "other.pth")
    # the file's own keys beside the expected ones: the prefix 'encoder.' is the problem, and it shows
    assert "['encoder.conv1.weight', 'encoder.bn1.weight']" in str(refused.value)
    assert "a ResNet trunk expects keys like ['bn1.bias'" in str(refused.value)
    import argparse
    torch.save({"state_dict": {"conv1.weight": torch.zeros(3)}, "args": argparse.Namespace(arch="resnet50")},
               tmp_path / "with_args.pth")
    with pytest.raises(ValueError, match=r"holds Python objects besides its weights \(e.g. argparse.Namespace\)"
                                         r".*torch.save\(ckpt.get\('state_dict', ckpt\), 'weights.pth'\)"):
        load_pretrained(new_backbone(spec), tmp_path / "with_args.pth")


@pytest.mark.slow
def test_a_paper_suite_runs_end_to_end_from_a_local_moco_checkpoint(tmp_path, capsys):
    # Office-31 in the archive layout (2 tiny images per class), a MoCo v2 checkpoint made here for ResNet-50, the
    # untrained starting point on one pair and seed: data check, weights, 224-px decoding, evaluation and tables.
    from benchmark.initialisation import new_backbone
    full_office31(tmp_path / "data", images_level=True)
    torch.manual_seed(0)
    checkpoint = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save(_moco_checkpoint(new_backbone(suites.get_suite("office31_closed").backbone)), checkpoint)
    common = ["--suite", "office31_closed", "--methods", "pretrained", "--pairs", "A-D", "--seeds", "2024",
              "--data-root", str(tmp_path / "data"), "--output", str(tmp_path / "out"), "--device", "cpu"]
    assert cli.main(common + ["--pretrained", str(tmp_path / "nope.pth")]) == 2
    err = capsys.readouterr().err
    assert f"--pretrained {tmp_path / 'nope.pth'}: no such file" in err
    assert cli.main(common + ["--pretrained", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "trained 1 run(s)" in out and "| Pretrained (init)" in out and "A→D" in out


@pytest.mark.slow
def test_native_baseline_init_reads_torchvision_weights_from_the_torch_cache(tmp_path, monkeypatch):
    # --baseline-init native: CDS, PCS and CoDA start from torchvision's supervised ResNet-50 (their papers' start),
    # every other method from the suite's MoCo v2 file; each file is looked for before anything trains.
    from benchmark.pipeline import check_initialisation
    from benchmark.errors import UserError
    from benchmark.backbone_specs import SUPERVISED_RESNET50_INIT
    from benchmark.initialisation import new_backbone
    suite = suites.get_suite("office31_closed")
    specs = suites.plan(suite, pairs=["A-D"], seeds=[2024], baseline_init="native")
    kinds = {s.method: s.backbone["init"]["kind"] for s in specs}
    assert {m for m, k in kinds.items() if k == "torchvision"} == {"cds", "pcs", "coda"}
    assert kinds["uem"] == kinds["ucdir"] == "moco_v2"
    default = {s.method: s.run_id for s in suites.plan(suite, pairs=["A-D"], seeds=[2024])}
    assert all((s.run_id == default[s.method]) == (kinds[s.method] == "moco_v2") for s in specs)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    moco = tmp_path / "moco.pth.tar"
    torch.save(_moco_checkpoint(new_backbone(suite.backbone)), moco)
    with pytest.raises(UserError, match=r"resnet50-0676ba61.pth \(torchvision\) .* torch's cache \(.*torch/hub/"
                                        r"checkpoints/\)"):
        check_initialisation(suite, specs, tmp_path / "cache", None, moco)
    trunk = {k[len("trunk."):]: v for k, v in new_backbone(suite.backbone).state_dict().items()
             if k.startswith("trunk.")}
    trunk["fc.weight"], trunk["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / SUPERVISED_RESNET50_INIT["files"][1]   # the legacy name
    cached.parent.mkdir(parents=True)
    torch.save(trunk, cached)
    assert check_initialisation(suite, specs, tmp_path / "cache", None, moco) == moco.resolve()
    # only native-init runs left to do: no MoCo file needed, none returned
    native_only = [s for s in specs if kinds[s.method] == "torchvision"]
    assert check_initialisation(suite, native_only, tmp_path / "cache", None, None) is None


def test_native_baseline_init_needs_a_backbone_with_supervised_weights():
    from benchmark.errors import UserError
    with pytest.raises(UserError, match="no weights for the small_cnn backbone"):
        suites.plan(suites.get_suite("quickstart"), baseline_init="native")
    with pytest.raises(UserError, match="unknown --baseline-init 'other'"):
        suites.plan(suites.get_suite("quickstart"), baseline_init="other")
