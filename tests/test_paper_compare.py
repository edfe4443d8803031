"""Tests of benchmark/paper.py and of `--compare-paper` / `--summary`: our numbers beside the paper's.

The fixture is a store shaped like a finished office_home_partial suite (the paper's Table 2): 12 pairs x 9 methods x 3
seeds, written through the store API with values chosen from the paper's own numbers, so that every expectation can
be worked out by hand:

    ours(method, pair, seed) = paper mean(method, pair) + SHIFT[method] + (seed - 2025)   (×100; pretrained: 20 + ...)

so a cell's mean is the paper's mean + SHIFT and its std is 1.0; one run (UEM, A→C, seed 2026) failed.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmark import cli, store
from benchmark.collect import table_specs, tidy_frame
from benchmark.paper import (
    ABLATION_SETTING, PAPER_RESULTS_CSV, compare_with_paper, comparable, comparison_csv_frame, load_paper_results,
    paper_pair,
)
from benchmark.errors import UserError
from benchmark.render import markdown_escape, to_latex, to_markdown
from benchmark.tables import METHOD_HEADER, TableSpec, aggregate
from benchmark.suites import get_suite, plan

from .test_reports import OPEN_METRICS, averages_models, check_golden, tidy_frame as hand_tidy_frame

# The suite's default method list, spelled out: other tests register methods of their own in the same session.
NINE_METHODS = ["pretrained", "cds", "pcs", "darl", "dn2a", "ucdir", "coda", "dgdir", "uem"]
PAPER_LABEL = {"cds": "CDS", "pcs": "PCS", "darl": "DARL", "dn2a": "DN2A", "ucdir": "UCDIR", "coda": "CoDA",
               "dgdir": "DGDIR", "uem": "UEM"}
SHIFT = {"cds": -10.0, "pcs": +10.0, "dgdir": -10.0}   # every other method: 0 (ours = the paper's mean)
FAILED_RUN = ("uem", "Art", "Clipart", 2026)


def paper_table_2() -> dict[tuple[str, str], float]:
    """(paper method label, paper pair) -> mean of the paper's Table 2 (Office-Home, partial), read from the CSV."""
    frame = pd.read_csv(PAPER_RESULTS_CSV)
    frame = frame[frame["table"] == "Table 2"]
    return {(r.method, r.pair): float(r.mean) for r in frame.itertuples()}


@pytest.fixture(scope="module")
def office_home_store(tmp_path_factory):
    """The output folder of a finished office_home_partial suite (one failed run), and its plan."""
    output = tmp_path_factory.mktemp("office_home_partial")
    specs = plan(get_suite("office_home_partial"), methods=NINE_METHODS)
    assert len(specs) == 12 * 9 * 3
    paper = paper_table_2()
    for spec in specs:
        run_dir = store.prepare_run_dir(spec, output, {"device": "cpu"})
        if (spec.method, spec.query_domain, spec.retrieval_domain, spec.seed) == FAILED_RUN:
            store.mark_failed(run_dir, "loss became NaN at epoch 3")
            continue
        pair = f"{spec.query_domain[0]}->{spec.retrieval_domain[0]}"   # Art->Clipart is the paper's A->C
        base = 20.0 if spec.method == "pretrained" else paper[(PAPER_LABEL[spec.method], pair)]
        value = (base + SHIFT.get(spec.method, 0.0) + (spec.seed - 2025)) / 100
        store.atomic_write_json(run_dir / "metrics.json", {"metrics": {"map_all_coda": value, "map_all": value}})
        store.mark_done(run_dir)
    return output, specs


@pytest.fixture(scope="module")
def office_home_comparison(office_home_store):
    output, specs = office_home_store
    frame = tidy_frame(specs, output)
    (table,) = table_specs("office_home_partial", specs)
    return compare_with_paper(aggregate(frame, table), load_paper_results())


def number(comparison, method, column, metric="map_all_coda"):
    return next(n for n in comparison.numbers if (n.method, n.column, n.metric) == (method, column, metric))


def shown(comparison, method, column) -> str:
    """The companion's markdown cell of `method` in `column` (footnote marker and padding stripped)."""
    model = comparison.model
    lines = to_markdown(model).splitlines()
    header = next(line for line in lines if line.startswith(f"| {METHOD_HEADER}"))
    columns = [c.strip() for c in header.split("|")[1:-1]]
    label = markdown_escape(model.spec.method_label(method))
    row = next(line for line in lines if line.startswith(f"| {label} "))
    cell = [c.strip() for c in row.split("|")[1:-1]][columns.index(markdown_escape(column))]
    return cell.split("<sup>")[0]


