"""Suites: named grids of runs (dataset x settings x ordered pairs x methods x seeds), expanded into run specs.

A suite names what to run; the plan resolves every run's hyper-parameters (method defaults, then the method's
per-dataset overrides, then the suite's, then `--set`) and split class lists, so each spec — and its hash — says
exactly what ran.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from datasets.registry import add_unique, get_dataset
from datasets.splits import SETTINGS, build_split
from methods import get_method_class, method_names
from methods.base import HparamError, resolve_hparams

from .backbone_specs import NATIVE_INITS, PAPER_BACKBONE, QUICKSTART_BACKBONE
from .catalogue import setting_words
from .errors import UserError
from .spec import RunSpec


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: str
    settings: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]           # ordered (query domain, retrieval domain)
    seeds: tuple[int, ...]
    backbone: dict
    methods: tuple[str, ...] | None = None       # None: every registered method (not the variants), in table order
    ks: tuple[int, ...] = (1, 5, 15)
    description: str = ""
    method_overrides: dict = field(default_factory=dict)   # method -> {hparam: value}

    def method_list(self) -> list[str]:
        return list(self.methods) if self.methods is not None else method_names(include_variants=False)


SUITES: dict[str, Suite] = {}


def add_suite(suite: Suite) -> Suite:
    """Make a suite known by its name (ValueError when the name is taken). Returns `suite`."""
    return add_unique(SUITES, suite.name, suite, "suite")


add_suite(Suite(
    name="quickstart",
    dataset="synthetic",
    settings=("partial",),
    pairs=(("photo", "sketch"), ("clipart", "painting"), ("sketch", "clipart")),
    seeds=(2024, 2025, 2026),
    backbone=QUICKSTART_BACKBONE,
    description="embedded synthetic shapes, partial setting (the query domain keeps half of the classes), "
                "every registered method from a shared SimCLR-pretrained small CNN; CPU, minutes, no download",
))


add_suite(Suite(
    name="quickstart_ablation",
    dataset="synthetic",
    settings=("open",),
    pairs=SUITES["quickstart"].pairs,
    seeds=SUITES["quickstart"].seeds,
    backbone=QUICKSTART_BACKBONE,
    # The paper's Table 4 rows (variants, then full UEM), after the starting point they all train from.
    methods=("pretrained", "uem_no_pm", "uem_no_sel", "uem_no_spda", "uem_no_sn2m", "uem"),
    description="UEM's ablations (the paper's Table 4) on the synthetic data, open-set: shared mAP / open-set acc, "
                "with the untrained starting point as the first row",
))


# --- the paper's suites (UEM, NeurIPS 2024, arXiv:2403.05690: Sec. 4 and Tables 1-8) ----------------------------

PAPER_SEEDS = (2024, 2025, 2026)
ABLATION_METHODS = SUITES["quickstart_ablation"].methods


def _ordered_pairs(domains) -> tuple[tuple[str, str], ...]:
    """All ordered pairs, grouped by query domain in the dataset's domain order: A→D, A→W, D→A, D→W, W→A, W→D, as
    the paper's columns."""
    return tuple((q, r) for q in domains for r in domains if q != r)


# dataset -> (pairs in the paper's column order, precision cut-offs: UCDIR's P@1/5/15 for the Office datasets and its
# P@50/100/200 for DomainNet, the paper's table per setting). The tables report mAP@All, and shared mAP@All /
# Open-set Acc for the open setting (benchmark/collect.py picks the metrics from the setting).
PAPER_DATASETS = {
    "office31": (_ordered_pairs(("amazon", "dslr", "webcam")), (1, 5, 15),
                 {"closed": "Table 1", "partial": "Table 6", "open": "Table 7"}),
    "office_home": (_ordered_pairs(("Art", "Clipart", "Product", "Real_World")), (1, 5, 15),
                    {"closed": "Table 5", "partial": "Table 2", "open": "Table 8"}),
    "domainnet": ((("quickdraw", "clipart"), ("clipart", "painting"), ("painting", "infograph"),
                   ("infograph", "sketch"), ("sketch", "real")), (50, 100, 200),
                  {"closed": "Table 1", "partial": "Table 6", "open": "Table 3"}),
}

for _dataset, (_pairs, _ks, _tables) in PAPER_DATASETS.items():
    for _setting in ("closed", "partial", "open"):
        add_suite(Suite(
            name=f"{_dataset}_{_setting}", dataset=_dataset, settings=(_setting,), pairs=_pairs, seeds=PAPER_SEEDS,
            backbone=PAPER_BACKBONE, ks=_ks,
            description=f"the paper's {setting_words(_setting)} protocol, every registered method, seeds 2024-2026, "
                        f"from MoCo v2 ResNet-50 (the paper's {_tables[_setting]}); needs --data-root"))
    add_suite(Suite(
        name=f"{_dataset}_ablation", dataset=_dataset, settings=("open",), pairs=_pairs, seeds=PAPER_SEEDS,
        backbone=PAPER_BACKBONE, ks=_ks, methods=ABLATION_METHODS,
        description="UEM's ablations (the paper's Table 4), open-set, from MoCo v2 ResNet-50; needs --data-root"))


def get_suite(name: str) -> Suite:
    """A built-in suite by name, or the suite of a TOML file (`name` ending in .toml, or an existing file:
    benchmark/suite_files.py)."""
    from .suite_files import is_suite_file, load_suite_file
    if name not in SUITES and is_suite_file(name):
        return load_suite_file(name)
    try:
        return SUITES[name]
    except KeyError:
        raise UserError(f"unknown suite {name!r}; available suites: {', '.join(SUITES)}, or a suite file "
                        f"(PATH.toml)") from None


