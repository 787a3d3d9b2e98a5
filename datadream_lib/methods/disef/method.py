"""DISEF as a method of this project: its parameter group, its preparation (captions.py) and its
generation with the CLIP filter (filter.py) under either rule (see the package's docstring)."""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import numpy as np
import pandas as pd

from datadream_lib import catalog, models, runtime
from datadream_lib.errors import DataDreamError
from datadream_lib.methods.base import Cost, Method, seed_of
from datadream_lib.methods.disef.captions import (CAPTIONS_FILE, LLAVA_PARAMS, LLAVA_PROMPT_TOKENS, caption_folder,
                                                  read_captions, write_captions)
from datadream_lib.methods.disef.filter import ZeroShotFilter
from datadream_lib.methods.issynth import source_shot
from datadream_lib.methods.stable_diffusion import Generator, Sampling, check_strength
from datadream_lib.methods.stable_diffusion import check_weights as check_sd_weights
from datadream_lib.schema import field

DRAW_BATCH = 8  # the authors' batch: its source shots drawn and captions shuffled together; the budget counts these
DRAW_TAG, NOISE_TAG = 0xD15EF, 0xD15EF + 1  # seed words of a batch's draw and of a candidate's noise
FILTER_COLUMNS = ("attempts", "kept_attempt", "filter_prob", "filter_passed", "unfiltered")


@dataclasses.dataclass(frozen=True)
class DISEFParameters(Sampling):
    """DISEF's group: DPM-Solver++ 20 steps at strength 0.75, guidance 8.0, its captioner and filter."""
    # Its sizes on the demo's random tiny models (whose filter almost never agrees: the authors' budget
    # of 100 batches per class would run for hours) and in the toy world (40 images per class).
    PRESETS: ClassVar[dict] = {"demo": {"filter_budget": 2, "caption_max_tokens": 12},
                               "toyworld": {"filter_budget": 10},  # at most 80 candidates per class for 40 images
                               "smoke": {"filter_attempts": 2}}
    scheduler: str = field("dpmsolver++", Sampling.__dataclass_fields__["scheduler"].metadata["help"],
                           check=Sampling.__dataclass_fields__["scheduler"].metadata["check"])
    num_inference_steps: int = field(20, "sampler steps (the authors: 20, noised at step 5)", min=1)
    guidance_scale: float = field(8.0, "classifier-free guidance scale", min=0.0)
    strength: float = field(0.75, "how far the source shot is noised before denoising, in (0, 1] (the authors: step 5 of 20)", check=check_strength)
    filter_rule: str = field("class", "DISEF: how rejected images are replaced. 'class' (the authors'): each class draws candidates in batches of 8 (source shots at random, captions shuffled within the batch) and keeps those the CLIP filter assigns to it until filter_budget batches are spent, then keeps the rest unfiltered; 'image': each image is retried up to filter_attempts times with new noise, then its most probable attempt is kept", choices=("class", "image"))
    filter_budget: int = field(100, "DISEF, filter_rule 'class': batches of 8 candidates a class may spend on the filter before it keeps the rest unfiltered (the authors: 100; 0 = no filter)", min=0)
    filter_attempts: int = field(12, "DISEF, filter_rule 'image': attempts per image until the CLIP filter assigns it to its class (then the most probable attempt is kept)", min=1)
    caption_model: str = field("llava-hf/llava-1.5-7b-hf", "DISEF: the captioner, a hub id or local folder of a transformers LLaVA model (models: pretrained; docs/weights.md)", identity=False)
    caption_model_revision: str = field("main", "DISEF: the hub revision (commit, branch or tag) of caption_model; 'main': what the hub serves now. The commit used is recorded either way", identity=False)
    caption_max_tokens: int = field(120, "DISEF: the longest caption LLaVA may write, in its tokens", min=1)
    filter_model: str = field("ViT-H-14", "DISEF: the open_clip architecture of the CLIP filter")
    filter_pretrained: str = field("laion2b_s32b_b79k", "DISEF: the filter's open_clip pretrained tag, or a local checkpoint file (models: pretrained)")


