"""From the store to the reports: the tidy frame of a planned suite (one row per run and metric, runs that are not
done included with NaN values so the tables can count them), the table specs of the suite (one per setting), and the
tables across suites (`stored_summary`: the Avg of every dataset and setting, and UEM's ablation table)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from datasets.registry import get_dataset

from . import store
from .backbone_specs import backbone_label
from .catalogue import (DEFAULT_DETECTOR_PREFIX, SETTING_ORDER, caption_description, cell_metrics, dataset_title,
                        method_label, setting_title)
from .errors import UserError
from .tables import TIDY_COLUMNS, TableModel, TableSpec, aggregate, combine_averages, has_runs
from .spec import RunSpec
from .suites import SUITES, Suite, plan

# The columns of the tables across datasets, in the paper's order (its Table 4: Office-31, Office-Home, DomainNet);
# other datasets follow.
DATASET_ORDER = ("office31", "office_home", "domainnet", "synthetic")


@dataclass
class Rows:
    """The runs behind a suite's tables: the planned ones and the stored runs that differ from the plan (a
    hyper-parameter, an init, another backbone), each of those in a row of its own. `rows` maps a run id to its row
    key (the method's name for planned runs, "<method>[<what differs>]" for the others), `labels` a row key to its
    label ("UEM (lr=0.001)", "UEM from DINOv2 ViT-B/14", "Zero-shot DINOv2 ViT-B/14"), `starts` the row key of a
    run from another backbone to that backbone's label; `left_out` says which stored runs no row shows, and why."""
    specs: list[RunSpec]
    rows: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    starts: dict[str, str] = field(default_factory=dict)

    def label(self, spec: RunSpec) -> str:
        """The table label of the run's row (a variant's "CDS (epochs=2)", else the method's label)."""
        key = self.row(spec)
        return self.labels.get(key) or method_label(key)
    left_out: list[str] = field(default_factory=list)

    def row(self, spec: RunSpec) -> str:
        return self.rows.get(spec.run_id, spec.method)


BACKBONE_KEYS = ("arch", "options", "preprocessing")       # what makes another start than another init


def other_start(stored: dict, planned: dict) -> str | None:
    """The label of the stored run's backbone when it is another architecture (or the same at another size or
    preprocessing) than the planned run's, else None."""
    if all(stored.get(key) == planned.get(key) for key in BACKBONE_KEYS):
        return None
    return backbone_label(stored)


def _expected_hparams(planned: RunSpec, backbone: dict) -> dict:
    """The hyper-parameters the plan would give its run on `backbone`: the planned run's, moved to the backbone's
    family (the family's own hyper-parameters and overrides, the plan's suite and --set values kept)."""
    from methods.backbones import backbone_family
    from methods.base import HparamError, family_hparams, resolve_hparams
    from methods.registry import REGISTRY
    cls = REGISTRY.get(planned.method)
    planned_family, family = backbone_family(planned.backbone), backbone_family(backbone)
    if cls is None or planned_family == family:
        return planned.hparams
    try:
        defaults = resolve_hparams(cls, planned.dataset, family=planned_family)
        kept = family_hparams(cls, family)
        overrides = {k: v for k, v in planned.hparams.items() if defaults.get(k) != v and k in kept}
        return resolve_hparams(cls, planned.dataset, overrides, family=family)
    except HparamError:
        return planned.hparams


def _differences(stored: RunSpec, planned: RunSpec) -> str | None:
    """What a stored run changes against the planned run of the same grid point, as "key=value, ..." (another
    backbone first, then hyper-parameters against what the plan gives on that backbone, then the init); None when it
    differs in something a row cannot show (protocol, split, k values)."""
    same = ("protocol_version", "query_classes", "retrieval_classes", "split_seed", "ks", "dataset")
    if any(getattr(stored, name) != getattr(planned, name) for name in same):
        return None
    start = other_start(stored.backbone, planned.backbone)
    expected = _expected_hparams(planned, stored.backbone) if start else planned.hparams
    keys = sorted(k for k in set(stored.hparams) | set(expected) if stored.hparams.get(k) != expected.get(k))
    parts = [f"backbone={start}"] if start else []
    parts += [f"{k}={stored.hparams.get(k):g}" if isinstance(stored.hparams.get(k), float)
              else f"{k}={stored.hparams.get(k)}" for k in keys]
    if stored.backbone != planned.backbone and not start:
        init = stored.backbone.get("init", {})
        parts.append(f"init={init.get('kind', 'random')}" if init != planned.backbone.get("init") else "backbone")
    return ", ".join(parts) or None


def _label(method: str, start: str | None, difference: str) -> str:
    """A stored variant's row label: "UEM (lr=0.001)"; from another backbone "UEM from DINOv2 ViT-B/14 (lr=0.001)",
    its `pretrained` row "Zero-shot DINOv2 ViT-B/14"."""
    if start is None:
        return f"{method_label(method)} ({difference})"
    rest = difference.removeprefix(f"backbone={start}").removeprefix(", ")
    head = f"Zero-shot {start}" if method == "pretrained" else f"{method_label(method)} from {start}"
    return head + (f" ({rest})" if rest else "")


def with_stored_runs(planned: list[RunSpec], output_root) -> Rows:
    """The planned runs, and the stored runs of the same dataset, settings, pairs, methods and seeds that differ from
    the plan (run with --set or --baseline-init native, or under older defaults), each difference a row of its own
    placed after its method's; stored runs no row can show (another protocol version or split) are counted in
    `left_out`."""
    result = Rows(specs=list(planned))
    if not planned:
        return result
    by_point = {(s.setting, s.query_domain, s.retrieval_domain, s.method, s.seed): s for s in planned}
    planned_ids = {s.run_id for s in planned}
    unshowable = 0
    for stored in store.stored_specs(output_root, planned[0].dataset):
        point = (stored.setting, stored.query_domain, stored.retrieval_domain, stored.method, stored.seed)
        if stored.run_id in planned_ids or point not in by_point:
            continue
        difference = _differences(stored, by_point[point])
        if difference is None:
            unshowable += 1
            continue
        key = f"{stored.method}[{difference}]"
        start = other_start(stored.backbone, by_point[point].backbone)
        result.specs.append(stored)
        result.rows[stored.run_id] = key
        result.labels[key] = _label(stored.method, start, difference)
        if start:
            result.starts[key] = start
    if unshowable:
        result.left_out.append(f"{unshowable} stored run(s) of this suite's grid left out: another protocol version, "
                               f"split or k values than today's plan (their numbers do not compare)")
    return result


def row_order(grid: Rows, specs: list[RunSpec]) -> list[str]:
    """Row keys: each planned method followed by its variants (in the order their runs were found); then the rows
    of each other backbone, a block per backbone in the same method order, its zero-shot row first."""
    keys = list(dict.fromkeys(grid.row(s) for s in specs))
    methods = list(dict.fromkeys(s.method for s in specs))
    starts = [None] + list(dict.fromkeys(grid.starts[k] for k in keys if k in grid.starts))
    return [k for start in starts for m in methods for k in keys
            if grid.starts.get(k) == start and (k == m or k.startswith(m + "["))]


def tidy_frame(specs: list[RunSpec], output_root, statuses: dict[str, str] | None = None,
               grid: Rows | None = None) -> pd.DataFrame:
    """`statuses` (run id -> status) refines the store's for runs that are not done: the census's "queued" and
    "running" (on SLURM) instead of "incomplete". With `grid`, the method column holds each run's row key."""
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
                "pair": info.pair_label(spec.query_domain, spec.retrieval_domain),
                "method": grid.row(spec) if grid else spec.method,
                "seed": spec.seed, "status": status, "metric": name,
                "value": float(value) if isinstance(value, (int, float)) else math.nan, "run_id": spec.run_id})
    return pd.DataFrame(rows, columns=list(TIDY_COLUMNS))


