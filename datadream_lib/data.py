"""Datasets, class names, prompts and the nested few-shot split (hyperparameters.md sections 1, 4).

A dataset is a `DatasetSpec` in `DATASETS`: how to list its images and splits, its class names
(cleaned for prompts, one list per dataset), and its prompt prefix. `start_run` draws the
K-shot set once per run, seeded per class and nested (the 1-shot image is the first of the
2-shot images, and so on), and writes it to `split.json`; every later stage and method reads it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datadream_lib.errors import DataDreamError
from datadream_lib.runs import atomic_write_text, check_compatible, open_run, project_path, run_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLIT_FILE = "split.json"


# --- class names and prompts -------------------------------------------------------------------

def clean_classname(name: str) -> str:
    """A class name as it goes into a prompt: underscores become spaces, whitespace collapsed."""
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip()


def class_dirname(index: int, name: str) -> str:
    """A folder name for a class: its index first (unique, sorted), then a filesystem-safe name.

    A "/" in a class name (e.g. aircraft variants) never makes a sub-folder.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "class"
    return f"{index:04d}_{safe}"


def diffusion_prompt(classname: str, prefix: str = "") -> str:
    """The DataDream prompt, for adaptation and synthesis: "a {prefix} photo of a {classname}"."""
    prefix = f"{prefix} " if prefix else ""
    return f"a {prefix}photo of a {classname}"


def classifier_prompt(classname: str, prefix: str = "") -> str:
    """The CLIP zero-shot template (with the dataset prefix), used by the classifier head."""
    return diffusion_prompt(classname, prefix) + "."


# --- splits ------------------------------------------------------------------------------------

Item = tuple[str, int]  # (image path, label)


@dataclasses.dataclass
class Splits:
    classnames: list[str]
    train: list[Item]
    val: list[Item]
    test: list[Item]
    source: str  # where the splits come from, recorded in the run


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    load: Callable  # (params) -> Splits
    prompt_prefix: str = ""
    description: str = ""


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def by_class(items: list[Item]) -> dict[int, list[str]]:
    """Sorted image paths per label, in one pass."""
    groups: dict[int, list[str]] = {}
    for path, label in items:
        groups.setdefault(label, []).append(path)
    return {label: sorted(paths) for label, paths in sorted(groups.items())}


def carve_out(items: list[Item], fraction: float, seed: int, salt: int) -> tuple[list[Item], list[Item]]:
    """Split off `fraction` of every class (at least one image), seeded; returns (kept, carved)."""
    kept, carved = [], []
    for label, members in by_class(items).items():
        rng = np.random.default_rng([seed, salt, label])
        order = rng.permutation(len(members))
        n_out = max(1, int(round(fraction * len(members)))) if len(members) > 1 else 0
        out = {members[i] for i in order[:n_out]}
        kept += [(p, label) for p in members if p not in out]
        carved += [(p, label) for p in members if p in out]
    return kept, carved


def _read_class_tree(root: Path, classnames: Optional[list[str]] = None) -> tuple[list[str], list[Item]]:
    folders = _class_folders(root)
    if classnames is None:
        classnames = [f.name for f in folders]
    index = {name: i for i, name in enumerate(classnames)}
    items = []
    for folder in folders:
        if folder.name not in index:
            raise DataDreamError(f"class folder {folder} is not a train class; every split needs the same "
                                 f"class folders as train ({classnames}).")
        items += [(str(p), index[folder.name]) for p in _list_images(folder)]
    return classnames, items


