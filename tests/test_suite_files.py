"""Suites as TOML files with the user's own folder dataset and methods (benchmark/suite_files.py): docs/extending.md's
worked example end to end, made outside the repository, with --jobs 2 and then --report --summary; every suite-file
error exits 2 with its message and writes nothing."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import cli

from . import transparent_images

REPO = Path(__file__).resolve().parent.parent

@pytest.mark.slow
def test_the_documented_suite_runs_with_two_workers_and_reaches_the_summary(toys, tmp_path, capsys, clean_registries):
    output = tmp_path / "results"
    assert cli.main(["--suite", str(toys), "--output", str(output), "--jobs", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "12 runs planned" in out and "trained 12 run(s)" in out and "0 failed" in out
    assert "Partial retrieval on toys (toys_partial)" in out.replace("\\_", "_")
    assert "Ph→Dr" in out and "Ng→Ph" in out and "| MyMethod" in out and "| CDS" in out
    # the summary as a new process, as docs/extending.md types it: the suite file is read again
    summary = subprocess.run([sys.executable, str(REPO / "run_benchmark.py"), "--suite", str(toys), "--output",
                              str(output), "--report", "--summary"], capture_output=True, text=True, timeout=300,
                             check=True).stdout
    assert "toys partial" in summary and "| MyMethod" in summary
    # the dataset's three domains, its class map from the folders
    from datasets.registry import DATASETS
    assert DATASETS["toys"].domains == ("drawing", "negative", "photo")
    assert DATASETS["toys"].class_map.names == ("bar", "circle", "cross", "ring", "square", "triangle")


@pytest.mark.slow
@pytest.mark.parametrize("edit, message", [
    (lambda t: 'colour = "blue"\n' + t, "unknown key(s) 'colour'"),
    (lambda t: t.replace("seeds = [1, 2]", 'seeds = "1, 2"'), "key 'seeds' = '1, 2': expected a list of integers"),
    (lambda t: t.replace('root = "toys"', 'root = "no_such_folder"'),
     "key 'dataset.root' = 'no_such_folder': expected a folder holding <domain>/<class>/<image>"),
    (lambda t: t.replace('["negative", "photo"]', '["negative", "painting"]'),
     "key 'pairs' = ['negative', 'painting']: dataset 'toys' has no domain 'painting'; its domains are: drawing (Dr), "
     "negative (Ng), photo (Ph)"),
    (lambda t: t.replace('methods = ["pretrained", "cds", "mymethod"]', 'methods = ["pretrained", "cds", "cds"]'),
     "key 'methods' = ['pretrained', 'cds', 'cds']: expected a list of method names, each once (repeated: cds)"),
    (lambda t: t.replace('plugins = ["my_method.py"]', 'plugins = ["missing.py"]'), "no such file"),
    (lambda t: t.replace("[simclr]\nepochs = 20", "[simclr]\nepochs = 20\nspeed = 3"), "key 'simclr'"),
    (lambda t: t.replace('name = "toys_partial"', 'name = "quickstart"'), "a name no other suite has"),
    (lambda t: t.replace('root = "toys"', 'root = "toys"\nbackground = "bluish"'),
     "key 'dataset.background' = 'bluish': expected a colour name (\"white\", \"black\", or another CSS colour name), "
     "\"#rrggbb\", or [r, g, b] with integers 0..255"),
    (lambda t: t.replace('root = "toys"', 'root = "toys"\nbackground = [0, 0, 300]'),
     "key 'dataset.background' = [0, 0, 300]: expected a colour name"),
    (lambda t: t.replace('root = "toys"', 'root = "toys"\nbackground = "#ff000080"'),     # not opaque
     "key 'dataset.background' = '#ff000080': expected a colour name"),
    (lambda t: t.replace('root = "toys"', 'root = "toys"\nbackground = 0'), "key 'dataset.background' = 0"),
])
def test_every_suite_file_error_exits_2_and_writes_nothing(toys, tmp_path, capsys, clean_registries, edit, message):
    toys.write_text(edit(toys.read_text()))
    output = tmp_path / "results"
    assert cli.main(["--suite", str(toys), "--output", str(output), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(toys) in err and message in err, err
    assert not output.exists()


def test_the_docs_show_the_example_suite_file_and_commands():
    from .conftest import EXAMPLES
    page = (EXAMPLES.parent / "docs" / "extending.md").read_text()
    section = page.split("## Adding a dataset and writing a suite", 1)[1].split("\n## ", 1)[0]
    shown = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    example = (EXAMPLES / "toys.toml").read_text().split("\n", 3)[3]     # after its three lines of comment
    assert shown == example
    for command in ("python examples/make_toy_dataset.py examples/toys",
                    "python run_benchmark.py --suite examples/toys.toml --jobs 2",
                    "python run_benchmark.py --suite examples/toys.toml --report --summary"):
        assert command in section


def test_the_built_in_suites_are_files_that_give_the_paper_s_protocol():
    from benchmark.backbone_specs import PAPER_BACKBONE, QUICKSTART_BACKBONE
    from benchmark.suites import BUILTIN_SUITES, SUITES
    names = sorted(path.stem for path in BUILTIN_SUITES.glob("*.toml"))
    assert names == sorted(name for name in SUITES if not name.startswith("test_"))
    assert len(names) == 14 + 2 * 9             # with the DINOv2 and CLIP companions of the 9 paper suites
    assert SUITES["quickstart"].backbone == QUICKSTART_BACKBONE            # the same init, the same cached backbone
    assert SUITES["quickstart_ablation"].methods == ("pretrained", "uem_no_pm", "uem_no_sel", "uem_no_spda",
                                                      "uem_no_sn2m", "uem")
    for dataset, pairs, ks in (("office31", 6, (1, 5, 15)), ("office_home", 12, (1, 5, 15)),
                               ("domainnet", 5, (50, 100, 200))):
        for setting in ("closed", "partial", "open", "ablation"):
            suite = SUITES[f"{dataset}_{setting}"]
            assert suite.backbone == PAPER_BACKBONE and len(suite.pairs) == pairs and suite.ks == ks
            assert suite.seeds == (2024, 2025, 2026)
    assert SUITES["domainnet_open"].pairs[0] == ("quickdraw", "clipart")


def test_check_data_reports_a_folder_dataset_and_its_problems(toys, capsys, clean_registries):
    assert cli.main(["--check-data", "--suite", str(toys)]) == 0
    out = capsys.readouterr().out
    assert "toys (a folder dataset)" in out and "photo       (Ph)    144 images in 6 class folders  ok" in out
    assert "-> toys: usable" in out
    photo = toys.parent / "toys" / "photo"
    (photo / "ring" / "ring_000.png").write_bytes(b"not a png")
    (photo / "star").mkdir()                                     # an empty class folder: a class of no image
    assert cli.main(["--check-data", "--suite", str(toys)]) == 1
    out = capsys.readouterr().out
    assert "unreadable image" in out and "ring_000.png" in out and "empty class folder(s) star" in out
    assert "-> toys: 2 problem(s)" in out


def test_a_folder_dataset_s_background_is_part_of_its_runs_identity_and_its_pixels(toys, tmp_path, capsys,
                                                                                     clean_registries):
    from benchmark.spec import load_split_domains
    from benchmark.suites import SUITES, load_suite_file, plan
    # White, the default, adds nothing to a run's identity: the run ids from before the background existed (commit
    # d3840e4 with its PROTOCOL_VERSION set to today's 4) are the same, for a folder dataset and a built-in one
    # (UEM's id is today's: issue 23 gave UEM other hyper-parameters, k_rule and the K range, since d3840e4).
    white = plan(load_suite_file(toys), methods=["pretrained", "cds"], pairs=["Ph-Dr"], seeds=[1])
    assert [s.run_id for s in white] == ["1d74c0a8797e", "45186a937e39"] and white[0].extra == {}
    office31 = plan(SUITES["office31_closed"], methods=["pretrained", "uem"], pairs=["A-D"], seeds=[2024])
    assert [s.run_id for s in office31] == ["3f6e3bec6e2e", "af69a727efde"]
    # The same dataset name with another background, from another file: refused
    other = tmp_path / "toys_black.toml"
    other.write_text(toys.read_text().replace('name = "toys_partial"', 'name = "toys_black"')
                     .replace('root = "toys"', 'root = "toys"\nbackground = "black"'))
    assert cli.main(["--suite", str(other), "--dry-run"]) == 2
    assert "key 'dataset.name' = 'toys': expected a name no other dataset has" in capsys.readouterr().err
    # A black background: in the spec (another run id than the same spec on white) and in the SimCLR init's spec
    other.write_text(other.read_text().replace('name = "toys"', 'name = "toys_on_black"'))
    black = plan(load_suite_file(other), methods=["pretrained", "cds"], pairs=["Ph-Dr"], seeds=[1])
    assert all(s.extra == {"background": [0, 0, 0]} and s.background == (0, 0, 0) for s in black)
    assert black[0].run_id != dataclasses.replace(black[0], extra={}).run_id
    assert black[0].backbone["init"]["background"] == [0, 0, 0] and "background" not in white[0].backbone["init"]
    # --check-data counts the transparent images and names the background; the run reads them on black
    drawing = toys.parent / "toys" / "photo" / black[0].query_classes[0] / "transparent.png"
    transparent_images.save_forms(tmp_path / "forms")["rgba"].replace(drawing)
    assert cli.main(["--check-data", "--suite", str(other)]) == 0
    assert ("photo       (Ph)    145 images in 6 class folders  ok\n      note: 1 image(s) with transparency: "
            "composited onto black when decoded (the suite file's [dataset] background)") in capsys.readouterr().out
    query, _ = load_split_domains(black[0], None, tmp_path / "cache")
    image = query.images[query.paths.index(str(drawing))]
    assert image.shape == (3, 32, 32) and image[:, 0, 0].tolist() == [0, 0, 0] and image.max() == 0
    query_white, _ = load_split_domains(dataclasses.replace(black[0], extra={}), None, tmp_path / "cache")
    assert query_white.images[query.paths.index(str(drawing))][:, 0, 0].tolist() == [255, 255, 255]
