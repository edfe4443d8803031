"""benchmark/mechanism.py: the label-using diagnostic of UEM's merging, and the restored features it reads."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmark import store
from benchmark.evaluation import retrieval_metrics
from benchmark.mechanism import main, merging_report
from benchmark.runner import run_one, trained_features
from benchmark.suites import plan

from .conftest import prepared_run, separated_domains, tiny_suite


@pytest.mark.slow
def test_a_translated_copy_merges_every_shared_class_with_oracle_and_elbow_prototypes():
    query, query_labels, retrieval, retrieval_labels = separated_domains(10, dim=64, per_class=30, shift=0.5)
    report = merging_report(query, query_labels, retrieval, retrieval_labels, seed=0, k_max=29)
    assert report["k"] == (10, 5) and report["classes"] == (10, 5) and report["purity"] == (1.0, 1.0)
    assert (report["oracle_merges"], report["oracle_right"], report["merges"], report["right_merges"]) == (5, 5, 5, 5)
    assert report["median_error"] < report["threshold"]


@pytest.mark.slow
def test_a_gap_that_is_no_translation_merges_no_class_with_itself_even_with_the_class_means():
    # The retrieval domain is the query's first classes reflected through the origin (x -> -x): a domain gap that no
    # translation undoes (Eq. 8 moves -mu_c by 2 m, which lands far from mu_c for every class).
    query, query_labels, retrieval, retrieval_labels = separated_domains(10, dim=64, per_class=30, seed=0)
    retrieval = -retrieval
    report = merging_report(query, query_labels, retrieval, retrieval_labels, seed=0, k_max=29)
    # Each class lies farther from its translated counterpart than two classes of one domain from each other; what
    # Eq. 9 merges (Hungarian pairs that happen to fall close) joins different classes.
    assert report["median_error"] > report["threshold"]
    assert report["oracle_right"] == 0 and report["right_merges"] == 0


@pytest.fixture(scope="module")
def tiny_uem_run(tmp_path_factory, cache_dir):
    suite = tiny_suite("test_mechanism", settings=("open",), methods=["uem"])
    spec = plan(suite, assignments=["uem.stage1_epochs=1", "uem.stage2_epochs=1"])[0]
    output = tmp_path_factory.mktemp("mechanism_runs")
    run_one(prepared_run(spec, output, cache_dir))
    return spec, output


@pytest.mark.slow
def test_restored_features_give_the_stored_metrics(tiny_uem_run):
    spec, output = tiny_uem_run
    query, query_labels, retrieval, retrieval_labels, method = trained_features(spec.run_dir(output))
    assert method.name == "uem" and query.shape[0] == len(query_labels)
    stored = store.read_metrics(spec.run_dir(output))
    again = retrieval_metrics(query, query_labels, retrieval, retrieval_labels, ks=spec.ks)
    assert again["map_all_coda"] == stored["map_all_coda"] and again["map_all"] == stored["map_all"]
    assert torch.allclose(F.normalize(query, dim=1), query, atol=1e-5)      # UEM's features are unit vectors


def test_the_command_prints_a_row_per_done_run(tiny_uem_run, capsys):
    spec, output = tiny_uem_run
    assert main(["--suite", "test_mechanism", "--output", str(output), "--methods", "uem"]) == 0
    printed = capsys.readouterr().out
    assert "translation error / threshold" in printed and "photo->sketch" in printed
    assert main(["--suite", "no_such_suite", "--output", str(output)]) == 2
