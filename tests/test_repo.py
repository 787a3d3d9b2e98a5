"""Repository hygiene that users and CI rely on."""

import re
import tomllib

import nbformat
import yaml

from datadream_lib import params, results, runs
from datadream_lib import stages as stage_table

ROOT = runs.project_root()


def _names(requirements):
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_environment_yml_and_pyproject_list_the_same_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = _names(project["dependencies"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _names(d for d in conda_pip if not d.startswith("-e")) == pip_deps
    assert {"jupyterlab", "papermill", "torch", "diffusers", "peft", "transformers", "open-clip-torch", "matplotlib",
            "seaborn", "pytest", "nbval"} <= pip_deps


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
