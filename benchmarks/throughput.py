"""Throughput of each stage, with the authors' settings and with the library's defaults, in one process.

    python benchmarks/throughput.py --out rates.json  # full-size SD 2.1-base / ViT-B/16 from config, on a GPU
    python benchmarks/throughput.py --models tiny     # the tiny preset on a CPU (checks the script, not speed)
    python benchmarks/cost_estimate.py --rates rates.json   # Table 1's GPU-hours at these rates

    synthesis     images per second through the whole engine (generation, PNG encoding, writing,
                  manifest) of DataDream-dset, and (--all-methods, the default) of DataDream-cls,
                  IsSynth, DA-Fusion (img2img at a strength per image) and augmentation-conditioned
                  unCLIP (its own model, at 768 px on the full-size preset): authors = fp16, LoRA
                  unfused, batch 10, no fused q/k/v, NCHW, eager,
                  each PNG written before the next image; library = the defaults (bf16, LoRA fused,
                  fused q/k/v, channels_last, batch from free memory, images written on background
                  threads), compiled on a GPU as a full-length run compiles
    adaptation    seconds per DataDream step at batch 8: authors = fp32, NCHW, eager; library = the
                  defaults (bf16, channels_last, fused AdamW), compiled on a GPU as a full run compiles
    classifier    images per second of the training input pipeline with `--workers` loader processes:
                  authors = decode + the authors' augmentation on PIL in the workers; library =
                  decode in the workers, the same augmentation on the device (`augmentation.py`);
                  and of one training step

Each rate is a difference of two runs of different length, so model building, compilation and
warm-up cancel out. Random weights cost the same FLOPs as the real ones. Prints one JSON object
(--out writes it; cost_estimate.py --rates reads it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from datadream_lib import (adaptation, augmentation, catalog, classification, environment, files, methods, models, params, runs,
                           runtime, splits, synthesis)


class WriteEachImageFirst(synthesis.ImageWriter):
    """The authors' loop: every image encoded and written before the next is made."""

    def submit(self, image, relpath, row):
        super().submit(image, relpath, row)
        return self.list_finished(keep=0)


def _timed(device, fn):
    runtime.synchronize(device)
    started = time.perf_counter()
    fn()
    runtime.synchronize(device)
    return time.perf_counter() - started


def _rate(amount: float, seconds: list) -> float | None:
    """amount / (t2 - t1); None when the longer run was not the slower one (noise swamped the
    difference: run longer)."""
    if seconds[1] <= seconds[0]:
        print(f"[throughput] runs of {seconds} s: the longer run was not slower; rate not measured", file=sys.stderr)
        return None
    return round(amount / (seconds[1] - seconds[0]), 3)


def _save(report: dict, out) -> None:
    """The report so far, with its date, into --out (atomically)."""
    if out:
        files.write_json(out, {**report, "date": time.strftime("%Y-%m-%d"), "complete": False})


def _ratio(a, b):
    return None if a is None or b is None else round(a / b, 2)


def synthesis_rate(p, run, split, sizes: tuple[int, int], writer=synthesis.ImageWriter) -> dict:
    """Images per second of the engine: (n2 - n1) images over the difference of two runs' times."""
    original = synthesis.ImageWriter
    synthesis.ImageWriter = writer
    try:
        seconds = []
        for n in (1, *sizes):  # a first, untimed run: one-off costs (caches, first loads) out of the difference
            q = p.replace(images_per_class=n, ablation_images_per_class=[n],
                          run_name=f"{p.run_name}_{writer.__name__}_{n}_{len(seconds)}")
            other = runs.open_run(q, run.dir.parent / q.run_name)
            if not other.path("adaptation").exists():
                other.path("adaptation").symlink_to(run.path("adaptation"), target_is_directory=True)
            device = runtime.resolve_device(q)
            seconds.append(_timed(device, lambda: synthesis.generate(q, other, split, progress=False)))
    finally:
        synthesis.ImageWriter = original
    seconds = seconds[1:]
    images = (sizes[1] - sizes[0]) * len(split.classnames)
    row = catalog.read_manifest(catalog.folder(other, p.synth_method))[-1]  # how the images were made
    return {"images_per_second": _rate(images, seconds),
            "seconds": [round(t, 2) for t in seconds], "batch": runtime.synth_batch_size(p, runtime.resolve_device(p)),
            **{key: row.get(key) for key in ("fused", "fused_qkv", "channels_last", "compiled")},
            "precision": p.mixed_precision, "peak_gib": runtime.peak_memory_gib(runtime.resolve_device(p), reset=True)}


