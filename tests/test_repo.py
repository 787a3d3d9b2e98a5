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


def test_opening_a_notebook_in_jupyterlab_has_nothing_to_rewrite():
    """JupyterLab writes the kernel's spec and language_info into a notebook it opens, in nbformat's
    own layout: committed notebooks already carry both (for the locked Python 3.11), so opening one
    leaves `git status` clean (tests/test_browser.py checks it in a real JupyterLab)."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = path.read_text()
        nb = nbformat.reads(text, as_version=4)
        assert nb.metadata.kernelspec == {"display_name": "Python 3 (ipykernel)", "language": "python",
                                          "name": "python3"}, path.name
        info = nb.metadata.language_info
        assert info.name == "python" and info.version.startswith("3.11.") and info.pygments_lexer == "ipython3", path.name
        assert text == nbformat.writes(nb) + "\n", f"{path.name} is not in nbformat's layout"


def test_demo_file_is_the_demo_base():
    assert params.load_file(ROOT / "params" / "demo.yaml") == params.from_dict({"base": "demo"})


def _library_imports() -> dict[str, set[str]]:
    """{module: the library modules it imports, at any depth of its code}, read with ast."""
    import ast

    graph = {}
    for path in (ROOT / "datadream_lib").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("datadream_lib"):
                found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("datadream_lib")}
        graph[name] = found
    return {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}


def test_the_library_has_no_import_circle():
    graph = _library_imports()
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}  # a package's own face
    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for target in graph[module]:
            assert state.get(target) != 1, f"import circle: {' -> '.join(path + [target])}"
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert "datadream_lib.methods" not in str(graph["datadream_lib.schema"])  # the schema imports no method


def _method_names_and_labels() -> tuple[set[str], set[str]]:
    """Every method's name, and every display name it gives (for the default and for each choice of
    the fields of its group)."""
    import dataclasses

    from datadream_lib import methods

    labels = set()
    for name, method in methods.METHODS.items():
        labels.add(method.label(params.from_dict({"base": "demo", "synth_method": name})))
        for f in dataclasses.fields(method.parameters):
            for choice in f.metadata.get("choices") or ():
                labels.add(method.label(params.from_dict({"base": "demo", "synth_method": name, f.name: choice})))
    return set(methods.METHODS), labels


# Strings that equal a method's name or display name and mean something else, each with its reason.
NOT_A_METHOD = {
    ("datadream_lib/__init__.py", "datadream"): "the project's name (PROJECT)",
    ("datadream_lib/schema.py", "datadream"): "the default synth_method (the schema imports no method)",
    ("datadream_lib/models.py", "Stable Diffusion"): "the model family's name (SD 2.1's weights), not the method's",
}


def test_no_module_outside_methods_names_a_method():
    """Outside methods/, the library names no method: no string (a comparison, a dict key, a label, a
    figure's path such as 'top1/datadream/synthetic') equals a method's name or display name or holds
    a name as a path segment; what a grid or measurement names is data (params/, benchmarks/toyworld_effects.yaml). The benchmarks,
    which time named methods, compare no method's name."""
    import ast
    import re

    names, labels = _method_names_and_labels()
    assert {"datadream", "issynth", "DataDream-dset", "DataDream-cls", "IsSynth", "DISEF"} <= names | labels
    segment = re.compile(rf"(^|/)({'|'.join(map(re.escape, names))})(/|$)")
    offenders = []
    for path in sorted((ROOT / "datadream_lib").rglob("*.py")):
        where = str(path.relative_to(ROOT))
        if "methods" in path.relative_to(ROOT).parts:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if (node.value in names | labels or segment.search(node.value)) and (where, node.value) not in NOT_A_METHOD:
                    offenders.append(f"{where}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders
    assert segment.search("top1/datadream/synthetic") and not segment.search("datadream_lib/methods")

    comparison = re.compile(rf"""(==|!=|\bin)\s*[\(\[{{]?\s*["']({'|'.join(names)})["']|["']({'|'.join(names)})["']\s*(==|!=|\bin\b)|synth_method\s*(==|!=|\bin\b)""")
    benchmarks = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "benchmarks").glob("*.py"))
                  for i, line in enumerate(p.read_text().splitlines(), 1) if comparison.search(line)]
    assert not benchmarks, benchmarks


def test_no_module_outside_the_stage_table_special_cases_a_stage():
    """What a stage reads, its parts and damage checks are the stage table's (`stages.py`): no other
    module compares a stage with a stage's name."""
    import re

    from datadream_lib import stages

    names = "|".join(stages.NAMES)
    pattern = re.compile(rf"""stage\s*(==|!=|\bin\b)\s*[\(\[{{]?\s*["']({names})["']|["']({names})["']\s*(==|!=)\s*\w*stage\b""")
    files = [p for p in (ROOT / "datadream_lib").rglob("*.py") if p.name != "stages.py"]
    offenders = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
    assert pattern.search('    if stage == "synthesis":') and pattern.search("elif unit.stage in ('fid', 'ablations')")


def test_every_stage_names_a_function_and_a_damage_check_that_exist():
    from datadream_lib import stages

    for stage in stages.STAGES:
        assert callable(stage.load()) and callable(stages._resolve(stage.damage)), stage.name
        assert (ROOT / "notebooks" / stage.notebook).is_file(), stage.notebook
