"""Tests of the tables (benchmark/tables.py, render.py, latex_pdf.py): aggregation over seeds, marks, footnotes, escaping, rendering, golden files.

Golden files: tests/golden/report_small.md and tests/golden/report_small.tex hold the rendered report of the small fixed
tidy frame built in `small_suite_models`; tests/golden/averages_small.* the tables of averages (summary and ablation)
built from it in `averages_models`; tests/golden/compare_small.* (tests/test_paper_compare.py) the companions beside the
paper's numbers. After an intended change of the rendering, regenerate them with

    UPDATE_GOLDEN=1 python -m pytest tests/test_reports.py tests/test_paper_compare.py -q

then read the diff of the golden files before committing them.
"""
from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmark import latex_pdf, render, tables
from benchmark.latex_pdf import compile_pdf
from benchmark.render import latex_document, latex_escape, to_csv_frame, to_latex, to_markdown, write_report
from benchmark.tables import TableSpec, aggregate, combine_averages, has_runs, load_tidy, paired_p_value, save_tidy

GOLDEN_DIR = Path(__file__).parent / "golden"
SEEDS = [2024, 2025, 2026]
DOMAIN_OF = {"Ph": "photo", "Sk": "sketch", "A": "art", "C": "clipart", "P": "product", "D": "dslr", "W": "webcam",
             "Qu": "quickdraw", "Cl": "clipart"}


def tidy_frame(runs, dataset="synthetic", setting="closed", metrics=("map_all_coda",)) -> pd.DataFrame:
    """runs: (method, pair, seed, status, values) with values a number per metric, or None for a run not done."""
    rows = []
    for method, pair, seed, status, values in runs:
        query, retrieval = pair.split("→")
        if values is not None and not isinstance(values, dict):
            values = {metrics[0]: values}
        for metric in metrics:
            value = values.get(metric, math.nan) if (status == "done" and values) else math.nan
            rows.append({
                "dataset": dataset, "setting": setting, "query_domain": DOMAIN_OF[query],
                "retrieval_domain": DOMAIN_OF[retrieval], "pair": pair, "method": method, "seed": seed,
                "status": status, "metric": metric, "value": value,
                "run_id": f"{method}-{query}{retrieval}-{seed}",
            })
    return pd.DataFrame(rows, columns=list(tables.TIDY_COLUMNS))


def closed_spec(methods=("x", "y"), pairs=("A→C", "C→A"), **overrides) -> TableSpec:
    arguments = dict(
        title="Closed-set test", dataset="synthetic", setting="closed", methods=list(methods),
        method_labels={"x": "X", "y": "Y"}, pairs=list(pairs), cell_metrics=["map_all_coda"],
        metric_description="mAP@All", expected_seeds=SEEDS,
    )
    arguments.update(overrides)
    return TableSpec(**arguments)


# Method x: A→C 0.10 0.20 0.30; C→A 0.40 0.20 0.30 (all done).
# Method y: A→C 0.50 0.60 0.70; C→A 0.20 0.30 and seed 2026 failed.
HAND_RUNS = [
    ("x", "A→C", 2024, "done", 0.10), ("x", "A→C", 2025, "done", 0.20), ("x", "A→C", 2026, "done", 0.30),
    ("x", "C→A", 2024, "done", 0.40), ("x", "C→A", 2025, "done", 0.20), ("x", "C→A", 2026, "done", 0.30),
    ("y", "A→C", 2024, "done", 0.50), ("y", "A→C", 2025, "done", 0.60), ("y", "A→C", 2026, "done", 0.70),
    ("y", "C→A", 2024, "done", 0.20), ("y", "C→A", 2025, "done", 0.30), ("y", "C→A", 2026, "failed", None),
]


@pytest.fixture
def hand_model():
    return aggregate(tidy_frame(HAND_RUNS), closed_spec())


def summary(model, method, column, metric_index=0):
    return model.cell(method, column).summaries[metric_index]


# ---------------------------------------------------------------------------------------------------------------------
# Aggregation on hand-computed numbers
# ---------------------------------------------------------------------------------------------------------------------

def test_pair_cell_mean_and_sample_std(hand_model):
    # x, A→C: 10, 20, 30 (×100) -> mean 20; std ddof=1 = sqrt((100 + 0 + 100) / 2) = 10 (ddof=0 would give 8.16).
    s = summary(hand_model, "x", "A→C")
    assert s.n == 3
    assert s.mean == pytest.approx(20.0)
    assert s.std == pytest.approx(10.0)
    # x, C→A: 40, 20, 30 -> mean 30, std sqrt((100 + 100 + 0) / 2) = 10.
    s = summary(hand_model, "x", "C→A")
    assert (s.mean, s.std, s.n) == (pytest.approx(30.0), pytest.approx(10.0), 3)


def test_avg_is_per_seed_first(hand_model):
    # x per seed: 2024 (10+40)/2 = 25, 2025 (20+20)/2 = 20, 2026 (30+30)/2 = 30 -> mean 25,
    # std sqrt((0 + 25 + 25) / 2) = 5.0.
    # Pairs first would give other stds: mean of the pair stds (10 + 10)/2 = 10; std of all six values 8.94.
    s = summary(hand_model, "x", "Avg")
    assert s.n == 3
    assert s.mean == pytest.approx(25.0)
    assert s.std == pytest.approx(5.0)


def test_seed_with_a_pair_missing_is_left_out_of_avg(hand_model):
    # y, C→A: 20, 30 (seed 2026 failed) -> mean 25, std sqrt((25 + 25) / 1) = 7.07, n = 2.
    s = summary(hand_model, "y", "C→A")
    assert (s.mean, s.std, s.n) == (pytest.approx(25.0), pytest.approx(math.sqrt(50)), 2)
    # y, Avg: only seeds 2024 (50+20)/2 = 35 and 2025 (60+30)/2 = 45 -> mean 40, std sqrt((25 + 25) / 1) = 7.07, n = 2.
    # (Had seed 2026 entered with A→C alone, the mean would be (35 + 45 + 70) / 3 = 50.)
    s = summary(hand_model, "y", "Avg")
    assert (s.mean, s.std, s.n) == (pytest.approx(40.0), pytest.approx(math.sqrt(50)), 2)


def test_single_seed_has_nan_std_and_shows_the_mean_alone():
    runs = [("x", "A→C", 2024, "done", 0.25), ("x", "A→C", 2025, "missing", None)]
    model = aggregate(tidy_frame(runs), closed_spec(methods=["x"], pairs=["A→C"], expected_seeds=[2024, 2025]))
    s = summary(model, "x", "A→C")
    assert s.n == 1 and s.mean == pytest.approx(25.0) and math.isnan(s.std)
    row = next(line for line in to_markdown(model).splitlines() if line.startswith("| X"))
    assert "25.0<sup>a</sup>" in row and "±" not in row


def test_scale_and_digits_are_applied():
    model = aggregate(tidy_frame(HAND_RUNS), closed_spec(scale=1.0, digits=3))
    s = summary(model, "x", "A→C")
    assert s.mean == pytest.approx(0.2) and s.std == pytest.approx(0.1)
    assert "0.200 ± 0.100" in to_markdown(model)
    assert "Values as fractions" in model.caption


# ---------------------------------------------------------------------------------------------------------------------
# Failures, missing runs, footnotes
# ---------------------------------------------------------------------------------------------------------------------

def test_fewer_seeds_get_a_footnote_counting_the_failure(hand_model):
    assert hand_model.cell("y", "C→A").footnote_marker == "a"
    assert hand_model.cell("y", "Avg").footnote_marker == "b"
    assert hand_model.cell("x", "A→C").footnote_marker is None
    texts = dict(hand_model.footnotes)
    assert texts["a"] == "n=2 of 3 seeds (1 failed)."
    assert texts["b"].startswith("Avg over n=2 of 3 seeds")
    markdown = to_markdown(hand_model)
    assert "<u>25.0 ± 7.1</u><sup>a</sup>" in markdown  # second best of C→A (x has 30.0)
    assert "<sup>a</sup> n=2 of 3 seeds (1 failed)." in markdown