def adaptation_rate(p, split, steps: tuple[int, int]) -> dict:
    device = runtime.resolve_device(p)
    seconds = []
    for n in (1, *steps):  # a first, untimed run: one-off costs out of the difference
        pipe = models.load_sd_pipeline(p)
        job = adaptation.AdapterJob("dset", split.shots(p.shots), n, p.method.adapt_batch_size, p.seed)
        seconds.append(_timed(device, lambda pipe=pipe, job=job: adaptation.train_adapter(pipe, p, job, split.prompts(), device,
                                                                                          progress=False)))
    seconds = seconds[1:]
    per_second = _rate(steps[1] - steps[0], seconds)
    return {"seconds_per_step": per_second and round(1 / per_second, 4), "batch": p.method.adapt_batch_size,
            "seconds": [round(t, 2) for t in seconds], "precision": p.mixed_precision,
            "channels_last": runtime.use_channels_last(p, device), "compiled": bool(p.compile),
            "peak_gib": runtime.peak_memory_gib(device, reset=True)}


class AuthorsPool(torch.utils.data.Dataset):
    """The authors' loader: decode with PIL and augment in the worker."""

    def __init__(self, items, size):
        self.items, self.transform = items, augmentation.authors_transform(size)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.transform(splits.load_rgb(self.items[i][0])), 0, False


def input_rate(loader, batches: int, prepare, device) -> float:
    """Images per second out of a loader through `prepare` (on the device), after the first batch."""
    it = iter(loader)
    prepare(next(it)[0], 0)  # workers started, kernels warm
    runtime.synchronize(device)
    started = time.perf_counter()
    n = 0
    for step in range(1, batches + 1):
        images = next(it)[0]
        prepare(images, step)
        n += len(images)
    runtime.synchronize(device)
    return n / (time.perf_counter() - started)


def worker_milliseconds(items, size: int) -> dict:
    """CPU milliseconds one loader worker spends per image: the authors' (PIL decode + augmentation)
    and the library's (decode only); 16 cores feed at most 16,000 / ms images per second."""
    out, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        for name, dataset in (("authors", AuthorsPool(items, size)), ("library", classification.TrainingPool([], items))):
            dataset[0]
            started = time.process_time()
            for i in range(len(items)):
                dataset[i]
            out[name] = round((time.process_time() - started) * 1000 / len(items), 2)
    finally:
        torch.set_num_threads(threads)
    return out


