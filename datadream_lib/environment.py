"""The software and machine a run ran in.

Every process that writes to a run folder leaves one record, `environments/<id>.json` (written by
`runs.Run.environment`, once per process and folder), so a run resumed after an upgrade shows both
environments. Each manifest row and each `adapter.json` names the record it was made under.

A record holds: Python; the versions of the packages that make or read pixels and weights (torch,
with its CUDA and cuDNN, diffusers, transformers, peft, open_clip, accelerate, numpy, pillow, ...);
the GPUs and their driver; the CPU threads torch uses; the project's git commit and whether the
tree had uncommitted changes; the host, the process and the time.

Resuming a run under other versions of a package that changes pixels or weights (`PIXEL_PACKAGES`)
is refused before any work (`check_resume`), unless the run's parameters say
`allow_environment_change: true`: images from two diffusers versions never mix in one synthetic
set unnoticed.

What is bit-identical: at fixed versions and a fixed configuration, the same image on the same
device type; on a CPU only with the same number of torch threads (a different count changes a few
pixels by one level: the reductions are split differently), which each manifest row records; on a
GPU on the same GPU model and driver (cuDNN picks its algorithms per model).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from datadream_lib.errors import DataDreamError
from datadream_lib.files import json_records

FOLDER = "environments"
# Distribution names of the packages whose version can change an image or a weight.
PIXEL_PACKAGES = ("torch", "diffusers", "transformers", "peft", "open_clip_torch")
RECORDED_PACKAGES = (*PIXEL_PACKAGES, "torchvision", "accelerate", "numpy", "pillow", "safetensors",
                     "huggingface_hub", "pytorch_fid", "scipy", "papermill")


def package_versions(names=RECORDED_PACKAGES) -> dict[str, Optional[str]]:
    """Installed versions, read from the packages' metadata (no import); None where not installed."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _gpus() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"gpus": [], "driver": None}
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    driver = None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
        driver = done.stdout.split()[0] if done.returncode == 0 and done.stdout.split() else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"gpus": names, "driver": driver}


def describe(project_root: Optional[Path] = None) -> dict:
    """This process's environment (see the module's docstring)."""
    import torch

    root = Path(project_root) if project_root else Path(__file__).resolve().parent.parent
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "packages": package_versions(),
        "torch_cuda": torch.version.cuda,
        "cudnn": cudnn,
        **_gpus(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def record_id(info: dict) -> str:
    """A record's name: when, where and which process (sorts by time)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.strptime(info["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in info["host"])[:40]
    return f"{stamp}-{host}-{info['pid']}"


def records(run_folder: Path) -> list[dict]:
    """The run's readable records, oldest first, each with its `id`."""
    out = [{**info, "id": rid} for rid, info in json_records(Path(run_folder) / FOLDER).items()
           if isinstance(info.get("packages"), dict)]
    return sorted(out, key=lambda r: (str(r.get("time", "")), r["id"]))


def changed_packages(run_folder: Path) -> dict[str, tuple]:
    """The pixel-changing packages whose version differs from the run's latest record: {name: (then, now)}."""
    recorded = records(run_folder)
    if not recorded:
        return {}
    then, now = recorded[-1]["packages"], package_versions(PIXEL_PACKAGES)
    return {name: (then.get(name), now[name]) for name in PIXEL_PACKAGES if then.get(name) != now[name]}


def check_resume(run_folder: Path, allow_change: bool) -> None:
    """Refuse to resume a run under other versions of torch, diffusers, transformers, peft or
    open_clip than its latest record (changes nothing), unless `allow_change`."""
    changed = changed_packages(run_folder)
    if changed and not allow_change:
        listing = ", ".join(f"{name} {then} -> {now}" for name, (then, now) in changed.items())
        raise DataDreamError(
            f"run folder {run_folder} was last written under other package versions ({listing}), which change "
            f"images and weights: install the versions its {FOLDER}/ records name (`make setup` installs the "
            f"project's lock), or set allow_environment_change: true (--set allow_environment_change=true) to go "
            f"on anyway (each image's manifest row names its environment). Nothing was changed.")


def exit_without_final_collection() -> None:
    """At this process's exit, freeze the heap (`gc.freeze`) before the interpreter tears it down.

    With torch, diffusers, transformers and open_clip loaded, the teardown's cyclic garbage
    collection takes about a second on a CPU; each stage's kernel and each pipeline process pays
    it once, for nothing: the process is ending and every file it wrote is closed (outputs are
    written whole and renamed into place). Objects are still freed by reference count, and
    `atexit` and `weakref.finalize` callbacks still run. Registered once, however often called."""
    import atexit
    import gc

    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
