"""The whole chain in one command:

    python -m datadream_lib.pipeline PARAMS.yaml [--set KEY=VALUE ...]

A file with `seeds: [0, 1, 2]` runs once per seed, one after the other. For each run it validates
the whole parameter file, stops at once if a full-size model would start without a GPU, opens (or
creates) `runs/<run_name>/` and refuses a folder that holds a run with other parameters, draws the
split and checks the dataset and the model weights, then executes the notebooks in `stages` in
order with papermill into `runs/<run_name>/notebooks/`.
The executed notebooks are the record of the run. A stage whose outputs are complete is skipped;
an unfinished one resumes (its earlier executed notebook is kept as `*.attempt-N.ipynb`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import yaml

from datadream_lib import data, models, params, runs
from datadream_lib.errors import DataDreamError

NOTEBOOKS = (
    ("adaptation", "01_adaptation.ipynb"),
    ("synthesis", "02_synthesis.ipynb"),
    ("classification", "03_classification.ipynb"),
    ("fid", "04_fid_analysis.ipynb"),
    ("ablations", "05_ablations.ipynb"),
)


def setup(namespace: dict):
    """The first cell of every notebook: parameters, run folder, split. Returns (P, run, split)."""
    p = params.from_namespace(namespace)
    models.check_device(p)
    run, split = data.start_run(p)
    print(f"run folder: {run.dir}\ndataset: {split.dataset} ({len(split.classnames)} classes, {p.shots} shots; "
          f"splits: {split.source})\nmodels: {p.models}")
    return p, run, split


def preflight(p) -> None:
    """Everything that can fail cheaply, before any training."""
    from datadream_lib import fid

    models.check_device(p)
    models.check_sd_reachable(p)
    models.check_clip_reachable(p)
    if p.fid_features == "inception" and "fid" in p.stages:
        fid.InceptionFeatures.state_dict_from(p.inception_weights)  # a local file, the torch hub cache, or a download


def _keep_previous(path: Path) -> None:
    if path.exists():
        attempt = 1
        while path.with_name(f"{path.stem}.attempt-{attempt}.ipynb").exists():
            attempt += 1
        path.rename(path.with_name(f"{path.stem}.attempt-{attempt}.ipynb"))


class _KnownParameters(logging.Filter):
    """The notebooks declare only `base`; every other name is checked by params.from_namespace."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


def run_pipeline(p, log_output: bool = False) -> dict[str, float]:
    """Execute the stages' notebooks in order; returns seconds per stage executed."""
    import papermill

    logging.getLogger("papermill").addFilter(_KnownParameters())

    runs.check_compatible(p, runs.run_dir(p))  # a folder holding another run is refused first,
    preflight(p)                               # then unreachable weights,
    run, _ = data.start_run(p)                 # then bad data; only then is the run folder created
    if p.num_shards > 1 and not run.stage_done("adaptation"):
        raise DataDreamError(f"num_shards {p.num_shards}: shards share the run's adapters, so train them first with "
                             f"num_shards: 1 (notebooks/01_adaptation.ipynb, or the pipeline), then start the shards.")
    root = runs.project_root()
    timings = {}
    for stage, notebook in NOTEBOOKS:
        if stage not in p.stages:
            continue
        if run.stage_done(stage):
            print(f"[pipeline] {stage}: complete, skipped")
            continue
        out = run.path("notebooks", notebook)
        out.parent.mkdir(parents=True, exist_ok=True)
        _keep_previous(out)
        started = time.time()
        print(f"[pipeline] {stage}: executing {notebook} -> {out}", flush=True)
        papermill.execute_notebook(str(root / "notebooks" / notebook), str(out), parameters={"base": "paper", **p.to_dict()},
                                   cwd=str(root), progress_bar=False, log_output=log_output)
        timings[stage] = round(time.time() - started, 1)
        print(f"[pipeline] {stage}: done in {timings[stage]:.1f} s", flush=True)
        if not run.stage_done(stage):
            if stage == "synthesis" and p.num_shards > 1:
                print(f"[pipeline] shard {p.shard_index} of {p.num_shards} is done; run the other shards, then run the "
                      f"pipeline again with num_shards: 1 to go on.")
                break
            raise DataDreamError(f"stage {stage} ran but did not mark itself done; see {out}.")
    runs.write_json(run.path("timings.json"), {"stages": timings, "total": round(sum(timings.values()), 1)})
    print(f"[pipeline] finished {run.dir} in {sum(timings.values()):.1f} s ({timings})")
    return timings


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise DataDreamError(f"--set {pair!r}: write KEY=VALUE, e.g. --set shard_index=1.")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datadream_lib.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("params", help="a parameter file, e.g. params/demo.yaml or params/paper/eurosat_dset.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one parameter (repeatable), e.g. --set seed=1")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    args = parser.parse_args(argv)
    try:
        todo = params.load_runs(args.params, parse_overrides(args.overrides))
        for p in todo:  # every seed's parameters are valid before the first starts
            if len(todo) > 1:
                print(f"[pipeline] run {p.run_name} (seed {p.seed})", flush=True)
            run_pipeline(p, log_output=args.log_output)
    except DataDreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # papermill's execution error: point at the executed notebook
        if type(exc).__name__ == "PapermillExecutionError":
            cause = getattr(exc, "ename", ""), getattr(exc, "evalue", "")
            print(f"error: a notebook cell failed ({cause[0]}: {cause[1]}); the executed notebook in the run "
                  f"folder's notebooks/ shows the cell and its traceback.", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
