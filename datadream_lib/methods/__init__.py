"""Generation methods: how a run makes its synthetic images, one module each behind one interface
(`base.Method`).

    datadream         DataDream (the paper): LoRA-adapted Stable Diffusion, text-to-image
    stable_diffusion  the same without adaptation
    issynth           IsSynth "Real Guidance": img2img from a real shot, strength by K
    disef             DISEF: img2img prompted with another shot's LLaVA caption, CLIP-filtered
    dafusion          DA-Fusion: a textual-inversion token per class, img2img at a strength per image
    augcond           augmentation-conditioned Stable unCLIP: an augmented CLIP embedding of the shots

A new method is a module with a `Method` subclass, added to `METHODS`; nothing else in the library
names a method. `prepare` is the adaptation stage (notebook 01): the method's resumable preparation.
"""

from __future__ import annotations

import pandas as pd

from datadream_lib.methods.augcond import AugCond
from datadream_lib.methods.base import ClassifierOptions, Cost, Method, seed_of
from datadream_lib.methods.dafusion import DAFusion
from datadream_lib.methods.datadream import DataDream
from datadream_lib.methods.disef import DISEF
from datadream_lib.methods.issynth import IsSynth
from datadream_lib.methods.stable_diffusion import StableDiffusion

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (DataDream, StableDiffusion, IsSynth, DISEF, DAFusion,
                                                                      AugCond)}

__all__ = ["METHODS", "ClassifierOptions", "Cost", "Method", "class_summary", "display", "get", "identity", "prepare", "preparation_damage", "seed_of"]


def identity(values: dict) -> tuple[str, object]:
    """(synth_method, variant) of a run, from its parameters (a params.yaml's values): what its results
    are joined on. A run whose parameters lack a field its method's variant reads (made before it
    existed) has variant None."""
    import types

    name = values.get("synth_method")
    if name not in METHODS:
        raise KeyError(f"synth_method {name!r} is not a method of this project")
    try:
        return name, METHODS[name].variant(types.SimpleNamespace(**values, method=types.SimpleNamespace(**values)))
    except (AttributeError, TypeError):
        return name, None


def display(synth_method: str, variant) -> str:
    """How tables and figures name a method's images (`Method.display`)."""
    return METHODS[synth_method].display(variant)


def get(p, run, split) -> Method:
    """The run's method, made for this run (no model is loaded yet)."""
    return METHODS[p.synth_method](p, run, split)


def prepare(p, run, split, progress: bool = True) -> pd.DataFrame:
    """The adaptation stage: the method's preparation (DataDream: its adapters; DISEF: captions),
    resumed where it stopped; a method without one has nothing to do. One row per prepared item.
    With num_shards > 1, this process prepares the classes of its shard (class c: c mod num_shards;
    a preparation of the whole set, such as the dset adapter, is shard 0's); the stage is done
    once nothing is missing."""
    method = get(p, run, split)
    table = method.prepare(progress, classes=shard_classes(p, len(split.classnames)))
    if not method.preparation_damage():
        run.outputs_complete("adaptation", method=p.synth_method, prepared=len(table))
    return table


def preparation_damage(p, run, split) -> list[str]:
    """The adaptation stage's damage check: prepared inputs missing or damaged (the method's checksums)."""
    return get(p, run, split).preparation_damage()


def shard_classes(p, n_classes: int):
    """The classes this process prepares: all (None), or those of its shard."""
    return None if p.num_shards == 1 else [c for c in range(n_classes) if c % p.num_shards == p.shard_index]


def class_summary(folder) -> pd.DataFrame:
    """The per-class figures the method reports of its images in `folder` (`synthetic/<method>`),
    from their manifest rows (DISEF: the filter's pass rate and the share kept unfiltered); a table
    with only `class_index` where the method reports none."""
    from pathlib import Path

    from datadream_lib import catalog

    method = METHODS.get(Path(folder).name, Method)
    return method.class_summary(catalog.read_manifest(Path(folder)))
