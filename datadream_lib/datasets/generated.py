"""Datasets this project draws itself, deterministically from seeds, with fixed splits: the toy
dataset of the demo and the tests (`toy`), and the toy world's few-shot target (`toyworld`, drawn
by datadream_lib/toyworld/world.py). One writer makes both (`write_generated`), one reader reads both."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datadream_lib.toyworld import world as toyworld
from datadream_lib.datasets.base import Splits, clean_classname, read_class_tree
from datadream_lib.files import atomic_write_text
from datadream_lib.runs import project_path


def write_generated(folder: Path, counts: dict[str, int], classes: list[str], draw: Callable[[int, np.random.Generator], Image.Image],
                    salt: tuple[int, ...], note: str) -> Path:
    """Write a dataset once under `folder`: `counts[split]` images of each class (a subfolder named
    as in `classes`), image i of a class the i-th that `draw(label, rng)` makes from the class's
    generator, seeded by (split index, label, *salt); `COMPLETE` (holding `note`) marks it done."""
    done = folder / "COMPLETE"
    if done.exists():
        return folder
    for split_index, (split, count) in enumerate(counts.items()):
        for label, name in enumerate(classes):
            class_folder = folder / split / name
            class_folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([split_index, label, *salt])
            for i in range(count):
                target = class_folder / f"{i:03d}.png"
                tmp = target.with_suffix(".tmp.png")
                draw(label, rng).save(tmp)
                tmp.replace(target)
    atomic_write_text(done, note)
    return folder


def read_generated(folder: Path, what: str) -> Splits:
    """A written dataset's fixed splits (train / val / test class trees)."""
    raw_names, train = read_class_tree(folder / "train")
    _, val = read_class_tree(folder / "val", raw_names)
    _, test = read_class_tree(folder / "test", raw_names)
    return Splits([clean_classname(n) for n in raw_names], train, val, test, f"{what}, fixed splits ({folder})")


# --- the toy dataset: four classes that differ visibly in shape, colour and texture ---------------

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
    return write_generated(Path(root) / TOY_VERSION, TOY_COUNTS, [name.replace(" ", "_") for name in TOY_CLASSES],
                           _toy_image, (), "toy dataset written by datadream_lib.datasets.make_toy_dataset\n")


def load_toy(p) -> Splits:
    return read_generated(make_toy_dataset(project_path(p.data_root)), "toy dataset")


# --- the toy world's target ---------------------------------------------------------------------

def make_target_dataset(root: Path) -> Path:
    """Write the toy world's target dataset (deterministic) under root/TARGET_VERSION once; returns its folder."""
    return write_generated(Path(root) / toyworld.TARGET_VERSION, toyworld.TARGET_COUNTS, list(toyworld.TARGET_CLASSES),
                           lambda label, rng: toyworld.target_image(toyworld.TARGET_CLASSES[label], rng), (11,),
                           "toyworld target written by datadream_lib.toyworld.make_target_dataset\n")


def load_toyworld(p) -> Splits:
    """The toy world's few-shot target (datadream_lib/toyworld/world.py), fixed splits."""
    return read_generated(make_target_dataset(project_path(p.data_root)), "toy world target")
