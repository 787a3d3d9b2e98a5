"""The interface every generation method implements; the synthesis engine and the adaptation stage
call nothing else.

A method is a class with:

    name          its `synth_method` value
    parameters    its parameter group: a frozen dataclass of `schema.field`s (sampler, steps,
                  guidance, strength, resolution, and what it alone reads), defaults possibly by K;
                  a run of another method has none of them, so switching methods inherits nothing
    prepares      whether it has a preparation step (run by the adaptation stage, notebook 01)
    columns       the manifest columns it adds to the engine's (documented; a test checks them)
    label(p)      how tables and figures name its images ("DataDream-dset", "IsSynth", ...)
    weights(p)    preflight checks of the weights it loads (each raises with the parameter to set)
    prepares_by_class(p)  whether its preparation is per class (shards of classes prepare side by side)
    whole_classes(p)  whether an image depends on the others of its class (DISEF's per-class filter
                  budget): synthesis shards then own whole classes instead of chunks of 64 images
    class_summary(rows)  per-class figures of its manifest rows for the notebooks and the FID table
                  (DISEF: the filter's pass rate, the share kept unfiltered); empty for most
    cost(p, n_classes, images, **assumptions)  what a run costs, in counts (`Cost`): for the cost
                  estimate, which asks every method the same (assumptions: e.g. a filter's pass rate)
    classifier_options(p)  what it asks of the classifier trained on its images (`ClassifierOptions`;
                  IsSynth's zero-shot teacher, opt-in); by default nothing: Table 1's shared classifier

and, on an instance made for one run (cheap: no model is loaded until `load`):

    prepare(progress, classes)  the resumable preparation (of some classes: a shard's); one row per prepared item
    preparation_damage()  prepared items that are missing or damaged (cheap), for the resume check
    preparation_losses()  per prepared item its training losses (adapters, tokens), for notebook 01
    preview(c)            {label: image} of what its choices do for class c, for notebook 01 (unCLIP:
                          one image per conditioning variant); none for most methods
    check_prepared()      stop before any image is made if the preparation is incomplete
    outdated(rows)        listed images made from prepared inputs that changed since (DISEF's captions)
    plan(job)             the image's own plan, derived from its seed alone (prompt, source shot,
                          strength, caption shot, ...): written into its manifest row
    load(images, batch_size)  build the models on the device (batch_size: the engine's, per call)
    begin_class(c)        switch to class c (DataDream-cls loads the class's adapter)
    describe(c)           the manifest columns shared by a class's images (model, sampler, ...)
    generate(jobs)        one (image, columns) per planned job of one class, in order; the columns
                          override the engine's. A job whose `needed` is False is already on disk
                          and asked for only to keep its batch intact: a method whose images are
                          not made in batches of jobs may return (None, {}) for it.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Optional

import dataclasses

import numpy as np
import pandas as pd

from datadream_lib.errors import DataDreamError


@dataclasses.dataclass(frozen=True)
class ClassifierOptions:
    """What a method may ask of the classifier trained on its images (all off: the shared classifier)."""
    teacher_weight: float = 0.0  # a soft cross-entropy on the synthetic samples towards the frozen zero-shot CLIP
    teacher_temperature: float = 2.0
    replace_real: float = 0.0  # each real sample of synthetic_real replaced, at each draw, with this probability ...
    replace_from: str = "class"  # ... by a random synthetic image of its class ("class") or of its own shot ("shot")


@dataclasses.dataclass(frozen=True)
class Cost:
    """What one run of a method costs, in counts that `benchmarks/cost_estimate.py` prices (FLOPs of
    each network, or measured rates): its preparation and its images (all of one seed)."""
    adapt_samples: float = 0.0  # LoRA training samples (each a UNet forward + backward, a VAE encode)
    adapt_text_encoder: bool = False  # whether the text encoder is trained too
    captioner_tokens: float = 0.0  # tokens through a captioner of `captioner_params` parameters
    captioner_params: float = 0.0
    images_made: float = 0.0  # images generated, rejected candidates included
    unet_passes: float = 0.0  # UNet forward passes of one sample each, guidance doubled ...
    unet: str = "sd21_base_512"  # ... of this network: SD 2.1-base at 512 px, or "unclip_768" (Stable unCLIP at 768 px)
    image_encodes: float = 0.0  # images through an image-conditioning encoder (unCLIP's ViT-H/14 at 224 px)
    vae_encodes: float = 0.0
    vae_decodes: float = 0.0
    filter_images: float = 0.0  # images through a filter network (`filter_model`)


@dataclasses.dataclass(frozen=True)
class NoParameters:
    """The group of a method with no parameters of its own."""


def seed_of(*words: int) -> int:
    """A 63-bit seed hashed from integers (run seed, class, index, ...), independent of everything else."""
    state = np.random.SeedSequence(list(words)).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


class Method:
    name: ClassVar[str]
    parameters: ClassVar[type] = NoParameters
    prepares: ClassVar[bool] = False
    columns: ClassVar[tuple[str, ...]] = ("prompt",)
    # The method's rows of the paper's Table 1 (ViT-B/16, 16 shots, 500 images per class, mean of 3
    # seeds; docs/hyperparameters.md §7): {(variant, setting): (the row's place in the table, its
    # ten datasets' top-1 in BENCHMARKS order and the stated Avg; None for a cell not readable)}.
    paper_table1: ClassVar[dict] = {}

    @classmethod
    def variant(cls, p) -> Optional[str]:
        """What tells this method's Table 1 rows apart, from the run's parameters (DataDream: dset or
        cls); None for a method with one row. With `synth_method`, a result's identity: tables are
        joined on it, and `display` names it only when a table or figure is drawn."""
        return None

    @classmethod
    def display(cls, variant: Optional[str]) -> str:
        """The name tables and figures give the method's images, for a variant (`variant`)."""
        return cls.name

    @classmethod
    def label(cls, p) -> str:
        """The display name of a run's images: `display` of the run's `variant`."""
        return cls.display(cls.variant(p))

    @classmethod
    def weights(cls, p) -> list[Callable[[], None]]:
        return []

    @classmethod
    def whole_classes(cls, p) -> bool:
        return False

    @classmethod
    def prepares_by_class(cls, p) -> bool:
        """Whether its preparation is per class (cls adapters, tokens, captions), so shards of
        classes can prepare side by side (the launcher's adaptation units)."""
        return False

    @classmethod
    def class_summary(cls, rows: list[dict]) -> pd.DataFrame:
        return pd.DataFrame({"class_index": []})

    @classmethod
    def classifier_options(cls, p) -> ClassifierOptions:
        return ClassifierOptions()

    @classmethod
    def cost(cls, p, n_classes: int, images: int, **assumptions) -> Cost:
        raise NotImplementedError

    def __init__(self, p, run, split):
        self.p, self.run, self.split = p, run, split

    # --- preparation ---------------------------------------------------------------------------
    def prepare(self, progress: bool = True, classes: list[int] | None = None) -> pd.DataFrame:
        """`classes`: prepare only those (a shard's; None: all); a preparation of the whole set is
        made by the shard that holds class 0."""
        return pd.DataFrame()

    def preparation_damage(self) -> list[str]:
        return []

    def preparation_losses(self) -> dict[str, list[float]]:
        """Per prepared item, its training losses (for notebook 01's plot); none for most methods."""
        return {}

    def preview(self, class_index: int = 0) -> dict[str, object]:
        """{label: image} showing what the method's choices do, for notebook 01 (augmentation-
        conditioned unCLIP: one image per conditioning variant); none for most methods."""
        return {}

    def outdated(self, rows: list[dict]) -> list[dict]:
        """The listed images made from prepared inputs that have changed since (DISEF: a caption made
        again that reads otherwise): synthesis makes them again, and the resume check counts them as
        damaged. None for most methods (their preparation is checked by its checksums)."""
        return []

    def check_prepared(self) -> None:
        damaged = self.preparation_damage()
        if damaged:
            raise DataDreamError(f"{len(damaged)} prepared input(s) of {self.name} are missing or damaged, e.g. "
                                 f"{damaged[0]}. Run the adaptation stage (notebooks/01_adaptation.ipynb, or the "
                                 f"pipeline) for this run: it prepares what is missing and redoes what is damaged.")

    # --- generation ----------------------------------------------------------------------------
    def plan(self, job) -> dict:
        raise NotImplementedError

    def load(self, images: int = 0, batch_size: int | None = None) -> None:
        """Build the models; `images`: how many this process will make (a long run may compile);
        `batch_size`: the images the engine asks for per call (unset: as many as it asks)."""
        raise NotImplementedError

    def begin_class(self, class_index: int) -> None:
        pass

    def describe(self, class_index: int) -> dict:
        raise NotImplementedError

    def generate(self, jobs: list) -> list[tuple]:
        raise NotImplementedError
