"""Scale-out: a grid of runs as units of one-GPU work, on a SLURM cluster or on the GPUs of one node.

    python -m datadream_lib.launch plan   PARAMS... [--shards N] [--set KEY=VALUE ...]
    python -m datadream_lib.launch local  PARAMS... --gpus all|0,1,3 [--shards N]
    python -m datadream_lib.launch slurm  PARAMS... [--dry-run] [--partition P] [--time 1-00:00:00] ...
    python -m datadream_lib.launch status PARAMS...|RUNS_ROOT

PARAMS are parameter files, each one run, one per seed (`seeds`), or a grid of them
(`params/paper/table1.yaml`: datasets x methods x seeds; a unit names its cell, `--set dataset=eurosat
--set method=dset --set seed=0`). Each run is cut into units, the parts of its stages as the stage
table (`stages.py`) declares them, each the pipeline command with a selector, which can be copied
and run by hand:

    adaptation      one unit; a per-class preparation (cls adapters, DA-Fusion's tokens, DISEF's
                    captions) `--shards` units of classes (`shard_index` / `num_shards`)
    synthesis       `--shards` units (`shard_index` / `num_shards`)
    classification  one unit per setting (`clf_select`)
    fid             one unit
    ablations       one unit per cell of Fig. 5's grids (`ablation_select`: n<images>, k<shots>; a
                    shots cell is a sub-run: preparation, synthesis, classifiers), then one that
                    gathers the table
    collect         notebook 06 over the runs' roots (Table 1 and the figures), after every run

A unit waits for the units of its run whose outputs it reads (the stage table's `reads`: what the
pipeline also requires of a plan), and for those it cannot run beside, because one of the two holds
the whole run folder (`stages.waits_for`): a synthesis shard waits for the adaptation, a
`real_finetune` classifier for nothing it does not share a lock with, FID for every earlier unit.

Selectors never change a run's identity; every unit writes its own executed notebook
(`notebooks/02_synthesis.shard-001-of-004.ipynb`) and takes its own lock, so the units of one stage
run side by side. A unit resumes from its outputs, so one stopped by Ctrl-C, kill -9, a time limit or
a preemption goes on when started again. Units record their exit status and log under
`<runs_root>/.launch/` (never a run folder's name: those cannot be hidden), which `status` reads.

No DDP: every unit fits one GPU (LoRA at batch 8, CLIP at 64); the grid's width comes from runs,
shards and settings, not from splitting one model over GPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import yaml

from datadream_lib import catalog, datasets, files, locks, methods, params, runs, stages, weights
from datadream_lib.errors import DataDreamError

LAUNCH_DIR = ".launch"  # under runs_root; a run_name cannot start with '.'
STAGE_ORDER = (*stages.NAMES, "collect")  # collect: notebook 06 over the grid's runs, after every unit


@dataclasses.dataclass(frozen=True)
class Unit:
    """One GPU's work: a stage of a run, or a part of it (a shard, a classifier setting)."""
    run: str  # run_name ("" for collect)
    root: Path  # runs_root
    stage: str
    part: str  # "" for the whole stage
    args: tuple  # after `python -m`: the module and its arguments
    after: tuple  # ids of the units it waits for
    weight: float  # an estimate of its GPU time, for longest-first order

    @property
    def id(self) -> str:
        return "/".join(x for x in (self.run or "collect", self.stage if self.run else "", self.part) if x)

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", *self.args]

    def shell(self, python: str = "python") -> str:
        """The command as a shell line, every word quoted: a run name or path is data, never code."""
        return shlex.join(self.command(python))

    @property
    def record(self) -> Path:
        """Where the unit's exit status is written (by the local runner or the SLURM task)."""
        return self.root / LAUNCH_DIR / "units" / f"{self.id.replace('/', '~')}.json"

    @property
    def log(self) -> Path:
        return self.root / LAUNCH_DIR / "logs" / f"{self.id.replace('/', '~')}.log"


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


# --- what each unit has done ----------------------------------------------------------------------

