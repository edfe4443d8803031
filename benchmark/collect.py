"""From the store to the reports: the tidy frame of a planned suite (one row per run and metric, runs that are not
done included with NaN values so the tables can count them), the table specs of the suite (one per setting), and the
tables across suites (`stored_summary`: the Avg of every dataset and setting, and UEM's ablation table)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from datasets.registry import get_dataset

from . import store
from .catalogue import (DEFAULT_DETECTOR_PREFIX, SETTING_ORDER, caption_description, cell_metrics, dataset_title,
                        method_label, setting_title)
from .errors import UserError
from .tables import TIDY_COLUMNS, TableModel, TableSpec, aggregate, combine_averages, has_runs
from .spec import RunSpec
from .suites import SUITES, Suite, plan

# The columns of the tables across datasets, in the paper's order (its Table 4: Office-31, Office-Home, DomainNet);
# other datasets follow.
DATASET_ORDER = ("office31", "office_home", "domainnet", "synthetic")


def tidy_frame(specs: list[RunSpec], output_root, statuses: dict[str, str] | None = None) -> pd.DataFrame:
    """`statuses` (run id -> status) refines the store's for runs that are not done: the census's "queued" and
    "running" (on SLURM) instead of "incomplete"."""
    rows = []
    for spec in specs:
        run_dir = spec.run_dir(output_root)
        status = store.run_status(run_dir)
        if status != "done" and statuses:
            status = statuses.get(spec.run_id, status)
        metrics = store.read_metrics(run_dir) if status == "done" else {}
        info = get_dataset(spec.dataset)
        names = sorted(metrics) if metrics else cell_metrics(spec.setting)
        for name in names:
            value = metrics.get(name, math.nan)
            rows.append({
                "dataset": spec.dataset, "setting": spec.setting, "query_domain": spec.query_domain,
                "retrieval_domain": spec.retrieval_domain,
                "pair": info.pair_label(spec.query_domain, spec.retrieval_domain), "method": spec.method,
                "seed": spec.seed, "status": status, "metric": name,
                "value": float(value) if isinstance(value, (int, float)) else math.nan, "run_id": spec.run_id})
    return pd.DataFrame(rows, columns=list(TIDY_COLUMNS))


def table_specs(suite_name: str, specs: list[RunSpec]) -> list[TableSpec]:
    """One retrieval table per setting; the open setting adds two detection tables: each method's own detector,
    then every method under the paper's baseline detector (App. B.2)."""
    tables = []
    for setting in dict.fromkeys(s.setting for s in specs):
        of_setting = [s for s in specs if s.setting == setting]
        info = get_dataset(of_setting[0].dataset)
        methods = list(dict.fromkeys(s.method for s in of_setting))
        common = dict(dataset=info.name, setting=setting, methods=methods,
                      method_labels={m: method_label(m) for m in methods},
                      pairs=list(dict.fromkeys(info.pair_label(s.query_domain, s.retrieval_domain)
                                               for s in of_setting)),
                      expected_seeds=sorted(dict.fromkeys(s.seed for s in of_setting)))
        label = dataset_title(info.name)
        tables.append(TableSpec(title=f"{setting_title(setting)} retrieval on {label} ({suite_name})",
                                cell_metrics=cell_metrics(setting),
                                metric_description=caption_description(cell_metrics(setting)), **common))
        if setting == "open":
            tables += _detection_tables(suite_name, info.name, label, common)
    return tables


