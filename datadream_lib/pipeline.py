"""The whole chain in one command:

    python -m datadream_lib.pipeline PARAMS.yaml [--set KEY=VALUE ...]

A file with `seeds: [0, 1, 2]` runs once per seed, one after the other. For each run it validates
the whole parameter file, stops at once if a full-size model would start without a GPU, refuses a
run folder that holds a run with other parameters and a plan whose stages lack their inputs, checks
runs_root, the model weights and the dataset, draws the split, then creates (or reopens) and locks
`runs/<run_name>/` and executes the notebooks in `stages` in order with papermill into
`runs/<run_name>/notebooks/`. The executed notebooks are the record of the run. A finished stage is
skipped unless its outputs are found missing or damaged (then it runs again and repairs them); an
unfinished one resumes (its earlier executed notebook is kept as `*.attempt-N.ipynb`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from datadream_lib import environment, files, locks, methods, models, params, progress, runs, runtime, splits, stages, weights
from datadream_lib.errors import DataDreamError


def setup(namespace: dict):
    """The first cell of every notebook: parameters, run folder, split. Returns (P, run, split)."""
    environment.exit_without_final_collection()  # the kernel ends a second sooner
    p = params.from_namespace(namespace)
    runtime.check_device(p)
    run, split = splits.start_run(p)
    weights.check_resume(run.dir, plan_weights(p), p.allow_weights_change)  # a notebook run without the pipeline
    print(f"run folder: {run.dir}\ndataset: {split.dataset} ({len(split.classnames)} classes, {p.shots} shots; "
          f"splits: {split.source})\nmodels: {p.models}")
    return p, run, split


def finish(run, stage: str) -> bool:
    """The last cell of every notebook: the stage is done (if its outputs are complete), and the
    locks this kernel took are released, so the next notebook (another kernel) can open the run."""
    done = run.finish_stage(stage)
    locks.release_all()
    return done


def preflight(p, folder: Optional[Path] = None) -> None:
    """Everything that can fail cheaply, before any training: the device, runs_root, and the
    weights the plan loads (reachable, readable, and the ones the run folder's records name)."""
    runtime.check_device(p)
    check_writable(runs.project_path(p.runs_root))
    weights.check_resume(folder or runs.run_dir(p), plan_weights(p), p.allow_weights_change)


def plan_weights(p) -> list[dict]:
    """The pretrained weights the plan's stages load (the stage table's `loads`), each checked cheaply
    (reachable, readable) and described (`weights.py`): the method's, the classifier's CLIP, the FID
    features (Inception's; a tiny random net's need no weights)."""
    from datadream_lib import fid

    loads = {model for stage in stages.STAGES if stage.name in p.stages for model in stage.loads(p)}
    described = []
    if "method" in loads:
        described += [check() for check in methods.METHODS[p.synth_method].weights(p)]
    if "clip" in loads:
        described.append(models.check_clip_reachable(p))
    if "fid_features" in loads and p.fid_features == "inception":
        fid.InceptionFeatures.state_dict_from(p.inception_weights)  # a local file, the torch hub cache, or a download
        described.append(fid.InceptionFeatures.describe(p.inception_weights))
    return [d for d in described if d]


def check_writable(runs_root: Path) -> None:
    """runs_root is (or can become) a folder this process may write in."""
    existing = next(folder for folder in (runs_root, *runs_root.parents) if folder.exists())
    if not existing.is_dir():
        raise DataDreamError(f"runs_root {runs_root}: {existing} is a file, not a folder; set runs_root to a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataDreamError(f"runs_root {runs_root}: {existing} is not writable by this user; set runs_root to a "
                             f"folder you can write, or fix its permissions.")


def reads(p, stage: str) -> tuple[str, ...]:
    """The stages whose outputs `stage` reads under parameters `p` (the stage table's `reads`)."""
    return stages.BY_NAME[stage].reads(p, methods.METHODS[p.synth_method])


def check_plan(p, folder: Path) -> None:
    """Every stage in `stages` finds what it reads: a stage before it in the plan, or already done;
    and not a stage of which this process makes only a part (a shard): its other parts are made
    elsewhere, so it is not complete when the stage that reads it starts."""
    done = {stage for stage in stages.NAMES if runs.stage_done(folder, stage)}
    for stage in (s for s in stages.NAMES if s in p.stages):
        for need in (need for need in reads(p, stage) if need not in done):
            if need not in p.stages:
                raise DataDreamError(f"stages {p.stages}: {stage} reads the outputs of {need}, which is neither in "
                                     f"the plan nor done in {folder}. Add '{need}' to stages (they run in the "
                                     f"order {list(stages.NAMES)}).")
            part = stages.BY_NAME[need].part(p)
            if part is not None:
                raise DataDreamError(f"stages {p.stages}: {stage} reads the outputs of {need}, of which this process "
                                     f"makes only a part ({part}); other processes make the rest. Make every part of {need} first (one process "
                                     f"without selectors, e.g. num_shards: 1, or `python -m datadream_lib.launch "
                                     f"local`, which orders the parts), then start {stage}.")


def damaged_outputs(p, run, split, stage: str) -> list[str]:
    """Outputs of a finished stage that a later stage would trip over (the stage table's `damage`)."""
    return stages.BY_NAME[stage].damaged(p, run, split)


RUN_FOLDERS = ("stages", "notebooks", "tensorboard", *(stage.folder for stage in stages.STAGES), "figures",
               environment.FOLDER, weights.FOLDER)


def check_run_layout(folder: Path) -> None:
    """The run folder's own subfolders are folders: a file in their place stops here, not in a notebook cell."""
    for name in RUN_FOLDERS:
        if (folder / name).exists() and not (folder / name).is_dir():
            raise DataDreamError(f"run folder {folder}: {folder / name} is a file, but the run keeps its {name} there "
                                 f"as a folder. Move that file away (or set run_name to a new name); nothing was changed.")


def _log_timing(run, stage: str, part, seconds: float) -> None:
    """One row per stage (or part) executed, appended to the run's timings.jsonl: what the
    launcher's status adds up into GPU-hours."""
    import socket

    from datadream_lib.catalog import JsonlWriter

    writer = JsonlWriter(run.path("timings.jsonl"))
    try:
        writer.append({"stage": stage, "part": part, "seconds": seconds, "host": socket.gethostname(),
                       "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    finally:
        writer.close()


def _literal(path: Path) -> str:
    """A path as papermill reads it literally: papermill fills `{name}` in paths from the parameters,
    so a run folder or runs_root with braces (`x{seed}`) has them doubled."""
    return str(path).replace("{", "{{").replace("}", "}}")


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


@contextlib.contextmanager
def _kernel_transport():
    """The kernel talks to papermill over local sockets in a private temporary folder (IPC), not TCP
    ports: nothing else on the node can connect, and ipykernel has nothing to warn about."""
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="datadream-kernel-") as folder:
        yield Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "kernel")}})


