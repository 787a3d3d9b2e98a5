"""The two ablations of Fig. 5 (paper section 4.4).

    images per class   classifiers on the first n images of every class of the run's one
                       generated pool, for n in `ablation_images_per_class` (the settings that
                       read synthetic images; Real-finetune is drawn as a line)
    real shots         for K in `ablation_shots`, a sub-run with shots = K: adapt -> synthesize ->
                       classify, on the first K of the run's nested shots (the parent's split.json);
                       every setting of `ablation_settings`, Real-finetune included (Fig. 5, right)

Results land in `ablations/images_per_class/n<n>/<setting>/metrics.json` and
`ablations/shots/k<K>/...` (each shots sub-run is a run folder of its own). The grid point equal to
the run itself (n = images_per_class, K = shots) is the run's own classifiers, not a copy. Finished
cells are kept, so an interrupted ablation resumes. `ablations/results.csv` has one row per cell.
"""

from __future__ import annotations

import pandas as pd

from datadream_lib.progress import bar as progress_bar
from datadream_lib import classification, methods, naming, stages
from datadream_lib.files import record_damage
from datadream_lib.schema import literal_braces
from datadream_lib.stages import cell
from datadream_lib.runs import Run, open_run
from datadream_lib.splits import FewShotSplit


def _rows(p, ablation: str, results: dict, images_per_class: int, shots: int) -> list[dict]:
    """A cell's rows, by identity (`naming.named` names them)."""
    variant = methods.METHODS[p.synth_method].variant(p)
    rows = []
    for setting, r in results.items():
        synthetic = setting in classification.SYNTHETIC_SETTINGS
        rows.append({"ablation": ablation, "dataset": p.dataset, "synth_method": p.synth_method if synthetic else None,
                     "variant": variant if synthetic else None, "setting": setting, "images_per_class": images_per_class,
                     "shots": shots, "top1": r["top1"], "seed": p.seed})
    return rows


def images_per_class(p, run: Run, split: FewShotSplit, progress: bool = True) -> pd.DataFrame:
    rows = []
    settings = [s for s in p.ablation_settings if s in classification.SYNTHETIC_SETTINGS]
    if not settings:
        return pd.DataFrame(rows)
    for n in progress_bar(p.ablation_images_per_class, desc="images per class", unit="setting", disable=not progress):
        if p.ablation_select and cell("images_per_class", n) not in p.ablation_select:
            continue
        if n == p.images_per_class:
            results = classification.classify(p, run, split, progress=False, settings=settings)
        else:
            results = classification.classify(p, run, split, progress=False, settings=settings,
                                         out_root=run.path("ablations", "images_per_class", f"n{n}"), images_per_class=n)
        rows += _rows(p, "images_per_class", results, n, p.shots)
    return pd.DataFrame(rows)


def shots(p, run: Run, split: FewShotSplit, progress: bool = True) -> pd.DataFrame:
    rows = []
    for k in progress_bar(p.ablation_shots, desc="real shots", unit="setting", disable=not progress):
        if p.ablation_select and cell("shots", k) not in p.ablation_select:
            continue
        sub_p, sub = p, run
        if k != p.shots:
            sub_p = p.replace(shots=k, run_name=f"{literal_braces(p.run_name)}_shots_k{k}")
            sub = open_run(sub_p, run.path("ablations", "shots", f"k{k}"))
            if any(s in classification.SYNTHETIC_SETTINGS for s in p.ablation_settings):
                for stage in stages.GENERATION:  # the method's preparation and images, at K shots
                    stages.BY_NAME[stage].load()(sub_p, sub, split, progress=False)
        results = classification.classify(sub_p, sub, split, progress=False, settings=p.ablation_settings)
        rows += _rows(p, "shots", results, p.images_per_class, k)
    return pd.DataFrame(rows)


def damaged(p, run: Run, split: FewShotSplit) -> list[str]:
    """The ablations stage's damage check: its table, readable."""
    path = run.path("ablations", "results.csv")
    return [f"{path}: {why}"] if (why := record_damage(path, "csv")) else []


def ablate(p, run: Run, split: FewShotSplit, progress: bool = True) -> pd.DataFrame:
    """The ablations stage: both grids of Fig. 5 (ablations/results.csv). With `ablation_select`,
    only those cells (a launcher unit each; finished cells are kept), and no table: the stage run
    without a selection gathers them. Returns the table with its rows named (`naming.named`)."""
    table = pd.concat([images_per_class(p, run, split, progress), shots(p, run, split, progress)], ignore_index=True)
    if p.ablation_select:
        return naming.named(table)
    out = run.path("ablations", "results.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    run.outputs_complete("ablations", rows=len(table))
    return naming.named(table)
