"""Repository hygiene that users and CI rely on."""

import importlib.metadata
import importlib.util
import re
import tomllib

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from datadream_lib import params, results, runs
from datadream_lib import stages as stage_table

ROOT = runs.project_root()


def _lock() -> dict:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_lock(ROOT / "requirements.lock")


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def test_the_lock_pins_every_dependency_within_the_ranges_of_pyproject():
    lock = _lock()
    assert len(lock) > 100  # direct and transitive
    for requirement in _pyproject_requirements():
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} is in pyproject.toml but not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(lock[name]["version"], prereleases=True), \
            f"requirements.lock pins {name}=={lock[name]['version']}, outside pyproject.toml's {requirement}: run `make lock`"
    names = {canonicalize_name(r.name) for r in _pyproject_requirements()}
    assert {"jupyterlab", "papermill", "ipywidgets", "torch", "diffusers", "peft", "transformers", "open-clip-torch",
            "matplotlib", "seaborn", "pytest", "nbval"} <= names


def test_environment_yml_installs_the_lock_on_the_locked_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert conda_pip == ["-r requirements.lock", "-e ."]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    locked_for = re.search(r"--python-version (\S+)", (ROOT / "Makefile").read_text())[1]
    assert python == f"python={locked_for}"


@pytest.mark.lock
def test_the_installed_environment_is_exactly_the_lock():
    """What the tests run in is what the lock says (`make setup` installs it without resolving)."""
    wrong = {}
    for name, info in _lock().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or Version(installed).public != Version(info["version"]).public:
            wrong[name] = (info["version"], installed)
    assert not wrong, f"installed versions differ from requirements.lock (locked, installed): {wrong}; run `make setup`"


def test_notebooks_are_committed_clean_with_one_parameters_cell():
    stages = {stage.notebook for stage in stage_table.STAGES}
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert stages < {path.name for path in notebooks}
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs or c.execution_count for c in code), path.name
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        namespace = {}
        exec(tagged[0].source, namespace)
        namespace.pop("__builtins__")
        if path.name in stages:
            assert params.from_namespace(namespace) == params.from_dict({"base": "demo"}), path.name
        else:  # the many-runs notebook takes its own few parameters
            assert namespace == results.NOTEBOOK_PARAMETERS, path.name


def test_demo_file_is_the_demo_base():
    assert params.load_file(ROOT / "params" / "demo.yaml") == params.from_dict({"base": "demo"})