def test_cell_without_done_run_is_a_dash_with_counts():
    runs = [
        ("x", "A→C", 2024, "failed", None), ("x", "A→C", 2025, "incomplete", None),  # 2026 absent from the frame
        ("x", "C→A", 2024, "done", 0.5), ("x", "C→A", 2025, "done", 0.5), ("x", "C→A", 2026, "done", 0.5),
        ("y", "A→C", 2024, "done", 0.1), ("y", "C→A", 2024, "done", 0.1),
    ]
    model = aggregate(tidy_frame(runs), closed_spec())
    cell = model.cell("x", "A→C")
    assert cell.is_missing
    assert cell.status_counts == {"failed": 1, "incomplete": 1, "missing": 1}
    assert dict(model.footnotes)[cell.footnote_marker] == "n=0 of 3 seeds (1 failed, 1 incomplete, 1 missing)."
    assert model.cell("x", "Avg").is_missing  # no seed has both pairs
    row = next(line for line in to_markdown(model).splitlines() if line.startswith("| X"))
    assert f"–<sup>{cell.footnote_marker}</sup>" in row
    assert rf"--\textsuperscript{{{cell.footnote_marker}}}" in to_latex(model)


def test_done_run_without_the_metric_is_counted():
    runs = [("x", "A→C", 2024, "done", 0.2), ("x", "A→C", 2025, "done", 0.4)]
    frame = tidy_frame(runs)
    frame.loc[1, "value"] = math.nan  # done, but the metric was not written
    model = aggregate(frame, closed_spec(methods=["x"], pairs=["A→C"], expected_seeds=[2024, 2025]))
    assert summary(model, "x", "A→C").n == 1
    assert dict(model.footnotes)["a"] == "n=1 of 2 seeds (1 done without mAP@All)."


def test_method_without_any_run_keeps_its_row():
    model = aggregate(tidy_frame(HAND_RUNS), closed_spec(methods=["x", "y", "z"], method_labels={"x": "X", "y": "Y", "z": "Zed"}))
    assert all(model.cell("z", column).is_missing for column in model.columns)
    rows = [line for line in to_markdown(model).splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows] == ["Method", "X", "Y", "Zed"]
    assert "n=0 of 3 seeds (3 missing)." in dict(model.footnotes).values()


def test_seeds_outside_the_spec_are_not_counted():
    runs = HAND_RUNS + [("x", "A→C", 7, "done", 0.99)]
    assert summary(aggregate(tidy_frame(runs), closed_spec()), "x", "A→C").mean == pytest.approx(20.0)


def test_two_runs_for_one_seed_is_an_error():
    frame = tidy_frame(HAND_RUNS)
    extra = frame.iloc[[0]].assign(run_id="another-hash")
    with pytest.raises(ValueError, match="2 runs for method 'x', pair 'A→C', seed 2024"):
        aggregate(pd.concat([frame, extra]), closed_spec())


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="run_id"):
        aggregate(tidy_frame(HAND_RUNS).drop(columns=["run_id"]), closed_spec())


def test_bad_spec_is_refused():
    with pytest.raises(ValueError, match="pairs lists"):
        closed_spec(pairs=["A→C", "A→C"])
    with pytest.raises(ValueError, match="expected_seeds is empty"):
        closed_spec(expected_seeds=[])


# ---------------------------------------------------------------------------------------------------------------------
# Best and second best
# ---------------------------------------------------------------------------------------------------------------------

def three_method_model():
    # A→C: x 20, y 60, z 40 -> y best, z second. C→A: x 30, y 25, z 30 -> x and z tie best, y second.
    runs = HAND_RUNS + [
        ("z", "A→C", s, "done", 0.40) for s in SEEDS
    ] + [("z", "C→A", s, "done", v) for s, v in zip(SEEDS, (0.30, 0.30, 0.30))]
    return aggregate(tidy_frame(runs), closed_spec(methods=["x", "y", "z"], method_labels={"x": "X", "y": "Y", "z": "Z"}))


def test_best_bold_second_underlined_markdown_and_latex():
    model = three_method_model()
    assert model.cell("y", "A→C").marks == ["best"] and model.cell("z", "A→C").marks == ["second"]
    assert model.cell("x", "A→C").marks == [None]
    assert model.cell("x", "C→A").marks == ["best"] and model.cell("z", "C→A").marks == ["best"]
    assert model.cell("y", "C→A").marks == ["second"]

    markdown = to_markdown(model)
    assert "**60.0 ± 10.0**" in markdown  # y, A→C: 50 60 70
    assert "<u>40.0 ± 0.0</u>" in markdown  # z, A→C
    assert "**30.0 ± 0.0**" in markdown and "**30.0 ± 10.0**" in markdown  # the tie in C→A

    latex = to_latex(model)
    assert r"\textbf{60.0 $\pm$ 10.0}" in latex
    assert r"\underline{40.0 $\pm$ 0.0}" in latex


def test_a_column_with_one_number_marks_nothing():
    runs = [("x", "A→C", s, "done", 0.5) for s in SEEDS]
    model = aggregate(tidy_frame(runs), closed_spec(pairs=["A→C"]))
    assert model.cell("x", "A→C").marks == [None]
    assert "**" not in to_markdown(model).split("\n\n")[1]  # the table itself


# ---------------------------------------------------------------------------------------------------------------------
# Significance of the best: paired t-test over seeds
# ---------------------------------------------------------------------------------------------------------------------

def t_two_sided_p(differences) -> float:
    """Two-sided p of the paired t-test, by formula: t = mean / (sd / sqrt(n)) with the closed-form Student CDFs of
    df = 1 (Cauchy: p = 1 - (2/pi) atan|t|) and df = 2 (p = 1 - |t| / sqrt(2 + t^2))."""
    n = len(differences)
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    t = abs(mean / (sd / math.sqrt(n)))
    if n == 2:
        return 1 - 2 / math.pi * math.atan(t)
    assert n == 3
    return 1 - t / math.sqrt(2 + t * t)


def test_paired_p_value_matches_the_formula():
    # Differences 2, 3, 4: mean 3, sd 1, t = 3 * sqrt(3) = 5.196, df 2 -> p = 1 - 5.196 / sqrt(29) = 0.0351.
    n, p = paired_p_value({2024: 12.0, 2025: 23.0, 2026: 34.0}, {2024: 10.0, 2025: 20.0, 2026: 30.0})
    assert n == 3 and p == pytest.approx(1 - 3 * math.sqrt(3) / math.sqrt(29)) and p == pytest.approx(0.0351, abs=1e-4)
    assert p == pytest.approx(t_two_sided_p([2, 3, 4]))
    # Differences 1, 2, 3: t = 2 * sqrt(3) = 3.464 -> p = 1 - 3.464 / sqrt(14) = 0.0742 (not below 0.05).
    assert paired_p_value({1: 1.0, 2: 2.0, 3: 3.0}, {1: 0.0, 2: 0.0, 3: 0.0})[1] == pytest.approx(
        1 - 2 * math.sqrt(3) / math.sqrt(14))
    # Only the seeds both have pair up: 2025 and 2026, differences 1 and 3: t = 2 / (sqrt(2) / sqrt(2)) = 2, df 1 ->
    # p = 1 - (2 / pi) * atan(2) = 0.2952.
    n, p = paired_p_value({2024: 9.0, 2025: 11.0, 2026: 13.0}, {2025: 10.0, 2026: 10.0, 2027: 0.0})
    assert n == 2 and p == pytest.approx(1 - 2 / math.pi * math.atan(2)) and p == pytest.approx(0.2952, abs=1e-4)


def test_paired_p_value_without_a_test():
    assert paired_p_value({2024: 5.0}, {2024: 1.0, 2025: 2.0}) == (1, pytest.approx(math.nan, nan_ok=True))
    n, p = paired_p_value({1: 3.0, 2: 4.0}, {1: 3.0, 2: 4.0})   # no difference at all: no evidence either way
    assert n == 2 and math.isnan(p)
    # The same lead on every seed (up to float rounding: 0.6 - 0.2 and 0.7 - 0.3): no variation, t infinite, p = 0.
    assert paired_p_value({1: 0.6, 2: 0.7}, {1: 0.2, 2: 0.3}) == (2, 0.0)