@pytest.mark.slow
def test_pairs_and_metrics_are_looked_up_under_the_papers_names(office_home_comparison):
    assert paper_pair("A→C") == "A->C" and paper_pair("Qu→Cl") == "Qu->Cl"
    # UEM, A→C: the paper's Table 2 prints 40.5 ± 1.4.
    uem = number(office_home_comparison, "uem", "A→C")
    assert (uem.paper.table, uem.paper.mean, uem.paper.std) == ("Table 2", 40.5, 1.4)
    assert number(office_home_comparison, "pretrained", "A→C").paper is None   # no row in the paper


def test_hand_computed_cells(office_home_comparison):
    c = office_home_comparison
    # CDS, A→C: paper 22.0 ± 1.1; ours 22.0 - 10 + (-1, 0, +1) = 11, 12, 13 -> 12.0 ± 1.0, Δ = -10.0, outside.
    cds = number(office_home_comparison, "cds", "A→C")
    assert (cds.ours.mean, cds.ours.std, cds.delta, cds.inside) == (
        pytest.approx(12.0), pytest.approx(1.0), pytest.approx(-10.0), False)
    assert shown(c, "cds", "A→C") == "12.0 ± 1.0 (22.0 ± 1.1; −10.0)"
    assert c.model.number_notes[("cds", "A→C")] == ["22.0 ± 1.1; −10.0"]
    # PCS, A→C: paper 24.5 ± 0.4; ours 34.5 ± 1.0, Δ = +10.0.
    assert shown(c, "pcs", "A→C") == "34.5 ± 1.0 (24.5 ± 0.4; +10.0)"
    # UEM, A→C: seed 2026 failed -> 39.5, 40.5 -> 40.0 ± 0.7 (n=2); Δ = 40.0 - 40.5 = -0.5, inside ± 1.4.
    uem = number(office_home_comparison, "uem", "A→C")
    assert (uem.ours.n, uem.delta, uem.inside) == (2, pytest.approx(-0.5), True)
    assert shown(c, "uem", "A→C") == "40.0 ± 0.7 (40.5 ± 1.4; −0.5)"
    # UEM, Avg: the paper's 12 pair means sum to 551.9 (mean 45.992); only seeds 2024 and 2025 have every pair:
    # 44.992 and 45.992 -> 45.492, shown 45.5; the paper's Avg 46.0 ± 1.1 -> Δ = -0.5, inside.
    uem_avg = number(office_home_comparison, "uem", "Avg")
    assert (uem_avg.ours.n, uem_avg.ours.mean) == (2, pytest.approx(551.9 / 12 - 0.5))
    assert (uem_avg.delta, uem_avg.inside) == (pytest.approx(-0.5), True)
    # CDS, Avg: 363.3 / 12 = 30.275, -10 -> 20.3 shown; the paper's 30.3 ± 1.1 -> Δ = -10.0.
    assert shown(c, "cds", "Avg") == "20.3 ± 1.0 (30.3 ± 1.1; −10.0)"
    # pretrained: 19, 20, 21 -> 20.0 ± 1.0, no paper number: ours alone.
    assert shown(c, "pretrained", "A→C") == "20.0 ± 1.0" and c.model.number_notes[("pretrained", "A→C")] == [None]


def test_counts_inside_the_papers_std_and_mean_abs_delta(office_home_comparison):
    counts = office_home_comparison.counts
    # 9 methods x (12 pairs + Avg) = 117 numbers; the paper has the 8 methods but not pretrained: 104, each with a std.
    assert (counts["numbers"], counts["with_paper"], counts["compared"]) == (117, 104, 104)
    assert (counts["with_paper_std"], counts["without_paper_std"]) == (104, 0)
    # Inside: the 5 unshifted methods (DARL, DN2A, UCDIR, CoDA, UEM) in all 13 columns. Their pair cells have Δ = 0
    # (UEM A→C: -0.5 within ± 1.4); their Avg cells differ from the printed Avg by its rounding only (every
    # recomputed Avg of Table 2 rounds to the printed one; UEM: -0.5, within ± 1.1). The shifted ones are 10 off,
    # beyond every std of Table 2 (the largest is 3.1): 5 x 13 = 65.
    assert counts["inside_paper_std"] == 65
    # |Δ|: 3 shifted methods x 13 columns x 10, plus UEM's A→C and Avg (0.5 each): 391 / 104 = 3.7596.
    assert counts["mean_abs_delta"] == pytest.approx(391 / 104)
    assert office_home_comparison.summary_line() == (
        "104 of 117 numbers have a paper value (104 with ours too); inside the paper's mean ± std: 65 of 104; "
        "paper value without std: 0; mean |Δ| = 3.8.")


