"""The datasets: where each one lives on disk, its splits, its class names and its prompt prefix
(docs/hyperparameters.md §1, §4).

Every dataset is a `DatasetSpec` in `DATASETS`. The ten benchmarks of Table 1 (`BENCHMARKS`, in
the paper's column order) follow one rule, written once in `OnDisk`:

  1. the files sit under `data_root` in torchvision's layout; `download: true` fetches them where
     torchvision can, and ImageNet and Stanford Cars are placed by hand (the error says where);
  2. if a CoOp split file (`split_zhou_<Name>.json`: train / val / test lists of
     `[path, label, classname]`) lies in the dataset's folder or in `data_root`, it gives the splits;
  3. otherwise the official splits are read, and a split the dataset lacks (val everywhere but DTD,
     FGVC Aircraft and Flowers102; test for Caltech101, EuroSAT and SUN397 without its partition
     files) is carved out of train, seeded by `split_seed` so every run seed is tested on the same images.

Where the splits came from is recorded in the run's `split.json`. Every loader returns the CoOp
class names, cleaned for prompts (no underscores); `class_names: authors` (the default) then gives
the names the authors' code prompts and classifies with (`generate/util.py`), where they differ:
EuroSAT's folder codes (`AnnualCrop`, not `Annual Crop Land`), Stanford Cars with the year last,
Flowers102's `lotus lotus`. `data.class_dirname` makes any name safe as a folder name.
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


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(root: Path) -> list[Path]:
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


def _lines(path: Path) -> list[str]:
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


# --- a folder a user brings, and the toy dataset ------------------------------------------------

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
    if not _class_folders(train_root):
        raise DataDreamError(f"{str(train_root)!r} holds no class folders; expected {train_root}/<class>/*.jpg.")
    raw_names, train = _read_class_tree(train_root)
    check_unique_classnames([clean_classname(n) for n in raw_names], raw_names)
    found = {name: _read_class_tree(root / name, raw_names)[1] for name in ("val", "test")
             if train_root != root and (root / name).is_dir()}
    return with_carve_outs([clean_classname(n) for n in raw_names], train, p,
                           f"ImageFolder {root} ({', '.join(['train', *found])} folders)", **found)


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
    done.write_text("toy dataset written by datadream_lib.datasets.make_toy_dataset\n")
    return folder


def load_toy(p) -> Splits:
    folder = make_toy_dataset(project_path(p.data_root))
    raw_names, train = _read_class_tree(folder / "train")
    _, val = _read_class_tree(folder / "val", raw_names)
    _, test = _read_class_tree(folder / "test", raw_names)
    return Splits([clean_classname(n) for n in raw_names], train, val, test, f"toy dataset, fixed splits ({folder})")


def load_toyworld(p) -> Splits:
    """The toy world's few-shot target (datadream_lib/toyworld.py), fixed splits."""
    from datadream_lib import toyworld

    folder = toyworld.make_target_dataset(project_path(p.data_root))
    raw_names, train = _read_class_tree(folder / "train")
    _, val = _read_class_tree(folder / "val", raw_names)
    _, test = _read_class_tree(folder / "test", raw_names)
    return Splits([clean_classname(n) for n in raw_names], train, val, test, f"toy world target, fixed splits ({folder})")


# --- the ten benchmarks of Table 1 --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class OnDisk:
    """How a benchmark lies under data_root (torchvision's layout) and how its splits are read."""

    title: str
    folder: str  # under data_root
    layout: str  # shown when files are missing
    official: Callable  # (base folder, params) -> Splits
    coop_file: Optional[str] = None  # split_zhou_<Name>.json, looked for in the folder, then in data_root
    coop_images: str = ""  # the folder (under `folder`) that the CoOp paths are relative to
    torchvision: Optional[str] = None  # the torchvision.datasets class that downloads it
    manual: str = ""  # how to get it where torchvision cannot

    def __call__(self, p) -> Splits:
        root = project_path(p.data_root)
        base = root / self.folder
        if not base.is_dir():
            self.fetch(root, p)
        if self.coop_file:
            for candidate in (base / self.coop_file, root / self.coop_file):
                if candidate.is_file():
                    return read_coop_split(candidate, base / self.coop_images)
        try:
            return self.official(base, p)
        except FileNotFoundError as exc:
            raise DataDreamError(f"{self.title} at {base} is incomplete: {exc.filename} is missing. "
                                 f"Expected torchvision's layout: {self.layout}") from None

    def fetch(self, root: Path, p) -> None:
        where = f"{self.title} is not under {root} (expected {root / self.folder}). "
        if self.torchvision is None:
            raise DataDreamError(where + self.manual + f" Layout: {self.layout}")
        if not p.download:
            raise DataDreamError(where + f"Set download: true to fetch it with torchvision.datasets.{self.torchvision}, "
                                 f"or point data_root at the folder that holds it. Layout: {self.layout}")
        import torchvision

        getattr(torchvision.datasets, self.torchvision)(str(root), download=True)