def two_method_model(x_values, y_values, seeds=SEEDS):
    """x and y on the one pair A→C; values per seed (None: the run failed)."""
    runs = [(method, "A→C", seed, "done" if v is not None else "failed", v)
            for method, values in (("x", x_values), ("y", y_values)) for seed, v in zip(seeds, values)]
    return aggregate(tidy_frame(runs), closed_spec(pairs=["A→C"], expected_seeds=list(seeds)))


def test_a_significant_best_is_marked_in_markdown_latex_and_csv():
    # x - y per seed: 2, 3, 4 (×100) -> p = 0.0351 < 0.05 (see above). A single pair: Avg has the same values.
    model = two_method_model((0.42, 0.53, 0.64), (0.40, 0.50, 0.60))
    for column in ("A→C", "Avg"):
        test = model.significance[(column, 0)]
        assert (test.best, test.runner_up, test.n_paired) == ("x", ("y",), 3)
        assert test.p_value == pytest.approx(t_two_sided_p([2, 3, 4])) and test.significant
        assert model.cell("x", column).significant == [True] and model.cell("y", column).significant == [False]
    assert "| X        |  **53.0 ± 11.0**†  |" in to_markdown(model)   # x: 42, 53, 64 -> 53.0 ± 11.0
    assert r"\textbf{53.0 $\pm$ 11.0}$^\dagger$ &" in to_latex(model)
    frame = to_csv_frame(model)
    best = frame[(frame["method"] == "x") & (frame["pair"] == "A→C")].iloc[0]
    other = frame[(frame["method"] == "y") & (frame["pair"] == "A→C")].iloc[0]
    assert bool(best["significant"]) and best["p_value"] == pytest.approx(0.0351, abs=1e-4)
    assert not other["significant"] and math.isnan(other["p_value"])


def test_a_best_that_is_not_significant_is_not_marked():
    # x - y per seed: 1, 2, 3 -> p = 0.0742 >= 0.05.
    model = two_method_model((0.41, 0.52, 0.63), (0.40, 0.50, 0.60))
    test = model.significance[("A→C", 0)]
    assert test.p_value == pytest.approx(t_two_sided_p([1, 2, 3])) and not test.significant
    assert "†" not in to_markdown(model).split("\n\n")[1]   # the table (the caption explains the mark)


def test_no_test_with_fewer_than_two_paired_seeds():
    # x done on 2024 and 2025, y only on 2026: no seed pairs them, so no test and no mark, however large the lead.
    model = two_method_model((0.90, 0.91, None), (None, None, 0.10))
    test = model.significance[("A→C", 0)]
    assert test.n_paired == 0 and math.isnan(test.p_value) and not test.significant
    assert model.cell("x", "A→C").significant == [False]
    avg_test = model.significance[("Avg", 0)]   # the same for Avg: x has its seeds 2024-2025, y 2026
    assert avg_test.n_paired == 0 and not avg_test.significant and model.cell("x", "Avg").marks == ["best"]
    assert "†" not in to_markdown(model).split("\n\n")[1]


def test_tied_best_is_not_tested_and_tied_runner_ups_are_all_tested():
    # A→C: x 20, y 60, z 40 -> y best, z second; C→A: x and z tie for best (30.0) -> no test.
    model = three_method_model()
    assert ("C→A", 0) not in model.significance
    # Two runner-ups: w ties z at 40.0 on A→C; y - z per seed 10, 20, 30 (t = 2 sqrt(3), p = 0.0742) and y - w per
    # seed 19, 20, 21 (t = 20 sqrt(3), p = 0.0008): the best must beat both, so the larger p counts.
    runs = HAND_RUNS + [("z", "A→C", s, "done", v) for s, v in zip(SEEDS, (0.40, 0.40, 0.40))] + [
        ("w", "A→C", s, "done", v) for s, v in zip(SEEDS, (0.31, 0.40, 0.49))]
    model = aggregate(tidy_frame(runs), closed_spec(methods=["x", "y", "z", "w"], pairs=["A→C"]))
    assert model.cell("w", "A→C").marks == ["second"] and model.cell("z", "A→C").marks == ["second"]
    test = model.significance[("A→C", 0)]
    assert test.runner_up == ("z", "w")
    assert test.p_value == pytest.approx(t_two_sided_p([10, 20, 30]))
    assert test.p_value == pytest.approx(0.0742, abs=1e-4)
    assert t_two_sided_p([19, 20, 21]) == pytest.approx(0.0008, abs=1e-4)
    assert not test.significant


def test_caption_names_the_test_alpha_and_the_power(hand_model):
    caption = hand_model.caption
    assert "†: the best is significantly above the second best (two-sided paired t-test over the seeds both have, " \
           "α=0.05); with n=3 seeds the test has little power" in caption
    assert r"$^\dagger$: the best is significantly above" in to_latex(hand_model)
    assert r"$\alpha$=0.05" in to_latex(hand_model)


# ---------------------------------------------------------------------------------------------------------------------
# Open-set cells
# ---------------------------------------------------------------------------------------------------------------------

OPEN_METRICS = ("shared_map_all", "open_set_acc")


def open_model():
    # x: mAP 30 on both seeds, Acc 60, 70 (mean 65, std 7.07); y: mAP 40, 50 (45 ± 7.1), Acc 50 on both.
    runs = [
        ("x", "A→C", 2024, "done", {"shared_map_all": 0.30, "open_set_acc": 0.60}),
        ("x", "A→C", 2025, "done", {"shared_map_all": 0.30, "open_set_acc": 0.70}),
        ("y", "A→C", 2024, "done", {"shared_map_all": 0.40, "open_set_acc": 0.50}),
        ("y", "A→C", 2025, "done", {"shared_map_all": 0.50, "open_set_acc": 0.50}),
    ]
    spec = TableSpec(
        title="Open-set test", dataset="synthetic", setting="open", methods=["x", "y"],
        method_labels={"x": "X", "y": "Y"}, pairs=["A→C"], cell_metrics=list(OPEN_METRICS),
        metric_description="Shared-set mAP@All / Open-set Acc", expected_seeds=[2024, 2025],
    )
    return aggregate(tidy_frame(runs, setting="open", metrics=OPEN_METRICS), spec)


def test_open_set_cells_show_two_numbers_each_ranked_on_its_own():
    model = open_model()
    x, y = model.cell("x", "A→C"), model.cell("y", "A→C")
    assert x.marks == ["second", "best"] and y.marks == ["best", "second"]
    markdown = to_markdown(model)
    assert "<u>30.0 ± 0.0</u> / **65.0 ± 7.1**" in markdown
    assert "**45.0 ± 7.1** / <u>50.0 ± 0.0</u>" in markdown
    assert "Each cell reads mAP / Acc." in markdown
    latex = to_latex(model)
    assert r"\underline{30.0 $\pm$ 0.0} / \textbf{65.0 $\pm$ 7.1}" in latex


# ---------------------------------------------------------------------------------------------------------------------
# Escaping, caption, CSV
# ---------------------------------------------------------------------------------------------------------------------

def test_latex_escape_of_every_special_character():
    assert latex_escape("my_method & co") == r"my\_method \& co"
    assert latex_escape(r"a%b$c#d{e}f~g^h\i") == (
        r"a\%b\$c\#d\{e\}f\textasciitilde{}g\textasciicircum{}h\textbackslash{}i"
    )
    assert latex_escape("Ph→Sk ± 1") == r"Ph$\rightarrow$Sk $\pm$ 1"


def test_names_are_escaped_in_latex_and_markdown():
    spec = closed_spec(method_labels={"x": "my_method & co", "y": "Y"})
    model = aggregate(tidy_frame(HAND_RUNS), spec)
    latex = to_latex(model)
    assert r"my\_method \& co & " in latex
    assert "my_method & co" not in latex
    assert r"A$\rightarrow$C & C$\rightarrow$A & Avg \\" in latex
    assert r"my\_method & co" in to_markdown(model)


def test_caption_states_metric_statistic_seeds_and_scale(hand_model):
    caption = hand_model.caption
    assert caption.startswith("Closed-set test. mAP@All.")
    assert "mean ± std (sample std, ddof=1) over n=3 seeds (2024, 2025, 2026)" in caption
    assert "×100" in caption
    latex = to_latex(hand_model)
    assert r"mean $\pm$ std (sample std, ddof=1) over n=3 seeds" in latex
    assert r"\label{tab:synthetic-closed-map_all_coda}" in latex
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{table}", r"\end{table}"):
        assert command in latex