def test_companion_keeps_rows_columns_and_footnotes_without_ranking_marks(office_home_comparison):
    model = office_home_comparison.model
    markdown = to_markdown(model)
    assert "**" not in markdown.split("\n\n")[1] and "†" not in markdown.split("\n\n")[1]
    assert "40.0 ± 0.7 (40.5 ± 1.4; −0.5)<sup>a</sup>" in markdown
    assert "n=2 of 3 seeds (1 failed)." in dict(model.footnotes).values()
    assert "in its Table 2" in model.caption and "65 of 104" in model.caption
    # LaTeX: the paper's number and Δ on a second, smaller line of the cell.
    assert (r"\begin{tabular}[c]{@{}c@{}}12.0 $\pm$ 1.0 \\ \footnotesize (22.0 $\pm$ 1.1; $-$10.0)\end{tabular}"
            in to_latex(model))
    assert model.spec.table_key == "office_home-partial-map_all_coda-vs-paper"


def test_comparison_csv(office_home_comparison):
    frame = comparison_csv_frame([office_home_comparison])
    assert len(frame) == 117
    row = frame[(frame["method"] == "cds") & (frame["pair"] == "A→C")].iloc[0]
    assert (row["mean"], row["paper_mean"], row["paper_std"], row["delta"], row["inside_paper_std"]) == (
        pytest.approx(12.0), 22.0, 1.1, pytest.approx(-10.0), False)
    assert row["paper_table"] == "Table 2"
    assert frame[frame["method"] == "pretrained"]["paper_mean"].isna().all()


def test_open_set_paper_numbers_without_std_are_counted_apart():
    # DomainNet open is the paper's Table 3, which prints no std: such numbers are compared (Δ) but not counted as
    # inside or outside.
    paper = load_paper_results()
    printed = paper[("domainnet", "open", "UEM", "Qu->Cl", "shared_map_all")]
    assert math.isnan(printed.std)
    runs = [("uem", "Qu→Cl", seed, "done", {"shared_map_all": (printed.mean + d) / 100, "open_set_acc": 0.5})
            for seed, d in zip((2024, 2025, 2026), (-1, 0, 1))]
    spec = TableSpec(title="Open", dataset="domainnet", setting="open", methods=["uem"], method_labels={},
                     pairs=["Qu→Cl"], cell_metrics=list(OPEN_METRICS), metric_description="m",
                     expected_seeds=[2024, 2025, 2026], show_avg=False)
    comparison = compare_with_paper(aggregate(hand_tidy_frame(runs, dataset="domainnet", setting="open",
                                                              metrics=OPEN_METRICS), spec), paper)
    counts = comparison.counts
    assert (counts["compared"], counts["with_paper_std"], counts["without_paper_std"]) == (2, 0, 2)
    shared = number(comparison, "uem", "Qu→Cl", "shared_map_all")
    assert shared.inside is None and shared.delta == pytest.approx(0.0)
    assert shown(comparison, "uem", "Qu→Cl").startswith(f"{printed.mean:.1f} ± 1.0 ({printed.mean:.1f}; +0.0) / ")


