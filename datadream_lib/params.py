"""Every parameter of a DataDream run: one typed, validated definition, with the paper defaults.

The defaults are the paper's settings as `../shared/reference/hyperparameters.md` ("follow")
states them. A parameter file or a notebook's `parameters` cell sets any subset; unset names take
the values of the file's `base`:

    base: paper   the dataclass defaults below (Stable Diffusion 2.1-base, CLIP ViT-B/16, 500 images)
    base: demo    the tiny offline default: random tiny models of the same classes, the toy dataset

A parameter file may also name another file as its base (`base: fgvc_aircraft_dset.yaml`, relative
to itself) and list several seeds (`seeds: [0, 1, 2]`); `load_runs` expands it into one run per
seed. `run_name` may hold any parameter in braces (`eurosat_dset_seed{seed}`).

Unknown keys and bad values stop the run before any model is built, naming the key and, for a
typo, the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import string
import types
import typing
from pathlib import Path
from typing import Any, Optional

import yaml

from datadream_lib.errors import DataDreamError
from datadream_lib.runs import check_run_name
from datadream_lib.stages import NAMES as STAGES

CLASSIFIER_SETTINGS = ("zero_shot", "real_finetune", "synthetic", "synthetic_real")
MODEL_PRESETS = ("pretrained", "tiny", "full_random")
VARIANTS = ("dset", "cls")
SCHEDULERS = ("pndm", "ddim", "dpmsolver++", "euler", "euler_ancestral", "ddpm", "unipc")
FID_FEATURES = ("inception", "tiny")
FID_REAL_SETS = ("train", "shots")
PRECISIONS = ("auto", "bf16", "fp16", "no")
CLASS_NAMES = ("authors", "coop")
SYNTH_BATCH_MAX = 64  # the largest generation batch, and the chunk of images a synthesis shard owns


def _field(default, help: str, *, choices=None, min=None, max=None, identity: bool = True):
    """A parameter. `identity=False` marks how a run executes, not what it computes."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "identity": identity}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Params:
    # --- the run -------------------------------------------------------------------------------
    run_name: str = _field("datadream", "folder name of the run under runs_root")
    runs_root: str = _field("runs", "where run folders live; relative paths are taken from the project root", identity=False)
    seed: int = _field(0, "seeds the few-shot draw, LoRA init, training order and every synthetic image", min=0)
    device: str = _field("auto", "'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'", identity=False)
    mixed_precision: str = _field("auto", "'auto' = bf16 autocast on GPU (fp32 LoRA weights), fp32 on CPU", choices=PRECISIONS)
    num_workers: int = _field(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
                              "data-loader worker processes for the classifier (default: the CPU cores this process may use)",
                              min=0, identity=False)
    stages: list = _field(list(STAGES), "the stages the pipeline runs, in order (Table 1 runs leave out 'ablations')", choices=STAGES, identity=False)

    # --- data (hyperparameters.md section 4) ---------------------------------------------------
    dataset: str = _field("toy", "a name from datadream_lib.datasets.DATASETS")
    data_root: str = _field("data", "the folder holding the datasets in torchvision's layout (the ImageFolder root for 'imagefolder')", identity=False)
    download: bool = _field(False, "let torchvision download the dataset if it is missing", identity=False)
    shots: int = _field(16, "K real images per class", min=1)
    split_seed: int = _field(0, "seeds the val/test carve-outs of datasets without those splits; kept fixed across run seeds so every seed is tested on the same images", min=0)
    val_fraction: float = _field(0.1, "share of train carved out (seeded) as validation where a dataset has no val split", min=0.01, max=0.5)
    test_fraction: float = _field(0.2, "share carved out as test where a dataset has no test split", min=0.01, max=0.5)
    class_names: str = _field("authors", "'authors': the class names of the authors' code, behind Table 1 (EuroSAT 'AnnualCrop', Stanford Cars with the year last); 'coop': CoOp's names ('Annual Crop Land', year first)", choices=CLASS_NAMES)
    skip_corrupt_images: bool = _field(False, "skip unreadable images (each is logged) instead of stopping")

    # --- models (hyperparameters.md sections 1, 3) ----------------------------------------------
    models: str = _field("pretrained", "'pretrained' weights, 'tiny' random offline models, or 'full_random' full-size architectures with random weights", choices=MODEL_PRESETS)
    sd_model: str = _field("stabilityai/stable-diffusion-2-1-base", "hub id or local folder of Stable Diffusion (models: pretrained)")
    clip_model: str = _field("ViT-B-16", "open_clip architecture name")
    clip_pretrained: str = _field("openai", "open_clip pretrained tag, or a local checkpoint file (models: pretrained)")
    clip_quick_gelu: bool = _field(True, "QuickGELU activations: the OpenAI CLIP weights need them (open_clip only warns when they are off); false for LAION/DataComp weights")
    local_files_only: bool = _field(False, "never reach the hub; use the local cache or folders only", identity=False)

    # --- DataDream adaptation (hyperparameters.md section 1) -----------------------------------
    variant: str = _field("dset", "'dset': one adapter for the dataset; 'cls': one per class, adapt_epochs over its K shots", choices=VARIANTS)
    resolution: int = _field(512, "training and generation resolution in pixels", min=8)
    adapt_epochs: int = _field(200, "epochs over the few-shot set (dset) or over each class's shots (cls): equal compute at 8 and 16 shots", min=1)
    adapt_batch_size: int = _field(8, "adaptation batch size", min=1)
    adapt_lr: float = _field(1e-4, "AdamW learning rate", min=0.0)
    adapt_weight_decay: float = _field(1e-2, "AdamW weight decay", min=0.0)
    adapt_warmup_steps: int = _field(100, "linear warm-up steps before the cosine decay", min=0)
    adapt_max_grad_norm: float = _field(1.0, "gradient-norm clip", min=0.0)
    adapt_lora_rank: int = _field(16, "LoRA rank r on q, k, v, out", min=1)
    adapt_lora_alpha: int = _field(16, "LoRA alpha (scale alpha / r = 1)", min=1)
    adapt_train_text_encoder: bool = _field(True, "LoRA on the text encoder as well as the UNet")

    # --- synthesis (hyperparameters.md section 2) ----------------------------------------------
    synth_method: str = _field("datadream", "the generation method: a name from datadream_lib.methods.METHODS")
    images_per_class: int = _field(500, "synthetic images per class", min=1)
    # unset (None): the method's own value (DataDream: PNDM, 50, 2.0; IsSynth: PNDM, 50, 3.0, strength
    # by K; DISEF: DPM-Solver++, 20, 8.0, 0.75); the values used are recorded in the run's params.yaml
    num_inference_steps: Optional[int] = _field(None, "sampler steps (unset: the method's)", min=1)
    guidance_scale: Optional[float] = _field(None, "classifier-free guidance scale (unset: the method's)", min=0.0)
    scheduler: Optional[str] = _field(None, f"sampler: one of {list(SCHEDULERS)} or any diffusers scheduler class name, e.g. 'KDPM2DiscreteScheduler' (unset: the method's)")
    strength: Optional[float] = _field(None, "img2img methods: how far a real shot is noised before denoising, 0-1 (unset: the method's; IsSynth: by K)", min=0.0, max=1.0)
    filter_rule: str = _field("class", "DISEF: how rejected images are replaced. 'class' (the authors'): each class draws candidates in batches of 8 (source shots at random, captions shuffled within the batch) and keeps those the CLIP filter assigns to it until filter_budget batches are spent, then keeps the rest unfiltered; 'image': each image is retried up to filter_attempts times with new noise, then its most probable attempt is kept", choices=("class", "image"))
    filter_budget: int = _field(100, "DISEF, filter_rule 'class': batches of 8 candidates a class may spend on the filter before it keeps the rest unfiltered (the authors: 100; 0 = no filter)", min=0)
    filter_attempts: int = _field(12, "DISEF, filter_rule 'image': attempts per image until the CLIP filter assigns it to its class (then the most probable attempt is kept)", min=1)
    caption_model: str = _field("llava-hf/llava-1.5-7b-hf", "DISEF: the captioner, a hub id or local folder of a transformers LLaVA model (models: pretrained)")
    caption_max_tokens: int = _field(120, "DISEF: the longest caption LLaVA may write, in its tokens", min=1)
    filter_model: str = _field("ViT-H-14", "DISEF: the open_clip architecture of the CLIP filter")
    filter_pretrained: str = _field("laion2b_s32b_b79k", "DISEF: the filter's open_clip pretrained tag, or a local checkpoint file (models: pretrained)")
    synth_batch_size: Optional[int] = _field(None, "images per UNet batch (unset: from the GPU's free memory, at most 64; 10 on a CPU): shards and resumes are bit-identical at a fixed batch size; another size changes pixels by roundoff only (recorded per image)", min=1, max=SYNTH_BATCH_MAX, identity=False)
    synth_fuse_lora: bool = _field(True, "DataDream: fuse the adapter into the attention weights while generating (faster; pixels change by roundoff only, recorded per image)", identity=False)
    synth_fuse_qkv: bool = _field(True, "one matmul for the UNet's q, k, v projections (k, v in cross-attention) while generating; with synth_fuse_lora off it is off (roundoff only, recorded per image)", identity=False)
    channels_last: Optional[bool] = _field(None, "the UNet and VAE in channels_last layout for cuDNN (adaptation, synthesis); unset: on a CUDA GPU (roundoff only, recorded)", identity=False)
    compile: Optional[bool] = _field(None, "torch.compile the UNet (adaptation, synthesis) and the VAE decoder (synthesis); unset: on a CUDA GPU when the stage is long enough to pay the compile back (roundoff only, recorded per image and per adapter)", identity=False)
    shard_index: int = _field(0, "this process's shard of the synthesis jobs", min=0, identity=False)
    num_shards: int = _field(1, "number of synthesis shards", min=1, identity=False)
    allow_environment_change: bool = _field(False, "resume a run under other versions of torch, diffusers, transformers, peft or open_clip than it was last written with (refused otherwise: images and weights change); each manifest row and adapter.json names the environment it was made under", identity=False)

    # --- classifier (hyperparameters.md section 3) ---------------------------------------------
    clf_settings: list = _field(list(CLASSIFIER_SETTINGS), "classifier settings to run", choices=CLASSIFIER_SETTINGS)
    clf_epochs: int = _field(10, "classifier epochs (authors' scripts: 10)", min=1)
    clf_warmup_epochs: int = _field(3, "linear warm-up epochs (authors' scripts: 3)", min=0)
    clf_batch_size: int = _field(64, "classifier batch size, drawn from the pool of synthetic images and repeated real shots", min=1)
    clf_lr: float = _field(1e-4, "AdamW learning rate", min=0.0)
    clf_min_lr: float = _field(1e-8, "floor of the cosine schedule", min=0.0)
    clf_weight_decay: float = _field(1e-4, "AdamW weight decay", min=0.0)
    clf_lora_rank: int = _field(16, "LoRA rank on Q and V of both CLIP towers", min=1)
    clf_lora_alpha: int = _field(32, "LoRA alpha", min=1)
    clf_lora_dropout: float = _field(0.1, "LoRA dropout", min=0.0, max=1.0)
    real_loss_weight: float = _field(0.8, "lambda of eq. 4: weight of the real loss in synthetic_real", min=0.0, max=1.0)
    clf_teacher_weight: float = _field(0.0, "IsSynth's classifier option: weight of a soft cross-entropy on the synthetic samples towards the frozen zero-shot CLIP (0 = off, as in Table 1; the authors: 0.5)", min=0.0)
    clf_teacher_temperature: float = _field(2.0, "temperature of that soft cross-entropy (the authors: 2)", min=0.01)
    clf_blur: str = _field("gaussian", "the augmentation's blur: 'gaussian' (a true Gaussian of std sigma on an 11-px kernel, on the device) or 'pil' (the authors' PIL GaussianBlur(radius=sigma), on the host for the blurred images)", choices=("gaussian", "pil"))
    mix_aug_prob: float = _field(0.0, "probability of CutMix-or-MixUp per step (one coin per batch); the authors' code has it at 0.2 but their released scripts run with it off", min=0.0, max=1.0)

    # --- FID analysis (hyperparameters.md section 5) -------------------------------------------
    fid_features: str = _field("inception", "feature extractor: 'inception' (standard FID weights) or 'tiny'", choices=FID_FEATURES)
    inception_weights: Optional[str] = _field(None, "local path of pt_inception-2015-12-05-6726825d.pth; None = download")
    fid_real_set: str = _field("train", "real images compared per class: all 'train' images or the 'shots'", choices=FID_REAL_SETS)

    # --- ablations (Fig. 5) --------------------------------------------------------------------
    ablation_images_per_class: list = _field([100, 200, 300, 400, 500], "Fig. 5 left: synthetic images per class, drawn from one pool", min=1)
    ablation_shots: list = _field([1, 2, 4, 8, 16], "Fig. 5 right: real shots; each re-runs adapt -> synthesize -> classify", min=1)
    ablation_settings: list = _field(["synthetic", "synthetic_real", "real_finetune"], "classifier settings of the ablations (settings without synthetic images, e.g. Real-finetune, vary only with the real shots)", choices=CLASSIFIER_SETTINGS)

    def to_dict(self) -> dict:
        """Every value the run uses (a method's defaults filled in): what params.yaml records."""
        return dataclasses.asdict(self)

    def given(self) -> dict:
        """The values as set, with those the method filled left unset (None): what a changed copy
        (another method, another K) starts from."""
        return {**self.to_dict(), **{name: None for name in getattr(self, "_from_method", ())}}

    def identity(self) -> dict:
        """The values that define what a run computes (not how it is executed)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["identity"]}

    def replace(self, **changes) -> "Params":
        """A copy with `changes`; a method default follows the copy's method and K."""
        return from_dict({**self.given(), **changes}, base="paper")

    @property
    def max_shots(self) -> int:
        """How many shots per class the split file stores: enough for every ablation, at least 16."""
        return max([self.shots, 16, *self.ablation_shots])


