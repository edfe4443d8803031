"""The real datasets of the paper: Office-31, Office-Home and DomainNet restricted to the protocol's 7 classes.

Each is described once, as data: its domains and short names, its class names (shipped here, with their source), the
published image counts, the folder layouts it may come in, and where it is published. From that description the
same code locates a dataset under `--data-root`, reads a domain (folder tree, or image-list files when the folders
are absent), and checks a dataset on disk (`--check-data`).

`--data-root DIR` holds one folder per dataset:

    DIR/office31/{amazon,dslr,webcam}/<class>/<image>            (the archive's <domain>/images/<class>/ also works)
    DIR/office_home/{Art,Clipart,Product,Real_World}/<class>/<image>   (or OfficeHomeDataset_10072016/, `Real World`)
    DIR/domainnet/{clipart,infograph,painting,quickdraw,real,sketch}/<class>/<image>  (the full 345 class folders may
                                                                        stay: only the protocol's 7 are read)

Image lists in the transfer-learning-library style (`relative/path label`, labels in that library's order) are read
from `<dataset folder>/image_list/` when a domain folder is absent: `<domain>.txt` (Office-31, Office-Home) or
`<domain>_train.txt` + `<domain>_test.txt` (DomainNet; both, as the protocol uses every image of the 7 classes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .base import (WHITE, DataError, ImageRecord, class_folders, image_files, inspect_image, read_folder_layout,
                   read_image_list, skipped_note, transparency_note)
from .classmap import ClassMap

# --- class names ----------------------------------------------------------------------------------------------------

# Office-31's 31 class folder names, archive spelling (Saenko et al., ECCV 2010, "domain_adaptation_images");
# source: Transfer-Learning-Library (thuml/Transfer-Learning-Library, commit c4aa59e),
# `tllib/vision/datasets/office31.py` (Office31.CLASSES). Sorted order = that library's label order.
OFFICE31_CLASSES = (
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair", "desk_lamp",
    "desktop_computer", "file_cabinet", "headphones", "keyboard", "laptop_computer", "letter_tray", "mobile_phone",
    "monitor", "mouse", "mug", "paper_notebook", "pen", "phone", "printer", "projector", "punchers", "ring_binder",
    "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can",
)

# Office-Home's 65 class folder names, archive spelling (Venkateswara et al., CVPR 2017, OfficeHomeDataset_10072016),
# in the label order of Transfer-Learning-Library `tllib/vision/datasets/officehome.py` (OfficeHome.CLASSES), which its
# image lists use (thuml/Transfer-Learning-Library, commit c4aa59e). Our class ids are the sorted names; this order
# only decodes lists.
OFFICE_HOME_LIST_ORDER = (
    "Drill", "Exit_Sign", "Bottle", "Glasses", "Computer", "File_Cabinet", "Shelf", "Toys", "Sink", "Laptop", "Kettle",
    "Folder", "Keyboard", "Flipflops", "Pencil", "Bed", "Hammer", "ToothBrush", "Couch", "Bike", "Postit_Notes", "Mug",
    "Webcam", "Desk_Lamp", "Telephone", "Helmet", "Mouse", "Pen", "Monitor", "Mop", "Sneakers", "Notebook",
    "Backpack", "Alarm_Clock", "Push_Pin", "Paper_Clip", "Batteries", "Radio", "Fan", "Ruler", "Pan", "Screwdriver",
    "Trash_Can", "Printer", "Speaker", "Eraser", "Bucket", "Chair", "Calendar", "Calculator", "Flowers", "Lamp_Shade",
    "Spoon", "Candles", "Clipboards", "Scissors", "TV", "Curtains", "Fork", "Soda", "Table", "Knives", "Oven",
    "Refrigerator", "Marker",
)

# DomainNet-7: the classes with more than 200 images in every domain that UCDIR's protocol uses (UEM, Sec. 4, follows
# it without printing the list); the list is hard-coded in ProtoOT's `loader.py` (HCVLab/ProtoOT, commit ebe94d7).
# Keys: the classes' ids in DomainNet's official 345-class label order (the official `<domain>_{train,test}.txt`
# lists and Transfer-Learning-Library's DomainNet.CLASSES), used to read those lists.
DOMAINNET7_OFFICIAL_LABELS = {31: "bird", 110: "feather", 302: "teapot", 311: "tiger", 336: "whale", 338: "windmill",
                              343: "zebra"}
DOMAINNET7_CLASSES = tuple(sorted(DOMAINNET7_OFFICIAL_LABELS.values()))


# --- dataset descriptions -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RealDataset:
    name: str
    title: str
    domains: tuple[str, ...]
    short_names: dict[str, str]                  # the paper's
    aliases: dict[str, tuple[str, ...]]          # other accepted names (library task letters, archive folder names)
    classes: tuple[str, ...]
    list_label_names: dict[int, str]             # label in the library's image lists -> class name
    published_counts: dict[str, int]             # images per domain in the published dataset
    count_notes: dict[str, str]
    root_candidates: tuple[str, ...]             # dataset folder names tried under --data-root, in order
    domain_folders: dict[str, tuple[str, ...]]   # folder names tried for a domain, in order
    images_level: bool                           # `<domain>/images/<class>/` (Office-31's archive) accepted
    skip_unknown_classes: bool                   # other class folders present and ignored (DomainNet-7)
    list_files: dict[str, tuple[str, ...]]       # domain -> image-list files under <dataset>/image_list/
    published_at: str
    layout: str
    notes: tuple[str, ...] = field(default=())
    table_title: str = ""                        # the tables' column name when shorter than `title`

    @property
    def class_map(self) -> ClassMap:
        return ClassMap.from_names(self.classes)


OFFICE31 = RealDataset(
    name="office31", title="Office-31",
    domains=("amazon", "dslr", "webcam"),
    short_names={"amazon": "A", "dslr": "D", "webcam": "W"},
    aliases={"amazon": ("Am",), "dslr": ("Ds",), "webcam": ("We",)},
    classes=OFFICE31_CLASSES,
    list_label_names=dict(enumerate(sorted(OFFICE31_CLASSES))),
    # Line counts of the published image lists (e.g. CDTrans/CDTrans, commit e390076, data/office31/<domain>_list.txt).
    published_counts={"amazon": 2817, "dslr": 498, "webcam": 795},
    count_notes={},
    root_candidates=("office31", "Office31", "office-31", "Office-31", "domain_adaptation_images",
                     "office31/domain_adaptation_images"),
    domain_folders={d: (d,) for d in ("amazon", "dslr", "webcam")},
    images_level=True, skip_unknown_classes=False,
    list_files={d: (f"{d}.txt",) for d in ("amazon", "dslr", "webcam")},
    published_at="https://faculty.cc.gatech.edu/~judy/domainadapt/ (archive domain_adaptation_images.tar.gz, "
                 "Saenko et al., ECCV 2010)",
    layout="DIR/office31/{amazon,dslr,webcam}/<class>/<image>  (the archive's DIR/office31/<domain>/images/<class>/ "
           "works as is), 31 class folders per domain, e.g. back_pack, bike, ..., trash_can",
)

OFFICE_HOME = RealDataset(
    name="office_home", title="Office-Home",
    domains=("Art", "Clipart", "Product", "Real_World"),
    # UEM's tables write A, C, P, R; Transfer-Learning-Library's task names Ar, Cl, Pr, Rw work too.
    short_names={"Art": "A", "Clipart": "C", "Product": "P", "Real_World": "R"},
    aliases={"Art": ("Ar",), "Clipart": ("Cl",), "Product": ("Pr",), "Real_World": ("Rw", "Real World", "Real")},
    classes=tuple(sorted(OFFICE_HOME_LIST_ORDER)),
    list_label_names=dict(enumerate(OFFICE_HOME_LIST_ORDER)),
    published_counts={"Art": 2427, "Clipart": 4365, "Product": 4439, "Real_World": 4357},
    count_notes={},
    root_candidates=("office_home", "OfficeHome", "office-home", "Office-Home", "OfficeHomeDataset_10072016",
                     "office_home/OfficeHomeDataset_10072016"),
    domain_folders={"Art": ("Art",), "Clipart": ("Clipart",), "Product": ("Product",),
                    "Real_World": ("Real_World", "Real World", "RealWorld", "Real")},
    images_level=False, skip_unknown_classes=False,
    list_files={d: (f"{d}.txt",) for d in ("Art", "Clipart", "Product", "Real_World")},
    published_at="https://www.hemanthdv.org/officeHomeDataset.html (archive OfficeHomeDataset_10072016.zip, "
                 "Venkateswara et al., CVPR 2017; non-commercial research and educational use)",
    layout="DIR/office_home/{Art,Clipart,Product,Real_World}/<class>/<image>  (the unpacked archive "
           "DIR/OfficeHomeDataset_10072016/ with its `Real World` folder works as is), 65 class folders per domain, "
           "e.g. Alarm_Clock, Backpack, ..., Webcam",
)

_DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
DOMAINNET = RealDataset(
    name="domainnet", title="DomainNet (7 classes)", table_title="DomainNet",
    domains=_DOMAINNET_DOMAINS,
    short_names={"clipart": "Cl", "infograph": "In", "painting": "Pa", "quickdraw": "Qu", "real": "Re",
                 "sketch": "Sk"},
    aliases={"clipart": ("c", "clip"), "infograph": ("i", "info"), "painting": ("p", "paint"),
             "quickdraw": ("q", "quick"), "real": ("r",), "sketch": ("s",)},
    classes=DOMAINNET7_CLASSES,
    list_label_names=DOMAINNET7_OFFICIAL_LABELS,
    # The 7 classes' images in the cleaned release, official train + test together (counted from the official lists):
    # what UCDIR's protocol trains and retrieves on (conghui1002/UCDIR commit 082571b passes --mocok-A 1959 and
    # --mocok-B 2091, the clipart and sketch totals, in scripts/domainnet_clipart-sketch.sh).
    published_counts={"clipart": 1959, "infograph": 2121, "painting": 2415, "quickdraw": 3500, "real": 4451,
                      "sketch": 2091},
    count_notes={"real": "estimate: real/windmill was not counted from a list (about 622)",
                 "clipart": "the uncleaned release has 1964", "infograph": "the uncleaned release has 2244",
                 "painting": "the uncleaned release has 2431", "sketch": "the uncleaned release has 2150"},
    root_candidates=("domainnet", "DomainNet", "domain_net", "domainnet/images", "DomainNet/images"),
    domain_folders={d: (d,) for d in _DOMAINNET_DOMAINS},
    images_level=False, skip_unknown_classes=True,
    list_files={d: (f"{d}_train.txt", f"{d}_test.txt") for d in _DOMAINNET_DOMAINS},
    published_at="http://ai.bu.edu/M3SDA/ (per-domain zips clipart.zip ... sketch.zip and the cleaned "
                 "<domain>_{train,test}.txt lists; Peng et al., ICCV 2019)",
    layout="DIR/domainnet/{clipart,infograph,painting,quickdraw,real,sketch}/<class>/<image>; only the classes "
           "bird, feather, teapot, tiger, whale, windmill, zebra are read (the other DomainNet class folders may stay)",
)

REAL_DATASETS = {d.name: d for d in (OFFICE31, OFFICE_HOME, DOMAINNET)}


# --- locating ---------------------------------------------------------------------------------------------------------

def absent_message(dataset: RealDataset, data_root: Path | None) -> str:
    where = (f"under --data-root {data_root} (looked for " + ", ".join(dataset.root_candidates) + ")"
             if data_root is not None else "(no --data-root given)")
    return (f"the {dataset.title} dataset was not found {where}.\n"
            f"  expected layout: {dataset.layout}\n"
            f"  image lists are accepted instead of folders: DIR/{dataset.name}/image_list/"
            f"{'|'.join(dataset.list_files[dataset.domains[0]])} ('relative/path label' per line)\n"
            f"  published at: {dataset.published_at}")


def _has_a_domain(folder: Path, dataset: RealDataset) -> bool:
    return (folder / "image_list").is_dir() or any(
        (folder / name).is_dir() for names in dataset.domain_folders.values() for name in names)


def locate(dataset: RealDataset, data_root: Path | None) -> Path:
    """The dataset's folder under `data_root`: the first candidate that holds a domain folder or an image_list/."""
    if data_root is not None:
        data_root = Path(data_root)
        if not data_root.is_dir():
            raise DataError(f"--data-root {data_root}: no such folder")
        for candidate in dataset.root_candidates:
            folder = data_root / candidate
            if folder.is_dir() and _has_a_domain(folder, dataset):
                return folder
    raise DataError(absent_message(dataset, data_root))


