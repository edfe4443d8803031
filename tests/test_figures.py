"""Figures: the retrieval sample each run stores, and the figures drawn from stored runs (no training here beyond a
pretrained-only run and one CDS epoch on the tiny synthetic suite)."""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from matplotlib.text import Text
from PIL import Image

from benchmark import store
from benchmark.collect import table_specs, tidy_frame
from benchmark.evaluation import retrieval_sample, sample_queries
from benchmark.figures import (avg_chart, choose_methods, fallback_families, file_name_part, method_colours,
                               save_figure, training_curves, write_figures)
from benchmark.tables import aggregate
from benchmark.retrievals import FIGURE_PRIVATE_QUERIES, FIGURE_SHARED_QUERIES, FIGURE_TOP_K, RETRIEVALS_FILE
from benchmark.runner import run_one
from benchmark.spec import load_split_domains
from benchmark.suites import plan

from .conftest import prepared_run, tiny_suite


# ---------------------------------------------------------------------------------------------------------------------
# The sample: which queries, and what is stored for them
# ---------------------------------------------------------------------------------------------------------------------

def test_sample_queries_spreads_classes_and_draws_private_ones_last():
    query_labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 0, 1])
    gallery_labels = torch.tensor([0, 1, 2, 2])            # class 3 is private: queries 6 and 7
    sample = sample_queries(query_labels, gallery_labels, 3, seed=11, n_private=1)
    assert sample.tolist() == sample_queries(query_labels, gallery_labels, 3, seed=11, n_private=1).tolist()
    assert sorted(query_labels[sample[:3]].tolist()) == [0, 1, 2]     # one per shared class
    assert sample[3].item() in (6, 7)
    # More queries than classes: every class once, then repeats, never an index twice.
    five = sample_queries(query_labels, gallery_labels, 5, seed=11)
    assert sorted(query_labels[five[:3]].tolist()) == [0, 1, 2] and len(set(five.tolist())) == 5
    assert not torch.isin(five, torch.tensor([6, 7])).any()
    # Fewer private queries than asked: all of them; none asked outside the open setting.
    assert sorted(sample_queries(query_labels, gallery_labels, 0, seed=3, n_private=4).tolist()) == [6, 7]
    assert sample_queries(query_labels, query_labels, 2, seed=3, n_private=2).shape == (2,)
    # The seed decides: over a few seeds, the shared part is not always the same.
    assert len({tuple(sample_queries(query_labels, gallery_labels, 3, seed=s).tolist()) for s in range(8)}) > 1
    with pytest.raises(ValueError, match="n_shared must be a non-negative integer"):
        sample_queries(query_labels, gallery_labels, -1, seed=0)


def test_retrieval_sample_ranks_and_judges_by_hand():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [-1.0, 0.0]])
    gallery_labels = torch.tensor([0, 1, 1, 2])
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    query_labels = torch.tensor([0, 1, 3])                   # class 3 is absent from the gallery: private
    # Cosines by hand: q0 -> (1, 0, .8, -1): ranks 0, 2, 1; q1 -> (0, 1, .6, 0): 1, 2, then 0 before 3 (tie, lower
    # index first); q2 -> (0, -1, -.6, 0): 0, 3 (tie), then 2.
    sample = retrieval_sample(queries, query_labels, gallery, gallery_labels, [2, 0, 1], 3,
                              private_pred=torch.tensor([False, True, True]))
    # Ranks inside a tied group are marked; their expected correctness is the share of the group of the query's class
    # (q1's third rank ties items 0 and 3, labels 0 and 2: share 0 for label 1).
    assert sample == [
        {"query_index": 2, "label": 3, "private": True, "returned_null": True, "retrieved_indices": [0, 3, 2],
         "retrieved_labels": [0, 2, 1], "retrieved_correct": [False, False, False],
         "retrieved_tied": [True, True, False], "retrieved_expected_correct": [0.0, 0.0, 0.0]},
        {"query_index": 0, "label": 0, "private": False, "returned_null": False, "retrieved_indices": [0, 2, 1],
         "retrieved_labels": [0, 1, 1], "retrieved_correct": [True, False, False],
         "retrieved_tied": [False, False, False], "retrieved_expected_correct": [1.0, 0.0, 0.0]},
        {"query_index": 1, "label": 1, "private": False, "returned_null": True, "retrieved_indices": [1, 2, 0],
         "retrieved_labels": [1, 1, 0], "retrieved_correct": [True, True, False],
         "retrieved_tied": [False, False, True], "retrieved_expected_correct": [1.0, 1.0, 0.0]},
    ]
    # Three items tie at the top, two of them of the query's class: each tied rank is right with probability 2/3,
    # whichever of them the gallery stores first.
    tied_gallery = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    for labels in ([1, 2, 2, 1], [2, 2, 1, 1], [2, 1, 2, 1]):
        top = retrieval_sample(torch.tensor([[1.0, 0.0]]), torch.tensor([2]), tied_gallery, torch.tensor(labels),
                               [0], 4)[0]
        assert top["retrieved_tied"] == [True, True, True, False]
        assert top["retrieved_expected_correct"] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 0.0])
    assert retrieval_sample(queries, query_labels, gallery, gallery_labels, [1], 2)[0]["returned_null"] is None
    with pytest.raises(ValueError, match=r"query_indices must lie in \[0, 3\), got \[3\]"):
        retrieval_sample(queries, query_labels, gallery, gallery_labels, [0, 3], 2)


