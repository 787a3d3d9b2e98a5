"""Augmentation-conditioned Stable unCLIP (Chen, Zhang, Romero-Soriano): a frozen Stable unCLIP 2.1
conditioned on an augmented CLIP image embedding of the run's shots (`synth_method: augcond`).

Stable unCLIP (`sd2-community/stable-diffusion-2-1-unclip`, the mirror of Stability AI's withdrawn
repository: docs/weights.md; the H variant; 768 px, v-prediction)
takes, beside the prompt "a photo of a {class}", an OpenCLIP ViT-H/14 image embedding (1024 dims)
with a noise-level embedding appended (`noise_level` 0, as the authors). The conditioning variants
(`augcond_variant`):

    image                 the embedding of one shot, drawn at random ("random image")
    dropout               that embedding with a fraction `augcond_dropout` (0.4) of its dimensions zeroed
    cutmix, mixup         two distinct shots, each a RandomResizedCrop (scale 0.08-1) to the encoder's
                          224 px, mixed in pixels (a box of the second pasted into the first; a blend
                          lambda x1 + (1 - lambda) x2), then encoded
    embed_cutmix          two shots encoded, a contiguous block of round((1 - lambda) d) feature
                          dimensions of the first replaced by the second's
    embed_mixup           two shots encoded, lambda e1 + (1 - lambda) e2
    <mix>_dropout         each of the four mixes, then dropout

with lambda ~ Beta(1, 1). Every random choice (the shots, lambda, the crops, the CutMix box, the
feature block, the dropout mask) is drawn from the image's own seed, in one fixed order whatever
the variant, and written into its manifest row; `generate` makes the image from the row's values.
The shots' embeddings are computed once per class. At K = 1 a pair variant mixes the one shot with
itself (a crop of it with another crop, or nothing at all in embedding space): each row then says
`same_shot: true`.

Defaults: what made the authors' few-shot numbers, 20 PNDM steps and guidance 10 (the paper says
30 steps; their generator defaulted to 20 until after every guidance-10 set was made:
docs/differences.md), `embed_cutmix_dropout` (their best); `num_inference_steps: 30` is the paper's.

The authors' bugs, fixed here, with switches where a bug defines their published numbers:
- their embedding CutMix cuts the CFG-doubled (2, 2048) tensor along its first dimension, so it
  always returns the first image: `augcond_authors_embed_cutmix: true` reproduces that;
- their dropout zeroes the whole conditioning, the noise-level half included:
  `augcond_authors_dropout: true` reproduces that (one more mask, drawn from the seed, recorded);
- their conditioning images come from the whole train split, and one set of generated images
  serves every K and trial (a leak): here only the run's K shots, never reproduced;
- their few-shot validation set swaps in synthetic images with p 0.5: never here (the classifier
  selects on real validation images only).

The authors' classifier side, each real sample replaced with probability 0.5 by a random synthetic
image of its class, is the classifier option `clf_replace_real` (off by default, as Table 1).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch

from datadream_lib import models, runtime, weights
from datadream_lib.errors import DataDreamError
from datadream_lib.methods.base import ClassifierOptions, Cost, Method, seed_of
from datadream_lib.methods.stable_diffusion import TIMESTEP_SPACING, Sampling, make_scheduler, speed_up, unet_calls
from datadream_lib.schema import field

PROMPT = "a photo of a {}"
MIXES = {"image": (None, None), "cutmix": ("cutmix", "pixel"), "mixup": ("mixup", "pixel"),
         "embed_cutmix": ("cutmix", "embedding"), "embed_mixup": ("mixup", "embedding")}
VARIANTS = ("image", "dropout", "cutmix", "cutmix_dropout", "mixup", "mixup_dropout", "embed_cutmix",
            "embed_cutmix_dropout", "embed_mixup", "embed_mixup_dropout")
LABELS = {"image": "Image", "dropout": "Dropout", "cutmix": "CutMix", "mixup": "Mixup", "embed_cutmix": "Embed-CutMix",
          "embed_mixup": "Embed-Mixup"}
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop defaults, as the authors
BETA = 1.0  # lambda ~ Beta(1, 1), as torchvision's CutMix / MixUp with alpha 1


def parts(variant: str) -> tuple:
    """(mix, space, dropout) of a variant: ("cutmix", "embedding", True) for embed_cutmix_dropout."""
    dropout = variant == "dropout" or variant.endswith("_dropout")
    base = "image" if variant == "dropout" else variant.removesuffix("_dropout")
    return (*MIXES[base], dropout)


def label_of(variant: str) -> str:
    """The paper's name of a variant: "Embed-CutMix-Dropout"."""
    if variant == "dropout":
        return "Dropout"
    return LABELS[variant.removesuffix("_dropout")] + ("-Dropout" if variant.endswith("_dropout") else "")


