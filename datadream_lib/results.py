"""Results across many runs: Table 1, Fig. 4 and Fig. 5 rebuilt from any set of run folders
(datasets x variants x seeds), with the paper's own numbers beside ours.

    find_runs(roots)        the run folders under the given folders (shots-ablation sub-runs excluded)
    collect(run_dirs)       three tidy tables read from the result files: classifier metrics,
                            per-class FID, ablation cells; each row knows its dataset, seed and method
    table1(metrics)         one row per (method, dataset): mean and std over seeds, the paper's number,
                            the difference; `table1_display` lays it out as the paper does
    rebuild(roots, out)     everything above, written to `out` (the project's figures/ by default)

A dataset or method that was not run is an empty cell, never a zero. An average is given only for
a row that has all ten datasets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd
import yaml

from datadream_lib import methods, naming, weights
from datadream_lib.datasets import BENCHMARKS, DATASETS
from datadream_lib.errors import DataDreamError
from datadream_lib.naming import row_label
from datadream_lib.runs import PARAMS_FILE, project_path, stage_done
from datadream_lib.stages import SYNTHETIC_SETTINGS

# Table 1 of the paper (ViT-B/16, 16 shots, 500 synthetic images per class, mean of 3 seeds), as
# printed (docs/hyperparameters.md §7), by identity: (synth_method, variant, setting); a row's name is
# given when a table is drawn (`row_label`). The classifiers without synthetic images are here, each
# method's rows in its module (`Method.paper_table1`), each row with its place in the paper's table.
# "Avg" is the average the paper states; for two rows it is not the mean of the row's ten numbers
# (CLIP zero-shot: 64.1 stated, 64.9 mean; DataDream-cls: 82.6 stated, 80.6 mean). Our Avg is always
# the mean of our ten cells. A cell not readable in our copy of the paper (None) is derived from the
# printed Avg and marked "≈" wherever shown.
_PAPER_REAL_ROWS = {
    (None, None, "zero_shot"): (1, (70.2, 96.1, 46.1, 38.1, 23.8, 91.0, 63.1, 63.8, 85.1, 71.8, 64.1)),
    (None, None, "real_finetune"): (4, (73.4, 96.8, 78.3, 93.5, 59.3, 94.0, 87.5, 77.1, 87.6, 98.7, 84.6)),
}


def _paper_rows_by_identity() -> dict[tuple, tuple]:
    """Every row of the paper's Table 1, in the paper's order: {(synth_method, variant, setting): values}."""
    rows = dict(_PAPER_REAL_ROWS)
    rows.update({(name, variant, setting): row for name, method in methods.METHODS.items()
                 for (variant, setting), row in method.paper_table1.items()})
    return {key: values for key, (_, values) in sorted(rows.items(), key=lambda item: item[1][0])}


def _paper_table(rows: dict) -> tuple[dict[tuple, dict[str, float]], set[tuple[tuple, str]]]:
    """The paper's cells by (identity, column); an unreadable cell (None) is derived from the row's Avg."""
    table, derived = {}, set()
    for method, values in rows.items():
        cells = dict(zip([*BENCHMARKS, "Avg"], values, strict=True))
        for column in [c for c, v in cells.items() if v is None]:
            known = [v for c, v in cells.items() if c != "Avg" and v is not None]
            cells[column] = round(len(BENCHMARKS) * cells["Avg"] - sum(known), 1)
            derived.add((method, column))
        table[method] = cells
    return table, derived


PAPER_BY_IDENTITY, _PAPER_DERIVED_BY_IDENTITY = _paper_table(_paper_rows_by_identity())


def paper_rows() -> tuple[dict[str, dict[str, float]], set[tuple[str, str]]]:
    """The paper's rows named as this checkout names them (`row_label`), and its derived cells: what
    Table 1 is drawn with, so renaming a method's display name renames its paper row with it."""
    return ({row_label(*key): cells for key, cells in PAPER_BY_IDENTITY.items()},
            {(row_label(*key), column) for key, column in _PAPER_DERIVED_BY_IDENTITY})


PAPER_TABLE1, PAPER_DERIVED = paper_rows()  # by today's names


# --- finding and reading runs -------------------------------------------------------------------

def find_runs(roots: Iterable[str | Path]) -> list[Path]:
    """Run folders (holding params.yaml) at or under each root; ablation sub-runs are part of their parent."""
    found = set()
    for root in roots:
        root = project_path(root)
        if not root.exists():
            raise DataDreamError(f"{root} does not exist; give folders that hold run folders (e.g. runs/).")
        candidates = [root / PARAMS_FILE] if (root / PARAMS_FILE).exists() else sorted(root.rglob(PARAMS_FILE))
        found |= {path.parent for path in candidates if "ablations" not in path.relative_to(root).parts}
    return sorted(found)