def test_csv_frame_holds_the_aggregated_numbers(hand_model):
    frame = to_csv_frame(hand_model)
    assert len(frame) == 2 * 3  # 2 methods x (2 pairs + Avg) x 1 metric
    row = frame[(frame["method"] == "y") & (frame["pair"] == "Avg")].iloc[0]
    assert (row["mean"], row["std"], row["n"], row["n_expected"]) == (
        pytest.approx(40.0), pytest.approx(math.sqrt(50)), 2, 3)
    assert row["metric"] == "map_all_coda"


def test_load_tidy_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        load_tidy(tmp_path / "nothere.csv")


def test_tidy_csv_round_trip(tmp_path):
    frame = tidy_frame(HAND_RUNS)
    frame.loc[0, "run_id"] = "1e05"  # a hash that looks like a number stays a string
    path = save_tidy(frame, tmp_path / "sub" / "tidy.csv")
    loaded = load_tidy(path)
    assert loaded["run_id"].iloc[0] == "1e05"
    assert loaded["seed"].tolist() == frame["seed"].tolist()
    pd.testing.assert_series_equal(loaded["value"], frame["value"].astype(float))
    assert [p.name for p in path.parent.iterdir()] == ["tidy.csv"]  # no temporary file left


# ---------------------------------------------------------------------------------------------------------------------
# Golden files and the report on disk
# ---------------------------------------------------------------------------------------------------------------------

LABELS = {"pretrained": "Pretrained (init)", "cds": "CDS", "dgdir": "DGDIR", "uem": "UEM (Ours)"}
SMALL_PAIRS = ["Ph→Sk", "Sk→Ph"]


def small_suite_models():
    """A closed-set table (one failed and one incomplete run, DGDIR never run) and an open-set one."""
    closed_values = {  # (method, pair): values of seeds 2024, 2025, 2026; None where the run is not done
        ("pretrained", "Ph→Sk"): (0.312, 0.312, 0.312), ("pretrained", "Sk→Ph"): (0.284, 0.284, 0.284),
        ("cds", "Ph→Sk"): (0.401, 0.416, 0.392), ("cds", "Sk→Ph"): (0.354, 0.364, None),
        ("uem", "Ph→Sk"): (0.468, 0.455, 0.471), ("uem", "Sk→Ph"): (0.402, None, 0.418),
    }
    closed_status = {("cds", "Sk→Ph", 2026): "failed", ("uem", "Sk→Ph", 2025): "incomplete"}
    closed_runs = [
        (method, pair, seed, closed_status.get((method, pair, seed), "done"), value)
        for (method, pair), values in closed_values.items() for seed, value in zip(SEEDS, values)
    ] + [("dgdir", pair, seed, "missing", None) for pair in SMALL_PAIRS for seed in SEEDS]

    open_values = {  # (method, pair): (shared mAP, open-set Acc) of seeds 2024, 2025, 2026
        ("cds", "Ph→Sk"): ((0.352, 0.361, 0.340), (0.581, 0.602, 0.575)),
        ("cds", "Sk→Ph"): ((0.310, 0.322, 0.305), (0.620, 0.611, 0.633)),
        ("uem", "Ph→Sk"): ((0.421, 0.433, 0.418), (0.812, 0.799, 0.825)),
        ("uem", "Sk→Ph"): ((0.377, 0.360, 0.381), (0.790, 0.805, 0.781)),
        ("pretrained", "Ph→Sk"): ((0.298, 0.298, 0.298), (0.610, 0.610, 0.610)),
        ("pretrained", "Sk→Ph"): ((0.276, 0.276, 0.276), (0.646, 0.646, 0.646)),
    }
    open_runs = [
        (method, pair, seed, "done", {"shared_map_all": m, "open_set_acc": a})
        for (method, pair), (maps, accs) in open_values.items() for seed, m, a in zip(SEEDS, maps, accs)
    ]
    frame = pd.concat([
        tidy_frame(closed_runs),
        tidy_frame(open_runs, setting="open", metrics=OPEN_METRICS),
    ], ignore_index=True)

    common = dict(
        dataset="synthetic", methods=["pretrained", "cds", "dgdir", "uem"], method_labels=LABELS, pairs=SMALL_PAIRS,
        expected_seeds=SEEDS,
    )
    closed = TableSpec(
        title="Close-set retrieval on the synthetic dataset", setting="closed", cell_metrics=["map_all_coda"],
        metric_description="mAP@All (VOC-interpolated AP, class-balanced mean, following CoDA)", **common,
    )
    open_set = TableSpec(
        title="Open-set retrieval on the synthetic dataset", setting="open", cell_metrics=list(OPEN_METRICS),
        metric_description="Shared-set mAP@All and Open-set Acc (fraction of private-class queries returned as null)",
        **{**common, "methods": ["pretrained", "cds", "uem"]},
    )
    return [aggregate(frame, closed), aggregate(frame, open_set)]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN_DIR / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing; create it with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"rendering differs from {path} (UPDATE_GOLDEN=1 to accept)"


def test_golden_markdown():
    check_golden("report_small.md", render.suite_markdown("small", small_suite_models()))


def test_golden_latex():
    check_golden("report_small.tex", render.suite_latex(small_suite_models()))


def test_small_suite_numbers():
    closed, open_set = small_suite_models()
    # uem, Sk→Ph: 40.2 and 41.8 (2025 incomplete) -> 41.0 ± 1.13, n=2.
    s = closed.cell("uem", "Sk→Ph").summaries[0]
    assert (s.mean, s.std, s.n) == (pytest.approx(41.0), pytest.approx(1.6 / math.sqrt(2)), 2)
    # uem, Avg: only 2024 (46.8 + 40.2)/2 = 43.5 and 2026 (47.1 + 41.8)/2 = 44.45 -> 43.975, n=2.
    s = closed.cell("uem", "Avg").summaries[0]
    assert (s.mean, s.n) == (pytest.approx(43.975), 2)
    # cds, Avg: 2024 (40.1 + 35.4)/2 = 37.75 and 2025 (41.6 + 36.4)/2 = 39.0 -> 38.375, std 1.25/sqrt(2) = 0.88, n=2.
    s = closed.cell("cds", "Avg").summaries[0]
    assert (s.mean, s.std, s.n) == (pytest.approx(38.375), pytest.approx(1.25 / math.sqrt(2)), 2)
    # open, uem Acc on Ph→Sk: 81.2 79.9 82.5 -> 81.2 ± 1.3.
    s = open_set.cell("uem", "Ph→Sk").summaries[1]
    assert (s.mean, s.std) == (pytest.approx(81.2), pytest.approx(1.3))


# ---------------------------------------------------------------------------------------------------------------------
# Tables of averages: the summary and the ablation table
# ---------------------------------------------------------------------------------------------------------------------

ABLATION_LABELS = {"pretrained": "Pretrained (init)", "uem_no_pm": "w/o PM", "uem_no_sn2m": "w/o SN²M",
                   "uem": "UEM (Ours)"}
# (dataset, method) -> pair -> (shared mAP of seeds 2024, 2025, 2026), (open-set Acc of the same); None: run failed.
ABLATION_VALUES = {
    ("synthetic", "pretrained"): {"Ph→Sk": ((0.30, 0.30, 0.30), (0.50, 0.50, 0.50)),
                                  "Sk→Ph": ((0.28, 0.28, 0.28), (0.52, 0.52, 0.52))},
    ("synthetic", "uem_no_pm"): {"Ph→Sk": ((0.40, 0.42, 0.38), (0.80, 0.78, 0.82)),
                                 "Sk→Ph": ((0.36, 0.35, 0.37), (0.75, 0.77, 0.76))},
    ("synthetic", "uem_no_sn2m"): {"Ph→Sk": ((0.41, 0.43, 0.40), (0.85, 0.86, 0.84)),
                                   "Sk→Ph": ((0.37, 0.38, 0.36), (0.83, 0.80, 0.81))},
    ("synthetic", "uem"): {"Ph→Sk": ((0.44, 0.46, 0.45), (0.90, 0.91, 0.92)),
                           "Sk→Ph": ((0.40, 0.41, 0.42), (0.88, 0.90, 0.89))},
    ("office31", "uem_no_pm"): {"A→D": ((0.68, 0.69, 0.67), (0.78, 0.79, 0.80)),
                                "D→A": ((0.66, 0.68, 0.67), (0.77, 0.79, 0.78))},
    ("office31", "uem_no_sn2m"): {"A→D": ((0.74, 0.75, 0.76), (0.88, 0.89, 0.90)),
                                  "D→A": ((0.73, 0.74, 0.75), (0.86, 0.88, 0.87))},
    ("office31", "uem"): {"A→D": ((0.77, 0.78, 0.76), (0.92, 0.93, 0.91)),
                          "D→A": ((0.76, 0.78, None), (0.91, 0.94, None))},
}
AVERAGES_NOTE = "Each column: the Avg of that dataset and setting"


