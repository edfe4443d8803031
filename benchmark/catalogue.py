"""One home for the names the tables, captions, figures and the paper comparison print: metrics and settings.

A method's names are class attributes (`Method.label`, `Method.paper_label`, read through `method_label` and
`paper_method_label` here); a dataset's title is `DatasetInfo.title`. This module adds the metrics and the
settings, so that collect, reports, figures and paper read one entry instead of keeping their own dictionaries.

Sources: the paper's names are those of UEM's tables (Wang, Du, Zhu, "Semantic Feature Learning for Universal
Unsupervised Cross-domain Retrieval", NeurIPS 2024, arXiv:2403.05690; OpenReview zZVqZRXSao); the metric
definitions are CoDA's (Wang, Peng, Yan, Hu, "Correspondence-Free Domain Alignment for Unsupervised Cross-Domain
Image Retrieval", AAAI 2023, arXiv:2302.06081) and UCDIR's (Hu and Lee, "Feature Representation Learning for
Unsupervised Cross-domain Image Retrieval", ECCV 2022, arXiv:2207.09721), computed in `benchmark/evaluation.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DETECTOR_PREFIX = "default_detector_"   # metrics of the App. B.2 detector, beside each method's own


@dataclass(frozen=True)
class Metric:
    name: str                  # the key in metrics.json and the tidy CSV
    short: str                 # captions, two-metric cells ("mAP / Acc")
    description: str           # one clause for a table's caption
    axis_label: str = ""       # figures; default: `short`
    paper_name: str | None = None   # its `metric` in results/uem_paper_results.csv (None: the paper has no such number)

    @property
    def axis(self) -> str:
        return self.axis_label or self.short


_RETRIEVAL = ("mAP@All (VOC-interpolated AP over the whole retrieval domain, class-balanced mean, following CoDA)")
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("map_all_coda", "mAP@All", _RETRIEVAL, "mAP@All (×100)", paper_name="map_all"),
    Metric("map_all", "mAP", "mAP@All (plain AP over the whole retrieval domain, mean over queries)"),
    Metric("shared_map_all", "mAP", "Shared-set mAP@All (VOC-interpolated AP of the shared-class queries, "
           "class-balanced, following CoDA)", "shared-class mAP@All (×100)", paper_name="shared_map_all"),
    Metric("open_set_acc", "Acc", "Open-set Acc (fraction of private-class queries returned as null)",
           paper_name="open_set_acc"),
    Metric("detection_acc", "Detection Acc", "Detection Acc (fraction of all queries classified correctly as shared "
           "or private)"),
    Metric("shared_false_null_rate", "False-null rate", "False-null rate (fraction of shared-class queries "
           "returned as null)"),
)}
# The App. B.2 detector's metrics, named like each method's own.
for _name in ("open_set_acc", "detection_acc", "shared_false_null_rate"):
    _own = METRICS[_name]
    METRICS[DEFAULT_DETECTOR_PREFIX + _name] = Metric(DEFAULT_DETECTOR_PREFIX + _name, _own.short,
                                                      _own.description + ", with the baseline detector of App. B.2")


def metric(name: str) -> Metric:
    """The catalogue entry of `name`; P@k (`p_at_<k>`) and names outside the catalogue get a plain entry."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith("p_at_") and name[5:].isdigit():
        return Metric(name, f"P@{name[5:]}", f"P@{name[5:]} (share of the query's class among its top {name[5:]})")
    return Metric(name, name, name)


def caption_description(metrics) -> str:
    """The caption clause of a table showing `metrics` (one or two per cell): their descriptions joined by "and"."""
    return " and ".join(metric(m).description for m in metrics)


@dataclass(frozen=True)
class Setting:
    name: str
    title: str                 # table titles: "Partial retrieval on Office-Home"
    words: str                 # the suites' descriptions
    cell_metrics: tuple[str, ...]   # what a retrieval table's cell shows in this setting


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("closed", "Close-set", "closed-set", ("map_all_coda",)),
    Setting("partial", "Partial", "partial (query keeps half of the classes)", ("map_all_coda",)),
    Setting("open", "Open-set", "open-set (retrieval keeps half of the classes; the rest must return null)",
            ("shared_map_all", "open_set_acc")),
)}
SETTING_ORDER = tuple(SETTINGS)


def setting_title(name: str) -> str:
    return SETTINGS[name].title if name in SETTINGS else name


def setting_words(name: str) -> str:
    return SETTINGS[name].words if name in SETTINGS else name


def cell_metrics(setting: str) -> list[str]:
    """The metrics of a retrieval table's cell: mAP@All, or shared mAP@All / Open-set Acc in the open setting."""
    return list(SETTINGS[setting].cell_metrics)


def method_label(name: str) -> str:
    """A registered method's table label (`Method.label`); the name itself for anything else."""
    from methods.registry import REGISTRY
    cls = REGISTRY.get(name)
    return getattr(cls, "label", None) or name


def paper_method_label(name: str) -> str | None:
    """The paper's row name of a registered method (`Method.paper_label`), None when the paper has no such row."""
    from methods.registry import REGISTRY
    return getattr(REGISTRY.get(name), "paper_label", None)


def dataset_title(name: str) -> str:
    """A registered dataset's title (`DatasetInfo.title`); the name itself for anything else."""
    from datasets.registry import DATASETS
    info = DATASETS.get(name)
    return info.title if info is not None and info.title else name