# The tiny offline default: same classes and code paths as the paper, small numbers.
DEMO: dict[str, Any] = {
    "run_name": "demo",
    "dataset": "toy",
    "models": "tiny",
    "resolution": 32,
    "shots": 4,
    "adapt_epochs": 6,
    "adapt_batch_size": 4,
    "adapt_warmup_steps": 2,
    "adapt_lr": 1e-3,
    "images_per_class": 8,
    "num_inference_steps": 20,
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
    "caption_max_tokens": 12,
}
BASES: dict[str, dict[str, Any]] = {"paper": {}, "demo": DEMO}

FIELDS = {f.name: f for f in dataclasses.fields(Params)}
# Names a notebook's namespace holds that are not parameters.
_NOTEBOOK_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def _nearest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def _check_value(name: str, value: Any) -> Any:
    field = FIELDS[name]
    meta = field.metadata
    hint = typing.get_type_hints(Params)[name]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    base_type = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    where = f"parameter '{name}'"
    if value is None:
        if optional:
            return None
        raise DataDreamError(f"{where} is empty; give a value ({meta['help']}).")
    if base_type is list:
        if not isinstance(value, (list, tuple)) or not value:
            raise DataDreamError(f"{where} must be a non-empty list, got {value!r}.")
        items = list(value)
        default_items = field.default_factory()
        item_type = type(default_items[0])
        for item in items:
            if not isinstance(item, item_type) or isinstance(item, bool):
                raise DataDreamError(f"{where}: {item!r} is not a {item_type.__name__}.")
            _check_range(where, item, meta)
        return items
    if base_type is bool:
        if not isinstance(value, bool):
            raise DataDreamError(f"{where} must be true or false, got {value!r}.")
        return value
    if base_type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataDreamError(f"{where} must be an integer, got {value!r}.")
    elif base_type is float:
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
    return value


