"""The stages of a run and what joins them: the one graph the runner, the launcher, the run folder
and the parameter checks read.

Each stage is a notebook that calls one library function `function(p, run, split, progress=...)`;
the function writes the stage's outputs (under the run folder's `folder`) and marks them complete,
and the notebook's last cell marks the stage done (`runs.Run.finish_stage`). For each stage the
table says:

- what it reads: the stages whose outputs it needs under a run's parameters (`reads`); the
  pipeline refuses a plan that lacks them, the launcher makes a unit wait for them;
- its parts: the share of the stage one process does (a shard, a classifier setting, an
  ablation cell), the parameters that select it (`selectors`), and the name its lock and its
  executed notebook carry;
- how to check its finished outputs for damage (`damage`, a function of its own module, imported
  when the check runs), and its function.

A process holds its run folder exclusively, unless it does a part of a stage (then the folder is
shared, the part exclusive: `locks.py`). So a launcher's unit waits for the units of the stages it
reads, and for any earlier unit that it cannot run beside (one of the two holds the whole run):
`waits_for`. This module imports no heavy library module: functions and damage checks are named
"module:function" and imported when used.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Optional

SYNTHETIC_SETTINGS = ("synthetic", "synthetic_real")  # the classifier settings that train on synthesis's images


@dataclasses.dataclass(frozen=True)
class Part:
    """One process's share of a stage, as the launcher plans it."""
    name: str  # "" for the whole stage
    selectors: dict  # the parameters that select it (never part of the run's identity)
    weight: float  # an estimate of its GPU time, for longest-first order


def _resolve(reference: str) -> Callable:
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def _shard(p) -> Optional[str]:
    return f"shard-{p.shard_index:03d}-of-{p.num_shards:03d}" if p.num_shards > 1 else None


def _settings(p) -> Optional[str]:
    selected = p.clf_select and sorted(p.clf_select) != sorted(p.clf_settings)
    return "+".join(sorted(p.clf_select)) if selected else None


def _cells(p) -> Optional[str]:
    return "+".join(sorted(p.ablation_select)) if p.ablation_select else None


def _images(settings) -> tuple[str, ...]:
    return ("synthesis",) if any(s in SYNTHETIC_SETTINGS for s in settings) else ()


def _shards(n: int, weight: float) -> list[Part]:
    if n == 1:
        return [Part("", {}, weight + 1)]
    return [Part(f"shard-{i:03d}-of-{n:03d}", {"shard_index": i, "num_shards": n}, weight / n + 1) for i in range(n)]


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    notebook: str
    folder: str  # the run folder's subfolder it writes
    function: str  # "module:function", imported only when the stage runs
    damage: str  # "module:function" (p, run, split) -> the finished outputs found missing or damaged
    reads: Callable  # (p, method) -> the stages whose outputs it needs
    part: Callable  # p -> the part this process does (its name), or None for the whole stage
    parts: Callable  # (p, method, shards, work) -> the launcher's parts
    loads: Callable = lambda p: ()  # p -> the pretrained models it loads: "method" (the method's), "clip", "fid_features"
    lock_prefix: str = ""  # before the part's name in the name of its lock
    made: Optional[Callable] = None  # (run folder, its params.yaml values) -> how much of its work is made, for status

    def load(self) -> Callable:
        return _resolve(self.function)

    def damaged(self, p, run, split) -> list[str]:
        """The finished stage's outputs that a later stage would trip over (cheap checks)."""
        return _resolve(self.damage)(p, run, split)

    def record_notebook(self, p) -> str:
        """The executed notebook of this process's part: every part keeps its own record
        (`02_synthesis.shard-001-of-004.ipynb`, `03_classification.synthetic.ipynb`)."""
        part = self.part(p)
        return self.notebook if part is None else self.notebook.replace(".ipynb", f".{part}.ipynb")


@dataclasses.dataclass(frozen=True)
class Work:
    """A run's work in the launcher's units of GPU time (the method's `Cost`, the dataset's size)."""
    adapt_samples: float
    unet_passes: float
    classes: int


def _classifier_weight(p, work: Work) -> float:
    return p.clf_epochs * work.classes * p.images_per_class / 100


def _adaptation_parts(p, method, shards: int, work: Work) -> list[Part]:
    return _shards(shards if method.prepares_by_class(p) else 1, 2 * work.adapt_samples)


def _ablation_parts(p, method, shards: int, work: Work) -> list[Part]:
    """A part per cell of Fig. 5's grids that is work of its own (a shots cell is a sub-run:
    preparation, synthesis, classifiers), then the whole stage, which gathers the table."""
    cells = [Part(name, {"ablation_select": [name]},
                  (2 * work.adapt_samples + work.unet_passes if name.startswith("k") else 0) + _classifier_weight(p, work) + 1)
             for name in cells_of(p)]
    return cells + [Part("", {}, 1)]