def run_pipeline(p, log_output: bool = False, in_process: bool = False) -> dict[str, float]:
    """Execute the stages' notebooks in order; returns seconds per stage executed.

    `in_process`: call each stage's function in this process instead (what its notebook calls,
    without the notebook's figures and executed record): the same plan checks, resume and repair.
    For the library's end-to-end tests, which would otherwise pay a kernel per stage."""
    if not in_process:
        import papermill

        logging.getLogger("papermill").addFilter(_KnownParameters())

    folder = runs.run_dir(p)
    check_run_layout(folder)
    runs.check_compatible(p, folder)  # a folder holding another run is refused first,
    if folder.is_dir():               # then one that another process is writing,
        locks.lock_run(folder, runs.part_of(p))
    check_plan(p, folder)             # then a plan whose stages lack their inputs,
    preflight(p, folder)              # then an unwritable runs_root, unreachable or changed weights,
    run, split = splits.start_run(p)    # then bad data; only then is the run folder created (and locked)
    root = runs.project_root()
    timings = {}
    for stage in (s for s in stages.STAGES if s.name in p.stages):
        if run.stage_done(stage.name):
            damaged = stage.damaged(p, run, split)
            if not damaged:
                print(f"[pipeline] {stage.name}: complete, skipped")
                continue
            print(f"[pipeline] {stage.name}: {len(damaged)} output(s) missing or damaged (e.g. {damaged[0]}); running "
                  f"it again to repair them", flush=True)
            run.reopen_stage(stage.name)
        started = time.time()
        if in_process:
            print(f"[pipeline] {stage.name}: calling {stage.function} in this process", flush=True)
            weights.forget()  # as a kernel of its own would: no other run's or stage's loaded weights
            stage.load()(p, run, split, progress=False)
            run.finish_stage(stage.name)
            out = f"{stage.function} (in process)"
        else:
            out = run.path("notebooks", stage.record_notebook(p))
            out.parent.mkdir(parents=True, exist_ok=True)
            _keep_previous(out)
            print(f"[pipeline] {stage.name}: executing {stage.notebook} -> {out}", flush=True)
            with progress.Follower(f"[pipeline] {stage.name}: ", enabled=not log_output):  # the kernel's bars, here
                with _kernel_transport() as config:
                    papermill.execute_notebook(_literal(root / "notebooks" / stage.notebook), _literal(out),
                                               parameters={"base": "paper", **p.given()}, cwd=str(root),
                                               progress_bar=False, log_output=log_output, config=config)
            out.chmod(out.stat().st_mode & ~0o222)  # the record of the stage: viewing it in JupyterLab cannot rewrite it
        timings[stage.name] = round(time.time() - started, 1)
        print(f"[pipeline] {stage.name}: done in {timings[stage.name]:.1f} s", flush=True)
        part = stage.part(p)
        _log_timing(run, stage.name, runs.part_of(p) if part is not None else None, timings[stage.name])
        if not run.stage_done(stage.name):
            if part is not None:
                print(f"[pipeline] {stage.name}: this part ({runs.part_of(p)}) is done; the stage is done once every "
                      f"part is (the other shards or settings; `python -m datadream_lib.launch status` shows them).")
                break
            raise DataDreamError(f"stage {stage.name} ran but did not mark itself done; see {out}.")
    files.write_json(run.path("timings.json"), {"stages": timings, "total": round(sum(timings.values()), 1)})
    print(f"[pipeline] finished {run.dir} in {sum(timings.values()):.1f} s ({timings})")
    return timings


def main(argv=None, in_process: bool = False) -> int:
    """The command line; `in_process` (for tests, not a flag): `run_pipeline(..., in_process=True)`."""
    parser = argparse.ArgumentParser(prog="python -m datadream_lib.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("params", help="a parameter file, e.g. params/demo.yaml, or a grid: params/paper/table1.yaml --set dataset=eurosat")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one parameter (repeatable), e.g. --set seed=1")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    args = parser.parse_args(argv)
    environment.exit_without_final_collection()
    try:
        todo = params.load_runs(args.params, params.parse_overrides(args.overrides))
        for p in todo:  # every seed's parameters are valid before the first starts
            if len(todo) > 1:
                print(f"[pipeline] run {p.run_name} (seed {p.seed})", flush=True)
            try:
                run_pipeline(p, log_output=args.log_output, in_process=in_process)
            finally:
                if in_process:  # this process goes on: the run folder is free for the next
                    locks.release_all()
    except DataDreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be written, a full disk: the path and the reason, in one line
        print(f"error: {exc.strerror or exc} ({exc.filename or 'no file named'}); check that folder's permissions and "
              f"free space.", file=sys.stderr)
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