def _check_range(where: str, value: Any, meta: dict) -> None:
    if meta["choices"] is not None and value not in meta["choices"]:
        raise DataDreamError(f"{where}: {value!r} is not one of {list(meta['choices'])}.{_nearest(str(value), meta['choices'])}")
    if meta["min"] is not None and value < meta["min"]:
        raise DataDreamError(f"{where} must be >= {meta['min']}, got {value!r} ({meta['help']}).")
    if meta["max"] is not None and value > meta["max"]:
        raise DataDreamError(f"{where} must be <= {meta['max']}, got {value!r} ({meta['help']}).")


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


def find_params_file(name: str) -> Path:
    """A parameter file named as a `base`: a path as given (absolute, or from the project root), else
    the one file of that name under params/ (papermill's `-f` does not say where a file came from)."""
    from datadream_lib.runs import project_root

    given = Path(name).expanduser()
    root = project_root()
    for candidate in ([given] if given.is_absolute() else [root / given, root / "params" / given]):
        if candidate.is_file():
            return candidate
    found = sorted((root / "params").rglob(given.name))
    if len(found) == 1:
        return found[0]
    where = f"several files under params/ are named {given.name}: {[str(f) for f in found]}" if found else \
        f"no file of that name is under {root / 'params'}"
    raise DataDreamError(f"parameter 'base': {name!r} is neither 'paper', 'demo' nor a parameter file: {where}. "
                         f"Give its path from the project root, e.g. 'params/paper/{given.name}'.")


