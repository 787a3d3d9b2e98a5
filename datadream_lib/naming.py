"""How tables and figures name results. A stored result says what it is by identity: `synth_method`
and the method's `variant` (a manifest row, a classifier's metrics.json, a row of the FID or ablation
tables), and a classifier's `setting`. The names a reader sees ("DataDream-dset, synthetic + real")
are made here, from that identity, when a table or figure is drawn; renaming a method's display name
(`Method.display`) changes no stored file.

Run folders written before results carried their identity stored the names instead (a manifest
row's `source`, metrics' `source`, the FID and ablation tables' `method`); those are read as they
were written where the identity is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from datadream_lib import catalog, methods
from datadream_lib.stages import SYNTHETIC_SETTINGS

SETTING_LABELS = {
    "zero_shot": "CLIP zero-shot",
    "real_finetune": "Real-finetune",
    "synthetic": "synthetic only",
    "synthetic_real": "synthetic + real",
}

REFERENCE = "reference"  # the FID table's `images` of its rows of real validation images
REFERENCE_LABEL = "real val (reference)"  # and their name, beside each image set


def _value(v):
    """A stored variant: None where a table read back from CSV holds NaN."""
    return None if v is None or (isinstance(v, float) and pd.isna(v)) else v


def images(synth_method: Optional[str], variant) -> str:
    """How tables and figures name a method's images (`Method.display`); a method this checkout does
    not know is named by its `synth_method`."""
    if synth_method in methods.METHODS:
        return methods.display(synth_method, _value(variant))
    return str(synth_method)


def stored_row_label(setting: str, source: Optional[str]) -> str:
    """The Table 1 row of a classifier from the name of its images ("DataDream-dset, synthetic +
    real"); an old run's rows are named so from the name its files stored."""
    if setting not in SYNTHETIC_SETTINGS:
        return SETTING_LABELS[setting]
    return f"{source or '?'}, {SETTING_LABELS[setting]}"


def row_label(synth_method: Optional[str], variant, setting: str) -> str:
    """The Table 1 row of a classifier, by identity: its setting, and for synthetic data the name of its images."""
    return stored_row_label(setting, images(synth_method, variant))


def key(images: str, synth_method: Optional[str], variant) -> str:
    """A stored key of an FID table's image set, by identity ("datadream/dset", "issynth", "reference"):
    the FID summary's and curves' names of it."""
    if images == REFERENCE:
        return REFERENCE
    variant = _value(variant)
    return str(synth_method) if variant is None else f"{synth_method}/{variant}"


def named(table: pd.DataFrame) -> pd.DataFrame:
    """A per-class FID or ablation table as stored (identity columns), with its rows' names added as
    `method`: an ablation cell's classifier row, or an FID row's image set. A table written before
    tables carried identity keeps the names it stored."""
    table = table.copy()
    if "synth_method" not in table or table.empty:
        return table
    if "setting" in table:  # ablation cells: one row per classifier setting
        names = [row_label(m, v, s) for m, v, s in zip(table["synth_method"], table["variant"], table["setting"])]
    else:  # per-class FID: each image set and the real reference set
        names = [REFERENCE_LABEL if i == REFERENCE else images(m, v)
                 for i, m, v in zip(table["images"], table["synth_method"], table["variant"])]
    table.insert(0, "method", names)
    return table


def image_sets(run) -> dict[str, Path]:
    """{name: folder} of every method's images in a run, named from the identity their manifest rows
    carry (`method`, `variant`); rows of an old run name their images themselves (`source`)."""
    out = {}
    for folder, row in catalog.first_rows(run).items():
        name = images(row.get("method"), row["variant"]) if "variant" in row else row.get("source", folder.name)
        out[name] = folder
    return out
