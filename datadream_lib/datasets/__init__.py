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

The package: `base` (splits, the registry's entry, shared readers, a user's folder), `benchmarks`
(Table 1's ten), `generated` (the datasets drawn here: the toy dataset and the toy world's target).
"""

from __future__ import annotations

from datadream_lib.datasets.base import (IMAGE_EXTENSIONS, DatasetSpec, Item, Splits, by_class, carve_out,
                                         check_unique_classnames, clean_classname, load_imagefolder, read_coop_split)
from datadream_lib.datasets.benchmarks import BENCHMARKS, FLOWERS102_CLASSNAMES, SPECS
from datadream_lib.datasets.generated import TOY_CLASSES, TOY_VERSION, load_toy, load_toyworld, make_toy_dataset

DATASETS: dict[str, DatasetSpec] = {
    "toy": DatasetSpec("toy", load_toy, "", "4 synthetic classes (shape, colour, texture), generated offline"),
    "toyworld": DatasetSpec("toyworld", load_toyworld, "", "the toy world's target: 4 of its colours as classes, in a look "
                            "its pretraining never shows (a light speckled ground under a blue light), for models: toy"),
    "imagefolder": DatasetSpec("imagefolder", load_imagefolder, "", "any root/<class>/*.jpg tree a user brings"),
    **{spec.name: spec for spec in SPECS},
}

__all__ = ["BENCHMARKS", "DATASETS", "FLOWERS102_CLASSNAMES", "IMAGE_EXTENSIONS", "TOY_CLASSES", "TOY_VERSION", "DatasetSpec",
           "Item", "Splits", "by_class", "carve_out", "check_unique_classnames", "clean_classname", "make_toy_dataset",
           "read_coop_split"]
