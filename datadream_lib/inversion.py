"""Textual inversion per class (DA-Fusion's preparation, Trabucco et al. ICLR 2024; docs/methods.md).

For each class a new token `<class_dir>` of n vectors is learned on Stable Diffusion's text encoder
from the class's K shots; nothing else changes. Only the token's vectors train: they are a small
fp32 parameter that replaces the embedding lookup's output wherever the token's ids appear (the
rest of the embedding table is never touched, so its other rows are unchanged bit for bit, as in
the authors' code, which restores them after every step). Two recipes (`inversion_recipe`):

    paper    the recipe the DA-Fusion author says produced the published numbers (their issue #24,
             `fine_tune_upstream.py`; the paper's section 6): 4 vectors from the class name,
             2000 steps, batch 8, lr 4e-3 (5e-4 scaled by the batch)
    scripts  what the repository's scripts run (`fine_tune.py`): 1 vector from "the", 1000 steps,
             batch 4, lr 2e-3

Each vector starts at the mean of the initializer's token embeddings (a class name of several BPE
tokens has no single row; the authors' code refuses it). Training: the shots stretched to the
resolution (bicubic), flipped with p 0.5, one of textual inversion's 27 templates per sample, the
shots drawn with replacement (the authors repeat them 100 times and shuffle); AdamW (0.9, 0.999),
weight decay 1e-2, constant lr; epsilon MSE at uniform timesteps (velocity where the scheduler
predicts v). Every draw comes from the class's seed. Saved per class as diffusers' textual-inversion
file (`learned_embeds.safetensors`, {token: tensor[n, d]}), which `load_textual_inversion` loads
into any diffusers pipeline, with `inversion.json` (steps, losses, its size and SHA-256): a class
whose file is missing or damaged is trained again, the others are kept.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import torch

from datadream_lib.progress import bar as progress_bar
from datadream_lib import models, runtime
from datadream_lib.diffusion import denoising_loss
from datadream_lib.errors import DataDreamError
from datadream_lib.files import read_json, write_json
from datadream_lib.runs import Run
from datadream_lib.splits import FewShotSplit, load_rgb

TOKEN_FILE = "learned_embeds.safetensors"
RECORD_FILE = "inversion.json"
RECIPES = {
    "paper": {"vectors": 4, "init": "class name", "steps": 2000, "batch_size": 8, "lr": 4e-3},
    "scripts": {"vectors": 1, "init": "the", "steps": 1000, "batch_size": 4, "lr": 2e-3},
}
# Textual inversion's object templates (the 27 of the original code, which DA-Fusion trains with).
TEMPLATES = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
)


def recipe(p) -> dict:
    """The run's inversion settings: its recipe's, each overridable by its own parameter."""
    base = RECIPES[p.method.inversion_recipe]
    return {"vectors": p.method.inversion_vectors or base["vectors"], "init": base["init"],
            "steps": p.method.inversion_steps or base["steps"], "batch_size": p.method.inversion_batch_size or base["batch_size"],
            "lr": p.method.inversion_lr or base["lr"]}


def token_of(class_dir: str) -> str:
    """The class's new token, `<class_dir>` with blanks as underscores (one piece for the tokenizer)."""
    return "<" + re.sub(r"\s+", "_", class_dir) + ">"


def token_words(token: str, vectors: int) -> str:
    """How a prompt spells a token of n vectors in training (diffusers expands it itself when generating)."""
    return " ".join([token] + [f"{token}_{i}" for i in range(1, vectors)])


def folder(run: Run, class_dir: str) -> Path:
    return run.path("adaptation", "tokens", class_dir)


def token_damage(where: Path) -> str | None:
    """Why a saved token cannot be used (None if it can): missing, or not the bytes recorded."""
    try:
        info = read_json(where / RECORD_FILE)
    except (OSError, ValueError):
        return f"{RECORD_FILE} is missing or unreadable"
    path = where / TOKEN_FILE
    if not path.is_file():
        return f"{TOKEN_FILE} is missing"
    data = path.read_bytes()
    if len(data) != info.get("bytes") or hashlib.sha256(data).hexdigest() != info.get("sha256"):
        return f"{TOKEN_FILE} does not match the size and checksum recorded in {RECORD_FILE}"
    return None


def damaged_tokens(run: Run, split: FewShotSplit) -> list[str]:
    return [f"{folder(run, d)}: {why}" for d in split.class_dirs() if (why := token_damage(folder(run, d)))]


def stretched(paths: list[str], resolution: int) -> list[torch.Tensor]:
    """The shots stretched to resolution x resolution (bicubic), uint8 (C, H, W), once per image."""
    from torchvision import transforms  # imported where used: the pipeline's own process only plans

    resize = transforms.Resize((resolution, resolution), interpolation=transforms.InterpolationMode.BICUBIC)
    return [transforms.functional.pil_to_tensor(resize(load_rgb(path))) for path in paths]


