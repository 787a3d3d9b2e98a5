"""The GPU check's luggage: wheels of what a GPU machine without network lacks, at the locked versions.

    python benchmarks/gpu_check.py wheels            # here (with network): into .whl/ (git-ignored)
    python benchmarks/gpu_check.py wheels --list     # only say what it would carry
    GPU_CHECK_OUT=/some/folder bash benchmarks/gpu_check.sh   # there: install them, run the check

The machines this project is checked on (an H200 with Python 3.12 and its own torch, transformers,
peft and accelerate; no network) lack diffusers, open_clip, papermill and ipykernel. This carries
those, every package of `requirements.lock` they need that such a machine lacks, and transformers,
peft and huggingface_hub with tokenizers at the locked versions, so the check runs the tested versions
of everything but torch (which stays the machine's: its build matches the machine's CUDA driver).
Wheels are for CPython 3.12 on manylinux x86-64; the whole tree with them must stay within 64 MiB.
Standard library only.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
DEST = ROOT / ".whl"
# What the check needs that such a machine lacks, and what it must have at the tested version.
NEEDED = ("diffusers", "open-clip-torch", "papermill", "ipykernel")
AT_LOCKED_VERSION = ("transformers", "peft", "huggingface-hub", "tokenizers")
# Python packages the GPU image already holds (the device tool's KINDS.md, read 2026-11-17); the
# rest of the lock's needs of NEEDED travel.
ON_THE_MACHINE = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp""".split())
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_24_x86_64")
TREE_LIMIT = 64 * 2**20


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, dict]:
    """{name: {"version": V, "via": {parents}}} from a `uv pip compile` file (names normalized)."""
    out, current, in_via = {}, None, False
    for line in Path(path).read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if pin:
            current = normalize(pin[1])
            out[current] = {"version": pin[2], "via": set()}
            in_via = False
            continue
        via = re.match(r"^\s+# via(?: (.+))?$", line)
        if via and current:
            in_via = via[1] is None
            if via[1]:
                out[current]["via"].add(via[1].strip())
            continue
        parent = re.match(r"^\s+#\s{3}(\S.*)$", line)
        if parent and current and in_via:
            out[current]["via"].add(parent[1].strip())
    for info in out.values():
        info["via"] = {normalize(v.split(" (")[0]) for v in info["via"]}
    return out


def to_carry(lock: dict[str, dict]) -> list[str]:
    """NEEDED and AT_LOCKED_VERSION, and every locked package they need that the machine lacks."""
    needs: dict[str, set] = {}
    for name, info in lock.items():
        for parent in info["via"]:
            needs.setdefault(parent, set()).add(name)
    carry, todo = set(), [*NEEDED, *AT_LOCKED_VERSION]
    while todo:
        name = todo.pop()
        if name in carry:
            continue
        carry.add(name)
        todo.extend(child for child in needs.get(name, ()) if child not in ON_THE_MACHINE)
    return sorted(carry)


def tree_bytes() -> int:
    """What travels besides the wheels: the tracked and untracked-not-ignored files."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    return sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())


def download(names: list[str], lock: dict[str, dict], dest: Path) -> None:
    dest.mkdir(exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    for name in names:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest),
                        f"{name}=={lock[name]['version']}"], check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["wheels"])
    parser.add_argument("--list", action="store_true", help="print what would travel, download nothing")
    parser.add_argument("--dest", type=Path, default=DEST)
    args = parser.parse_args(argv)
    lock = read_lock()
    names = to_carry(lock)
    print("carry:", " ".join(f"{n}=={lock[n]['version']}" for n in names))
    if args.list:
        return 0
    download(names, lock, args.dest)
    wheels = sum(f.stat().st_size for f in args.dest.glob("*.whl"))
    tree = tree_bytes()
    print(f"{len(list(args.dest.glob('*.whl')))} wheels, {wheels / 2**20:.1f} MiB; with the tree "
          f"{(wheels + tree) / 2**20:.1f} MiB of the 64 MiB that travel")
    if wheels + tree > TREE_LIMIT:
        print("too large to travel: carry less", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
