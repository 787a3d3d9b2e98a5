"""The ten benchmarks of Table 1, loaded from small fake trees in their on-disk layouts (no download):
class names, split reading (official and CoOp), few-shot sampling and the prompt-prefix rule."""

import pytest

from datadream_lib import datasets, params, splits
from datadream_lib.errors import DataDreamError
from tests import fake_datasets as fake

# docs/hyperparameters.md §1: the authors' prefixes; none for ImageNet and Caltech101.
PREFIXES = {"imagenet": "", "caltech101": "", "dtd": "texture", "eurosat": "satellite", "fgvc_aircraft": "aircraft",
            "oxford_pets": "pet", "stanford_cars": "car", "sun397": "scene", "food101": "food", "flowers102": "flower"}
# Where a dataset has no official val (or test) split, it is carved out of train.
CARVED = {"imagenet": "val", "caltech101": "test val", "dtd": "", "eurosat": "test val", "fgvc_aircraft": "",
          "oxford_pets": "val", "stanford_cars": "val", "sun397": "test val", "food101": "val", "flowers102": ""}


def _params(tmp_path, name, **overrides):
    return params.from_dict({"base": "demo", "dataset": name, "data_root": str(tmp_path / "data"),
                             "runs_root": str(tmp_path / "runs"), "shots": 2, "ablation_shots": [1, 2], **overrides})


def test_the_registry_holds_the_ten_benchmarks_in_the_papers_order():
    assert datasets.BENCHMARKS == tuple(PREFIXES)
    assert [datasets.DATASETS[n].table_name for n in datasets.BENCHMARKS] == \
        ["IN", "CAL", "DTD", "EuSAT", "AirC", "Pets", "Cars", "SUN", "Food", "FLO"]
    assert sum(datasets.DATASETS[n].num_classes for n in datasets.BENCHMARKS) == 1000 + 100 + 47 + 10 + 100 + 37 + 196 + 397 + 101 + 102
    assert len(datasets.FLOWERS102_CLASSNAMES) == len(set(datasets.FLOWERS102_CLASSNAMES)) == 102


@pytest.mark.parametrize("name", datasets.BENCHMARKS)
def test_benchmark_loads_from_its_fake_tree(tmp_path, name):
    expected = fake.MAKERS[name](tmp_path / "data")  # CoOp's names
    p = _params(tmp_path, name, class_names="coop")
    split = splits.build_split(p)
    assert split.classnames == expected
    assert not any("_" in c for c in split.classnames)
    dirs = split.class_dirs()
    assert len(set(dirs)) == len(dirs) and not any("/" in d for d in dirs)
    # splits: disjoint, every class in each, and the source says which were carved out
    train, val, test = ({path for path, _ in items} for items in (split.train, split.val, split.test))
    assert not (train & val or train & test or val & test)
    for items in (split.train, split.val, split.test):
        assert {label for _, label in items} == set(range(len(expected)))
    for carved in ("val", "test"):
        assert (f"{carved}: seeded carve-out" in split.source) == (carved in CARVED[name].split())
    # few-shot: K per class, from train only, nested
    one, two = split.shots(1), split.shots(2)
    assert set(one) <= set(two) and {path for path, _ in two} <= train
    assert sorted(label for _, label in two) == sorted(list(range(len(expected))) * 2)
    # the prompt rule, for adaptation, synthesis and the zero-shot head alike
    prefix = f"{PREFIXES[name]} " if PREFIXES[name] else ""
    assert split.prompts() == [f"a {prefix}photo of a {c}" for c in expected]
    assert split.classifier_prompts() == [f"a {prefix}photo of a {c}" for c in expected]  # no full stop (authors' head)
    assert split.class_names == "coop"


# The authors' names (ExplainableML/DataDream generate/util.py, classify/util_data.py) where they
# differ from CoOp's, for the classes of the fake trees; written out here, independently of the library.
AUTHORS_PROMPTS = {
    "eurosat": ["a satellite photo of a AnnualCrop", "a satellite photo of a Forest", "a satellite photo of a SeaLake"],
    "stanford_cars": ["a car photo of a AM General Hummer SUV 2000", "a car photo of a Ram C/V Cargo Van Minivan 2012",
                      "a car photo of a smart fortwo Convertible 2012"],
}