def test_choose_methods_keeps_first_last_and_best_between():
    methods = ["pretrained", "cds", "pcs", "darl", "coda", "uem"]
    averages = {"pretrained": 20.0, "cds": 30.0, "pcs": math.nan, "darl": 25.0, "coda": 31.0, "uem": 10.0}
    # Between the first and the last, the two best Avg are coda (31) and cds (30); kept in table order.
    assert choose_methods(methods, averages) == ["pretrained", "cds", "coda", "uem"]
    assert choose_methods(methods[:3], averages) == methods[:3]


# ---------------------------------------------------------------------------------------------------------------------
# Real runs of a tiny suite: the stored sample, then the figures
# ---------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, cache_dir):
    """Open-set and partial runs of `pretrained` and one CDS epoch, Ph->Sk, seed 2024 (seconds)."""
    suite = tiny_suite("test_figures", settings=("open", "partial"), methods=["pretrained", "cds"])
    specs = plan(suite, assignments=["cds.epochs=1"])
    output = tmp_path_factory.mktemp("figure_runs")
    for spec in specs:
        run_one(prepared_run(spec, output, cache_dir))
    return specs, output


def _sample(spec, output) -> dict:
    return json.loads((spec.run_dir(output) / RETRIEVALS_FILE).read_text())


@pytest.mark.slow
def test_every_method_of_a_split_stores_the_same_queries_judged_by_their_labels(tiny_runs, cache_dir):
    specs, output = tiny_runs
    for setting in ("open", "partial"):
        of_setting = [s for s in specs if s.setting == setting]
        samples = {s.method: _sample(s, output) for s in of_setting}
        assert set(samples) == {"pretrained", "cds"}
        indices = {m: [q["query_index"] for q in sample["queries"]] for m, sample in samples.items()}
        assert indices["pretrained"] == indices["cds"]
        query, retrieval = load_split_domains(of_setting[0], None, cache_dir)
        for sample in samples.values():
            assert sample["top_k"] == FIGURE_TOP_K
            assert (sample["n_query_images"], sample["n_retrieval_images"]) == (len(query), len(retrieval))
            for q in sample["queries"]:
                assert q["label"] == query.labels[q["query_index"]].item()
                assert q["retrieved_labels"] == retrieval.labels[q["retrieved_indices"]].tolist()
                assert q["retrieved_correct"] == [label == q["label"] for label in q["retrieved_labels"]]
                assert q["private"] == (q["label"] not in retrieval.labels.tolist())
                assert len(q["retrieved_indices"]) == FIGURE_TOP_K
            private = [q["private"] for q in sample["queries"]]
            if setting == "open":
                assert private == [False] * FIGURE_SHARED_QUERIES + [True] * FIGURE_PRIVATE_QUERIES
                assert all(isinstance(q["returned_null"], bool) for q in sample["queries"])
            else:
                assert private == [False] * FIGURE_SHARED_QUERIES
                assert all(q["returned_null"] is None for q in sample["queries"])


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        return image.size


