"""Datasets, class names, prompts and the nested, seeded few-shot split."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datadream_lib import datasets, runs, splits
from datadream_lib.errors import DataDreamError


def test_class_name_and_prompt_rules():
    assert datasets.clean_classname("Annual_Crop  Land ") == "Annual Crop Land"
    assert splits.diffusion_prompt("Forest", "satellite") == "a satellite photo of a Forest"
    assert splits.diffusion_prompt("red circle") == "a photo of a red circle"
    name = splits.class_dirname(7, "F/A-18")
    assert "/" not in name and name.startswith("0007_")
    assert len({splits.class_dirname(i, "A/B") for i in range(3)}) == 3


def test_toy_dataset_is_deterministic_and_visibly_different(tmp_path, toy_root):
    again = datasets.make_toy_dataset(tmp_path)
    a = sorted((toy_root / datasets.TOY_VERSION).rglob("*.png"))
    b = sorted(again.rglob("*.png"))
    assert [p.relative_to(toy_root / datasets.TOY_VERSION) for p in a] == [p.relative_to(again) for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a[:10], b[:10]))
    means = [np.asarray(Image.open(next((again / "train" / c.replace(" ", "_")).glob("*.png")))).reshape(-1, 3).mean(0)
             for c in datasets.TOY_CLASSES]
    assert len({tuple(np.round(m)) for m in means}) == 4


def test_few_shot_split_is_nested_seeded_and_per_class(make_params):
    p = make_params(shots=4)
    split = splits.build_split(p)
    assert len(split.shot_order) == 4 and all(len(s) == 16 for s in split.shot_order)
    for k in (1, 2, 4, 8, 16):
        smaller, larger = set(split.shots(k)), set(split.shots(2 * k)) if k < 16 else set(split.shots(16))
        assert smaller <= larger
        assert all(sum(1 for _, y in split.shots(k) if y == c) == k for c in range(4))
    assert all(label == c for c, paths in enumerate(split.shot_order) for path, label in split.shots(16) if path in paths)
    assert splits.build_split(p).shot_order == split.shot_order
    assert splits.build_split(make_params(shots=4, seed=1)).shot_order != split.shot_order
    # shots never come from val or test
    assert not {path for path, _ in split.shots(16)} & {path for path, _ in split.val + split.test}


def test_split_file_is_written_once_and_read_back(demo_run):
    p, run, split = demo_run()
    path = run.path(splits.SPLIT_FILE)
    stamp = path.stat().st_mtime_ns
    _, again = splits.start_run(p)
    assert path.stat().st_mtime_ns == stamp
    assert again.shot_order == split.shot_order and again.test == split.test


def _imagefolder(root: Path, counts: dict, size=16):
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (size, size), (i * 10 % 255, 0, 0)).save(root / name / f"{i}.jpg")


def test_imagefolder_with_carve_outs(tmp_path, make_params):
    _imagefolder(tmp_path / "imgs", {"cat_black": 12, "dog": 12})
    p = make_params(dataset="imagefolder", data_root=str(tmp_path / "imgs"), shots=2, ablation_shots=[1, 2])
    split = splits.build_split(p)
    assert split.classnames == ["cat black", "dog"]
    assert "carve-out" in split.source
    all_paths = [x for x, _ in split.train] + [x for x, _ in split.val] + [x for x, _ in split.test]
    assert len(all_paths) == len(set(all_paths)) == 24


def test_missing_root_names_the_layout(tmp_path, make_params):
    with pytest.raises(DataDreamError, match="does not exist.*root/<class>"):
        splits.build_split(make_params(dataset="imagefolder", data_root=str(tmp_path / "missing")))


def test_too_few_images_for_k_shots_names_the_class(tmp_path, make_params):
    _imagefolder(tmp_path / "imgs", {"rare": 5, "common": 30})
    with pytest.raises(DataDreamError, match="'rare' has 3.*Lower shots"):
        splits.build_split(make_params(dataset="imagefolder", data_root=str(tmp_path / "imgs"), shots=4, ablation_shots=[1]))


def test_corrupt_images_are_listed_or_skipped(tmp_path, make_params, capsys):
    _imagefolder(tmp_path / "imgs", {"a": 10, "b": 10})
    (tmp_path / "imgs" / "a" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "imgs" / "b" / "notes.png").write_text("hello")
    p = make_params(dataset="imagefolder", data_root=str(tmp_path / "imgs"), shots=2, ablation_shots=[1])
    with pytest.raises(DataDreamError, match=r"2 file\(s\)") as error:
        splits.build_split(p)
    assert "broken.jpg" in str(error.value) and "notes.png" in str(error.value)
    assert "skip_corrupt_images: true" in str(error.value)
    split = splits.build_split(p.replace(skip_corrupt_images=True))
    assert len(split.skipped_corrupt) == 2
    assert "skipping unreadable image" in capsys.readouterr().out
    assert not any("broken" in x for x, _ in split.train + split.val + split.test)


def test_a_truncated_jpeg_is_caught(tmp_path, make_params):
    _imagefolder(tmp_path / "imgs", {"a": 10, "b": 10}, size=64)
    whole = (tmp_path / "imgs" / "a" / "0.jpg").read_bytes()
    (tmp_path / "imgs" / "a" / "0.jpg").write_bytes(whole[: len(whole) // 2])
    p = make_params(dataset="imagefolder", data_root=str(tmp_path / "imgs"), shots=2, ablation_shots=[1])
    with pytest.raises(DataDreamError, match="0.jpg"):
        splits.build_split(p)


def test_run_folder_with_other_parameters_is_refused(demo_run, make_params):
    p, run, _ = demo_run()
    with pytest.raises(DataDreamError, match="other parameters.*shots: 4 -> 2.*run_name"):
        runs.open_run(make_params(shots=2))
    runs.open_run(make_params(synth_batch_size=1))  # how a run executes is not its identity
    assert (run.dir / runs.PARAMS_FILE).read_text().count("shots: 4") == 1