def from_dict(values: dict, base: Optional[str] = None) -> Params:
    """Validate `values` over the defaults of `base` (or of values['base'], else 'paper'). A base
    that names a parameter file (`fgvc_aircraft_dset.yaml`) takes that file's values first."""
    values = dict(values)
    base = values.pop("base", base) or "paper"
    if isinstance(base, str) and base.endswith((".yaml", ".yml")):
        inherited = read_file(find_params_file(base))
        if "seed" in values:
            inherited.pop("seeds", None)
        values = {**inherited, **values}
        base = values.pop("base", None) or "paper"
    seeds = values.pop("seeds", None)
    if seeds is not None and "seed" not in values:
        raise DataDreamError(f"the parameters list seeds {seeds}, and a notebook runs one seed: pass `-p seed N`, or run "
                             f"all seeds with `python -m datadream_lib.pipeline FILE`.")
    if base not in BASES:
        raise DataDreamError(f"parameter 'base': {base!r} is not one of {list(BASES)}.{_nearest(str(base), BASES)}")
    for key in values:
        if key not in FIELDS:
            raise DataDreamError(f"unknown parameter '{key}'.{_nearest(key, FIELDS)} "
                                 f"The valid names are listed in datadream_lib/params.py.")
    merged = {**BASES[base], **values}
    checked = {name: _check_value(name, value) for name, value in merged.items()}
    params = Params(**checked)
    if "{" in params.run_name or "}" in params.run_name:
        params = dataclasses.replace(params, run_name=_format_run_name(params.run_name, params.to_dict()))
    check_run_name(params.run_name)
    params = _fill_method_defaults(params)
    _check_consistency(params)
    return params