class InversionTrainer:
    """Learns one class's token at a time on one pipeline (built once per process)."""

    def __init__(self, pipe, p, device: torch.device):
        from diffusers import DDPMScheduler

        self.pipe, self.p, self.device = pipe, p, device
        self.amp = runtime.autocast_dtype(p, device)
        self.dtype = self.amp if self.amp is not None else torch.float32
        for module in (pipe.vae, pipe.unet, pipe.text_encoder):
            module.requires_grad_(False)
            runtime.place(module, device, self.dtype)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self._vectors = None  # (ids, parameter): the token being learned, injected into the lookup
        self._hooked = None  # (embedding module, hook handle): resizing the table makes a new module

    def _inject(self, module, inputs, output):
        if self._vectors is None:
            return output
        ids, vectors = self._vectors
        input_ids = inputs[0]
        out = output
        for k, token_id in enumerate(ids):
            out = torch.where((input_ids == token_id).unsqueeze(-1), vectors[k].to(out.dtype), out)
        return out

    def initial_vectors(self, words: str, n: int) -> torch.Tensor:
        ids = self.pipe.tokenizer(words, add_special_tokens=False).input_ids
        if not ids:
            raise DataDreamError(f"textual inversion: the initializer {words!r} has no tokens.")
        table = self.pipe.text_encoder.get_input_embeddings().weight
        rows = table[torch.tensor(ids, device=table.device)].float()
        return rows.mean(0, keepdim=True).repeat(n, 1).detach().cpu()

    def train(self, token: str, classname: str, shot_paths: list[str], seed: int, progress: bool = True):
        """(vectors [n, d] fp32 on the CPU, per-step losses) of the class's token."""
        pipe, p, device, settings = self.pipe, self.p, self.device, recipe(self.p)
        n = settings["vectors"]
        names = [token] + [f"{token}_{i}" for i in range(1, n)]
        pipe.tokenizer.add_tokens([name for name in names if name not in pipe.tokenizer.get_vocab()])
        pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer), mean_resizing=False)
        self.embeddings = pipe.text_encoder.get_input_embeddings()
        if self._hooked is None or self._hooked[0] is not self.embeddings:
            if self._hooked is not None:
                self._hooked[1].remove()
            self._hooked = (self.embeddings, self.embeddings.register_forward_hook(self._inject))
        ids = pipe.tokenizer.convert_tokens_to_ids(names)
        vectors = torch.nn.Parameter(self.initial_vectors(classname if settings["init"] == "class name" else "the", n).to(device))
        self._vectors = (ids, vectors)
        optimizer = torch.optim.AdamW([vectors], lr=settings["lr"], betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        shots = stretched(shot_paths, p.method.resolution)
        gen = torch.Generator().manual_seed(seed)
        device_gen = gen if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
        words = token_words(token, n)
        scheduler, losses = self.noise_scheduler, []
        for _ in progress_bar(range(settings["steps"]), desc=f"invert {token}", unit="step", disable=not progress):
            index = torch.randint(len(shots), (settings["batch_size"],), generator=gen).tolist()
            flips = torch.rand(len(index), generator=gen) < 0.5
            templates = torch.randint(len(TEMPLATES), (len(index),), generator=gen).tolist()
            batch = torch.stack([shots[i].flip(-1) if flip else shots[i] for i, flip in zip(index, flips)])
            pixels = batch.float().div(255).sub(0.5).div(0.5).to(device, self.dtype)
            prompts = [TEMPLATES[t].format(words) for t in templates]
            token_ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                       truncation=True, return_tensors="pt").input_ids.to(device)

            def draw(latents):  # the noise, then the timesteps, from the host's generator (the authors' order)
                noise = torch.randn(latents.shape, generator=gen).to(device, latents.dtype)
                return noise, torch.randint(0, scheduler.config.num_train_timesteps, (len(index),), generator=gen).to(device)

            loss = denoising_loss(pipe, pipe.unet, scheduler, pixels, token_ids, device_gen, draw, device, self.amp)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            if len(losses) % runtime.LOSS_CHECK_EVERY == 0 or len(losses) == settings["steps"]:
                bad = runtime.first_non_finite(losses)
                if bad:
                    raise DataDreamError(f"textual inversion of {token}: the loss became {bad[1]} at step {bad[0] + 1}; "
                                         f"nothing was saved. Lower inversion_lr (now {settings['lr']}).")
        self._vectors = None
        return vectors.detach().float().cpu(), torch.stack(losses).tolist()


def save_token(where: Path, token: str, vectors: torch.Tensor, info: dict) -> None:
    """diffusers' textual-inversion file and its record, written to a temporary folder and renamed."""
    import shutil

    from safetensors.torch import save_file

    tmp = where.with_name(where.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({token: vectors.contiguous()}, str(tmp / TOKEN_FILE))
    data = (tmp / TOKEN_FILE).read_bytes()
    write_json(tmp / RECORD_FILE, {**info, "token": token, "vectors": int(vectors.shape[0]), "bytes": len(data),
                                   "sha256": hashlib.sha256(data).hexdigest()})
    if where.exists():
        shutil.rmtree(where)
    tmp.rename(where)


def train_tokens(p, run: Run, split: FewShotSplit, seed_of, progress: bool = True,
                 classes: list[int] | None = None) -> list[dict]:
    """Every class's token (or those of `classes`), resumed class by class (a damaged one trained
    again); one record per class."""
    device = runtime.resolve_device(p)
    trainer, rows = None, []
    shots = split.shots(p.shots)
    for c, class_dir in enumerate(split.class_dirs()):  # each token has its own bar
        if classes is not None and c not in classes:
            continue
        where = folder(run, class_dir)
        if where.exists():
            damage = token_damage(where)
            if damage is None:
                rows.append(read_json(where / RECORD_FILE))
                continue
            print(f"[adaptation] token {where} is damaged ({damage}); training it again")
        if trainer is None:
            trainer = InversionTrainer(models.load_sd_pipeline(p), p, device)
        started, seed = time.time(), seed_of(p.seed, c, 0x7E17)
        token = token_of(class_dir)
        vectors, losses = trainer.train(token, split.classnames[c], [path for path, label in shots if label == c], seed,
                                        progress)
        info = {"class_index": c, "class_name": split.classnames[c], "seed": seed, **recipe(p),
                "environment": run.environment, "weights": run.weights, "torch_threads": torch.get_num_threads(),
                "seconds": round(time.time() - started, 2), "loss_first": losses[0], "loss_last": losses[-1],
                "losses": losses}
        save_token(where, token, vectors, info)
        rows.append(read_json(where / RECORD_FILE))
    return rows
