"""examples/make_digits_dataset.py and examples/digits.toml: a real two-domain dataset made from data that installed
packages ship (scikit-learn's handwritten digits, digits printed in matplotlib's fonts), read as a folder dataset."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from benchmark.suites import load_suite_file
from benchmark.suites import plan

from .conftest import EXAMPLES


def test_the_digits_dataset_and_its_suite_plan_uem_and_its_ablations(tmp_path, clean_registries):
    shutil.copy(EXAMPLES / "digits.toml", tmp_path / "digits.toml")
    subprocess.run([sys.executable, str(EXAMPLES / "make_digits_dataset.py"), str(tmp_path / "digits"),
                    "--per-class", "3"], check=True, capture_output=True, timeout=120)
    for domain in ("handwritten", "printed"):
        folders = sorted(p.name for p in (tmp_path / "digits" / domain).iterdir())
        assert folders == [str(d) for d in range(10)]
        images = sorted((tmp_path / "digits" / domain / "7").glob("*.png"))
        assert len(images) == 3
        pixels = np.asarray(Image.open(images[0]))
        # 32 px RGB, dark ink on a light ground: the darkest pixel is ink, most of the image is paper
        assert pixels.shape == (32, 32, 3) and pixels.min() < 100 and np.median(pixels) > 150
    # scikit-learn's scans and the printed digits differ (a domain gap): their mean images are not the same
    means = [np.mean([np.asarray(Image.open(p), dtype=float) for p in (tmp_path / "digits" / d).glob("*/*.png")],
                     axis=0) for d in ("handwritten", "printed")]
    assert np.abs(means[0] - means[1]).mean() > 5
    specs = plan(load_suite_file(tmp_path / "digits.toml"))
    assert list(dict.fromkeys(s.method for s in specs)) == [
        "pretrained", "uem_no_pm", "uem_no_sel", "uem_no_spda", "uem_no_sn2m", "uem"]
    uem_rows = [s for s in specs if s.method.startswith("uem")]
    # every UEM row at the quickstart's budget, and the open set keeps 5 of the 10 digits in the retrieval domain
    assert {(s.hparams["stage1_epochs"], s.hparams["stage2_epochs"], s.hparams["lr"]) for s in uem_rows} == {
        (8, 4, 0.003)}
    assert {(len(s.query_classes), len(s.retrieval_classes)) for s in specs} == {(10, 5)}