@pytest.mark.slow
def test_figures_are_written_as_png_and_pdf(tiny_runs, tmp_path):
    specs, output = tiny_runs
    messages = []
    paths = write_figures("test_figures", specs, output, tmp_path / "figures", say=messages.append)
    names = sorted(p.name for p in paths)
    stems = ["test_figures_avg_by_method", "test_figures_open_detection",
             "test_figures_retrievals_open_photo-sketch_seed2024",
             "test_figures_retrievals_partial_photo-sketch_seed2024",
             "test_figures_training_cds"]               # `pretrained` trains no epoch: no curves
    assert names == sorted(f"{stem}.{ext}" for stem in stems for ext in ("pdf", "png"))
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == names    # no temporary file left
    assert messages == []
    for path in paths:
        assert path.stat().st_size > 1000
        if path.suffix == ".pdf":
            assert path.read_bytes().startswith(b"%PDF")
    # Retrieval figure, 2 methods x top 5 at 120 dpi. Width: 2 x 0.25 margins + 0.9 query tile + 2 x (0.4 gap +
    # 5 x 0.9 tiles + 4 x 0.06) = 11.68 in -> 1401 px. Height: 1.0 header + rows x (0.9 + 0.24 label + 0.12 gap) +
    # 0.75 legend: open, 6 queries = 9.31 in -> 1117 px; partial, 4 queries = 6.79 in -> 814 px.
    figures = tmp_path / "figures"
    assert _png_size(figures / "test_figures_retrievals_open_photo-sketch_seed2024.png") == (1401, 1117)
    assert _png_size(figures / "test_figures_retrievals_partial_photo-sketch_seed2024.png") == (1401, 814)
    # Bar charts: two panels of max(4, 0.85 x 2 methods + 1.4) = 4 in, 4.9 in high -> 960 x 588 px; the detection
    # chart max(6, 1.15 x 2 + 2) = 6 in by 5 in -> 720 x 600 px.
    assert _png_size(figures / "test_figures_avg_by_method.png") == (960, 588)
    assert _png_size(figures / "test_figures_open_detection.png") == (720, 600)
    # CDS's curves: one panel per history quantity (loss, instance, cross_domain_entropy): 3 x 3.3 in wide, one row
    # of 2.3 in + 1 in for title and legend -> 1188 x 396 px.
    assert _png_size(figures / "test_figures_training_cds.png") == (1188, 396)


def test_training_curves_draw_every_quantity_of_the_histories():
    # Two runs of one pair; the cluster count is logged from epoch 2 on only (before clustering starts).
    histories = {
        ("Partial Ph→Sk", 2024): [{"epoch": 1, "loss": 3.0, "seconds": 0.5},
                                  {"epoch": 2, "clusters_query": 9.0, "loss": 2.5, "seconds": 0.5}],
        ("Partial Ph→Sk", 2025): [{"epoch": 1, "loss": 3.1}, {"epoch": 2, "loss": 2.4, "clusters_query": 8.0}],
    }
    figure = training_curves("UEM (Ours)", histories)
    titles = [ax.get_title() for ax in figure.axes if ax.get_visible()]
    assert titles == ["loss", "clusters_query"]         # loss first; seconds and epoch are not quantities
    loss_lines = figure.axes[0].get_lines()
    assert [list(line.get_xdata()) for line in loss_lines] == [[1, 2], [1, 2]]
    assert [list(line.get_ydata()) for line in figure.axes[1].get_lines()] == [[9.0], [8.0]]
    assert [line.get_linestyle() for line in loss_lines] == ["-", "--"]       # one style per seed


