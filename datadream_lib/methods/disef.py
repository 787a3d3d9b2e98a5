"""DISEF (da Costa et al., 2023), as DataDream's Table 1 re-runs it on SD 2.1.

Preparation: a caption of every shot by LLaVA-1.5-7B (`caption_model`, transformers'
`LlavaForConditionalGeneration`, loaded in the run's precision), asked the authors' query in their
`llava_v1` conversation (system prompt first), sampled at temperature 0.2 from a
seed of (run seed, class, shot); cached in `adaptation/captions.jsonl`, one row per shot, so an
interrupted captioning resumes. A caption longer than the text encoder's 77 tokens is cut there
(Stable Diffusion reads no further); the row keeps the whole caption and says it was cut.

Generation: img2img from the shot `index mod K`, padded to a square and resized, DPM-Solver++
(order 2) with the authors' linspace timestep spacing, 20 steps from step 5 (strength 0.75: t 749),
guidance 8.0, prompted with the caption of
another shot of the class, drawn from the image's seed. Filter: CLIP (`filter_model` /
`filter_pretrained`, the authors' open_clip ViT-H-14 on LAION-2B) zero-shot over the classes with
the authors' template of the dataset (`FILTER_TEMPLATES`); an image is kept when its argmax is its
class. Otherwise it is made again with the seed of (run seed, class, index, attempt), at most
`filter_attempts` times, and the attempt with the highest probability of its class is kept (the
authors' budget is per class instead: open work, see README). With a compiled UNet, a retry batch
is filled up to the first batch's size, so it does not recompile. The manifest row records the
attempts made, the attempt kept, its seed and probability, and whether it passed the filter.

The authors' code draws no seeds, re-uses one scheduler's timesteps across calls (an IndexError on
diffusers 0.42) and loads the filter's tokenizer with the model (fails on open_clip 3.x): here every
attempt has its own seed, the pipeline sets its timesteps per call, and the tokenizer is open_clip's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from datadream_lib import models
from datadream_lib.catalog import JsonlWriter, read_jsonl
from datadream_lib.errors import DataDreamError
from datadream_lib.methods.base import seed_of
from datadream_lib.methods.issynth import IsSynth
from datadream_lib.methods.stable_diffusion import check_weights as check_sd_weights

QUERY = "Provide a detailed caption for the image focusing on the object, knowing it's a {}."
# The `llava_v1` conversation of the original LLaVA repository, which the authors caption with.
SYSTEM_PROMPT = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                 "helpful, detailed, and polite answers to the human's questions.")
CAPTIONS_FILE = "captions.jsonl"
# The filter's zero-shot template per dataset (the authors' `get_prompt`), not the classifier's prompt.
# (With the dataset names their README passes, only dtd and eurosat reach their own template; we give
# each dataset the template written for it.)
FILTER_TEMPLATES = {
    "dtd": "a photo of a {} texture.",
    "eurosat": "a centered satellite photo of a {}.",
    "stanford_cars": "a photo of a {}, a type of car.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "flowers102": "a photo of a {} flower.",
    "oxford_pets": "a photo of a {}, a type of pet.",
}
FILTER_TEMPLATE = "a photo of a {}."  # every other dataset


def filter_prompts(dataset: str, classnames: list[str]) -> list[str]:
    return [FILTER_TEMPLATES.get(dataset, FILTER_TEMPLATE).format(name) for name in classnames]

# The tiny captioner: LLaVA's classes with a 2-layer Llama and a tiny CLIP vision tower.
TINY_LLAVA_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         image_size=32, patch_size=8)
TINY_LLAVA_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, max_position_embeddings=512)


def llava_prompt(classname: str) -> str:
    """The authors' query in LLaVA-1.5's `llava_v1` conversation, system prompt first."""
    return f"{SYSTEM_PROMPT} USER: <image>\n{QUERY.format(classname)} ASSISTANT:"


def load_captioner(p, dtype=torch.float32):
    """(model, processor) of LLaVA in eval mode on the CPU, its weights loaded in `dtype` (bf16 on a
    GPU: 7B parameters in fp32 would peak near 28 GB): the hub id or folder `caption_model`, or the
    tiny / full-size-vision random preset."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    if p.models != "pretrained":
        tokenizer = models.clip_tokenizer()  # the real CLIP BPE vocabulary, plus LLaVA's image token
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
        text = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, **TINY_LLAVA_TEXT)
        config = LlavaConfig(vision_config=CLIPVisionConfig(**TINY_LLAVA_VISION), text_config=text,
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2)
        size = TINY_LLAVA_VISION["image_size"]
        processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": size},
                                                                      crop_size={"height": size, "width": size}),
                                   tokenizer=tokenizer, patch_size=TINY_LLAVA_VISION["patch_size"],
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
        with models.seeded(models.TINY_SEED):
            model = LlavaForConditionalGeneration(config)
        return model.eval(), processor
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(p.caption_model, local_files_only=p.local_files_only)
        model = LlavaForConditionalGeneration.from_pretrained(p.caption_model, use_safetensors=True,
                                                              local_files_only=p.local_files_only, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise models.model_unreachable("LLaVA", p.caption_model, exc, _LLAVA_HINT.format(p.caption_model)) from None
    return model.eval(), processor


_LLAVA_HINT = "`hf download {} --local-dir /models/llava-1.5-7b`, then caption_model: /models/llava-1.5-7b"


def load_filter(p):
    """(clip, tokenizer, image size): the filter's open_clip model in fp32 on the CPU; the tiny
    preset uses the tiny CLIP of the classifier."""
    import open_clip

    if p.models == "tiny":
        return models.load_clip(p)
    tokenizer = open_clip.get_tokenizer(p.filter_model)
    if p.models == "full_random":
        with models.seeded(models.TINY_SEED):
            model = open_clip.create_model(p.filter_model, pretrained=None)
    else:
        try:
            model = open_clip.create_model(p.filter_model, pretrained=p.filter_pretrained, require_pretrained=True,
                                           weights_only=True)
        except Exception as exc:  # open_clip raises RuntimeError / OSError / HF errors when offline
            raise models.model_unreachable("CLIP filter", f"{p.filter_model} / {p.filter_pretrained}", exc,
                                           "open_clip's hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K file "
                                           "open_clip_model.safetensors, then filter_pretrained: its path") from None
    size = model.visual.image_size
    return model.eval(), tokenizer, int(size[0] if isinstance(size, (tuple, list)) else size)


def cut_to_text_encoder(caption: str, tokenizer) -> tuple[str, bool]:
    """The caption as Stable Diffusion reads it (77 tokens with start and end), and whether it was cut."""
    ids = tokenizer(caption, truncation=False, verbose=False).input_ids
    limit = tokenizer.model_max_length
    if len(ids) <= limit:
        return caption, False
    return tokenizer.decode(ids[1:limit - 1], skip_special_tokens=True), True


class DISEF(IsSynth):
    name = "disef"
    prepares = True
    timestep_spacing = "linspace"  # the authors' DPM-Solver++ from SD 2.1-base's hub config: t 749 at strength 0.75
    source_fit = "pad"  # the authors pad the shot to a square with black, then resize
    columns = ("prompt", "source_shot", "source_image", "caption_shot", "strength", "first_timestep", "attempts",
               "kept_attempt", "attempt_seed", "filter_prob", "filter_passed")

    @classmethod
    def defaults(cls, shots: int) -> dict:
        return {"scheduler": "dpmsolver++", "num_inference_steps": 20, "guidance_scale": 8.0, "strength": 0.75}

    @classmethod
    def label(cls, p) -> str:
        return "DISEF"

    @classmethod
    def weights(cls, p):
        checks = [lambda: check_sd_weights(p)]
        if p.models == "pretrained":
            checks += [lambda: models.check_hub_folder("LLaVA", p.caption_model, "caption_model", "config.json",
                                                       p.local_files_only, _LLAVA_HINT.format(p.caption_model)),
                       lambda: models.check_open_clip_reachable(p.filter_model, p.filter_pretrained, "filter_pretrained")]
        return checks

    # --- preparation: captions -----------------------------------------------------------------
    @property
    def captions_path(self):
        return self.run.path("adaptation", CAPTIONS_FILE)

    def captions(self) -> dict[tuple[int, int], dict]:
        """(class, shot) -> its caption row, for the run's K shots."""
        rows = {(r["class_index"], r["shot"]): r for r in read_jsonl(self.captions_path)}
        return {key: rows[key] for key in self._shot_keys() if key in rows}

    def _shot_keys(self) -> list[tuple[int, int]]:
        return [(c, k) for c in range(len(self.split.classnames)) for k in range(self.p.shots)]

    def preparation_damage(self) -> list[str]:
        have = self.captions()
        return [f"{self.captions_path}: no caption of class {c} shot {k}" for c, k in self._shot_keys() if (c, k) not in have]

    def prepare(self, progress: bool = True) -> pd.DataFrame:
        have = self.captions()  # read once: the file has a row per shot (16,000 for ImageNet)
        todo = [key for key in self._shot_keys() if key not in have]
        if todo:
            self._caption(todo, progress)
        return pd.DataFrame(sorted(self.captions().values(), key=lambda r: (r["class_index"], r["shot"])))

    @torch.no_grad()
    def _caption(self, todo: list[tuple[int, int]], progress: bool) -> None:
        from datadream_lib.splits import load_rgb

        p = self.p
        device = models.resolve_device(p)
        dtype = models.autocast_dtype(p, device) or torch.float32
        model, processor = load_captioner(p, dtype)
        models.place(model, device, dtype)
        sd_tokenizer = models.clip_tokenizer()  # Stable Diffusion 2.1's text encoder reads CLIP BPE tokens
        writer = JsonlWriter(self.captions_path)
        try:
            for c, k in tqdm(todo, desc="captions", disable=not progress):
                path = self.split.shot_order[c][k]
                inputs = processor(images=[load_rgb(path)], text=[llava_prompt(self.split.classnames[c])],
                                   return_tensors="pt").to(device)
                seed = seed_of(p.seed, c, k, 0xCA9)
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(seed)
                    out = model.generate(**inputs, do_sample=True, temperature=0.2, max_new_tokens=p.caption_max_tokens)
                caption = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
                prompt, cut = cut_to_text_encoder(caption, sd_tokenizer)
                writer.append({"class_index": c, "class_name": self.split.classnames[c], "shot": k, "image": path,
                               "caption": caption, "prompt": prompt, "cut_to_77_tokens": cut, "seed": seed,
                               "model": p.caption_model if p.models == "pretrained" else f"{p.models} LLaVA (random weights)"})
        finally:
            writer.close()

    # --- generation ----------------------------------------------------------------------------
    def plan(self, job) -> dict:
        k, path = self.shot(job)
        others = [j for j in range(self.p.shots) if j != k] or [k]  # at K = 1 the only shot captions itself
        caption_shot = others[int(np.random.default_rng(job.seed).integers(len(others)))]
        return {"prompt": self._captions[(job.class_index, caption_shot)]["prompt"], "source_shot": k,
                "source_image": path, "caption_shot": caption_shot, "strength": self.p.strength}

    def load(self, images: int = 0) -> None:
        super().load(images * 2)  # with its retries, DISEF makes about twice the images it keeps
        self._captions = self.captions()
        device = models.resolve_device(self.p)
        clip, tokenizer, self.filter_size = load_filter(self.p)
        self.filter = clip.to(device)
        with torch.no_grad():
            text = self.filter.encode_text(tokenizer(filter_prompts(self.p.dataset, self.split.classnames)).to(device))
        self.filter_text = torch.nn.functional.normalize(text.float(), dim=-1)

    @torch.no_grad()
    def class_probabilities(self, images) -> np.ndarray:
        """The filter's zero-shot probabilities over the classes, one row per image."""
        from datadream_lib.classification import test_transform

        transform = test_transform(self.filter_size)
        batch = torch.stack([transform(image) for image in images]).to(self.filter_text.device)
        features = torch.nn.functional.normalize(self.filter.encode_image(batch).float(), dim=-1)
        logits = self.filter.logit_scale.float().exp() * features @ self.filter_text.t()
        return logits.softmax(-1).cpu().numpy()

    def attempt_seed(self, job, attempt: int) -> int:
        return job.seed if attempt == 1 else seed_of(self.p.seed, job.class_index, job.index, attempt)

    def generate(self, jobs: list) -> list[tuple]:
        best: list = [None] * len(jobs)  # (probability, image, attempt, seed, passed)
        made = [0] * len(jobs)
        pending = list(range(len(jobs)))
        for attempt in range(1, self.p.filter_attempts + 1):
            if not pending:
                break
            batch = [jobs[i] for i in pending]
            if self.speed["compiled"]:  # a smaller batch would recompile the UNet: fill it up, drop the extra images
                batch += [batch[-1]] * (len(jobs) - len(batch))
            seeds = [self.attempt_seed(job, attempt) for job in batch]
            images = self.img2img(batch, [job.plan["prompt"] for job in batch], seeds)[:len(pending)]
            probabilities = self.class_probabilities(images)
            still = []
            for i, image, seed, probs in zip(pending, images, seeds, probabilities):
                c = jobs[i].class_index
                passed = int(probs.argmax()) == c
                made[i] = attempt
                if best[i] is None or passed or probs[c] > best[i][0]:
                    best[i] = (float(probs[c]), image, attempt, seed, passed)
                if not passed:
                    still.append(i)
            pending = still
        if any(b is None for b in best):
            raise DataDreamError("filter_attempts must be at least 1.")
        return [(image, {"attempts": made[i], "kept_attempt": attempt, "attempt_seed": seed, "filter_prob": prob,
                         "filter_passed": passed})
                for i, (prob, image, attempt, seed, passed) in enumerate(best)]