def load_imagefolder(p) -> Splits:
    """Any ImageFolder: `root/<class>/*.jpg`, or `root/{train,val,test}/<class>/*.jpg`.

    A missing val or test folder is carved out of train, seeded (val_fraction, test_fraction).
    """
    root = project_path(p.data_root)
    if not root.is_dir():
        raise DataDreamError(f"dataset root {str(root)!r} does not exist. Set data_root to a folder laid out as "
                             f"root/<class>/*.jpg (or root/train/<class>/..., with optional val/ and test/).")
    train_root = root / "train" if (root / "train").is_dir() else root
    folders = _class_folders(train_root)
    if not folders:
        raise DataDreamError(f"{str(train_root)!r} holds no class folders; expected {train_root}/<class>/*.jpg.")
    raw_names, train = _read_class_tree(train_root)
    source = [f"train: {train_root}"]
    splits = {}
    for name, fraction, salt in (("test", p.test_fraction, 2), ("val", p.val_fraction, 1)):
        folder = root / name
        if train_root != root and folder.is_dir():
            _, splits[name] = _read_class_tree(folder, raw_names)
            source.append(f"{name}: {folder}")
        else:
            train, splits[name] = carve_out(train, fraction, p.seed, salt)
            source.append(f"{name}: seeded carve-out of {fraction:.0%} of train (seed {p.seed})")
    return Splits([clean_classname(n) for n in raw_names], train, splits["val"], splits["test"], "; ".join(source))


# The toy dataset: four classes that differ visibly in shape, colour and texture.
TOY_CLASSES = ("red circle", "green square", "blue triangle", "yellow stripes")
TOY_SIZE = 64
TOY_COUNTS = {"train": 20, "val": 6, "test": 10}
TOY_VERSION = "toy-v1"


def _toy_image(label: int, rng: np.random.Generator) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(20, 90, size=3))
    img = Image.new("RGB", (TOY_SIZE, TOY_SIZE), background)
    draw = ImageDraw.Draw(img)
    jitter = lambda base: tuple(int(np.clip(c + rng.integers(-30, 31), 0, 255)) for c in base)  # noqa: E731
    size = int(rng.integers(20, 40))
    x0, y0 = (int(v) for v in rng.integers(2, TOY_SIZE - size - 2, size=2))
    box = (x0, y0, x0 + size, y0 + size)
    if label == 0:
        draw.ellipse(box, fill=jitter((220, 40, 40)))
    elif label == 1:
        draw.rectangle(box, fill=jitter((40, 200, 60)))
    elif label == 2:
        draw.polygon([(x0 + size // 2, y0), (x0, y0 + size), (x0 + size, y0 + size)], fill=jitter((50, 80, 230)))
    else:
        colour, width = jitter((230, 210, 40)), int(rng.integers(3, 6))
        for offset in range(-TOY_SIZE, TOY_SIZE, 2 * width):
            draw.line([(offset, 0), (offset + TOY_SIZE, TOY_SIZE)], fill=colour, width=width)
    noise = rng.normal(0, 8, size=(TOY_SIZE, TOY_SIZE, 3))
    arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, 0.8))))


def make_toy_dataset(root: Path) -> Path:
    """Write the toy dataset (deterministic, no download) under root/toy-v1 once; returns its folder."""
    folder = Path(root) / TOY_VERSION
    done = folder / "COMPLETE"
    if done.exists():
        return folder
    for split_index, (split, count) in enumerate(TOY_COUNTS.items()):
        for label, name in enumerate(TOY_CLASSES):
            class_folder = folder / split / name.replace(" ", "_")
            class_folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([split_index, label])
            for i in range(count):
                target = class_folder / f"{i:03d}.png"
                tmp = target.with_suffix(".tmp.png")
                _toy_image(label, rng).save(tmp)
                tmp.replace(target)
    done.write_text("toy dataset written by datadream_lib.data.make_toy_dataset\n")
    return folder


def load_toy(p) -> Splits:
    folder = make_toy_dataset(project_path(p.data_root))
    raw_names, train = _read_class_tree(folder / "train")
    _, val = _read_class_tree(folder / "val", raw_names)
    _, test = _read_class_tree(folder / "test", raw_names)
    return Splits([clean_classname(n) for n in raw_names], train, val, test, f"toy dataset, fixed splits ({folder})")


