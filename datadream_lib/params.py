"""Reading a run's parameters: from a dict, a YAML file, a notebook's namespace or a command line,
over a base (`paper`, `demo`, `toyworld`, or another parameter file), into one validated `Params`.

The schema (every parameter of the run, with the paper defaults) is `schema.py`; each generation
method's own parameters are its group, in its module (`Method.parameters`). This module joins them:
it hands `schema.build` the registry's groups. Unset names take the values of the base:

    base: paper   the defaults (Stable Diffusion 2.1-base, CLIP ViT-B/16, 500 images)
    base: demo    the tiny offline default: random tiny models of the same classes, the toy dataset
    base: toyworld  the miniature world: tiny models pretrained on it, its few-shot target (make demo)

A parameter file may also name another file as its base (`base: fgvc_aircraft_dset.yaml`, relative
to itself) and list several seeds (`seeds: [0, 1, 2]`); `load_runs` expands it into one run per
seed. `run_name` may hold any parameter in braces (`eurosat_dset_seed{seed}`). A base's values serve
every method: a value of another method's group in a base is dropped, while one given by hand (in the
file itself, with `--set`, or `-p`) is refused with the method it belongs to.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional

import yaml

from datadream_lib import schema
from datadream_lib.errors import DataDreamError
from datadream_lib.schema import (BASES, CLASS_NAMES, CLASSIFIER_SETTINGS, DEMO, FID_FEATURES, FID_REAL_SETS,  # noqa: F401
                                  FIELDS, MODEL_PRESETS, PRECISIONS, SYNTH_BATCH_MAX, SYNTHETIC_SETTINGS, Params,
                                  _nearest)

# Names a notebook's namespace holds that are not parameters.
_NOTEBOOK_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def groups() -> dict[str, type]:
    """{method name: its parameter group}, from the registry."""
    from datadream_lib.methods import METHODS

    return {name: method.parameters for name, method in METHODS.items()}


def find_params_file(name: str) -> Path:
    """A parameter file named as a `base`: a path as given (absolute, or from the project root), else
    the one file of that name under params/ (papermill's `-f` does not say where a file came from)."""
    from datadream_lib.runs import project_root

    given = Path(name).expanduser()
    root = project_root()
    for candidate in ([given] if given.is_absolute() else [root / given, root / "params" / given]):
        if candidate.is_file():
            return candidate
    found = sorted((root / "params").rglob(given.name))
    if len(found) == 1:
        return found[0]
    where = f"several files under params/ are named {given.name}: {[str(f) for f in found]}" if found else \
        f"no file of that name is under {root / 'params'}"
    raise DataDreamError(f"parameter 'base': {name!r} is neither 'paper', 'demo', 'toyworld' nor a parameter file: {where}. "
                         f"Give its path from the project root, e.g. 'params/paper/{given.name}'.")


def from_dict(values: dict, base: Optional[str] = None) -> Params:
    """Validate `values` (given by hand) over the values of `base` (or of values['base'], else
    'paper'). A base that names a parameter file (`fgvc_aircraft_dset.yaml`) takes that file's
    values (and its own base's) first."""
    values = dict(values)
    base = values.pop("base", base) or "paper"
    inherited: dict = {}
    base_file = None
    if isinstance(base, str) and base.endswith((".yaml", ".yml")):
        base_file = base
        inherited = read_file(find_params_file(base))
        if "seed" in values:
            inherited.pop("seeds", None)
        base = inherited.pop("base", None) or "paper"
    seeds = values.pop("seeds", inherited.pop("seeds", None))
    if seeds is not None and "seed" not in values:
        raise DataDreamError(f"the parameters list seeds {seeds}, and a notebook runs one seed: pass `-p seed N`, or run "
                             f"all seeds with `python -m datadream_lib.pipeline FILE`.")
    if base not in BASES:
        raise DataDreamError(f"parameter 'base': {base!r} is not one of {list(BASES)}.{_nearest(str(base), BASES)}")
    p = schema.build(values, {**BASES[base], **inherited}, groups(), base)
    unused = sorted(key for key in inherited if not p.has(key))
    if unused:  # e.g. eurosat_disef.yaml over eurosat_dset.yaml's `variant`: said once, on stderr (stdout may be YAML)
        print(f"[params] {base_file} sets {', '.join(unused)}, which synth_method {p.synth_method!r} does not have; "
              f"not used by this run.", file=sys.stderr)
    return p


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DataDreamError(f"parameter '{key}' is set twice (line {key_node.start_mark.line + 1}); keep one.")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_file(path: str | Path, _chain: tuple = (), own: bool = False) -> dict:
    """The raw values of a YAML parameter file, over those of the file it names as `base` (`own`:
    the file's values alone, its `base` as written)."""
    path = Path(path)
    if path.is_dir():
        raise DataDreamError(f"parameter file {str(path)!r} is a folder; give a .yaml file, e.g. params/demo.yaml.")
    if not path.is_file():
        raise DataDreamError(f"parameter file {str(path)!r} does not exist; the files shipped are under params/.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataDreamError(f"parameter file {str(path)!r} is not a text file; give a YAML file of name: value lines.") from None
    try:
        values = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise DataDreamError(f"parameter file {str(path)!r} is not valid YAML: {exc}") from None
    except DataDreamError as exc:
        raise DataDreamError(f"parameter file {str(path)!r}: {exc}") from None
    if not isinstance(values, dict):
        raise DataDreamError(f"parameter file {str(path)!r} must hold a mapping of name: value.")
    base = values.get("base")
    if not own and isinstance(base, str) and base.endswith((".yaml", ".yml")):
        parent = (path.parent / base).resolve()
        if parent in _chain:
            raise DataDreamError(f"parameter file {path} names itself as a base, through {[str(p) for p in _chain]}.")
        values = {**read_file(parent, (*_chain, path.resolve())), **{k: v for k, v in values.items() if k != "base"}}
    return values


def _own_values(path: str | Path) -> dict:
    """A file's own values, its `base` (a file) as an absolute path: the values it gives by hand."""
    path = Path(path)
    values = read_file(path, own=True)
    base = values.get("base")
    if isinstance(base, str) and base.endswith((".yaml", ".yml")):
        values["base"] = str((path.parent / base).resolve())
    return values


def load_runs(path: str | Path, overrides: Optional[dict] = None) -> list[Params]:
    """The runs a parameter file describes: one per seed of `seeds` (in it or its bases), else one.
    An override of `seed` replaces the file's `seeds`."""
    overrides = dict(overrides or {})
    values = {**_own_values(path), **overrides}
    seeds = None if "seed" in overrides else {**read_file(path), **overrides}.get("seeds")
    values.pop("seeds", None)
    if seeds is None:
        return [from_dict(values)]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise DataDreamError(f"parameter 'seeds' must be a non-empty list of integers, got {seeds!r}.")
    if "seed" in read_file(path):
        raise DataDreamError(f"{path} sets both 'seed' and 'seeds'; keep one.")
    runs = [from_dict({**values, "seed": s}) for s in seeds]
    if len({p.run_name for p in runs}) < len(runs):
        raise DataDreamError(f"run_name {read_file(path).get('run_name')!r} is the same for every seed of {seeds}; put "
                             f"'{{seed}}' in it (e.g. 'eurosat_dset_seed{{seed}}').")
    return runs


def load_file(path: str | Path, overrides: Optional[dict] = None) -> Params:
    """Read a YAML parameter file of one run (and command-line overrides) into validated Params."""
    runs = load_runs(path, overrides)
    if len(runs) > 1:
        raise DataDreamError(f"{path} describes {len(runs)} runs (seeds); pick one with the override seed=N.")
    return runs[0]


def from_namespace(namespace: dict) -> Params:
    """Params from a notebook's globals after the `parameters` cell (and papermill's injected one).

    Every public name holding a plain value (str, number, bool, list, None) must be a parameter
    (or `base`): a typo in a papermill `-p` or `-f` key stops here, naming the nearest valid one.
    Objects the notebook makes later (Params, Run, tables, figures) are not plain and are ignored,
    so re-running a notebook's cells in JupyterLab works.
    """
    return from_dict(_plain_values(namespace))


def _plain_values(namespace: dict) -> dict:
    return {name: value for name, value in namespace.items()
            if not name.startswith("_") and name not in _NOTEBOOK_NAMES
            and isinstance(value, (str, int, float, bool, list, tuple, type(None)))}


def notebook_values(namespace: dict, allowed: dict) -> dict:
    """The parameters of a notebook that is not a pipeline stage: `allowed` maps each name to its
    default; any other plain name (a typo in `-p`) stops, naming the nearest valid one."""
    values = _plain_values(namespace)
    for key in values:
        if key not in allowed:
            raise DataDreamError(f"unknown parameter '{key}'.{_nearest(key, allowed)} This notebook takes {sorted(allowed)}.")
    return {**allowed, **values}


def dump(params: Params) -> str:
    return params.to_yaml()


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise DataDreamError(f"--set {pair!r}: write KEY=VALUE, e.g. --set shard_index=1.")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise DataDreamError(f"--set {pair!r}: {value!r} is not a YAML value; write e.g. --set shots=4, "
                                 f"--set 'ablation_shots=[1, 2]' or --set run_name=my_run.") from None
    return out


def describe_parameters(method: Optional[str] = None) -> str:
    """Every parameter of a run (and of each method's group, or of `method`'s): name, paper default,
    help; a YAML comment block a person reads."""
    lines = ["# the run's own parameters (datadream_lib/schema.py)"]
    for name, f in schema.FIELDS.items():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"{name}: {yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip()}"
                     f"  # {f.metadata['help']}")
    for owner, group in groups().items():
        if method not in (None, owner):
            continue
        lines.append(f"\n# synth_method: {owner} (its group: {group.__module__})")
        for name, f in schema.group_fields(group).items():
            by_shots = f.metadata.get("by_shots")
            default = "by K" if by_shots else (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            lines.append(f"{name}: {yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip()}"
                         f"  # {f.metadata['help']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """`python -m datadream_lib.params FILE [--set K=V ...]`: the values each run of a parameter file
    resolves to (its bases, its method's defaults, the overrides), as params.yaml would record them;
    `python -m datadream_lib.params --list [--method NAME]`: every parameter with its default and help."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m datadream_lib.params", description=main.__doc__)
    parser.add_argument("params", nargs="?", help="a parameter file, e.g. params/paper/eurosat_dset.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--list", action="store_true", help="list every parameter with its default and help")
    parser.add_argument("--method", help="with --list: only this method's group")
    args = parser.parse_args(argv)
    try:
        if args.list or not args.params:
            print(describe_parameters(args.method))
            return 0
        todo = load_runs(args.params, parse_overrides(args.overrides))
        for p in todo:
            if len(todo) > 1:
                print(f"# seed {p.seed}: run folder {p.runs_root}/{p.run_name}")
            print(dump(p), end="---\n" if len(todo) > 1 else "")
    except DataDreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
