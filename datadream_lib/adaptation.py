"""DataDream adaptation (paper section 3.2, docs/hyperparameters.md §1).

LoRA (r 16, alpha 16, gaussian init: B = 0, so a fresh adapter changes nothing) on q, k, v, out of
every attention layer of the UNet and of the text encoder; the rest of Stable Diffusion is frozen.
Loss: eq. 3, MSE between the sampled noise and the UNet's prediction (velocity if the scheduler
predicts v), uniform timesteps. AdamW, cosine schedule with warm-up, grad-norm clip 1.0.

    dset  one adapter on the whole K-shot set: S = epochs * ceil(N*K / batch) steps
    cls   one adapter per class, trained `epochs` epochs over the class's K images at batch
          min(batch, K): epochs * ceil(K / batch) steps (the authors' scripts). At K = 8 and 16 this
          is S / N, the paper's equal-compute rule; below 8 shots every class still gets `epochs`
          steps (S / N would give 26 steps at K = 1 on 100 classes, with the warm-up never ending)

Adapters are saved in diffusers' LoRA format (`pytorch_lora_weights.safetensors`), so
`StableDiffusionPipeline.load_lora_weights(folder)` loads them in any diffusers program.
Training is seeded (LoRA init, batch order, crops, noise, timesteps): the same seed gives the same
adapter on the same device. One `Trainer` per process trains every adapter on one set of LoRA
modules, reset from each adapter's seed (`init_lora`), with the host work out of the step; see its
text for the GPU levers (channels_last, fused AdamW, `compile`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Optional

import torch

from datadream_lib.progress import bar as progress_bar
from datadream_lib import models, runtime, tracking
from datadream_lib.diffusion import denoising_loss
from datadream_lib.splits import FewShotSplit, load_rgb
from datadream_lib.errors import DataDreamError
from datadream_lib.files import read_json, write_json
from datadream_lib.runs import Run

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
LORA_FILE = "pytorch_lora_weights.safetensors"


def dset_steps(n_classes: int, shots: int, epochs: int, batch_size: int) -> int:
    """S: the dset adapter's optimisation steps."""
    return epochs * math.ceil(n_classes * shots / batch_size)


def cls_steps(shots: int, epochs: int, batch_size: int) -> int:
    """Each per-class adapter's steps: `epochs` epochs over its K images (ceil(K / batch) steps each)."""
    return epochs * math.ceil(shots / batch_size)


@dataclasses.dataclass
class AdapterJob:
    name: str            # "dset" or the class folder name
    items: list          # (path, label) training images
    steps: int
    batch_size: int
    seed: int
    class_index: int = 0  # the class it adapts to (dset: 0, so the shard of class 0 trains it)

    def folder(self, run: Run, variant: str) -> Path:
        return run.path("adaptation", variant if variant == "dset" else f"cls/{self.name}")


def adapter_jobs(p, split: FewShotSplit) -> list[AdapterJob]:
    shots, n = split.shots(p.shots), len(split.classnames)
    if p.method.variant == "dset":
        return [AdapterJob("dset", shots, dset_steps(n, p.shots, p.method.adapt_epochs, p.method.adapt_batch_size),
                           p.method.adapt_batch_size, p.seed)]
    steps = cls_steps(p.shots, p.method.adapt_epochs, p.method.adapt_batch_size)
    return [AdapterJob(dirname, [it for it in shots if it[1] == label], steps, min(p.method.adapt_batch_size, p.shots),
                       p.seed * 100_003 + label, label)
            for label, dirname in enumerate(split.class_dirs())]


def adapter_folder(p, run: Run, class_index: int, split: FewShotSplit) -> Path:
    """Where synthesis finds the adapter for a class."""
    if p.method.variant == "dset":
        return run.path("adaptation", "dset")
    return run.path("adaptation", "cls", split.class_dirs()[class_index])


def lora_config(rank: int, alpha: int, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets, lora_dropout=0.0)


def add_lora(pipe, p) -> list[torch.nn.Parameter]:
    """Attach the LoRA adapters (once per pipeline; a later call finds them) and freeze everything
    else. Returns the trainable parameters. Their values are set by `init_lora`."""
    modules = [pipe.unet] + ([pipe.text_encoder] if p.method.adapt_train_text_encoder else [])
    if not getattr(pipe.unet, "peft_config", None):
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False)
        pipe.unet.add_adapter(lora_config(p.method.adapt_lora_rank, p.method.adapt_lora_alpha, UNET_TARGETS))
        if p.method.adapt_train_text_encoder:
            pipe.text_encoder.add_adapter(lora_config(p.method.adapt_lora_rank, p.method.adapt_lora_alpha, TEXT_TARGETS))
    return [q for m in modules for q in m.parameters() if q.requires_grad]