# EuroSAT class names as CoOp writes them (the folder names are CamelCase codes).
EUROSAT_CLASSNAMES = {
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
    "SeaLake": "Sea or Lake",
}


def load_eurosat(p) -> Splits:
    """EuroSAT through torchvision (no official splits: seeded val and test carve-outs)."""
    import torchvision

    root = project_path(p.data_root)
    try:
        ds = torchvision.datasets.EuroSAT(str(root), download=p.download)
    except RuntimeError as exc:
        raise DataDreamError(f"EuroSAT is not under {str(root)!r} ({exc}). Set download: true to fetch it with "
                             f"torchvision, or point data_root at the folder that holds eurosat/2750/.") from None
    items = [(path, label) for path, label in ds.samples]
    train, test = carve_out(items, p.test_fraction, p.seed, salt=2)
    train, val = carve_out(train, p.val_fraction, p.seed, salt=1)
    names = [EUROSAT_CLASSNAMES.get(c, clean_classname(c)) for c in ds.classes]
    return Splits(names, train, val, test, f"torchvision EuroSAT at {root}; seeded test ({p.test_fraction:.0%}) "
                                           f"and val ({p.val_fraction:.0%}) carve-outs (seed {p.seed})")


DATASETS: dict[str, DatasetSpec] = {
    "toy": DatasetSpec("toy", load_toy, "", "4 synthetic classes (shape, colour, texture), generated offline"),
    "imagefolder": DatasetSpec("imagefolder", load_imagefolder, "", "any root/<class>/*.jpg tree a user brings"),
    "eurosat": DatasetSpec("eurosat", load_eurosat, "satellite", "EuroSAT RGB, 10 classes, via torchvision"),
}


# --- checking images ---------------------------------------------------------------------------

def _unreadable(path: str) -> bool:
    try:
        with Image.open(path) as img:
            img.load()
        return False
    except Exception:  # any failure to identify or decode makes the file unusable
        return True


def find_corrupt(paths: list[str]) -> list[str]:
    """Files PIL cannot fully decode (decoded in parallel threads; PIL releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        flags = list(pool.map(_unreadable, paths, chunksize=16))
    return [path for path, bad in zip(paths, flags, strict=True) if bad]


def load_rgb(path: str) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


# --- the few-shot split ------------------------------------------------------------------------

@dataclasses.dataclass
class FewShotSplit:
    """What every stage reads: classes, prompts, the ordered shots, val and test."""

    dataset: str
    classnames: list[str]
    prompt_prefix: str
    shot_order: list[list[str]]  # per class, the sampled train images in draw order
    val: list[Item]
    test: list[Item]
    train: list[Item]  # the whole train split (FID "train" real set); never used for training
    seed: int
    source: str
    skipped_corrupt: list[str] = dataclasses.field(default_factory=list)

    def shots(self, k: int) -> list[Item]:
        """The K-shot training set: the first K of every class's draw (nested by construction)."""
        return [(path, label) for label, paths in enumerate(self.shot_order) for path in paths[:k]]

    def prompts(self) -> list[str]:
        return [diffusion_prompt(name, self.prompt_prefix) for name in self.classnames]

    def classifier_prompts(self) -> list[str]:
        return [classifier_prompt(name, self.prompt_prefix) for name in self.classnames]

    def class_dirs(self) -> list[str]:
        return [class_dirname(i, name) for i, name in enumerate(self.classnames)]

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> "FewShotSplit":
        raw = json.loads(Path(path).read_text())
        for key in ("val", "test", "train"):
            raw[key] = [tuple(item) for item in raw[key]]
        return cls(**raw)


def draw_shots(splits: Splits, n_shots: int, seed: int) -> list[list[str]]:
    """Per class, a seeded permutation of its train images, cut to n_shots: nested for every K."""
    order, groups = [], by_class(splits.train)
    for label in range(len(splits.classnames)):
        members = groups.get(label, [])
        rng = np.random.default_rng([seed, label])
        order.append([members[i] for i in rng.permutation(len(members))[:n_shots]])
    return order


