"""A unit of launched work: one GPU's share of a run (a stage, or a part of it), as the pipeline
command that does it, and where its record and log go under `<runs_root>/.launch/`."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

from datadream_lib import stages


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