def init_lora(pipe, seed: int) -> None:
    """peft's 'gaussian' init, drawn from `seed` alone: A ~ N(0, 1/r), B = 0, so the adapter starts
    at zero. Resetting the same modules for every class (rather than creating new ones) keeps a
    compiled UNet valid across the hundreds of adapters of a cls run."""
    from peft.tuners.lora import LoraLayer

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (pipe.unet, pipe.text_encoder):
            for layer in module.modules():
                if isinstance(layer, LoraLayer):
                    for name, a in layer.lora_A.items():
                        a.weight.copy_(torch.randn(a.weight.shape, generator=generator) / layer.r[name])
                        layer.lora_B[name].weight.zero_()


def save_adapter(pipe, p, folder: Path, info: Optional[dict] = None) -> None:
    """diffusers LoRA format (+ adapter.json with the weights' size and SHA-256), written to a
    temporary folder and renamed into place: an adapter folder is complete or absent."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    text_layers = (convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.text_encoder))
                   if p.method.adapt_train_text_encoder else None)
    config = lora_config(p.method.adapt_lora_rank, p.method.adapt_lora_alpha, UNET_TARGETS).to_dict()
    text_config = lora_config(p.method.adapt_lora_rank, p.method.adapt_lora_alpha, TEXT_TARGETS).to_dict() if text_layers else None
    for cfg in (config, text_config):  # metadata must be JSON: sets become lists
        if cfg:
            cfg["target_modules"] = sorted(cfg["target_modules"])
    StableDiffusionPipeline.save_lora_weights(
        tmp, unet_lora_layers=unet_layers, text_encoder_lora_layers=text_layers, safe_serialization=True,
        unet_lora_adapter_metadata=config, text_encoder_lora_adapter_metadata=text_config)
    data = _canonical_header(tmp / LORA_FILE)
    write_json(tmp / "adapter.json", {**(info or {}), "weights_bytes": len(data),
                                      "weights_sha256": hashlib.sha256(data).hexdigest()})
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def _canonical_header(path: Path) -> bytes:
    """Rewrite a safetensors file's JSON header with sorted keys (safetensors writes its metadata in
    hash-map order, so two identical adapters would differ in bytes); the tensor data is untouched.
    Returns the file's new bytes."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # safetensors pads its header to 8 bytes
    data = len(header).to_bytes(8, "little") + header + raw[8 + size:]
    path.write_bytes(data)
    return data


def adapter_damage(folder: Path, full: bool = True) -> Optional[str]:
    """Why a saved adapter cannot be used (None if it can): its record or weights are missing, or the
    weights differ from what was saved (size; with `full`, the SHA-256 recorded in adapter.json)."""
    try:
        info = read_json(folder / "adapter.json")
    except (OSError, ValueError):
        return "adapter.json is missing or unreadable"
    weights = folder / LORA_FILE
    if not weights.is_file():
        return f"{LORA_FILE} is missing"
    if "weights_bytes" not in info or weights.stat().st_size != info["weights_bytes"]:
        return f"{LORA_FILE} has {weights.stat().st_size} bytes, not the {info.get('weights_bytes')} recorded"
    if full and hashlib.sha256(weights.read_bytes()).hexdigest() != info.get("weights_sha256"):
        return f"{LORA_FILE} does not match the checksum recorded in adapter.json"
    return None


def damaged_adapters(p, run: Run, split: FewShotSplit) -> list[str]:
    """The saved adapters of the run that cannot be used, for the pipeline's resume check: the check
    synthesis makes before loading one (the SHA-256 recorded in adapter.json), so an adapter that
    synthesis would refuse is trained again by the rerun, never skipped."""
    return [f"{job.folder(run, p.method.variant)}: {why}" for job in adapter_jobs(p, split)
            if (why := adapter_damage(job.folder(run, p.method.variant), full=True))]


COMPILE_PAYS_BACK = 2000  # adaptation steps in one process from which `compile` (unset) compiles the UNet