@dataclasses.dataclass(frozen=True)
class AugCondParameters(Sampling):
    """Augmentation-conditioned unCLIP's group: the unCLIP weights, PNDM 20, guidance 10, 768 px, the variant."""
    num_inference_steps: int = field(20, "sampler steps (the authors' few-shot sets: 20; their paper: 30)", min=1)
    guidance_scale: float = field(10.0, "classifier-free guidance scale (the authors' few-shot sets: 10)", min=0.0)
    resolution: int = field(768, "generation resolution in pixels (Stable unCLIP 2.1: 768)", min=8)
    unclip_model: str = field(weights.SD21_UNCLIP, "hub id or local folder of Stable unCLIP 2.1 (models: pretrained; docs/weights.md)", identity=False, check=weights.refuse_withdrawn)
    unclip_model_revision: str = field("main", "the hub revision (commit, branch or tag) of unclip_model; 'main': what the hub serves now. The commit used is recorded either way", identity=False)
    augcond_variant: str = field("embed_cutmix_dropout", "the conditioning: one of the ten variants (the authors' best: embed_cutmix_dropout)", choices=VARIANTS)
    augcond_dropout: float = field(0.4, "share of the image embedding's dimensions a dropout variant zeroes (the authors: 0.4)", min=0.0, max=1.0)
    noise_level: int = field(0, "unCLIP's noise level on the image embedding, 0-999 (the authors: 0)", min=0, max=999)
    augcond_authors_embed_cutmix: bool = field(False, "reproduce the authors' embedding CutMix, which always returns the first image's embedding")
    augcond_authors_dropout: bool = field(False, "reproduce the authors' dropout, which also zeroes the noise-level half of the conditioning")
    clf_replace_real: float = field(0.0, "the authors' classifier option: each real sample of synthetic_real replaced, at each draw, with this probability by a random synthetic image of its class (0 = off, as in Table 1; the authors: 0.5)", min=0.0, max=1.0)


def geometry(p) -> tuple[int, int]:
    """(d, side): the image embedding's dimensions and the image encoder's input side, from the
    preset's config or the pretrained folder's `image_encoder/config.json` (no model loaded)."""
    if p.models == "toy":
        models.UNCLIP.toy_folder()  # refuses: the toy world has no unCLIP
    if p.models == "tiny":
        cfg = models.TINY_IMAGE_ENCODER
    elif p.models == "full_random":
        cfg = models.UNCLIP_IMAGE_ENCODER
    else:
        cfg = models.read_config(p.method.unclip_model, "image_encoder/config.json", p.local_files_only, "unclip_model")
    return int(cfg["projection_dim"]), int(cfg["image_size"])


