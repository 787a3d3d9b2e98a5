"""Files written whole or not at all: a temporary file in the same folder, flushed and renamed into
place, with the permissions the umask gives. An interrupted write never leaves a half-written file
under its final name. The project's lowest floor: it imports nothing of the project."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional


def _umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run on a shared cluster is readable as any file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))


def report_json(report: dict, out: Optional[Path] = None) -> dict:
    """Print a benchmark's JSON report; with `out`, also write it there (atomically)."""
    text = json.dumps(report, indent=1)
    print(text)
    if out:
        atomic_write_text(out, text)
    return report


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def json_records(folder: Path) -> dict[str, dict]:
    """The readable JSON objects of a folder's `*.json` files, by file stem (a damaged or missing
    record is left out, never fatal)."""
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(content, dict):
            out[path.stem] = content
    return out


def record_damage(path: Path, kind: str) -> Optional[str]:
    """Why a result file cannot be read (None if it can): missing, or not valid JSON / CSV."""
    if not Path(path).is_file():
        return "missing"
    try:
        if kind == "json":
            json.loads(Path(path).read_text())
        else:
            import pandas as pd

            pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError is a ValueError
        return f"not readable {kind.upper()} ({type(exc).__name__})"
    return None