def _check_images(p, splits: Splits) -> list[str]:
    """Decode every image the run will read (the shots, val, test, and train when FID compares with
    it). Unreadable ones stop the run, listed, or with skip_corrupt_images are dropped and logged
    (and the shots redrawn without them). Returns the skipped files."""
    checked, bad = set(), []
    while True:
        shots = {path for paths in draw_shots(splits, p.max_shots, p.seed) for path in paths}
        needed = shots | {path for path, _ in splits.val + splits.test}
        if p.fid_real_set == "train":
            needed |= {path for path, _ in splits.train}
        found = find_corrupt(sorted(needed - checked))
        checked |= needed
        if not found:
            return bad
        if not p.skip_corrupt_images:
            listing = "\n  ".join(found[:20]) + (f"\n  ... and {len(found) - 20} more" if len(found) > 20 else "")
            raise DataDreamError(f"{len(found)} file(s) in dataset {p.dataset!r} are not readable images:\n  {listing}\n"
                                 f"Remove or replace them, or set skip_corrupt_images: true to leave them out (each is logged).")
        for path in found:
            print(f"[data] skipping unreadable image: {path}")
        bad += found
        drop = set(found)
        splits.train, splits.val, splits.test = ([it for it in items if it[0] not in drop]
                                                 for items in (splits.train, splits.val, splits.test))


def _check_counts(p, splits: Splits) -> None:
    counts = np.bincount([label for _, label in splits.train], minlength=len(splits.classnames))
    short = [(splits.classnames[i], int(c)) for i, c in enumerate(counts) if c < p.shots]
    if short:
        listing = ", ".join(f"'{name}' has {count}" for name, count in short)
        raise DataDreamError(f"{len(short)} class(es) have fewer train images than shots={p.shots}: {listing}. "
                             f"Lower shots, or add images to those classes.")
    too_big = [k for k in p.ablation_shots if k > counts.min()]
    if too_big:
        raise DataDreamError(f"ablation_shots {too_big} exceed the smallest class ('{splits.classnames[int(counts.argmin())]}', "
                             f"{int(counts.min())} train images); lower the ablation grid.")


def build_split(p) -> FewShotSplit:
    """Load the dataset, check it, and draw the shots. Stops with a message on bad data."""
    spec = DATASETS[p.dataset]
    splits = spec.load(p)
    if not splits.classnames:
        raise DataDreamError(f"dataset {p.dataset!r} has no classes.")
    _check_counts(p, splits)  # cheap checks first, before any image is decoded
    bad = _check_images(p, splits)
    if bad:
        _check_counts(p, splits)
    for name, items in (("val", splits.val), ("test", splits.test)):
        if not items:
            raise DataDreamError(f"dataset {p.dataset!r} has an empty {name} split; add a {name}/ folder or raise {name}_fraction.")
    return FewShotSplit(dataset=p.dataset, classnames=splits.classnames, prompt_prefix=spec.prompt_prefix,
                        shot_order=draw_shots(splits, p.max_shots, p.seed), val=splits.val, test=splits.test,
                        train=splits.train, seed=p.seed, source=splits.source, skipped_corrupt=bad)


def start_run(p):
    """Open a run for its first stage: a folder holding other parameters is refused first, then the
    dataset is checked and the split drawn, and only then is the run folder created. Returns (run, split)."""
    folder = run_dir(p)
    check_compatible(p, folder)
    split = FewShotSplit.load(folder / SPLIT_FILE) if (folder / SPLIT_FILE).exists() else build_split(p)
    run = open_run(p, folder)
    if not run.path(SPLIT_FILE).exists():
        split.save(run.path(SPLIT_FILE))
    return run, split
