"""The stages of a run, in order: one table for the runner, the parameter choices and the ablations.

Each stage is a notebook that calls one library function `function(p, run, split, progress=...)`;
the function writes the stage's outputs and marks them complete, and the notebook's last cell
marks the stage done (`runs.Run.finish_stage`). `reads(p)` says which earlier stages' outputs a
stage needs under parameters `p` (synthesis reads the preparation only for a method that has one).
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


def reads(p, stage: str) -> list[str]:
    """The stages whose outputs `stage` reads under parameters `p`."""
    from datadream_lib.classification import SYNTHETIC_SETTINGS
    from datadream_lib.methods import METHODS

    def images(settings) -> list[str]:
        return ["synthesis"] if any(s in SYNTHETIC_SETTINGS for s in settings) else []

    return {"adaptation": [], "synthesis": ["adaptation"] if METHODS[p.synth_method].prepares else [],
            "classification": images(p.clf_settings), "fid": ["synthesis"],
            "ablations": images(p.ablation_settings)}[stage]
