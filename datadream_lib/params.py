"""Reading a run's parameters: from a dict, a YAML file, a notebook's namespace or a command line,
over a base (`paper`, `demo`, `toyworld`, or another parameter file), into one validated `Params`.

The schema (every parameter of the run, with the paper defaults) is `schema.py`; each generation
method's own parameters are its group, in its module (`Method.parameters`). This module joins them:
it hands `schema.build` the registry's groups. Unset names take the values of the base:

    base: paper   the defaults (Stable Diffusion 2.1-base, CLIP ViT-B/16, 500 images)
    base: demo    the tiny offline default: random tiny models of the same classes, the toy dataset
    base: toyworld  the miniature world: tiny models pretrained on it, its few-shot target (make demo)
    base: smoke   the demo, smaller: the smallest run through every stage of any method (the tests' size)

A parameter file may also name another file as its base (`base: ../datasets/eurosat.yaml`, relative
to itself) and list several seeds (`seeds: [0, 1, 2]`); `load_runs` expands it into one run per
seed. A grid file (`grid:`, `cells:`; `grid_cells`) is datasets x methods x ... of such runs
(params/paper/table1.yaml); an override naming one of its axes picks cells. `run_name` may hold any parameter in braces (`eurosat_dset_seed{seed}`). A base's values serve
every method: a value of another method's group in a base is dropped, while one given by hand (in the
file itself, with `--set`, or `-p`) is refused with the method it belongs to.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
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
    raise DataDreamError(f"parameter 'base': {name!r} is neither one of {list(BASES)} nor a parameter file: {where}. "
                         f"Give its path from the project root, e.g. 'params/paper/{given.name}'.")


def from_dict(values: dict, base: Optional[str] = None) -> Params:
    """Validate `values` (given by hand) over the values of `base` (or of values['base'], else
    'paper'). A base that names a parameter file (`../datasets/eurosat.yaml`) takes that file's
    values (and its own base's) first."""
    values = dict(values)
    if "grid" in values or "cells" in values:
        raise DataDreamError("these parameters are a grid of runs ('grid'/'cells'), not one run: run them with "
                             "`python -m datadream_lib.pipeline FILE` or the launcher, or write one run's values with "
                             "`python -m datadream_lib.params FILE --set dataset=... --set seed=N > run.yaml`.")
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
    if unused:  # e.g. a DISEF file over a DataDream file's `variant`: said once, on stderr (stdout may be YAML)
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
    """The runs a parameter file describes: one per seed of `seeds` (in it or its bases), else one;
    a grid file's, one per cell and seed (`runs_of`). An override of `seed` replaces the file's `seeds`."""
    return [p for _, p in runs_of(path, overrides)]


def runs_of(path: str | Path, overrides: Optional[dict] = None) -> list[tuple[dict, Params]]:
    """(cell, Params) of every run a parameter file describes. A grid file's cell is {axis: name}
    (the `--set axis=name` overrides that pick it); a plain file's is {}."""
    overrides = dict(overrides or {})
    own = _grid_values(path)
    if "grid" not in own:
        if "cells" in own:
            raise DataDreamError(f"{path} has 'cells' but no 'grid'; 'cells' sets values in some cells of a grid.")
        return [({}, p) for p in _seed_runs(own, overrides, str(path))]
    out, names = [], {}
    for cell, values in grid_cells(path, own, overrides):
        where = f"{path} [{', '.join(f'{a}={n}' for a, n in cell.items())}]"
        for p in _seed_runs(values, {k: v for k, v in overrides.items() if k not in cell}, where):
            if p.run_name in names:
                raise DataDreamError(f"{where} and {names[p.run_name]} both name the run {p.run_name!r}; put every "
                                     f"axis of the grid in run_name, e.g. '{{dataset}}_{{method}}_seed{{seed}}'.")
            names[p.run_name] = where
            out.append((cell, p))
    return out


def _grid_values(path: str | Path) -> dict:
    """A file's own values, its `base` an absolute path; a file whose base is a grid file takes the
    base's values (its grid and cells too) under its own: an axis it lists that the base's grid has
    picks those cells of it (Fig. 5's `grid: {dataset: [fgvc_aircraft], method: [dset, cls]}`)."""
    own = _own_values(path)
    base = own.get("base")
    if not (isinstance(base, str) and base.endswith((".yaml", ".yml")) and Path(base).is_file()
            and "grid" in read_file(base, own=True)):
        return own
    parent = _grid_values(base)
    grid = dict(parent["grid"])
    mine = own.pop("grid", {})
    if not isinstance(mine, dict):
        raise DataDreamError(f"{path}: 'grid' must map each axis to its cells, e.g. grid: {{dataset: [eurosat, dtd]}}.")
    for axis, spec in mine.items():
        if axis in grid and isinstance(spec, list):  # pick cells of the base's axis
            named = isinstance(grid[axis], dict)
            picked = _pick(grid[axis] if named else {str(v): v for v in grid[axis]}, spec, axis, f"{path} (over {base})")
            grid[axis] = picked if named else list(picked.values())
        else:
            grid[axis] = spec
    own.pop("base")
    return {**parent, **own, "grid": grid, "cells": [*parent.get("cells", []), *own.get("cells", [])]}


def _seed_runs(values: dict, overrides: dict, where: str) -> list[Params]:
    """The runs of one file's (or one grid cell's) own values, `base` an absolute path or a name:
    one per seed of `seeds` (in them or their bases), else one."""
    values = {**values, **overrides}
    base = values.get("base")
    inherited = read_file(base) if isinstance(base, str) and base.endswith((".yaml", ".yml")) else {}
    seeds = None if "seed" in overrides else {**inherited, **values}.get("seeds")
    values.pop("seeds", None)
    if seeds is None:
        return [from_dict(values)]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise DataDreamError(f"parameter 'seeds' must be a non-empty list of integers, got {seeds!r}.")
    if "seed" in {**inherited, **values}:
        raise DataDreamError(f"{where} sets both 'seed' and 'seeds'; keep one.")
    runs = [from_dict({**values, "seed": s}) for s in seeds]
    if len({p.run_name for p in runs}) < len(runs):
        raise DataDreamError(f"run_name {values.get('run_name', inherited.get('run_name'))!r} of {where} is the same for "
                             f"every seed of {seeds}; put '{{seed}}' in it (e.g. 'eurosat_dset_seed{{seed}}').")
    return runs


def grid_cells(path: str | Path, own: dict, overrides: dict) -> list[tuple[dict, dict]]:
    """The cells of a grid file: ({axis: name}, the cell's own values), in the grid's order.

    `grid` maps each axis to its cells: a list of values of the parameter the axis is named after
    (`dataset: [eurosat, dtd]`), or a mapping {name: the values it sets} (`method: {dset: {variant:
    dset}, disef: {synth_method: disef}}`). A cell's values are the file's, then each axis cell's,
    then those of every `cells` entry whose `where` matches it ({axis: name or [names]}: `set`).
    `{axis}` in `base` and `run_name` is the cell's name on that axis (`base: ../datasets/{dataset}.yaml`).
    An override naming an axis picks its cells (`--set dataset=eurosat`, `--set 'method=[dset, cls]'`)."""
    path = Path(path)
    own = dict(own)
    grid, rules = own.pop("grid"), own.pop("cells", [])
    if not isinstance(grid, dict) or not grid:
        raise DataDreamError(f"{path}: 'grid' must map each axis to its cells, e.g. grid: {{dataset: [eurosat, dtd]}}.")
    axes: dict[str, dict[str, dict]] = {}
    for axis, spec in grid.items():
        if isinstance(spec, list) and spec:
            if not _is_parameter(axis):
                raise DataDreamError(f"{path}: grid axis '{axis}' lists values, so it must be a parameter.{_nearest(axis, FIELDS)} "
                                     f"An axis of named cells maps each name to the values it sets: {axis}: {{name: {{parameter: value}}}}.")
            axes[axis] = {str(v): {axis: v} for v in spec}
        elif isinstance(spec, dict) and spec and all(isinstance(v, dict) for v in spec.values()):
            axes[axis] = {str(name): dict(v) for name, v in spec.items()}
        else:
            raise DataDreamError(f"{path}: grid axis '{axis}' must be a non-empty list of values or a mapping "
                                 f"{{name: {{parameter: value}}}}, got {spec!r}.")
        if axis in overrides:  # picks cells of the axis
            axes[axis] = _pick(axes[axis], overrides[axis], axis, f"--set {axis}={overrides[axis]} ({path})")
    if not isinstance(rules, list) or not all(isinstance(r, dict) and set(r) == {"where", "set"} and isinstance(r["where"], dict)
                                              and isinstance(r["set"], dict) for r in rules):
        raise DataDreamError(f"{path}: 'cells' must be a list of {{where: {{axis: name}}, set: {{parameter: value}}}}.")
    for rule in rules:
        for axis in rule["where"]:
            if axis not in grid:
                raise DataDreamError(f"{path}: a 'cells' entry names the axis '{axis}', which the grid lacks; its axes are {list(grid)}.")
    out = []
    for combination in itertools.product(*(axes[a].items() for a in axes)):
        cell = {axis: name for axis, (name, _) in zip(axes, combination)}
        values = dict(own)
        for _, cell_values in combination:
            values.update(cell_values)
        for rule in rules:
            if all(cell[a] in (w if isinstance(w, list) else [w]) for a, w in rule["where"].items()):
                values.update(rule["set"])
        for key in ("base", "run_name"):
            if isinstance(values.get(key), str):
                values[key] = re.sub(r"(?<!\{)\{(\w+)\}(?!\})", lambda m: cell.get(m.group(1), m.group(0)), values[key])
        if isinstance(values.get("base"), str) and values["base"].endswith((".yaml", ".yml")):
            values["base"] = str((path.parent / values["base"]).resolve())
        out.append((cell, values))
    return out


def _pick(cells: dict, wanted, axis: str, where: str) -> dict:
    """The cells of an axis named in `wanted` (a name or a list of names), in its order; a name that
    is not a cell is refused, naming the cells."""
    wanted = [str(w) for w in (wanted if isinstance(wanted, list) else [wanted])]
    unknown = [w for w in wanted if w not in cells]
    if unknown:
        raise DataDreamError(f"{where}: {unknown} is not a cell of the grid's axis '{axis}'; its cells are "
                             f"{list(cells)}.{_nearest(unknown[0], cells)}")
    return {w: cells[w] for w in wanted}


def _is_parameter(name: str) -> bool:
    return name in FIELDS or any(name in schema.group_fields(g) for g in groups().values())


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
    values = _plain_values(namespace)
    if "grid" in namespace:  # a grid file given to papermill -f: refused by from_dict, naming what to do
        values["grid"] = namespace["grid"]
    return from_dict(values)


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
    parser.add_argument("params", nargs="?", help="a parameter file, e.g. params/demo.yaml or params/paper/table1.yaml (a grid)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--list", action="store_true", help="list every parameter with its default and help")
    parser.add_argument("--method", help="with --list: only this method's group")
    args = parser.parse_args(argv)
    try:
        if args.list or not args.params:
            print(describe_parameters(args.method))
            return 0
        todo = runs_of(args.params, parse_overrides(args.overrides))
        for cell, p in todo:
            if len(todo) > 1:
                where = "".join(f"{axis} {name}, " for axis, name in cell.items())
                print(f"# {where}seed {p.seed}: run folder {p.runs_root}/{p.run_name}")
            print(dump(p), end="---\n" if len(todo) > 1 else "")
    except DataDreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
