"""GPU check of the full-size architectures: a few DataDream adaptation steps, one batch of synthesis
at 512 px and one classifier step, through the library's own code paths, with timings and peak memory.

    python benchmarks/full_size_check.py                    # models: full_random (SD 2.1-base, ViT-B/16 sizes)
    python benchmarks/full_size_check.py --models tiny      # the same on the tiny preset (a CPU smoke run)

Random weights cost the same FLOPs as the real ones; nothing here measures accuracy. Prints one JSON
object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from datadream_lib import adaptation, classification, files, methods, models, params, runtime, splits, synthesis


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="full_random", choices=["full_random", "tiny"])
    parser.add_argument("--adapt-steps", type=int, default=6)
    parser.add_argument("--synth-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="sampler steps of the synthesis batch")
    parser.add_argument("--clf-batch", type=int, default=64)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folder (adapter, split)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="datadream-check-"))
    p = params.from_dict({
        "base": "paper", "models": args.models, "dataset": "toy", "data_root": str(work / "data"),
        "runs_root": str(work / "runs"), "run_name": "check", "shots": 4, "ablation_shots": [1],
        "resolution": 512 if args.models == "full_random" else 32, "num_inference_steps": args.steps,
        "images_per_class": args.synth_batch, "synth_batch_size": args.synth_batch, "fid_features": "tiny",
        "ablation_images_per_class": [1], "num_workers": 0,
    })
    device = runtime.resolve_device(p)
    report = {"models": args.models, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "autocast": str(runtime.autocast_dtype(p, device)), "resolution": p.method.resolution}
    run, split = splits.start_run(p)

    # Adaptation: a few steps of eq. 3 on the full model (batch 8).
    runtime.peak_memory_gib(device, reset=True)
    pipe = models.load_sd_pipeline(p)
    job = adaptation.AdapterJob("dset", split.shots(p.shots), args.adapt_steps, p.method.adapt_batch_size, p.seed)
    started = time.time()
    losses, _ = adaptation.train_adapter(pipe, p, job, split.prompts(), device, progress=False)
    runtime.synchronize(device)
    report["adaptation"] = {"steps": args.adapt_steps, "batch": p.method.adapt_batch_size, "seconds": round(time.time() - started, 2),
                            "seconds_per_step": round((time.time() - started) / args.adapt_steps, 3),
                            "loss_first": losses[0], "loss_last": losses[-1], "peak_gib": runtime.peak_memory_gib(device)}
    adaptation.save_adapter(pipe, p, run.path("adaptation", "dset"))
    del pipe
    runtime.peak_memory_gib(device, reset=True)

    # Synthesis: one batch with the adapter loaded, through the registered DataDream method.
    method = methods.get(p, run, split)
    method.check_prepared()
    method.load()
    method.begin_class(0)
    batch = [dataclasses.replace(job, plan=method.plan(job))
             for job in synthesis.all_jobs(p, split) if job.class_index == 0][: args.synth_batch]
    method.generate(batch[:1])  # warm-up (kernels, allocator)
    runtime.synchronize(device)
    started = time.time()
    images = [image for image, _ in method.generate(batch)]
    runtime.synchronize(device)
    seconds = time.time() - started
    report["synthesis"] = {"images": len(images), "steps": args.steps, "guidance": p.method.guidance_scale, "seconds": round(seconds, 2),
                           "images_per_second": round(len(images) / seconds, 3), "size": list(images[0].size),
                           "peak_gib": runtime.peak_memory_gib(device)}
    del method
    runtime.peak_memory_gib(device, reset=True)

    # Classifier: one step on a batch of the synthetic + real pool (eq. 4), CLIP + LoRA on Q and V.
    model, trainable, size = classification.build_classifier(p, split)
    model.to(device)
    optimizer = torch.optim.AdamW(trainable, lr=p.clf_lr, weight_decay=p.clf_weight_decay)
    amp = runtime.autocast_dtype(p, device)
    x = torch.randn(args.clf_batch, 3, size, size, device=device)
    y = torch.randint(0, len(split.classnames), (args.clf_batch,), device=device)
    is_real = torch.arange(args.clf_batch, device=device) % 2 == 0
    timings = []
    for _ in range(3):  # the first step warms up
        runtime.synchronize(device)
        started = time.time()
        with runtime.autocast(device, amp):
            logits = model(x)
        loss = classification.pooled_loss(logits, y, is_real, p.real_loss_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        runtime.synchronize(device)
        timings.append(time.time() - started)
    report["classifier"] = {"batch": args.clf_batch, "image_size": size, "seconds_per_step": round(min(timings[1:]), 4),
                            "peak_gib": runtime.peak_memory_gib(device)}
    if args.keep:
        report["work_dir"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return files.report_json(report, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
