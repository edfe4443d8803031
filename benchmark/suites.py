"""Suites: named grids of runs (dataset x settings x ordered pairs x methods x seeds), expanded into run specs.

A suite names what to run; the plan resolves every run's hyper-parameters (method defaults, then the method's
per-dataset overrides, then its recipe for the suite's budget, then the suite's, then `--set`) and split class lists,
so each spec — and its hash — says exactly what ran.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datasets.base import WHITE
from datasets.registry import add_unique, default_budget, get_dataset
from datasets.splits import SETTINGS, build_split
from methods import get_method_class, method_names
from methods.backbones import backbone_family
from methods.base import HparamError, resolve_hparams

from .backbone_specs import NATIVE_INITS
from .errors import UserError
from .spec import RunSpec
from .suite_files import SuiteFileError, is_suite_file, read_suite_file


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
    budget: str | None = None                    # methods.base.BUDGETS; None: the dataset's (synthetic: quickstart)

    def method_list(self) -> list[str]:
        return list(self.methods) if self.methods is not None else method_names(include_variants=False)

    def budget_name(self) -> str:
        """The budget every run of the suite takes (its own, else its dataset's default)."""
        return self.budget or default_budget(self.dataset)


SUITES: dict[str, Suite] = {}


def add_suite(suite: Suite) -> Suite:
    """Make a suite known by its name (ValueError when the name is taken). Returns `suite`."""
    return add_unique(SUITES, suite.name, suite, "suite")


# The built-in suites ship as files (suites/*.toml at the root of the checkout), as a user's own do: copy one to start.
BUILTIN_SUITES = Path(__file__).resolve().parent.parent / "suites"


_LOADED_FILES: dict[str, Suite] = {}        # resolved path of a suite file -> its suite


def load_suite_file(path) -> Suite:
    """The suite of a TOML file (benchmark/suite_files.py), registered with its folder dataset and plugins; once per
    process and file. Raises SuiteFileError (a UserError) naming the file, the key, the value and what was expected,
    also when another suite has its name."""
    resolved = str(Path(path).expanduser().resolve())
    if resolved in _LOADED_FILES:
        return _LOADED_FILES[resolved]
    suite = Suite(**read_suite_file(resolved))
    if suite.name in SUITES:
        raise SuiteFileError(f"{resolved}: key 'name' = {suite.name!r}: expected a name no other suite has "
                             f"(built-in suites: see --list)")
    _LOADED_FILES[resolved] = add_suite(suite)
    return suite


# The companions of the paper's suites: the same runs from another backbone (`<suite>_dinov2`, `<suite>_clip`)
COMPANION_SUFFIXES = ("dinov2", "clip")


def load_builtin_suites() -> None:
    """Register every suite file of BUILTIN_SUITES, in the order --list shows them: the quickstart's, then the paper's
    datasets in its tables' order, each closed, partial, open, ablation, each followed by its companions."""
    order = ("quickstart", "office31", "office_home", "domainnet", "closed", "partial", "open", "ablation")

    def rank(path: Path) -> tuple:
        stem, _, companion = path.stem.rpartition("_")
        if companion not in COMPANION_SUFFIXES:
            stem, companion = path.stem, ""
        dataset, _, setting = stem.rpartition("_")
        dataset = dataset if dataset in order else stem
        return (order.index(dataset) if dataset in order else len(order), dataset,
                order.index(setting) if setting in order else -1,
                COMPANION_SUFFIXES.index(companion) if companion else -1)
    for path in sorted(BUILTIN_SUITES.glob("*.toml"), key=rank):
        load_suite_file(path)


def get_suite(name: str) -> Suite:
    """A built-in suite by name, or the suite of a TOML file (`name` ending in .toml, or an existing file:
    benchmark/suite_files.py)."""
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
    backbones = {method: method_backbone(suite, method, baseline_init) for method in method_list}
    resolved = {}
    for method in method_list:
        try:
            resolved[method] = resolve_hparams(get_method_class(method), suite.dataset,
                                               {**suite.method_overrides.get(method, {}), **cli_overrides[method]},
                                               family=backbone_family(backbones[method]), budget=suite.budget_name())
        except HparamError as error:
            raise UserError(str(error)) from None
    # A background other than white changes the pixels the run trains on: part of its identity. White (every built-in
    # dataset's) adds nothing, so the runs made before the background existed keep their ids.
    extra = {"background": list(info.background)} if info.background != WHITE else {}
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
                        backbone=backbones[method], ks=tuple(suite.ks), extra=dict(extra)))
    return specs


load_builtin_suites()