class DISEF(Method):
    name = "disef"
    parameters = DISEFParameters
    prepares = True
    timestep_spacing = "linspace"  # the authors' DPM-Solver++ from SD 2.1-base's hub config: t 749 at strength 0.75
    source_fit = "pad"  # the authors pad the shot to a square with black, then resize
    columns = ("prompt", "source_shot", "source_image", "caption_shot", "strength", "first_timestep", "filter_rule",
               "candidate", "attempts", "kept_attempt", "attempt_seed", "filter_prob", "filter_passed", "unfiltered")

    @classmethod
    def cost(cls, p, n_classes: int, images: int, filter_pass_rate: float = 0.5, **assumptions) -> Cost:
        """At an assumed filter pass rate (`expected_candidates`), with the captions of the shots."""
        candidates = expected_candidates(images, filter_pass_rate, p.method.filter_rule, p.method.filter_budget, p.method.filter_attempts) / images
        made = Generator(p, img2img=True, timestep_spacing=cls.timestep_spacing).cost(n_classes, images, candidates)
        return dataclasses.replace(made, filter_images=made.images_made, captioner_params=LLAVA_PARAMS,
                                   captioner_tokens=n_classes * p.shots * (LLAVA_PROMPT_TOKENS + p.method.caption_max_tokens))

    @classmethod
    def prepares_by_class(cls, p) -> bool:
        return True

    paper_table1 = {  # the paper's re-run on SD 2.1 (docs/methods.md, docs/hyperparameters.md §6)
        (None, "synthetic"): (8, (67.1, 93.4, 66.1, 69.2, 26.8, 91.0, 63.2, 73.5, 85.1, 85.4, 72.1)),
        (None, "synthetic_real"): (10, (73.8, 97.0, 81.5, 94.0, 64.3, 92.6, 87.9, 77.6, 86.2, 99.0, 85.4)),
    }

    @classmethod
    def display(cls, variant) -> str:
        return "DISEF"

    @classmethod
    def weights(cls, p):
        checks = [lambda: check_sd_weights(p)]
        if p.models == "pretrained":
            checks += [lambda: models.describe_folder("caption_model", p.method.caption_model, caption_folder(p)),
                       lambda: models.check_open_clip_reachable(p.method.filter_model, p.method.filter_pretrained, "filter_pretrained")]
        return checks

    # --- preparation: captions -----------------------------------------------------------------
    @property
    def captions_path(self):
        return self.run.path("adaptation", CAPTIONS_FILE)

    @functools.cached_property
    def _captions(self) -> dict[tuple[int, int], dict]:
        """The prepared captions, read once (a plan needs nothing else)."""
        return self.captions()

    def captions(self) -> dict[tuple[int, int], dict]:
        """(class, shot) -> its caption row, for the run's K shots (`captions.read_captions`)."""
        return read_captions(self.captions_path, self._shot_keys())

    def outdated(self, rows: list[dict]) -> list[dict]:
        """Images whose caption has changed since they were made (a caption lost and made again that
        reads otherwise, say on another GPU): made again. Under the class rule a caption steers the
        whole class's stream of candidates, so every image of that class is made again."""
        current = self.captions()
        changed = [r for r in rows if r.get("caption_shot") is not None
                   and current.get((r["class_index"], r["caption_shot"]), {}).get("prompt", r.get("prompt")) != r.get("prompt")]
        if self.p.method.filter_rule == "class":
            classes = {r["class_index"] for r in changed}
            return [r for r in rows if r["class_index"] in classes]
        return changed

    def _shot_keys(self) -> list[tuple[int, int]]:
        return [(c, k) for c in range(len(self.split.classnames)) for k in range(self.p.shots)]

    def preparation_damage(self) -> list[str]:
        have = self.captions()
        return [f"{self.captions_path}: no caption of class {c} shot {k}" for c, k in self._shot_keys() if (c, k) not in have]

    def prepare(self, progress: bool = True, classes: list[int] | None = None) -> pd.DataFrame:
        have = self.captions()  # read once: the file has a row per shot (16,000 for ImageNet)
        todo = [key for key in self._shot_keys() if key not in have and (classes is None or key[0] in classes)]
        if todo:
            write_captions(self.p, self.split, todo, self.captions_path, progress)
        return pd.DataFrame(sorted(self.captions().values(), key=lambda r: (r["class_index"], r["shot"])))

    # --- generation ----------------------------------------------------------------------------
    @classmethod
    def whole_classes(cls, p) -> bool:
        return p.method.filter_rule == "class"  # a class's images come from one stream of candidates

    def describe(self, class_index: int) -> dict:
        return {**self.sd.describe(), "filter_rule": self.p.method.filter_rule}

    def plan(self, job) -> dict:
        if self.p.method.filter_rule == "class":
            return {}  # which candidate fills the slot is known only once the earlier ones are filtered
        k = source_shot(job, self.p.shots)
        others = [j for j in range(self.p.shots) if j != k] or [k]  # at K = 1 the only shot captions itself
        caption_shot = others[int(np.random.default_rng(job.seed).integers(len(others)))]
        return {"prompt": self._captions[(job.class_index, caption_shot)]["prompt"], "source_shot": k,
                "source_image": self.split.shot_order[job.class_index][k], "caption_shot": caption_shot,
                "strength": self.p.method.strength}

    def load(self, images: int = 0, batch_size: int | None = None) -> None:
        self.sd = Generator(self.p, img2img=True, timestep_spacing=self.timestep_spacing,
                            fuse_qkv=self.p.method.synth_fuse_qkv, source_fit=self.source_fit)
        self.sd.load(images * 2)  # with its refills, DISEF makes about twice the images it keeps
        device = runtime.resolve_device(self.p)
        self.filter = ZeroShotFilter(self.p, self.split.classnames, device)
        # the class rule's state: candidates are made in aligned blocks of `stream_batch` of a class's
        # stream, so a candidate is made in the same batch however the run was sharded or resumed
        self.stream_batch = batch_size or runtime.synth_batch_size(self.p, device)
        listed = catalog.read_manifest(catalog.folder(self.run, self.name))
        outdated = {(r["class_index"], r["index"]) for r in self.outdated(listed)}  # their class's stream starts anew
        self._listed = {(r["class_index"], r["index"]): r for r in listed if (r["class_index"], r["index"]) not in outdated}
        self._kept: dict[tuple[int, int], int] = {}  # (class, index) -> its candidate, made in this process
        self._block: tuple = (None, None, {})  # (class, block, {candidate: (plan, image, probabilities)})

    def class_probabilities(self, images) -> np.ndarray:
        """The filter's zero-shot probabilities over the classes, one row per image."""
        return self.filter.probabilities(images)

    def generate(self, jobs: list) -> list[tuple]:
        return self._generate_by_class(jobs) if self.p.method.filter_rule == "class" else self._generate_by_image(jobs)

    # --- the authors' rule: a per-class budget of candidates ------------------------------------
    def candidate(self, class_index: int, j: int) -> dict:
        """The plan of candidate j of a class's stream. Candidates come in the authors' batches of
        DRAW_BATCH: the batch's source shots drawn at random with replacement and their captions
        shuffled within it (a candidate may get its own shot's caption), both from the batch's seed;
        the candidate's noise from its own seed."""
        p = self.p
        batch, member = divmod(j, DRAW_BATCH)
        rng = np.random.default_rng(seed_of(p.seed, class_index, batch, DRAW_TAG))
        shots = rng.integers(p.shots, size=DRAW_BATCH)
        captions = shots[rng.permutation(DRAW_BATCH)]
        k, caption_shot = int(shots[member]), int(captions[member])
        return {"prompt": self._captions[(class_index, caption_shot)]["prompt"], "source_shot": k,
                "source_image": self.split.shot_order[class_index][k], "caption_shot": caption_shot,
                "strength": p.method.strength, "candidate": j, "attempt_seed": seed_of(p.seed, class_index, j, NOISE_TAG)}

    def _made(self, class_index: int, j: int) -> tuple:
        """(plan, image, filter probabilities) of candidate j, its whole block made when it is not at hand."""
        c, block, made = self._block
        if (c, block) != (class_index, j // self.stream_batch):
            block = j // self.stream_batch
            plans = [self.candidate(class_index, i) for i in range(block * self.stream_batch, (block + 1) * self.stream_batch)]
            images = self.sd.img2img([q["source_image"] for q in plans], [q["prompt"] for q in plans],
                                     [q["attempt_seed"] for q in plans], [q["strength"] for q in plans])
            made = {q["candidate"]: (q, image, probs) for q, image, probs in zip(plans, images, self.class_probabilities(images))}
            self._block = (class_index, block, made)
        return made[j]

    def _kept_candidate(self, key: tuple[int, int]) -> int:
        if key in self._kept:
            return self._kept[key]
        row = self._listed.get(key)
        if row is None or row.get("candidate") is None:
            raise DataDreamError(f"DISEF: image {key[1]} of class {key[0]} is not in the manifest, but a later one is "
                                 f"being made: the class's candidate stream cannot be resumed. Delete the class's "
                                 f"images and manifest rows (synthetic/{self.name}) and run the synthesis stage again.")
        return row["candidate"]

    def _generate_by_class(self, jobs: list) -> list[tuple]:
        budget = self.p.method.filter_budget * DRAW_BATCH  # candidates a class may spend on the filter
        out = []
        for job in jobs:
            c = job.class_index
            listed = self._listed.get(job.key)
            if not job.needed:
                out.append((None, {}))
            elif listed is not None and listed.get("candidate") is not None:  # listed, then lost: made again as it was
                plan, image, _ = self._made(c, listed["candidate"])
                out.append((image, {**plan, **{k: listed[k] for k in FILTER_COLUMNS}, "batch_size": self.stream_batch,
                                    "first_timestep": self.sd.first_timestep(plan["strength"])}))
            else:
                previous = self._kept_candidate((c, job.index - 1)) if job.index else -1
                j = previous + 1
                while True:
                    plan, image, probs = self._made(c, j)
                    passed, unfiltered = int(probs.argmax()) == c, j >= budget
                    if passed or unfiltered:
                        break
                    j += 1
                self._kept[job.key] = j
                out.append((image, {**plan, "attempts": j - previous, "kept_attempt": None, "filter_prob": float(probs[c]),
                                    "filter_passed": passed, "unfiltered": unfiltered, "batch_size": self.stream_batch,
                                    "first_timestep": self.sd.first_timestep(plan["strength"])}))
        return out

    # --- the per-image rule (an option) ---------------------------------------------------------
    def attempt_seed(self, job, attempt: int) -> int:
        return job.seed if attempt == 1 else seed_of(self.p.seed, job.class_index, job.index, attempt)

    def _generate_by_image(self, jobs: list) -> list[tuple]:
        best: list = [None] * len(jobs)  # (probability, image, attempt, seed, passed)
        made = [0] * len(jobs)
        pending = list(range(len(jobs)))
        for attempt in range(1, self.p.method.filter_attempts + 1):
            if not pending:
                break
            batch = [jobs[i] for i in pending]
            if self.sd.speed["compiled"]:  # a smaller batch would recompile the UNet: fill it up, drop the extra images
                batch += [batch[-1]] * (len(jobs) - len(batch))
            seeds = [self.attempt_seed(job, attempt) for job in batch]
            images = self.sd.img2img([job.plan["source_image"] for job in batch], [job.plan["prompt"] for job in batch],
                                     seeds, [job.plan["strength"] for job in batch])[:len(pending)]
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
        return [(image, {"candidate": None, "attempts": made[i], "kept_attempt": attempt, "attempt_seed": seed,
                         "filter_prob": prob, "filter_passed": passed, "unfiltered": not passed,
                         "first_timestep": self.sd.first_timestep(jobs[i].plan["strength"])})
                for i, (prob, image, attempt, seed, passed) in enumerate(best)]

    # --- per-class figures -----------------------------------------------------------------------
    @classmethod
    def class_summary(cls, rows: list[dict]) -> pd.DataFrame:
        """Per class: images, candidates judged by the filter, its pass rate, and the share of the
        images kept without its approval (class rule: after the budget; image rule: after
        filter_attempts failures)."""
        out = []
        for c, group in pd.DataFrame(rows).groupby("class_index") if rows else []:
            kept_unfiltered = group["unfiltered"].astype(bool)
            if (group["filter_rule"] == "class").all():
                # every candidate before the first one kept unfiltered was judged; without one, every candidate made
                judged = int(group.loc[kept_unfiltered, "candidate"].min()) if kept_unfiltered.any() else int(group["candidate"].max()) + 1
                passed = int((~kept_unfiltered).sum())
            else:
                judged, passed = int(group["attempts"].sum()), int(group["filter_passed"].astype(bool).sum())
            out.append({"class_index": int(c), "filter_judged": judged,
                        "filter_pass_rate": passed / judged if judged else float("nan"),
                        "unfiltered_share": float(kept_unfiltered.mean())})
        return pd.DataFrame(out, columns=["class_index", "filter_judged", "filter_pass_rate", "unfiltered_share"])


def expected_candidates(images: int, pass_rate: float, rule: str = "class", budget: int = 100, attempts: int = 12) -> float:
    """Candidates a class makes for `images` at a filter pass rate (for cost estimates): the class
    rule makes images / rate while the budget lasts, then one per image left; the image rule makes
    (1 - (1 - rate)^attempts) / rate per image."""
    if rule == "image":
        return images * (attempts if pass_rate <= 0 else (1 - (1 - pass_rate) ** attempts) / pass_rate)
    judged = budget * DRAW_BATCH
    if pass_rate > 0 and images / pass_rate <= judged:
        return images / pass_rate
    return judged + images - judged * pass_rate
