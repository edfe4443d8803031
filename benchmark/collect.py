"""From the store to the reports: the tidy frame of a planned suite (one row per run and metric, runs that are not
done included with NaN values so the tables can count them) and the table specs of the suite (one per setting)."""
from __future__ import annotations

import math

import pandas as pd

from datasets.registry import get_dataset

from . import store
from .reports import TIDY_COLUMNS, TableSpec
from .runner import DEFAULT_DETECTOR_PREFIX
from .spec import RunSpec

METHOD_LABELS = {"pretrained": "Pretrained (init)", "cds": "CDS", "pcs": "PCS", "darl": "DARL", "dn2a": "DN2A",
                 "ucdir": "UCDIR", "coda": "CoDA", "dgdir": "DGDIR", "uem": "UEM (Ours)",
                 # UEM's ablations, named as the rows of the paper's Table 4
                 "uem_no_pm": "w/o PM", "uem_no_sel": "w/o SEL", "uem_no_spda": "w/o SPDA",
                 "uem_no_sn2m": "w/o SN²M"}
SETTING_TITLES = {"closed": "Close-set", "partial": "Partial", "open": "Open-set"}


def cell_metrics(setting: str) -> list[str]:
    return ["shared_map_all", "open_set_acc"] if setting == "open" else ["map_all_coda"]


def tidy_frame(specs: list[RunSpec], output_root) -> pd.DataFrame:
    rows = []
    for spec in specs:
        run_dir = spec.run_dir(output_root)
        status = store.run_status(run_dir)
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
                      method_labels={m: METHOD_LABELS.get(m, m) for m in methods},
                      pairs=list(dict.fromkeys(info.pair_label(s.query_domain, s.retrieval_domain)
                                               for s in of_setting)),
                      expected_seeds=sorted(dict.fromkeys(s.seed for s in of_setting)))
        description = ("Shared-set mAP@All (VOC-interpolated AP, class-balanced, following CoDA) and Open-set Acc "
                       "(fraction of private-class queries returned as null)" if setting == "open" else
                       "mAP@All (VOC-interpolated AP over the whole retrieval domain, class-balanced mean, "
                       "following CoDA)")
        tables.append(TableSpec(title=f"{SETTING_TITLES[setting]} retrieval on the {info.name} dataset ({suite_name})",
                                cell_metrics=cell_metrics(setting), metric_description=description, **common))
        if setting == "open":
            tables += _detection_tables(suite_name, info.name, common)
    return tables


def _detection_tables(suite_name: str, dataset_name: str, common: dict) -> list[TableSpec]:
    """Open-set Acc alone rewards flagging every query null; Detection Acc (binary accuracy over all queries, shared
    kept and private flagged) shows whether a detector separates them."""
    description = ("Open-set Acc (fraction of private-class queries returned as null) and Detection Acc (fraction of "
                   "all queries classified correctly as shared or private)")
    prefix = DEFAULT_DETECTOR_PREFIX
    return [
        TableSpec(title=f"Open-set detection on the {dataset_name} dataset ({suite_name}), each method's own "
                        f"detector (UEM: App. B.1; the others: App. B.2)",
                  cell_metrics=["open_set_acc", "detection_acc"], metric_description=description,
                  key=f"{dataset_name}-open-detection-own", **common),
        TableSpec(title=f"Open-set detection on the {dataset_name} dataset ({suite_name}), every method with the "
                        f"baseline detector of App. B.2",
                  cell_metrics=[prefix + "open_set_acc", prefix + "detection_acc"], metric_description=description,
                  metric_short_names={prefix + "open_set_acc": "Acc", prefix + "detection_acc": "Detection Acc"},
                  key=f"{dataset_name}-open-detection-b2", **common),
    ]