def test_ablation_table_is_compared_with_table_4():
    _, ablation = averages_models()
    comparison = compare_with_paper(ablation, load_paper_results(), ABLATION_SETTING)
    # Office-31 column: the paper's Table 4 prints UEM 77.4 / 92.5 and w/o SN2M 75.0 / 89.2 (no std). Ours (see
    # tests/test_reports.py): UEM 77.2 / 92.5 -> Δ -0.2 / +0.0; the synthetic column has no paper number.
    uem = number(comparison, "uem", "Office-31", "shared_map_all")
    assert (uem.paper.table, uem.paper.mean, uem.delta) == ("Table 4", 77.4, pytest.approx(-0.2))
    assert shown(comparison, "uem", "Office-31") == "77.2 ± 1.1 (77.4; −0.2) / 92.5 ± 1.4 (92.5; +0.0)"
    # pretrained, never run on Office-31 and absent from the paper: the plain "–".
    assert shown(comparison, "pretrained", "Office-31") == "–"
    assert number(comparison, "uem_no_sn2m", "Office-31", "open_set_acc").paper.mean == 89.2
    assert number(comparison, "uem", "Synthetic", "shared_map_all").paper is None
    # pretrained has no Office-31 run: the paper's number stands alone ("–" for ours), not counted as compared.
    counts = comparison.counts
    assert (counts["with_paper"], counts["compared"], counts["without_paper_std"]) == (6, 6, 6)


def test_detection_tables_are_not_compared():
    specs = plan(get_suite("office31_open"), methods=["pretrained", "uem"], seeds=[2024], pairs=["A-D"])
    tables = table_specs("office31_open", specs)
    assert [comparable(t) for t in tables] == [True, False, False]