def table_specs(suite_name: str, specs: list[RunSpec], grid: Rows | None = None) -> list[TableSpec]:
    """One retrieval table per setting; the open setting adds two detection tables: each method's own detector,
    then every method under the paper's baseline detector (App. B.2). With `grid`, the stored variants' rows too."""
    tables = []
    for setting in dict.fromkeys(s.setting for s in specs):
        of_setting = [s for s in specs if s.setting == setting]
        info = get_dataset(of_setting[0].dataset)
        methods = row_order(grid, of_setting) if grid else list(dict.fromkeys(s.method for s in of_setting))
        labels = grid.labels if grid else {}
        common = dict(dataset=info.name, setting=setting, methods=methods,
                      method_labels={m: labels.get(m) or method_label(m) for m in methods},
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


def has_stored_runs_of(suite: Suite, output_root) -> bool:
    """Whether the store holds any run of the suite's dataset and settings (without planning it)."""
    base = Path(output_root) / "runs" / suite.dataset
    return any((base / setting).is_dir() for setting in suite.settings)


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
    left_out: list[str] = field(default_factory=list)   # stored runs no row shows, and why

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
    used, frames, summary_sources, ablation_sources, left_out, labels, starts = [], [], [], [], [], {}, {}
    columns_so_far: list[tuple[str, set, dict]] = []     # (dataset, grid points, backbone) of each summary column
    for suite in suites:
        try:
            planned = plan(suite)
        except UserError as error:          # e.g. a suite whose plugin method is not loaded in this process
            if has_stored_runs_of(suite, output_root):
                left_out.append(f"{suite.name}: left out, it cannot be planned here ({error})")
            continue
        grid = with_stored_runs(planned, output_root)
        specs = grid.specs
        if not has_stored_runs(specs, output_root):
            continue
        settings = []
        for setting in suite.settings:
            points = {(s.setting, s.query_domain, s.retrieval_domain, s.method, s.seed) for s in planned
                      if s.setting == setting}
            if not is_ablation_suite(suite.name):
                # A companion suite (the same grid from another backbone) is no column of its own: its runs are the
                # other-backbone rows of the earlier suite's column (with_stored_runs), one table for every start.
                if any(dataset == suite.dataset and points <= earlier and other_start(suite.backbone, backbone)
                       for dataset, earlier, backbone in columns_so_far):
                    continue
                columns_so_far.append((suite.dataset, points, suite.backbone))
            settings.append(setting)
        if not settings:
            continue
        used.append(suite.name)
        left_out += [f"{suite.name}: {line}" for line in grid.left_out]
        labels.update(grid.labels)
        starts.update(grid.starts)
        frame = tidy_frame(specs, output_root, grid=grid)
        frames.append(frame)
        for setting in settings:
            of_setting = [s for s in specs if s.setting == setting]
            model = aggregate(frame, table_specs(suite.name, of_setting, grid)[0])   # the retrieval table
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
        summary_note = note
        if any(m in starts for m in rows):
            summary_note += ("; Pretrained (init) and the methods' own rows start from each column's suite "
                             "backbone, rows Zero-shot X and M from X: runs from backbone X (the zero-shot row of X is "
                             "its pretrained features, untrained)")
        summary = combine_averages(
            title="Summary: Avg over the ordered pairs of every dataset and setting", key="summary", sources=columns,
            methods=rows, method_labels={m: labels.get(m) or method_label(m) for m in rows},
            metric_description="mAP@All (VOC-interpolated AP, class-balanced, following CoDA); in the open setting "
                               "shared-set mAP@All and Open-set Acc (fraction of private-class queries returned as "
                               "null)", caption_note=summary_note)
    if ablation_sources:
        columns = _labelled(ablation_sources)
        rows = _rows(columns)
        ablation = combine_averages(
            title="Ablation of UEM (the paper's Table 4), open-set", key="ablation", sources=columns, methods=rows,
            method_labels={m: labels.get(m) or method_label(m) for m in rows},
            metric_description=caption_description(cell_metrics("open")), caption_note=note)
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(["run_id", "metric"], ignore_index=True)
    return StoredSummary(summary=summary, ablation=ablation, suites=used, frame=frame, left_out=left_out)
