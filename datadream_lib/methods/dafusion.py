"""DA-Fusion (Trabucco et al., ICLR 2024): textual inversion per class, then img2img from the shots.

Preparation: a token per class learned on SD 2.1-base's text encoder (`inversion.py`; the recipe
that produced the paper's numbers by default, the repository scripts' one parameter away). Generation:
img2img from the shot `index mod K`, stretched to the resolution (bilinear, as the authors do),
prompted "a photo of a <token>" (the authors' prompt: no dataset prefix; the token carries the
class), PNDM 50 steps (leading spacing), guidance 7.5, and a strength per image drawn uniformly
from `dafusion_strengths` ({0.25, 0.5, 0.75, 1.0}; [0.5] is the paper's fixed-strength ablation) by
the image's seed. Images of one strength share a pipeline call within the engine's fixed block, so
shards and resumes stay bit-identical. Strength 1.0 is not text-to-image: PNDM starts at t 981 and
about 7 % of the source remains. The authors resize each output back to the shot's size; here the
images stay at the resolution, as every method's do. Each manifest row names the token, the source
shot, the strength and the first timestep.

The authors' classifier side, each real sample replaced with probability 0.5 by one of its own
shot's synthetic images (the rows' `source_shot`), is the classifier option `clf_replace_real` (off
by default, as Table 1 trained every method with the shared classifier).
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import ClassVar

import numpy as np
import pandas as pd

from datadream_lib import inversion
from datadream_lib.methods.base import ClassifierOptions, Cost, Method, seed_of
from datadream_lib.methods.issynth import source_shot
from datadream_lib.methods.stable_diffusion import Generator, Sampling, check_strength, check_weights, unet_calls
from datadream_lib.files import read_json
from datadream_lib.schema import field

PROMPT = "a photo of a {}"


@dataclasses.dataclass(frozen=True)
class DAFusionParameters(Sampling):
    """DA-Fusion's group: PNDM 50, guidance 7.5, the strengths drawn per image, the inversion recipe."""
    PRESETS: ClassVar[dict] = {"demo": {"inversion_steps": 4},  # the demo and the toy world: 4 steps, not 2,000
                               "smoke": {"inversion_steps": 2}}
    guidance_scale: float = field(7.5, "classifier-free guidance scale (the authors: 7.5)", min=0.0)
    dafusion_strengths: list = field([0.25, 0.5, 0.75, 1.0], "the strengths an image's seed draws from, uniformly (the authors: 0.25, 0.5, 0.75, 1.0; the paper's ablation: [0.5]), each in (0, 1]", check=check_strength)
    inversion_recipe: str = field("paper", "textual inversion: 'paper' (4 vectors from the class name, 2000 steps, batch 8, lr 4e-3: what produced the published numbers) or 'scripts' (1 vector from 'the', 1000 steps, batch 4, lr 2e-3: the repository's scripts)", choices=tuple(inversion.RECIPES))
    inversion_steps: int = field(0, "textual-inversion steps per class (0: the recipe's)", min=0)
    inversion_vectors: int = field(0, "vectors of each class token (0: the recipe's)", min=0)
    inversion_batch_size: int = field(0, "textual-inversion batch size (0: the recipe's)", min=0)
    inversion_lr: float = field(0.0, "textual-inversion learning rate, constant (0: the recipe's)", min=0.0)
    clf_replace_real: float = field(0.0, "the authors' classifier option: each real sample of synthetic_real replaced, at each draw, with this probability by one of its own shot's synthetic images (0 = off, as in Table 1; the authors: 0.5)", min=0.0, max=1.0)


class DAFusion(Method):
    name = "dafusion"
    parameters = DAFusionParameters
    prepares = True
    columns = ("prompt", "token", "source_shot", "source_image", "strength", "first_timestep")
    source_fit = "stretch"

    @classmethod
    def prepares_by_class(cls, p) -> bool:
        return True

    @classmethod
    def display(cls, variant) -> str:
        return "DA-Fusion"

    @classmethod
    def weights(cls, p):
        return [lambda: check_weights(p)]

    @classmethod
    def classifier_options(cls, p) -> ClassifierOptions:
        return ClassifierOptions(replace_real=p.method.clf_replace_real, replace_from="shot")

    @classmethod
    def cost(cls, p, n_classes: int, images: int, **assumptions) -> Cost:
        settings = inversion.recipe(p)
        calls = statistics.fmean(unet_calls(p.method.scheduler, p.method.num_inference_steps, s) for s in p.method.dafusion_strengths)
        made = n_classes * images
        return Cost(adapt_samples=n_classes * settings["steps"] * settings["batch_size"], adapt_text_encoder=True,
                    images_made=made, unet_passes=made * calls * (2 if p.method.guidance_scale > 1 else 1),
                    vae_encodes=made, vae_decodes=made)

    # --- preparation: a token per class ---------------------------------------------------------
    def prepare(self, progress: bool = True, classes: list[int] | None = None) -> pd.DataFrame:
        rows = inversion.train_tokens(self.p, self.run, self.split, seed_of, progress, classes)
        return pd.DataFrame(rows).drop(columns="losses")

    def preparation_damage(self) -> list[str]:
        return inversion.damaged_tokens(self.run, self.split)

    def preparation_losses(self) -> dict[str, list[float]]:
        records = (inversion.folder(self.run, d) / inversion.RECORD_FILE for d in self.split.class_dirs())
        return {info["token"]: info["losses"] for info in (read_json(r) for r in records if r.exists())}

    # --- generation ----------------------------------------------------------------------------
    def plan(self, job) -> dict:
        k = source_shot(job, self.p.shots)
        strengths = self.p.method.dafusion_strengths
        strength = float(strengths[int(np.random.default_rng(job.seed).integers(len(strengths)))])
        token = inversion.token_of(self.split.class_dirs()[job.class_index])
        return {"prompt": PROMPT.format(token), "token": token, "source_shot": k,
                "source_image": self.split.shot_order[job.class_index][k], "strength": strength}

    def load(self, images: int = 0, batch_size: int | None = None) -> None:
        self.sd = Generator(self.p, img2img=True, fuse_qkv=self.p.method.synth_fuse_qkv, source_fit=self.source_fit)
        self.sd.load(images)
        dirs = self.split.class_dirs()  # every class's token, as a user loads them into any diffusers pipeline
        self.sd.pipe.load_textual_inversion([str(inversion.folder(self.run, d) / inversion.TOKEN_FILE) for d in dirs],
                                            token=[inversion.token_of(d) for d in dirs])

    def describe(self, class_index: int) -> dict:
        return {**self.sd.describe(), "inversion_recipe": self.p.method.inversion_recipe}

    def generate(self, jobs: list) -> list[tuple]:
        strengths = [job.plan["strength"] for job in jobs]
        images = self.sd.img2img([job.plan["source_image"] for job in jobs], [job.plan["prompt"] for job in jobs],
                                 [job.seed for job in jobs], strengths)
        return [(image, {"first_timestep": self.sd.first_timestep(s)}) for image, s in zip(images, strengths)]
