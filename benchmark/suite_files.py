"""Suites written as TOML files (`--suite PATH.toml`), with the user's own folder dataset and methods:

    name = "toys_partial"
    settings = ["partial", "open"]
    pairs = [["photo", "drawing"], ["drawing", "photo"]]
    methods = ["pretrained", "uem", "ucdir"]    # default: every registered method
    seeds = [1, 2, 3]
    backbone = "small_cnn"                       # or resnet18 / resnet50, or a ViT (docs/backbones.md)
    init = "simclr"                              # or "moco_v2", "imagenet_supervised", "random", a checkpoint path;
                                                 # a ViT's: "dinov2", "clip_openai", "openclip_laion2b" (its default)
    input_size = 224                             # a ViT's input size (a multiple of its patch; default 224)
    image_size = 32
    budget = "quickstart"                        # every method's small-data recipe (default "paper": the papers')
    plugins = ["my_methods.py"]                  # optional: files or modules that register more methods

    [dataset]                                    # or: dataset = "office_home" for a built-in one
    name = "toys"
    root = "data/toys"                           # <root>/<domain>/<class>/<image>
    background = "white"                         # optional: what transparent pixels show; a name, "#rrggbb", [r, g, b]
    [dataset.short_names]                        # optional
    photo = "Ph"

    [hparams.uem]                                # per-method overrides, as --set uem.stage1_epochs=20
    stage1_epochs = 20

    [simclr]                                     # optional: the self-supervised init's recipe
    lr = 0.05

Paths are relative to the file. A folder dataset's domains are its root's folders, its classes the sorted union of
the class folders over the domains (one class map). Every error names the file, the key, the value and what was
expected (UserError: exit 2, nothing written). The runner loads the file again in every process that runs one of its
runs (its path is in launch.json), so `--jobs` workers and SLURM tasks know its dataset and plugins.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from datasets.base import class_folders, is_system_entry
from datasets.classmap import ClassMap
from datasets.registry import DATASETS, DatasetInfo, register_dataset
from datasets.splits import SETTINGS
from methods.base import BUDGETS
from methods.plugins import PluginError, load_plugins

from .backbone_choice import (BACKBONE_NAMES, INIT_NAMES, SIMCLR_RECIPE, BackboneChoiceError, backbone_spec,
                              default_init)
from .errors import UserError

KEYS = {"name": "a suite name (letters, digits, '_', '-', '.')", "description": "a string",
        "settings": f"a list of {', '.join(SETTINGS)}", "pairs": "a list of [query, retrieval] domain pairs",
        "methods": "a list of method names", "seeds": "a list of integers", "ks": "a list of positive integers (P@k)",
        "backbone": f"one of {', '.join(BACKBONE_NAMES)}",
        "init": "simclr, moco_v2, imagenet_supervised, random, dinov2, clip_openai, openclip_laion2b, or a checkpoint "
                "file",
        "input_size": "a ViT's input size in pixels, a multiple of its patch size (224, or 518 for DINOv2's own)",
        "image_size": "a positive integer (pixels)", "plugins": "a list of method files or modules",
        "dataset": "a built-in dataset's name, or a table with name and root", "hparams": "a table per method",
        "simclr": f"a table with {', '.join(SIMCLR_RECIPE)}",
        "budget": f"one of {', '.join(f'{b!r}' for b in BUDGETS)} (each method's schedule for that budget; "
                  f"default: the dataset's, 'paper' for a folder dataset)"}
FOLDER_DATASETS: dict[str, Path] = {}     # name -> root of the folder datasets the suite files registered


BACKGROUND_FORMS = ('a colour name ("white", "black", or another CSS colour name), "#rrggbb", or [r, g, b] with '
                    'integers 0..255')


class SuiteFileError(UserError):
    pass


def is_suite_file(value: str) -> bool:
    return str(value).endswith(".toml") or Path(value).is_file()


def read_suite_file(path) -> dict:
    """The keyword arguments of the `Suite` (benchmark/suites.py) a TOML file describes; its folder dataset is
    registered and its plugins are loaded on the way. Raises SuiteFileError naming the file, the key, the value and
    what was expected. Registering the suite is suites.load_suite_file's (which calls this)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise SuiteFileError(f"--suite {path}: no such file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SuiteFileError(f"{path}: not valid TOML: {error}") from None
    return _Reader(path, data).suite()


