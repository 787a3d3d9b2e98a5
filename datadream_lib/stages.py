"""The stages of a run, in order: one table for the runner, the parameter choices and the ablations.

Each stage is a notebook that calls one library function `function(p, run, split, progress=...)`;
the function writes the stage's outputs and marks them complete, and the notebook's last cell
marks the stage done (`runs.Run.finish_stage`). Which earlier stages' outputs a stage reads under
a run's parameters is the runner's (`pipeline.reads`). This module imports nothing of the library.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    notebook: str
    function: str  # "module:function", imported only when the stage runs

    def load(self) -> Callable:
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)


STAGES = (
    Stage("adaptation", "01_adaptation.ipynb", "datadream_lib.methods:prepare"),
    Stage("synthesis", "02_synthesis.ipynb", "datadream_lib.synthesis:generate"),
    Stage("classification", "03_classification.ipynb", "datadream_lib.classification:classify"),
    Stage("fid", "04_fid_analysis.ipynb", "datadream_lib.fid:analyse"),
    Stage("ablations", "05_ablations.ipynb", "datadream_lib.ablations:ablate"),
)
NAMES = tuple(stage.name for stage in STAGES)
BY_NAME = {stage.name: stage for stage in STAGES}
GENERATION = ("adaptation", "synthesis")  # what a shots-ablation sub-run repeats before its classifiers