def ablation_source(dataset: str, pairs: list[str]):
    """The open-set table of the ablation suite of one dataset (the pretrained row of office31 was never run)."""
    runs = []
    for (data, method), by_pair in ABLATION_VALUES.items():
        if data != dataset:
            continue
        for pair, (maps, accs) in by_pair.items():
            for seed, m, a in zip(SEEDS, maps, accs):
                done = m is not None
                runs.append((method, pair, seed, "done" if done else "failed",
                             {"shared_map_all": m, "open_set_acc": a} if done else None))
    spec = TableSpec(title=f"Ablation on {dataset}", dataset=dataset, setting="open", methods=list(ABLATION_LABELS),
                     method_labels=ABLATION_LABELS, pairs=pairs, cell_metrics=list(OPEN_METRICS),
                     metric_description="Shared-set mAP@All and Open-set Acc", expected_seeds=SEEDS)
    return aggregate(tidy_frame(runs, dataset=dataset, setting="open", metrics=OPEN_METRICS), spec)


def averages_models():
    """The small suite's closed and open tables as the columns of a summary (DGDIR, never run, left out as the
    command line does), and an ablation table over two datasets."""
    closed, open_set = small_suite_models()
    summary = combine_averages(
        "Summary of the small suite", "summary", [("Synthetic closed", closed), ("Synthetic open", open_set)],
        methods=["pretrained", "cds", "uem"], method_labels=LABELS,
        metric_description="mAP@All; open setting: shared-set mAP@All and Open-set Acc", caption_note=AVERAGES_NOTE)
    ablation = combine_averages(
        "Ablation of UEM", "ablation",
        [("Office-31", ablation_source("office31", ["A→D", "D→A"])),
         ("Synthetic", ablation_source("synthetic", SMALL_PAIRS))],
        methods=list(ABLATION_LABELS), method_labels=ABLATION_LABELS,
        metric_description="Shared-set mAP@All and Open-set Acc", caption_note=AVERAGES_NOTE)
    return summary, ablation


def test_table_of_averages_takes_each_avg_cell_as_it_is():
    closed, open_set = small_suite_models()
    summary, _ = averages_models()
    assert summary.columns == ["Synthetic closed", "Synthetic open"]
    assert summary.spec.metrics_of("Synthetic closed") == ["map_all_coda"]
    assert summary.spec.metrics_of("Synthetic open") == ["shared_map_all", "open_set_acc"]
    # cds, closed Avg: seeds 2024 (40.1 + 35.4)/2 = 37.75 and 2025 (41.6 + 36.4)/2 = 39.0 -> 38.375, n=2.
    cell = summary.cell("cds", "Synthetic closed")
    assert (cell.summaries[0].mean, cell.summaries[0].n) == (pytest.approx(38.375), 2)
    assert cell.summaries == closed.cell("cds", "Avg").summaries
    assert summary.cell("uem", "Synthetic open").summaries == open_set.cell("uem", "Avg").summaries
    assert "Synthetic closed: mAP@All. Synthetic open: mAP / Acc." in summary.caption
    assert "Avg: the mean over the pairs" not in summary.caption and AVERAGES_NOTE in summary.caption


def test_table_of_averages_footnotes_count_the_runs_behind_a_cell():
    _, ablation = averages_models()
    # office31 UEM: D→A failed on 2026, so the average has seeds 2024 and 2025 of 3 (runs: 5 done, 1 failed);
    # office31 pretrained: no run of its 2 pairs x 3 seeds.
    texts = dict(ablation.footnotes)
    uem = ablation.cell("uem", "Office-31")
    assert texts[uem.footnote_marker] == (
        "n=2 of 3 seeds: only seeds with every pair done enter the average (runs: 5 done, 1 failed).")
    pretrained = ablation.cell("pretrained", "Office-31")
    assert pretrained.is_missing
    assert texts[pretrained.footnote_marker] == "n=0 of 3 seeds: no seed has every pair done (runs: 6 missing)."
    assert has_runs(ablation, "pretrained") and not has_runs(ablation, "pretrained", "Office-31")


def test_table_of_averages_ranks_and_tests_its_own_columns():
    _, ablation = averages_models()
    # Synthetic, shared mAP, per-seed averages over the two pairs:
    #   UEM (44+40)/2 = 42, (46+41)/2 = 43.5, (45+42)/2 = 43.5 -> 43.0 (best)
    #   w/o SN²M (41+37)/2 = 39, (43+38)/2 = 40.5, (40+36)/2 = 38 -> 39.2 (second); w/o PM 38.0; pretrained 29.0.
    # Differences 3, 3, 5.5: mean 3.833, sd 1.443, t = 4.6, df 2 -> p = 1 - 4.6 / sqrt(2 + 4.6^2) = 0.0442 < 0.05.
    cell = ablation.cell("uem", "Synthetic")
    assert cell.summaries[0].mean == pytest.approx(43.0) and cell.marks[0] == "best"
    assert ablation.cell("uem_no_sn2m", "Synthetic").marks[0] == "second"
    test = ablation.significance[("Synthetic", 0)]
    assert (test.best, test.runner_up, test.n_paired) == ("uem", ("uem_no_sn2m",), 3)
    assert test.p_value == pytest.approx(t_two_sided_p([3, 3, 5.5])) and test.p_value == pytest.approx(0.0442, abs=1e-4)
    assert cell.significant[0]
    assert "**43.0 ± 0.9**†" in to_markdown(ablation)
    # Office-31 has no pretrained number: the ranking is among the three others. Shared mAP over the seeds UEM has
    # (D→A failed on 2026): UEM (77+76)/2 = 76.5, (78+78)/2 = 78; w/o SN²M (74+73)/2 = 73.5, (75+74)/2 = 74.5 ->
    # differences 3, 3.5: t = 3.25 / (0.3536 / sqrt(2)) = 13, df 1 -> p = 1 - (2/pi) atan(13) = 0.0489.
    assert ablation.cell("uem", "Office-31").marks == ["best", "best"]
    test = ablation.significance[("Office-31", 0)]
    assert test.n_paired == 2 and test.p_value == pytest.approx(1 - 2 / math.pi * math.atan(13))
    assert test.p_value == pytest.approx(0.0489, abs=1e-4) and test.significant


def test_table_of_averages_csv_names_the_source_of_each_column():
    summary, ablation = averages_models()
    frame = to_csv_frame(ablation)
    row = frame[(frame["method"] == "uem") & (frame["dataset"] == "synthetic") & (frame["metric"] == "open_set_acc")]
    # UEM synthetic Acc per seed: (90+88)/2 = 89, (91+90)/2 = 90.5, (92+89)/2 = 90.5 -> 90.0.
    assert row[["setting", "pair"]].values.tolist() == [["open", "Avg"]]
    assert row["mean"].iloc[0] == pytest.approx(90.0)
    assert len(to_csv_frame(summary)) == 3 * (1 + 2)   # 3 methods x (one closed number + two open numbers)


def test_table_of_averages_refuses_a_source_without_avg():
    source = aggregate(tidy_frame(HAND_RUNS), closed_spec(show_avg=False))
    with pytest.raises(ValueError, match="has no Avg column"):
        combine_averages("t", "k", [("C", source)], methods=["x"], method_labels={}, metric_description="m")


def test_golden_averages_markdown():
    check_golden("averages_small.md", render.suite_markdown("summary", list(averages_models())))


def test_golden_averages_latex():
    check_golden("averages_small.tex", render.suite_latex(list(averages_models())))