def crop_box(rng: np.random.Generator, width: int, height: int) -> list[int]:
    """RandomResizedCrop's box [top, left, h, w] (scale 0.08-1, ratio 3/4-4/3, ten tries, then the
    centre), drawn from `rng` (torchvision draws from the global RNG)."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return [int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w]
    in_ratio = width / height
    w, h = (width, int(round(width / CROP_RATIO[0]))) if in_ratio < CROP_RATIO[0] else \
        (int(round(height * CROP_RATIO[1])), height) if in_ratio > CROP_RATIO[1] else (width, height)
    w, h = min(w, width), min(h, height)
    return [(height - h) // 2, (width - w) // 2, h, w]


def cutmix_box(rng: np.random.Generator, side: int, lam: float) -> list[int]:
    """torchvision CutMix's box [x1, y1, x2, y2] on a side x side image: a centre uniform on the
    image, half-sides 0.5 sqrt(1 - lambda) of the side, clipped to the image."""
    rx, ry = int(rng.integers(side)), int(rng.integers(side))
    half = int(0.5 * math.sqrt(1.0 - lam) * side)
    return [max(rx - half, 0), max(ry - half, 0), min(rx + half, side), min(ry + half, side)]


def mask_hex(keep: np.ndarray) -> str:
    """A dropout mask (True: kept) as hex of its packed bits, for the manifest row."""
    return np.packbits(keep.astype(bool)).tobytes().hex()


def mask_of(text: str, d: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:d].astype(bool)


def draw(seed: int, shots: int, d: int, side: int, sizes, dropout: float) -> dict:
    """Every random choice of one image, from its seed, in one fixed order whatever the variant:
    the shot pair, lambda, a crop of each shot (`sizes`: a callable giving a shot's (width, height)),
    the CutMix box, the feature block's start, the dropout masks of the image and noise halves."""
    rng = np.random.default_rng(seed)
    pair = [int(k) for k in rng.choice(shots, 2, replace=False)] if shots > 1 else [0, 0]
    lam = float(rng.beta(BETA, BETA))
    crops = [crop_box(rng, *sizes(k)) for k in pair] if sizes else None
    box = cutmix_box(rng, side, lam)
    width = int(round((1.0 - lam) * d))
    start = int(rng.integers(d - width + 1))
    keep, keep_noise = rng.random(d) >= dropout, rng.random(d) >= dropout
    return {"pair": pair, "lam": lam, "crops": crops, "box": box, "block": [start, start + width],
            "keep": keep, "keep_noise": keep_noise}


def embedding_cutmix(first: torch.Tensor, second: torch.Tensor, block: list[int]) -> torch.Tensor:
    """The first embedding with the feature dimensions [start, stop) of the second."""
    out = first.clone()
    out[..., block[0]:block[1]] = second[..., block[0]:block[1]]
    return out


def pixel_cutmix(first: torch.Tensor, second: torch.Tensor, box: list[int]) -> torch.Tensor:
    """The first image (C, H, W) with the box [x1, y1, x2, y2] of the second pasted in (torchvision's
    CutMix, its first output)."""
    x1, y1, x2, y2 = box
    out = first.clone()
    out[:, y1:y2, x1:x2] = second[:, y1:y2, x1:x2]
    return out


def mixup(first: torch.Tensor, second: torch.Tensor, lam: float) -> torch.Tensor:
    return lam * first + (1.0 - lam) * second


@functools.lru_cache(maxsize=None)
def masked_pipeline_class():
    """diffusers' StableUnCLIPImg2ImgPipeline whose conditioning (the image embedding after its
    noising, with the noise-level embedding appended: (B, 2d)) is multiplied by `condition_mask`
    when one is set: the dropout, applied where the authors apply it, after the noising."""
    from diffusers import StableUnCLIPImg2ImgPipeline

    class MaskedStableUnCLIPImg2ImgPipeline(StableUnCLIPImg2ImgPipeline):
        condition_mask = None

        def noise_image_embeddings(self, *args, **kwargs):
            out = super().noise_image_embeddings(*args, **kwargs)
            return out if self.condition_mask is None else out * self.condition_mask.to(out)

    return MaskedStableUnCLIPImg2ImgPipeline


class AugCond(Method):
    name = "augcond"
    parameters = AugCondParameters
    columns = ("prompt", "variant", "shots", "source_images", "same_shot", "lam", "crops", "cutmix_box",
               "feature_block", "dropout_mask", "noise_dropout_mask", "dropped")

    @classmethod
    def variant(cls, p) -> str:
        return p.method.augcond_variant

    @classmethod
    def display(cls, variant) -> str:
        return f"AugCond unCLIP, {label_of(variant)}"

    @classmethod
    def weights(cls, p):
        return [lambda: models.UNCLIP.check(p)]

    @classmethod
    def classifier_options(cls, p) -> ClassifierOptions:
        return ClassifierOptions(replace_real=p.method.clf_replace_real, replace_from="class")

    @classmethod
    def cost(cls, p, n_classes: int, images: int, **assumptions) -> Cost:
        made = n_classes * images
        calls = unet_calls(p.method.scheduler, p.method.num_inference_steps, None) * (2 if p.method.guidance_scale > 1 else 1)
        return Cost(images_made=made, unet_passes=made * calls, vae_decodes=made, unet="unclip_768",
                    image_encodes=made if parts(p.method.augcond_variant)[1] == "pixel" else n_classes * p.shots)

    @functools.cached_property
    def _geometry(self) -> tuple[int, int]:
        return geometry(self.p)

    def _size(self, path: str) -> tuple[int, int]:
        """A shot's (width, height), read from its header once."""
        from PIL import Image

        sizes = self.__dict__.setdefault("_sizes", {})
        if path not in sizes:
            with Image.open(path) as image:
                sizes[path] = image.size
        return sizes[path]

    # --- the plan: every random choice, from the seed --------------------------------------------
    def plan(self, job, variant: str | None = None) -> dict:
        """The image's row: its variant (the run's, unless given) and every random choice it uses."""
        p, (d, side) = self.p, self._geometry
        variant = variant or p.method.augcond_variant
        mix, space, dropout = parts(variant)
        shots = self.split.shot_order[job.class_index][:p.shots]
        pixel = space == "pixel"
        drawn = draw(job.seed, p.shots, d, side, (lambda k: self._size(shots[k])) if pixel else None,
                     p.method.augcond_dropout)
        used = drawn["pair"] if mix else drawn["pair"][:1]
        row = {"prompt": PROMPT.format(self.split.classnames[job.class_index]), "variant": variant,
               "shots": used, "source_images": [shots[k] for k in used], "same_shot": len(set(used)) < len(used),
               "lam": None, "crops": None, "cutmix_box": None, "feature_block": None, "dropout_mask": None,
               "noise_dropout_mask": None, "dropped": 0}
        if mix:
            row["lam"] = drawn["lam"]
        if pixel:
            row["crops"] = drawn["crops"]
            if mix == "cutmix":
                row["cutmix_box"] = drawn["box"]
        if mix == "cutmix" and space == "embedding" and not p.method.augcond_authors_embed_cutmix:
            row["feature_block"] = drawn["block"]
        if dropout:
            row["dropout_mask"] = mask_hex(drawn["keep"])
            row["dropped"] = int(d - drawn["keep"].sum())
            if p.method.augcond_authors_dropout:
                row["noise_dropout_mask"] = mask_hex(drawn["keep_noise"])
                row["dropped"] += int(d - drawn["keep_noise"].sum())
        return row

    # --- generation ----------------------------------------------------------------------------
    def load(self, images: int = 0, batch_size: int | None = None) -> None:
        p = self.p
        if p.method.resolution % 8:
            raise DataDreamError(f"resolution {p.method.resolution} must be a multiple of 8 for Stable unCLIP's VAE.")
        self.device = runtime.resolve_device(p)
        self.dtype = runtime.autocast_dtype(p, self.device) or torch.float32
        pipe = masked_pipeline_class()(**models.UNCLIP.load(p).components)
        pipe.scheduler = make_scheduler(p.method.scheduler, pipe.scheduler.config, TIMESTEP_SPACING)
        for module in (pipe.vae, pipe.unet, pipe.text_encoder, pipe.image_encoder):
            runtime.place(module, self.device, self.dtype)
        pipe.image_normalizer.to(self.device, self.dtype)  # its own `to(torch_device, torch_dtype)`
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.speed = speed_up(pipe, p, images, p.method.synth_fuse_qkv)
        d, side = self._geometry
        encoder = pipe.image_encoder.config
        if (encoder.projection_dim, encoder.image_size) != (d, side):
            raise DataDreamError(f"unclip_model {p.method.unclip_model!r}: its image encoder has {encoder.projection_dim} "
                                 f"dimensions at {encoder.image_size} px, its config said {d} at {side}.")
        self._embeds: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, d) in fp32 of images already at the encoder's side, normalised."""
        out = self.pipe.image_encoder(pixels.to(self.device, self.dtype)).image_embeds
        return out.float()

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        extractor = self.pipe.feature_extractor
        mean = torch.tensor(extractor.image_mean).view(3, 1, 1)
        std = torch.tensor(extractor.image_std).view(3, 1, 1)
        return (images - mean) / std

    def begin_class(self, class_index: int) -> None:
        """The shots' embeddings, once per class (each shot as the pipeline would encode it)."""
        from datadream_lib.splits import load_rgb

        if class_index not in self._embeds:
            shots = self.split.shot_order[class_index][:self.p.shots]
            pixels = self.pipe.feature_extractor(images=[load_rgb(path) for path in shots], return_tensors="pt").pixel_values
            self._embeds = {class_index: self._encode(pixels)}

    def describe(self, class_index: int) -> dict:
        p = self.p
        model = p.method.unclip_model if p.models == "pretrained" else f"{p.models} unCLIP (random weights, seed {models.TINY_SEED})"
        return {"model": model, "sampler": p.method.scheduler, "timestep_spacing": TIMESTEP_SPACING,
                "steps": p.method.num_inference_steps, "guidance": p.method.guidance_scale, "noise_level": p.method.noise_level, **self.speed}

    def _crop(self, path: str, box: list[int]) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        from datadream_lib.splits import load_rgb

        side = self._geometry[1]
        image = TF.to_dtype(TF.pil_to_tensor(load_rgb(path)), torch.float32, scale=True)
        return TF.resized_crop(image, *box, [side, side], antialias=True)

    def conditioning(self, plan: dict, class_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The image embedding (d,) and the conditioning mask (2d,) of one image, from its plan (its
        manifest row: the variant and every random choice)."""
        d = self._geometry[0]
        mix, space, _ = parts(plan["variant"])
        shots = plan["shots"]
        if space == "pixel":
            first, second = (self._crop(path, box) for path, box in zip(plan["source_images"], plan["crops"]))
            mixed = pixel_cutmix(first, second, plan["cutmix_box"]) if mix == "cutmix" else \
                mixup(first, second, plan["lam"])
            embed = self._encode(self._normalise(mixed)[None])[0]
        else:
            shot_embeds = self._embeds[class_index]
            embed = shot_embeds[shots[0]]
            if mix == "mixup":
                embed = mixup(embed, shot_embeds[shots[1]], plan["lam"])
            elif mix == "cutmix" and plan["feature_block"] is not None:  # None: the authors' bug, the first image
                embed = embedding_cutmix(embed, shot_embeds[shots[1]], plan["feature_block"])
        mask = torch.ones(2 * d)
        if plan["dropout_mask"] is not None:
            mask[:d] = torch.from_numpy(mask_of(plan["dropout_mask"], d)).float()
        if plan["noise_dropout_mask"] is not None:
            mask[d:] = torch.from_numpy(mask_of(plan["noise_dropout_mask"], d)).float()
        return embed, mask

    @torch.no_grad()
    def generate(self, jobs: list) -> list[tuple]:
        p = self.p
        pairs = [self.conditioning(job.plan, job.class_index) for job in jobs]
        embeds = torch.stack([e for e, _ in pairs]).to(self.device, self.pipe.unet.dtype)
        self.pipe.condition_mask = torch.stack([m for _, m in pairs]).to(self.device)
        try:
            images = self.pipe(prompt=[job.plan["prompt"] for job in jobs], image_embeds=embeds, height=p.method.resolution,
                               width=p.method.resolution, num_inference_steps=p.method.num_inference_steps,
                               guidance_scale=p.method.guidance_scale, noise_level=p.method.noise_level,
                               generator=[torch.Generator().manual_seed(job.seed) for job in jobs],
                               output_type="pil").images
        finally:
            self.pipe.condition_mask = None
        return [(image, {}) for image in images]

    def preview(self, class_index: int = 0) -> dict[str, object]:
        """One image of each conditioning variant for one class, all from the seed of its image 0 (the
        same noise: only the conditioning differs), for notebook 01; loads the pipeline."""
        from types import SimpleNamespace

        if not hasattr(self, "pipe"):
            self.load()
        self.begin_class(class_index)
        job = SimpleNamespace(class_index=class_index, index=0, seed=seed_of(self.p.seed, class_index, 0))
        jobs = [SimpleNamespace(class_index=class_index, seed=job.seed, plan=self.plan(job, v)) for v in VARIANTS]
        return {label_of(v): image for v, (image, _) in zip(VARIANTS, self.generate(jobs))}
