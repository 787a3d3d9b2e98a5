"""The latent-diffusion training objective, shared by DataDream's LoRA (`adaptation.py`) and
DA-Fusion's textual inversion (`inversion.py`): a batch of images is encoded by the VAE, noised at
random timesteps, and the UNet, conditioned on the text encoder's reading of the prompts, predicts
the noise (or v, for a v-prediction model); the loss is the mean squared error in fp32.

Each caller draws its own randomness (the noise and timesteps, `draw`), as the recipe it follows
does; the order of the draws is part of the recipe, so a run is reproduced bit for bit.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from datadream_lib import runtime


def denoising_loss(pipe, unet, scheduler, pixels: torch.Tensor, token_ids: torch.Tensor,
                   latent_generator: torch.Generator, draw: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                   device, amp) -> torch.Tensor:
    """The loss of one batch. `unet`: the network to train (the pipeline's, or a compiled one);
    `scheduler`: the training noise schedule (DDPM on the model's config); `pixels`: images in
    [-1, 1] in the VAE's dtype; `token_ids`: the prompts' tokens on the device; `latent_generator`:
    draws the VAE posterior's sample; `draw(latents)`: the (noise, timesteps) of the batch."""
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.sample(generator=latent_generator)
        latents = latents * pipe.vae.config.scaling_factor
    noise, timesteps = draw(latents)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = scheduler.get_velocity(latents, noise, timesteps) if scheduler.config.prediction_type == "v_prediction" else noise
    with runtime.autocast(device, amp):
        hidden = pipe.text_encoder(token_ids)[0]
        pred = unet(noisy, timesteps, hidden).sample
    return F.mse_loss(pred.float(), target.float())
