"""The ten benchmarks of Table 1, each one rule written once (`OnDisk`): torchvision's layout under
`data_root`, a CoOp split file where one lies beside it, else the official splits, with a missing
split carved out of train (see the package's docstring)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional

from datadream_lib.datasets.base import (DatasetSpec, Splits, class_folders, clean_classname, list_images, read_coop_split,
                                        read_lines, with_carve_outs)
from datadream_lib.errors import DataDreamError
from datadream_lib.runs import project_path

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
    folders = [f for f in class_folders(images) if f.name not in ("BACKGROUND_Google", "Faces_easy")]
    renames = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}  # CoOp's
    items = [(str(path), label) for label, folder in enumerate(folders) for path in list_images(folder)]
    return with_carve_outs([clean_classname(renames.get(f.name, f.name)) for f in folders], items, p,
                           f"Caltech101 at {images} (no official split)")


def _dtd(base: Path, p) -> Splits:
    images = base / "images"
    names = [f.name for f in class_folders(images)]
    index = {name: i for i, name in enumerate(names)}
    read = lambda split: [(str(images / rel), index[rel.split("/")[0]]) for rel in read_lines(base / "labels" / f"{split}1.txt")]  # noqa: E731
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
    folders = class_folders(images)
    items = [(str(path), label) for label, folder in enumerate(folders) for path in list_images(folder)]
    names = [EUROSAT_CLASSNAMES.get(f.name, clean_classname(f.name)) for f in folders]
    return with_carve_outs(names, items, p, f"EuroSAT at {images} (no official split)")


def _fgvc_aircraft(base: Path, p) -> Splits:
    folder = base / "data"
    names = read_lines(folder / "variants.txt")
    index = {name: i for i, name in enumerate(names)}

    def read(split):
        rows = (line.split(" ", 1) for line in read_lines(folder / f"images_variant_{split}.txt"))
        return [(str(folder / "images" / f"{image_id}.jpg"), index[variant]) for image_id, variant in rows]

    return Splits([clean_classname(n) for n in names], read("train"), read("val"), read("test"),
                  f"FGVC Aircraft official variant splits (data/images_variant_{{train,val,test}}.txt) at {base}")


def _oxford_pets(base: Path, p) -> Splits:
    names: dict[int, str] = {}

    def read(split):
        items = []
        for line in read_lines(base / "annotations" / f"{split}.txt"):
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
    paths = [line[1:] for line in read_lines(base / "ClassName.txt")]  # "/a/apartment_building/outdoor"
    index = {path: i for i, path in enumerate(paths)}
    names = [clean_classname(" ".join(reversed(path.split("/")[1:]))) for path in paths]  # CoOp: "outdoor apartment building"
    partitions = base / "Partitions"
    if (partitions / "Training_01.txt").is_file():
        read = lambda name: [(str(base / line[1:]), index[line[1:].rsplit("/", 1)[0]]) for line in read_lines(partitions / name)]  # noqa: E731
        return with_carve_outs(names, read("Training_01.txt"), p, f"SUN397 official partition 01 at {base}",
                               test=read("Testing_01.txt"))
    items = [(str(image), label) for label, path in enumerate(paths) for image in list_images(base / path)]
    return with_carve_outs(names, items, p, f"SUN397 at {base} (no Partitions/ folder)")


def _food101(base: Path, p) -> Splits:
    names = read_lines(base / "meta" / "classes.txt")
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
    wnid_names = dict(line.split(" ", 1) for line in read_lines(names_file))
    wnids = [f.name for f in class_folders(images / "train")]
    missing = [w for w in wnids if w not in wnid_names]
    if missing:
        raise DataDreamError(f"{names_file} has no name for {len(missing)} class folder(s), e.g. {missing[:3]}.")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    read = lambda split: [(str(path), index[f.name]) for f in class_folders(images / split) for path in list_images(f)]  # noqa: E731
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


SPECS = (  # Table 1's ten, in the paper's column order
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
BENCHMARKS = tuple(spec.name for spec in SPECS)  # Table 1's columns, in the paper's order