class _Reader:
    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    def error(self, key: str, value, expected: str) -> SuiteFileError:
        return SuiteFileError(f"{self.path}: key {key!r} = {value!r}: expected {expected}")

    def get(self, key: str, kind, default=None, required: bool = False):
        if key not in self.data:
            if required:
                raise SuiteFileError(f"{self.path}: key {key!r} is missing: expected {KEYS[key]}")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.error(key, value, KEYS[key])
        return value

    def items(self, key: str, kind, default=None) -> list | None:
        if key not in self.data:
            return default
        values = self.get(key, list)
        well_typed = all(isinstance(v, kind) and not isinstance(v, bool) for v in values)
        if (not values and key != "plugins") or not well_typed:
            raise self.error(key, values, KEYS[key])
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise self.error(key, values, f"{KEYS[key]}, each once (repeated: {', '.join(repeated)})")
        return values

    def relative(self, value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (self.path.parent / candidate).resolve()

    def suite(self) -> dict:
        unknown = sorted(set(self.data) - set(KEYS))
        if unknown:
            raise SuiteFileError(f"{self.path}: unknown key(s) {', '.join(map(repr, unknown))}; the keys are: "
                                 f"{', '.join(KEYS)}")
        name = self.get("name", str, required=True)
        if not name or not all(c.isalnum() or c in "_-." for c in name):
            raise self.error("name", name, KEYS["name"])
        plugins = self.items("plugins", str, [])
        try:
            load_plugins([p if not p.endswith(".py") else str(self.relative(p)) for p in plugins])
        except PluginError as error:
            raise SuiteFileError(f"{self.path}: key 'plugins': {error}") from None
        image_size = self.get("image_size", int, 32)
        if image_size < 8:
            raise self.error("image_size", image_size, KEYS["image_size"] + " of at least 8")
        dataset = self.dataset(image_size)
        settings = self.items("settings", str, ["closed"])
        for setting in settings:
            if setting not in SETTINGS:
                raise self.error("settings", settings, KEYS["settings"])
        pairs = self.pairs(dataset)
        methods = self.items("methods", str)
        if methods is not None:
            from methods.registry import method_names
            unknown_methods = [m for m in methods if m not in method_names()]
            if unknown_methods:
                raise self.error("methods", methods, f"registered methods ({', '.join(method_names())}; more "
                                                     f"with plugins); unknown: {', '.join(unknown_methods)}")
        seeds = self.items("seeds", int, [2024, 2025, 2026])
        ks = self.items("ks", int, [1, 5, 15])
        if any(k < 1 for k in ks):
            raise self.error("ks", ks, KEYS["ks"])
        overrides = self.get("hparams", dict, {})
        for method, values in overrides.items():
            if not isinstance(values, dict):
                raise self.error(f"hparams.{method}", values, "a table of hyper-parameters")
        budget = self.get("budget", str)
        if budget is not None and budget not in BUDGETS:
            raise self.error("budget", budget, KEYS["budget"])
        return dict(name=name, dataset=dataset.name, settings=tuple(settings), pairs=pairs, seeds=tuple(seeds),
                    budget=budget,
                    backbone=self.backbone(dataset), methods=tuple(methods) if methods else None, ks=tuple(ks),
                    description=self.get("description", str, f"from {self.path.name}"),
                    method_overrides={m: dict(v) for m, v in overrides.items()})

    def dataset(self, image_size: int) -> DatasetInfo:
        value = self.get("dataset", (str, dict), required=True)
        if isinstance(value, str):
            if value not in DATASETS:
                raise self.error("dataset", value, f"a built-in dataset ({', '.join(DATASETS)}) or a table with "
                                                   f"name and root")
            return DATASETS[value]
        unknown = sorted(set(value) - {"name", "root", "short_names", "background"})
        if unknown or not isinstance(value.get("name"), str) or not isinstance(value.get("root"), str):
            raise self.error("dataset", value, "a table with name (a string), root (a folder) and optionally "
                                               "short_names (domain -> short name) and background (the colour "
                                               "transparent pixels show)")
        background = self.background(value.get("background", "white"))
        root = self.relative(value["root"])
        if not root.is_dir():
            raise self.error("dataset.root", value["root"], f"a folder holding <domain>/<class>/<image> (looked at "
                                                            f"{root})")
        domains = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not is_system_entry(p)))
        if len(domains) < 2:
            raise self.error("dataset.root", value["root"], f"a folder with at least two domain folders (found "
                                                            f"{', '.join(domains) or 'none'} in {root})")
        classes = sorted({name for d in domains for name in class_folders(root / d)[0]})
        short_names = dict(value.get("short_names") or {})
        strays = sorted(set(short_names) - set(domains))
        if strays:
            raise self.error("dataset.short_names", short_names, f"short names of its domains "
                                                                 f"({', '.join(domains)}); not domains: "
                                                                 f"{', '.join(strays)}")
        info = DatasetInfo(
            name=value["name"], title=value["name"], domains=domains,
            short_names={d: str(short_names.get(d, d)) for d in domains}, class_map=ClassMap.from_names(classes),
            image_size=image_size, locate=lambda data_root, cache_dir, root=root: root,
            description=f"a folder dataset: {root} ({len(domains)} domains, {len(classes)} classes)",
            background=background)
        existing = DATASETS.get(info.name)
        if existing is None:
            FOLDER_DATASETS[info.name] = root
            return register_dataset(info)
        if (existing.description, existing.image_size, existing.background) != (info.description, image_size,
                                                                                background):
            raise self.error("dataset.name", info.name, "a name no other dataset has (built-in or loaded from "
                                                        "another file)")
        return existing

    def background(self, value) -> tuple[int, int, int]:
        """`[dataset] background`: the RGB colour transparent pixels are composited onto (datasets/base.py,
        to_rgb8), read with PIL's colour names; an opaque colour only."""
        from PIL import ImageColor
        if isinstance(value, str):
            try:
                rgb = ImageColor.getrgb(value)
            except ValueError:
                rgb = None
        elif isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            rgb = tuple(value)
        else:
            rgb = None
        if rgb is None or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise self.error("dataset.background", value, BACKGROUND_FORMS)
        return rgb

    def pairs(self, dataset: DatasetInfo) -> tuple[tuple[str, str], ...]:
        values = self.items("pairs", list)
        if values is None:
            return tuple((q, r) for q in dataset.domains for r in dataset.domains if q != r)
        pairs = []
        for pair in values:
            if len(pair) != 2 or not all(isinstance(d, str) for d in pair):
                raise self.error("pairs", pair, "a [query, retrieval] pair of domain names")
            try:
                resolved = (dataset.domain_name(pair[0]), dataset.domain_name(pair[1]))
            except KeyError as error:
                raise SuiteFileError(f"{self.path}: key 'pairs' = {pair!r}: {error.args[0]}") from None
            if resolved[0] == resolved[1]:
                raise self.error("pairs", pair, "two different domains")
            pairs.append(resolved)
        return tuple(pairs)

    def backbone(self, dataset: DatasetInfo) -> dict:
        arch = self.get("backbone", str, "small_cnn")
        if arch not in BACKBONE_NAMES:
            raise self.error("backbone", arch, KEYS["backbone"])
        init = self.get("init", str, default_init(arch))
        recipe = self.get("simclr", dict, {})
        unknown = sorted(set(recipe) - set(SIMCLR_RECIPE))
        if unknown:
            raise self.error("simclr", recipe, KEYS["simclr"])
        if recipe and init != "simclr":
            raise self.error("simclr", recipe, "no [simclr] table unless init = \"simclr\"")
        input_size = self.get("input_size", int)
        checkpoint = None if init in INIT_NAMES else self.relative(init)
        if checkpoint is not None and not checkpoint.is_file():
            raise self.error("init", init, f"{KEYS['init']} (no file at {checkpoint})")
        try:
            return backbone_spec(arch, init, dataset, recipe, input_size, checkpoint)
        except BackboneChoiceError as error:
            raise self.error(error.key, input_size if error.key == "input_size" else init, str(error)) from None


