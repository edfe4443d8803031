"""Run identity (DESIGN §3.4): a run spec, its canonical serialisation, and its hash.

The hash covers what defines the experiment — protocol version, dataset, setting, ordered domain pair, the class lists
of the split, method, *resolved* hyper-parameters (so a changed default in code is a new run, never a stale reuse),
seed, backbone and its init, the evaluation's k values. It excludes where and how the run happens: data and output
paths, host, device, launcher (those go to `launch.json` and `env.json` beside the spec).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets.base import WHITE

# Bump when a change to splits, metrics or the training loop changes what a stored number means.
# 2 (2026-11-30): tied scores count as the expected value over their orderings; UEM's and the detectors' k-means is
# k-means++ with restarts; CDS's entropy takes the official log(p + 1e-5); runs store feature diagnostics.
# 3 (2026-11-30): the k-means seeds of CoDA, DGDIR, UCDIR and UEM (training and its App. B.1 detector) come from
# derive_seed (a hash of run seed, epoch and domain); they were run seed x 1000 + epoch (+ domain), which gave
# domain 1 of epoch e the seed of domain 0 of epoch e + 1. Same methods, other random starts: their numbers move
# within seed noise.
# 4 (2026-12-07, issue 23): UEM's K (training and its App. B.1 detector) is the cosine silhouette's over
# [2, ceil(2 sqrt N)] on a bisecting k-means path (was: the chord elbow over [2, 130] on a chain of k-means++ points);
# the mechanism diagnostic reads K the same way. UEM's and its ablations' numbers change.
PROTOCOL_VERSION = 4


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    setting: str
    query_domain: str
    retrieval_domain: str
    query_classes: tuple[str, ...]
    retrieval_classes: tuple[str, ...]
    method: str
    hparams: dict
    seed: int
    split_seed: int
    backbone: dict
    ks: tuple[int, ...] = (1, 5, 15)
    protocol_version: int = PROTOCOL_VERSION
    # later protocol fields, part of the hash, present only when not at their default (older run ids stay valid):
    # "background": [r, g, b], the colour transparent pixels were composited onto, when not white
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        data = dict(data)
        for key in ("query_classes", "retrieval_classes", "ks"):
            data[key] = tuple(data[key])
        return cls(**data)

    def canonical_json(self) -> str:
        return canonical_json(self.to_dict())

    @property
    def run_id(self) -> str:
        return hashlib.sha1(self.canonical_json().encode("utf-8")).hexdigest()[:12]

    def run_dir(self, output_root: Path) -> Path:
        return (Path(output_root) / "runs" / self.dataset / self.setting / f"{self.query_domain}-{self.retrieval_domain}"
                / self.method / f"seed{self.seed}-{self.run_id}")

    @property
    def num_classes_hint(self) -> tuple[int, int]:
        return len(self.query_classes), len(self.retrieval_classes)

    @property
    def background(self) -> tuple[int, int, int]:
        """The RGB colour the run's transparent pixels are composited onto (datasets/base.py, to_rgb8)."""
        return tuple(self.extra.get("background", WHITE))


def canonical_json(data) -> str:
    """Sorted keys, no whitespace, tuples as lists, floats by repr (shortest round-trip): one text per value."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def load_spec(path: Path) -> RunSpec:
    return RunSpec.from_dict(json.loads(Path(path).read_text()))


def load_split_domains(spec: RunSpec, data_root, cache_dir):
    """The run's query and retrieval domains, restricted to the split's classes (labelled: for the evaluation and
    the figures, never for a method), decoded onto the spec's background (what the run's identity says, even if the
    suite file changed since the plan). Returns (LabelledDomain, LabelledDomain); raises DataError when the data is
    missing or unreadable."""
    from datasets.registry import get_dataset, load_domain
    info = get_dataset(spec.dataset)
    query = load_domain(info, spec.query_domain, data_root, cache_dir, background=spec.background)
    retrieval = load_domain(info, spec.retrieval_domain, data_root, cache_dir, background=spec.background)
    return (query.restricted_to(info.class_map.ids(spec.query_classes)),
            retrieval.restricted_to(info.class_map.ids(spec.retrieval_classes)))