def write_record(unit: Unit, **info) -> None:
    """The unit's record, updated: what it ran, where, and how it ended."""
    files.write_json(unit.record, {**read_record(unit), "unit": unit.id, "command": unit.shell(), "log": str(unit.log), **info})


def read_record(unit: Unit) -> dict:
    try:
        return json.loads(unit.record.read_text())
    except (OSError, ValueError):
        return {}


def unit_done(unit: Unit) -> bool:
    """Done: its stage's marker exists (every part done), or its record says exit status 0."""
    if unit.stage != "collect" and runs.stage_done(unit.root / unit.run, unit.stage):
        return True
    return read_record(unit).get("returncode") == 0


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


# --- one node, N GPUs -----------------------------------------------------------------------------

def visible_gpus(spec: str) -> list[str]:
    """`all` (every GPU torch sees, or CUDA_VISIBLE_DEVICES's) or a list such as `0,1,3`."""
    if spec != "all":
        return [g.strip() for g in spec.split(",") if g.strip()]
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g]
    import torch

    count = torch.cuda.device_count()
    if not count:
        raise DataDreamError("--gpus all: no CUDA GPU is visible; name them (--gpus 0,1), or run on a GPU node.")
    return [str(i) for i in range(count)]


def run_local(units: list[Unit], gpus: list[str], poll: float = 0.5, env: Optional[dict] = None) -> int:
    """Run the units, one process per GPU (`CUDA_VISIBLE_DEVICES`), each as soon as what it waits for
    is done, longest first. A unit already done is skipped; a failed one stops its dependents (the
    others go on). Ctrl-C stops the running units (they resume when started again). Returns the
    number of units that failed or could not run."""
    done = {u.id for u in units if unit_done(u)}
    failed: set[str] = set()
    waiting = sorted((u for u in units if u.id not in done), key=lambda u: (-u.weight, STAGE_ORDER.index(u.stage)))
    free, running = list(gpus), {}
    try:
        while waiting or running:
            for unit in [u for u in waiting if set(u.after) & failed]:
                waiting.remove(unit)
                failed.add(unit.id)
                print(f"[launch] {unit.id}: not started, it waits for a unit that failed", flush=True)
            for unit in [u for u in waiting if set(u.after) <= done]:
                if not free:
                    break
                gpu = free.pop(0)
                waiting.remove(unit)
                unit.log.parent.mkdir(parents=True, exist_ok=True)
                handle = open(unit.log, "a")
                handle.write(f"\n[launch] {time.strftime('%Y-%m-%d %H:%M:%S')} {unit.shell()} (GPU {gpu})\n")
                handle.flush()
                child_env = {**(env or os.environ), "CUDA_VISIBLE_DEVICES": gpu}
                for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the node's cores shared out, unless set
                    child_env.setdefault(name, str(max(1, (os.cpu_count() or 1) // len(gpus))))
                child_env.pop(locks.ENV, None)
                proc = subprocess.Popen(unit.command(), stdout=handle, stderr=subprocess.STDOUT, env=child_env,
                                        cwd=runs.project_root())  # in the launcher's process group: Ctrl-C stops it too
                write_record(unit, state="running", host=os.uname().nodename, pid=proc.pid, gpu=gpu,
                             started=time.strftime("%Y-%m-%d %H:%M:%S"))
                running[proc] = (unit, gpu, handle)
                print(f"[launch] {unit.id}: started on GPU {gpu} (pid {proc.pid})", flush=True)
            if not running:
                if waiting:  # nothing can start: what they wait for is not in this plan and not done
                    for unit in waiting:
                        failed.add(unit.id)
                        print(f"[launch] {unit.id}: cannot start, it waits for {sorted(set(unit.after) - done)}")
                    waiting = []
                break
            time.sleep(poll)
            for proc in [proc for proc in running if proc.poll() is not None]:
                unit, gpu, handle = running.pop(proc)
                handle.close()
                free.append(gpu)
                write_record(unit, state="done" if proc.returncode == 0 else "failed", returncode=proc.returncode,
                             finished=time.strftime("%Y-%m-%d %H:%M:%S"), last_line=_last_line(unit.log))
                (done if proc.returncode == 0 else failed).add(unit.id)
                print(f"[launch] {unit.id}: " + ("done" if proc.returncode == 0 else
                                                  f"failed (exit {proc.returncode}; {unit.log})"), flush=True)
    except KeyboardInterrupt:
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc, (unit, _, handle) in running.items():
            proc.wait()
            handle.close()
            write_record(unit, state="stopped", returncode=None, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        print("[launch] stopped; the same command goes on from the units' outputs", flush=True)
        raise
    return len(failed)


# --- SLURM ----------------------------------------------------------------------------------------

RESOURCES = ("partition", "time", "gpus", "cpus_per_task", "mem", "account", "sbatch")
REQUEUE_SIGNAL_SECONDS = 180  # the signal before the time limit (SLURM may send it up to 60 s early)


def sbatch_script(units: list[Unit], name: str, resources: dict, after: Optional[str], python: str, log_dir: Path) -> str:
    """A job array of `units` (one task each) as a readable sbatch script. Each task runs its unit's
    pipeline command in the background; on the time-limit signal (or a preemption's) it stops the
    unit and requeues itself; the resume picks up from the unit's outputs."""
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --array=0-{len(units) - 1}",
             f"#SBATCH --output={log_dir}/%x-%A_%a.log", "#SBATCH --open-mode=append", "#SBATCH --requeue",
             f"#SBATCH --signal=B:USR1@{REQUEUE_SIGNAL_SECONDS}", "#SBATCH --ntasks=1"]
    if resources.get("gpus"):
        lines.append(f"#SBATCH --gres=gpu:{resources['gpus']}")
    for key, flag in (("partition", "partition"), ("time", "time"), ("cpus_per_task", "cpus-per-task"),
                      ("mem", "mem"), ("account", "account")):
        if resources.get(key):
            lines.append(f"#SBATCH --{flag}={resources[key]}")
    for extra in resources.get("sbatch") or []:
        lines.append(f"#SBATCH {extra}")
    if after:
        lines += [f"#SBATCH --dependency=afterok:{after}", "#SBATCH --kill-on-invalid-dep=yes"]
    lines += ["", "# One unit per array task; each is the pipeline command with a selector, to be run by hand too.",
              "UNITS=("]
    lines += [f"  {shlex.quote(unit.shell(python))}" for unit in units]
    lines += [")", "RECORDS=("] + [f"  {shlex.quote(str(unit.record))}" for unit in units] + [")"]
    lines += ["LOGS=("] + [f"  {shlex.quote(str(unit.log))}" for unit in units] + [")", ""]
    lines += [
        f"cd {shlex.quote(str(runs.project_root()))}",
        'command="${UNITS[$SLURM_ARRAY_TASK_ID]}"',
        'record="${RECORDS[$SLURM_ARRAY_TASK_ID]}"',
        'log="${LOGS[$SLURM_ARRAY_TASK_ID]}"',
        'job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
        'echo "[launch] $(date "+%F %T") task $job on $(hostname): $command"',
        "requeue() {",
        '  echo "[launch] $(date "+%F %T") signal: stopping the unit and requeueing $job"',
        '  kill -TERM "$child" 2>/dev/null; wait "$child"',
        '  scontrol requeue "$job"',
        "  exit 0",
        "}",
        "trap requeue USR1 TERM",
        'mkdir -p "$(dirname "$record")" "$(dirname "$log")"',
        'echo "[launch] $(date "+%F %T") task $job: $command" >> "$log"',
        'printf \'{"state": "running", "slurm_job": "%s", "host": "%s"}\\n\' "$job" "$(hostname)" > "$record"',
        'bash -c "$command" >> "$log" 2>&1 &',
        "child=$!",
        'wait "$child"; status=$?',
        'printf \'{"state": "%s", "returncode": %d, "slurm_job": "%s", "host": "%s"}\\n\' '
        '"$([ $status -eq 0 ] && echo done || echo failed)" "$status" "$job" "$(hostname)" > "$record"',
        'exit "$status"', ""]
    return "\n".join(lines)


def submit_slurm(units: list[Unit], resources: dict, dry_run: bool = False, python: str = sys.executable) -> dict:
    """One job array per stage (in order), each after the previous with afterok; returns {stage:
    job id} ("<dry-run>" ids with --dry-run) and writes the scripts under <runs_root>/.launch/slurm/."""
    todo = [u for u in units if not unit_done(u)]
    if not todo:
        print("[launch] every unit is done")
        return {}
    root = todo[0].root
    folder = root / LAUNCH_DIR / "slurm" / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    (root / LAUNCH_DIR / "logs").mkdir(parents=True, exist_ok=True)  # SLURM opens each task's log there
    ids, after = {}, None
    for stage in STAGE_ORDER:
        batch = [u for u in todo if u.stage == stage]
        if not batch:
            continue
        script = folder / f"{stage}.sbatch"
        files.atomic_write_text(script, sbatch_script(batch, f"datadream-{stage}", resources, after, python, root / LAUNCH_DIR / "logs"))
        if dry_run:
            ids[stage] = after = f"<{stage} job id>"
            print(f"[launch] {script}: {len(batch)} task(s) (not submitted: --dry-run)")
            continue
        result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
        if result.returncode != 0:
            raise DataDreamError(f"sbatch {script} failed: {result.stderr.strip() or result.stdout.strip()}")
        ids[stage] = after = result.stdout.strip().split(";")[0]
        for index, unit in enumerate(batch):  # `status` says "submitted" until the task starts
            write_record(unit, state="submitted", slurm_job=f"{after}_{index}", returncode=None)
        print(f"[launch] {stage}: job {after}, {len(batch)} task(s), script {script}")
    return ids


# --- status ---------------------------------------------------------------------------------------

def status_rows(units: list[Unit]) -> list[dict]:
    """Per run and stage: planned / submitted / running / done / failed, images made of planned, GPU-hours so far;
    on each run's first row, the pretrained weights its records name (`weights.summary`)."""
    rows, shown = [], set()
    by_stage: dict[tuple[str, str], list[Unit]] = {}
    for unit in units:
        by_stage.setdefault((unit.run, unit.stage), []).append(unit)
    for (run, stage), group in by_stage.items():
        folder = group[0].root / run
        records = [read_record(u) for u in group]
        states = ["done" if unit_done(u) else r.get("state", "planned") for u, r in zip(group, records)]
        if all(s == "done" for s in states):
            state = "done"
        elif "failed" in states:
            bad = [(u, r) for u, r, s in zip(group, records, states) if s == "failed"]
            u, r = bad[0]
            state = f"failed ({len(bad)} of {len(group)}): {r.get('last_line') or _last_line(u.log)} [{u.log}]"
        elif "running" in states:
            r = next(r for r, s in zip(records, states) if s == "running")
            where = f"SLURM job {r['slurm_job']}" if r.get("slurm_job") else f"{r.get('host')} pid {r.get('pid')}"
            state = f"running ({states.count('running')} of {len(group)}; {where})"
        elif "submitted" in states:
            r = next(r for r, s in zip(records, states) if s == "submitted")
            state = f"submitted ({states.count('submitted')} of {len(group)}; SLURM job {r.get('slurm_job')})"
        else:  # in the plan, never started (or stopped): `launch local` / `launch slurm` starts it
            state = f"planned ({states.count('done')} of {len(group)} parts done)"
        row = {"run": run or "collect", "stage": stage, "state": state}
        made = stages.BY_NAME[stage].made if stage in stages.BY_NAME else None
        if made is not None and (folder / runs.PARAMS_FILE).exists():
            row["images"] = made(folder, yaml.safe_load((folder / runs.PARAMS_FILE).read_text()))
        timings = folder / "timings.jsonl"
        if run and folder.is_dir():  # each stage part's time on its device (pipeline.py's timings.jsonl)
            seconds = sum(r.get("seconds", 0) for r in catalog.read_jsonl(timings)
                          if r.get("stage") == stage) if timings.exists() else 0
            row["gpu_hours"] = round(seconds / 3600, 3)
        if run and run not in shown and (folder / weights.FOLDER).is_dir():
            shown.add(run)
            row["weights"] = weights.summary(folder)
        rows.append(row)
    return rows


def print_status(units: list[Unit]) -> None:
    rows = status_rows(units)
    for row in rows:
        extra = "".join(f"  {k}: {row[k]}" for k in ("images", "gpu_hours", "weights") if k in row)
        print(f"{row['run']:<32} {row['stage']:<15} {row['state']}{extra}")
    runs_shown = {row["run"] for row in rows if row["run"] != "collect"}
    print(f"{len(runs_shown)} run(s); GPU-hours so far: {sum(row.get('gpu_hours', 0) for row in rows):.3f} "
          f"(device time of the stages executed, from each run's timings.jsonl)")


PLAN_FILE = "plan.json"


def save_plan(units: list[Unit]) -> None:
    """Record what was launched under <runs_root>/.launch/plan.json (units by id, merged with earlier
    launches), so `status RUNS_ROOT` shows the units as planned."""
    by_root: dict[Path, list[Unit]] = {}
    for unit in units:
        by_root.setdefault(unit.root, []).append(unit)
    for root, group in by_root.items():
        path = root / LAUNCH_DIR / PLAN_FILE
        known = {u["id"]: u for u in (read_plan_file(path) or [])}
        known.update({u.id: {**dataclasses.asdict(u), "root": str(u.root), "id": u.id} for u in group})
        files.write_json(path, list(known.values()))


def read_plan_file(path: Path) -> Optional[list[dict]]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


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


def main(argv=None) -> int:

    parser = argparse.ArgumentParser(prog="python -m datadream_lib.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("plan", "local", "slurm", "status"):
        command = sub.add_parser(name)
        command.add_argument("params", nargs="+", help="parameter files (a grid), or for status a runs_root")
        command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        command.add_argument("--shards", type=int, default=1, help="synthesis shards (and class shards of a per-class preparation) per run")
        if name == "local":
            command.add_argument("--gpus", default="all", help="all, or a list such as 0,1,3")
        if name == "slurm":
            command.add_argument("--dry-run", action="store_true", help="write the sbatch scripts, submit nothing")
            command.add_argument("--profile", type=Path, help="a YAML file of the resources below (a cluster profile)")
            command.add_argument("--partition")
            command.add_argument("--time", help="per task, e.g. 1-00:00:00 (a task requeues itself before it)")
            command.add_argument("--gpus", type=int, default=None, help="GPUs per task (default 1)")
            command.add_argument("--cpus-per-task", dest="cpus_per_task", type=int)
            command.add_argument("--mem")
            command.add_argument("--account")
            command.add_argument("--sbatch", action="append", help="an extra #SBATCH line, e.g. --sbatch=--qos=high")
    args = parser.parse_args(argv)
    try:
        if args.shards < 1:
            raise DataDreamError(f"--shards {args.shards} must be at least 1.")
        units = units_of(args.params, params.parse_overrides(args.overrides), args.shards)
        if not units:  # folders with nothing launched and no run folder in them
            if args.command == "status":
                print(f"[launch] no runs under {', '.join(args.params)} yet: nothing launched there, no run folder "
                      f"(a run folder holds {runs.PARAMS_FILE}).")
                return 0
            raise DataDreamError(f"no parameter files, run folders or launches in {args.params}.")
        if args.command == "plan":
            for unit in units:
                print(f"{unit.id}  (after {len(unit.after)})\n    {unit.shell()}")
            return 0
        if args.command == "status":
            print_status(units)
            return 0
        if args.command == "local":
            gpus = visible_gpus(args.gpus)
            save_plan(units)
            return 1 if run_local(units, gpus) else 0
        resources = yaml.safe_load(args.profile.read_text()) if args.profile else {}
        if not isinstance(resources, dict) or set(resources) - set(RESOURCES):
            raise DataDreamError(f"--profile {args.profile}: a mapping of {list(RESOURCES)}.")
        resources = {"gpus": 1, **resources, **{k: getattr(args, k) for k in RESOURCES if getattr(args, k, None)}}
        if not args.dry_run:  # a dry run plans nothing that `status` should show
            save_plan(units)
        ids = submit_slurm(units, resources, args.dry_run)
        print(json.dumps(ids))
        return 0
    except DataDreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
