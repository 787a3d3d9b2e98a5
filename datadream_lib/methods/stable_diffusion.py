"""Stable Diffusion 2.1 without adaptation: text-to-image from the class prompt (`stable_diffusion`).

Also the shared Stable Diffusion machinery of the other methods: the pipeline built on the run's
device and precision with the run's sampler, the img2img variant on the same components, a real
shot prepared as an img2img source, and the preflight check of the weights.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import ClassVar

import torch
from PIL import Image

from datadream_lib import models, runtime
from datadream_lib.errors import DataDreamError
from datadream_lib.methods.base import Cost, Method
from datadream_lib.schema import field

SCHEDULERS = ("pndm", "ddim", "dpmsolver++", "euler", "euler_ancestral", "ddpm", "unipc")


def diffusers_schedulers() -> set[str]:
    """The scheduler classes diffusers exports, read from its package's `__init__.py` as text (its lazy
    import table names each one in quotes): checking a parameter never imports diffusers."""
    import importlib.util
    import re
    from pathlib import Path

    spec = importlib.util.find_spec("diffusers")
    if spec is None or spec.origin is None:
        raise DataDreamError("diffusers is not installed; `make setup` installs the project's lock.")
    return set(re.findall(r'"(\w+Scheduler)"', Path(spec.origin).read_text()))


def check_scheduler(name: str, where: str) -> None:
    """A short name of SCHEDULERS or a diffusers scheduler class name, or stop naming the nearest."""
    if name in SCHEDULERS:
        return
    if name not in diffusers_schedulers():
        close = difflib.get_close_matches(name, SCHEDULERS, n=1, cutoff=0.5)
        raise DataDreamError(f"{where}: {name!r} is neither one of {list(SCHEDULERS)} nor a diffusers scheduler class."
                             + (f" Did you mean '{close[0]}'?" if close else ""))


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Stable Diffusion's generation settings: the group of `stable_diffusion`, and the start of
    every other Stable Diffusion method's (each sets its own defaults)."""
    PRESETS: ClassVar[dict] = {"demo": {"resolution": 32, "num_inference_steps": 20},  # the demo's and the toy world's size
                               "smoke": {"num_inference_steps": 4}}
    scheduler: str = field("pndm", f"sampler: one of {list(SCHEDULERS)} or any diffusers scheduler class name, e.g. 'KDPM2DiscreteScheduler'", check=check_scheduler)
    num_inference_steps: int = field(50, "sampler steps", min=1)
    guidance_scale: float = field(2.0, "classifier-free guidance scale", min=0.0)
    resolution: int = field(512, "generation resolution in pixels (DataDream: also the adapters' training resolution)", min=8)
    synth_fuse_qkv: bool = field(True, "one matmul for the UNet's q, k, v projections (k, v in cross-attention) while generating; with synth_fuse_lora off it is off (roundoff only, recorded per image)", identity=False)


def make_scheduler(name: str, config, timestep_spacing: str | None = None):
    """A short name below, or any diffusers scheduler class, built from the model's scheduler config;
    `timestep_spacing` pins the spacing whatever the config says (see `TIMESTEP_SPACING`)."""
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
    if timestep_spacing is not None:
        extra = {**extra, "timestep_spacing": timestep_spacing}
    return cls.from_config(config, **extra)


# The spacing of the sampler's timesteps is pinned per method, so a schedule is the same however the
# weights folder was made: SD 2.1-base's hub `scheduler_config.json` has no `timestep_spacing`, so each
# scheduler class takes its own default (PNDM: leading, DPM-Solver++: linspace), while a folder
# written by `save_pretrained`, or the presets' config, says `leading`. DataDream, Stable Diffusion
# and IsSynth sample with PNDM, hence leading; DISEF pins its authors' linspace.
TIMESTEP_SPACING = "leading"


@functools.cache
def unet_calls(scheduler: str, steps: int, strength: float | None, timestep_spacing: str = TIMESTEP_SPACING) -> int:
    """UNet calls of one generation (each a doubled batch under guidance), counted on the scheduler
    itself: PNDM with N steps makes N + 1 (its PLMS warm-up), img2img at strength s int(N·s) + 1."""
    import types

    from diffusers import StableDiffusionImg2ImgPipeline

    sched = make_scheduler(scheduler, models.SD_SCHEDULER, timestep_spacing)
    sched.set_timesteps(steps)
    if strength is None:
        return len(sched.timesteps)
    timesteps, _ = StableDiffusionImg2ImgPipeline.get_timesteps(types.SimpleNamespace(scheduler=sched), steps, strength, "cpu")
    return len(timesteps)


