"""Each run records the environment it ran in, and refuses to resume under other pixel-changing versions."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from datadream_lib import adaptation, catalog, environment, pipeline, synthesis
from datadream_lib.errors import DataDreamError
from datadream_lib import splits

FAST = {"adapt_epochs": 1, "images_per_class": 2, "num_inference_steps": 2, "ablation_images_per_class": [2]}


@pytest.fixture
def made(demo_run):
    """A demo run with its adapter trained and its images made, in this process."""
    p, run, split = demo_run(**FAST)
    adaptation.train_adapters(p, run, split, progress=False)
    synthesis.generate(p, run, split, progress=False)
    return p, run, split


def _snapshot(folder):
    return {str(f.relative_to(folder)): (f.read_bytes(), f.stat().st_mtime_ns)
            for f in sorted(folder.rglob("*")) if f.is_file()}


def test_the_run_folder_records_the_environment_and_every_row_names_it(made):
    p, run, split = made
    records = environment.records(run.dir)
    assert len(records) == 1  # one process wrote the run
    record = records[0]
    assert record["id"] == run.environment
    assert record["packages"]["diffusers"] == environment.package_versions()["diffusers"] is not None
    assert set(environment.PIXEL_PACKAGES) <= set(record["packages"])
    assert record["python"] and record["host"] and record["torch_threads"] == torch.get_num_threads()
    assert "torch_cuda" in record and "cudnn" in record and record["gpus"] == []
    code = Path(environment.__file__).resolve().parent.parent  # the checkout the library runs from
    head = subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's clone): the record names its commit, read independently
        dirty = subprocess.run(["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout != ""
        assert (record["git_commit"], record["git_dirty"]) == (head.stdout.strip(), dirty)
    else:  # an unpacked archive: no commit to name, and the record says so
        assert record["git_commit"] is None and record["git_dirty"] is None
    rows = catalog.read_manifest(catalog.folder(run, p.synth_method))
    assert len(rows) == 2 * len(split.classnames)
    assert {r["environment"] for r in rows} == {record["id"]}
    assert {r["torch_threads"] for r in rows} == {torch.get_num_threads()}
    info = json.loads(run.path("adaptation", "dset", "adapter.json").read_text())
    assert info["environment"] == record["id"] and info["torch_threads"] == torch.get_num_threads()


def _fake_older_diffusers(run):
    latest = environment.records(run.dir)[-1]
    path = run.path(environment.FOLDER, f"{latest['id']}.json")
    info = json.loads(path.read_text())
    info["packages"]["diffusers"] = "0.41.0"
    path.write_text(json.dumps(info))


def test_a_resume_under_another_diffusers_is_refused_with_the_fix_and_nothing_written(made, toy_root, capsys):
    p, run, split = made
    _fake_older_diffusers(run)
    before = _snapshot(run.dir)
    args = ["params/demo.yaml", "--set", f"runs_root={p.runs_root}", "--set", f"data_root={toy_root}",
            *[item for key, value in FAST.items() for item in ("--set", f"{key}={value}")]]
    assert pipeline.main(args) == 2
    err = capsys.readouterr().err
    now = environment.package_versions()["diffusers"]
    assert f"diffusers 0.41.0 -> {now}" in err and "allow_environment_change: true" in err
    assert len(err.strip().splitlines()) == 1
    assert _snapshot(run.dir) == before
    with pytest.raises(DataDreamError, match="diffusers 0.41.0"):  # a notebook's first cell stops the same way
        splits.start_run(p)
    assert _snapshot(run.dir) == before
    # the way on that the message names
    splits.start_run(p.replace(allow_environment_change=True))


def test_a_resume_under_the_same_versions_goes_on(made):
    p, run, split = made
    assert environment.changed_packages(run.dir) == {}
    splits.start_run(p)


def test_a_process_that_skips_the_final_collection_still_runs_its_exit_callbacks_and_keeps_its_files(tmp_path):
    """`exit_without_final_collection` only freezes the heap at exit: buffered writes, `atexit` and
    `weakref.finalize` callbacks still happen (an `os._exit` would lose them)."""
    import subprocess
    import sys

    script = (
        "import atexit, weakref\n"
        "from datadream_lib import environment\n"
        "environment.exit_without_final_collection(); environment.exit_without_final_collection()\n"
        f"out = open({str(tmp_path / 'buffered.txt')!r}, 'w'); out.write('kept')\n"  # never closed by hand
        "class Holder: pass\n"
        "holder = Holder(); holder.self = holder  # a cycle, frozen at exit\n"
        f"weakref.finalize(holder, open({str(tmp_path / 'finalized.txt')!r}, 'w').close)\n"
        f"atexit.register(open({str(tmp_path / 'atexit.txt')!r}, 'w').close)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "buffered.txt").read_text() == "kept"
    assert (tmp_path / "finalized.txt").exists() and (tmp_path / "atexit.txt").exists()
