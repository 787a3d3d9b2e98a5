"""Where and how a stage runs: its device, precision, compilation, memory layout and batch size,
each a parameter that is chosen from the machine when unset; and the small device utilities the
stages share (timings, peak memory, loss checks without a sync per step)."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from datadream_lib.errors import DataDreamError
from datadream_lib.schema import SYNTH_BATCH_MAX


def resolve_device(p) -> torch.device:
    if p.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(p.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataDreamError(f"device {p.device!r} was asked for but no CUDA GPU is visible; set device: auto or cpu.")
    return device


def check_device(p) -> None:
    """A full-size model on a machine without a GPU stops at the start, not an hour in."""
    device = resolve_device(p)
    if p.models in ("pretrained", "full_random") and device.type == "cpu" and p.device == "auto":
        raise DataDreamError(f"models: {p.models} builds Stable Diffusion 2.1 and CLIP ViT-B/16 at full size, and this "
                             f"machine has no CUDA GPU: the run would take days. Start it on a GPU machine, use "
                             f"models: tiny (base: demo) for an offline check, or set device: cpu to run it here anyway.")


def autocast_dtype(p, device: torch.device) -> Optional[torch.dtype]:
    """bf16 autocast on GPU (LoRA weights stay fp32); None (plain fp32) on CPU."""
    if p.mixed_precision == "no" or (p.mixed_precision == "auto" and device.type != "cuda"):
        return None
    if p.mixed_precision == "fp16":
        return torch.float16
    return torch.bfloat16


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move a module; cast it only when the dtype changes (diffusers warns on a no-op cast)."""
    module.to(device)
    if dtype != torch.float32:
        module.to(dtype=dtype)


def use_compile(p, device: torch.device, work: int, pays_back: int) -> bool:
    """Whether a stage compiles its models: `compile` if set; unset, on a CUDA GPU when this process's
    work (steps, images) reaches the amount that pays the compile back."""
    if p.compile is not None:
        return p.compile
    return device.type == "cuda" and work >= pays_back


def use_channels_last(p, device: torch.device) -> bool:
    """`channels_last` if set; unset: on a CUDA GPU (cuDNN's convolutions run NHWC without conversions)."""
    return p.channels_last if p.channels_last is not None else device.type == "cuda"


GIB_PER_IMAGE_512 = 1.0  # GPU memory a 512-px image takes in a generation batch (UNet with CFG, VAE decode), with margin
SYNTH_BATCH_CPU = 10


def synth_batch_size(p, device: torch.device, reserve_gib: float = 8.0) -> int:
    """`synth_batch_size` if set; unset: 10 on a CPU, or on a GPU as many images as its free memory
    holds after `reserve_gib` for the weights (a multiple of 8, at most 64)."""
    if p.synth_batch_size is not None:
        return p.synth_batch_size
    if device.type != "cuda":
        return SYNTH_BATCH_CPU
    free, _ = torch.cuda.mem_get_info(device)
    fits = int((free / 2**30 - reserve_gib) / (GIB_PER_IMAGE_512 * (p.method.resolution / 512) ** 2))
    return max(1, min(SYNTH_BATCH_MAX, fits // 8 * 8 or fits))  # a chunk of a shard holds whole batches


LOSS_CHECK_EVERY = 25  # training steps between reads of the loss from the device (not one sync per step)


def first_non_finite(losses: list) -> Optional[tuple[int, float]]:
    """(index, value) of the first NaN or infinite loss of a list of 0-d device tensors, in one read
    from the device; None if all are finite."""
    values = torch.stack(losses)
    bad = (~torch.isfinite(values)).nonzero()
    return (int(bad[0]), values[int(bad[0])].item()) if len(bad) else None


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for timings); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device, reset: bool = False) -> Optional[float]:
    """The peak GPU memory allocated since the last reset, in GiB (None on a CPU)."""
    if device.type != "cuda":
        return None
    peak = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if reset:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return peak


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