@dataclass(frozen=True)
class DomainSource:
    """Where a domain's images are: a folder of class folders, or image-list files (paths relative to `root`)."""
    domain: str
    class_folder: Path | None = None
    list_files: tuple[Path, ...] = ()
    root: Path | None = None

    def describe(self) -> str:
        if self.class_folder is not None:
            return f"{self.class_folder}/<class>/"
        return ", ".join(str(p) for p in self.list_files)


def find_domain(dataset: RealDataset, root: Path, domain: str) -> DomainSource:
    for name in dataset.domain_folders[domain]:
        folder = root / name
        if folder.is_dir():
            if dataset.images_level and (folder / "images").is_dir():
                folder = folder / "images"
            return DomainSource(domain, class_folder=folder)
    lists = tuple(root / "image_list" / name for name in dataset.list_files[domain])
    if lists and all(p.is_file() for p in lists):
        return DomainSource(domain, list_files=lists, root=root)
    tried = " or ".join(f"{root / name}/" for name in dataset.domain_folders[domain])
    raise DataError(f"{dataset.title}: domain {domain!r} is missing: expected the folder {tried} "
                    f"(or the image list(s) {', '.join(str(p) for p in lists)})")


def read_domain(dataset: RealDataset, root: Path, domain: str) -> list[ImageRecord]:
    source = find_domain(dataset, root, domain)
    if source.class_folder is not None:
        return read_folder_layout(source.class_folder, dataset.class_map, skip_unknown=dataset.skip_unknown_classes)
    records = []
    for list_file in source.list_files:
        records += read_image_list(list_file, source.root, dataset.class_map, dataset.list_label_names)
    return records


