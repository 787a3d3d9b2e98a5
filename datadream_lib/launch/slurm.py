"""SLURM: one job array per stage, each after the one before, tasks that requeue themselves on the
time-limit signal and on preemption."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from datadream_lib import files, runs
from datadream_lib.errors import DataDreamError
from datadream_lib.launch.records import unit_done, write_record
from datadream_lib.launch.unit import LAUNCH_DIR, STAGE_ORDER, Unit


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
