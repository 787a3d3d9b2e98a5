"""The GPU-hours of reproducing Table 1 (and Fig. 5), dataset by dataset: from the rates a
benchmark run measured, or, without one, from FLOPs at an assumed rate.

    python benchmarks/throughput.py --out rates.json        # on the GPU to cost (full-size models)
    python benchmarks/cost_estimate.py --rates rates.json   # Markdown table for the README
    python benchmarks/cost_estimate.py                      # no measurement: FLOPs at --tflops (an estimate)
    python benchmarks/cost_estimate.py --json

Counts come from the shipped grids (params/paper/table1.yaml: datasets x methods x seeds; fig5.yaml) and the samplers themselves (`stable_diffusion.unet_calls`: PNDM with N steps makes
N + 1 UNet calls, img2img at strength s int(N * s) + 1).

With `--rates` (throughput.py's JSON, library column): adaptation costs its LoRA training samples at
the measured seconds per step of batch 8; synthesis its UNet passes at the measured images per
second times the passes per image of the measurement (51 UNet calls of PNDM's 50 steps x 2 for guidance; the VAE's share is
taken as in that measurement); the classifier its training images at the slower of the measured
input pipeline and training step, and its evaluation images at LORA_TRAIN times the step's rate.
What no benchmark measures (DISEF's captions and filter, unCLIP's image encoder, FID's Inception)
is counted in FLOPs at --tflops; the table says so. A method on another UNet (Stable unCLIP at 768
px) counts each of its passes as its FLOPs' ratio to a 512-px SD 2.1-base pass (2.67: counted), at
the measured rate of the latter.

Without `--rates`, everything is FLOPs at --tflops: the FLOPs of one forward pass of each full-size
network (SD 2.1-base UNet at 512 px, its VAE and text encoder, CLIP ViT-B/16, Inception-v3) are
counted by torch.utils.flop_counter on the architectures built on the meta device (no weights, no
compute); training a LoRA costs about two forward passes per sample (activation gradients through
the frozen weights, no weight gradients); default 200 TFLOP/s, about 20 % of an H100's dense bf16
peak. Data loading, image decoding and checkpoint I/O are not counted.

DISEF adds its captions (LLaVA-1.5-7B, approximated as 2 x 7.06e9 FLOPs per token over the 576
image tokens, the query and `caption_max_tokens`) and, per attempt, an img2img generation and a
ViT-H-14 filter pass. How many candidates a class makes depends on the real filter's pass rate, an
assumption (--disef-pass-rate, default 0.5), turned into candidates by the run's `filter_rule`
(`methods.disef.expected_candidates`: the class rule at 0.5 makes 800 judged + 100 unfiltered
candidates for 500 images, 1.8 per image).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path
from typing import Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from datadream_lib import datasets, methods, models, params, runs
from datadream_lib.methods.stable_diffusion import unet_calls

# Split sizes (train, val, test) of CoOp's splits, as the CoOp paper lists them; ImageNet: the
# official train with a 10 % val carve-out, the official val as test. Only used for this estimate.
SPLIT_SIZES = {"imagenet": (1_153_051, 128_116, 50_000), "caltech101": (4128, 1649, 2465), "dtd": (2820, 1128, 1692),
               "eurosat": (13500, 5400, 8100), "fgvc_aircraft": (3334, 3333, 3333), "oxford_pets": (2944, 736, 3669),
               "stanford_cars": (6509, 1635, 8041), "sun397": (15880, 3970, 19850), "food101": (50500, 20200, 30300),
               "flowers102": (4093, 1633, 2463)}
LORA_TRAIN = 2.0  # forward + backward through frozen weights, in forward passes
UNETS = {"sd21_base_512": "unet", "unclip_768": "unet_unclip_768"}  # a method's `Cost.unet` -> its forward_flops key


@functools.lru_cache(maxsize=None)
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
        unclip = UNet2DConditionModel(**models.UNCLIP_UNET)
        vae = AutoencoderKL(**models.SD21_BASE_VAE)
        text = CLIPTextModel(CLIPTextConfig(**models.SD21_TEXT_ENCODER))
        clip = open_clip.create_model("ViT-B-16", pretrained=None, device="meta")
        filter_clip = open_clip.create_model("ViT-H-14", pretrained=None, device="meta")
        inception = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
        tokens = torch.zeros(1, 77, dtype=torch.long)
        return {
            "unet": count(lambda: unet(torch.zeros(1, 4, 64, 64), torch.tensor([1]), torch.zeros(1, 77, 1024))),
            "unet_unclip_768": count(lambda: unclip(torch.zeros(1, 4, 96, 96), torch.tensor([1]), torch.zeros(1, 77, 1024),
                                                    class_labels=torch.zeros(1, 2048))),
            "vae_encode": count(lambda: vae.encode(torch.zeros(1, 3, 512, 512))),
            "vae_decode": count(lambda: vae.decode(torch.zeros(1, 4, 64, 64))),
            "sd_text": count(lambda: text(tokens)),
            "clip_image": count(lambda: clip.encode_image(torch.zeros(1, 3, 224, 224))),
            "clip_text": count(lambda: clip.encode_text(tokens)),
            "inception": count(lambda: inception(torch.zeros(1, 3, 299, 299))),
            "filter_image": count(lambda: filter_clip.encode_image(torch.zeros(1, 3, 224, 224))),
        }


def run_cost(p, n_classes: int, sizes: tuple[int, int, int], f: dict, settings=None, images_per_class=None,
             adapt: bool = True, synthesize: bool = True, fid: bool = True, disef_pass_rate: float = 0.5) -> dict:
    """FLOPs and UNet passes of one run (one seed) with parameters p."""
    train, val, test = sizes
    images = images_per_class or p.images_per_class
    out = {"unet_passes": 0.0, "flops": 0.0, "adapt_samples": 0.0, "synth_passes": 0.0, "clf_train_images": 0.0,
           "clf_eval_images": 0.0, "unmeasured_flops": 0.0}  # the last: what no benchmark rate covers
    method = methods.METHODS[p.synth_method].cost(p, n_classes, images, filter_pass_rate=disef_pass_rate)
    if adapt:  # the method's preparation: LoRA training samples, captions
        out["unet_passes"] += LORA_TRAIN * method.adapt_samples
        out["adapt_samples"] += method.adapt_samples
        out["flops"] += method.adapt_samples * (LORA_TRAIN * f["unet"] + f["vae_encode"]
                                                + (LORA_TRAIN if method.adapt_text_encoder else 1) * f["sd_text"])
        captions = 2 * method.captioner_params * method.captioner_tokens
        out["flops"] += captions
        out["unmeasured_flops"] += captions
    if synthesize:  # UNet passes in SD 2.1-base 512-px passes (a 768-px unCLIP pass counts its FLOPs' ratio)
        passes = method.unet_passes * f[UNETS[method.unet]] / f["unet"]
        out["unet_passes"] += passes
        out["synth_passes"] += passes
        encodes = (method.filter_images + method.image_encodes) * f["filter_image"]  # both ViT-H/14 at 224 px
        out["flops"] += (passes * f["unet"] + method.vae_decodes * f["vae_decode"]
                         + method.vae_encodes * f["vae_encode"] + encodes)
        out["unmeasured_flops"] += encodes
    evaluate = lambda n: n * f["clip_image"] + n_classes * f["clip_text"]  # noqa: E731
    for setting in settings or p.clf_settings:
        flops = evaluate(test)
        out["clf_eval_images"] += test
        if setting != "zero_shot":
            real = n_classes * p.shots * max(1, images // p.shots)
            synth = n_classes * images
            per_epoch = {"real_finetune": real, "synthetic": synth, "synthetic_real": synth + real}[setting]
            steps = math.ceil(per_epoch / p.clf_batch_size)  # one pooled dataset, as the authors do
            flops += p.clf_epochs * (LORA_TRAIN * (per_epoch * f["clip_image"] + steps * n_classes * f["clip_text"])
                                     + evaluate(val))
            out["clf_train_images"] += p.clf_epochs * per_epoch
            out["clf_eval_images"] += p.clf_epochs * val
        out["flops"] += flops
    if fid:
        real_set = train if p.fid_real_set == "train" else n_classes * p.shots
        fid_flops = (n_classes * images + real_set + val) * f["inception"]
        out["flops"] += fid_flops
        out["unmeasured_flops"] += fid_flops
    return out


def measured_hours(cost: dict, rates: dict, tflops: float) -> float:
    """A run's GPU-hours at the library's rates measured by throughput.py (see the module text)."""
    synth, adapt, clf = rates["synthesis"]["library"], rates["adaptation"]["library"], rates["classifier"]
    # throughput.py times DataDream-dset, with PNDM: N + 1 UNet calls of N steps
    passes_per_image = unet_calls(rates.get("scheduler", "pndm"), rates["steps"], None) * (2 if rates["guidance"] > 1 else 1)
    clf_rate = min(clf["input_images_per_second"]["library"], clf["step_images_per_second"])
    seconds = (cost["adapt_samples"] / adapt["batch"] * adapt["seconds_per_step"]
               + cost["synth_passes"] / (synth["images_per_second"] * passes_per_image)
               + cost["clf_train_images"] / clf_rate
               + cost["clf_eval_images"] / (LORA_TRAIN * clf["step_images_per_second"])
               + cost["unmeasured_flops"] / (tflops * 1e12))
    return seconds / 3600


def estimate(tflops: float, disef_pass_rate: float = 0.5, rates: Optional[dict] = None) -> dict:
    """Table 1's GPU-hours per dataset and method: at the measured `rates` (throughput.py's JSON) or,
    without them, from FLOPs at `tflops`."""
    f = forward_flops()
    hours = lambda flops: flops / (tflops * 1e12) / 3600  # noqa: E731
    cost_hours = (lambda cost: measured_hours(cost, rates, tflops)) if rates else (lambda cost: hours(cost["flops"]))  # noqa: E731
    root = runs.project_root() / "params" / "paper"
    cells: dict[tuple, list] = {}  # (dataset, method cell) -> its runs, one per seed
    for cell, p in params.runs_of(root / "table1.yaml"):
        cells.setdefault((cell["dataset"], cell["method"]), []).append(p)
    rows = []
    for name in datasets.BENCHMARKS:
        spec, sizes = datasets.DATASETS[name], SPLIT_SIZES[name]
        row = {"dataset": name, "classes": spec.num_classes, "gpu_hours": {}, "unet_passes": {}, "seeds": {}}
        for (dataset, _), todo in cells.items():
            if dataset != name:
                continue
            label = methods.METHODS[todo[0].synth_method].label(todo[0])  # "DataDream-dset", "IsSynth", ...
            cost = run_cost(todo[0], spec.num_classes, sizes, f, disef_pass_rate=disef_pass_rate)
            row["unet_passes"][label] = cost["unet_passes"]
            row["gpu_hours"][label] = cost_hours(cost)
            row["seeds"][label] = len(todo)
        row["total_gpu_hours"] = sum(row["seeds"][label] * hours for label, hours in row["gpu_hours"].items())
        rows.append(row)
    # Fig. 5 on FGVC Aircraft: what the ablation stage adds to each Table 1 run (its own points reused)
    fig5 = {}
    for cell, p in params.runs_of(root / "fig5.yaml", {"seed": 0}):
        todo = params.load_runs(root / "fig5.yaml", cell)
        n, sizes = datasets.DATASETS[p.dataset].num_classes, SPLIT_SIZES[p.dataset]
        fig5[cell["method"]] = len(todo) * (
            sum(cost_hours(run_cost(p, n, sizes, f, p.ablation_settings, images_per_class=m, adapt=False,
                                    synthesize=False, fid=False))
                for m in p.ablation_images_per_class if m != p.images_per_class)
            + sum(cost_hours(run_cost(p.replace(shots=k, run_name=f"{p.run_name}_k{k}"), n, sizes, f,
                                      p.ablation_settings, fid=False))
                  for k in p.ablation_shots if k != p.shots))
    source = (f"rates measured by benchmarks/throughput.py on {rates['device']} ({rates.get('date', 'date not recorded')}, "
              f"models: {rates['models']})" if rates else f"FLOPs at an assumed {tflops:.0f} TFLOP/s (no measurement)")
    return {"source": source, "tflops_assumed": tflops, "disef_pass_rate_assumed": disef_pass_rate,
            "rates": rates and {"synthesis_images_per_second": rates["synthesis"]["library"]["images_per_second"],
                                "adaptation_seconds_per_step": rates["adaptation"]["library"]["seconds_per_step"],
                                "classifier_input_images_per_second": rates["classifier"]["input_images_per_second"]["library"],
                                "classifier_step_images_per_second": rates["classifier"]["step_images_per_second"]},
            "forward_gflops": {k: round(v / 1e9, 2) for k, v in f.items()},
            "datasets": rows, "fig5_fgvc_aircraft_gpu_hours": fig5,
            "table1_gpu_hours": sum(r["total_gpu_hours"] for r in rows)}


def markdown(result: dict) -> str:
    labels = list(result["datasets"][0]["gpu_hours"])
    lines = ["| dataset | classes | " + " | ".join(f"GPU-h, {m} run" for m in labels) + " | GPU-h, all × seeds |",
             "|---|---|" + "---|" * len(labels) + "---|"]
    for r in result["datasets"]:
        cells = " | ".join(f"{r['gpu_hours'][m]:.1f}" for m in labels)
        lines.append(f"| {r['dataset']} | {r['classes']} | {cells} | {r['total_gpu_hours']:.0f} |")
    totals = " | ".join(f"{sum(r['gpu_hours'][m] * r['seeds'][m] for r in result['datasets']):.0f}" for m in labels)
    lines.append(f"| **all presets, all seeds** | | {totals} | **{result['table1_gpu_hours']:.0f}** |")
    fig5 = result["fig5_fgvc_aircraft_gpu_hours"]
    measured = result["rates"] is not None
    lines.append(f"\nSource: {result['source']}" + (f"; DISEF's captions and filter and FID's Inception in FLOPs at an "
                                                      f"assumed {result['tflops_assumed']:.0f} TFLOP/s" if measured else "")
                 + f". Fig. 5 on FGVC Aircraft adds {fig5['dset']:.0f} (dset) + {fig5['cls']:.0f} (cls) GPU-hours over "
                 f"three seeds. One UNet pass at 512 px = {result['forward_gflops']['unet']:.0f} GFLOPs (Stable unCLIP's at 768 px: "
                 f"{result['forward_gflops']['unet_unclip_768']:.0f}; its VAE decodes are counted at 512 px); DISEF: a "
                 f"filter pass rate of {result['disef_pass_rate_assumed']:g} assumed.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tflops", type=float, default=200.0, help="assumed sustained TFLOP/s of one GPU")
    parser.add_argument("--disef-pass-rate", type=float, default=0.5, help="assumed share of DISEF's candidates its filter passes")
    parser.add_argument("--rates", type=Path, help="the JSON of a benchmarks/throughput.py run (full-size models, on a GPU)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    rates = json.loads(args.rates.read_text()) if args.rates else None
    if rates and rates.get("models") != "full_random":
        parser.error(f"{args.rates} was measured on the {rates.get('models')} models; cost a GPU run of the full-size ones.")
    result = estimate(args.tflops, args.disef_pass_rate, rates)
    print(json.dumps(result, indent=1) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
