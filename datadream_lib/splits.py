"""Prompts, class folders and the nested few-shot split (docs/hyperparameters.md §1, §4).

The datasets themselves (files, splits, class names, prompt prefixes) are in the `datasets` package.
`start_run` loads one, checks its images, draws the K-shot set once per run, seeded per class and
nested (the 1-shot image is the first of the 2-shot images, and so on), and writes it to
`split.json`; every later stage and method reads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from datadream_lib import locks
from datadream_lib.datasets import DATASETS, Item, Splits, by_class, check_unique_classnames
from datadream_lib.errors import DataDreamError
from datadream_lib.files import atomic_write_text
from datadream_lib.runs import check_compatible, open_run, run_dir, stage_markers
from datadream_lib.stages import part_of

SPLIT_FILE = "split.json"


# --- prompts and class folders -------------------------------------------------------------------

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
    class_names: str  # 'authors' or 'coop': which names the prompts and the head use
    skipped_corrupt: list[str] = dataclasses.field(default_factory=list)

    def shots(self, k: int) -> list[Item]:
        """The K-shot training set: the first K of every class's draw (nested by construction)."""
        return [(path, label) for label, paths in enumerate(self.shot_order) for path in paths[:k]]

    def prompts(self) -> list[str]:
        return [diffusion_prompt(name, self.prompt_prefix) for name in self.classnames]

    def classifier_prompts(self) -> list[str]:
        """The classifier head's prompts: the authors' `TEMPLATES_SMALL[0]`, which is the DataDream
        prompt itself (no full stop, unlike CLIP's usual zero-shot template)."""
        return self.prompts()

    def class_dirs(self) -> list[str]:
        return [class_dirname(i, name) for i, name in enumerate(self.classnames)]

    def _relative(self) -> tuple[str, dict]:
        """(image root, the split with image paths relative to it)."""
        raw = dataclasses.asdict(self)
        root = os.path.commonpath([p for paths in self.shot_order for p in paths] +
                                  [p for p, _ in self.train + self.val + self.test])
        rel = lambda p: os.path.relpath(p, root)  # noqa: E731
        raw["shot_order"] = [[rel(p) for p in paths] for paths in self.shot_order]
        for key in ("val", "test", "train"):
            raw[key] = [[rel(p), label] for p, label in raw[key]]
        return root, raw

    def save(self, path: Path) -> None:
        """Compact JSON, image paths relative to their common folder (ImageNet's train list is 1.3 M rows)."""
        root, raw = self._relative()
        atomic_write_text(path, json.dumps({"image_root": root, **raw}, separators=(",", ":")))

    def fingerprint(self) -> str:
        """What the split is (classes, prompts, shots, val, test, train, relative to their root), as a
        sha256: each stage marker records the one its outputs were made with."""
        _, raw = self._relative()
        raw.pop("skipped_corrupt", None)
        return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @classmethod
    def load(cls, path: Path) -> "FewShotSplit":
        raw = json.loads(Path(path).read_text())
        root = raw.pop("image_root")
        raw["shot_order"] = [[os.path.join(root, p) for p in paths] for paths in raw["shot_order"]]
        for key in ("val", "test", "train"):
            raw[key] = [(os.path.join(root, p), label) for p, label in raw[key]]
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
    if len(splits.classnames) < 2:
        found = f"one class ({splits.classnames[0]!r})" if splits.classnames else "no classes"
        raise DataDreamError(f"dataset {p.dataset!r} has {found}: a classifier needs at least two classes (every "
                             f"accuracy of one class is 100 %). Add a folder per class under train/.")
    classnames = spec.classnames(splits.classnames, p.class_names)
    check_unique_classnames(classnames)
    _check_counts(p, splits)  # cheap checks first, before any image is decoded
    bad = _check_images(p, splits)
    if bad:
        _check_counts(p, splits)
    for name, items in (("val", splits.val), ("test", splits.test)):
        if not items:
            raise DataDreamError(f"dataset {p.dataset!r} has an empty {name} split; add a {name}/ folder or raise {name}_fraction.")
    return FewShotSplit(dataset=p.dataset, classnames=classnames,
                        prompt_prefix=spec.prompt_prefix, shot_order=draw_shots(splits, p.max_shots, p.seed),
                        val=splits.val, test=splits.test, train=splits.train, seed=p.seed, source=splits.source,
                        class_names=p.class_names, skipped_corrupt=bad)


def start_run(p):
    """Open a run for its first stage: a folder holding other parameters is refused first, then the
    dataset is checked and the split drawn, and only then is the run folder created. Returns (run, split)."""
    folder = run_dir(p)
    check_compatible(p, folder)
    if folder.is_dir():  # a run another process is writing stops here, before the dataset is read
        locks.lock_run(folder, part_of(p))
    split = read_split(folder / SPLIT_FILE)
    fresh = split is None
    if fresh:  # not drawn yet, deleted or damaged: drawn again, then checked against the stages' records
        split = build_split(p)
    check_split(folder, split)
    run = open_run(p, folder)
    run.split_fingerprint = split.fingerprint()
    if fresh:
        split.save(run.path(SPLIT_FILE))
    return run, split


def read_split(path: Path) -> Optional[FewShotSplit]:
    """The run's split, or None where the file is missing or damaged (it is then drawn again)."""
    if not Path(path).exists():
        return None
    try:
        return FewShotSplit.load(path)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        print(f"[run] {path} is damaged ({type(exc).__name__}); drawing the split again from the parameters")
        return None


def check_split(folder: Path, split: FewShotSplit) -> None:
    """Every finished stage was made with this split (its marker records the split's fingerprint):
    a split drawn again after split.json was lost must be the one the outputs were made with."""
    fingerprint = split.fingerprint()
    for path, marker in stage_markers(folder):
        if marker.get("split") not in (None, fingerprint):
            raise DataDreamError(
                f"run folder {folder}: {path.relative_to(folder)} was made with another split than the one drawn now "
                f"(split.json is missing or damaged, and drawing it again from the parameters gave other shots: the "
                f"dataset changed?). Restore {SPLIT_FILE} or the dataset, or start a new run with another run_name. "
                f"Nothing in the folder was changed.")