def parse_overrides(assignments: list[str], methods: list[str]) -> dict[str, dict]:
    """`--set key=value` applies to every selected method that has `key`; `--set method.key=value` to one method.
    Returns method -> {key: value (string)}; unknown keys and methods are errors."""
    per_method: dict[str, dict] = {m: {} for m in methods}
    for text in assignments:
        if "=" not in text or text.startswith("="):
            raise UserError(f"malformed --set {text!r}: expected key=value or method.key=value (e.g. --set lr=0.01 "
                            f"or --set cds.temperature=0.05)")
        key, value = text.split("=", 1)
        key = key.strip()
        if "." in key:
            method, key = key.split(".", 1)
            if method not in per_method:
                raise UserError(f"--set {text!r}: method {method!r} is not in this plan ({', '.join(methods)})")
            targets = [method]
        else:
            targets = [m for m in methods if key in _hparam_names(m)]
            if not targets:
                raise UserError(f"--set {text!r}: no selected method has a hyper-parameter {key!r}")
        for method in targets:
            if key not in _hparam_names(method):
                raise UserError(f"--set {text!r}: method {method!r} has no hyper-parameter {key!r}; its "
                                f"hyper-parameters are: {', '.join(sorted(_hparam_names(method)))}")
            per_method[method][key] = value
    return per_method


def _hparam_names(method: str) -> set[str]:
    import dataclasses
    return {f.name for f in dataclasses.fields(get_method_class(method).Hparams)}


def select_methods(suite: Suite, requested: list[str] | None) -> list[str]:
    names = requested or suite.method_list()
    unknown = [n for n in names if n not in method_names()]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)}; registered methods: {', '.join(method_names())} "
                        f"(a method from outside the harness needs --plugin FILE_OR_MODULE)")
    if requested:            # table rows in the registry's order (the paper's), whatever order they were typed in
        names = [n for n in method_names() if n in set(requested)]
    return names


def select_pairs(suite: Suite, requested: list[str] | None) -> list[tuple[str, str]]:
    """`--pairs Ph-Sk photo-clipart ...`: full or short domain names joined by '-', '>' or '->' (or '→')."""
    if not requested:
        return list(suite.pairs)
    info = get_dataset(suite.dataset)
    pairs = []
    for text in requested:
        normalised = text.replace("→", "-").replace("->", "-").replace(">", "-")
        if "-" not in normalised:                      # TLlib-style task names: Ar2Cl
            normalised = normalised.replace("2", "-")
        parts = normalised.split("-")
        if len(parts) != 2 or not all(parts):
            raise UserError(f"malformed pair {text!r}: expected QUERY-RETRIEVAL, e.g. "
                            f"{info.short_names[info.domains[0]]}-{info.short_names[info.domains[1]]}")
        try:
            pair = (info.domain_name(parts[0]), info.domain_name(parts[1]))
        except KeyError as error:
            raise UserError(f"pair {text!r}: {error.args[0]}") from None
        if pair[0] == pair[1]:
            raise UserError(f"pair {text!r}: query and retrieval domains must differ")
        pairs.append(pair)
    return pairs


BASELINE_INITS = ("suite", "native")


def method_backbone(suite: Suite, method: str, baseline_init: str = "suite") -> dict:
    """The backbone spec a method's runs start from: the suite's (the paper's fairness rule: every method from MoCo
    v2), or with `baseline_init="native"` the start of the method's own paper where it differs (CDS, PCS, CoDA:
    supervised ImageNet weights), same architecture and head."""
    if baseline_init not in BASELINE_INITS:
        raise UserError(f"unknown --baseline-init {baseline_init!r}; expected one of {', '.join(BASELINE_INITS)}")
    native = get_method_class(method).native_init
    if baseline_init == "suite" or native is None:
        return suite.backbone
    try:
        init = NATIVE_INITS[native][suite.backbone["arch"]]
    except KeyError:
        raise UserError(f"--baseline-init native: {method}'s own start ({native}) has no weights for the "
                        f"{suite.backbone['arch']} backbone of suite {suite.name!r}; the paper's suites use "
                        f"resnet50") from None
    return {**suite.backbone, "init": init}


def plan(suite: Suite, methods: list[str] | None = None, pairs: list[str] | None = None,
         seeds: list[int] | None = None, settings: list[str] | None = None,
         assignments: list[str] | None = None, baseline_init: str = "suite") -> list[RunSpec]:
    info = get_dataset(suite.dataset)
    method_list = select_methods(suite, methods)
    pair_list = select_pairs(suite, pairs)
    seed_list = list(seeds) if seeds else list(suite.seeds)
    setting_list = list(settings) if settings else list(suite.settings)
    for setting in setting_list:
        if setting not in SETTINGS:
            raise UserError(f"unknown setting {setting!r}; expected one of {', '.join(SETTINGS)}")
    cli_overrides = parse_overrides(assignments or [], method_list)
    resolved = {}
    for method in method_list:
        try:
            resolved[method] = resolve_hparams(get_method_class(method), suite.dataset,
                                               {**suite.method_overrides.get(method, {}), **cli_overrides[method]})
        except HparamError as error:
            raise UserError(str(error)) from None
    backbones = {method: method_backbone(suite, method, baseline_init) for method in method_list}
    specs = []
    for setting in setting_list:
        for query, retrieval in pair_list:
            for method in method_list:
                for seed in seed_list:
                    split = build_split(setting, info.class_map.names, split_seed=seed)
                    specs.append(RunSpec(
                        dataset=suite.dataset, setting=setting, query_domain=query, retrieval_domain=retrieval,
                        query_classes=split.query_classes, retrieval_classes=split.retrieval_classes,
                        method=method, hparams=resolved[method], seed=seed, split_seed=seed,
                        backbone=backbones[method], ks=tuple(suite.ks)))
    return specs