def check_folder_dataset(info: DatasetInfo) -> tuple[str, bool]:
    """`--check-data --suite FILE.toml` for a folder dataset: per domain its images (no published counts to compare
    with), the classes it lacks, empty class folders, images that cannot be read, and how many have transparent
    pixels (a note). Returns (the report, whether it is usable)."""
    from datasets.base import image_files, inspect_image, transparency_note
    root = info.locate(None, Path("."))
    lines, problems = [f"{info.name} (a folder dataset) at {root}: {len(info.class_map)} classes"], 0
    for domain in info.domains:
        folders, _ = class_folders(root / domain)
        counts = {name: len(image_files(folder)) for name, folder in folders.items()}
        unreadable, transparent = [], 0
        for folder in folders.values():
            for path in image_files(folder):
                reason, has_transparency = inspect_image(path)
                transparent += has_transparency
                if reason is not None:
                    unreadable.append(f"{path} ({reason})")
        lacking = [c for c in info.class_map.names if c not in folders]
        empty = sorted(name for name, n in counts.items() if n == 0)
        found = [f"      problem: unreadable image {u}" for u in unreadable[:10]]
        found += [f"      problem: empty class folder(s) {', '.join(empty)}"] if empty else []
        problems += len(unreadable) + len(empty)
        note = f"; lacks {len(lacking)} class(es): {', '.join(lacking)}" if lacking else ""
        lines.append(f"  {domain:<11} ({info.short_names[domain]:>2}) {sum(counts.values()):>6} images in "
                     f"{len(folders)} class folders{note}  {'ok' if not found else f'{len(found)} problem(s)'}")
        lines += found
        if transparent:
            lines.append("      note: " + transparency_note(transparent, info.background,
                                                            "the suite file's [dataset] background"))
    lines.append(f"  -> {info.name}: " + ("usable" if not problems else f"{problems} problem(s)"))
    return "\n".join(lines), not problems
