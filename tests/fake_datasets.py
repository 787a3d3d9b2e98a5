"""Small fake copies of the ten benchmarks, in the on-disk layout torchvision (or the manual
download) leaves, with the metadata files the loaders read. Images are tiny JPEGs.

Each maker writes under `root` and returns the class names the loader must give, in label order.
Per class: 4 train, 2 val, 2 test images (train + val for datasets with no val split; all 8 in one
pool for datasets with no split at all).
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

N_TRAIN, N_VAL, N_TEST = 4, 2, 2
N_ALL = N_TRAIN + N_VAL + N_TEST


def image(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return str(path)


def _write(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _split_of(i: int) -> str:
    return "train" if i < N_TRAIN else "val" if i < N_TRAIN + N_VAL else "test"


def caltech101(root: Path) -> list[str]:
    folder = root / "caltech101" / "101_ObjectCategories"
    for c, name in enumerate(["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "accordion", "yin_yang"]):
        for i in range(N_ALL):
            image(folder / name / f"image_{i + 1:04d}.jpg", 100 * c + i)
    return ["face", "leopard", "accordion", "yin yang"]


def dtd(root: Path) -> list[str]:
    base = root / "dtd" / "dtd"
    lists = {"train": [], "val": [], "test": []}
    for c, name in enumerate(["banded", "bubbly", "zigzagged"]):
        for i in range(N_ALL):
            image(base / "images" / name / f"{name}_{i:04d}.jpg", 100 * c + i)
            lists[_split_of(i)].append(f"{name}/{name}_{i:04d}.jpg")
    for split, lines in lists.items():
        _write(base / "labels" / f"{split}1.txt", lines)
    return ["banded", "bubbly", "zigzagged"]


def eurosat(root: Path) -> list[str]:
    for c, name in enumerate(["AnnualCrop", "Forest", "SeaLake"]):
        for i in range(N_ALL):
            image(root / "eurosat" / "2750" / name / f"{name}_{i + 1}.jpg", 100 * c + i)
    return ["Annual Crop Land", "Forest", "Sea or Lake"]


def fgvc_aircraft(root: Path) -> list[str]:
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "F-16A/B", "Falcon 900"]
    lists = {"train": [], "val": [], "test": []}
    for c, name in enumerate(variants):
        for i in range(N_ALL):
            image_id = f"{1000000 + 100 * c + i}"
            image(data / "images" / f"{image_id}.jpg", 100 * c + i)
            lists[_split_of(i)].append(f"{image_id} {name}")
    _write(data / "variants.txt", variants)
    for split, lines in lists.items():
        _write(data / f"images_variant_{split}.txt", lines)
    return variants


def oxford_pets(root: Path) -> list[str]:
    base = root / "oxford-iiit-pet"
    lists = {"trainval": ["#Image CLASS-ID SPECIES BREED ID"], "test": []}
    for c, breed in enumerate(["Abyssinian", "american_bulldog", "great_pyrenees"]):
        for i in range(N_ALL):
            image(base / "images" / f"{breed}_{i + 1}.jpg", 100 * c + i)
            lists["test" if _split_of(i) == "test" else "trainval"].append(f"{breed}_{i + 1} {c + 1} 1 {i + 1}")
    for split, lines in lists.items():
        _write(base / "annotations" / f"{split}.txt", lines)
    return ["abyssinian", "american bulldog", "great pyrenees"]


def stanford_cars(root: Path) -> list[str]:
    from scipy.io import savemat

    base = root / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Ram C/V Cargo Van Minivan 2012", "smart fortwo Convertible 2012"]
    annos = {"cars_train": [], "cars_test": []}
    for c in range(len(names)):
        for i in range(N_ALL):
            folder = "cars_test" if _split_of(i) == "test" else "cars_train"
            fname = f"{len(annos[folder]) + 1:05d}.jpg"
            image(base / folder / fname, 100 * c + i)
            annos[folder].append((fname, c + 1))
    record = lambda rows: np.array(rows, dtype=[("fname", object), ("class", object)])  # noqa: E731
    (base / "devkit").mkdir(parents=True, exist_ok=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(names, dtype=object)})
    savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": record(annos["cars_train"])})
    savemat(base / "cars_test_annos_withlabels.mat", {"annotations": record(annos["cars_test"])})
    return ["2000 AM General Hummer SUV", "2012 Ram C/V Cargo Van Minivan", "2012 smart fortwo Convertible"]


def sun397(root: Path, partitions: bool = False) -> list[str]:
    base = root / "SUN397"
    paths = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]
    lists = {"Training_01.txt": [], "Testing_01.txt": []}
    for c, path in enumerate(paths):
        for i in range(N_ALL):
            name = f"sun_{'abcdefgh'[c]}{i:04d}.jpg"
            image(base / path[1:] / name, 100 * c + i)
            lists["Testing_01.txt" if _split_of(i) == "test" else "Training_01.txt"].append(f"{path}/{name}")
    _write(base / "ClassName.txt", paths)
    if partitions:
        for name, lines in lists.items():
            _write(base / "Partitions" / name, lines)
    return ["abbey", "outdoor apartment building", "shop bakery"]


def food101(root: Path) -> list[str]:
    base = root / "food-101"
    names = ["apple_pie", "baby_back_ribs", "waffles"]
    lists = {"train": {}, "test": {}}
    for c, name in enumerate(names):
        for i in range(N_ALL):
            image(base / "images" / name / f"{1000 + i}.jpg", 100 * c + i)
            lists["test" if _split_of(i) == "test" else "train"].setdefault(name, []).append(f"{name}/{1000 + i}")
    _write(base / "meta" / "classes.txt", names)
    for split, content in lists.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(content))
    return ["apple pie", "baby back ribs", "waffles"]


def flowers102(root: Path) -> list[str]:
    """All 102 classes (the class list is fixed), two images of each per split."""
    from scipy.io import savemat

    from datadream_lib.datasets import FLOWERS102_CLASSNAMES

    base = root / "flowers-102"
    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    for c in range(102):
        for key in ("trnid", "trnid", "valid", "tstid"):
            labels.append(c + 1)
            ids[key].append(len(labels))
            image(base / "jpg" / f"image_{len(labels):05d}.jpg", len(labels))
    savemat(base / "imagelabels.mat", {"labels": np.array(labels)})
    savemat(base / "setid.mat", {key: np.array(value) for key, value in ids.items()})
    return list(FLOWERS102_CLASSNAMES)


def imagenet(root: Path, coop_layout: bool = False, classnames: bool = True) -> list[str]:
    base = root / "imagenet"
    images = base / "images" if coop_layout else base
    classes = {"n01440764": "tench", "n01443537": "goldfish", "n15075141": "toilet tissue"}
    for c, wnid in enumerate(classes):
        for i in range(N_ALL):
            split = "val" if _split_of(i) == "test" else "train"
            image(images / split / wnid / f"{wnid}_{i}.JPEG", 100 * c + i)
    if classnames:
        _write(base / "classnames.txt", [f"{wnid} {name}" for wnid, name in classes.items()])
    return list(classes.values())


MAKERS = {"imagenet": imagenet, "caltech101": caltech101, "dtd": dtd, "eurosat": eurosat,
          "fgvc_aircraft": fgvc_aircraft, "oxford_pets": oxford_pets, "stanford_cars": stanford_cars,
          "sun397": sun397, "food101": food101, "flowers102": flowers102}


def write_coop_split(path: Path, image_dir: Path, items_by_split: dict, classnames: list[str]) -> None:
    """A CoOp split file over given items; names written CoOp-style (underscores for spaces)."""
    raw = {split: [[str(Path(p).relative_to(image_dir)), label, classnames[label].replace(" ", "_")] for p, label in items]
           for split, items in items_by_split.items()}
    path.write_text(json.dumps(raw))
