"""Throughput of each stage, with the authors' settings and with the library's defaults, in one process.

    python benchmarks/throughput.py                   # full-size SD 2.1-base / ViT-B/16 from config, on a GPU
    python benchmarks/throughput.py --models tiny     # the tiny preset on a CPU (checks the script, not speed)

    synthesis     images per second through the whole engine (generation, PNG encoding, writing,
                  manifest): authors = fp16, LoRA unfused, batch 10, each PNG written before the
                  next image; library = the defaults (bf16, LoRA fused, `synth_batch_size`, images
                  written on background threads)
    adaptation    seconds per DataDream step at batch 8: authors = fp32; library = the defaults
    classifier    images per second of the training input pipeline (decode + the authors'
                  augmentation) with `--workers` loader processes, and of one training step on the GPU

Each rate is a difference of two runs of different length, so model building and warm-up cancel
out. Random weights cost the same FLOPs as the real ones. Prints one JSON object (--out writes it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from datadream_lib import adaptation, classification, methods, models, params, runs, splits, synthesis


class WriteEachImageFirst(synthesis.ImageWriter):
    """The authors' loop: every image encoded and written before the next is made."""

    def submit(self, image, relpath, row):
        super().submit(image, relpath, row)
        return self.list_finished(keep=0)


def _timed(device, fn):
    models.synchronize(device)
    started = time.perf_counter()
    fn()
    models.synchronize(device)
    return time.perf_counter() - started


def synthesis_rate(p, run, split, sizes: tuple[int, int], writer=synthesis.ImageWriter) -> dict:
    """Images per second of the engine: (n2 - n1) images over the difference of two runs' times."""
    original = synthesis.ImageWriter
    synthesis.ImageWriter = writer
    try:
        seconds = []
        for n in sizes:
            q = p.replace(images_per_class=n, ablation_images_per_class=[n], run_name=f"{p.run_name}_{writer.__name__}_{n}")
            other = runs.open_run(q, run.dir.parent / q.run_name)
            if not other.path("adaptation").exists():
                other.path("adaptation").symlink_to(run.path("adaptation"), target_is_directory=True)
            device = models.resolve_device(q)
            seconds.append(_timed(device, lambda: synthesis.generate(q, other, split, progress=False)))
    finally:
        synthesis.ImageWriter = original
    images = (sizes[1] - sizes[0]) * len(split.classnames)
    return {"images_per_second": round(images / max(seconds[1] - seconds[0], 1e-9), 3),
            "batch": p.synth_batch_size, "fused": p.synth_fuse_lora, "precision": p.mixed_precision,
            "peak_gib": models.peak_memory_gib(models.resolve_device(p))}


def adaptation_rate(p, split, steps: tuple[int, int]) -> dict:
    device = models.resolve_device(p)
    seconds = []
    for n in steps:
        pipe = models.load_sd_pipeline(p)
        job = adaptation.AdapterJob("dset", split.shots(p.shots), n, p.adapt_batch_size, p.seed)
        seconds.append(_timed(device, lambda pipe=pipe, job=job: adaptation.train_adapter(pipe, p, job, split.prompts(), device,
                                                                                          progress=False)))
    return {"seconds_per_step": round((seconds[1] - seconds[0]) / (steps[1] - steps[0]), 4), "batch": p.adapt_batch_size,
            "precision": p.mixed_precision, "peak_gib": models.peak_memory_gib(device)}


def classifier_rates(p, run, split, workers: int, batches: int) -> dict:
    device = models.resolve_device(p)
    _, _, size = models.load_clip(p)
    images = sorted(run.dir.parent.glob("*/synthetic/*/*/*.png"))  # the benchmark's own synthetic images
    items = [(str(path), 0) for path in images] * max(1, 4 * p.clf_batch_size // max(1, len(images)))
    pool = classification.TrainingPool([], items, classification.train_transform(size))
    loader = torch.utils.data.DataLoader(pool, batch_size=p.clf_batch_size, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    it = iter(loader)
    next(it)  # workers started
    started = time.perf_counter()
    n = sum(len(next(it)[0]) for _ in range(batches))
    input_rate = n / (time.perf_counter() - started)
    model, trainable, size = classification.build_classifier(p, split)
    model.to(device)
    optimizer = torch.optim.AdamW(trainable, lr=p.clf_lr)
    amp = models.autocast_dtype(p, device)
    x = torch.randn(p.clf_batch_size, 3, size, size, device=device)
    y = torch.randint(0, len(split.classnames), (p.clf_batch_size,), device=device)
    is_real = torch.zeros(p.clf_batch_size, dtype=torch.bool, device=device)

    def step():
        with models.autocast(device, amp):
            logits = model(x)
        loss = classification.pooled_loss(logits, y, is_real, p.real_loss_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    seconds = min(_timed(device, step) for _ in range(3))
    return {"input_images_per_second": round(input_rate, 1), "workers": workers, "image_size": size,
            "step_images_per_second": round(p.clf_batch_size / seconds, 1), "batch": p.clf_batch_size}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="full_random", choices=["full_random", "tiny"])
    parser.add_argument("--images", type=int, nargs=2, default=[10, 30], help="images per class of the two synthesis runs")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the method's, 50)")
    parser.add_argument("--adapt-steps", type=int, nargs=2, default=[3, 13], help="steps of the two adaptation runs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="classifier loader processes")
    parser.add_argument("--clf-batches", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="datadream-throughput-"))
    full = args.models == "full_random"
    base = {"base": "paper", "models": args.models, "dataset": "toy", "data_root": str(work / "data"),
            "runs_root": str(work / "runs"), "run_name": "bench", "shots": 4, "ablation_shots": [1],
            "resolution": 512 if full else 32, "fid_features": "tiny", "ablation_images_per_class": [1],
            "images_per_class": 1, "num_workers": 0, "clf_batch_size": 128 if full else 16}
    if args.steps:
        base["num_inference_steps"] = args.steps
    p = params.from_dict(base)
    device = models.resolve_device(p)
    authors = {"mixed_precision": "fp16" if device.type == "cuda" else "no", "synth_fuse_lora": False, "synth_batch_size": 10}
    report = {"models": args.models, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "versions": {name: importlib.metadata.version(name) for name in ("torch", "diffusers", "transformers", "peft")},
              "resolution": p.resolution, "steps": p.num_inference_steps, "guidance": p.guidance_scale}
    run, split = splits.start_run(p)
    methods.prepare(p.replace(adapt_epochs=1), run, split, progress=False)  # an adapter to load (its values do not matter)

    report["synthesis"] = {"authors": synthesis_rate(p.replace(**authors), run, split, tuple(args.images), WriteEachImageFirst),
                           "library": synthesis_rate(p, run, split, tuple(args.images))}
    report["adaptation"] = {"authors": adaptation_rate(p.replace(mixed_precision="no"), split, tuple(args.adapt_steps)),
                            "library": adaptation_rate(p, split, tuple(args.adapt_steps))}
    report["classifier"] = classifier_rates(p, run, split, args.workers, args.clf_batches)
    s, a = report["synthesis"], report["adaptation"]
    report["ratios"] = {
        "synthesis": round(s["library"]["images_per_second"] / s["authors"]["images_per_second"], 2),
        "adaptation": round(a["authors"]["seconds_per_step"] / a["library"]["seconds_per_step"], 2),
        "classifier_input_over_step": round(report["classifier"]["input_images_per_second"]
                                            / report["classifier"]["step_images_per_second"], 2)}
    shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        runs.atomic_write_text(args.out, text)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