def _run_params(run_dir: Path) -> Optional[dict]:
    """A run's params.yaml, or None where it is not readable (`collect` lists such a run as skipped)."""
    try:
        values = yaml.safe_load((run_dir / PARAMS_FILE).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return values if isinstance(values, dict) else None


def collect(run_dirs: Iterable[Path]) -> dict[str, pd.DataFrame]:
    """{"metrics", "fid", "ablations", "skipped"}: tidy tables over all runs; a run without a stage
    adds no rows, and every result file that could not be read, or a finished stage whose result is
    missing, is a row of "skipped" (run, file, why), never a silent gap."""
    metrics, fid, ablations, skipped = [], [], [], []

    def read(path: Path, reader, run_dir: Path):
        try:
            return reader(path)
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError, pd.errors.ParserError) as exc:
            skipped.append({"run": str(run_dir), "file": str(path), "why": f"not readable ({type(exc).__name__})"})
            return None

    for run_dir in run_dirs:
        p = read(run_dir / PARAMS_FILE, lambda path: (lambda v: {**v, **{k: v[k] for k in ("dataset", "seed", "clf_settings")}})(
            yaml.safe_load(path.read_text())), run_dir)
        if p is None:
            continue
        identity = _identity(p)  # None for a run of a method this checkout lacks: its stored names are shown
        common = {"run": run_dir.name, "dataset": p["dataset"], "seed": p["seed"], "synth_method": p.get("synth_method")}
        if stage_done(run_dir, "classification"):
            for setting in p["clf_settings"]:  # a finished stage has every setting's metrics
                if not (run_dir / "classification" / setting / "metrics.json").exists():
                    skipped.append({"run": str(run_dir), "file": str(run_dir / "classification" / setting / "metrics.json"),
                                    "why": "missing, though the classification stage is marked done (rerun the pipeline: it trains it again)"})
        recorded = weights.records(run_dir)
        for path in sorted(run_dir.glob("classification/*/metrics.json")):
            m = read(path, lambda path: (lambda m: {"setting": m["setting"], "source": m.get("source"), "top1": m["top1"],
                                                    "weights": [m.get("weights"), *m.get("synthetic_weights", [])]})(
                json.loads(path.read_text())), run_dir)
            if m is not None:
                label = row_label(*identity, m["setting"]) if identity else naming.stored_row_label(m["setting"], m["source"])
                metrics.append({**common, "variant": identity[1] if identity else None, "setting": m["setting"],
                                "method": label, "top1": m["top1"], "weights": weights_behind(m["weights"], recorded),
                                "file": str(path)})
        for folder, name, out in (("fid", "per_class.csv", fid), ("ablations", "results.csv", ablations)):
            if (run_dir / folder / name).exists():
                table = read(run_dir / folder / name, pd.read_csv, run_dir)
                if table is not None:
                    out.append(_named(table, identity).assign(**common))
    return {"metrics": pd.DataFrame(metrics, columns=["run", "dataset", "seed", "synth_method", "variant", "setting", "method",
                                                      "top1", "weights", "file"]),
            "fid": pd.concat(fid, ignore_index=True) if fid else pd.DataFrame(),
            "ablations": pd.concat(ablations, ignore_index=True) if ablations else pd.DataFrame(),
            "skipped": pd.DataFrame(skipped, columns=["run", "file", "why"])}


def _identity(values: dict) -> Optional[tuple]:
    try:
        return methods.identity(values)
    except KeyError:
        return None


def _named(table: pd.DataFrame, identity: Optional[tuple]) -> pd.DataFrame:
    """A run's FID or ablation table with its rows named (`naming.named`): from the identity its rows
    carry, or for a table written before they carried it, from the run's identity (the names it stored
    were display copies; a run of a method this checkout lacks keeps them)."""
    if "synth_method" in table:
        return naming.named(table)
    if identity is None or "method" not in table:
        return table
    table = table.copy()
    if "setting" in table:  # ablation cells: one row per classifier setting
        table["method"] = [row_label(*identity, setting) for setting in table["setting"]]
    else:  # per-class FID: the run's images and the real reference set
        table.loc[table["method"] != naming.REFERENCE_LABEL, "method"] = methods.display(*identity)
    return table