def prepared_images(paths: list[str], resolution: int) -> list[torch.Tensor]:
    """The authors' adaptation transform (Resize bilinear, RandomCrop, no flip, to [-1, 1]) up to the
    crop, once per image, kept as uint8 (C, H, W): a quarter of the memory, and `to_unit_range` of
    a crop gives the same floats as ToTensor + Normalize of the cropped PIL image."""
    from torchvision import transforms  # imported where used: the pipeline's own process only plans

    resize = transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR)
    return [transforms.functional.pil_to_tensor(resize(load_rgb(path))) for path in paths]


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 -> [-1, 1] with the operations of ToTensor and Normalize(0.5, 0.5), bit for bit."""
    return pixels.float().div(255).sub(0.5).div(0.5)


def crop_offsets(image: torch.Tensor, size: int) -> tuple[int, int]:
    """RandomCrop's offsets (the same draws from the global generator as transforms.RandomCrop)."""
    from torchvision import transforms

    top, left, _, _ = transforms.RandomCrop.get_params(image, (size, size))
    return top, left


def _check_finite(job, p, step_losses: list) -> None:
    bad = runtime.first_non_finite(step_losses)
    if bad:
        raise DataDreamError(f"adapter {job.name}: the loss became {bad[1]} at step {bad[0] + 1}; nothing was "
                             f"saved. Lower adapt_lr (now {p.method.adapt_lr}) or check the images of this class.")


def batches(n_items: int, batch_size: int, steps: int, generator: torch.Generator):
    """Index batches for `steps` steps: epochs of seeded permutations, the last batch of an epoch may be short."""
    done = 0
    while True:
        order = torch.randperm(n_items, generator=generator).tolist()
        for start in range(0, n_items, batch_size):
            if done == steps:
                return
            yield order[start:start + batch_size]
            done += 1


class Trainer:
    """The adaptation step on one pipeline, built once per process and reused for every adapter.

    Host work is kept out of the step: the shots are decoded and resized once (uint8), a batch is a
    crop of them copied to the device without a sync; latents, noise and timesteps are drawn on the
    device from the adapter's seeded generator (on a CPU, the one generator of the batch order, as
    before); the loss is read back every LOSS_CHECK_EVERY steps. On a GPU: channels_last UNet and VAE,
    fused AdamW, and (`compile`) a compiled UNet, which stays valid across adapters because
    `init_lora` resets the same LoRA modules."""

    def __init__(self, pipe, p, device: torch.device, total_steps: int = 0):
        from diffusers import DDPMScheduler

        self.pipe, self.p, self.device = pipe, p, device
        self.amp = runtime.autocast_dtype(p, device)
        self.dtype = self.amp if self.amp is not None else torch.float32
        self.trainable = add_lora(pipe, p)
        for module in (pipe.vae, pipe.unet, pipe.text_encoder):
            runtime.place(module, device, self.dtype)
        for q in self.trainable:  # LoRA weights train in fp32
            q.data = q.data.float()
        self.channels_last = runtime.use_channels_last(p, device)
        if self.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        self.compiled = runtime.use_compile(p, device, total_steps, COMPILE_PAYS_BACK)
        self.unet = torch.compile(pipe.unet) if self.compiled else pipe.unet  # pipe.unet keeps its state-dict names
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def train(self, job: AdapterJob, prompts: list[str], progress: bool = True) -> list[float]:
        """Fit the adapter of `job` from its seed's init; returns the per-step losses."""
        from diffusers.optimization import get_scheduler

        pipe, p, device = self.pipe, self.p, self.device
        init_lora(pipe, job.seed)
        optimizer = torch.optim.AdamW(self.trainable, lr=p.method.adapt_lr, betas=(0.9, 0.999), weight_decay=p.method.adapt_weight_decay,
                                      eps=1e-8, fused=device.type == "cuda")
        lr_schedule = get_scheduler("cosine", optimizer, num_warmup_steps=min(p.method.adapt_warmup_steps, job.steps),
                                    num_training_steps=job.steps)
        torch.manual_seed(job.seed)  # the crop offsets (RandomCrop's draws)
        shots = prepared_images([path for path, _ in job.items], p.method.resolution)
        token_ids = pipe.tokenizer([prompts[label] for _, label in job.items], padding="max_length",
                                   max_length=pipe.tokenizer.model_max_length, truncation=True,
                                   return_tensors="pt").input_ids  # a batch's rows go to the device without a sync
        gen = torch.Generator().manual_seed(job.seed)
        device_gen = gen if device.type == "cpu" else torch.Generator(device).manual_seed(job.seed)
        scheduler, size = self.noise_scheduler, p.method.resolution
        pipe.unet.train()
        pipe.text_encoder.train(p.method.adapt_train_text_encoder)
        step_losses = []  # on the device: read back every LOSS_CHECK_EVERY steps (a NaN stops the run there)
        self.last_lrs = []
        bar = progress_bar(total=job.steps, desc=f"adapt {job.name}", unit="step", disable=not progress)
        for index in batches(len(shots), job.batch_size, job.steps, gen):
            crops = []
            for i in index:
                top, left = crop_offsets(shots[i], size)
                crops.append(shots[i][:, top:top + size, left:left + size])
            batch = torch.stack(crops)
            if device.type == "cuda":
                batch = batch.pin_memory().to(device, non_blocking=True)
            pixels = to_unit_range(batch).to(self.dtype)
            if self.channels_last:
                pixels = pixels.contiguous(memory_format=torch.channels_last)

            def draw(latents):  # the noise, then the timesteps, from the device's generator
                noise = torch.randn(latents.shape, generator=device_gen, device=device).to(latents.dtype)
                return noise, torch.randint(0, scheduler.config.num_train_timesteps, (len(index),),
                                            generator=device_gen, device=device)

            loss = denoising_loss(pipe, self.unet, scheduler, pixels, token_ids[index].to(device, non_blocking=True),
                                  device_gen, draw, device, self.amp)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.trainable, p.method.adapt_max_grad_norm)
            optimizer.step()
            self.last_lrs.append(lr_schedule.get_last_lr()[0])  # the lr this step used (a host float: no sync)
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step_losses.append(loss.detach())
            bar.update()
            if len(step_losses) % runtime.LOSS_CHECK_EVERY == 0 or len(step_losses) == job.steps:
                _check_finite(job, p, step_losses)
                bar.set_postfix(loss=f"{step_losses[-1].item():.4f}")
        bar.close()
        pipe.unet.eval()
        pipe.text_encoder.eval()
        return torch.stack(step_losses).tolist()