@pytest.mark.slow
def test_runs_without_a_sample_are_left_out_with_a_message(tiny_runs, tmp_path):
    specs, output = tiny_runs
    copy = tmp_path / "results"
    shutil.copytree(output, copy)
    partial = [s for s in specs if s.setting == "partial"]
    open_set = [s for s in specs if s.setting == "open"]
    for spec in partial:                                         # both partial runs predate the samples
        (spec.run_dir(copy) / RETRIEVALS_FILE).unlink()
    cds_open = next(s for s in open_set if s.method == "cds")
    (cds_open.run_dir(copy) / RETRIEVALS_FILE).unlink()        # one open-set method predates them
    messages = []
    paths = write_figures("test_figures", specs, copy, tmp_path / "figures", say=messages.append)
    names = {p.name for p in paths}
    assert "test_figures_retrievals_open_photo-sketch_seed2024.png" in names
    assert not any("retrievals_partial" in name for name in names)
    assert "test_figures_avg_by_method.png" in names                # the bar charts need no sample
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    assert "Open-set Ph→Sk: left out cds (done before runs stored a retrieval sample)" in messages[0]
    assert "Partial Ph→Sk" in messages[1] and "2 done run(s) were made before runs stored a retrieval sample" in \
        messages[1]

    # A damaged sample is named and left out; the figure goes on with the other method.
    (cds_open.run_dir(copy) / RETRIEVALS_FILE).write_text("{not json")
    messages.clear()
    write_figures("test_figures", open_set, copy, tmp_path / "again", say=messages.append)
    assert any("left out cds seed 2024" in m and "unreadable retrieval sample" in m for m in messages)
    assert (tmp_path / "again" / "test_figures_retrievals_open_photo-sketch_seed2024.png").is_file()


def test_nothing_done_draws_nothing_and_says_so(tmp_path):
    specs = plan(tiny_suite("test_figures_empty", methods=["pretrained"]))
    messages = []
    assert write_figures("test_figures_empty", specs, tmp_path, tmp_path / "figures", say=messages.append) == []
    assert not (tmp_path / "figures").exists()
    assert messages == ["figures: no Avg bar chart: no method has a seed with every pair of its table done",
                        "figures: no retrieval figure for Partial Ph→Sk: no run of it is done"]


def test_avg_bars_are_the_tables_per_seed_avg(tmp_path):
    """Stored by hand: two pairs x two seeds; bars = the mean over seeds of the per-seed mean over pairs."""
    suite = tiny_suite("test_figures_bars", pairs=(("photo", "sketch"), ("clipart", "painting")), seeds=(2024, 2025),
                       methods=["pretrained", "cds"])
    specs = plan(suite)
    values = {("pretrained", "photo", 2024): 0.30, ("pretrained", "clipart", 2024): 0.50,
              ("pretrained", "photo", 2025): 0.20, ("pretrained", "clipart", 2025): 0.40,
              ("cds", "photo", 2024): 0.10, ("cds", "clipart", 2024): 0.30}     # cds: seed 2025 missing
    for spec in specs:
        value = values.get((spec.method, spec.query_domain, spec.seed))
        if value is not None:
            run_dir = store.prepare_run_dir(spec, tmp_path, {})
            store.atomic_write_json(run_dir / "metrics.json", {"metrics": {"map_all_coda": value}})
            store.mark_done(run_dir)
    frame = tidy_frame(specs, tmp_path)
    models = [aggregate(frame, table) for table in table_specs("test_figures_bars", specs)]
    figure = avg_chart(models, method_colours(["pretrained", "cds"]))
    ax = figure.axes[0]
    # pretrained: per-seed Avg 40 and 30 -> mean 35, std sqrt(2 x 5^2 / 1) = 7.07; cds: seed 2024 only -> 20, no std.
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, [35.0, 20.0])
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["35.0\n±7.1", "20.0\n(n=1)"]
    error_segments = ax.collections[0].get_segments()
    np.testing.assert_allclose([segment[:, 1] for segment in error_segments], [[35 - 7.0711, 35 + 7.0711], [20, 20]],
                               atol=1e-3)
    messages = []
    paths = write_figures("test_figures_bars", specs, tmp_path, tmp_path / "figures", say=messages.append)
    assert [p.name for p in paths] == ["test_figures_bars_avg_by_method.png", "test_figures_bars_avg_by_method.pdf"]
    assert len(messages) == 2 and all("made before runs stored a retrieval sample" in m for m in messages)


