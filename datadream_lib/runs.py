"""The run folder: `runs/<run_name>/`, the record of one experiment.

It holds the parameters the run was started with (`params.yaml`), the split, each stage's outputs
and a marker per finished stage (`stages/<stage>.json`). A folder that holds a run with other
parameters is never reused: `open_run` stops and says how to resume or rename; one process writes
a run at a time (`locks.py`). A run folder is always a direct child of `runs_root`. Files are
written atomically (temporary file + rename, with the permissions the umask gives), so an
interrupted stage never leaves a half-written file under its final name.

A stage is done when its notebook has finished: the stage's function writes a pending marker
(`stages/<stage>.pending.json`) once its outputs are complete, and the notebook's last cell turns it
into the done marker. A crash in between (say, while a figure is drawn) leaves the stage to run
again, which resumes from its outputs and draws the figures.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import yaml

from datadream_lib import PROJECT, environment, locks, weights
from datadream_lib.files import atomic_write_text, read_json, write_json
from datadream_lib.errors import DataDreamError
from datadream_lib.stages import part_of

PARAMS_FILE = "params.yaml"


def project_root() -> Path:
    """The checkout's root: the nearest folder above the working directory with this project's
    pyproject.toml (so a notebook run from notebooks/ and the runner agree), else the cwd."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and f'name = "{PROJECT}"' in pyproject.read_text():
            return folder
    return here


def project_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path



_ENVIRONMENTS: dict[Path, str] = {}  # run folder -> the id of this process's record in it