def input_pipeline(n: int, resolution: int, size: int, batch: int, device) -> dict:
    """The classifier's input pipeline alone on `n` smooth random `resolution`-px PNGs (no models)."""
    import numpy as np
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="datadream-input-"))
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        coarse = Image.fromarray((rng.random((resolution // 16, resolution // 16, 3)) * 255).astype(np.uint8))
        path = folder / f"{i}.png"
        coarse.resize((resolution, resolution), Image.BICUBIC).save(path)
        items.append((str(path), 0))
    augment = augmentation.DeviceAugment(size, device)
    decoded = [augmentation.read_image(path) for path, _ in items[:batch]]
    augment(decoded, seed=0)
    runtime.synchronize(device)
    started = time.perf_counter()
    for step in range(1, 4):
        augment(decoded, seed=step)
    runtime.synchronize(device)
    rate = 3 * len(decoded) / (time.perf_counter() - started)
    out = {"images": n, "resolution": resolution, "png_kib": round(sum(Path(p).stat().st_size for p, _ in items) / n / 1024),
           "worker_ms_per_image": worker_milliseconds(items, size), "device_augment_images_per_second": round(rate, 1),
           "device": str(device)}
    shutil.rmtree(folder, ignore_errors=True)
    return out


def classifier_rates(p, run, split, workers: int, batches: int) -> dict:
    device = runtime.resolve_device(p)
    _, _, size = models.load_clip(p)
    images = sorted(run.dir.parent.glob("*/synthetic/*/*/*.png"))  # the benchmark's own synthetic images
    items = [(str(path), 0) for path in images] * max(1, (batches + 2) * p.clf_batch_size // max(1, len(images)) + 1)
    common = {"batch_size": p.clf_batch_size, "shuffle": True, "num_workers": workers, "persistent_workers": workers > 0,
              "pin_memory": device.type == "cuda"}
    authors = torch.utils.data.DataLoader(AuthorsPool(items, size), **common)
    authors_rate = input_rate(authors, batches, lambda x, step: x.to(device, non_blocking=True), device)
    library = torch.utils.data.DataLoader(classification.TrainingPool([], items), collate_fn=classification.collate_pool,
                                          **common)
    augment = augmentation.DeviceAugment(size, device)
    library_rate = input_rate(library, batches, lambda x, step: augment(x, seed=step), device)
    model, trainable, size = classification.build_classifier(p, split)
    model.to(device)
    optimizer = torch.optim.AdamW(trainable, lr=p.clf_lr)
    amp = runtime.autocast_dtype(p, device)
    x = torch.randn(p.clf_batch_size, 3, size, size, device=device)
    y = torch.randint(0, len(split.classnames), (p.clf_batch_size,), device=device)
    is_real = torch.zeros(p.clf_batch_size, dtype=torch.bool, device=device)

    def step():
        with runtime.autocast(device, amp):
            logits = model(x)
        loss = classification.pooled_loss(logits, y, is_real, p.real_loss_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    seconds = min(_timed(device, step) for _ in range(3))
    return {"input_images_per_second": {"authors": round(authors_rate, 1), "library": round(library_rate, 1)},
            "worker_ms_per_image": worker_milliseconds(items[:len(images)], size),
            "workers": workers, "image_size": size, "step_images_per_second": round(p.clf_batch_size / seconds, 1),
            "batch": p.clf_batch_size}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="full_random", choices=["full_random", "tiny"])
    parser.add_argument("--images", type=int, nargs=2, default=[10, 30], help="images per class of the two synthesis runs")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the method's, 50)")
    parser.add_argument("--adapt-steps", type=int, nargs=2, default=[3, 13], help="steps of the two adaptation runs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="classifier loader processes")
    parser.add_argument("--clf-batches", type=int, default=10)
    parser.add_argument("--all-methods", action=argparse.BooleanOptionalAction, default=True,
                        help="also time DataDream-cls (an adapter per class), IsSynth (img2img), DA-Fusion (img2img at "
                             "a strength per image, its tokens loaded) and augmentation-conditioned unCLIP (768 px); "
                             "DISEF generates as IsSynth does, plus its filter, and is not timed")
    parser.add_argument("--input-only", type=int, metavar="N", help="only the classifier's input pipeline, on N "
                        "generated 512-px PNGs (no models; runs on a CPU too)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.input_only:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        report = {"input_pipeline": input_pipeline(args.input_only, 512, 224, 128, device),
                  "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                  "versions": {name: importlib.metadata.version(name) for name in ("torch", "torchvision", "pillow")},
                  "date": time.strftime("%Y-%m-%d")}
        return files.report_json(report, args.out)

    work = Path(tempfile.mkdtemp(prefix="datadream-throughput-"))
    full = args.models == "full_random"
    base = {"base": "paper", "models": args.models, "dataset": "toy", "data_root": str(work / "data"),
            "runs_root": str(work / "runs"), "run_name": "bench", "shots": 4, "ablation_shots": [1],
            "resolution": 512 if full else 32, "fid_features": "tiny", "ablation_images_per_class": [1],
            "images_per_class": 1, "num_workers": 0, "clf_batch_size": 128 if full else 16}
    if args.steps:
        base["num_inference_steps"] = args.steps
    p = params.from_dict(base)
    device = runtime.resolve_device(p)
    gpu = device.type == "cuda"
    authors = {"mixed_precision": "fp16" if gpu else "no", "synth_fuse_lora": False, "synth_fuse_qkv": False,
               "synth_batch_size": 10, "channels_last": False, "compile": False}
    library = {"compile": gpu}  # as a full-length run on a GPU compiles (the short benchmark would not by itself)
    report = {"models": args.models, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "versions": {name: importlib.metadata.version(name) for name in ("torch", "diffusers", "transformers", "peft")},
              "resolution": p.method.resolution, "steps": p.method.num_inference_steps, "scheduler": p.method.scheduler,
              "guidance": p.method.guidance_scale}
    run, split = splits.start_run(p)
    report["environment"] = environment.describe()
    methods.prepare(p.replace(adapt_epochs=1), run, split, progress=False)  # an adapter to load (its values do not matter)

    # Each section is written to --out as soon as it is measured: a run stopped at a time limit keeps them.
    report["synthesis"] = {"authors": synthesis_rate(p.replace(**authors), run, split, tuple(args.images), WriteEachImageFirst),
                           "library": synthesis_rate(p.replace(**library), run, split, tuple(args.images))}
    _save(report, args.out)
    report["adaptation"] = {"authors": adaptation_rate(p.replace(mixed_precision="no", channels_last=False, compile=False),
                                                       split, tuple(args.adapt_steps)),
                            "library": adaptation_rate(p.replace(**library), split, tuple(args.adapt_steps))}
    _save(report, args.out)
    report["classifier"] = classifier_rates(p, run, split, args.workers, args.clf_batches)
    s, a = report["synthesis"], report["adaptation"]
    report["ratios"] = {
        "synthesis": _ratio(s["library"]["images_per_second"], s["authors"]["images_per_second"]),
        "adaptation": _ratio(a["authors"]["seconds_per_step"], a["library"]["seconds_per_step"]),
        "classifier_input": _ratio(report["classifier"]["input_images_per_second"]["library"],
                                   report["classifier"]["input_images_per_second"]["authors"]),
        "classifier_input_over_step": _ratio(report["classifier"]["input_images_per_second"]["library"],
                                             report["classifier"]["step_images_per_second"])}
    _save(report, args.out)
    if args.all_methods:  # the other generation paths: an adapter per class, and img2img from the shots
        cls = p.replace(variant="cls", run_name="bench_cls")
        cls_run, _ = splits.start_run(cls)
        methods.prepare(cls.replace(adapt_epochs=1), cls_run, split, progress=False)
        issynth = p.replace(synth_method="issynth", run_name="bench_issynth")
        issynth_run, _ = splits.start_run(issynth)
        dafusion = p.replace(synth_method="dafusion", run_name="bench_dafusion", inversion_steps=1)
        dafusion_run, _ = splits.start_run(dafusion)
        methods.prepare(dafusion, dafusion_run, split, progress=False)  # tokens to load (their values do not matter)
        augcond = p.replace(synth_method="augcond", run_name="bench_augcond", resolution=768 if full else 32)
        augcond_run, _ = splits.start_run(augcond)
        report["synthesis_by_method"] = {}
        timed = {"DataDream-cls": (cls, cls_run), "IsSynth": (issynth, issynth_run), "DA-Fusion": (dafusion, dafusion_run),
                 "AugCond unCLIP": (augcond, augcond_run)}
        for name, (q, q_run) in timed.items():
            mine = lambda settings: {k: v for k, v in settings.items() if q.has(k)}  # noqa: E731 (IsSynth fuses no LoRA)
            pair = {"authors": synthesis_rate(q.replace(**mine(authors)), q_run, split, tuple(args.images), WriteEachImageFirst),
                    "library": synthesis_rate(q.replace(**mine(library)), q_run, split, tuple(args.images))}
            pair["ratio"] = _ratio(pair["library"]["images_per_second"], pair["authors"]["images_per_second"])
            pair["resolution"], pair["steps"] = q.method.resolution, q.method.num_inference_steps
            report["synthesis_by_method"][name] = pair
            _save(report, args.out)
    report["date"] = time.strftime("%Y-%m-%d")
    report["complete"] = True
    shutil.rmtree(work, ignore_errors=True)
    return files.report_json(report, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