def weights_behind(ids: list, recorded: dict[str, dict]) -> str:
    """A digest of the pretrained weights behind a result (the classifier's CLIP and the models its
    synthetic images were made with), from the weights records its metrics.json names; "not
    recorded" for a run made before runs recorded them."""
    described = [d for rid in ids if rid in recorded for d in recorded[rid].values() if isinstance(d, dict)]
    return weights.fingerprint(described) if described else "not recorded"


# --- Table 1 ------------------------------------------------------------------------------------

def _row_order(names: Iterable[str]) -> list[str]:
    names = set(names)
    paper = paper_rows()[0]
    return [m for m in paper if m in names] + sorted(names - set(paper))


def _columns(datasets: Iterable[str]) -> list[str]:
    """The ten benchmarks in the paper's order, then any other dataset that was run."""
    return [*BENCHMARKS, *sorted(set(datasets) - set(BENCHMARKS))]


def table1(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, dataset) run, and per method an "Avg" row when all ten datasets are in:
    mean and std of top-1 over seeds (a seed run twice counts once), the paper's number, the difference."""
    per_seed = metrics.groupby(["method", "dataset", "seed"], as_index=False)["top1"].mean()
    stats = per_seed.groupby(["method", "dataset"])["top1"].agg(mean="mean", std="std", seeds="count").reset_index()
    kinds = metrics.groupby(["method", "dataset"])["weights"].nunique() if "weights" in metrics else None
    stats["mixed_weights"] = [bool(kinds is not None and kinds.get((m, d), 1) > 1) for m, d in zip(stats["method"], stats["dataset"])]
    rows = []
    for method in _row_order(stats["method"]):
        mine = stats[stats["method"] == method]
        rows += mine.to_dict(orient="records")
        if set(BENCHMARKS) <= set(mine["dataset"]):
            ten = mine[mine["dataset"].isin(BENCHMARKS)]
            rows.append({"method": method, "dataset": "Avg", "mean": ten["mean"].mean(), "std": np.nan,
                         "seeds": int(ten["seeds"].min()), "mixed_weights": bool(ten["mixed_weights"].any())})
    table = pd.DataFrame(rows, columns=["method", "dataset", "mean", "std", "seeds", "mixed_weights"])
    paper, derived = paper_rows()
    table["paper"] = [paper.get(m, {}).get(d, np.nan) for m, d in zip(table["method"], table["dataset"])]
    table["paper_derived"] = [(m, d) in derived for m, d in zip(table["method"], table["dataset"])]
    table["difference"] = table["mean"] - table["paper"]
    return table