def test_write_report_writes_md_tex_csv(tmp_path):
    models = small_suite_models()
    paths = write_report("small", models, tmp_path / "tables")
    assert set(paths) == {"md", "tex", "csv", "fragments"}
    assert [paths[k].name for k in ("md", "tex", "csv")] == ["small.md", "small.tex", "small.csv"]
    assert [p.name for p in paths["fragments"]] == ["small_table_closed.tex", "small_table_open.tex"]
    tex = paths["tex"].read_text(encoding="utf-8")
    assert tex.startswith(r"\documentclass")
    assert tex.count(r"\begin{table}") == 2
    assert r"\begin{document}" in tex and tex.rstrip().endswith(r"\end{document}")
    markdown = paths["md"].read_text(encoding="utf-8")
    assert markdown.count("| Method") == 2
    frame = pd.read_csv(paths["csv"])
    assert set(frame["table"]) == {"synthetic-closed-map_all_coda", "synthetic-open-shared_map_all-open_set_acc"}
    # closed: 4 methods x 3 columns x 1 metric; open: 3 methods x 3 columns x 2 metrics.
    assert len(frame) == 4 * 3 + 3 * 3 * 2
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["small.csv", "small.md", "small.tex",
                                                                       "small_table_closed.tex", "small_table_open.tex"]


def test_write_report_refuses_a_path_as_suite_name(tmp_path):
    with pytest.raises(ValueError, match="not a plain file name"):
        write_report("../elsewhere", small_suite_models(), tmp_path)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (TeX Live comes in CI)")
def test_latex_document_compiles_with_pdflatex(tmp_path):
    """Every table kind: per suite, summary, ablation, and the companions beside the paper's numbers, with names that
    need escaping."""
    from benchmark.paper import ABLATION_SETTING, compare_with_paper, load_paper_results

    tricky = {"x": r"my_method & co %#$~^\{}", "y": "Y"}
    escaped = aggregate(tidy_frame(HAND_RUNS), closed_spec(method_labels=tricky))
    escaped_averages = combine_averages(
        "Summary of data_set & co", "summary_&", [("data_set & co closed", escaped), ("Ph→Sk_& #2", escaped)],
        methods=["x", "y"], method_labels=tricky, metric_description="mAP@All_&", caption_note="Note_&%")
    paper = load_paper_results()
    summary, ablation = averages_models()
    companions = [compare_with_paper(model, paper).model
                  for model in (*small_suite_models(), summary, escaped_averages)]
    companions.append(compare_with_paper(ablation, paper, ABLATION_SETTING).model)
    document = latex_document([to_latex(model) for model in (*small_suite_models(), escaped, summary, ablation,
                                                              escaped_averages, *companions)])
    (tmp_path / "report.tex").write_text(document, encoding="utf-8")
    pdf = compile_pdf(tmp_path / "report.tex")
    assert pdf == tmp_path / "report.pdf" and pdf.read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.pdf", "report.tex"]     # no aux or log left


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (TeX Live comes in CI)")
def test_a_latex_error_is_reported_with_pdflatex_own_lines_and_no_pdf(tmp_path):
    (tmp_path / "broken.tex").write_text(latex_document([r"\begin{table}\undefinedmacro\end{table}"]))
    with pytest.raises(latex_pdf.LatexError, match=r"broken.tex: ! Undefined control sequence") as error:
        compile_pdf(tmp_path / "broken.tex")
    assert not (tmp_path / "broken.pdf").exists()
    # pdflatex's log is kept beside the document for the bug report, and removed once the document compiles.
    assert error.value.log_path == tmp_path / "broken.pdflatex.log"
    assert "Undefined control sequence" in error.value.log_path.read_text()
    (tmp_path / "broken.tex").write_text(latex_document(["Fixed."]))
    assert compile_pdf(tmp_path / "broken.tex") == tmp_path / "broken.pdf"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pdf", "broken.tex"]