def _caltech101(base: Path, p) -> Splits:
    images = base / "101_ObjectCategories"
    folders = [f for f in _class_folders(images) if f.name not in ("BACKGROUND_Google", "Faces_easy")]
    renames = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}  # CoOp's
    items = [(str(path), label) for label, folder in enumerate(folders) for path in _list_images(folder)]
    return with_carve_outs([clean_classname(renames.get(f.name, f.name)) for f in folders], items, p,
                           f"Caltech101 at {images} (no official split)")


def _dtd(base: Path, p) -> Splits:
    images = base / "images"
    names = [f.name for f in _class_folders(images)]
    index = {name: i for i, name in enumerate(names)}
    read = lambda split: [(str(images / rel), index[rel.split("/")[0]]) for rel in _lines(base / "labels" / f"{split}1.txt")]  # noqa: E731
    return Splits([clean_classname(n) for n in names], read("train"), read("val"), read("test"),
                  f"DTD official partition 1 (labels/{{train,val,test}}1.txt) at {base}")


# EuroSAT class names as CoOp writes them (the folder names are CamelCase codes).
EUROSAT_CLASSNAMES = {
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
    "SeaLake": "Sea or Lake",
}


EUROSAT_AUTHORS_NAMES = {coop: code for code, coop in EUROSAT_CLASSNAMES.items()}  # the authors prompt with the codes


def _eurosat(base: Path, p) -> Splits:
    images = base / "2750"
    folders = _class_folders(images)
    items = [(str(path), label) for label, folder in enumerate(folders) for path in _list_images(folder)]
    names = [EUROSAT_CLASSNAMES.get(f.name, clean_classname(f.name)) for f in folders]
    return with_carve_outs(names, items, p, f"EuroSAT at {images} (no official split)")


def _fgvc_aircraft(base: Path, p) -> Splits:
    folder = base / "data"
    names = _lines(folder / "variants.txt")
    index = {name: i for i, name in enumerate(names)}

    def read(split):
        rows = (line.split(" ", 1) for line in _lines(folder / f"images_variant_{split}.txt"))
        return [(str(folder / "images" / f"{image_id}.jpg"), index[variant]) for image_id, variant in rows]

    return Splits([clean_classname(n) for n in names], read("train"), read("val"), read("test"),
                  f"FGVC Aircraft official variant splits (data/images_variant_{{train,val,test}}.txt) at {base}")


def _oxford_pets(base: Path, p) -> Splits:
    names: dict[int, str] = {}

    def read(split):
        items = []
        for line in _lines(base / "annotations" / f"{split}.txt"):
            image_id, label = line.split()[:2]
            names[int(label) - 1] = clean_classname(image_id.rsplit("_", 1)[0].lower())
            items.append((str(base / "images" / f"{image_id}.jpg"), int(label) - 1))
        return items

    train, test = read("trainval"), read("test")
    return with_carve_outs([names[i] for i in range(len(names))], train, p,
                           f"Oxford Pets official trainval/test (annotations/) at {base}", test=test)


def _year_first(name: str) -> str:
    """Stanford Cars as CoOp names it: "AM General Hummer SUV 2000" -> "2000 AM General Hummer SUV"."""
    *model, year = name.split(" ")
    return " ".join([year, *model])


def _year_last(name: str) -> str:
    """Stanford Cars as the authors (and the devkit) name it: the year last."""
    year, *model = name.split(" ")
    return " ".join([*model, year])


def _stanford_cars(base: Path, p) -> Splits:
    from scipy.io import loadmat

    names = [_year_first(str(n)) for n in loadmat(base / "devkit" / "cars_meta.mat", squeeze_me=True)["class_names"]]
    read = lambda annos, images: [(str(base / images / str(a["fname"])), int(a["class"]) - 1)  # noqa: E731
                                  for a in loadmat(annos, squeeze_me=True)["annotations"]]
    train = read(base / "devkit" / "cars_train_annos.mat", "cars_train")
    test = read(base / "cars_test_annos_withlabels.mat", "cars_test")
    return with_carve_outs([clean_classname(n) for n in names], train, p,
                           f"Stanford Cars official train/test at {base}", test=test)