# --- checking ---------------------------------------------------------------------------------------------------------

@dataclass
class DomainReport:
    domain: str
    source: str = ""
    found: int = 0
    missing: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class DatasetReport:
    dataset: RealDataset
    root: Path | None
    absent_message: str | None = None
    domains: list[DomainReport] = field(default_factory=list)

    @property
    def present(self) -> bool:
        return self.root is not None

    @property
    def complete(self) -> bool:
        return self.present and not any(d.problems for d in self.domains)

    def problems(self) -> list[str]:
        return [f"{d.domain}: {p}" for d in self.domains for p in d.problems]

    def text(self) -> str:
        ds = self.dataset
        if not self.present:
            return f"{ds.name}: ABSENT - {self.absent_message}"
        lines = [f"{ds.name} ({ds.title}) at {self.root}"]
        for d in self.domains:
            label = f"  {d.domain:<11} ({ds.short_names[d.domain]:>2})"
            if d.missing:
                lines.append(f"{label} MISSING - {d.problems[0]}")
                continue
            expected = ds.published_counts[d.domain]
            comparison = ("as published" if d.found == expected else
                          f"published {expected}: {expected - d.found} fewer" if d.found < expected else
                          f"published {expected}: {d.found - expected} more")
            note = f"; {ds.count_notes[d.domain]}" if d.domain in ds.count_notes and d.found != expected else ""
            status = "ok" if not d.problems else f"{len(d.problems)} problem(s)"
            lines.append(f"{label} {d.found:>6} images ({comparison}{note}) from {d.source}  {status}")
            lines += [f"      problem: {p}" for p in d.problems]
            lines += [f"      note: {n}" for n in d.notes]
        verdict = ("complete" if self.complete else
                   f"INCOMPLETE: {sum(len(d.problems) for d in self.domains)} problem(s)")
        lines.append(f"  -> {ds.name}: {verdict}")
        return "\n".join(lines)