def _fill_method_defaults(p: Params) -> Params:
    """The method's sampler, steps, guidance and strength where they are unset (remembered, so that
    `replace` and `given` can tell them from values set by hand)."""
    from datadream_lib.methods import GENERATION_PARAMETERS, METHODS

    if p.synth_method not in METHODS:
        raise DataDreamError(f"parameter 'synth_method': {p.synth_method!r} is unknown; valid methods: {sorted(METHODS)}."
                             f"{_nearest(p.synth_method, METHODS)}")
    defaults = METHODS[p.synth_method].defaults(p.shots)
    if p.strength is not None and defaults.get("strength") is None:
        raise DataDreamError(f"parameter 'strength' ({p.strength}) applies to img2img methods; synth_method "
                             f"{p.synth_method!r} generates from text. Remove it, or pick an img2img method "
                             f"(e.g. issynth).")
    filled = {name: defaults.get(name) for name in GENERATION_PARAMETERS if getattr(p, name) is None}
    out = dataclasses.replace(p, **filled)
    object.__setattr__(out, "_from_method", tuple(filled))
    return out


def _check_consistency(p: Params) -> None:
    from datadream_lib import datasets  # a registry; imported late to keep this module light

    if p.dataset not in datasets.DATASETS:
        raise DataDreamError(f"parameter 'dataset': {p.dataset!r} is unknown; valid datasets: {sorted(datasets.DATASETS)}."
                             f"{_nearest(p.dataset, datasets.DATASETS)}")
    if p.scheduler not in SCHEDULERS and not _is_diffusers_scheduler(p.scheduler):
        raise DataDreamError(f"parameter 'scheduler': {p.scheduler!r} is neither one of {list(SCHEDULERS)} nor a diffusers "
                             f"scheduler class.{_nearest(p.scheduler, SCHEDULERS)}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", p.device):
        raise DataDreamError(f"parameter 'device': {p.device!r} is not a device; use 'auto' (a CUDA GPU if there is one), "
                             f"'cpu', 'cuda' or 'cuda:N'.")
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