@pytest.mark.slow
def test_report_with_figures_from_the_command_line(tiny_runs, capsys):
    from benchmark import cli
    _, output = tiny_runs
    args = ["--suite", "test_figures", "--set", "cds.epochs=1", "--output", str(output)]
    assert cli.main(args + ["--report", "--figures"]) == 0
    out = capsys.readouterr().out
    assert "figures: " in out and str(output / "figures") in out
    if shutil.which("pdflatex"):      # the tables compiled to PDF too (TeX Live: always in CI)
        assert f"pdf: {output / 'tables' / 'test_figures.pdf'}" in out
        assert (output / "tables" / "test_figures.pdf").read_bytes().startswith(b"%PDF")
    else:
        assert "pdflatex not found" in out
    assert (output / "figures" / "test_figures_avg_by_method.png").stat().st_size > 0
    assert sorted(output.joinpath("figures").glob("test_figures_retrievals_open_*.pdf"))
    assert cli.main(args + ["--report", "--summary", "--figures"]) == 2
    assert "--figures draws one suite's runs" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# Names drawn as they are (issue 22)
# ---------------------------------------------------------------------------------------------------------------------

def _svg(figure) -> str:
    """The figure as SVG with its texts as text (svg.fonttype none): a literal string is one <text> run, a mathtext
    one is cut into glyphs and math italics."""
    import io

    import matplotlib
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "text.parse_math": False}):
        figure.savefig(buffer, format="svg")
    return buffer.getvalue()


DOLLARS = "$5 and $10 bills"


def test_names_with_dollar_signs_are_drawn_as_they_are_not_as_mathtext(tmp_path):
    histories = {(f"Closed {DOLLARS}→x", 2024): [{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 2.0}]}
    figure = training_curves(DOLLARS, histories)
    # Before: "$5 and $" was read as mathtext and drawn as the italic "5and", the class as "5and10 bills".
    paths = save_figure(figure, tmp_path / "curves", say=pytest.fail)
    assert [p.name for p in paths] == ["curves.png", "curves.pdf"]
    svg = _svg(figure)          # ">": the text element itself (the SVG also holds each text in a comment)
    assert f">{DOLLARS}: loss terms" in svg and f">Closed {DOLLARS}→x" in svg
    assert all(not text.get_parse_math() for text in figure.findobj(Text) if "$" in text.get_text())


def test_a_character_the_default_font_lacks_is_drawn_with_an_installed_font_that_has_it(tmp_path):
    # U+210A SCRIPT SMALL G: not in DejaVu Sans, in STIXGeneral (shipped with matplotlib), so always installed.
    figure = training_curves("UEM ℊ", {("Closed ℊ→x", 2024): [{"epoch": 1, "loss": 3.0}]})
    assert "STIXGeneral" in fallback_families({"ℊ"})
    messages = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # matplotlib warns "Glyph ... missing from font(s)" otherwise
        save_figure(figure, tmp_path / "curves", say=messages.append)
    assert messages == []
    assert ">UEM ℊ: loss terms" in _svg(figure)


def test_a_character_no_installed_font_has_is_transliterated_and_said(tmp_path):
    figure = training_curves("素描", {("Closed 素描→x", 2024): [{"epoch": 1, "loss": 3.0}]})
    messages = []
    save_figure(figure, tmp_path / "curves", say=messages.append)
    svg = _svg(figure)
    if fallback_families({"素", "描"}):         # a CJK font is installed here: drawn as it is
        assert messages == [] and ">素描: loss terms" in svg
    else:
        assert ">SuMiao: loss terms" in svg and ">Closed SuMiao→x" in svg        # the rest of the text kept
        assert len(messages) == 1 and "U+63CF, U+7D20" in messages[0] and "'素描' as 'SuMiao'" in messages[0]


def test_file_names_of_names_in_any_script_are_distinct():
    # Plain names stay; others: anyascii's transliteration and the first 6 hex digits of the name's SHA-1 (UTF-8),
    # e.g. sha1("素描") = 23aabd....
    assert file_name_part("Real_World") == "Real_World"
    assert file_name_part("素描") == "SuMiao-" + hashlib.sha1("素描".encode()).hexdigest()[:6] == "SuMiao-23aabd"
    names = ["素描", "油画", "Café", "Cafe", "$5 and $10 bills"]
    assert len({file_name_part(name) for name in names}) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", file_name_part(name)) for name in names)
