"""The miniature results (issue 18): the runs of the toy world (datadream_lib/toyworld/world.py) that the
measurement is made of, the figures read from them, and the comparisons of the paper's story.
benchmarks/toyworld_effects.py measures them over seeds; tests/test_toyworld.py holds those that
held on every seed by a margin."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from PIL import Image

from datadream_lib import catalog, models, params, results, runs, splits
from datadream_lib.augmentation import test_transform
from datadream_lib.classification import CLIPClassifier
from datadream_lib.naming import REFERENCE_LABEL

# The measurement's grid and comparisons, as data (benchmarks/toyworld_effects.yaml): which methods'
# runs, with which classifier settings and stages, and which figures are compared.
SPEC_FILE = runs.project_root() / "benchmarks" / "toyworld_effects.yaml"


def _spec() -> dict:
    return yaml.safe_load(SPEC_FILE.read_text())


EFFECT_RUNS: dict[str, list[str]] = _spec()["runs"]
EFFECT_STAGES: list[str] = _spec()["stages"]


def effect_figures(metrics, fid_table) -> dict:
    """One seed's figures from `results.collect`'s tables of its runs: each classifier's top-1 (by
    synth_method and setting), chance, and each image source's mean per-class FID and KID."""
    figures = {}
    for row in metrics.itertuples():
        key = row.setting if row.setting in ("zero_shot", "real_finetune") else f"{row.synth_method}/{row.setting}"
        figures[f"top1/{key}"] = float(row.top1)
    synthetic = fid_table[fid_table["method"] != REFERENCE_LABEL]
    for method, group in synthetic.groupby("synth_method"):
        figures[f"fid/{method}"] = float(group["fid"].mean())
        figures[f"kid/{method}"] = float(group["kid"].mean())
    figures["chance"] = 100.0 / fid_table["class_index"].nunique()
    return figures


def recognition_figures(run_dirs) -> dict:
    """Do the images show their class? Per synthetic method of the runs: the top-1 (%) of the world's
    CLIP, zero-shot with the classifier's prompts, on the method's images against the class each was
    made for (a mean over the runs of a method). The world's CLIP names the world's colours on its own
    images without error, so a class prompted as another falls far below chance."""
    clip, tokenizer, size = models.load_clip(params.from_dict({"base": "toyworld"}))
    transform, scores = test_transform(size), {}
    for run_dir in map(Path, run_dirs):
        split = splits.read_split(run_dir / "split.json")
        head = CLIPClassifier(clip, tokenizer, split.classifier_prompts()).eval()
        for folder in sorted(p for p in (run_dir / "synthetic").iterdir() if p.is_dir()):
            rows = catalog.read_manifest(folder)
            images = torch.stack([transform(Image.open(folder / row["path"]).convert("RGB")) for row in rows])
            with torch.no_grad():
                predicted = head(images).argmax(1)
            right = (predicted == torch.tensor([row["class_index"] for row in rows])).float().mean()
            scores.setdefault(f"recognised/{folder.name}", []).append(100.0 * float(right))
    return {name: sum(values) / len(values) for name, values in scores.items()}


def seed_figures(run_dirs) -> dict:
    """Every figure of one seed's runs: `effect_figures` of their result tables and `recognition_figures`."""
    run_dirs = [Path(d) for d in run_dirs]
    tables = results.collect(run_dirs)
    return {**effect_figures(tables["metrics"], tables["fid"]), **recognition_figures(run_dirs)}


# The comparisons the issue asks for: (name, larger, smaller) of two figures; an effect is
# `larger - smaller`, positive where the paper's story holds.
COMPARISONS: tuple[tuple[str, str, str], ...] = tuple(tuple(c) for c in _spec()["comparisons"])


def effect_run_name(method: str, seed: int) -> str:
    return f"toyworld_{method}_seed{seed}"


def effect_run_args(method: str, seed: int, runs_root, settings, stages=EFFECT_STAGES, data_root=None) -> list[str]:
    """The arguments of `python -m datadream_lib.pipeline` for one run of the measurement (and of the
    tests that repeat part of it): params/toyworld.yaml with `synth_method`, `seed`, the classifier
    `settings` and `stages`, named `effect_run_name` under `runs_root`."""
    args = ["params/toyworld.yaml", "--set", f"runs_root={runs_root}", "--set", f"run_name={effect_run_name(method, seed)}",
            "--set", f"seed={seed}", "--set", f"synth_method={method}", "--set", f"clf_settings=[{', '.join(settings)}]",
            "--set", f"stages=[{', '.join(stages)}]"]
    return args + (["--set", f"data_root={data_root}"] if data_root is not None else [])
