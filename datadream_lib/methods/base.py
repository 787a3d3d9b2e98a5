"""The interface every generation method implements; the synthesis engine and the adaptation stage
call nothing else.

A method is a class with:

    name          its `synth_method` value
    prepares      whether it has a preparation step (run by the adaptation stage, notebook 01)
    columns       the manifest columns it adds to the engine's (documented; a test checks them)
    defaults(K)   its sampler, steps, guidance and strength (K: the run's shots), which fill every
                  such parameter left unset, so switching methods never inherits another's
    label(p)      how tables and figures name its images ("DataDream-dset", "IsSynth", ...)
    weights(p)    preflight checks of the weights it loads (each raises with the parameter to set)
    whole_classes(p)  whether an image depends on the others of its class (DISEF's per-class filter
                  budget): synthesis shards then own whole classes instead of chunks of 64 images
    class_summary(rows)  per-class figures of its manifest rows for the notebooks and the FID table
                  (DISEF: the filter's pass rate, the share kept unfiltered); empty for most

and, on an instance made for one run (cheap: no model is loaded until `load`):

    prepare()             the resumable preparation; returns one row per prepared item
    preparation_damage()  prepared items that are missing or damaged (cheap), for the resume check
    check_prepared()      stop before any image is made if the preparation is incomplete
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

from typing import Callable, ClassVar

import numpy as np
import pandas as pd

from datadream_lib.errors import DataDreamError

# The parameters a method's defaults fill when they are left unset (None).
GENERATION_PARAMETERS = ("scheduler", "num_inference_steps", "guidance_scale", "strength")


def seed_of(*words: int) -> int:
    """A 63-bit seed hashed from integers (run seed, class, index, ...), independent of everything else."""
    state = np.random.SeedSequence(list(words)).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


class Method:
    name: ClassVar[str]
    prepares: ClassVar[bool] = False
    columns: ClassVar[tuple[str, ...]] = ("prompt",)

    @classmethod
    def defaults(cls, shots: int) -> dict:
        raise NotImplementedError

    @classmethod
    def label(cls, p) -> str:
        return cls.name

    @classmethod
    def weights(cls, p) -> list[Callable[[], None]]:
        return []

    @classmethod
    def whole_classes(cls, p) -> bool:
        return False

    @classmethod
    def class_summary(cls, rows: list[dict]) -> pd.DataFrame:
        return pd.DataFrame({"class_index": []})

    def __init__(self, p, run, split):
        self.p, self.run, self.split = p, run, split

    # --- preparation ---------------------------------------------------------------------------
    def prepare(self, progress: bool = True) -> pd.DataFrame:
        return pd.DataFrame()

    def preparation_damage(self) -> list[str]:
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
