"""The run's parameters: the schema of the run's own (data, models, engine, classifier, FID,
ablations), the machinery a generation method declares its own group with, and how one run's values
are built and checked from what was given.

A method's group is a frozen dataclass of `field`s in its own module (`Method.parameters`): its
sampler, steps, guidance, strength, resolution and whatever else it alone reads, with defaults that
may depend on the run's K (`by_shots`). This module imports no method: `build` is handed the groups
(`params.py` passes the registry's). A run's `Params` holds its core values, its method's group
(`p.method`, every value filled in: the defaults are data, not a hidden attribute) and the
values that were given (`p.given()`), so a changed copy (`replace`: another method, another K)
derives its method's defaults again. A run's own value is `p.<name>`, its method's `p.method.<name>`
(explicit: a group's field never passes for the run's).

The defaults are the paper's settings as the reference notes (docs/hyperparameters.md, "here")
state them. Unknown keys and bad values stop the run before any model is built, naming the key and,
for a typo, the nearest valid one; a key of another method's group names its method.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import string
import types
import typing
from typing import Any, Callable, Mapping, Optional

import yaml

from datadream_lib import PROJECT, tracking
from datadream_lib.errors import DataDreamError
from datadream_lib.runs import check_run_name
from datadream_lib.stages import NAMES as STAGES, SYNTHETIC_SETTINGS  # noqa: F401 (the settings that read synthesis)
from datadream_lib.weights import SD21_BASE, refuse_withdrawn

CLASSIFIER_SETTINGS = ("zero_shot", "real_finetune", "synthetic", "synthetic_real")
MODEL_PRESETS = ("pretrained", "tiny", "full_random", "toy")
PRESET_WEIGHTS = {  # what a preset other than 'pretrained' loads (models.py builds or reads them)
    "tiny": "random tiny models of the same classes, built from configs in datadream_lib/models.py (seeded)",
    "full_random": "the full-size architectures (clip_model's for the CLIP) with random weights (seeded)",
    "toy": "the toy world's models in models/toyworld/ (tiny models pretrained on the toy world)",
}
FID_FEATURES = ("inception", "clip", "tiny")
FID_FEATURE_NAMES = {"inception": "Inception-v3 pool3 features",  # what a figure says the FID was measured on
                     "clip": "the run's CLIP image-tower embeddings",
                     "tiny": "a random 64-d conv net's features: an offline check, not a quality score"}
FID_REAL_SETS = ("train", "shots")
PRECISIONS = ("auto", "bf16", "fp16", "no")
CLASS_NAMES = ("authors", "coop")
SYNTH_BATCH_MAX = 64  # the largest generation batch, and the chunk of images a synthesis shard owns


def field(default=None, help: str = "", *, choices=None, min=None, max=None, identity: bool = True,
          by_shots: Optional[Callable[[int], Any]] = None, check: Optional[Callable[[Any, str], None]] = None):
    """A parameter. `identity=False` marks how a run executes, not what it computes; `by_shots`: a
    default that depends on the run's K; `check(value, where)`: a further check that raises."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "identity": identity, "by_shots": by_shots,
            "check": check}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)



