"""Shared fixtures: tiny demo parameters whose run and data folders live in a temporary directory."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread count for this process and every process it starts (pipelines, notebook kernels):
# on a CPU, images made with different thread counts differ by a level in a few pixels, and the tests
# compare bytes across processes (environment.py says what is bit-identical). One: `make test` runs
# two pytest-xdist workers, one per core (a file's tests on one worker: `--dist loadfile`).
TEST_THREADS = "1"
os.environ["OMP_NUM_THREADS"] = TEST_THREADS
os.environ["MKL_NUM_THREADS"] = TEST_THREADS

import torch  # noqa: E402

torch.set_num_threads(int(TEST_THREADS))

from datadream_lib import datasets, params, splits  # noqa: E402


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    datasets.make_toy_dataset(root)
    return root


@pytest.fixture
def make_params(tmp_path, toy_root):
    """Demo params with runs under tmp_path and the shared toy data; keyword overrides."""
    def make(**overrides):
        values = {"base": "demo", "runs_root": str(tmp_path / "runs"), "data_root": str(toy_root), **overrides}
        return params.from_dict(values)
    return make


def small_values(method: str, **overrides) -> dict:
    """The smallest run of `method` (base 'smoke': the demo, smaller, with the method group's own smoke
    sizes: schema.SMOKE and each group's PRESETS), and `overrides`: the one place the tests' size is set."""
    return {"base": "smoke", "synth_method": method, **overrides}


@pytest.fixture
def small_params(make_params):
    """`small_params(method, **overrides)`: Params of the smallest run of a method, under tmp_path."""
    def make(method: str = params.FIELDS["synth_method"].default, **overrides):
        return make_params(**small_values(method, **overrides))
    return make


@pytest.fixture
def demo_run(make_params):
    """(params, run, split) of a fresh demo run."""
    def make(**overrides):
        p = make_params(**overrides)
        run, split = splits.start_run(p)
        return p, run, split
    return make


# Fixtures that run whole pipelines (a kernel per stage, or the stages in this process): every test
# that uses one, directly or through another fixture, is `slow` (`make test-latest` skips them).
def slow_fixture(*args, **kwargs):
    """`pytest.fixture` for a fixture that runs whole pipelines: marks the function it wraps."""
    def register(function):
        function.runs_pipelines = True
        return pytest.fixture(*args, **kwargs)(function)
    return register


# `make test`'s two pytest-xdist workers take whole files in collection order (`--dist loadfile
# --no-loadscope-reorder`): the longest files first (measured 2026-12-08: 230 s to 90 s each), so that
# no worker is left alone with one at the end; and test_results, which reads `tiny_runs`, after
# test_pipeline, which makes them, so that no worker waits for the other to make them.
FIRST = ("test_docs.py", "test_pipeline.py", "test_launch.py", "test_toyworld.py", "test_reliability.py",
         "test_benchmarks.py")
LAST = ("test_results.py",)


def _file_rank(item) -> int:
    name = item.path.name
    return FIRST.index(name) if name in FIRST else len(FIRST) + 1 if name in LAST else len(FIRST)


def pytest_collection_modifyitems(config, items):
    for item in items:
        info = getattr(item, "_fixtureinfo", None)  # the fixtures it uses, at any depth, with their functions
        defs = [d for ds in (info.name2fixturedefs.values() if info else ()) for d in ds]
        if any(getattr(d.func, "runs_pipelines", False) for d in defs):
            item.add_marker(pytest.mark.slow)
    items.sort(key=_file_rank)  # stable: a file's tests keep their order


def run_pipeline_cli(*args, cwd=None):
    """`python -m datadream_lib.pipeline ARGS` in a subprocess, as a user runs it."""
    import subprocess
    import sys

    from datadream_lib import runs

    return subprocess.run([sys.executable, "-m", "datadream_lib.pipeline", *args], cwd=cwd or runs.project_root(),
                          capture_output=True, text=True, timeout=900)


def run_pipeline_in_process(*args):
    """The same command's stages called in this process (`pipeline.main(..., in_process=True)`): what
    the stages make, without a notebook kernel per stage (no executed notebooks, no notebook figures).
    Returns what `run_pipeline_cli` returns: returncode, stdout, stderr."""
    import contextlib
    import io
    import subprocess

    from datadream_lib import pipeline

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = pipeline.main(list(args), in_process=True)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@slow_fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Tiny pipeline runs for the end-to-end and many-runs tests: DataDream-dset with two seeds made
    with the CLI as a user would (every stage; one command, `seeds`; the one test of the notebooks
    run by the pipeline), and DataDream-cls with one seed, its stages called in this process (Table 1
    stages only). Returns (runs root, the CLI arguments of the dset runs, their stdout)."""
    import fcntl
    import json

    # Several files use these runs; under pytest-xdist (`make test`: a worker per core, a file per
    # worker) one worker makes them, in the folder every worker's temporary folders are under, and
    # the other waits for them (pytest-xdist's documented pattern for a fixture made once).
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    root, made = shared / "tiny_runs", shared / "tiny_runs.json"
    with open(shared / "tiny_runs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if made.exists():
            recorded = json.loads(made.read_text())
            return root, recorded["dset"], recorded["stdout"]
        root.mkdir()
        common = ["--set", f"runs_root={root}", "--set", f"data_root={root / 'data'}"]
        dset = ["params/demo.yaml", *common, "--set", "run_name=demo_seed{seed}", "--set", "seeds=[0, 1]"]
        result = run_pipeline_cli(*dset)
        assert result.returncode == 0, result.stdout + result.stderr
        cls = run_pipeline_in_process("params/demo.yaml", *common, "--set", "run_name=demo_cls_seed{seed}", "--set", "variant=cls",
                                      "--set", "clf_settings=[synthetic, synthetic_real]",
                                      "--set", "stages=[adaptation, synthesis, classification, fid]")
        assert cls.returncode == 0, cls.stdout + cls.stderr
        made.write_text(json.dumps({"dset": dset, "stdout": result.stdout}))
    return root, dset, result.stdout
