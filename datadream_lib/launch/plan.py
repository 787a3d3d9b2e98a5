"""The plan: every run that parameter files (or a runs_root) describe, cut into units along the stage
graph (`stages.py`: each stage's parts, and what each part waits for)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import yaml

from datadream_lib import datasets, methods, params, runs, stages, weights
from datadream_lib.errors import DataDreamError
from datadream_lib.launch.records import PLAN_FILE, read_plan_file
from datadream_lib.launch.unit import LAUNCH_DIR, Unit


def _set(key: str, value) -> list[str]:
    return ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]


def plan_units(files: list[str], overrides: Optional[dict] = None, shards: int = 1) -> list[Unit]:
    """The units of every run the files describe, in dependency order. Files that name one run folder
    with the same parameters are one run, planned once with their stages together (Fig. 5's preset
    adds the ablations to its Table 1 run); two different runs that would share a folder are refused
    before anything is started."""
    overrides = dict(overrides or {})
    todo, folders = [], {}
    for file in files:
        for cell, p in params.runs_of(file, overrides):
            folder = runs.run_dir(p)
            if folder in folders:
                index = folders[folder]
                earlier_file, earlier_cell, earlier = todo[index]
                differ = [k for k, v in p.identity().items() if earlier.identity().get(k) != v]
                if differ:
                    raise DataDreamError(
                        f"{file} (seed {p.seed}) and {earlier_file} (seed {earlier.seed}) would share the run folder "
                        f"{folder} with other parameters ({', '.join(differ[:4])}): give them different run_name values "
                        f"(e.g. with '{{seed}}', '{{synth_method}}' or '{{dataset}}' in it). Nothing was started.")
                together = [s for s in stages.NAMES if s in earlier.stages or s in p.stages]  # the same run: its stages together
                todo[index] = (*((file, cell) if set(p.stages) >= set(earlier.stages) else (earlier_file, earlier_cell)),
                               earlier.replace(stages=together))
                continue
            folders[folder] = len(todo)
            todo.append((file, cell, p))
    units: list[Unit] = []
    roots = []
    for file, cell, p in todo:
        root = runs.project_path(p.runs_root)
        roots.append(root)
        picks = [arg for axis, name in cell.items() for arg in _set(axis, name)]  # its cell of a grid file
        rest = [arg for key, value in overrides.items() if key not in cell for arg in _set(key, value)]
        base = ("datadream_lib.pipeline", str(file), *rest, *picks, *_set("seed", p.seed))
        method = methods.METHODS[p.synth_method]
        n_classes = datasets.DATASETS[p.dataset].num_classes or 10
        cost = method.cost(p, n_classes, p.images_per_class)
        work = stages.Work(cost.adapt_samples, cost.unet_passes, n_classes)
        planned: list[tuple[stages.Stage, stages.Part, Unit]] = []  # this run's, in the graph's order
        for stage in (s for s in stages.STAGES if s.name in p.stages):
            for part in stage.parts(p, method, shards, work):
                reads = stages.part_reads(stage, part, p, method)  # once per part, not per pair of units
                after = [unit.id for earlier, earlier_part, unit in planned
                         if stages.waits_for(reads, part, earlier, earlier_part)]
                selectors = [arg for key, value in part.selectors.items() for arg in _set(key, value)]
                unit = Unit(p.run_name, root, stage.name, part.name, (*base, *_set("stages", [stage.name]), *selectors),
                            tuple(after), part.weight)
                planned.append((stage, part, unit))
        units += [unit for _, _, unit in planned]
    if units:
        first = sorted(set(roots))
        out = first[0] / LAUNCH_DIR / "06_paper_results.ipynb"
        collect = ("papermill", str(runs.project_root() / "notebooks" / "06_paper_results.ipynb"), str(out),
                   "-y", yaml.safe_dump({"run_roots": [str(r) for r in first], "out_dir": str(first[0] / "figures")},
                                        default_flow_style=True).strip(), "--log-level", "WARNING")
        units.append(Unit("", first[0], "collect", "", collect, tuple(u.id for u in units), 1))
    return units


def units_of(targets: list[str], overrides: dict, shards: int) -> list[Unit]:
    """The units of parameter files, or of a runs_root: those its launches planned
    (.launch/plan.json), else one per stage of every run folder's params.yaml."""
    files, units, records = [], [], []
    for target in targets:
        path = Path(target)
        if path.is_dir() or not path.suffix:  # a runs_root (or one not made yet)
            planned = read_plan_file(path / LAUNCH_DIR / PLAN_FILE)
            planned_runs = set()
            if planned:
                units += [Unit(u["run"], Path(u["root"]), u["stage"], u["part"], tuple(u["args"]), tuple(u["after"]),
                               u["weight"]) for u in planned]
                planned_runs = {u["run"] for u in planned}
            # and the runs made without the launcher (`python -m datadream_lib.pipeline`, papermill)
            records += [r for r in sorted(path.glob(f"*/{runs.PARAMS_FILE}")) if r.parent.name not in planned_runs]
        else:
            files.append(target)
    for record in records:  # a run's own params.yaml; one from before Nov. 2025 may name a withdrawn model id
        values = yaml.safe_load(record.read_text())
        units += plan_units([str(record)], {**weights.mirrored(values if isinstance(values, dict) else {}), **overrides}, shards)
    return units + (plan_units(files, overrides, shards) if files else [])