def test_without_pdflatex_no_pdf_is_made(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    (tmp_path / "a.tex").write_text(latex_document([]))
    assert compile_pdf(tmp_path / "a.tex") is None and not (tmp_path / "a.pdf").exists()


def test_open_suites_get_both_detection_tables(tmp_path):
    from benchmark.collect import table_specs
    from benchmark.suites import plan

    from .conftest import tiny_suite
    suite = tiny_suite("test_tables_open", settings=("partial", "open"), methods=["pretrained", "uem"])
    tables = table_specs(suite.name, plan(suite))
    assert [t.key for t in tables] == [None, None, "synthetic-open-detection-own", "synthetic-open-detection-b2"]
    assert [t.cell_metrics for t in tables] == [
        ["map_all_coda"], ["shared_map_all", "open_set_acc"], ["open_set_acc", "detection_acc"],
        ["default_detector_open_set_acc", "default_detector_detection_acc"]]
    assert all(t.methods == ["pretrained", "uem"] for t in tables)


# ---------------------------------------------------------------------------------------------------------------------
# Collapse marks
# ---------------------------------------------------------------------------------------------------------------------

def with_diagnostics(runs, collapsed):
    """HAND_RUNS' values plus stored diagnostics: the runs in `collapsed` (method, pair, seed) have a retrieval domain
    of effective rank 1.02 (every feature nearly one vector), the others 37.5; the query domains 20."""
    out = []
    for method, pair, seed, status, value in runs:
        values = None if value is None else {
            "map_all_coda": value, "diag_effective_rank_query": 20.0,
            "diag_effective_rank_retrieval": 1.02 if (method, pair, seed) in collapsed else 37.5,
            "diag_tied_top_k": 0.0}
        out.append((method, pair, seed, status, values))
    return out


def test_cells_of_collapsed_runs_carry_a_footnote_and_the_caption_states_the_rule():
    metrics = ("map_all_coda", "diag_effective_rank_query", "diag_effective_rank_retrieval", "diag_tied_top_k")
    collapsed = {("y", "A→C", 2025), ("y", "A→C", 2026)}
    model = aggregate(tidy_frame(with_diagnostics(HAND_RUNS, collapsed), metrics=metrics), closed_spec())
    cell = model.cell("y", "A→C")
    assert (cell.collapsed_runs, cell.judged_runs) == (2, 3)
    # y's Avg sees 5 done runs (C→A 2026 failed), 2 of them collapsed; x has none.
    assert (model.cell("y", "Avg").collapsed_runs, model.cell("y", "Avg").judged_runs) == (2, 5)
    assert model.cell("x", "A→C").collapsed_runs == 0 and model.cell("x", "A→C").footnote_marker is None
    notes = dict(model.footnotes)
    assert notes[cell.footnote_marker] == "Collapsed: 2 of 3 done runs (rule in the caption)."
    assert "either domain have an effective rank" in model.caption and "below 2" in model.caption
    assert "Collapsed: 2 of 3 done runs" in to_markdown(model) and "Collapsed: 2 of 3 done runs" in to_latex(model)
    # The numbers stay what the protocol measured.
    assert summary(model, "y", "A→C").mean == pytest.approx(60.0)
    # Ties in the top k of more than half of the queries also mark a run; without diagnostics nothing is marked.
    tied = tidy_frame([("x", "A→C", 2024, "done", {"map_all_coda": 0.1, "diag_effective_rank_query": 20.0,
                                                     "diag_effective_rank_retrieval": 20.0, "diag_tied_top_k": 0.75})],
                      metrics=metrics)
    assert aggregate(tied, closed_spec()).cell("x", "A→C").collapsed_runs == 1
    plain = aggregate(tidy_frame(HAND_RUNS), closed_spec())
    assert all(c.judged_runs == 0 for c in plain.cells.values()) and "Collapsed" not in plain.caption


# ---------------------------------------------------------------------------------------------------------------------
# LaTeX in a real paper: layout, labels, names in any script (issue 22)
# ---------------------------------------------------------------------------------------------------------------------

PAPER_METHODS = ["pretrained", "cds", "pcs", "darl", "dn2a", "ucdir", "coda", "dgdir", "uem"]
PAPER_LABELS = {"pretrained": "Pretrained (init)", "cds": "CDS", "pcs": "PCS", "darl": "DARL", "dn2a": "DN2A",
                "ucdir": "UCDIR", "coda": "CoDA", "dgdir": "DGDIR", "uem": "UEM (Ours)"}
OFFICE_HOME_PAIRS = [f"{q}→{r}" for q in "ACPR" for r in "ACPR" if q != r]                      # 12 ordered pairs
DOMAINNET_LIKE_PAIRS = [f"{q}→{r}" for q in ("Cl", "In", "Pa", "Qu", "Re", "Sk")
                        for r in ("Cl", "In", "Pa", "Qu", "Re", "Sk") if q != r]                   # 30 ordered pairs


def paper_sized_model(dataset, setting, pairs, metrics, key=None, title=None, labels=PAPER_LABELS,
                      methods=PAPER_METHODS):
    """Nine methods x `pairs` x 3 seeds, every run done, values spread over 0.1-0.9 (a fixed generator): a table of
    the paper's size, with bold, underline, † and footnote marks (one failed run)."""
    import random
    rng = random.Random(f"{dataset}-{setting}-{len(pairs)}")
    rows = []
    for method in methods:
        for pair in pairs:
            query, retrieval = pair.split("→")
            for seed in SEEDS:
                failed = (method, pair, seed) == (methods[-1], pairs[0], SEEDS[-1])
                for metric in metrics:
                    rows.append({"dataset": dataset, "setting": setting, "query_domain": query,
                                 "retrieval_domain": retrieval, "pair": pair, "method": method, "seed": seed,
                                 "status": "failed" if failed else "done", "metric": metric,
                                 "value": math.nan if failed else rng.uniform(0.1, 0.9),
                                 "run_id": f"{method}-{pair}-{seed}"})
    spec = TableSpec(title=title or f"{setting.capitalize()} retrieval on {dataset}", dataset=dataset,
                     setting=setting, methods=list(methods), method_labels=labels, pairs=list(pairs),
                     cell_metrics=list(metrics), metric_description="mAP@All", expected_seeds=SEEDS, key=key)
    return aggregate(pd.DataFrame(rows, columns=list(tables.TIDY_COLUMNS)), spec)


def office_home_suite_models(setting: str) -> list:
    """The tables of an Office-Home suite as the report makes them: the retrieval table, and for the open setting
    both detection tables."""
    if setting != "open":
        return [paper_sized_model("office_home", setting, OFFICE_HOME_PAIRS, ["map_all_coda"])]
    return [paper_sized_model("office_home", "open", OFFICE_HOME_PAIRS, list(OPEN_METRICS)),
            paper_sized_model("office_home", "open", OFFICE_HOME_PAIRS, ["open_set_acc", "detection_acc"],
                              key="office_home-open-detection-own", title="Open-set detection, own detector"),
            paper_sized_model("office_home", "open", OFFICE_HOME_PAIRS,
                              ["default_detector_open_set_acc", "default_detector_detection_acc"],
                              key="office_home-open-detection-b2", title="Open-set detection, App. B.2 detector")]


def unicode_model():
    """A folder dataset whose domains are named in Chinese and French, a method labelled with a dollar sign and a
    Greek letter."""
    labels = {**PAPER_LABELS, "uem": "UEM β ($5 and $10)"}
    return paper_sized_model("素描集", "closed", ["素描→photo", "photo→素描", "Éclair→photo"], ["map_all_coda"],
                             labels=labels, title="Close-set retrieval on 素描集 (Café)")


def every_fragment(tmp_path) -> list[Path]:
    """The fragments of every table kind, as write_report makes them: Office-Home (12 pairs) closed, partial and open
    with both detection tables, the open-set and ablation suites' open tables (same table key), a 30-pair table, the
    summary and the ablation table, the companions beside the paper's numbers, and a suite with names in Chinese."""
    from benchmark.paper import compare_with_paper, load_paper_results, write_comparison
    fragments = []
    for setting in ("closed", "partial", "open"):
        fragments += write_report(f"office_home_{setting}", office_home_suite_models(setting), tmp_path)["fragments"]
    fragments += write_report("office_home_ablation", office_home_suite_models("open")[:1], tmp_path)["fragments"]
    fragments += write_report("domainnet_all_pairs", [paper_sized_model("domainnet", "closed", DOMAINNET_LIKE_PAIRS,
                                                                        ["map_all_coda"])], tmp_path)["fragments"]
    fragments += write_report("summary", list(averages_models()), tmp_path)["fragments"]
    paper = load_paper_results()
    comparisons = [compare_with_paper(model, paper) for model in office_home_suite_models("partial")]
    fragments += write_comparison("office_home_partial", comparisons, tmp_path)["fragments"]
    fragments += write_report("unicode_suite", [unicode_model()], tmp_path)["fragments"]
    return fragments


CVPR_LIKE = [r"\documentclass[10pt,twocolumn,letterpaper]{article}",
             r"\usepackage[letterpaper,textwidth=6.875in,textheight=8.875in,columnsep=0.3125in,top=1in]{geometry}",
             r"\usepackage{times}", r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\usepackage{amsmath}"]
NEURIPS_LIKE = [r"\documentclass{article}",
                r"\usepackage[letterpaper,textwidth=5.5in,textheight=9in,top=1in]{geometry}",
                r"\usepackage[utf8]{inputenc}", r"\usepackage[T1]{fontenc}", r"\usepackage{times}",
                r"\usepackage{hyperref}", r"\usepackage{url}", r"\usepackage{booktabs}", r"\usepackage{amsfonts}",
                r"\usepackage{microtype}", r"\usepackage{xcolor}"]
OVERFULL_TOLERANCE_PT = 1.0


def compile_paper(tmp_path: Path, preamble: list[str], fragments: list[Path], labels: list[str]) -> str:
    """A paper that \\inputs every fragment and \\refs every label, compiled twice (the second pass resolves the
    references); returns the log."""
    import subprocess
    body = ["Tables " + ", ".join(rf"\ref{{{label}}}" for label in labels) + "."]
    for fragment in fragments:      # \clearpage: LaTeX holds at most 18 floats waiting for a place
        body += [rf"\input{{{fragment.stem}}}", r"\clearpage"]
    paper = tmp_path / "paper.tex"
    paper.write_text("\n".join([*preamble, r"\begin{document}", r"\section{Results}", *body, r"\end{document}", ""]),
                     encoding="utf-8")
    for _ in range(2):
        result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                                capture_output=True, text=True, errors="replace", timeout=300)
        assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 0
    return (tmp_path / "paper.log").read_text(encoding="utf-8", errors="replace")


@pytest.mark.slow
def test_fragments_compile_in_two_column_and_one_column_papers_readable_and_labelled_once(tmp_path):
    import re
    fragments = every_fragment(tmp_path)
    texts = {path.name: path.read_text(encoding="utf-8") for path in fragments}
    labels = [label for text in texts.values() for label in re.findall(r"\\label\{([^}]*)\}", text)]
    # One label per table and part, never two alike: the open-set suite's table and the ablation suite's open table
    # have the same table key, and their labels differ by the suite.
    assert len(labels) == len(set(labels))
    assert {"tab:office_home_open-table", "tab:office_home_ablation-table", "tab:summary-ablation",
            "tab:office_home_partial_vs_paper-table", "tab:unicode_suite-table"} <= set(labels)
    for name, text in texts.items():
        # Never scaled: no \resizebox or \scalebox; every tabular in \small (9 pt) or \footnotesize (8 pt).
        assert "\\resizebox" not in text and "\\scalebox" not in text, name
        sizes = re.findall(r"\{\\(\w+)%\n\\begin\{tabular\}\{l", text)
        assert sizes and set(sizes) <= {"small", "footnotesize"}, name
        assert sizes == re.findall(r"\{\\(\w+)%\n", text), name
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (.ci/run installs TeX Live)")
    import subprocess
    if subprocess.run(["kpsewhich", "ptmr7t.tfm"], capture_output=True).returncode != 0:
        pytest.skip("Times for pdflatex is not installed (texlive-fonts-recommended; .ci/run installs it)")
    for preamble, folder in ((CVPR_LIKE, "cvpr"), (NEURIPS_LIKE, "neurips")):
        (tmp_path / folder).mkdir()
        for path in fragments:
            shutil.copy(path, tmp_path / folder / path.name)
        log = compile_paper(tmp_path / folder, preamble, fragments, labels)
        assert "multiply defined" not in log and "There were undefined references" not in log, folder
        overfull = [float(points) for points in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]
        assert all(points <= OVERFULL_TOLERANCE_PT for points in overfull), (folder, overfull)
        assert "Float too large" not in log, folder


def test_twelve_pairs_are_split_not_shrunk():
    """The rule of benchmark/latex_layout.py on Office-Home's 12 pairs: too wide for a column and for the 5.5 in text
    at 8 pt, so split into the fewest parts that fit, the pairs shared out in order, Avg in the last part."""
    closed = paper_sized_model("office_home", "closed", OFFICE_HOME_PAIRS, ["map_all_coda"])
    layout = render.latex_layout(closed)
    assert (layout.environment, layout.size) == ("table*", "footnotesize")
    assert layout.parts == [OFFICE_HOME_PAIRS[:4], OFFICE_HOME_PAIRS[4:8], OFFICE_HOME_PAIRS[8:] + ["Avg"]]
    assert all(width <= 5.5 * 72.27 for width in layout.width_pt)
    latex = to_latex(closed, "short", label="tab:oh-table")
    assert latex.count("\\begin{table*}[tp]") == 3 and latex.count("\\footnotesize%") == 3
    assert "Part 1 of 3 (A$\\rightarrow$C to C$\\rightarrow$A)" in latex
    # The first part keeps the table's own label, so \ref{tab:oh-table} works whatever the layout.
    assert re.findall(r"\\label\{([^}]*)\}", latex) == ["tab:oh-table", "tab:oh-table-part1", "tab:oh-table-part2",
                                                        "tab:oh-table-part3"]
    # Each part's footnotes are those its cells mark: the failed run is in A→C (part 1) and Avg (part 3).
    first, _, last = latex.split("\\end{table*}")[:3]
    assert first.count("\\textsuperscript{a}~") == 1 and "\\textsuperscript{b}~" not in first
    assert last.count("\\textsuperscript{b}~") == 1 and "\\textsuperscript{a}~" not in last
    # Two pairs fit one column.
    small, _ = small_suite_models()
    assert (render.latex_layout(small).environment, len(render.latex_layout(small).parts)) == ("table", 1)


def test_layout_rule_on_hand_computed_widths():
    from benchmark.latex_layout import TIMES, PaperLayout, choose_layout, measure_bold, table_width_pt, text_width_em
    # Times (ptmr7t): "10.0" = 3 digits x 0.5 + "." 0.25 = 1.75 em; bold x 1.07 = 1.8725 em; "AB" = 2 x 0.667 em.
    assert text_width_em("10.0", TIMES) == pytest.approx(1.75)
    assert text_width_em(measure_bold("10.0"), TIMES) == pytest.approx(1.8725)
    assert text_width_em("10.0\nAB", TIMES) == pytest.approx(1.75)          # the wider line of a two-line cell
    # Two columns at 10 pt: 10 x 1.75 + 12 (two \tabcolsep) twice = 59 pt.
    assert table_width_pt([["10.0"], ["10.0"]], 10.0, TIMES) == pytest.approx(59.0)
    method = ["Method"]                   # M 0.889 + 5 lower case x 0.459 = 3.184 em
    columns = {name: ["10.0"] for name in ("a", "b", "c", "d")}
    # At 9 pt: 3.184 x 9 + 12 = 40.66; each column 1.75 x 9 + 12 = 27.75; all four: 151.66 pt. At 8 pt: 37.47 + 4 x
    # 26 = 141.47 pt. A column of 152 pt takes it at \small, one of 145 pt at \footnotesize, one of 140 pt does not.
    assert choose_layout(columns, method, ["d"], PaperLayout(152, 500)).size == "small"
    assert (choose_layout(columns, method, ["d"], PaperLayout(145, 500)).size,
            choose_layout(columns, method, ["d"], PaperLayout(145, 500)).environment) == ("footnotesize", "table")
    wide = choose_layout(columns, method, ["d"], PaperLayout(140, 152))
    assert (wide.environment, wide.size, wide.parts) == ("table*", "small", [["a", "b", "c", "d"]])
    # Text of 100 pt: two parts of 37.47 + 2 x 26 = 89.47 pt fit at 8 pt; "d" (the Avg) stays in the last part.
    split = choose_layout(columns, method, ["d"], PaperLayout(60, 100))
    assert (split.environment, split.size, split.parts) == ("table*", "footnotesize", [["a", "b"], ["c", "d"]])
    # Three columns before the Avg in two parts: the first part gets the extra one.
    three = choose_layout({"a": ["10.0"], "b": ["10.0"], "c": ["10.0"], "Avg": ["10.0"]}, method, ["Avg"],
                          PaperLayout(60, 125))
    assert three.parts == [["a", "b"], ["c", "Avg"]]


def test_latex_escape_writes_accents_as_commands_and_transliterates_other_scripts():
    from benchmark.latex_text import latex_label, transliterations
    assert latex_escape("$5 and $10 bills") == r"\$5 and \$10 bills"
    assert latex_escape("Éclair crème") == r"\'{E}clair cr\`{e}me"
    assert latex_escape("Łódź, straße, Ærø") == r"\L{}\'{o}d\'{z}, stra\ss{}e, \AE{}r\o{}"
    assert latex_escape("naïve ő ç") == r"na\"{\i}ve \H{o} \c{c}"       # dotless i under an accent above
    assert latex_escape("e\u0301") == r"\'{e}"                          # decomposed: composed first
    assert latex_escape("β-VAE Ω") == r"$\beta$-VAE $\Omega$"
    # What pdflatex cannot set without packages a paper may not load: transliterated (anyascii), escaped too.
    assert latex_escape("素描→photo") == r"SuMiao$\rightarrow$photo"
    assert latex_escape("Москва_1") == r"Moskva\_1"
    assert transliterations(["素描→photo", "Москва", "Éclair"]) == {"素描": "SuMiao", "Москва": "Moskva"}
    assert latex_label("office_home_open", "table") == "tab:office_home_open-table"
    assert latex_label("素描 suite", "table_open") == "tab:SuMiao-suite-table_open"


def test_names_in_any_script_reach_the_latex_with_a_note_and_stay_intact_elsewhere():
    model = unicode_model()
    latex = to_latex(model, "short", label="tab:u")
    assert "SuMiao$\\rightarrow$photo" in latex and "\\'{E}clair$\\rightarrow$photo" in latex
    assert "UEM $\\beta$ (\\$5 and \\$10)" in latex
    assert "Transliterated to ASCII for pdflatex (the markdown, CSV and HTML reports keep the original): " \
           "SuMiaoJi, SuMiao." in latex
    assert "% Transliterated for pdflatex: 素描 -> SuMiao" in latex     # the original, in a comment
    typeset = "\n".join(line for line in latex.splitlines() if not line.startswith("%"))
    assert typeset.isascii()
    markdown = to_markdown(model)
    assert "素描→photo" in markdown and "UEM β ($5 and $10)" in markdown and "SuMiao" not in markdown
    assert set(to_csv_frame(model)["pair"]) == {"素描→photo", "photo→素描", "Éclair→photo", "Avg"}


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (TeX Live comes in CI)")
def test_standalone_document_with_names_in_any_script_compiles(tmp_path):
    paths = write_report("unicode_suite", [unicode_model(), *small_suite_models()], tmp_path)
    assert compile_pdf(paths["tex"]).read_bytes().startswith(b"%PDF")


def test_fragment_has_a_short_caption_and_the_explanation_under_the_table(tmp_path):
    closed, _ = small_suite_models()
    fragment = write_report("small", [closed], tmp_path)["fragments"][0].read_text()
    assert "\\documentclass" not in fragment and fragment.count("\\begin{table}") == 1
    assert "\\caption{Close-set retrieval on the synthetic dataset: mAP@All (×100), mean ± std over 3 seeds.}" \
        in fragment.replace("$\\times$", "×").replace("$\\pm$", "±")
    note = fragment.split("\\end{tabular}", 1)[1]
    assert note.startswith("\\par}\n\\smallskip\n{\\footnotesize\\raggedright\nmAP@All (VOC-interpolated AP")
    assert "\\textsuperscript{a}~n=2 of 3 seeds (1 failed).\\par" in note      # footnotes wrap under it
    full = render.to_latex(closed, caption="full")
    assert "\\footnotesize\\raggedright\nmAP@All" not in full
    assert "Values" in full.split("\\caption{", 1)[1].split("\\label", 1)[0]
