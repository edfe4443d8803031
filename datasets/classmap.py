"""The global class map of a dataset: class ids are positions in the sorted list of class names.

Ids never come from a domain's folder order (UCDIR's loader numbers each domain's folders separately, which breaks as
soon as two domains hold different class sets: partial and open-set). One map per dataset, shared by every domain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class ClassMap:
    names: tuple[str, ...]

    @classmethod
    def from_names(cls, names: Iterable[str]) -> "ClassMap":
        unique = sorted(set(names))
        if not unique:
            raise ValueError("a class map needs at least one class name")
        return cls(tuple(unique))

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self._index

    @property
    def _index(self) -> dict[str, int]:
        # Cached lazily on the frozen instance.
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {name: i for i, name in enumerate(self.names)}
            object.__setattr__(self, "_index_cache", cached)
        return cached

    def id(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"unknown class {name!r}; the dataset's classes are: {', '.join(self.names)}") from None

    def ids(self, names: Iterable[str]) -> list[int]:
        return [self.id(n) for n in names]
