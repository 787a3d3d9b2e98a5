"""Stable Diffusion 2.1 without adaptation: text-to-image from the class prompt (`stable_diffusion`).

Also the shared Stable Diffusion machinery of the other methods: the pipeline built on the run's
device and precision with the run's sampler, the img2img variant on the same components, a real
shot prepared as an img2img source, and the preflight check of the weights.
"""

from __future__ import annotations

import torch
from PIL import Image

from datadream_lib import models
from datadream_lib.methods.base import Method


def make_scheduler(name: str, config):
    """A short name below, or any diffusers scheduler class, built from the model's scheduler config."""
    import diffusers

    kinds = {
        "pndm": (diffusers.PNDMScheduler, {}),
        "ddim": (diffusers.DDIMScheduler, {}),
        "dpmsolver++": (diffusers.DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        "euler": (diffusers.EulerDiscreteScheduler, {}),
        "euler_ancestral": (diffusers.EulerAncestralDiscreteScheduler, {}),
        "ddpm": (diffusers.DDPMScheduler, {}),
        "unipc": (diffusers.UniPCMultistepScheduler, {}),
    }
    cls, extra = kinds[name] if name in kinds else (getattr(diffusers, name), {})
    return cls.from_config(config, **extra)


def model_name(p) -> str:
    return p.sd_model if p.models == "pretrained" else f"{p.models} (random weights, seed {models.TINY_SEED})"


def load_pipeline(p, img2img: bool = False):
    """Stable Diffusion on the run's device and precision, with the run's sampler, no progress bar."""
    device = models.resolve_device(p)
    dtype = models.autocast_dtype(p, device) or torch.float32
    pipe = models.load_sd_pipeline(p)
    if img2img:
        from diffusers import StableDiffusionImg2ImgPipeline

        pipe = StableDiffusionImg2ImgPipeline(**pipe.components)
    pipe.scheduler = make_scheduler(p.scheduler, pipe.scheduler.config)
    for module in (pipe.vae, pipe.unet, pipe.text_encoder):
        models.place(module, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


COMPILE_PAYS_BACK = 2000  # images one process makes from which `compile` (unset) compiles the UNet and VAE decoder


def speed_up(pipe, p, images: int, fuse_qkv: bool) -> dict:
    """The generation fast path; returns what it did, for every manifest row (each changes pixels by
    roundoff only): `fused_qkv` (one matmul for q, k, v; k, v in cross-attention), `channels_last`
    (unset: on a GPU) and `compiled` (torch.compile of the UNet and VAE decoder, in place: the modules keep
    their names, so LoRA still loads into them)."""
    device = models.resolve_device(p)
    channels_last = models.use_channels_last(p, device)
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if fuse_qkv:
        pipe.unet.fuse_qkv_projections()
    compiled = models.use_compile(p, device, images, COMPILE_PAYS_BACK)
    if compiled:
        pipe.unet.compile()
        pipe.vae.decoder.compile()
    return {"fused_qkv": fuse_qkv, "channels_last": channels_last, "compiled": compiled}


def refresh_fused_qkv(unet) -> None:
    """Copy q, k, v weights changed after `fuse_qkv_projections` (a fused LoRA) into the fused
    projections, in place, so a compiled UNet stays valid."""
    from diffusers.models.attention_processor import Attention

    with torch.no_grad():
        for attn in unet.modules():
            if isinstance(attn, Attention):
                parts = {"to_qkv": (attn.to_q, attn.to_k, attn.to_v), "to_kv": (attn.to_k, attn.to_v)}
                for name, sources in parts.items():
                    fused = getattr(attn, name, None)
                    if fused is not None:
                        fused.weight.copy_(torch.cat([layer.weight for layer in sources]))
                        if fused.bias is not None:
                            fused.bias.copy_(torch.cat([layer.bias for layer in sources]))


def first_timestep(pipe, steps: int, strength: float) -> int:
    """The timestep img2img starts denoising from at this strength (with `leading` spacing, strength
    0.75 of 20 DPM-Solver++ steps starts at t 706, not 749)."""
    pipe.scheduler.set_timesteps(steps)
    timesteps, _ = pipe.get_timesteps(steps, strength, "cpu")
    return int(timesteps[0])


def source_image(path: str, resolution: int) -> Image.Image:
    """A real shot as an img2img source: padded to a square with black (as DISEF does; no content is
    cropped away) and resized to the generation resolution."""
    from datadream_lib.splits import load_rgb

    image = load_rgb(path)
    side = max(image.size)
    square = Image.new("RGB", (side, side))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square.resize((resolution, resolution), Image.BICUBIC)


def check_weights(p) -> None:
    models.check_sd_reachable(p)


class StableDiffusion(Method):
    """Text-to-image with the class prompt and the frozen model: DataDream without its adapters."""

    name = "stable_diffusion"

    @classmethod
    def defaults(cls, shots: int) -> dict:
        return {"scheduler": "pndm", "num_inference_steps": 50, "guidance_scale": 2.0, "strength": None}

    @classmethod
    def label(cls, p) -> str:
        return "Stable Diffusion"

    @classmethod
    def weights(cls, p):
        return [lambda: check_weights(p)]

    def plan(self, job) -> dict:
        return {"prompt": self.split.prompts()[job.class_index]}

    def fuses_qkv(self) -> bool:
        return self.p.synth_fuse_qkv

    def load(self, images: int = 0) -> None:
        self._load(images, img2img=False)

    def _load(self, images: int, img2img: bool) -> None:
        self.pipe = load_pipeline(self.p, img2img)
        self.speed = speed_up(self.pipe, self.p, images, self.fuses_qkv())

    def describe(self, class_index: int) -> dict:
        return {"model": model_name(self.p), "sampler": self.p.scheduler, "steps": self.p.num_inference_steps,
                "guidance": self.p.guidance_scale, **self.speed}

    @torch.no_grad()
    def generate(self, jobs: list) -> list[tuple]:
        p = self.p
        generators = [torch.Generator().manual_seed(job.seed) for job in jobs]  # CPU: the same noise on any device
        out = self.pipe([job.plan["prompt"] for job in jobs], height=p.resolution, width=p.resolution,
                        num_inference_steps=p.num_inference_steps, guidance_scale=p.guidance_scale,
                        generator=generators, output_type="pil")
        return [(image, {}) for image in out.images]