def check_domain(dataset: RealDataset, root: Path, domain: str, read_images: bool = True,
                 strict_counts: bool = False) -> DomainReport:
    """Missing domain, missing or empty class folders, foreign class folders, and (with `read_images`) every image
    that does not decode, by path; a note says how many images have transparent pixels (not a problem). Image counts
    are compared with the published ones in the report's text; a count that differs is shown, not counted as a
    problem (subsets for quick experiments are legitimate), unless `strict_counts` (`--strict`: a paper run wants the
    published data; a count marked as an estimate stays a note)."""
    report = DomainReport(domain)
    try:
        source = find_domain(dataset, root, domain)
    except DataError as error:
        report.missing = True
        report.problems.append(str(error))
        return report
    report.source = source.describe()
    class_map = dataset.class_map
    if source.class_folder is not None:
        images: list[Path] = []
        present, skipped = class_folders(source.class_folder)
        if skipped:
            report.notes.append(skipped_note(skipped))
        foreign = sorted(name for name in present if name not in class_map)
        if foreign and not dataset.skip_unknown_classes:
            report.problems.append(f"folder(s) that are not {dataset.title} classes: {', '.join(foreign)} "
                                   f"in {source.class_folder}")
        elif foreign:
            report.notes.append(f"{len(foreign)} other class folder(s) ignored (only the dataset's "
                                f"{len(class_map)} classes are read)")
        missing = [name for name in class_map.names if name not in present]
        if missing:
            report.problems.append(f"{len(missing)} missing class folder(s): {', '.join(missing)}")
        empty = []
        for name in class_map.names:
            if name not in present:
                continue
            files = image_files(present[name])
            if not files:
                empty.append(name)
            images += files
        if empty:
            report.problems.append(f"{len(empty)} empty class folder(s): {', '.join(empty)}")
    else:
        try:
            records = []
            for list_file in source.list_files:
                records += read_image_list(list_file, source.root, class_map, dataset.list_label_names)
        except DataError as error:
            report.problems.append(str(error))
            return report
        images = [r.path for r in records]
        absent = sorted(set(class_map.names) - {class_map.names[r.label] for r in records})
        if absent:
            report.problems.append(f"{len(absent)} class(es) with no image in the list(s): {', '.join(absent)}")
        not_found = [p for p in images if not p.is_file()]
        if not_found:
            # repr(): a path with a stray carriage return, a byte-order mark or trailing spaces shows them
            report.problems.append(f"{len(not_found)} listed image(s) not found: "
                                   + ", ".join(repr(str(p)) for p in not_found[:20])
                                   + (" ..." if len(not_found) > 20 else ""))
            images = [p for p in images if p.is_file()]
    report.found = len(images)
    expected = dataset.published_counts[domain]
    if strict_counts and report.found != expected:
        note = dataset.count_notes.get(domain, "")
        if note.startswith("estimate"):
            report.notes.append(f"{report.found} images against an estimated {expected}: not checked (--strict)")
        else:
            report.problems.append(f"{report.found} images where the published dataset has {expected} (--strict)"
                                   + (f"; {note}" if note else ""))
    if read_images:
        transparent = 0
        for path in images:
            reason, has_transparency = inspect_image(path)
            transparent += has_transparency
            if reason is not None:
                report.problems.append(f"unreadable image: {path} ({reason})")
        if transparent:
            report.notes.append(transparency_note(transparent, WHITE, "the background of the built-in datasets"))
    return report


def check_dataset(dataset: RealDataset, data_root: Path | None, domains: list[str] | None = None,
                  read_images: bool = True, strict_counts: bool = False) -> DatasetReport:
    try:
        root = locate(dataset, data_root)
    except DataError as error:
        return DatasetReport(dataset, None, absent_message=str(error))
    report = DatasetReport(dataset, root)
    for domain in domains or dataset.domains:
        report.domains.append(check_domain(dataset, root, domain, read_images=read_images,
                                           strict_counts=strict_counts))
    return report
