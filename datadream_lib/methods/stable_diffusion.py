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

    def load(self) -> None:
        self.pipe = load_pipeline(self.p)

    def describe(self, class_index: int) -> dict:
        return {"model": model_name(self.p), "sampler": self.p.scheduler, "steps": self.p.num_inference_steps,
                "guidance": self.p.guidance_scale}

    @torch.no_grad()
    def generate(self, jobs: list) -> list[tuple]:
        p = self.p
        generators = [torch.Generator().manual_seed(job.seed) for job in jobs]  # CPU: the same noise on any device
        out = self.pipe([job.plan["prompt"] for job in jobs], height=p.resolution, width=p.resolution,
                        num_inference_steps=p.num_inference_steps, guidance_scale=p.guidance_scale,
                        generator=generators, output_type="pil")
        return [(image, {}) for image in out.images]