@dataclasses.dataclass(frozen=True)
class Params:
    # --- the run -------------------------------------------------------------------------------
    run_name: str = field(PROJECT, "folder name of the run under runs_root")
    runs_root: str = field("runs", "where run folders live; relative paths are taken from the project root", identity=False)
    seed: int = field(0, "seeds the few-shot draw, LoRA init, training order and every synthetic image", min=0)
    device: str = field("auto", "'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'", identity=False)
    mixed_precision: str = field("auto", "'auto' = bf16 autocast on GPU (fp32 LoRA weights), fp32 on CPU", choices=PRECISIONS)
    num_workers: int = field(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
                              "data-loader worker processes for the classifier (default: the CPU cores this process may use)",
                              min=0, identity=False)
    stages: list = field(list(STAGES), "the stages the pipeline runs, in order (Table 1 runs leave out 'ablations')", choices=STAGES, identity=False)
    tracking: str = field("tensorboard", "where training curves go: 'tensorboard' (event files in the run's tensorboard/ folder; `tensorboard --logdir runs`), 'wandb' (offline W&B runs in its wandb/ folder), 'mlflow' (MLFLOW_TRACKING_URI's store, else the run's mlflow/mlflow.db), several joined by '+', or 'none' (docs/tracking.md)", check=tracking.check, identity=False)

    # --- data (docs/hyperparameters.md §4) ---------------------------------------------------
    dataset: str = field("toy", "a name from datadream_lib.datasets.DATASETS")
    data_root: str = field("data", "the folder holding the datasets in torchvision's layout (the ImageFolder root for 'imagefolder')", identity=False)
    download: bool = field(False, "let torchvision download the dataset if it is missing", identity=False)
    shots: int = field(16, "K real images per class", min=1)
    split_seed: int = field(0, "seeds the val/test carve-outs of datasets without those splits; kept fixed across run seeds so every seed is tested on the same images", min=0)
    val_fraction: float = field(0.1, "share of train carved out (seeded) as validation where a dataset has no val split", min=0.01, max=0.5)
    test_fraction: float = field(0.2, "share carved out as test where a dataset has no test split", min=0.01, max=0.5)
    class_names: str = field("authors", "'authors': the class names of the authors' code, behind Table 1 (EuroSAT 'AnnualCrop', Stanford Cars with the year last); 'coop': CoOp's names ('Annual Crop Land', year first)", choices=CLASS_NAMES)
    skip_corrupt_images: bool = field(False, "skip unreadable images (each is logged) instead of stopping")

    # --- models (docs/hyperparameters.md §1, §3) ----------------------------------------------
    models: str = field("pretrained", "'pretrained' weights, 'tiny' random offline models, 'full_random' full-size architectures with random weights, or 'toy': tiny models pretrained on the toy world (models/toyworld/)", choices=MODEL_PRESETS)
    sd_model: str = field(SD21_BASE, "hub id or local folder of Stable Diffusion 2.1-base (models: pretrained; docs/weights.md). Not part of the run's identity: the weights record is (a resume with other weights is refused)", identity=False, check=refuse_withdrawn)
    sd_model_revision: str = field("main", "the hub revision (commit, branch or tag) of sd_model; 'main': what the hub serves now. The commit used is recorded either way", identity=False)
    clip_model: str = field("ViT-B-16", "open_clip architecture name")
    clip_pretrained: str = field("openai", "open_clip pretrained tag, or a local checkpoint file (models: pretrained)")
    clip_quick_gelu: bool = field(True, "QuickGELU activations: the OpenAI CLIP weights need them (open_clip only warns when they are off); false for LAION/DataComp weights")
    local_files_only: bool = field(False, "never reach the hub; use the local cache or folders only", identity=False)

    # --- synthesis (docs/hyperparameters.md §2) ----------------------------------------------
    synth_method: str = field("datadream", "the generation method: a name from datadream_lib.methods.METHODS; its own parameters (sampler, resolution, ...) are its group, in its module")
    images_per_class: int = field(500, "synthetic images per class (at most 100,000: the engine plans every image of a run in memory)", min=1, max=100_000)
    synth_batch_size: Optional[int] = field(None, "images per UNet batch (unset: from the GPU's free memory, at most 64; 10 on a CPU): shards and resumes are bit-identical at a fixed batch size; another size changes pixels by roundoff only (recorded per image)", min=1, max=SYNTH_BATCH_MAX, identity=False)
    channels_last: Optional[bool] = field(None, "the UNet and VAE in channels_last layout for cuDNN (adaptation, synthesis); unset: on a CUDA GPU (roundoff only, recorded)", identity=False)
    compile: Optional[bool] = field(None, "torch.compile the UNet (adaptation, synthesis) and the VAE decoder (synthesis); unset: on a CUDA GPU when the stage is long enough to pay the compile back (roundoff only, recorded per image and per adapter)", identity=False)
    shard_index: int = field(0, "this process's shard of the synthesis jobs (and of the classes of a per-class preparation: cls adapters, DA-Fusion's tokens, DISEF's captions)", min=0, identity=False)
    num_shards: int = field(1, "number of shards", min=1, identity=False)
    allow_weights_change: bool = field(False, "resume a run with other pretrained weights (another revision or other files) than its weights/ records name (refused otherwise: its images would come from two models); each manifest row names its weights record", identity=False)
    allow_environment_change: bool = field(False, "resume a run under other versions of torch, diffusers, transformers, peft or open_clip than it was last written with (refused otherwise: images and weights change); each manifest row and adapter.json names the environment it was made under", identity=False)

    # --- classifier (docs/hyperparameters.md §3) ---------------------------------------------
    clf_settings: list = field(list(CLASSIFIER_SETTINGS), "classifier settings to run", choices=CLASSIFIER_SETTINGS)
    ablation_select: list = field([], "this process's cells of the ablations, e.g. [n100, k4] (images per class n, shots k; empty: all, and the table); a launcher unit per cell", identity=False)
    clf_select: list = field([], "this process's classifier settings, a subset of clf_settings (empty: all); the stage is done once every setting is (a launcher unit per setting)", choices=CLASSIFIER_SETTINGS, identity=False)
    clf_epochs: int = field(10, "classifier epochs (authors' scripts: 10)", min=1)
    clf_warmup_epochs: int = field(3, "linear warm-up epochs (authors' scripts: 3)", min=0)
    clf_batch_size: int = field(64, "classifier batch size, drawn from the pool of synthetic images and repeated real shots", min=1)
    clf_lr: float = field(1e-4, "AdamW learning rate", min=0.0)
    clf_min_lr: float = field(1e-8, "floor of the cosine schedule", min=0.0)
    clf_weight_decay: float = field(1e-4, "AdamW weight decay", min=0.0)
    clf_lora_rank: int = field(16, "LoRA rank on Q and V of both CLIP towers", min=1)
    clf_lora_alpha: int = field(32, "LoRA alpha", min=1)
    clf_lora_dropout: float = field(0.1, "LoRA dropout", min=0.0, max=1.0)
    real_loss_weight: float = field(0.8, "lambda of eq. 4: weight of the real loss in synthetic_real", min=0.0, max=1.0)
    clf_blur: str = field("gaussian", "the augmentation's blur: 'gaussian' (a true Gaussian of std sigma on an 11-px kernel, on the device) or 'pil' (the authors' PIL GaussianBlur(radius=sigma), on the host for the blurred images)", choices=("gaussian", "pil"))
    clf_augment: str = field("authors", "the training augmentation: 'authors' (their list, docs/hyperparameters.md §3) or 'crop_flip' (its random resized crop and flip only: no operation that changes a colour, for classes that are colours, as the toy world's)", choices=("authors", "crop_flip"))
    mix_aug_prob: float = field(0.0, "probability of CutMix-or-MixUp per step (one coin per batch); the authors' code has it at 0.2 but their released scripts run with it off", min=0.0, max=1.0)

    # --- FID analysis (docs/hyperparameters.md §5) -------------------------------------------
    fid_features: str = field("inception", "feature extractor: 'inception' (standard FID weights, the paper's), 'clip' (the run's CLIP image tower: the toy world's) or 'tiny' (a random net: offline checks only)", choices=FID_FEATURES)
    inception_weights: Optional[str] = field(None, "local path of pt_inception-2015-12-05-6726825d.pth; None = download")
    fid_real_set: str = field("train", "real images compared per class: all 'train' images or the 'shots'", choices=FID_REAL_SETS)

    # --- ablations (Fig. 5) --------------------------------------------------------------------
    ablation_images_per_class: list = field([100, 200, 300, 400, 500], "Fig. 5 left: synthetic images per class, drawn from one pool", min=1)
    ablation_shots: list = field([1, 2, 4, 8, 16], "Fig. 5 right: real shots; each re-runs adapt -> synthesize -> classify", min=1)
    ablation_settings: list = field(["synthetic", "synthetic_real", "real_finetune"], "classifier settings of the ablations (settings without synthetic images, e.g. Real-finetune, vary only with the real shots)", choices=CLASSIFIER_SETTINGS)

    # --- not parameters: the run's method group and what was given ------------------------------
    method: Any = dataclasses.field(default=None, repr=False, metadata={"internal": True})  # its group: p.method.<field>
    given_values: dict = dataclasses.field(default_factory=dict, repr=False, compare=False, metadata={"internal": True})
    # what was given and inherited, for every method (a copy for another method reads its values here)
    source_values: dict = dataclasses.field(default_factory=dict, repr=False, compare=False, metadata={"internal": True})
    base: str = dataclasses.field(default="paper", repr=False, compare=False, metadata={"internal": True})  # its root base (a method's preset)
    groups: Mapping = dataclasses.field(default_factory=dict, repr=False, compare=False, metadata={"internal": True})

    def value(self, name: str):
        """The value of parameter `name`, of the run or of its method's group, looked up by name
        (weights records, reports); code that knows which it reads writes `p.<field>` or `p.method.<field>`."""
        if name in FIELDS:
            return getattr(self, name)
        if name in {f.name for f in dataclasses.fields(self.method)}:
            return getattr(self.method, name)
        raise DataDreamError(f"{name!r} is neither a parameter of the run nor of synth_method "
                             f"{self.synth_method!r}'s group ({type(self.method).__name__})")

    def has(self, name: str) -> bool:
        """Whether `name` is a parameter of this run (of the run, or of its method's group)."""
        return name in FIELDS or name in {f.name for f in dataclasses.fields(self.method)}

    def to_dict(self) -> dict:
        """Every value the run uses (its method's defaults filled in): what params.yaml records."""
        core = {f.name: getattr(self, f.name) for f in core_fields()}
        return {**core, **dataclasses.asdict(self.method)}

    def to_yaml(self) -> str:
        """params.yaml: to_dict() as YAML, opened by a comment where the model preset is not
        'pretrained' (the weight names in the file are then not what the run loads)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if self.models in PRESET_WEIGHTS:
            text = (f"# models: {self.models}. This run loads {PRESET_WEIGHTS[self.models]}.\n"
                    f"# sd_model, clip_pretrained and a method's model fields name the weights of models: pretrained;\n"
                    f"# this run does not load them. What each stage loaded is in the run's weights/ records.\n") + text
        return text

    def given(self) -> dict:
        """The values as given (by the base and by hand): what a changed copy (another method,
        another K) starts from, and what the pipeline hands a notebook."""
        return dict(self.given_values)

    def identity(self) -> dict:
        """The values that define what a run computes (not how it is executed)."""
        core = {f.name: getattr(self, f.name) for f in core_fields() if f.metadata["identity"]}
        return {**core, **{f.name: getattr(self.method, f.name) for f in dataclasses.fields(self.method) if f.metadata["identity"]}}

    def replace(self, groups: Optional[Mapping[str, type]] = None, **changes) -> "Params":
        """A copy with `changes`; a method default follows the copy's method and K. Values given for
        the old method's group that the new method does not have are dropped."""
        return build(changes, self.source_values, groups or self.groups, self.base)

    @property
    def max_shots(self) -> int:
        """How many shots per class the split file stores: enough for every ablation, at least 16."""
        return max([self.shots, 16, *self.ablation_shots])