def _is_diffusers_scheduler(name: str) -> bool:
    import diffusers

    return name.endswith("Scheduler") and hasattr(diffusers, name)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DataDreamError(f"parameter '{key}' is set twice (line {key_node.start_mark.line + 1}); keep one.")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_file(path: str | Path, _chain: tuple = ()) -> dict:
    """The raw values of a YAML parameter file, over those of the file it names as `base`."""
    path = Path(path)
    if path.is_dir():
        raise DataDreamError(f"parameter file {str(path)!r} is a folder; give a .yaml file, e.g. params/demo.yaml.")
    if not path.is_file():
        raise DataDreamError(f"parameter file {str(path)!r} does not exist; the files shipped are under params/.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataDreamError(f"parameter file {str(path)!r} is not a text file; give a YAML file of name: value lines.") from None
    try:
        values = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise DataDreamError(f"parameter file {str(path)!r} is not valid YAML: {exc}") from None
    except DataDreamError as exc:
        raise DataDreamError(f"parameter file {str(path)!r}: {exc}") from None
    if not isinstance(values, dict):
        raise DataDreamError(f"parameter file {str(path)!r} must hold a mapping of name: value.")
    base = values.get("base")
    if isinstance(base, str) and base.endswith((".yaml", ".yml")):
        parent = (path.parent / base).resolve()
        if parent in _chain:
            raise DataDreamError(f"parameter file {path} names itself as a base, through {[str(p) for p in _chain]}.")
        values = {**read_file(parent, (*_chain, path.resolve())), **{k: v for k, v in values.items() if k != "base"}}
    return values


def load_runs(path: str | Path, overrides: Optional[dict] = None) -> list[Params]:
    """The runs a parameter file describes: one per seed of `seeds`, else one. An override of
    `seed` replaces the file's `seeds`."""
    overrides = dict(overrides or {})
    values = {**read_file(path), **overrides}
    if "seed" in overrides:
        values.pop("seeds", None)
    seeds = values.pop("seeds", None)
    if seeds is None:
        return [from_dict(values)]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise DataDreamError(f"parameter 'seeds' must be a non-empty list of integers, got {seeds!r}.")
    if "seed" in values:
        raise DataDreamError(f"{path} sets both 'seed' and 'seeds'; keep one.")
    runs = [from_dict({**values, "seed": s}) for s in seeds]
    if len({p.run_name for p in runs}) < len(runs):
        raise DataDreamError(f"run_name {values.get('run_name')!r} is the same for every seed of {seeds}; put "
                             f"'{{seed}}' in it (e.g. 'eurosat_dset_seed{{seed}}').")
    return runs


def load_file(path: str | Path, overrides: Optional[dict] = None) -> Params:
    """Read a YAML parameter file of one run (and command-line overrides) into validated Params."""
    runs = load_runs(path, overrides)
    if len(runs) > 1:
        raise DataDreamError(f"{path} describes {len(runs)} runs (seeds); pick one with the override seed=N.")
    return runs[0]


def from_namespace(namespace: dict) -> Params:
    """Params from a notebook's globals after the `parameters` cell (and papermill's injected one).

    Every public name holding a plain value (str, number, bool, list, None) must be a parameter
    (or `base`): a typo in a papermill `-p` or `-f` key stops here, naming the nearest valid one.
    Objects the notebook makes later (Params, Run, tables, figures) are not plain and are ignored,
    so re-running a notebook's cells in JupyterLab works.
    """
    return from_dict(_plain_values(namespace))


def _plain_values(namespace: dict) -> dict:
    return {name: value for name, value in namespace.items()
            if not name.startswith("_") and name not in _NOTEBOOK_NAMES
            and isinstance(value, (str, int, float, bool, list, tuple, type(None)))}


def notebook_values(namespace: dict, allowed: dict) -> dict:
    """The parameters of a notebook that is not a pipeline stage: `allowed` maps each name to its
    default; any other plain name (a typo in `-p`) stops, naming the nearest valid one."""
    values = _plain_values(namespace)
    for key in values:
        if key not in allowed:
            raise DataDreamError(f"unknown parameter '{key}'.{_nearest(key, allowed)} This notebook takes {sorted(allowed)}.")
    return {**allowed, **values}


def dump(params: Params) -> str:
    return yaml.safe_dump(params.to_dict(), sort_keys=False)