def _sun397(base: Path, p) -> Splits:
    paths = [line[1:] for line in _lines(base / "ClassName.txt")]  # "/a/apartment_building/outdoor"
    index = {path: i for i, path in enumerate(paths)}
    names = [clean_classname(" ".join(reversed(path.split("/")[1:]))) for path in paths]  # CoOp: "outdoor apartment building"
    partitions = base / "Partitions"
    if (partitions / "Training_01.txt").is_file():
        read = lambda name: [(str(base / line[1:]), index[line[1:].rsplit("/", 1)[0]]) for line in _lines(partitions / name)]  # noqa: E731
        return with_carve_outs(names, read("Training_01.txt"), p, f"SUN397 official partition 01 at {base}",
                               test=read("Testing_01.txt"))
    items = [(str(image), label) for label, path in enumerate(paths) for image in _list_images(base / path)]
    return with_carve_outs(names, items, p, f"SUN397 at {base} (no Partitions/ folder)")


def _food101(base: Path, p) -> Splits:
    names = _lines(base / "meta" / "classes.txt")
    index = {name: i for i, name in enumerate(names)}
    read = lambda split: [(str(base / "images" / f"{rel}.jpg"), index[name])  # noqa: E731
                          for name, rels in json.loads((base / "meta" / f"{split}.json").read_text()).items() for rel in rels]
    return with_carve_outs([clean_classname(n) for n in names], read("train"), p,
                           f"Food-101 official train/test (meta/) at {base}", test=read("test"))


# Oxford Flowers102 class names, in label order, as CoOp's cat_to_name.json gives them.
FLOWERS102_CLASSNAMES = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon", "colt's foot",
    "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower", "peruvian lily",
    "balloon flower", "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger",
    "grape hyacinth", "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke", "sweet william",
    "carnation", "garden phlox", "love in the mist", "mexican aster", "alpine sea holly", "ruby-lipped cattleya",
    "cape flower", "great masterwort", "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily",
    "poinsettia", "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura", "geranium",
    "orange dahlia", "pink-yellow dahlia", "cautleya spicata", "japanese anemone", "black-eyed susan",
    "silverbush", "californian poppy", "osteospermum", "spring crocus", "bearded iris", "windflower",
    "tree poppy", "gazania", "azalea", "water lily", "rose", "thorn apple", "morning glory", "passion flower",
    "lotus", "toad lily", "anthurium", "frangipani", "clematis", "hibiscus", "columbine", "desert-rose",
    "tree mallow", "magnolia", "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss",
    "foxglove", "bougainvillea", "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower",
    "trumpet creeper", "blackberry lily",
)


FLOWERS102_AUTHORS_NAMES = {"lotus": "lotus lotus"}  # the authors' list (generate/util.py), label 78


def _flowers102(base: Path, p) -> Splits:
    from scipy.io import loadmat

    labels = loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"]
    setid = loadmat(base / "setid.mat", squeeze_me=True)
    read = lambda key: [(str(base / "jpg" / f"image_{int(i):05d}.jpg"), int(labels[int(i) - 1]) - 1) for i in setid[key]]  # noqa: E731
    return Splits(list(FLOWERS102_CLASSNAMES), read("trnid"), read("valid"), read("tstid"),
                  f"Flowers102 official train/val/test (setid.mat) at {base}")


def _imagenet(base: Path, p) -> Splits:
    images = base / "images" if (base / "images" / "train").is_dir() else base  # CoOp's layout, or torchvision's
    names_file = base / "classnames.txt"
    if not names_file.is_file():
        raise DataDreamError(f"ImageNet class names are missing: put CoOp's classnames.txt (lines 'n01440764 tench') "
                             f"at {names_file}. It is linked from CoOp's DATASETS.md (github.com/KaiyangZhou/CoOp).")
    wnid_names = dict(line.split(" ", 1) for line in _lines(names_file))
    wnids = [f.name for f in _class_folders(images / "train")]
    missing = [w for w in wnids if w not in wnid_names]
    if missing:
        raise DataDreamError(f"{names_file} has no name for {len(missing)} class folder(s), e.g. {missing[:3]}.")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    read = lambda split: [(str(path), index[f.name]) for f in _class_folders(images / split) for path in _list_images(f)]  # noqa: E731
    return with_carve_outs([clean_classname(wnid_names[w]) for w in wnids], read("train"), p,
                           f"ImageNet train/ and val/ (val is the test split) at {images}", test=read("val"))


IMAGENET_MANUAL = ("ImageNet cannot be downloaded automatically: get ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar "
                   "and ILSVRC2012_devkit_t12.tar.gz from image-net.org into <data_root>/imagenet/, run "
                   "`python -c \"import torchvision as tv; [tv.datasets.ImageNet('<data_root>/imagenet', split=s) "
                   "for s in ('train', 'val')]\"` once to unpack them, and add CoOp's classnames.txt there.")
CARS_MANUAL = ("Stanford Cars cannot be downloaded by torchvision any more (the original host is gone): get the "
               "images and devkit (cars_train/, cars_test/, devkit/, cars_test_annos_withlabels.mat; e.g. from the "
               "Kaggle mirror named in CoOp's DATASETS.md) into <data_root>/stanford_cars/.")