DEMO: dict[str, Any] = {
    "run_name": "demo",
    "dataset": "toy",
    "models": "tiny",
    "shots": 4,
    "images_per_class": 8,
    "synth_batch_size": 8,
    "clf_epochs": 3,
    "clf_warmup_epochs": 1,
    "clf_batch_size": 16,
    "clf_lr": 1e-3,
    "num_workers": 0,
    "fid_features": "tiny",
    "ablation_images_per_class": [4, 8],
    "ablation_shots": [1, 2],
    "ablation_settings": ["synthetic_real", "real_finetune"],
}
# The miniature world (datadream_lib/toyworld/world.py): tiny models pretrained on a generated world, a
# target whose look that world lacks; sized so `make demo` runs every stage in a few minutes on 2 cores.
TOYWORLD: dict[str, Any] = {
    **DEMO,
    "run_name": "toyworld",
    "dataset": "toyworld",
    "models": "toy",
    "images_per_class": 40,
    "clf_epochs": 20,  # 5 epochs (25 steps on 160 images) left the synthetic-only classifiers near zero-shot: docs/toyworld.md
    "clf_warmup_epochs": 1,
    "clf_batch_size": 32,
    "clf_augment": "crop_flip",  # the classes are colours: the authors' colour operations erase them (train loss stayed at ln 4): docs/toyworld.md
    "ablation_images_per_class": [20, 40],
    "ablation_shots": [2],  # with K = 4 itself, Fig. 5's two points; each further K adapts and generates again (make demo < 5 min)
    "fid_features": "clip",  # its own CLIP's image tower, trained on the toy world (as Inception on natural images)
}
# The smallest run that still goes through every stage of every method (the test suite's size, and a
# quick check of an installation): the demo, smaller; each method group's own "smoke" sizes
# (fewer sampler steps, adapter epochs, inversion steps, filter batches) are in its PRESETS.
SMOKE: dict[str, Any] = {
    **DEMO,
    "run_name": "smoke",
    "images_per_class": 4,
    "synth_batch_size": 2,
    "clf_epochs": 2,
    "ablation_images_per_class": [2, 4],
    "ablation_shots": [1],
}
BASES: dict[str, dict[str, Any]] = {"paper": {}, "demo": DEMO, "toyworld": TOYWORLD, "smoke": SMOKE}
# A base's values are DEMO's and its own; a method group's PRESETS are read along the same chain.
BASE_CHAIN = {"paper": ("paper",), "demo": ("demo",), "toyworld": ("demo", "toyworld"), "smoke": ("demo", "smoke")}


