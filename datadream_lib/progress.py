"""Progress bars that show where the work is, wherever it runs.

Every long loop of the library (adaptation steps, images generated, classifier epochs, per-class FID)
counts through `bar(...)`. One kind of bar serves every place a researcher looks:

- in a notebook (JupyterLab, or papermill's executed copy) it is a text bar on stdout, redrawn in
  place; the saved notebook keeps the text, so a run's record shows each bar's final state
  (`200/200`), where a widget bar would be saved frozen at its first frame (papermill#165, #765);
- in the terminal of `python -m datadream_lib.pipeline`, which runs the notebook in a kernel
  whose output it cannot see: the kernel also appends each redraw, as one JSON line, to the file
  named by $DATADREAM_PROGRESS_FILE, and the pipeline follows that file (`Follower`) and prints
  steps or images done, the rate and the time left, per stage.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from tqdm.std import tqdm

PROGRESS_FILE = "DATADREAM_PROGRESS_FILE"
MININTERVAL = 2.0  # seconds between redraws: a saved notebook holds a few lines per minute of work


class Bar(tqdm):
    """tqdm's text bar on stdout; each redraw is also reported to $DATADREAM_PROGRESS_FILE, if set."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", MININTERVAL)
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
        self._report_to = None  # tqdm's close() sets `disable` before its last redraw: decide here
        super().__init__(*args, **kwargs)
        self._report_to = None if self.disable else os.environ.get(PROGRESS_FILE)
        if self._report_to:
            self._report()

    def display(self, msg=None, pos=None):
        shown = super().display(msg, pos)
        if self._report_to:
            self._report()
        return shown

    def _report(self) -> None:
        record = {"desc": self.desc, "n": self.n, "total": self.total, "unit": self.unit,
                  "elapsed": round(self._time() - self.start_t, 2)}
        try:
            with open(self._report_to, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError:  # progress is a courtesy: never a reason for the work to fail
            self._report_to = None


def bar(iterable=None, *, total=None, desc: str = "", unit: str = "it", disable: bool = False,
        leave: bool = True) -> Bar:
    """A progress bar over `iterable` (or one to `.update()` up to `total`)."""
    return Bar(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave)


def describe(record: dict) -> str:
    """One line for the terminal: `adapt dataset: 120/200 steps, 5.2 steps/s, 15 s left`."""
    n, total, unit, elapsed = record["n"], record.get("total"), record.get("unit") or "it", record.get("elapsed") or 0
    rate = n / elapsed if elapsed > 0 else None
    text = f"{record.get('desc') or 'work'}: {n}" + (f"/{total}" if total else "") + f" {unit}"
    if rate:
        text += f", {rate:.3g} {unit}/s"
        if total and n < total:
            text += f", {_duration((total - n) / rate)} left"
    if total and n >= total:
        text += f", done in {_duration(elapsed)}"
    return text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Follower:
    """While a stage's notebook runs in its kernel: names a progress file for the kernel's bars
    ($DATADREAM_PROGRESS_FILE, which the kernel inherits), follows it, and prints the bars to `out`.

    On a terminal the line is redrawn in place; in a log (SLURM's, CI's) a bar is printed when it
    starts, at most every `every` seconds while it runs, and when it ends."""

    def __init__(self, prefix: str, out=None, every: float = 30.0, poll: float = 1.0, enabled: bool = True):
        self.prefix, self.every, self.poll, self.enabled = prefix, every, poll, enabled
        self.out = out or sys.stdout
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.path: Path | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._offset = 0
        self._printed: dict[str, float] = {}  # bar -> when it was last printed (log mode)
        self._last: dict[str, int] = {}  # bar -> the count last printed
        self._redrawn = False
        self._previous: str | None = None

    def __enter__(self) -> "Follower":
        if not self.enabled:
            return self
        handle, name = tempfile.mkstemp(prefix="datadream-progress-", suffix=".jsonl")
        os.close(handle)
        self.path = Path(name)
        self._previous = os.environ.get(PROGRESS_FILE)
        os.environ[PROGRESS_FILE] = name
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        if self._previous is None:
            os.environ.pop(PROGRESS_FILE, None)
        else:
            os.environ[PROGRESS_FILE] = self._previous
        self._stop.set()
        self._thread.join()
        self._read()  # the last redraws, written after the final poll
        if self._redrawn:
            print(file=self.out, flush=True)
        self.path.unlink(missing_ok=True)
    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self._read()

    def _read(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return
        complete = chunk[:chunk.rfind("\n") + 1]  # a line still being written waits for the next poll
        self._offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            try:
                self._show(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue

    def _show(self, record: dict) -> None:
        text = f"{self.prefix}{describe(record)}"
        if self.tty:
            print("\r" + text[:160].ljust(100), end="", file=self.out, flush=True)
            self._redrawn = True
            return
        key, now = record.get("desc") or "", time.monotonic()
        if self._last.get(key) == record["n"]:  # a bar's closing redraw repeats its last count
            return
        finished = bool(record.get("total")) and record["n"] >= record["total"]
        if key not in self._printed or finished or now - self._printed[key] >= self.every:
            self._printed[key], self._last[key] = now, record["n"]
            print(text, file=self.out, flush=True)