def _detection_tables(suite_name: str, dataset_name: str, label: str, common: dict) -> list[TableSpec]:
    """Open-set Acc alone rewards flagging every query null; Detection Acc (binary accuracy over all queries, shared
    kept and private flagged) shows whether a detector separates them."""
    description = caption_description(["open_set_acc", "detection_acc"])
    prefix = DEFAULT_DETECTOR_PREFIX
    return [
        TableSpec(title=f"Open-set detection on {label} ({suite_name}), each method's own "
                        f"detector (UEM: App. B.1; the others: App. B.2)",
                  cell_metrics=["open_set_acc", "detection_acc"], metric_description=description,
                  key=f"{dataset_name}-open-detection-own", **common),
        TableSpec(title=f"Open-set detection on {label} ({suite_name}), every method with the "
                        f"baseline detector of App. B.2",
                  cell_metrics=[prefix + "open_set_acc", prefix + "detection_acc"], metric_description=description,
                  key=f"{dataset_name}-open-detection-b2", **common),
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Across suites: the summary and the ablation table
# ---------------------------------------------------------------------------------------------------------------------

def is_ablation_suite(suite_name: str) -> bool:
    """The suites of UEM's ablations (`<dataset>_ablation`, `quickstart_ablation`): they feed the ablation table."""
    return suite_name.endswith("_ablation")


def has_stored_runs(specs: list[RunSpec], output_root) -> bool:
    """Whether any planned run has a folder (done, failed or incomplete) under output_root."""
    return any(store.run_status(spec.run_dir(output_root)) != "missing" for spec in specs)


@dataclass
class StoredSummary:
    """The tables across suites; either is None when no suite of its kind has a run."""

    summary: TableModel | None
    ablation: TableModel | None
    suites: list[str]      # the suites with stored runs, in SUITES order
    frame: pd.DataFrame    # the tidy rows of every run planned by those suites (each run once)

    @property
    def models(self) -> list[TableModel]:
        return [m for m in (self.summary, self.ablation) if m is not None]


def _column_order(dataset: str, setting: str) -> tuple:
    datasets = DATASET_ORDER
    return (datasets.index(dataset) if dataset in datasets else len(datasets), dataset,
            SETTING_ORDER.index(setting) if setting in SETTING_ORDER else len(SETTING_ORDER))


def _labelled(sources: list[tuple[tuple, str, str, TableModel]]) -> list[tuple[str, TableModel]]:
    """(order, label, suite, model) -> (label, model) in column order; a label two suites share names the suite."""
    sources = sorted(sources, key=lambda source: source[0])
    labels = [label for _, label, _, _ in sources]
    return [(f"{label} ({suite})" if labels.count(label) > 1 else label, model) for _, label, suite, model in sources]


def _rows(sources: list[tuple[str, TableModel]]) -> list[str]:
    """Methods in the sources' row order (each suite lists them in table order), without those that have no run."""
    methods = dict.fromkeys(m for _, model in sources for m in model.methods)
    return [m for m in methods if any(m in model.methods and has_runs(model, m) for _, model in sources)]


def stored_summary(output_root, suites: list[Suite] | None = None) -> StoredSummary:
    """The Avg of every dataset x setting (rows: methods) and UEM's ablation table (rows: its variants; columns:
    datasets), from the stored runs of every suite (default: all of SUITES, each planned with its own method list and
    defaults). Suites without any stored run are left out, and so are columns and rows without any run; a UserError
    when no suite has a run."""
    suites = list(SUITES.values()) if suites is None else suites
    used, frames, summary_sources, ablation_sources = [], [], [], []
    for suite in suites:
        specs = plan(suite)
        if not has_stored_runs(specs, output_root):
            continue
        used.append(suite.name)
        frame = tidy_frame(specs, output_root)
        frames.append(frame)
        for setting in suite.settings:
            of_setting = [s for s in specs if s.setting == setting]
            model = aggregate(frame, table_specs(suite.name, of_setting)[0])   # the retrieval table
            if not any(has_runs(model, method) for method in model.methods):
                continue
            dataset_label = dataset_title(suite.dataset)
            order = _column_order(suite.dataset, setting)
            if is_ablation_suite(suite.name):
                ablation_sources.append((order, dataset_label, suite.name, model))
            else:
                summary_sources.append((order, f"{dataset_label} {setting}", suite.name, model))
    if not used:
        raise UserError(f"no suite has a stored run under {output_root}/runs (planned: "
                        f"{', '.join(s.name for s in suites)}); nothing to summarise (run a suite first, or pass the "
                        f"--output folder that holds runs/)")
    note = ("Each column is the Avg of that dataset and setting: the mean over all its ordered pairs within each seed "
            "first, then mean ± std over the seeds with every pair done")
    summary = ablation = None
    if summary_sources:
        columns = _labelled(summary_sources)
        rows = _rows(columns)
        summary = combine_averages(
            title="Summary: Avg over the ordered pairs of every dataset and setting", key="summary", sources=columns,
            methods=rows, method_labels={m: method_label(m) for m in rows},
            metric_description="mAP@All (VOC-interpolated AP, class-balanced, following CoDA); in the open setting "
                               "shared-set mAP@All and Open-set Acc (fraction of private-class queries returned as "
                               "null)", caption_note=note)
    if ablation_sources:
        columns = _labelled(ablation_sources)
        rows = _rows(columns)
        ablation = combine_averages(
            title="Ablation of UEM (the paper's Table 4), open-set", key="ablation", sources=columns, methods=rows,
            method_labels={m: method_label(m) for m in rows},
            metric_description=caption_description(cell_metrics("open")), caption_note=note)
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(["run_id", "metric"], ignore_index=True)
    return StoredSummary(summary=summary, ablation=ablation, suites=used, frame=frame)