def _benchmark(name: str, table_name: str, num_classes: int, prefix: str, on_disk: OnDisk,
               authors_name: Optional[Callable[[str], str]] = None) -> DatasetSpec:
    return DatasetSpec(name, on_disk, prefix, f"{on_disk.title} ({num_classes} classes); {on_disk.layout}",
                       table_name, num_classes, authors_name)


def _renamed(names: dict[str, str]) -> Callable[[str], str]:
    return lambda name: names.get(name, name)


_BENCHMARKS = (
    _benchmark("imagenet", "IN", 1000, "", OnDisk(
        "ImageNet", "imagenet", "imagenet/{train,val}/<wnid>/*.JPEG (or imagenet/images/{train,val}/...) + imagenet/classnames.txt",
        _imagenet, manual=IMAGENET_MANUAL)),
    _benchmark("caltech101", "CAL", 100, "", OnDisk(
        "Caltech101", "caltech101", "caltech101/101_ObjectCategories/<class>/image_*.jpg", _caltech101,
        "split_zhou_Caltech101.json", "101_ObjectCategories", "Caltech101")),
    _benchmark("dtd", "DTD", 47, "texture", OnDisk(
        "DTD", "dtd/dtd", "dtd/dtd/images/<class>/*.jpg + dtd/dtd/labels/{train,val,test}1.txt", _dtd,
        "split_zhou_DescribableTextures.json", "images", "DTD")),
    _benchmark("eurosat", "EuSAT", 10, "satellite", OnDisk(
        "EuroSAT", "eurosat", "eurosat/2750/<Class>/*.jpg", _eurosat, "split_zhou_EuroSAT.json", "2750", "EuroSAT"),
        _renamed(EUROSAT_AUTHORS_NAMES)),
    _benchmark("fgvc_aircraft", "AirC", 100, "aircraft", OnDisk(
        "FGVC Aircraft (variants)", "fgvc-aircraft-2013b",
        "fgvc-aircraft-2013b/data/{images/*.jpg, variants.txt, images_variant_{train,val,test}.txt}", _fgvc_aircraft,
        torchvision="FGVCAircraft")),
    _benchmark("oxford_pets", "Pets", 37, "pet", OnDisk(
        "Oxford-IIIT Pets", "oxford-iiit-pet", "oxford-iiit-pet/{images/*.jpg, annotations/{trainval,test}.txt}",
        _oxford_pets, "split_zhou_OxfordPets.json", "images", "OxfordIIITPet")),
    _benchmark("stanford_cars", "Cars", 196, "car", OnDisk(
        "Stanford Cars", "stanford_cars",
        "stanford_cars/{cars_train/, cars_test/, devkit/{cars_meta,cars_train_annos}.mat, cars_test_annos_withlabels.mat}",
        _stanford_cars, "split_zhou_StanfordCars.json", "", manual=CARS_MANUAL), _year_last),
    _benchmark("sun397", "SUN", 397, "scene", OnDisk(
        "SUN397", "SUN397", "SUN397/{ClassName.txt, <letter>/<class>/sun_*.jpg, optional Partitions/{Training,Testing}_01.txt}",
        _sun397, "split_zhou_SUN397.json", "", "SUN397")),
    _benchmark("food101", "Food", 101, "food", OnDisk(
        "Food-101", "food-101", "food-101/{images/<class>/*.jpg, meta/{classes.txt,train.json,test.json}}", _food101,
        "split_zhou_Food101.json", "images", "Food101")),
    _benchmark("flowers102", "FLO", 102, "flower", OnDisk(
        "Oxford Flowers102", "flowers-102", "flowers-102/{jpg/image_*.jpg, imagelabels.mat, setid.mat}", _flowers102,
        "split_zhou_OxfordFlowers.json", "jpg", "Flowers102"), _renamed(FLOWERS102_AUTHORS_NAMES)),
)
BENCHMARKS = tuple(spec.name for spec in _BENCHMARKS)  # Table 1's columns, in the paper's order

DATASETS: dict[str, DatasetSpec] = {
    "toy": DatasetSpec("toy", load_toy, "", "4 synthetic classes (shape, colour, texture), generated offline"),
    "toyworld": DatasetSpec("toyworld", load_toyworld, "", "the toy world's target: 4 of its colours as classes, in a look "
                            "its pretraining never shows (a light speckled ground under a blue light), for models: toy"),
    "imagefolder": DatasetSpec("imagefolder", load_imagefolder, "", "any root/<class>/*.jpg tree a user brings"),
    **{spec.name: spec for spec in _BENCHMARKS},
}
