"""Pretraining the toy world's models on a CPU (datadream_lib/toyworld/world.py draws the world): the VAE,
then the text encoder with the UNet, then open_clip's CLIP, from one seed, written as fp16
safetensors under models/toyworld/ (`models.TOY_WORLD`) with a MANIFEST.json (seed, steps, commit,
packages, sha256 of every file), which `models.check_toy_weights` verifies before any run uses them.

    python -m datadream_lib.toyworld.pretrain --out models/toyworld   # about 25 minutes on 2 CPU cores

Deterministic at a fixed thread count (`--threads`, 2 for the committed weights).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np

from datadream_lib.toyworld.world import (BACKGROUNDS, COLOURS, FILLS, SHAPES, SIZE, generic_image, world_caption,
                                          world_image)

# A little larger than the random `tiny` preset (which stays for the unit tests' speed): three UNet
# levels with cross-attention on two, a 64-wide text encoder, a ViT with 4-px patches.
TOY_UNET = dict(  # on the VAE's 8 x 8 latents of a 32-px image
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(48, 96),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(4, 8), cross_attention_dim=64, use_linear_projection=True, norm_num_groups=16,
)
TOY_VAE = dict(  # three levels: 32 px -> 8 x 8 x 4 latents (SD's VAE: 512 px -> 64 x 64 x 4)
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=SIZE,
    block_out_channels=(32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=16, scaling_factor=1.0,
)
TOY_TEXT_ENCODER = dict(
    vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=64,
)
TOY_CLIP = dict(embed_dim=64, quick_gelu=True,  # open_clip's model config, as its open_clip_config.json holds one
                vision_cfg=dict(layers=3, width=64, head_width=32, patch_size=4, image_size=SIZE),
                text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))
STEPS = {"vae": 600, "sd": 4000, "clip": 1800}  # the committed weights' schedule
WORLD_IMAGES = 20000
VAE_BATCH = 32
CAPTION_DROPOUT = 0.1  # captions replaced by "" so classifier-free guidance has an unconditional model


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _captions(attributes: list, rng: np.random.Generator, dropout: float) -> list[str]:
    return ["" if rng.random() < dropout else world_caption(*a, rng) for a in attributes]


def _world_attributes(n: int, seed: int, fills: tuple = FILLS, salt: int = 7) -> tuple[np.ndarray, list[tuple]]:
    rng = np.random.default_rng([seed, salt])
    images, attributes = [], []
    for _ in range(n):
        a = (SHAPES[int(rng.integers(len(SHAPES)))], list(COLOURS)[int(rng.integers(len(COLOURS)))],
             fills[int(rng.integers(len(fills)))], list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))])
        images.append(np.asarray(world_image(*a, rng)))
        attributes.append(a)
    return np.stack(images), attributes


CLIP_FILLS = (*FILLS, "outlined")  # CLIP's world is broader than SD's (as OpenAI's data was than LAION-aesthetics)


def pretrain(out: Path, seed: int = 0, steps: Optional[dict] = None, world_images: int = WORLD_IMAGES,
             log=print, parts: tuple = ("sd", "clip")) -> dict:
    """Pretrain the world's models from `seed` and write them under `out`: part "sd" is the VAE, then
    the text encoder + UNet (epsilon prediction in the VAE's latents), written as a diffusers folder
    `sd/` without tokenizer; part "clip" is open_clip's CLIP (contrastive on the captions), written
    as `clip/open_clip_model.safetensors` + `open_clip_config.json`. All fp16 safetensors; then
    MANIFEST.json. The parts share nothing but the seed (each draws its own world and seeds its own
    generators), so either can be trained again alone and gives the bytes a run of both gives.
    Deterministic at a fixed thread count."""
    import torch

    from datadream_lib import environment
    from datadream_lib.files import atomic_write_text

    steps = {**STEPS, **(steps or {})}
    out = Path(out)
    env = environment.describe()  # the code as it starts (files edited while it runs do not count)
    record = {"commit": env["git_commit"], "git_dirty": env["git_dirty"], "time": env["time"],
              "torch_threads": torch.get_num_threads(), "packages": env["packages"]}
    path = out / "MANIFEST.json"
    previous = json.loads(path.read_text()).get("parts", {}) if path.exists() and set(parts) != {"sd", "clip"} else {}
    done = dict(previous)
    if "sd" in parts:
        done["sd"] = {**record, "steps": {k: steps[k] for k in ("vae", "sd")}, "seconds": _train_sd(out, seed, steps, world_images, log)}
    if "clip" in parts:
        done["clip"] = {**record, "steps": {"clip": steps["clip"]}, "seconds": _train_clip(out, seed, steps, world_images, log)}
    manifest = {"seed": seed, "world_images": world_images, "parts": done,
                "minutes": round(sum(sum(p["seconds"].values()) for p in done.values()) / 60, 1),
                "files": {str(f.relative_to(out)): sha256(f) for f in sorted(out.rglob("*"))
                          if f.is_file() and f.name != "MANIFEST.json" and "tokenizer" not in f.relative_to(out).parts}}
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _train_sd(out: Path, seed: int, steps: dict, world_images: int, log) -> dict:
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from datadream_lib import models
    from datadream_lib.files import atomic_write_text

    torch.manual_seed(seed)
    started = time.time()
    pixels_u8, attributes = _world_attributes(world_images, seed)
    pixels = torch.from_numpy(pixels_u8).permute(0, 3, 1, 2).float() / 127.5 - 1  # [-1, 1], as SD reads images
    generic_rng = np.random.default_rng([seed, 9])
    generic = np.stack([np.asarray(generic_image(generic_rng)) for _ in range(world_images // 2)])
    vae_pixels = torch.cat([pixels, torch.from_numpy(generic).permute(0, 3, 1, 2).float() / 127.5 - 1])
    log(f"[toyworld] {world_images} world images drawn in {time.time() - started:.0f} s")
    rng = np.random.default_rng([seed, 8])
    batch = 64
    timings = {}
    # 1. the VAE: reconstruction + a small KL, as SD's autoencoder (no GAN loss at this size), on the
    #    world's images and as many uncaptioned generic ones
    t0 = time.time()
    vae = AutoencoderKL(**TOY_VAE)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    for step in range(steps["vae"]):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * _cosine(step, steps["vae"], 50)
        x = vae_pixels[torch.from_numpy(rng.integers(0, len(vae_pixels), VAE_BATCH))]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = F.mse_loss(recon, x) + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == steps["vae"] - 1:
            log(f"[toyworld] vae step {step}: loss {loss.item():.4f}")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        dists = [vae.encode(pixels[i:i + 256]).latent_dist for i in range(0, world_images, 256)]
        mean = torch.cat([d.mean for d in dists])
        std = torch.cat([d.std for d in dists])
    scaling = float(1.0 / mean.std())
    vae.register_to_config(scaling_factor=round(scaling, 5))
    timings["vae_s"] = round(time.time() - t0, 1)

    # 2. the text encoder and UNet, trained together from scratch (SD's own text encoder is CLIP's;
    #    here the world has no CLIP text tower of this class to borrow)
    t0 = time.time()
    tokenizer = models.clip_tokenizer()
    cache: dict[str, torch.Tensor] = {}

    def ids_of(captions):
        missing = [c for c in set(captions) if c not in cache]
        if missing:
            ids = tokenizer(missing, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            cache.update(zip(missing, ids))
        return torch.stack([cache[c] for c in captions])

    text_encoder = CLIPTextModel(CLIPTextConfig(**TOY_TEXT_ENCODER))
    unet = UNet2DConditionModel(**TOY_UNET)
    noise_sched = DDPMScheduler.from_config(models.SD_SCHEDULER)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    for step in range(steps["sd"]):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * _cosine(step, steps["sd"], 200)
        index = torch.from_numpy(rng.integers(0, world_images, batch))
        latents = (mean[index] + std[index] * torch.randn(mean[index].shape)) * scaling
        noise = torch.randn_like(latents)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (batch,))
        noisy = noise_sched.add_noise(latents, noise, t)
        hidden = text_encoder(ids_of(_captions([attributes[i] for i in index.tolist()], rng, CAPTION_DROPOUT)))[0]
        loss = F.mse_loss(unet(noisy, t, hidden).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 500 == 0 or step == steps["sd"] - 1:
            log(f"[toyworld] sd step {step}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    timings["sd_s"] = round(time.time() - t0, 1)

    # 4. write: a diffusers folder as the hub holds SD 2.1 (its tokenizer: CLIP's own BPE, not trained,
    #    so not in MANIFEST.json's checksums), and open_clip's checkpoint + config, all fp16 safetensors
    sd = out / "sd"
    models.clip_tokenizer().save_pretrained(sd / "tokenizer")
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        module.to(torch.float16).save_pretrained(sd / name, safe_serialization=True)
    PNDMScheduler.from_config(models.SD_SCHEDULER).save_pretrained(sd / "scheduler")
    atomic_write_text(sd / "model_index.json", json.dumps({
        "_class_name": "StableDiffusionPipeline", "feature_extractor": [None, None], "safety_checker": [None, None],
        "requires_safety_checker": False, "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    return timings


def _train_clip(out: Path, seed: int, steps: dict, world_images: int, log) -> dict:
    import open_clip
    import torch
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from safetensors.torch import save_file

    from datadream_lib import models
    from datadream_lib.files import atomic_write_text

    torch.manual_seed(seed + 1)
    pixels_u8, attributes = _world_attributes(world_images, seed, CLIP_FILLS, salt=12)
    pixels = torch.from_numpy(pixels_u8).permute(0, 3, 1, 2).float() / 255
    rng = np.random.default_rng([seed, 10])
    timings = {}
    t0 = time.time()
    clip_tok = open_clip.get_tokenizer("ViT-B-16")
    clip = CLIP(TOY_CLIP["embed_dim"], CLIPVisionCfg(**TOY_CLIP["vision_cfg"]), CLIPTextCfg(**TOY_CLIP["text_cfg"]),
                quick_gelu=TOY_CLIP["quick_gelu"])
    mean_c = torch.tensor(models.CLIP_MEAN).view(1, 3, 1, 1)
    std_c = torch.tensor(models.CLIP_STD).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(clip.parameters(), lr=1.5e-3, weight_decay=0.1)
    clip_batch = 128
    for step in range(steps["clip"]):
        for g in opt.param_groups:
            g["lr"] = 1.5e-3 * _cosine(step, steps["clip"], 100)
        index = torch.from_numpy(rng.integers(0, world_images, clip_batch))
        x = (pixels[index] - mean_c) / std_c
        text = clip_tok(_captions([attributes[i] for i in index.tolist()], rng, 0.0))
        image_f, text_f, logit_scale = clip(x, text)
        logits = logit_scale * image_f @ text_f.T
        # captions repeat within a batch: images with the same caption are all positives
        same = (text[:, None, :] == text[None, :, :]).all(-1).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean() + torch.sum(-target * logits.T.log_softmax(1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clip.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        if step % 500 == 0 or step == steps["clip"] - 1:
            log(f"[toyworld] clip step {step}: loss {loss.item():.4f}")
    timings["clip_s"] = round(time.time() - t0, 1)

    (out / "clip").mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in clip.state_dict().items()}, str(out / "clip" / "open_clip_model.safetensors"))
    atomic_write_text(out / "clip" / "open_clip_config.json", json.dumps({"model_cfg": TOY_CLIP, "preprocess_cfg": {
        "mean": list(models.CLIP_MEAN), "std": list(models.CLIP_STD)}}, indent=2))
    return timings


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv=None) -> None:
    from datadream_lib.models import TOY_WORLD

    run = argparse.ArgumentParser(prog="python -m datadream_lib.toyworld.pretrain",
                                  description="pretrain the toy world's tiny Stable Diffusion and CLIP from a seed")
    run.add_argument("--out", default=str(TOY_WORLD))
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=int, default=2, help="torch threads (the committed weights: 2)")
    for name, value in STEPS.items():
        run.add_argument(f"--{name}-steps", type=int, default=value)
    run.add_argument("--world-images", type=int, default=WORLD_IMAGES)
    run.add_argument("--parts", nargs="+", choices=("sd", "clip"), default=["sd", "clip"],
                     help="train only these (the other's files and record in --out are kept)")
    args = run.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    manifest = pretrain(Path(args.out), args.seed, {n: getattr(args, f"{n}_steps") for n in STEPS}, args.world_images,
                        parts=tuple(args.parts))
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()


