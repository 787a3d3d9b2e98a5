#!/usr/bin/env bash
# The prepared GPU check, run on the GPU machine from the repository root (the tree with .whl/ from
# `python benchmarks/gpu_check.py wheels`, made where there is network):
#
#     GPU_CHECK_OUT=/some/folder bash benchmarks/gpu_check.sh
#
# Installs the carried wheels into a scratch folder (nothing of the machine's own is changed), then
# runs benchmarks/throughput.py on the full-size random architectures (SD 2.1-base, ViT-B/16): the
# engine's synthesis of DataDream-dset, an adaptation step, the classifier's input and step, then
# DataDream-cls, IsSynth, DA-Fusion and augmentation-conditioned unCLIP (768 px), each with the
# authors' settings beside the library's defaults, compiled as a full run compiles. Its JSON, written section by section, goes to $GPU_CHECK_OUT/throughput_gpu.json; the run
# stops at GPU_CHECK_SECONDS (default 450 s) and keeps the sections measured by then.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${GPU_CHECK_OUT:?set GPU_CHECK_OUT to the folder the JSON goes to}"
site=${GPU_CHECK_SITE:-/tmp/datadream-site}
ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run 'python benchmarks/gpu_check.py wheels' where there is network, and carry .whl"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 2
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$GPU_CHECK_OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
timeout --signal=INT --kill-after=20 "${GPU_CHECK_SECONDS:-450}" \
    python3 benchmarks/throughput.py --steps "${GPU_CHECK_STEPS:-25}" --images 4 12 --adapt-steps 3 13 \
    --out "$GPU_CHECK_OUT/throughput_gpu.json"
status=$?
[ $status -eq 124 ] && echo "stopped at the time limit; the sections measured are in $GPU_CHECK_OUT/throughput_gpu.json"
exit $status