def table1_display(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: per method a row of ours (mean ± std over seeds) and a row of the paper's
    number with our difference in brackets (a method the paper has no row for, e.g. DA-Fusion: "not in
    the paper"); columns are the ten datasets (then others) and Avg."""
    columns = [*_columns(table["dataset"][table["dataset"] != "Avg"]), "Avg"]
    headers = {c: DATASETS[c].table_name if c in DATASETS and DATASETS[c].table_name else c for c in columns}
    cells = {(r.method, r.dataset): r for r in table.itertuples(index=False)}
    paper_table, derived = paper_rows()
    rows = []
    for method in _row_order(table["method"]):
        ours, paper = {"method": method}, {"method": "  paper (difference)"}
        for column, header in headers.items():
            r = cells.get((method, column))
            ours[header] = "" if r is None else f"{r.mean:.1f} ± {r.std:.1f}" if r.seeds > 1 and not np.isnan(r.std) else f"{r.mean:.1f}"
            ours[header] += " (mixed weights)" if r is not None and r.mixed_weights else ""
            reference = paper_table.get(method, {}).get(column)
            mark = "≈" if (method, column) in derived else ""
            paper[header] = ("" if reference is None else f"{mark}{reference:.1f}" if r is None
                             else f"{mark}{reference:.1f} ({r.mean - reference:+.1f})")
        rows += [ours, paper] if method in paper_table else [ours, {"method": "  not in the paper", **dict.fromkeys(headers.values(), "")}]
    return pd.DataFrame(rows, columns=["method", *headers.values()])


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    return header + "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in table.itertuples(index=False))


def to_latex(table: pd.DataFrame) -> str:
    escape = lambda s: str(s).replace("±", r"$\pm$").replace("≈", r"$\approx$").replace("_", r"\_").replace("&", r"\&")  # noqa: E731
    lines = [r"\begin{tabular}{l" + "c" * (len(table.columns) - 1) + "}", r"\toprule",
             " & ".join(escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(escape(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write_table1(metrics: pd.DataFrame, out_stem: Path) -> pd.DataFrame:
    """<stem>.csv (one row per method and dataset, with the paper's number and the difference),
    <stem>.md and <stem>.tex (the paper's layout). Returns the display table."""
    from datadream_lib.files import atomic_write_text

    table = table1(metrics)
    display = table1_display(table)
    out_stem = Path(out_stem)
    atomic_write_text(out_stem.with_suffix(".csv"), table.round(2).to_csv(index=False))
    atomic_write_text(out_stem.with_suffix(".md"), to_markdown(display))
    atomic_write_text(out_stem.with_suffix(".tex"), to_latex(display))
    return display


# --- everything, from run folders ---------------------------------------------------------------

NOTEBOOK_PARAMETERS = {"run_roots": ["runs"], "out_dir": "figures"}  # notebooks/06_paper_results.ipynb


def _synthesized_runs_of_lowest_seed(run_dirs: Iterable[Path]) -> dict[str, list[Path]]:
    """Per dataset, the runs of its lowest seed whose synthesis is done (runs of one dataset and seed
    draw the same shots: their split parameters are the same)."""
    by_dataset: dict[str, dict[int, list[Path]]] = {}
    for run_dir in run_dirs:
        p = _run_params(run_dir)
        if p is not None and stage_done(run_dir, "synthesis"):  # no empty rows of unfinished runs
            by_dataset.setdefault(p["dataset"], {}).setdefault(p["seed"], []).append(run_dir)
    return {dataset: seeds[min(seeds)] for dataset, seeds in sorted(by_dataset.items())}


def _sources(run_dir: Path) -> dict[str, Path]:
    """{display name: folder} of the image sets of a run (or of a shots-ablation sub-run), named from
    its identity (`naming.image_sets`; a run without a known identity keeps the names its manifest rows stored)."""
    from datadream_lib.runs import Run

    values = _run_params(run_dir)
    identity = _identity(values) if values else None
    stored = naming.image_sets(Run(run_dir))
    if identity is None:
        return stored
    return {methods.display(*identity) if folder.name == identity[0] else label: folder for label, folder in stored.items()}


def fig3_sources(run_dirs: Iterable[Path]) -> dict[str, tuple[Path, dict[str, Path]]]:
    """Per dataset, the per-class grid's images: the split of one seed (the lowest) and, for each
    source of synthetic images among that seed's runs (DataDream-dset, IsSynth, DISEF, ...), its folder."""
    out = {}
    for dataset, chosen in _synthesized_runs_of_lowest_seed(run_dirs).items():
        sources = {label: folder for run_dir in chosen for label, folder in _sources(run_dir).items()}
        if sources:
            out[dataset] = (chosen[0] / "split.json", sources)
    return out


def fig3_shot_sources(run_dirs: Iterable[Path]) -> dict[str, tuple[Path, dict[tuple[str, int], Path]]]:
    """Per dataset, the paper's Fig. 3: the split of the run with the most shots (of the lowest
    seed), and {(label, shots): folder} of every source of synthetic images at every K among that
    seed's runs and their shot-ablation sub-runs (ablations/shots/k<K>/)."""
    out = {}
    for dataset, chosen in _synthesized_runs_of_lowest_seed(run_dirs).items():
        found = []
        for run_dir in chosen:
            found.append((run_dir, _run_params(run_dir)["shots"]))
            found += [(sub, int(sub.name[1:])) for sub in sorted((run_dir / "ablations" / "shots").glob("k*"))
                      if sub.name[1:].isdigit() and (sub / "synthetic").is_dir()]
        sources = {(label, k): folder for run_dir, k in found for label, folder in _sources(run_dir).items()}
        if sources:
            widest = max((k, str(run_dir)) for run_dir, k in found if (run_dir / "split.json").exists())
            out[dataset] = (Path(widest[1]) / "split.json", sources)
    return out


# What each result needs from a run: the stage that writes it.
NEEDS = {"classification": "Table 1", "synthesis": "Fig. 3", "fid": "Fig. 4", "ablations": "Fig. 5"}


def unfinished(run_dirs: Iterable[Path]) -> pd.DataFrame:
    """Per run, the planned stages (its params.yaml's `stages`) not done yet, with the result that
    waits for each and the command that finishes it."""
    rows = []
    for run_dir in run_dirs:
        p = _run_params(run_dir)
        if p is None:
            continue
        for stage in p.get("stages") or []:
            if stage in NEEDS and not stage_done(run_dir, stage):
                rows.append({"run": Path(run_dir).name, "stage": stage, "needed_for": NEEDS[stage],
                             "finish_with": f"python -m datadream_lib.pipeline {Path(run_dir) / PARAMS_FILE}"})
    return pd.DataFrame(rows, columns=["run", "stage", "needed_for", "finish_with"])


def weights_used(run_dirs: Iterable[Path]) -> pd.DataFrame:
    """Per run, the pretrained weights its records name (`weights.summary`: repository@commit, a
    local folder with a digest of its files, or a random preset)."""
    return pd.DataFrame([{"run": Path(r).name, "weights": weights.summary(r)} for r in run_dirs], columns=["run", "weights"])


def rebuild(roots: Iterable[str | Path], out_dir: str | Path = "figures") -> dict:
    """Table 1 (CSV, Markdown, LaTeX), Fig. 3 and Fig. 4 per dataset, Fig. 5 per dataset with ablations,
    from every run under `roots`, into `out_dir`. Returns what it wrote and the tables it read."""
    from datadream_lib import figures
    from datadream_lib.files import atomic_write_text

    run_dirs = find_runs(roots)
    if not run_dirs:
        raise DataDreamError(f"no run folders under {[str(r) for r in roots]}; run the pipeline first "
                             f"(python -m datadream_lib.pipeline params/...).")
    tables = collect(run_dirs)
    out = project_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"runs": [str(r) for r in run_dirs], "skipped": tables["skipped"], "weights": weights_used(run_dirs)}
    atomic_write_text(out / "weights_used.csv", written["weights"].to_csv(index=False))
    for row in tables["skipped"].itertuples():
        print(f"[results] skipped {row.file}: {row.why}")
    written["unfinished"] = unfinished(run_dirs)
    for (stage, needed_for), group in written["unfinished"].groupby(["stage", "needed_for"], sort=False):
        print(f"[results] {needed_for} leaves out {len(group)} run(s) whose {stage} stage is not done: "
              f"{', '.join(group['run'])}. Finish one with: {group['finish_with'].iloc[0]}")
    if tables["metrics"].empty:
        print("[results] no Table 1: no run has a finished classification setting (classification/<setting>/metrics.json).")
    if not tables["metrics"].empty:
        for (method, dataset), group in tables["metrics"].groupby(["method", "dataset"]):
            if group["weights"].nunique() > 1:
                print(f"[results] Table 1's cell {method} / {dataset} holds runs made with different pretrained weights "
                      f"({', '.join(f'{r.run}: {r.weights}' for r in group.drop_duplicates('run').itertuples())}); it is "
                      f"marked '(mixed weights)'. `python -m datadream_lib.launch status` shows each run's weights.")
        written["table1"] = write_table1(tables["metrics"], out / "table1")
    fid = tables["fid"]
    for dataset in sorted(set(fid.get("dataset", []))):
        per_class = (fid[fid["dataset"] == dataset].groupby(["method", "class_index"], as_index=False)  # mean over seeds
                     .agg(fid=("fid", "mean"), kid=("kid", "mean"), real_set=("real_set", "first"),
                          **({"features": ("features", "first")} if "features" in fid else {})))
        path = out / f"fig4_fid_{dataset}.png"
        figures.fig4_fid_histogram(per_class, path=path, title=f"{dataset}: per-class FID, mean over seeds")
        written[f"fig4_{dataset}"] = path
    for dataset, (split_file, sources) in fig3_sources(run_dirs).items():
        path = out / f"fig3_{dataset}.png"
        try:
            figures.fig3_real_vs_synthetic(split_file, sources, path=path)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a damaged split.json: said, not fatal
            print(f"[results] skipped Fig. 3 of {dataset}: {split_file} is not readable ({type(exc).__name__})")
            continue
        written[f"fig3_{dataset}"] = path
    for dataset, (split_file, sources) in fig3_shot_sources(run_dirs).items():
        path = out / f"fig3_shots_{dataset}.png"
        try:
            figures.fig3_shots(split_file, sources, path=path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"[results] skipped Fig. 3 (shots) of {dataset}: {split_file} is not readable ({type(exc).__name__})")
            continue
        written[f"fig3_shots_{dataset}"] = path
    ablation = tables["ablations"]
    for dataset in sorted(set(ablation.get("dataset", []))):
        metrics = tables["metrics"]
        real = metrics[(metrics["dataset"] == dataset) & (metrics["setting"] == "real_finetune")]["top1"]
        reference = {"Real-finetune": float(real.mean())} if len(real) else {}
        path = out / f"fig5_ablations_{dataset}.png"
        figures.fig5_ablations(ablation[ablation["dataset"] == dataset], reference, path=path)
        written[f"fig5_{dataset}"] = path
    return written
