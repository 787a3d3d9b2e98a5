"""A Hugging Face hub cache written by hand, in the hub's own layout, for tests without a network:

    <cache>/models--<org>--<name>/
        blobs/<sha256>                  each file's content, named by its SHA-256 (as the hub names
                                        a large file's blob)
        refs/main                       the commit `main` points at
        snapshots/<commit>/<path>       relative symlinks into blobs/

`HF_HUB_CACHE=<cache>` with `local_files_only` (or HF_HUB_OFFLINE=1) makes huggingface_hub,
diffusers and transformers read it as they read a real cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from datadream_lib import models

TOY_SD = models.TOY_WORLD / "sd"


def toy_sd_folder(out: Path) -> Path:
    """A copy of the toy world's Stable Diffusion, a complete diffusers folder as a download holds one."""
    shutil.copytree(TOY_SD, out)
    return out


def add_snapshot(cache: Path, repo: str, folder: Path, commit: str, main: bool = True) -> Path:
    """Put every file of `folder` into `cache` as snapshot `commit` of `repo`; `main` moves refs/main there."""
    root = Path(cache) / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if main:
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(commit)
    return snapshot


def perturb_safetensors(path: Path) -> None:
    """Change one weight of a safetensors file (another release of the same model)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, path, metadata=json.loads(json.dumps({"format": "pt"})))
