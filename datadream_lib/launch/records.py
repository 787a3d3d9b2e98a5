"""What each unit has done (its record: state, exit status, where it ran) and what was launched
(`<runs_root>/.launch/plan.json`), as the local runner, the SLURM tasks and `status` read them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from datadream_lib import files, runs
from datadream_lib.launch.unit import LAUNCH_DIR, Unit


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


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


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
