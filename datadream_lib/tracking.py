"""Training curves for experiment trackers, beside the run's own records.

The run folder's JSON records (adapter.json, metrics.json, fid/per_class.csv) stay the source of
every table and figure; this module sends the same numbers to the trackers named by the parameter
`tracking`, a `+`-joined choice of:

- `tensorboard` (the default): event files under `<run>/tensorboard/<part>/`, so
  `tensorboard --logdir runs` shows every run of a grid side by side;
- `wandb`: a W&B run per part, offline unless `WANDB_MODE` says otherwise, under `<run>/wandb/`
  (`wandb sync` uploads it later); grouped by the run's name;
- `mlflow`: an MLflow run per part in the store `MLFLOW_TRACKING_URI` names, or else in the run's
  own SQLite store `<run>/mlflow/mlflow.db`; tagged with the run's name;

or `none`. A part is an adapter ("adaptation/dset"), a classifier setting ("classification/synthetic")
or the FID analysis ("fid"). Scalars: adaptation loss and lr per step; the classifier's loss per
step and, per epoch, its mean loss, lr and validation top-1 (sent as each epoch ends), then its test
top-1; FID / KID per class (step = class index). docs/tracking.md says why TensorBoard by default.

The trackers' files are logs: a stage run again (a resume, a repair) adds to them, and nothing reads
them back.
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Optional

from datadream_lib import PROJECT
from datadream_lib.errors import DataDreamError

TRACKERS = ("tensorboard", "wandb", "mlflow")
TENSORBOARD, WANDB, MLFLOW = "tensorboard", "wandb", "mlflow"  # folders under the run
PACKAGES = {TENSORBOARD: "tensorboard", WANDB: "wandb", MLFLOW: "mlflow"}


def names(tracking: str) -> list[str]:
    """The trackers of a `tracking` value ("none": no tracker)."""
    return [] if tracking == "none" else tracking.split("+")


def check(value: str, where: str) -> None:
    """A `tracking` value names trackers of TRACKERS joined by '+', each once, or is 'none'; each
    tracker's package is installed (checked before any work, without importing it)."""
    chosen = names(value)
    unknown = [n for n in chosen if n not in TRACKERS]
    if unknown or not chosen and value != "none" or len(set(chosen)) != len(chosen):
        raise DataDreamError(f"{where}: {value!r} is not 'none' or trackers of {list(TRACKERS)} joined by '+' "
                             f"(e.g. 'tensorboard+wandb').")
    for name in chosen:
        package = PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise DataDreamError(f"{where}: {name!r} needs the Python package {package!r}, which this environment "
                                 f"lacks; `make setup` installs it (requirements.lock), or choose another tracker.")


class _TensorBoard:
    def __init__(self, run_dir: Path, part: str):
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when tracking

        folder = run_dir / TENSORBOARD / part
        folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(folder))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, markdown: str) -> None:
        self.writer.add_text(tag, markdown)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    """One W&B run per part. Each tag has its own x axis (`<tag>/step`), since the parts log in
    several sweeps (all losses, then all learning rates) where W&B's own step only increases."""

    def __init__(self, run_dir: Path, part: str):
        import wandb

        folder = run_dir / WANDB
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(dir=str(folder), mode=os.environ.get("WANDB_MODE", "offline"),
                              project=os.environ.get("WANDB_PROJECT", PROJECT), group=run_dir.name,
                              name=f"{run_dir.name}/{part}", job_type=part.split("/")[0],
                              reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        self.axes: set[str] = set()

    def scalar(self, tag: str, value: float, step: int) -> None:
        if tag not in self.axes:
            self.run.define_metric(f"{tag}/step", hidden=True)
            self.run.define_metric(tag, step_metric=f"{tag}/step")
            self.axes.add(tag)
        self.run.log({tag: value, f"{tag}/step": step})

    def text(self, tag: str, markdown: str) -> None:
        self.run.summary[tag] = markdown

    def flush(self) -> None:
        pass  # W&B's service writes as it receives

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    """One MLflow run per part; metrics are buffered and sent in batches (one call per flush)."""

    def __init__(self, run_dir: Path, part: str):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine unasked
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            (run_dir / MLFLOW).mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(run_dir / MLFLOW / 'mlflow.db').resolve()}"
        self.client, self.metric = MlflowClient(tracking_uri=uri), Metric
        experiment = self.client.get_experiment_by_name(PROJECT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(PROJECT)
        self.run_id = self.client.create_run(experiment_id, run_name=f"{run_dir.name}/{part}",
                                             tags={"datadream.run": run_dir.name, "datadream.part": part}).info.run_id
        self.pending: list = []

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.pending.append(self.metric(tag, value, int(time.time() * 1000), step))

    def text(self, tag: str, markdown: str) -> None:
        self.client.set_tag(self.run_id, tag, markdown)

    def flush(self) -> None:
        for start in range(0, len(self.pending), 1000):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, metrics=self.pending[start:start + 1000])
        self.pending = []

    def close(self) -> None:
        self.flush()
        self.client.set_terminated(self.run_id)


SINKS = {TENSORBOARD: _TensorBoard, WANDB: _WandB, MLFLOW: _MLflow}


class Curves:
    """Scalars of one part of a run, sent to each chosen tracker (none: nothing is sent). A context
    manager: everything is flushed and closed on exit."""

    def __init__(self, sinks: list):
        self._sinks = sinks

    def scalar(self, tag: str, value: float, step: int) -> None:
        for sink in self._sinks:
            sink.scalar(tag, float(value), int(step))

    def scalars(self, tag: str, values, first_step: int = 1) -> None:
        for step, value in enumerate(values, start=first_step):
            self.scalar(tag, value, step)

    def text(self, tag: str, markdown: str) -> None:
        for sink in self._sinks:
            sink.text(tag, markdown)

    def flush(self) -> None:
        """Make what was sent so far visible (e.g. after each epoch)."""
        for sink in self._sinks:
            sink.flush()

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
        self._sinks = []

    def __enter__(self) -> "Curves":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def curves(tracking: str, run_dir: Optional[Path], part: str) -> Curves:
    """The curves of `part` (e.g. "adaptation/dset", "classification/synthetic") of the run in
    `run_dir`, for the trackers `tracking` names (None for run_dir: nothing is tracked)."""
    if run_dir is None:
        return Curves([])
    return Curves([SINKS[name](Path(run_dir), part) for name in names(tracking)])
