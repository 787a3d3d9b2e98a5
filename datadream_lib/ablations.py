"""The two ablations of Fig. 5 (paper section 4.4).

    images per class   classifiers on the first n images of every class of the run's one
                       generated pool, for n in `ablation_images_per_class`
    real shots         for K in `ablation_shots`, a sub-run with shots = K: adapt -> synthesize ->
                       classify, on the first K of the run's nested shots (the same split file)

Results land in `ablations/images_per_class/n<n>/<setting>/metrics.json` and
`ablations/shots/k<K>/...` (each shots sub-run is a run folder of its own). Finished cells are
kept, so an interrupted ablation resumes.
"""

from __future__ import annotations

import pandas as pd
from tqdm.auto import tqdm

from datadream_lib import adaptation, classification, synthesis
from datadream_lib.data import SPLIT_FILE, FewShotSplit
from datadream_lib.runs import Run, open_run


def images_per_class(p, run: Run, split: FewShotSplit, progress: bool = True) -> pd.DataFrame:
    rows = []
    for n in tqdm(p.ablation_images_per_class, desc="images per class", disable=not progress):
        out = run.path("ablations", "images_per_class", f"n{n}")
        results = classification.run(p, run, split, progress=False, settings=p.ablation_settings,
                                     out_root=out, images_per_class=n)
        rows += [{"ablation": "images_per_class", "images_per_class": n, "shots": p.shots, "setting": s,
                  "top1": r["top1"], "seed": p.seed} for s, r in results.items()]
    return pd.DataFrame(rows)


def shots(p, run: Run, split: FewShotSplit, progress: bool = True) -> pd.DataFrame:
    rows = []
    for k in tqdm(p.ablation_shots, desc="real shots", disable=not progress):
        sub_p = p.replace(shots=k, run_name=f"{p.run_name}/ablations/shots/k{k}")
        sub = open_run(sub_p, run.path("ablations", "shots", f"k{k}"))
        if not (sub.dir / SPLIT_FILE).exists():
            split.save(sub.dir / SPLIT_FILE)  # the parent's nested draw: K-shot = the first K
        adaptation.run(sub_p, sub, split, progress=False)
        synthesis.run(sub_p, sub, split, progress=False)
        results = classification.run(sub_p, sub, split, progress=False, settings=p.ablation_settings)
        rows += [{"ablation": "shots", "images_per_class": p.images_per_class, "shots": k, "setting": s,
                  "top1": r["top1"], "seed": p.seed} for s, r in results.items()]
    return pd.DataFrame(rows)


def run(p, run: Run, split: FewShotSplit, progress: bool = True) -> pd.DataFrame:
    table = pd.concat([images_per_class(p, run, split, progress), shots(p, run, split, progress)], ignore_index=True)
    out = run.path("ablations", "results.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    run.mark_done("ablations", rows=len(table))
    return table
