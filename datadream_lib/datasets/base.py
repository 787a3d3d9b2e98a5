"""What every dataset is: its splits (`Splits`) and its entry in the registry (`DatasetSpec`), the
readers they share (a class-per-folder tree, a CoOp split file, a split carved out of train), and a
class-per-folder tree a user brings (`imagefolder`)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from datadream_lib.errors import DataDreamError
from datadream_lib.runs import project_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def clean_classname(name: str) -> str:
    """A class name as it goes into a prompt: underscores become spaces, whitespace collapsed."""
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip()


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
    table_name: str = ""  # its column in Table 1 (the ten benchmarks)
    num_classes: Optional[int] = None  # as the paper counts them
    authors_name: Optional[Callable[[str], str]] = None  # a CoOp class name -> the authors' name, where they differ

    def classnames(self, coop_names: list[str], choice: str) -> list[str]:
        """The class names a run uses: 'coop' as loaded, or 'authors' (the names behind Table 1)."""
        if choice == "coop" or self.authors_name is None:
            return list(coop_names)
        return [self.authors_name(name) for name in coop_names]


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def class_folders(root: Path) -> list[Path]:
    """The class folders under root; hidden ones (a name starting with '.') are skipped, and said so."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    for hidden in (f for f in folders if f.name.startswith(".")):
        print(f"[data] skipping hidden folder {hidden} (not a class; rename it without the leading '.' to use it)")
    return [f for f in folders if not f.name.startswith(".")]


def check_unique_classnames(names: list[str], raw: Optional[list[str]] = None) -> None:
    """Two classes must not share a name after cleaning: they would share a prompt and a head."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            a, b = (raw[seen[name]], raw[i]) if raw else (name, name)
            raise DataDreamError(f"classes {a!r} and {b!r} both become {name!r} in prompts (underscores are spaces); "
                                 f"rename one of them.")
        seen[name] = i


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")]


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


def with_carve_outs(classnames: list[str], train: list[Item], p, source: str,
                    val: Optional[list[Item]] = None, test: Optional[list[Item]] = None) -> Splits:
    """Splits from what a dataset has; a missing test, then a missing val, is carved out of train."""
    parts = [source]
    if test is None:
        train, test = carve_out(train, p.test_fraction, p.split_seed, salt=2)
        parts.append(f"test: seeded carve-out of {p.test_fraction:.0%} of train (split_seed {p.split_seed})")
    if val is None:
        train, val = carve_out(train, p.val_fraction, p.split_seed, salt=1)
        parts.append(f"val: seeded carve-out of {p.val_fraction:.0%} of train (split_seed {p.split_seed})")
    return Splits(classnames, train, val, test, "; ".join(parts))


def read_coop_split(path: Path, image_dir: Path) -> Splits:
    """A CoOp split file: {"train"|"val"|"test": [[path relative to image_dir, label, classname], ...]}."""
    raw = json.loads(Path(path).read_text())
    names: dict[int, str] = {}
    lists = {}
    for split in ("train", "val", "test"):
        if split not in raw:
            raise DataDreamError(f"{path} has no '{split}' list; a CoOp split file holds train, val and test "
                                 f"lists of [path, label, classname].")
        lists[split] = [(str(image_dir / rel), int(label)) for rel, label, _ in raw[split]]
        for _, label, name in raw[split]:
            names.setdefault(int(label), clean_classname(name))
    if sorted(names) != list(range(len(names))):
        raise DataDreamError(f"{path}: labels are not 0..{len(names) - 1}; is it a CoOp split file?")
    return Splits([names[i] for i in range(len(names))], lists["train"], lists["val"], lists["test"],
                  f"CoOp split file {path} (images under {image_dir})")


# --- a folder a user brings ----------------------------------------------------------------------


def read_class_tree(root: Path, classnames: Optional[list[str]] = None) -> tuple[list[str], list[Item]]:
    folders = class_folders(root)
    if classnames is None:
        classnames = [f.name for f in folders]
    index = {name: i for i, name in enumerate(classnames)}
    items = []
    for folder in folders:
        if folder.name not in index:
            raise DataDreamError(f"class folder {folder} is not a train class; every split needs the same "
                                 f"class folders as train ({classnames}).")
        items += [(str(p), index[folder.name]) for p in list_images(folder)]
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
    if not class_folders(train_root):
        raise DataDreamError(f"{str(train_root)!r} holds no class folders; expected {train_root}/<class>/*.jpg.")
    raw_names, train = read_class_tree(train_root)
    check_unique_classnames([clean_classname(n) for n in raw_names], raw_names)
    found = {name: read_class_tree(root / name, raw_names)[1] for name in ("val", "test")
             if train_root != root and (root / name).is_dir()}
    return with_carve_outs([clean_classname(n) for n in raw_names], train, p,
                           f"ImageFolder {root} ({', '.join(['train', *found])} folders)", **found)
