"""Method registry: `@register("name")` on a Method subclass; a duplicate name is an error; unknown names fail when
the plan is made, listing the valid ones.

`PAPER_ORDER` is the row order of the paper's tables; methods not in it (user methods, variants) follow in registration
order, and `pretrained` (the untrained starting point) comes first as the floor of every table.
"""
from __future__ import annotations

REGISTRY: dict[str, type] = {}
PAPER_ORDER = ("pretrained", "cds", "pcs", "darl", "dn2a", "ucdir", "coda", "dgdir", "uem")


def register(name: str):
    def decorate(cls):
        if name in REGISTRY:
            raise ValueError(f"method name {name!r} is already registered by {REGISTRY[name].__module__}."
                             f"{REGISTRY[name].__name__}")
        cls.name = name
        REGISTRY[name] = cls
        return cls
    return decorate


def get_method_class(name: str) -> type:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(method_names())}") from None


def method_names(include_variants: bool = True) -> list[str]:
    """Registered names in table order: the paper's methods, then the others (user methods, variants such as
    ablations) in registration order; `include_variants=False` leaves the variants out."""
    known = [n for n in PAPER_ORDER if n in REGISTRY]
    names = known + [n for n in REGISTRY if n not in PAPER_ORDER]
    if include_variants:
        return names
    return [n for n in names if getattr(REGISTRY[n], "variant_of", None) is None]