@dataclasses.dataclass
class Run:
    dir: Path
    identity: Optional[dict] = None  # the parameters that make the run what it is (set by open_run)
    split_fingerprint: Optional[str] = None  # the split's (set by splits.start_run)
    allow_weights_change: bool = False  # the run's parameter of that name (set by open_run)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    @property
    def environment(self) -> str:
        """The id of this process's environment record in the run folder, written at the first call
        (`environment.py`): what a manifest row or an adapter.json names."""
        key = self.dir.resolve()
        if key not in _ENVIRONMENTS or not self.path(environment.FOLDER, f"{_ENVIRONMENTS[key]}.json").exists():
            info = environment.describe(project_root())
            _ENVIRONMENTS[key] = environment.record_id(info)
            write_json(self.path(environment.FOLDER, f"{_ENVIRONMENTS[key]}.json"), info)
        return _ENVIRONMENTS[key]

    @property
    def weights(self) -> Optional[str]:
        """The id of the record of the pretrained weights this process has loaded (`weights.py`),
        written into the run folder at the first call after a load, once checked against the folder's
        records (other weights than a record names are refused): what a manifest row, an
        adapter.json or a metrics.json names. None before anything was loaded."""
        return weights.write_record(self.dir, self.allow_weights_change)

    def stage_done(self, stage: str) -> bool:
        return stage_done(self.dir, stage)

    def outputs_complete(self, stage: str, **info) -> None:
        """The stage's outputs are complete; it is done once its notebook finishes (`finish_stage`).
        The marker records what they were made with: the run's identity and the split's fingerprint,
        so the run's identity rests on every marker, not on params.yaml alone."""
        made_with = {key: value for key, value in (("identity", self.identity), ("split", self.split_fingerprint))
                     if value is not None}
        write_json(self.path("stages", f"{stage}.pending.json"),
                   {"stage": stage, "outputs_complete": time.strftime("%Y-%m-%d %H:%M:%S"), **info, **made_with})

    def finish_stage(self, stage: str) -> bool:
        """The last cell of a stage's notebook: the pending marker becomes the done marker. Returns
        whether the stage is done (False where its outputs are not complete, e.g. one shard of several)."""
        pending = self.path("stages", f"{stage}.pending.json")
        try:
            marker = read_json(pending)
        except (FileNotFoundError, ValueError):  # none, or the last two parts of a stage finishing at once
            return self.stage_done(stage)
        write_json(self.path("stages", f"{stage}.json"), {**marker, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        pending.unlink(missing_ok=True)
        return self.stage_done(stage)

    def reopen_stage(self, stage: str) -> None:
        """Forget that a stage finished (its outputs were found damaged): the next run repairs them."""
        for marker in (f"{stage}.json", f"{stage}.pending.json"):
            self.path("stages", marker).unlink(missing_ok=True)


def check_run_name(name: str) -> None:
    """A run folder is one plain folder name directly under runs_root: no path, nothing hidden."""
    bad = (not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0")
           or Path(name).is_absolute() or name != name.strip())
    if bad:
        raise DataDreamError(f"run_name {name!r} is not a plain folder name: a run folder is always a direct child of "
                             f"runs_root: no '/' or '\\', not '.' or '..', not starting with '.' or a space, e.g. "
                             f"'eurosat_dset_seed0'. To put runs elsewhere, set runs_root.")


def stage_done(folder: Path, stage: str) -> bool:
    """Whether the run in `folder` has finished `stage` (its done marker, stages/<stage>.json)."""
    return (Path(folder) / "stages" / f"{stage}.json").exists()


def run_dir(p) -> Path:
    """runs_root/run_name (validation has made run_name one plain folder name: see check_run_name)."""
    return project_path(p.runs_root) / p.run_name


def read_params_record(folder: Path) -> Optional[dict]:
    """The run's params.yaml, or None where it is missing or not readable YAML (the stage markers
    carry the run's identity too: see `identity_records`)."""
    record = Path(folder) / PARAMS_FILE
    if not record.exists():
        return None
    try:
        values = yaml.safe_load(record.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    return values if isinstance(values, dict) else None


def stage_markers(folder: Path) -> list[tuple[Path, dict]]:
    """Every readable stage marker (done or pending) of a run folder, with its path."""
    out = []
    for path in sorted(Path(folder).glob("stages/*.json")):
        try:
            marker = read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(marker, dict):
            out.append((path, marker))
    return out


def identity_records(folder: Path) -> list[tuple[Path, dict]]:
    """What the run folder says its identity is: params.yaml (if readable) and every stage marker
    that recorded one."""
    records = []
    params = read_params_record(folder)
    if params is not None:
        records.append((Path(folder) / PARAMS_FILE, params))
    records += [(path, marker["identity"]) for path, marker in stage_markers(folder) if isinstance(marker.get("identity"), dict)]
    return records


def check_compatible(p, folder: Path) -> None:
    """Stop if `folder` holds a run with other parameters, by its params.yaml or by any stage marker
    (a run whose params.yaml was deleted is still recognised), or was last written under other
    versions of the packages that change pixels (changes nothing)."""
    identity = p.identity()
    for record, old in identity_records(folder):
        marker = record.name != PARAMS_FILE
        old_identity = {k: old.get(k) for k in identity if not marker or k in old}
        changed = {k: (old_identity[k], identity[k]) for k in old_identity if old_identity[k] != identity[k]}
        if changed:
            listing = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:8])
            raise DataDreamError(
                f"run folder {folder} holds a run with other parameters ({listing}, as {record.relative_to(folder)} "
                f"records). To resume it, use the parameters it was started with; to start a new run, set run_name "
                f"to a new name. Nothing in the folder was changed.")
    environment.check_resume(folder, p.allow_environment_change)


def open_run(p, folder: Path | None = None) -> Run:
    """Create the run folder, or reopen it if it holds a run with the same parameters; either way
    this process then holds it (a second writer is refused before anything is written)."""
    folder = Path(folder) if folder is not None else run_dir(p)
    check_compatible(p, folder)
    folder.mkdir(parents=True, exist_ok=True)
    locks.lock_run(folder, part_of(p))
    check_compatible(p, folder)  # again, under the lock: the folder may have been started meanwhile
    record = folder / PARAMS_FILE
    if record.exists() and read_params_record(folder) is None:  # damaged: the markers vouched for p above
        print(f"[run] {record} was not readable YAML; written again from this run's parameters")
    if read_params_record(folder) is None:
        atomic_write_text(record, p.to_yaml())
    run = Run(folder, identity=p.identity(), allow_weights_change=p.allow_weights_change)
    run.environment  # this process's record
    return run
