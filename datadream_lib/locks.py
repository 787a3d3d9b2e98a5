"""One writer per run folder: an advisory lock (`fcntl.flock`) on `<run>/.lock`.

A pipeline or a script that opens a run for writing holds the lock until it exits, a notebook from
its first cell to its last (`pipeline.finish`); a second writer is refused at once, with who holds
it (host, pid, since when). The kernels a pipeline starts for its notebooks inherit its lock (they
find its token in the environment).
The parts of one run work side by side (synthesis shards, the classes of a per-class preparation,
classifier settings: what the launcher's units select): each takes the folder's lock shared and its
own part's lock exclusively, so two copies of one part, or a whole run beside a part, are refused.

The operating system drops a lock when its process ends, kill -9 included, so a lock cannot go
stale on a local disk. On a network filesystem without working `flock`, a crashed machine can
leave one behind: the message says which file to delete once that process is surely gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path

from datadream_lib.errors import DataDreamError

LOCK_FILE = ".lock"
ENV = "DATADREAM_HELD_LOCKS"  # tokens of the locks held by the process that started this one

_held: dict[Path, tuple[int, str]] = {}  # lock file -> (open descriptor, token), for this process
_INHERITED = os.environ.get(ENV, "")  # the tokens of the process that started this one


def _publish() -> None:
    """Put the tokens of every lock this process holds (and those it inherited) in the environment,
    for the processes it starts (papermill kernels)."""
    tokens = ",".join(t for t in (_INHERITED, *(token for _, token in _held.values())) if t)
    if tokens:
        os.environ[ENV] = tokens
    else:
        os.environ.pop(ENV, None)


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _inherited(path: Path) -> bool:
    """The lock is held by the process that started this one (a pipeline running its notebooks)."""
    token = _holder(path).get("token")
    return bool(token) and token in _INHERITED.split(",")


def _acquire(path: Path, shared: bool, folder: Path) -> None:
    if path in _held:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        if _inherited(path):
            return
        who = _holder(path)
        holder = (f"process {who.get('pid')} on {who.get('host')}, since {who.get('since')}" if "pid" in who
                  else "parts of this run (shards, classifier settings)" if who.get("shared") else "another process")
        raise DataDreamError(
            f"run folder {folder} is in use by {holder}: one process writes a run at a time. Wait for it to "
            f"finish, or stop it. If that process is gone (a crashed machine, with the run on a network "
            f"filesystem), delete {path} and start again.") from None
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    holder = {"shared": True, "since": since} if shared else \
        {"host": socket.gethostname(), "pid": os.getpid(), "since": since, "token": token}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    _held[path] = (fd, token)
    _publish()


def lock_run(folder: Path, part: str | None = None) -> None:
    """Hold `folder` for this process: exclusively, or, for a part of the run (a shard, a classifier
    setting: `runs.part_of`), the folder shared and the part exclusively."""
    folder = Path(folder)
    _acquire(folder / LOCK_FILE, shared=part is not None, folder=folder)
    if part is not None:
        _acquire(folder / f"{LOCK_FILE}-{part}", shared=False, folder=folder)


def release_all() -> None:
    """Drop every lock this process holds (the process's end does the same)."""
    for fd, _ in _held.values():
        os.close(fd)
    _held.clear()
    _publish()