def model_name(p) -> str:
    if p.models == "toy":
        return f"toy world ({models.TOY_WORLD.name}, MANIFEST sha256 {models.toy_manifest_digest()[:12]})"
    return p.sd_model if p.models == "pretrained" else f"{p.models} (random weights, seed {models.TINY_SEED})"


def load_pipeline(p, img2img: bool = False, timestep_spacing: str = TIMESTEP_SPACING):
    """Stable Diffusion on the run's device and precision, with the run's sampler (its timestep
    spacing pinned), no progress bar."""
    device = runtime.resolve_device(p)
    dtype = runtime.autocast_dtype(p, device) or torch.float32
    pipe = models.load_sd_pipeline(p)
    if img2img:
        from diffusers import StableDiffusionImg2ImgPipeline

        pipe = StableDiffusionImg2ImgPipeline(**pipe.components)
    pipe.scheduler = make_scheduler(p.method.scheduler, pipe.scheduler.config, timestep_spacing)
    for module in (pipe.vae, pipe.unet, pipe.text_encoder):
        runtime.place(module, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


COMPILE_PAYS_BACK = 2000  # images one process makes from which `compile` (unset) compiles the UNet and VAE decoder


def speed_up(pipe, p, images: int, fuse_qkv: bool) -> dict:
    """The generation fast path; returns what it did, for every manifest row (each changes pixels by
    roundoff only): `fused_qkv` (one matmul for q, k, v; k, v in cross-attention), `channels_last`
    (unset: on a GPU) and `compiled` (torch.compile of the UNet and VAE decoder, in place: the modules keep
    their names, so LoRA still loads into them)."""
    device = runtime.resolve_device(p)
    channels_last = runtime.use_channels_last(p, device)
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if fuse_qkv:
        pipe.unet.fuse_qkv_projections()
    compiled = runtime.use_compile(p, device, images, COMPILE_PAYS_BACK)
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
    """The timestep img2img starts denoising from at this strength (strength 0.75 of 20 DPM-Solver++
    steps starts at t 749 with linspace spacing, at t 706 with leading)."""
    pipe.scheduler.set_timesteps(steps)
    timesteps, _ = pipe.get_timesteps(steps, strength, "cpu")
    return int(timesteps[0])


def source_image(path: str, resolution: int, fit: str = "crop") -> Image.Image:
    """A real shot as an img2img source at the generation resolution. fit "crop": the shorter side
    resized to it and the centre cropped, as test images are (no bars; for IsSynth, whose authors
    resize without padding); "pad": padded to a square with black, then resized (DISEF's authors);
    "stretch": resized to the square, aspect ratio lost (DA-Fusion's authors)."""
    from datadream_lib.splits import load_rgb

    image = load_rgb(path)
    if fit == "stretch":  # DA-Fusion's authors: stretched to a square, bilinear
        return image.resize((resolution, resolution), Image.BILINEAR)
    if fit == "crop":
        scale = resolution / min(image.size)
        w, h = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
        image = image.resize((w, h), Image.BICUBIC)
        left, top = (w - resolution) // 2, (h - resolution) // 2
        return image.crop((left, top, left + resolution, top + resolution))
    side = max(image.size)
    square = Image.new("RGB", (side, side))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square.resize((resolution, resolution), Image.BICUBIC)


def check_strength(value: float, where: str) -> None:
    """An img2img strength lies in (0, 1]: 0 would return the source unchanged (no denoising step)."""
    if not 0 < value <= 1:
        raise DataDreamError(f"{where} must lie in (0, 1], got {value!r}: 0 returns the shot itself (no denoising "
                             f"step); 1 noises it to the last timestep, where about 7 % of the shot remains.")


def check_weights(p) -> dict:
    return models.check_sd_reachable(p)


class Generator:
    """Stable Diffusion as a method uses it, held by the method (composition): the pipeline on the
    run's device and precision with the run's sampler (its timestep spacing pinned), the fast path,
    and batches seeded per image (CPU generators: the same noise on any device). `img2img`: the
    img2img pipeline on the same components, its sources prepared with `source_fit`."""

    def __init__(self, p, *, img2img: bool = False, timestep_spacing: str = TIMESTEP_SPACING, fuse_qkv: bool = True,
                 source_fit: str = "crop"):
        self.p, self.is_img2img, self.timestep_spacing = p, img2img, timestep_spacing
        self.fuse_qkv, self.source_fit = fuse_qkv, source_fit

    def load(self, images: int = 0) -> None:
        """Build the pipeline; `images`: how many this process makes (a long run compiles)."""
        p = self.p
        self.pipe = load_pipeline(p, self.is_img2img, self.timestep_spacing)
        self.speed = speed_up(self.pipe, p, images, self.fuse_qkv)
        self._starts: dict[float, int] = {}

    def first_timestep(self, strength: float) -> int:
        """The timestep img2img starts from at `strength` with the run's sampler (recorded per image)."""
        if strength not in self._starts:
            self._starts[strength] = first_timestep(self.pipe, self.p.method.num_inference_steps, strength)
        return self._starts[strength]

    @property
    def start(self) -> int:
        """The first timestep at the run's strength."""
        return self.first_timestep(self.p.method.strength)

    def describe(self) -> dict:
        p = self.p
        return {"model": model_name(p), "sampler": p.method.scheduler, "timestep_spacing": self.timestep_spacing,
                "steps": p.method.num_inference_steps, "guidance": p.method.guidance_scale, **self.speed}

    @torch.no_grad()
    def text_to_image(self, prompts: list[str], seeds: list[int]) -> list:
        p = self.p
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        return self.pipe(prompts, height=p.method.resolution, width=p.method.resolution, num_inference_steps=p.method.num_inference_steps,
                         guidance_scale=p.method.guidance_scale, generator=generators, output_type="pil").images

    @torch.no_grad()
    def img2img(self, source_paths: list[str], prompts: list[str], seeds: list[int],
                strengths: list[float] | None = None) -> list:
        """One batch: each real shot (a path) noised to its strength (default: the run's; a method may
        plan one per image) and denoised with its prompt; images of one strength share a pipeline call."""
        p = self.p
        strengths = strengths or [p.method.strength] * len(prompts)
        sources = [source_image(path, p.method.resolution, self.source_fit) for path in source_paths]
        out: list = [None] * len(prompts)
        for strength in sorted(set(strengths)):
            chosen = [i for i, s in enumerate(strengths) if s == strength]
            images = self.pipe([prompts[i] for i in chosen], image=[sources[i] for i in chosen], strength=strength,
                               num_inference_steps=p.method.num_inference_steps, guidance_scale=p.method.guidance_scale,
                               generator=[torch.Generator().manual_seed(seeds[i]) for i in chosen],
                               output_type="pil").images
            for i, image in zip(chosen, images):
                out[i] = image
        return out

    def unet_calls(self) -> int:
        """UNet calls of one image (before the doubling of guidance), counted on the sampler."""
        return unet_calls(self.p.method.scheduler, self.p.method.num_inference_steps, self.p.method.strength if self.is_img2img else None,
                          self.timestep_spacing)

    def cost(self, n_classes: int, images: int, candidates_per_image: float = 1.0) -> Cost:
        """What making `images` images per class costs, in counts (see `base.Cost`)."""
        made = n_classes * images * candidates_per_image
        calls = self.unet_calls() * (2 if self.p.method.guidance_scale > 1 else 1)
        return Cost(unet_passes=made * calls, vae_decodes=made, vae_encodes=made if self.is_img2img else 0.0,
                    images_made=made)


class StableDiffusion(Method):
    """Text-to-image with the class prompt and the frozen model: DataDream without its adapters."""

    name = "stable_diffusion"
    parameters = Sampling

    @classmethod
    def display(cls, variant) -> str:
        return "Stable Diffusion"

    @classmethod
    def weights(cls, p):
        return [lambda: check_weights(p)]

    @classmethod
    def cost(cls, p, n_classes: int, images: int, **assumptions) -> Cost:
        return Generator(p).cost(n_classes, images)

    def plan(self, job) -> dict:
        return {"prompt": self.split.prompts()[job.class_index]}

    def load(self, images: int = 0, batch_size: int | None = None) -> None:
        self.sd = Generator(self.p, fuse_qkv=self.p.method.synth_fuse_qkv)
        self.sd.load(images)

    def describe(self, class_index: int) -> dict:
        return self.sd.describe()

    def generate(self, jobs: list) -> list[tuple]:
        images = self.sd.text_to_image([job.plan["prompt"] for job in jobs], [job.seed for job in jobs])
        return [(image, {}) for image in images]
