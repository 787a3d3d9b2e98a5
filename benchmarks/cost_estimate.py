"""An estimate, not a measurement: the GPU-hours of reproducing Table 1 (and Fig. 5), dataset by
dataset, from the number of UNet forward passes each run makes.

    python benchmarks/cost_estimate.py                   # Markdown table for the README
    python benchmarks/cost_estimate.py --tflops 300 --json

Counts come from the shipped presets (params/paper/<dataset>_{dset,cls,issynth,disef}.yaml,
fig5_*.yaml) and the library's own step rules (img2img runs int(steps * strength) of the steps); the FLOPs of one forward pass of each full-size network (SD 2.1-base
UNet at 512 px, its VAE and text encoder, CLIP ViT-B/16, Inception-v3) are counted by
torch.utils.flop_counter on the architectures built on the meta device (no weights, no compute).
Training a LoRA costs about two forward passes per sample (activation gradients through the
frozen weights, no weight gradients). FLOPs become hours at an *assumed* sustained rate
(--tflops, default 200 TFLOP/s: about 20 % of an H100's dense bf16 peak, or 250 UNet passes a
second); measure yours with benchmarks/full_size_check.py and pass it. Data loading, image
decoding and checkpoint I/O are not counted.

DISEF adds its captions (LLaVA-1.5-7B, approximated as 2 x 7.06e9 FLOPs per token over the 576
image tokens, the query and `caption_max_tokens`) and, per attempt, an img2img generation and a
ViT-H-14 filter pass. How many attempts an image needs depends on the real filter, so the mean is
an assumption (--disef-attempts, default 2; at most `filter_attempts`).
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from torch.utils.flop_counter import FlopCounterMode

from datadream_lib import datasets, models, params, runs

# Split sizes (train, val, test) of CoOp's splits, as the CoOp paper lists them; ImageNet: the
# official train with a 10 % val carve-out, the official val as test. Only used for this estimate.
SPLIT_SIZES = {"imagenet": (1_153_051, 128_116, 50_000), "caltech101": (4128, 1649, 2465), "dtd": (2820, 1128, 1692),
               "eurosat": (13500, 5400, 8100), "fgvc_aircraft": (3334, 3333, 3333), "oxford_pets": (2944, 736, 3669),
               "stanford_cars": (6509, 1635, 8041), "sun397": (15880, 3970, 19850), "food101": (50500, 20200, 30300),
               "flowers102": (4093, 1633, 2463)}
LORA_TRAIN = 2.0  # forward + backward through frozen weights, in forward passes
LLAVA_PARAMS = 7.06e9  # LLaVA-1.5-7B
LLAVA_PROMPT_TOKENS = 576 + 40  # the image's patch tokens and the query
METHOD_FILES = {"DataDream-dset": "dset", "DataDream-cls": "cls", "IsSynth": "issynth", "DISEF": "disef"}


def forward_flops() -> dict[str, float]:
    """FLOPs of one forward pass per sample of every network, counted on meta tensors."""
    import open_clip
    import torchvision
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return float(counter.get_total_flops())

    with torch.device("meta"):
        unet = UNet2DConditionModel(**models.SD21_BASE_UNET)
        vae = AutoencoderKL(**models.SD21_BASE_VAE)
        text = CLIPTextModel(CLIPTextConfig(**models.SD21_TEXT_ENCODER))
        clip = open_clip.create_model("ViT-B-16", pretrained=None, device="meta")
        filter_clip = open_clip.create_model("ViT-H-14", pretrained=None, device="meta")
        inception = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
        tokens = torch.zeros(1, 77, dtype=torch.long)
        return {
            "unet": count(lambda: unet(torch.zeros(1, 4, 64, 64), torch.tensor([1]), torch.zeros(1, 77, 1024))),
            "vae_encode": count(lambda: vae.encode(torch.zeros(1, 3, 512, 512))),
            "vae_decode": count(lambda: vae.decode(torch.zeros(1, 4, 64, 64))),
            "sd_text": count(lambda: text(tokens)),
            "clip_image": count(lambda: clip.encode_image(torch.zeros(1, 3, 224, 224))),
            "clip_text": count(lambda: clip.encode_text(tokens)),
            "inception": count(lambda: inception(torch.zeros(1, 3, 299, 299))),
            "filter_image": count(lambda: filter_clip.encode_image(torch.zeros(1, 3, 224, 224))),
        }


def run_cost(p, n_classes: int, sizes: tuple[int, int, int], f: dict, settings=None, images_per_class=None,
             adapt: bool = True, synthesize: bool = True, fid: bool = True, disef_attempts: float = 2.0) -> dict:
    """FLOPs and UNet passes of one run (one seed) with parameters p."""
    train, val, test = sizes
    images = images_per_class or p.images_per_class
    out = {"unet_passes": 0.0, "flops": 0.0}
    attempts = min(disef_attempts, p.filter_attempts) if p.synth_method == "disef" else 1.0
    if adapt and p.synth_method == "disef":  # the captions of the shots
        out["flops"] += n_classes * p.shots * 2 * LLAVA_PARAMS * (LLAVA_PROMPT_TOKENS + p.caption_max_tokens)
    if adapt and p.synth_method == "datadream":
        samples = p.adapt_epochs * n_classes * p.shots  # dset and cls alike: every shot once per epoch
        out["unet_passes"] += LORA_TRAIN * samples
        out["flops"] += samples * (LORA_TRAIN * f["unet"] + f["vae_encode"]
                                   + (LORA_TRAIN if p.adapt_train_text_encoder else 1) * f["sd_text"])
    if synthesize:
        made = n_classes * images * attempts
        steps = int(p.num_inference_steps * p.strength) if p.strength is not None else p.num_inference_steps
        passes = made * steps * (2 if p.guidance_scale > 1 else 1)
        out["unet_passes"] += passes
        out["flops"] += passes * f["unet"] + made * (f["vae_decode"] + (f["vae_encode"] if p.strength is not None else 0))
        if p.synth_method == "disef":
            out["flops"] += made * f["filter_image"]
    evaluate = lambda n: n * f["clip_image"] + n_classes * f["clip_text"]  # noqa: E731
    for setting in settings or p.clf_settings:
        flops = evaluate(test)
        if setting != "zero_shot":
            real = n_classes * p.shots * max(1, images // p.shots)
            synth = n_classes * images
            per_epoch = {"real_finetune": real, "synthetic": synth, "synthetic_real": synth + real}[setting]
            steps = math.ceil(per_epoch / p.clf_batch_size)  # one pooled dataset, as the authors do
            flops += p.clf_epochs * (LORA_TRAIN * (per_epoch * f["clip_image"] + steps * n_classes * f["clip_text"])
                                     + evaluate(val))
        out["flops"] += flops
    if fid:
        real_set = train if p.fid_real_set == "train" else n_classes * p.shots
        out["flops"] += (n_classes * images + real_set + val) * f["inception"]
    return out


def estimate(tflops: float, disef_attempts: float = 2.0) -> dict:
    f = forward_flops()
    hours = lambda flops: flops / (tflops * 1e12) / 3600  # noqa: E731
    root = runs.project_root() / "params" / "paper"
    rows = []
    for name in datasets.BENCHMARKS:
        spec, sizes = datasets.DATASETS[name], SPLIT_SIZES[name]
        row = {"dataset": name, "classes": spec.num_classes, "gpu_hours": {}, "unet_passes": {}}
        for label, suffix in METHOD_FILES.items():
            todo = params.load_runs(root / f"{name}_{suffix}.yaml")
            cost = run_cost(todo[0], spec.num_classes, sizes, f, disef_attempts=disef_attempts)
            row["unet_passes"][label] = cost["unet_passes"]
            row["gpu_hours"][label] = hours(cost["flops"])
            row["seeds"] = len(todo)
        row["total_gpu_hours"] = row["seeds"] * sum(row["gpu_hours"].values())
        rows.append(row)
    # Fig. 5 on FGVC Aircraft: what the ablation stage adds to each Table 1 run (its own points reused)
    fig5 = {}
    for variant in ("dset", "cls"):
        todo = params.load_runs(root / f"fig5_fgvc_aircraft_{variant}.yaml")
        p, n, sizes = todo[0], datasets.DATASETS["fgvc_aircraft"].num_classes, SPLIT_SIZES["fgvc_aircraft"]
        flops = sum(run_cost(p, n, sizes, f, p.ablation_settings, images_per_class=m, adapt=False, synthesize=False,
                             fid=False)["flops"] for m in p.ablation_images_per_class if m != p.images_per_class)
        flops += sum(run_cost(p.replace(shots=k, run_name=f"{p.run_name}_k{k}"), n, sizes, f, p.ablation_settings,
                              fid=False)["flops"] for k in p.ablation_shots if k != p.shots)
        fig5[variant] = len(todo) * hours(flops)
    return {"tflops_assumed": tflops, "disef_attempts_assumed": disef_attempts,
            "forward_gflops": {k: round(v / 1e9, 2) for k, v in f.items()},
            "datasets": rows, "fig5_fgvc_aircraft_gpu_hours": fig5,
            "table1_gpu_hours": sum(r["total_gpu_hours"] for r in rows)}


def markdown(result: dict) -> str:
    labels = list(METHOD_FILES)
    lines = ["| dataset | classes | " + " | ".join(f"GPU-h, {m} run" for m in labels) + " | GPU-h, all × seeds |",
             "|---|---|" + "---|" * len(labels) + "---|"]
    for r in result["datasets"]:
        cells = " | ".join(f"{r['gpu_hours'][m]:.1f}" for m in labels)
        lines.append(f"| {r['dataset']} | {r['classes']} | {cells} | {r['total_gpu_hours']:.0f} |")
    totals = " | ".join(f"{sum(r['gpu_hours'][m] * r['seeds'] for r in result['datasets']):.0f}" for m in labels)
    lines.append(f"| **Table 1, all seeds** | | {totals} | **{result['table1_gpu_hours']:.0f}** |")
    fig5 = result["fig5_fgvc_aircraft_gpu_hours"]
    lines.append(f"\nFig. 5 on FGVC Aircraft adds {fig5['dset']:.0f} (dset) + {fig5['cls']:.0f} (cls) GPU-hours over three seeds. "
                 f"Assumed sustained rate: {result['tflops_assumed']:.0f} TFLOP/s; one UNet pass at 512 px = "
                 f"{result['forward_gflops']['unet']:.0f} GFLOPs; DISEF: {result['disef_attempts_assumed']:g} attempts per "
                 f"image assumed.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tflops", type=float, default=200.0, help="assumed sustained TFLOP/s of one GPU")
    parser.add_argument("--disef-attempts", type=float, default=2.0, help="assumed mean DISEF attempts per image")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    result = estimate(args.tflops, args.disef_attempts)
    print(json.dumps(result, indent=1) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
