"""`launch status`: per run and stage, what its units have done, the images made, GPU-hours so far."""

from __future__ import annotations

import yaml

from datadream_lib import catalog, runs, stages, weights
from datadream_lib.launch.records import last_line, read_record, unit_done
from datadream_lib.launch.unit import Unit


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
            state = f"failed ({len(bad)} of {len(group)}): {r.get('last_line') or last_line(u.log)} [{u.log}]"
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