def _images_made(folder, values: dict) -> str:
    """Synthesis's progress for `launch status`: images listed of planned (manifest rows, split.json)."""
    import json
    from pathlib import Path

    from datadream_lib import catalog

    made = len(catalog.read_manifest(Path(folder) / "synthetic" / values["synth_method"]))
    split = Path(folder) / "split.json"
    classes = len(json.loads(split.read_text())["classnames"]) if split.exists() else None
    return f"{made} of {classes * values['images_per_class']}" if classes else str(made)


STAGES = (
    Stage("adaptation", "01_adaptation.ipynb", "adaptation", "datadream_lib.methods:prepare",
          "datadream_lib.methods:preparation_damage", reads=lambda p, method: (), part=_shard, parts=_adaptation_parts,
          loads=lambda p: ("method",)),
    Stage("synthesis", "02_synthesis.ipynb", "synthetic", "datadream_lib.synthesis:generate",
          "datadream_lib.synthesis:damaged", reads=lambda p, method: ("adaptation",) if method.prepares else (),
          part=_shard, parts=lambda p, method, shards, work: _shards(shards, work.unet_passes), made=_images_made,
          loads=lambda p: ("method",)),
    Stage("classification", "03_classification.ipynb", "classification", "datadream_lib.classification:classify",
          "datadream_lib.classification:damaged", reads=lambda p, method: _images(p.clf_select or p.clf_settings),
          part=_settings, parts=lambda p, method, shards, work: [
              Part(setting, {"clf_select": [setting]}, _classifier_weight(p, work) + 1) for setting in p.clf_settings],
          loads=lambda p: ("clip",)),
    Stage("fid", "04_fid_analysis.ipynb", "fid", "datadream_lib.fid:analyse", "datadream_lib.fid:damaged",
          reads=lambda p, method: ("synthesis",), part=lambda p: None,
          parts=lambda p, method, shards, work: [Part("", {}, work.classes * p.images_per_class / 1000 + 1)],
          loads=lambda p: ("clip",) if p.fid_features == "clip" else ("fid_features",)),
    Stage("ablations", "05_ablations.ipynb", "ablations", "datadream_lib.ablations:ablate", "datadream_lib.ablations:damaged",
          reads=lambda p, method: _images(p.ablation_settings), part=_cells, parts=_ablation_parts, lock_prefix="ablations-",
          loads=lambda p: ("method", "clip")),  # a shots cell prepares and generates again
)
NAMES = tuple(stage.name for stage in STAGES)
BY_NAME = {stage.name: stage for stage in STAGES}
GENERATION = ("adaptation", "synthesis")  # what a shots-ablation sub-run repeats before its classifiers


def part_of(p) -> Optional[str]:
    """The part of its run this process works on, or None for the whole run: the parts its
    selectors pick (a shard of the synthesis jobs or of a per-class preparation's classes, some
    classifier settings, some ablation cells). Names its lock."""
    names = [f"{stage.lock_prefix}{part}" for stage in STAGES if (part := stage.part(p)) is not None]
    return ".".join(dict.fromkeys(names)) or None


def part_reads(stage: Stage, part: Part, p, method) -> tuple[str, ...]:
    """The stages a part of `stage` reads: the stage's `reads` under the part's selectors."""
    return stage.reads(p.replace(**part.selectors) if part.selectors else p, method)


def waits_for(reads: tuple[str, ...], part: Part, earlier: Stage, earlier_part: Part) -> bool:
    """Whether a unit (a `part` that reads `reads`) must wait for an earlier one of the same run: it
    reads that stage's outputs, or the two cannot run side by side (one of them holds the whole run)."""
    return earlier.name in reads or not part.selectors or not earlier_part.selectors


# --- the ablation grid's cells (the parts of the ablations stage) ---------------------------------

def cell(ablation: str, value: int) -> str:
    """A cell's name, as `ablation_select` names it: n<images per class>, k<shots>."""
    return f"{'n' if ablation == 'images_per_class' else 'k'}{value}"


def cells_of(p) -> list[str]:
    """The cells of Fig. 5's grids that are work of their own (not the run's own point). Cells of
    settings that read no synthetic images vary only with the shots."""
    synthetic = any(s in SYNTHETIC_SETTINGS for s in p.ablation_settings)
    return ([cell("images_per_class", n) for n in p.ablation_images_per_class if n != p.images_per_class and synthetic]
            + [cell("shots", k) for k in p.ablation_shots if k != p.shots])
