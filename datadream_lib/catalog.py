"""The catalog of generated images: what the synthesis stage has written, read without the engine.

A method's images live in `synthetic/<synth_method>/<class folder>/<index>.png`, each listed by one
row of a shard's manifest (`manifest-SSS-of-NNN.jsonl`) once it is complete on disk: class, index,
seed, the image's own plan (prompt, source shot, strength, ...), how it was made (method, model,
sampler, steps, guidance, batch), its size in bytes and the sha256 of its bytes. The classifier, the FID analysis and the
figures read images through this module only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from datadream_lib.errors import DataDreamError

MANIFEST_GLOB = "manifest-*.jsonl"


def folder(run, method: str) -> Path:
    """Where a method's images of a run are."""
    return run.path("synthetic", method)


def manifest_name(shard_index: int, num_shards: int) -> str:
    return f"manifest-{shard_index:03d}-of-{num_shards:03d}.jsonl"


def read_manifest(folder: Path) -> list[dict]:
    """One row per image (class, index), from every complete row of every shard's manifest: a torn
    last line is ignored, and an image listed twice (regenerated after damage, perhaps by another
    shard layout) counts once, by the row that matches the file on disk."""
    rows: dict[tuple[int, int], list[dict]] = {}
    for path in sorted(Path(folder).glob(MANIFEST_GLOB)):
        for row in read_jsonl(path):
            rows.setdefault((row["class_index"], row["index"]), []).append(row)
    return [listed[-1] if len(listed) == 1 else
            ([r for r in listed if image_damage(folder, r, checksum=True) is None] or listed)[-1] for listed in rows.values()]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_damage(folder: Path, row: dict, checksum: bool = False) -> Optional[str]:
    """Why a listed image cannot be used (None if it can): its size against the row's, and with
    `checksum` also its bytes against the row's sha256 (a same-size corruption; rows written before
    checksums were recorded are checked by size only)."""
    path = Path(folder) / row["path"]
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != row.get("bytes", size) or size == 0:
        return f"{size} bytes, not the {row.get('bytes')} written"
    if checksum and row.get("sha256") and file_sha256(path) != row["sha256"]:
        return "its bytes differ from the checksum written (same size: corrupted in place)"
    return None


def damaged_images(folder: Path, rows: Optional[list[dict]] = None) -> list[str]:
    """The listed images that are missing or damaged, checksums compared (for the pipeline's resume
    check); `rows`: the manifest if already read."""
    rows = read_manifest(folder) if rows is None else rows
    return [f"{folder / row['path']}: {why}" for row in rows if (why := image_damage(folder, row, checksum=True))]


def intact_keys(folder: Path, rows: Optional[list[dict]] = None,
                checksum_keys: Optional[set] = None) -> set[tuple[int, int]]:
    """(class, index) of every listed image that is intact; the images of `checksum_keys` (a shard's
    own) are also checked against their checksums, the others by size."""
    rows = read_manifest(folder) if rows is None else rows
    keys = lambda r: (r["class_index"], r["index"])  # noqa: E731
    return {keys(r) for r in rows
            if image_damage(folder, r, checksum=checksum_keys is not None and keys(r) in checksum_keys) is None}


def accepted(folder: Path, limit_per_class: Optional[int] = None) -> list[dict]:
    """The listed images, class-major in index order; with a limit, the first n listed of each class
    (not "indices below n": a method may leave gaps)."""
    rows = sorted(read_manifest(folder), key=lambda r: (r["class_index"], r["index"]))
    if limit_per_class is None:
        return rows
    taken: dict[int, int] = {}
    out = []
    for row in rows:
        if taken.get(row["class_index"], 0) < limit_per_class:
            taken[row["class_index"]] = taken.get(row["class_index"], 0) + 1
            out.append(row)
    return out


def synthetic_rows(run, method: str, limit_per_class: Optional[int] = None) -> list[dict]:
    """The manifest rows of a method's images for training, the first n listed per class, each with
    its image's absolute path as `file`. A listed image that is missing or damaged stops here, with the fix."""
    where = folder(run, method)
    rows = accepted(where, limit_per_class)
    bad = [f"{where / r['path']} ({why})" for r in rows if (why := image_damage(where, r))]
    if bad:
        raise DataDreamError(f"{len(bad)} synthetic image(s) listed in the manifest are missing or damaged, e.g. "
                             f"{bad[0]}. Run the synthesis stage again (the pipeline, or notebooks/02_synthesis.ipynb): "
                             f"it regenerates exactly those images.")
    return [{**r, "file": str(where / r["path"])} for r in rows]


def synthetic_items(run, method: str, limit_per_class: Optional[int] = None) -> list[tuple[str, int]]:
    """(path, label) of a method's images for training (see `synthetic_rows`)."""
    return [(r["file"], r["class_index"]) for r in synthetic_rows(run, method, limit_per_class)]


def first_rows(run) -> dict[Path, dict]:
    """{folder: its first manifest row} of every method with images listed in the run: the row says
    what made them (`method`, `variant`: their identity; `naming.image_sets` names them)."""
    return {method_folder: rows[0] for method_folder in sorted(run.path("synthetic").glob("*"))
            if (rows := read_manifest(method_folder))}


def read_jsonl(path: Path) -> list[dict]:
    """The complete rows of a JSON-lines file (a torn last line is ignored); none if it is missing."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class JsonlWriter:
    """Appends rows to a JSON-lines file (a shard's manifest, the captions). Each row is flushed at
    once, so a killed process loses no listed row; with `sync`, each is also synced to disk (else at
    closing: a power cut may lose recent rows, whose images are then made again). A torn last line
    left by a crash is dropped on opening."""

    def __init__(self, path: Path, sync: bool = True):
        self.path, self.sync = Path(path), sync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # drop a torn last line left by a crash mid-write
            text = self.path.read_text()
            if text and not text.endswith("\n"):
                self.path.write_text(text[: text.rfind("\n") + 1])
        self.handle = open(self.path, "a")

    def append(self, row: dict) -> None:
        self.handle.write(json.dumps(row) + "\n")
        self.handle.flush()
        if self.sync:
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
