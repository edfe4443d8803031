"""Category-space construction for the three settings of the protocol (DESIGN §3.3; UEM, arXiv:2403.05690, Sec. 4).

- closed:  both domains keep every class.
- partial: the query domain keeps a random half of the retrieval domain's classes.
- open:    the retrieval domain keeps a random half of the query domain's classes; queries of the other half are
           query-private and must come back as null.

Half = floor(C/2). The subset is drawn with `random.Random(split_seed).sample` over the *sorted* global class names, so
it depends only on the seed and the class list, not on folder order or Python's hash salt; the resulting lists are
written into the run spec, so a run's split is visible and re-checkable.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

SETTINGS = ("closed", "partial", "open")


@dataclass(frozen=True)
class SplitClasses:
    setting: str
    query_classes: tuple[str, ...]
    retrieval_classes: tuple[str, ...]

    @property
    def shared_classes(self) -> tuple[str, ...]:
        retrieval = set(self.retrieval_classes)
        return tuple(c for c in self.query_classes if c in retrieval)

    @property
    def private_query_classes(self) -> tuple[str, ...]:
        retrieval = set(self.retrieval_classes)
        return tuple(c for c in self.query_classes if c not in retrieval)


def random_half(class_names, split_seed: int) -> tuple[str, ...]:
    """floor(C/2) classes drawn from the sorted names with the split seed; returned sorted."""
    ordered = sorted(class_names)
    half = len(ordered) // 2
    if half == 0:
        raise ValueError(f"cannot take half of {len(ordered)} class(es): partial and open-set need at least 2")
    return tuple(sorted(random.Random(split_seed).sample(ordered, half)))


def build_split(setting: str, class_names, split_seed: int) -> SplitClasses:
    ordered = tuple(sorted(class_names))
    if setting == "closed":
        return SplitClasses(setting, ordered, ordered)
    if setting == "partial":
        return SplitClasses(setting, random_half(ordered, split_seed), ordered)
    if setting == "open":
        return SplitClasses(setting, ordered, random_half(ordered, split_seed))
    raise ValueError(f"unknown setting {setting!r}; expected one of {', '.join(SETTINGS)}")