def train_adapter(pipe, p, job: AdapterJob, prompts: list[str], device: torch.device,
                  progress: bool = True) -> tuple[list[float], list[torch.nn.Parameter]]:
    """Fit one adapter on job.items (a one-off Trainer); returns the per-step losses and the trainable
    parameters. Leaves it attached."""
    trainer = Trainer(pipe, p, device, job.steps)
    return trainer.train(job, prompts, progress), trainer.trainable


def train_adapters(p, run: Run, split: FewShotSplit, progress: bool = True, classes: list[int] | None = None) -> dict:
    """Train every adapter the variant needs (or those of `classes`: a shard's; the dset adapter
    belongs to the shard of class 0); adapters already saved are kept (resume per class).
    Returns, per adapter, its record (steps, losses, seconds, ...)."""
    device = runtime.resolve_device(p)
    jobs = [job for job in adapter_jobs(p, split)
            if classes is None or job.class_index in classes]
    prompts = split.prompts()
    trainer = None  # built at the first adapter to train; its LoRA modules are reset for each one
    summary = {}
    for job in jobs:  # each adapter has its own bar (nested text bars do not draw in a saved notebook)
        folder = job.folder(run, p.method.variant)
        if folder.exists():
            damage = adapter_damage(folder)
            if damage is None:
                summary[job.name] = read_json(folder / "adapter.json")
                continue
            print(f"[adaptation] adapter {folder} is damaged ({damage}); training it again")
        if trainer is None:
            steps = sum(j.steps for j in jobs if adapter_damage(j.folder(run, p.method.variant), full=False))
            trainer = Trainer(models.load_sd_pipeline(p), p, device, steps)
        started = time.time()
        losses = trainer.train(job, prompts, progress)
        info = {"adapter": job.name, "variant": p.method.variant, "steps": job.steps, "batch_size": job.batch_size,
                "images": len(job.items), "seed": job.seed, "compiled": trainer.compiled, "channels_last": trainer.channels_last,
                "environment": run.environment, "weights": run.weights, "torch_threads": torch.get_num_threads(),
                "seconds": round(time.time() - started, 2), "loss_first": losses[0], "loss_last": losses[-1],
                "losses": losses}
        save_adapter(trainer.pipe, p, folder, info)
        with tracking.curves(p.tracking, run.dir, f"adaptation/{job.name}") as curves:
            curves.scalars("adaptation/loss", losses)
            curves.scalars("adaptation/lr", trainer.last_lrs)
        summary[job.name] = info
    return summary


def loss_history(run: Run) -> dict[str, list[float]]:
    """Per adapter, its per-step losses (for the notebook's plot)."""
    root = run.path("adaptation")
    return {info["adapter"]: info["losses"] for info in (read_json(f) for f in sorted(root.rglob("adapter.json")))}