@pytest.mark.parametrize("name", sorted(AUTHORS_PROMPTS))
@pytest.mark.parametrize("with_coop_file", [False, True])
def test_the_default_class_names_are_the_authors(tmp_path, name, with_coop_file):
    expected = fake.MAKERS[name](tmp_path / "data")
    p = _params(tmp_path, name)
    assert p.class_names == "authors"
    if with_coop_file:  # a CoOp split file carries CoOp's names: the authors' names still win
        official = datasets.DATASETS[name].load(p)
        on_disk = datasets.DATASETS[name].load
        base = tmp_path / "data" / on_disk.folder
        by_label = datasets.by_class(official.train + official.val + official.test)
        chosen = {"test": [(paths[0], c) for c, paths in by_label.items()],
                  "val": [(paths[1], c) for c, paths in by_label.items()]}
        chosen["train"] = [it for it in official.train + official.val + official.test if it not in chosen["test"] + chosen["val"]]
        fake.write_coop_split(base / on_disk.coop_file, base / on_disk.coop_images, chosen, expected)
    split = splits.build_split(p)
    assert split.prompts() == split.classifier_prompts() == AUTHORS_PROMPTS[name]
    assert split.class_names == "authors"
    assert splits.class_dirname(1, split.classnames[1]) != ""  # "Ram C/V" makes no sub-folder
    assert all("/" not in d for d in split.class_dirs())


def test_the_class_name_choice_is_recorded_in_split_json(demo_run):
    p, run, split = demo_run(class_names="coop")
    assert splits.FewShotSplit.load(run.path(splits.SPLIT_FILE)).class_names == "coop"


@pytest.mark.parametrize("name", [n for n in datasets.BENCHMARKS if datasets.DATASETS[n].load.coop_file])
def test_a_coop_split_file_gives_the_splits_and_the_same_class_names(tmp_path, name):
    expected = fake.MAKERS[name](tmp_path / "data")
    p = _params(tmp_path, name)
    official = datasets.DATASETS[name].load(p)
    on_disk = datasets.DATASETS[name].load
    base = tmp_path / "data" / on_disk.folder
    everything = sorted(official.train + official.val + official.test)
    by_label = datasets.by_class(everything)
    chosen = {"test": [(paths[0], c) for c, paths in by_label.items()], "val": [(paths[1], c) for c, paths in by_label.items()]}
    chosen["train"] = [item for item in everything if item not in chosen["test"] + chosen["val"]]
    fake.write_coop_split(base / on_disk.coop_file, base / on_disk.coop_images, chosen, expected)
    splits = datasets.DATASETS[name].load(p)
    assert splits.source.startswith("CoOp split file") and on_disk.coop_file in splits.source
    assert splits.classnames == expected == official.classnames
    assert sorted(splits.test) == sorted(chosen["test"]) and sorted(splits.val) == sorted(chosen["val"])


@pytest.mark.parametrize("name", datasets.BENCHMARKS)
def test_a_missing_dataset_stops_with_where_to_put_it(tmp_path, name):
    spec = datasets.DATASETS[name]
    with pytest.raises(DataDreamError) as err:
        splits.build_split(_params(tmp_path, name))
    message = str(err.value)
    assert str(tmp_path / "data" / spec.load.folder) in message
    if name in ("imagenet", "stanford_cars"):
        assert "cannot be downloaded" in message
    else:
        assert "download: true" in message and spec.load.torchvision in message


def test_download_true_fetches_with_torchvision(tmp_path, monkeypatch):
    import torchvision

    calls = []

    def fake_eurosat(root, download):
        calls.append((root, download))
        fake.eurosat(tmp_path / "data")

    monkeypatch.setattr(torchvision.datasets, "EuroSAT", fake_eurosat)
    split = splits.build_split(_params(tmp_path, "eurosat", download=True))
    assert calls == [(str(tmp_path / "data"), True)] and len(split.classnames) == 3


def test_an_incomplete_tree_names_the_missing_file(tmp_path):
    fake.dtd(tmp_path / "data")
    (tmp_path / "data" / "dtd" / "dtd" / "labels" / "val1.txt").unlink()
    with pytest.raises(DataDreamError, match="incomplete.*val1.txt"):
        splits.build_split(_params(tmp_path, "dtd"))


def test_imagenet_reads_coops_layout_and_needs_its_class_names(tmp_path):
    expected = fake.imagenet(tmp_path / "data", coop_layout=True)  # imagenet/images/{train,val}
    split = splits.build_split(_params(tmp_path, "imagenet"))
    assert split.classnames == expected and "images" in split.source
    other = tmp_path / "other"
    fake.imagenet(other / "data", classnames=False)
    with pytest.raises(DataDreamError, match="classnames.txt"):
        splits.build_split(_params(other, "imagenet"))


def test_sun397_uses_its_official_partition_when_present(tmp_path):
    fake.sun397(tmp_path / "data", partitions=True)
    split = splits.build_split(_params(tmp_path, "sun397"))
    assert "official partition 01" in split.source and "test: seeded" not in split.source
    assert len(split.test) == 3 * fake.N_TEST


def test_carved_test_split_is_the_same_for_every_run_seed(tmp_path):
    fake.eurosat(tmp_path / "data")
    a = splits.build_split(_params(tmp_path, "eurosat", seed=0))
    b = splits.build_split(_params(tmp_path, "eurosat", seed=1))
    assert a.test == b.test and a.val == b.val
    assert a.shot_order != b.shot_order
    c = splits.build_split(_params(tmp_path, "eurosat", split_seed=1))
    assert c.test != a.test