def test_a_malformed_paper_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not at .*nothere.csv"):
        load_paper_results(tmp_path / "nothere.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("table,dataset,setting,method,pair,metric,mean\nTable 1,office31,closed,CDS,A->D,map_all,66.7\n")
    with pytest.raises(UserError, match=r"the columns \['std'\] are missing"):
        load_paper_results(bad)
    bad.write_text("table,dataset,setting,method,pair,metric,mean,std\nTable 1,office31,closed,CDS,A->D,map_all,x,1\n")
    with pytest.raises(UserError, match="line 2: mean 'x' and std '1' must be numbers"):
        load_paper_results(bad)


# ---------------------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------------------

def test_report_compare_paper_writes_the_companion(office_home_store, capsys):
    output, _ = office_home_store
    code = cli.main(["--suite", "office_home_partial", "--methods", *NINE_METHODS, "--report", "--compare-paper",
                     "--output", str(output)])
    assert code == 1   # a run failed: the tables are written, and scripts notice
    out = capsys.readouterr().out
    assert "inside the paper's mean ± std: 65 of 104; paper value without std: 0; mean |Δ| = 3.8." in out
    tables = output / "tables"
    for suffix in ("md", "tex", "csv"):
        assert (tables / f"office_home_partial_vs_paper.{suffix}").is_file()
    assert "12.0 ± 1.0 (22.0 ± 1.1; −10.0)" in (tables / "office_home_partial_vs_paper.md").read_text()
    assert len(pd.read_csv(tables / "office_home_partial_vs_paper.csv")) == 117


def test_summary_from_every_suite_with_runs(office_home_store, capsys):
    output, _ = office_home_store
    code = cli.main(["--report", "--summary", "--compare-paper", "--output", str(output)])
    assert code == 1
    out = capsys.readouterr().out
    # Only office_home_partial has runs here; office_home_open, the ablation suites, the quickstart... are skipped.
    assert "summary of the stored runs of the suites: office_home_partial\n" in out
    summary = (output / "tables" / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.split("|")[1:-1]] == ["Method", "Office-Home partial"]
    assert "Ablation" not in summary   # no ablation suite has runs
    rows = [line.split("|")[1].strip() for line in summary.splitlines() if line.startswith("| ")]
    assert rows == ["Method", "Pretrained (init)", "CDS", "PCS", "DARL", "DN2A", "UCDIR", "CoDA", "DGDIR",
                    "UEM (Ours)"]
    # UEM's Avg (45.5, n=2, as in the suite's own table) beside the paper's Table 2 Avg 46.0 ± 1.1.
    compared = (output / "tables" / "summary_vs_paper.md").read_text()
    assert "45.5 ± 0.7 (46.0 ± 1.1; −0.5)" in compared
    frame = pd.read_csv(output / "tables" / "summary_vs_paper.csv")
    uem = frame[frame["method"] == "uem"].iloc[0]
    assert (uem["dataset"], uem["setting"], uem["pair"], uem["paper_table"]) == ("office_home", "partial", "Avg",
                                                                                 "Table 2")
    # 9 numbers, 8 with a paper value; inside: the 5 unshifted methods.
    assert "8 of 9 numbers have a paper value (8 with ours too); inside the paper's mean ± std: 5 of 8" in out


def test_summary_without_any_run_is_an_error_and_writes_nothing(tmp_path, capsys):
    assert cli.main(["--report", "--summary", "--output", str(tmp_path)]) == 2
    assert "no suite has a stored run under" in capsys.readouterr().err
    assert not (tmp_path / "tables").exists()


@pytest.mark.parametrize("flags", [["--summary"], ["--compare-paper"]])
def test_summary_and_compare_need_report(tmp_path, capsys, flags):
    assert cli.main([*flags, "--output", str(tmp_path)]) == 2
    assert "use them with --report" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Golden files of the companions
# ---------------------------------------------------------------------------------------------------------------------

def compare_models():
    """The companions of a small Office-31 closed table (a missing run; pretrained, which the paper lacks) and of the
    ablation table of tests/test_reports.py (Table 4, no std)."""
    runs = [
        ("cds", "A→D", 2024, "done", 0.655), ("cds", "A→D", 2025, "done", 0.671), ("cds", "A→D", 2026, "done", 0.668),
        ("cds", "A→W", 2024, "done", 0.600), ("cds", "A→W", 2025, "done", 0.612), ("cds", "A→W", 2026, "missing", None),
        ("uem", "A→D", 2024, "done", 0.768), ("uem", "A→D", 2025, "done", 0.750), ("uem", "A→D", 2026, "done", 0.772),
        ("uem", "A→W", 2024, "failed", None), ("uem", "A→W", 2025, "failed", None),
        ("uem", "A→W", 2026, "failed", None),
        ("pretrained", "A→D", 2024, "done", 0.5), ("pretrained", "A→D", 2025, "done", 0.5),
        ("pretrained", "A→D", 2026, "done", 0.5),
    ]
    spec = TableSpec(title="Close-set retrieval on the office31 dataset (small)", dataset="office31", setting="closed",
                     methods=["pretrained", "cds", "uem"],
                     method_labels={"pretrained": "Pretrained (init)", "cds": "CDS", "uem": "UEM (Ours)"},
                     pairs=["A→D", "A→W"], cell_metrics=["map_all_coda"], metric_description="mAP@All",
                     expected_seeds=[2024, 2025, 2026], show_avg=False)
    paper = load_paper_results()
    closed = compare_with_paper(aggregate(hand_tidy_frame(runs, dataset="office31"), spec), paper)
    _, ablation = averages_models()
    return [closed, compare_with_paper(ablation, paper, ABLATION_SETTING)]


def test_compare_small_cells():
    closed, _ = compare_models()
    # CDS A→D: 65.5, 67.1, 66.8 -> 66.47 ± 0.85, shown 66.5; paper 66.7 ± 1.1 -> Δ -0.2, inside.
    assert shown(closed, "cds", "A→D") == "66.5 ± 0.9 (66.7 ± 1.1; −0.2)"
    # UEM A→W: every run failed: ours "–" beside the paper's 77.0 ± 2.1, not compared.
    assert shown(closed, "uem", "A→W") == "– (77.0 ± 2.1)"
    # CDS A→W: 60.0, 61.2 -> 60.6 (n=2), paper 62.5 ± 0.9 -> Δ -1.9, outside; UEM A→D: 76.8, 75.0, 77.2 -> 76.3,
    # paper 76.2 ± 1.4 -> Δ +0.1, inside. So 2 of the 3 compared numbers lie inside.
    assert shown(closed, "cds", "A→W") == "60.6 ± 0.8 (62.5 ± 0.9; −1.9)"
    assert shown(closed, "uem", "A→D") == "76.3 ± 1.2 (76.2 ± 1.4; +0.1)"
    counts = closed.counts
    assert (counts["with_paper"], counts["compared"], counts["inside_paper_std"]) == (4, 3, 2)
    assert counts["mean_abs_delta"] == pytest.approx((0.2 + 1.9 + 0.1) / 3)


def test_golden_compare_markdown():
    from benchmark.render import suite_markdown
    check_golden("compare_small.md", suite_markdown("small_vs_paper", [c.model for c in compare_models()]))


def test_golden_compare_latex():
    from benchmark.render import suite_latex
    check_golden("compare_small.tex", suite_latex([c.model for c in compare_models()]))
