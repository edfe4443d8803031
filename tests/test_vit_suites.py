"""ViT backbones in suites: the `backbone` / `init` / `input_size` keys of a suite file, `--backbone` / `--init` over
a suite's own, the paper suites' DINOv2 and CLIP companions, and a suite file with a ViT backbone through a run,
`--report`, the HTML page and `--summary`, where each backbone's zero-shot row sits beside its methods."""
from __future__ import annotations

import pytest

from benchmark import cli
from benchmark.backbone_specs import TOY_VIT

PAPER_SUITES = [f"{dataset}_{setting}" for dataset in ("office31", "office_home", "domainnet")
                for setting in ("closed", "partial", "open")]


def suite_file(folder, name: str, backbone: str, init: str, extra: str = "") -> str:
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\ndataset = "synthetic"\nsettings = ["partial"]\npairs = [["photo", "sketch"]]\n'
                    f'methods = ["pretrained", "cds"]\nseeds = [1]\nbackbone = "{backbone}"\ninit = "{init}"\n'
                    f'{extra}\n[hparams.cds]\nepochs = 1\n')
    return str(path)


def test_a_suite_file_names_a_vit_backbone_and_its_init(tmp_path, clean_registries):
    from benchmark.suites import load_suite_file
    suite = load_suite_file(suite_file(tmp_path, "dino_toy", "vit_base_patch14_dinov2", "dinov2",
                                       "input_size = 518"))
    assert suite.backbone["arch"] == "vit_base_patch14_dinov2" and suite.backbone["init"]["kind"] == "dinov2"
    assert suite.backbone["preprocessing"]["input_size"] == 518 and suite.backbone["options"]["img_size"] == 518
    # without `init`, a ViT with published weights starts from them
    (tmp_path / "clip.toml").write_text((tmp_path / "dino_toy.toml").read_text().replace('"dino_toy"', '"clip_toy"')
                                        .replace("vit_base_patch14_dinov2", "vit_base_patch16_clip_224")
                                        .replace('init = "dinov2"\ninput_size = 518', ""))
    assert load_suite_file(tmp_path / "clip.toml").backbone["init"]["weights"] == "openclip_laion2b"


