"""Training curves for TensorBoard, beside the run's own records.

The run folder's JSON records (adapter.json, metrics.json, fid/per_class.csv) stay the source of
every table and figure; this module adds TensorBoard event files under `<run>/tensorboard/`, written
as each adapter, classifier setting or analysis finishes, so `tensorboard --logdir runs` shows every run of a grid side by side: adaptation
loss and lr per step, the classifier's loss, lr and validation accuracy per epoch and its test top-1,
and FID / KID per class (step = class index). `tracking: none` turns it off. docs/tracking.md says why TensorBoard and
how W&B or MLflow users read the same files.

Event files are append-only logs: a stage run again (a resume, a repair) adds a new file, and
TensorBoard shows the curve again from its first step. Nothing reads them back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

FOLDER = "tensorboard"


class Curves:
    """Scalars of one part of a run (an adapter, a classifier setting, the FID analysis), or nothing
    when tracking is off. A context manager: the file is flushed and closed on exit."""

    def __init__(self, folder: Optional[Path]):
        self._writer = None
        if folder is not None:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when tracking

            folder.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(log_dir=str(folder))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, float(value), step)

    def scalars(self, tag: str, values, first_step: int = 1) -> None:
        for step, value in enumerate(values, start=first_step):
            self.scalar(tag, value, step)

    def text(self, tag: str, markdown: str) -> None:
        if self._writer is not None:
            self._writer.add_text(tag, markdown)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "Curves":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def curves(tracking: str, run_dir: Path, part: str) -> Curves:
    """The curves of `part` (e.g. "adaptation/dset", "classification/synthetic") of the run in
    `run_dir`: event files in `<run_dir>/tensorboard/<part>/` when `tracking` is "tensorboard"."""
    return Curves(Path(run_dir) / FOLDER / part if tracking == "tensorboard" else None)
