"""benchmark/kestimators.py (the rules for the cluster count on the grid of separable classes) and `python -m
benchmark.perf elbow`, on cells small enough for a test."""
from __future__ import annotations

from benchmark import perf
from benchmark.kestimators import PREVIOUS, Cell, evaluate_cell, grid_cells, render
from benchmark.perf import d2_chain_elbow


def test_a_cell_reports_every_rule_and_a_non_separable_cell_is_left_out():
    # 32-d, 5 classes of 20 points, noise 0.3, the retrieval domain (2 classes) translated by 1 and re-normalised:
    # plainly separate classes: the silhouette finds K = 5 and 2. The chord elbow finds 5, but never 2, the first K of
    # the range: the curve's distance below its chord is 0 there by construction.
    result = evaluate_cell(Cell(32, 5, 0.3, (20, 20), 1.0), ["silhouette", "elbow"], d2_chain_elbow)
    assert result.accuracy == 1.0 and result.rand_index == [1.0, 1.0]
    assert result.errors["silhouette"] == (0, 0) and result.errors["elbow"][0] == 0 and result.errors["elbow"][1] > 0
    assert set(result.errors) == {PREVIOUS, "silhouette", "elbow"} and result.seconds["path"] > 0
    # 8-d, 20 classes, noise 1.4: a nearest-class-mean classifier is far below 0.99, so the cell judges nothing.
    assert evaluate_cell(Cell(8, 20, 1.4, (20, 20), 0.0), ["silhouette"], d2_chain_elbow) is None
    text = render([result], [Cell(8, 20, 1.4, (20, 20), 0.0)], [PREVIOUS, "silhouette", "elbow"], "header")
    assert "| silhouette " in text and "1 of 1" in text and "Left out" in text and "dim 8 classes 20/10" in text
    # a rule that ran on no cell (the gap statistic is left out above 65 classes) has no row and no column, rather
    # than stopping the tables (it did on `--domainnet --no-grid`)
    text = render([result], [], [PREVIOUS, "silhouette", "elbow", "gap"], "header")
    assert "| gap" not in text and "gap |" not in text and "| silhouette " in text


def test_the_grid_is_the_documented_one():
    # 4 dimensions x 5 class counts x 4 noises, a size pattern and a translation each in rotation; --quick: 128-d.
    cells = grid_cells()
    assert len(cells) == 80 and len(grid_cells(quick=True)) == 20
    assert {c.sizes for c in cells} == {(20, 20), (50, 50), (10, 90)} and {c.shift for c in cells} == {0.0, 1.0}
    assert grid_cells(domainnet=True, grid=False)[0].classes == 345


def test_perf_elbow_times_before_and_now_and_prints_the_k_each_picks(capsys):
    assert perf.main(["elbow", "--points", "300", "--dim", "16", "--classes", "6", "--k-max", "20", "--repeats",
                      "1", "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "before (k-means++ chains x2, chord elbow), K in [2, 20]" in out
    assert "now: bisecting k-means path, K in [2, 35]" in out          # ceil(2 sqrt 300) = 35
    assert "ratio before / now" in out and "K picked on this bank (6 clusters)" in out