@pytest.mark.parametrize("backbone, init, extra, message", [
    ("vit_base_patch16_clip_224", "clip_openai", "",
     "key 'init' = 'clip_openai': expected an init of the vit_base_patch16_clip_224 backbone (simclr, random, "
     "openclip_laion2b, or a checkpoint file); clip_openai weights are those of vit_base_patch16_clip_quickgelu_224"),
    ("vit_base_patch14_dinov2", "dinov2", "input_size = 230",
     "key 'input_size' = 230: expected input size 230 px is not a multiple of vit_base_patch14_dinov2's patch size "
     "14 px (e.g. 224 or 518)"),
    ("resnet50", "moco_v2", "input_size = 224", "key 'input_size' = 224: expected an input size for a ViT"),
    ("vit_huge", "random", "", "key 'backbone' = 'vit_huge': expected one of small_cnn, resnet18, resnet50, vit_toy"),
    ("resnet50", "dinov2", "", "dinov2 weights are those of vit_small_patch14_dinov2 and vit_base_patch14_dinov2"),
])
def test_a_backbone_that_does_not_exist_is_a_suite_file_error(tmp_path, capsys, clean_registries, backbone, init,
                                                              extra, message):
    path = suite_file(tmp_path, "bad", backbone, init, extra)
    assert cli.main(["--suite", path, "--output", str(tmp_path / "out"), "--dry-run"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_backbone_over_a_suite_s_own(tmp_path, capsys):
    from benchmark.backbone_choice import suite_with_backbone
    from benchmark.suites import SUITES, plan
    quickstart = SUITES["quickstart"]
    # the suite's own backbone again: the same runs
    assert [s.run_id for s in plan(suite_with_backbone(quickstart, "small_cnn"))] == \
        [s.run_id for s in plan(quickstart)]
    # another backbone without a publisher's weights starts from the suite's init, its SimCLR recipe kept
    toy = suite_with_backbone(quickstart, "vit_toy").backbone
    assert {k: v for k, v in toy.items() if k != "init"} == TOY_VIT
    assert toy["init"] == quickstart.backbone["init"]
    # a paper suite from DINOv2: the publisher's weights; --dry-run names the file, its publisher and where it goes
    output = tmp_path / "out"
    assert cli.main(["--suite", "office31_closed", "--backbone", "vit_base_patch14_dinov2", "--methods", "pretrained",
                     "--pairs", "A-D", "--seeds", "2024", "--output", str(output), "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert "weights: the pretrained weights of DINOv2 ViT-B/14 are needed" in out
    assert "dinov2_vitb14_pretrain.pth" in out and "facebookresearch/dinov2" in out
    assert cli.main(["--suite", "office31_closed", "--init", "dinov2", "--dry-run", "--output", str(output)]) == 2
    assert "--backbone resnet50 --init dinov2 (over suite 'office31_closed'): expected an init of the resnet50 " \
           "backbone" in capsys.readouterr().err
    assert cli.main(["--report", "--summary", "--backbone", "vit_toy", "--output", str(output)]) == 2


def test_a_clip_file_given_to_a_dinov2_suite_stops_the_plan(tmp_path, capsys):
    from .publisher_checkpoints import clip_model, write_openclip_bin
    weights = write_openclip_bin(clip_model(), tmp_path / "open_clip_pytorch_model.bin")
    assert cli.main(["--suite", "office31_closed_dinov2", "--methods", "pretrained", "--pairs", "A-D", "--seeds",
                     "2024", "--pretrained", str(weights), "--output", str(tmp_path / "out"), "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert f"weights: {weights} is a CLIP model" in out
    assert "but the backbone vit_base_patch14_dinov2 with init 'dinov2' reads facebookresearch/dinov2's" in out


def test_the_paper_suites_have_dinov2_and_clip_companions_of_the_same_grid():
    from benchmark.suites import SUITES, plan
    for name in PAPER_SUITES:
        base = plan(SUITES[name], seeds=[2024])
        for companion, arch, kind in ((f"{name}_dinov2", "vit_base_patch14_dinov2", "dinov2"),
                                      (f"{name}_clip", "vit_base_patch16_clip_quickgelu_224", "clip")):
            specs = plan(SUITES[companion], seeds=[2024])
            assert [(s.setting, s.query_domain, s.retrieval_domain, s.method) for s in specs] == \
                [(s.setting, s.query_domain, s.retrieval_domain, s.method) for s in base]
            assert {s.backbone["arch"] for s in specs} == {arch} and {s.backbone["init"]["kind"] for s in specs} == \
                {kind}
            assert not {s.run_id for s in specs} & {s.run_id for s in base}
    assert SUITES["office_home_partial"].backbone["arch"] == "resnet50"       # the paper's suites keep MoCo v2


def test_a_vit_only_hyper_parameter_is_refused_on_a_cnn_suite(tmp_path, capsys):
    assert cli.main(["--suite", "quickstart", "--set", "uem.layer_decay=0.8", "--dry-run", "--output",
                     str(tmp_path)]) == 2
    assert "'layer_decay' of method 'uem' applies to vit backbones" in capsys.readouterr().err
    assert cli.main(["--suite", "quickstart", "--backbone", "vit_toy", "--init", "random", "--set",
                     "uem.layer_decay=0.8", "--methods", "uem", "--dry-run", "--output", str(tmp_path)]) == 0


@pytest.mark.slow
def test_a_vit_suite_runs_reports_and_sits_beside_a_cnn_in_the_summary(tmp_path, cache_dir, capsys,
                                                                        clean_registries):
    output = tmp_path / "results"
    common = ["--output", str(output), "--cache-dir", str(cache_dir), "--device", "cpu"]
    cnn = suite_file(tmp_path, "toy_cnn", "small_cnn", "random")
    vit = suite_file(tmp_path, "toy_vit", "vit_toy", "random")
    assert cli.main(["--suite", cnn] + common) == 0              # registered first: the summary's column is its
    capsys.readouterr()
    assert cli.main(["--suite", vit] + common) == 0
    out = capsys.readouterr().out
    assert "2 runs planned" in out and "| Pretrained (init)" in out and "| CDS" in out
    # the CNN suite's report shows the ViT's runs of its grid as rows of their own, a block per backbone
    assert cli.main(["--suite", cnn, "--report"] + common) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "→" not in line]
    assert rows[-4:] == ["Pretrained (init)", "CDS", "Zero-shot random toy ViT", "CDS from random toy ViT"], rows
    page = (output / "report" / "toy_cnn.html").read_text()
    assert "Zero-shot random toy ViT" in page and "CDS from random toy ViT" in page
    assert cli.main(["--suite", vit, "--report"] + common) == 0
    assert "Zero-shot random small CNN" in capsys.readouterr().out
    # the summary: one column for the grid, every backbone's rows in it (the ViT suite is no second column)
    assert cli.main(["--suite", cnn, "--report", "--summary"] + common) == 0
    summary = (output / "tables" / "summary.md").read_text()
    assert summary.count("Synthetic partial") == 1 and "toy_vit" not in summary.split("\n\n")[1]
    rows = [line.split("|")[1].strip() for line in summary.splitlines() if line.startswith("| ")][1:]
    assert rows == ["Pretrained (init)", "CDS", "Zero-shot random toy ViT", "CDS from random toy ViT"]
    assert "Zero-shot X and M from X: runs from backbone X" in summary


def test_a_companion_suite_is_not_compared_with_the_paper_s_resnet_numbers(tmp_path, capsys):
    output = tmp_path / "out"
    assert cli.main(["--suite", "office31_closed_dinov2", "--report", "--compare-paper", "--methods", "pretrained",
                     "--pairs", "A-D", "--seeds", "2024", "--output", str(output)]) == 0
    assert "--compare-paper: the paper's numbers start from MoCo v2 ResNet-50, the runs of office31_closed_dinov2 " \
           "from DINOv2 ViT-B/14: not compared" in capsys.readouterr().out
    assert not list((output / "tables").glob("*vs_paper*"))
