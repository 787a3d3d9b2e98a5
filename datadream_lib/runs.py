"""The run folder: `runs/<run_name>/`, the record of one experiment.

It holds the parameters the run was started with (`params.yaml`), the split, each stage's outputs
and a marker per finished stage (`stages/<stage>.json`). A folder that holds a run with other
parameters is never reused: `open_run` stops and says how to resume or rename. Files are written
atomically (temporary file + rename), so an interrupted stage never leaves a half-written file
under its final name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from datadream_lib.errors import DataDreamError

PARAMS_FILE = "params.yaml"
STAGES = ("adaptation", "synthesis", "classification", "fid", "ablations")


def project_root() -> Path:
    """The checkout's root: the nearest folder above the working directory with this project's
    pyproject.toml (so a notebook run from notebooks/ and the runner agree), else the cwd."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "datadream"' in pyproject.read_text():
            return folder
    return here


def project_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


@dataclasses.dataclass
class Run:
    dir: Path

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def stage_done(self, stage: str) -> bool:
        return self.path("stages", f"{stage}.json").exists()

    def mark_done(self, stage: str, **info) -> None:
        write_json(self.path("stages", f"{stage}.json"), {"stage": stage, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **info})


def run_dir(p) -> Path:
    return project_path(p.runs_root) / p.run_name


def check_compatible(p, folder: Path) -> None:
    """Stop if `folder` holds a run with other parameters (changes nothing)."""
    record = Path(folder) / PARAMS_FILE
    identity = p.identity()
    if record.exists():
        old = yaml.safe_load(record.read_text()) or {}
        old_identity = {k: old.get(k) for k in identity}
        changed = {k: (old_identity[k], v) for k, v in identity.items() if old_identity[k] != v}
        if changed:
            listing = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:8])
            raise DataDreamError(
                f"run folder {folder} holds a run with other parameters ({listing}). To resume it, use the "
                f"parameters it was started with ({record}); to start a new run, set run_name to a new name. "
                f"Nothing in the folder was changed.")


def open_run(p, folder: Path | None = None) -> Run:
    """Create the run folder, or reopen it if it holds a run with the same parameters."""
    folder = Path(folder) if folder is not None else run_dir(p)
    check_compatible(p, folder)
    record = folder / PARAMS_FILE
    if not record.exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, yaml.safe_dump(p.to_dict(), sort_keys=False))
    return Run(folder)