def group_preset(group: type, base: str) -> dict[str, Any]:
    """A method group's own values for a base: the class attribute PRESETS ({base: {field: value}})
    of the group and of the groups it extends (its own over theirs), the toy world's over the demo's.
    The bases hold the run's fields only."""
    values: dict[str, Any] = {}
    for name in BASE_CHAIN.get(base, ()):
        for cls in reversed(group.__mro__):
            values.update(cls.__dict__.get("PRESETS", {}).get(name, {}))
    return values


def core_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Params) if not f.metadata.get("internal")]


FIELDS = {f.name: f for f in core_fields()}


def group_fields(group: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(group)}


def group_defaults(group: type, shots: int) -> dict:
    """A method group's values for a run of K shots where nothing is given (its defaults as data)."""
    out = {}
    for f in dataclasses.fields(group):
        by_shots = f.metadata.get("by_shots")
        out[f.name] = by_shots(shots) if by_shots else (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
    return out


def owners(name: str, groups: Mapping[str, type]) -> list[str]:
    """The methods whose group has parameter `name`."""
    return [method for method, group in groups.items() if name in group_fields(group)]


def build(given: dict, inherited: dict, groups: Mapping[str, type], base: str = "paper") -> Params:
    """One run's Params from the values `given` by hand (each must be a parameter of the run or of
    its method's group) over `inherited` ones (a base's: a key of another method's group is dropped,
    since a base serves every method), over the method group's own preset for `base` (`group_preset`).
    `groups`: {method name: its parameter group}."""
    every = set(FIELDS).union(*(group_fields(g) for g in groups.values()))
    for source in (inherited, given):
        for key in source:
            if key not in every:
                raise DataDreamError(f"unknown parameter '{key}'.{_nearest(key, every)} The run's parameters are in "
                                     f"datadream_lib/schema.py, each method's in its module (datadream_lib/methods/).")
    method = given.get("synth_method", inherited.get("synth_method", FIELDS["synth_method"].default))
    if method not in groups:
        raise DataDreamError(f"parameter 'synth_method': {method!r} is unknown; valid methods: {sorted(groups)}."
                             f"{_nearest(str(method), groups)}")
    group = groups[method]
    mine = group_fields(group)
    for key in given:
        if key not in FIELDS and key not in mine:
            raise DataDreamError(f"parameter '{key}' belongs to synth_method {' / '.join(map(repr, owners(key, groups)))}, not to "
                                 f"this run's {method!r} (each method's parameters are in its module, datadream_lib/methods/). "
                                 f"Remove it, or set synth_method to a method that has it.")
    merged = {**group_preset(group, base), **{k: v for k, v in inherited.items() if k in FIELDS or k in mine}, **given}
    core = {name: _check_value(name, value, FIELDS[name], Params) for name, value in merged.items() if name in FIELDS}
    p = Params(**core)
    shots = p.shots
    values = group_defaults(group, shots)
    values.update({name: _check_value(name, value, mine[name], group) for name, value in merged.items() if name in mine})
    p = dataclasses.replace(p, method=group(**values))
    sources = {**inherited, **given}
    if "{" in p.run_name or "}" in p.run_name:
        p = dataclasses.replace(p, run_name=_format_run_name(p.run_name, p.to_dict()))
        merged["run_name"] = sources["run_name"] = literal_braces(p.run_name)  # formatted once: braces left are plain
    check_run_name(p.run_name)
    p = dataclasses.replace(p, given_values=merged, source_values=sources, groups=groups, base=base)  # what `replace` builds from
    _check_consistency(p)
    return p


def _nearest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@functools.cache
def _type_hints(owner: type) -> dict[str, Any]:
    """A dataclass's field types, evaluated once (planning Table 1's grid checks about 17,000 values)."""
    return typing.get_type_hints(owner)


def _check_value(name: str, value: Any, field: dataclasses.Field, owner: type) -> Any:
    meta = field.metadata
    hint = _type_hints(owner)[name]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    base_type = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    where = f"parameter '{name}'"
    if value is None:
        if optional:
            return None
        raise DataDreamError(f"{where} is empty; give a value ({meta['help']}).")
    if base_type is list:
        default_items = field.default_factory()
        if not isinstance(value, (list, tuple)) or (not value and default_items):  # empty only where that is the default
            raise DataDreamError(f"{where} must be a non-empty list, got {value!r}.")
        items = list(value)
        item_type = type(default_items[0]) if default_items else str
        for item in items:
            if not isinstance(item, item_type) or isinstance(item, bool):
                raise DataDreamError(f"{where}: {item!r} is not a {item_type.__name__}.")
            _check_range(where, item, meta)
            if meta.get("check"):
                meta["check"](item, where)
        return items
    if base_type is bool:
        if not isinstance(value, bool):
            raise DataDreamError(f"{where} must be true or false, got {value!r}.")
        return value
    if base_type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataDreamError(f"{where} must be an integer, got {value!r}.")
    elif base_type is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 (PyYAML) reads 1e-4, with no dot, as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataDreamError(f"{where} must be a number, got {value!r}.")
        value = float(value)
        if not math.isfinite(value):
            raise DataDreamError(f"{where} must be a finite number, got {value!r} ({meta['help']}).")
    elif base_type is str:
        if isinstance(value, dict):  # YAML reads an unquoted {name} as a mapping
            raise DataDreamError(f"{where} must be a string, got the mapping {value!r}; quote a value with braces, "
                                 f"e.g. run_name: \"eurosat_seed{{seed}}\" (or --set 'run_name=\"eurosat_seed{{seed}}\"').")
        if not isinstance(value, str) or not value:
            raise DataDreamError(f"{where} must be a non-empty string, got {value!r}.")
    _check_range(where, value, meta)
    if meta.get("check"):
        meta["check"](value, where)
    return value


def _check_range(where: str, value: Any, meta: dict) -> None:
    if meta["choices"] is not None and value not in meta["choices"]:
        raise DataDreamError(f"{where}: {value!r} is not one of {list(meta['choices'])}.{_nearest(str(value), meta['choices'])}")
    if meta["min"] is not None and value < meta["min"]:
        raise DataDreamError(f"{where} must be >= {meta['min']}, got {value!r} ({meta['help']}).")
    if meta["max"] is not None and value > meta["max"]:
        raise DataDreamError(f"{where} must be <= {meta['max']}, got {value!r} ({meta['help']}).")


def literal_braces(name: str) -> str:
    """A formatted run name as a template that formats to itself (`x{seed}` -> `x{{seed}}`)."""
    return name.replace("{", "{{").replace("}", "}}")


def _format_run_name(template: str, values: dict) -> str:
    """`run_name` with `{parameter}` (or `{parameter:spec}`) replaced by plain parameter values only."""
    out = []
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise DataDreamError(f"run_name {template!r}: {exc}; write braces as '{{seed}}'.") from None
    for literal, field, spec, conversion in parts:
        out.append(literal)
        if field is None:
            continue
        if field not in values or conversion:
            raise DataDreamError(f"run_name {template!r}: '{{{field}}}' is not a parameter name; braces may hold "
                                 f"parameter names only, e.g. 'eurosat_{{variant}}_seed{{seed}}'.{_nearest(re.split(r'[.[]', field)[0], values)}")
        try:
            out.append(format(values[field], spec or ""))
        except (ValueError, TypeError) as exc:
            raise DataDreamError(f"run_name {template!r}: cannot format {field} with {spec!r} ({exc}).") from None
    return "".join(out)


def _check_consistency(p: Params) -> None:
    from datadream_lib import datasets  # a registry; imported late to keep this module light

    if p.dataset not in datasets.DATASETS:
        raise DataDreamError(f"parameter 'dataset': {p.dataset!r} is unknown; valid datasets: {sorted(datasets.DATASETS)}."
                             f"{_nearest(p.dataset, datasets.DATASETS)}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", p.device):
        raise DataDreamError(f"parameter 'device': {p.device!r} is not a device; use 'auto' (a CUDA GPU if there is one), "
                             f"'cpu', 'cuda' or 'cuda:N'.")
    known = [f"n{n}" for n in p.ablation_images_per_class] + [f"k{k}" for k in p.ablation_shots]
    unknown = [c for c in p.ablation_select if c not in known]
    if unknown:
        raise DataDreamError(f"ablation_select {unknown} names no cell of the ablations; they are {known} "
                             f"(n<images per class> of ablation_images_per_class, k<shots> of ablation_shots).")
    if set(p.clf_select) - set(p.clf_settings):
        raise DataDreamError(f"clf_select {p.clf_select} must be a subset of clf_settings {p.clf_settings}.")
    if p.shard_index >= p.num_shards:
        raise DataDreamError(f"shard_index {p.shard_index} must be < num_shards {p.num_shards} (shards are numbered from 0).")
    if p.clf_warmup_epochs >= p.clf_epochs and p.clf_epochs > 1:
        raise DataDreamError(f"clf_warmup_epochs ({p.clf_warmup_epochs}) must be below clf_epochs ({p.clf_epochs}).")
    too_many = [n for n in p.ablation_images_per_class if n > p.images_per_class]
    if too_many:
        raise DataDreamError(f"ablation_images_per_class {too_many} exceed images_per_class ({p.images_per_class}): "
                             f"the ablation draws from one generated pool; raise images_per_class or lower the grid.")
    if p.models == "pretrained" and p.fid_features == "tiny":
        raise DataDreamError("fid_features 'tiny' is a random network for offline checks; with pretrained models use 'inception'.")
