"""The classifier all methods share (paper eq. 4, docs/hyperparameters.md §3).

CLIP (open_clip ViT-B/16, OpenAI weights) with LoRA on the Q and V parts of the fused attention
input projection of every block of both towers (r 16, alpha 32, dropout 0.1); everything else,
the logit scale included, is frozen. The head is zero-shot style: the text features of the class
prompts, recomputed every step (the text LoRA trains too); logits = exp(logit_scale) img @ text.T.

Settings:
    zero_shot       no training
    real_finetune   the K real shots only ("Real-finetune")
    synthetic       synthetic images only
    synthetic_real  both, pooled into one dataset (as the authors do): every batch of
                    `clf_batch_size` draws from the pool, and its loss is
                    lambda * CE(its real samples) + (1 - lambda) * CE(its synthetic samples)

The real shots are repeated `images_per_class // shots` times per epoch (as the authors do), so an
epoch of synthetic + real takes ceil((n_synthetic + n_real * repeat) / batch) steps, the authors'
count. The model is selected on the validation split only; the test split is read exactly once, at
the end, by the selected model. Logits are the product of normalised features computed in fp32
(bf16 would resolve them only to about 0.1-0.2 and flip near ties).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms
from torchvision.transforms import v2

from datadream_lib.progress import bar as progress_bar
from datadream_lib import augmentation, catalog, methods, models, runtime, tracking
from datadream_lib.augmentation import test_transform
from datadream_lib.methods.base import ClassifierOptions
from datadream_lib.schema import SYNTHETIC_SETTINGS
from datadream_lib.splits import FewShotSplit, load_rgb
from datadream_lib.errors import DataDreamError
from datadream_lib.files import read_json, record_damage, write_json
from datadream_lib.runs import Run

BICUBIC = transforms.InterpolationMode.BICUBIC
EVAL_BATCH = 256  # val and test images per forward pass (no gradients: large batches keep the GPU busy)


# --- LoRA on open_clip's fused attention ---------------------------------------------------------

class LoRAMultiheadAttention(nn.Module):
    """nn.MultiheadAttention with LoRA on the Q and V thirds of its fused `in_proj_weight`.

    B starts at zero, so a fresh adapter computes exactly what the wrapped attention computes.
    """

    def __init__(self, mha: nn.MultiheadAttention, rank: int, alpha: int, dropout: float):
        super().__init__()
        self.mha = mha
        d = mha.embed_dim
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.lora_A_q = nn.Parameter(torch.empty(rank, d))
        self.lora_B_q = nn.Parameter(torch.zeros(d, rank))
        self.lora_A_v = nn.Parameter(torch.empty(rank, d))
        self.lora_B_v = nn.Parameter(torch.zeros(d, rank))
        for a in (self.lora_A_q, self.lora_A_v):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    def _delta(self, dropped, a, b):
        return (dropped @ a.t() @ b.t()) * self.scale

    def forward(self, query, key, value, need_weights=False, attn_mask=None, key_padding_mask=None, **_):
        mha = self.mha
        self_attention = value is query  # CLIP's towers: one input for Q, K and V
        if not mha.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None,) * 3
        # One dropout mask on the input, shared by the Q and V branches, as loralib's MergedLinear
        # (the authors' LoRA) applies it to the fused projection's input.
        dropped_q = self.dropout(query)
        dropped_v = dropped_q if self_attention else self.dropout(value)
        q = F.linear(query, w_q, b_q) + self._delta(dropped_q, self.lora_A_q, self.lora_B_q)
        k = F.linear(key, w_k, b_k)
        v = F.linear(value, w_v, b_v) + self._delta(dropped_v, self.lora_A_v, self.lora_B_v)
        batch, length, dim = q.shape
        heads = mha.num_heads
        q, k, v = (t.reshape(batch, -1, heads, dim // heads).transpose(1, 2) for t in (q, k, v))
        mask = None
        if attn_mask is not None:  # MHA: bool True = blocked, float = additive; SDPA: bool True = allowed
            mask = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask.to(q.dtype)
        if key_padding_mask is not None:
            pad = key_padding_mask[:, None, None, :]
            pad = torch.zeros_like(pad, dtype=q.dtype).masked_fill(pad, float("-inf")) if pad.dtype == torch.bool else pad
            mask = pad if mask is None else (mask + pad if mask.dtype != torch.bool else pad.masked_fill(~mask, float("-inf")))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=mha.dropout if self.training else 0.0)
        out = mha.out_proj(out.transpose(1, 2).reshape(batch, length, dim))
        if not mha.batch_first:
            out = out.transpose(0, 1)
        return out, None


def add_clip_lora(clip: nn.Module, rank: int, alpha: int, dropout: float) -> list[nn.Parameter]:
    """Freeze CLIP and wrap every attention of both towers. Returns the LoRA parameters."""
    clip.requires_grad_(False)
    wrapped = []
    for module in list(clip.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                lora = LoRAMultiheadAttention(child, rank, alpha, dropout)
                setattr(module, name, lora)
                wrapped.append(lora)
    if not wrapped:
        raise DataDreamError("no nn.MultiheadAttention found in the CLIP model; LoRA placement needs open_clip's ViT.")
    return [q for lora in wrapped for q in (lora.lora_A_q, lora.lora_B_q, lora.lora_A_v, lora.lora_B_v)]


class CLIPClassifier(nn.Module):
    """Zero-shot-style head: cosine similarity of image and class-prompt features."""

    def __init__(self, clip: nn.Module, tokenizer, prompts: list[str]):
        super().__init__()
        self.clip = clip
        self.register_buffer("prompt_tokens", tokenizer(prompts), persistent=False)

    def text_features(self) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(self.prompt_tokens), dim=-1)

    def forward(self, images: torch.Tensor, text: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits in fp32: the towers may run under autocast, the final product never does."""
        text = self.text_features() if text is None else text
        image = self.clip.encode_image(images)
        with torch.autocast(image.device.type, enabled=False):
            image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
            return self.clip.logit_scale.float().exp() * image @ text.t()

    def lora_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items() if ".lora_" in k}


def build_classifier(p, split: FewShotSplit) -> tuple[CLIPClassifier, list[nn.Parameter], int]:
    clip, tokenizer, image_size = models.load_clip(p)
    torch.manual_seed(p.seed)  # LoRA init
    params = add_clip_lora(clip, p.clf_lora_rank, p.clf_lora_alpha, p.clf_lora_dropout)
    return CLIPClassifier(clip, tokenizer, split.classifier_prompts()), params, image_size


# --- data --------------------------------------------------------------------------------------

class ImageList(Dataset):
    def __init__(self, items, transform):
        self.items, self.transform = list(items), transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        return self.transform(load_rgb(path)), label


class TrainingPool(Dataset):
    """The authors' training set: the synthetic images and the real shots repeated `repeat` times,
    pooled into one dataset; each sample says whether it is real (for eq. 4's per-sample mask).
    A sample is the decoded image as uint8 (the augmentation runs on the device, `augmentation.py`).

    With `substitutes` (a method's classifier option, e.g. DA-Fusion's and unCLIP's authors'), each
    real sample is replaced, at each draw, with probability `replace` by one of its substitutes
    (per real shot, the synthetic images it may stand for); the draw comes from (seed, epoch,
    sample), so it is the same with any number of loader workers, and a replaced sample counts as
    synthetic in eq. 4. Set `epoch` before each pass."""

    def __init__(self, real_items, synth_items, repeat: int = 1, substitutes: Optional[list[list[str]]] = None,
                 replace: float = 0.0, seed: int = 0):
        self.items = [(path, label, None) for path, label in synth_items] + \
                     [(path, label, j) for j, (path, label) in enumerate(real_items)] * repeat
        self.substitutes, self.replace, self.seed, self.epoch = substitutes, replace, seed, 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label, shot = self.items[i]
        is_real = shot is not None
        if is_real and self.replace > 0 and self.substitutes and self.substitutes[shot]:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            if rng.random() < self.replace:
                choices = self.substitutes[shot]
                path, is_real = choices[int(rng.integers(len(choices)))], False
        return augmentation.read_image(path), label, is_real


def substitutes_for(real_items, synth_items, synth_shots, replace_from: str) -> list[list[str]]:
    """Per real shot, the synthetic images that may replace it: those of its class ("class"), or
    those made from it ("shot": the images whose manifest row names it as `source_shot`)."""
    position, per_class = [], {}
    for _, label in real_items:  # real items are class-major, shots in order: the k-th of its class
        position.append(per_class.get(label, 0))
        per_class[label] = position[-1] + 1
    pools: dict = {}
    for (path, label), shot in zip(synth_items, synth_shots):
        pools.setdefault(label if replace_from == "class" else (label, shot), []).append(path)
    return [pools.get(label if replace_from == "class" else (label, k), [])
            for (_, label), k in zip(real_items, position)]


def collate_pool(samples):
    """Images stay a list (their sizes differ until the augmentation's crop)."""
    images, labels, is_real = zip(*samples)
    return list(images), torch.tensor(labels), torch.tensor(is_real)


class EpochShuffle(Sampler):
    """The training order: a permutation drawn from (seed, epoch) alone (set `epoch` before each
    pass). A DataLoader's own shuffle continues one generator from pass to pass, and every `iter()`
    of the loader draws from it, so a wrapper that iterates the loader once more (tqdm.auto in a
    kernel does, through tqdm.asyncio) shifts every later epoch's order: the scores then depend on
    which progress bar was imported. Here they cannot."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self):
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(augmentation.batch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=generator).tolist())


def _loader(dataset, p, sampler: Optional[Sampler], batch_size: int, device, collate_fn=None) -> DataLoader:
    """In the sampler's order (None: the dataset's). The loader's own generator seeds only its
    workers, which decode and draw nothing (the augmentation is seeded per batch)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=p.num_workers,
                      generator=torch.Generator().manual_seed(0), pin_memory=device.type == "cuda",
                      persistent_workers=False, drop_last=False, collate_fn=collate_fn)


# --- loss, schedule ----------------------------------------------------------------------------

def pooled_loss(logits, targets, is_real, real_weight: float) -> torch.Tensor:
    """Eq. 4 on a batch of the pool: lambda * CE(its real samples) + (1 - lambda) * CE(its synthetic
    samples), each CE the mean over its own samples (the authors' per-sample mask).

    A source with no sample in the batch adds nothing (the authors' code would take the mean of an
    empty set, NaN). Training on one source passes real_weight 1 (real only) or 0 (synthetic only),
    which is plain CE. Targets are class indices or soft labels (after CutMix / MixUp).
    """
    per_sample = F.cross_entropy(logits, targets, reduction="none")
    loss = logits.new_zeros(())
    for mask, weight in ((is_real, real_weight), (~is_real, 1.0 - real_weight)):
        if weight > 0:
            loss = loss + weight * masked_mean(per_sample, mask)
    return loss


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of values[mask], 0 for an empty mask, computed without reading the mask back to the
    host (no GPU sync in the training step)."""
    return torch.where(mask, values, 0).sum() / mask.sum().clamp(min=1)


def teacher_loss(logits, teacher_logits, mask, temperature: float) -> torch.Tensor:
    """IsSynth's soft cross-entropy towards a frozen zero-shot teacher on the samples of `mask`:
    -sum softmax(teacher / T) * log_softmax(student / T), averaged over those samples (none: 0)."""
    target = F.softmax(teacher_logits.float() / temperature, dim=-1)
    return masked_mean(-(target * F.log_softmax(logits.float() / temperature, dim=-1)).sum(-1), mask)


WARMUP_START_LR = 1e-8  # the authors' warm-up starts here (`classify/utils.py:80`)


def lr_lambda(total_steps: int, warmup_steps: int, base_lr: float, min_lr: float):
    """The authors' schedule per iteration (as a LambdaLR factor): the learning rates of the W
    warm-up steps are `numpy.linspace(1e-8, lr, W)`, then cosine to min_lr."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            if warmup_steps == 1:
                return WARMUP_START_LR / base_lr
            return (WARMUP_START_LR + (base_lr - WARMUP_START_LR) * step / (warmup_steps - 1)) / base_lr
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return (min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))) / base_lr
    return factor


class BatchMix:
    """CutMix or MixUp (one at random) with probability p per step, one coin per batch (as the
    authors' code draws it); real and synthetic samples are mixed only among themselves. Targets
    come back soft (one-hot where nothing was mixed)."""

    def __init__(self, num_classes: int, p: float, seed: int):
        self.num_classes, self.p = num_classes, p
        self.rng = np.random.default_rng(seed)
        self.mix = v2.RandomChoice([v2.CutMix(num_classes=num_classes), v2.MixUp(num_classes=num_classes)])

    def __call__(self, images, labels, is_real):
        targets = F.one_hot(labels, self.num_classes).float()
        if self.p == 0 or self.rng.random() >= self.p:
            return images, targets
        images = images.clone()
        for mask in (is_real, ~is_real):
            if mask.sum() > 1:
                images[mask], targets[mask] = self.mix(images[mask], labels[mask])
        return images, targets


# --- training and evaluation -------------------------------------------------------------------

@torch.no_grad()
def predict(model: CLIPClassifier, loader: DataLoader, device, amp) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    preds, labels = [], []
    with runtime.autocast(device, amp):
        text = model.text_features()
        for images, y in loader:
            preds.append(model(images.to(device, non_blocking=True), text).argmax(-1).cpu())
            labels.append(y)
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((preds == labels).mean() * 100)


def per_class_accuracy(preds, labels, classnames) -> dict[str, float]:
    return {name: float((preds[labels == c] == c).mean() * 100) if (labels == c).any() else float("nan")
            for c, name in enumerate(classnames)}


def fit(model: CLIPClassifier, trainable, p, real_items, synth_items, val_loader, device, image_size,
        progress: bool = True, teacher: Optional[CLIPClassifier] = None,
        options: ClassifierOptions = ClassifierOptions(), substitutes: Optional[list[list[str]]] = None,
        name: str = "classifier", curves: Optional[tracking.Curves] = None) -> tuple[list[dict], int]:
    """Train; after every epoch score val and keep the best LoRA state (ties: the earlier epoch),
    and send the epoch's curves (loss per step; mean loss, lr, val top-1) to `curves`.
    With a `teacher` (the method's option), its soft cross-entropy on the synthetic samples is added;
    with `substitutes`, real samples are replaced with probability `options.replace_real`."""
    amp = runtime.autocast_dtype(p, device)
    n_classes = model.prompt_tokens.shape[0]
    repeat = max(1, p.images_per_class // p.shots)
    pool = TrainingPool(real_items, synth_items, repeat, substitutes, options.replace_real, p.seed + 4)
    order = EpochShuffle(len(pool), p.seed + 1)
    loader = _loader(pool, p, order, p.clf_batch_size, device, collate_pool)
    augment = augmentation.DeviceAugment(image_size, device, p.clf_blur, p.clf_augment)
    real_weight = p.real_loss_weight if real_items and synth_items else float(bool(real_items))
    total = len(loader) * p.clf_epochs
    optimizer = torch.optim.AdamW(trainable, lr=p.clf_lr, weight_decay=p.clf_weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total, p.clf_warmup_epochs * len(loader), p.clf_lr, p.clf_min_lr))
    mixer = BatchMix(n_classes, p.mix_aug_prob, p.seed + 3)
    history, best_state, best_val, best_epoch = [], model.lora_state(), -1.0, 0
    curves = curves or tracking.Curves([])
    bar = progress_bar(total=total, desc=name, unit="step", disable=not progress)
    for epoch in range(1, p.clf_epochs + 1):
        model.train()
        pool.epoch = order.epoch = epoch  # this epoch's replacement draws and order (the workers copy the pool at each pass)
        losses = []
        bar.set_postfix_str(f"epoch {epoch}/{p.clf_epochs}", refresh=False)
        for step, (images, labels, is_real) in enumerate(loader):
            images = augment(images, seed=augmentation.batch_seed(p.seed, epoch, step))
            labels, is_real = labels.to(device, non_blocking=True), is_real.to(device, non_blocking=True)
            images, targets = mixer(images, labels, is_real)
            with runtime.autocast(device, amp):
                logits = model(images)
            loss = pooled_loss(logits, targets, is_real, real_weight)
            if teacher is not None:
                with torch.no_grad(), runtime.autocast(device, amp):
                    teacher_logits = teacher(images)
                loss = loss + options.teacher_weight * teacher_loss(logits, teacher_logits, ~is_real,
                                                                     options.teacher_temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())  # read back every LOSS_CHECK_EVERY steps, not at every step
            bar.update()
            if len(losses) % runtime.LOSS_CHECK_EVERY == 0 or len(losses) == len(loader):
                bad = runtime.first_non_finite(losses)
                if bad:
                    raise DataDreamError(f"classifier: the loss became {bad[1]} at step {bad[0] + 1} of epoch {epoch}; "
                                         f"no metrics were written. Lower clf_lr (now {p.clf_lr}).")
        losses = torch.stack(losses).tolist()
        val_top1 = accuracy(*predict(model, val_loader, device, amp))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "losses": losses, "steps": len(losses),
                        "val_top1": val_top1, "lr": schedule.get_last_lr()[0]})
        curves.scalars("classifier/loss", losses, first_step=(epoch - 1) * len(loader) + 1)
        for tag, key in (("classifier/epoch_loss", "train_loss"), ("classifier/lr", "lr"), ("classifier/val_top1", "val_top1")):
            curves.scalar(tag, history[-1][key], epoch)
        curves.flush()  # the curves so far are visible while the next epoch trains
        if val_top1 > best_val:
            best_val, best_epoch, best_state = val_top1, epoch, model.lora_state()
    bar.close()
    model.load_state_dict(best_state, strict=False)
    return history, best_epoch


def train_and_evaluate(p, setting: str, split: FewShotSplit, synth_items: list, progress: bool = True,
                       options: ClassifierOptions = ClassifierOptions(),
                       synth_shots: Optional[list] = None, curves: Optional[tracking.Curves] = None) -> dict:
    """One classifier setting, start to finish; the test split is read once, by the selected model.
    The metrics name the synthetic images by identity (`synth_method`, `variant`: naming.py names
    them). `options`: what the images' method asks of the classifier (off by default: Table 1's shared classifier);
    `synth_shots`: each synthetic image's source shot (for a replacement by the shot's own images);
    `curves`: where the training curves and the test top-1 go as they are made (tracking.py)."""
    device = runtime.resolve_device(p)
    amp = runtime.autocast_dtype(p, device)
    model, trainable, image_size = build_classifier(p, split)
    model.to(device)
    evaluation = test_transform(image_size)
    val_loader = _loader(ImageList(split.val, evaluation), p, None, max(EVAL_BATCH, p.clf_batch_size), device)
    real = split.shots(p.shots) if setting in ("real_finetune", "synthetic_real") else []
    synth = synth_items if setting in SYNTHETIC_SETTINGS else []
    if setting in SYNTHETIC_SETTINGS and not synth:
        raise DataDreamError(f"setting {setting!r} needs synthetic images and the run has none; run the synthesis stage first.")
    started = time.time()
    history, best_epoch = [], 0
    if setting != "zero_shot":
        teacher = None
        if options.teacher_weight > 0 and synth:  # e.g. IsSynth's option: the frozen zero-shot CLIP as a teacher
            clip, tokenizer, _ = models.load_clip(p)
            teacher = CLIPClassifier(clip, tokenizer, split.classifier_prompts()).to(device).eval().requires_grad_(False)
        substitutes = None
        if options.replace_real > 0 and real and synth:  # e.g. DA-Fusion's, unCLIP's option: real samples replaced
            if options.replace_from == "shot" and (synth_shots is None or None in synth_shots):
                raise DataDreamError("the classifier option replaces a real sample by its own shot's synthetic images, "
                                     "but the manifest rows do not name a source_shot; set clf_replace_real: 0.")
            substitutes = substitutes_for(real, synth, synth_shots or [None] * len(synth), options.replace_from)
        history, best_epoch = fit(model, trainable, p, real, synth, val_loader, device, image_size, progress, teacher,
                                  options, substitutes, name=f"classifier ({setting})", curves=curves)
    val_top1 = history[best_epoch - 1]["val_top1"] if history else accuracy(*predict(model, val_loader, device, amp))
    test_loader = _loader(ImageList(split.test, evaluation), p, None, max(EVAL_BATCH, p.clf_batch_size), device)
    preds, labels = predict(model, test_loader, device, amp)  # the one read of the test split
    if curves is not None:
        curves.scalar("classifier/test_top1", accuracy(preds, labels), best_epoch)
    return {
        "setting": setting, "dataset": split.dataset, "seed": p.seed, "shots": p.shots,
        "synth_method": p.synth_method if synth else None,
        "variant": methods.METHODS[p.synth_method].variant(p) if synth else None,
        "images_per_class": (len(synth) // len(split.classnames)) if synth else 0,
        "top1": accuracy(preds, labels), "per_class": per_class_accuracy(preds, labels, split.classnames),
        "val_top1": val_top1, "best_epoch": best_epoch, "selected_on": "val", "test_evaluations": 1,
        "n_real": len(real), "n_synthetic": len(synth), "n_val": len(split.val), "n_test": len(labels),
        "teacher_weight": options.teacher_weight if synth else 0.0,
        "replace_real": options.replace_real if synth and real else 0.0,
        "replace_from": options.replace_from if synth and real and options.replace_real > 0 else None,
        "history": history, "seconds": round(time.time() - started, 2),
    }


def _read_metrics(path: Path) -> Optional[dict]:
    """A setting's metrics, or None where they are missing or damaged (the setting is then trained again)."""
    if not path.exists():
        return None
    try:
        metrics = read_json(path)
    except (ValueError, UnicodeDecodeError):
        print(f"[classification] {path} is damaged; training that setting again")
        return None
    return metrics if isinstance(metrics, dict) and "top1" in metrics else None


def damaged(p, run: Run, split: FewShotSplit) -> list[str]:
    """The classification stage's damage check: every setting's metrics, readable (a lost one would
    leave Table 1 a row short)."""
    return [f"{path}: {why}" for path in (run.path("classification", s, "metrics.json") for s in p.clf_settings)
            if (why := record_damage(path, "json"))]


def classify(p, run: Run, split: FewShotSplit, progress: bool = True, settings: Optional[list[str]] = None,
             out_root: Optional[Path] = None, images_per_class: Optional[int] = None) -> dict[str, dict]:
    """The classification stage: every setting in p.clf_settings (or `settings`, the first
    `images_per_class` images of each class, into `out_root`: an ablation's cell); a setting whose
    metrics exist is kept."""
    the_stage = out_root is None and settings is None  # not an ablation's cell
    out_root = out_root or run.path("classification")
    settings = settings or p.clf_select or p.clf_settings  # clf_select: this process's part of the stage
    results = {}
    synth = None
    for setting in settings:
        path = out_root / setting / "metrics.json"
        kept = _read_metrics(path)
        if kept is not None:
            results[setting] = kept
            continue
        if setting in SYNTHETIC_SETTINGS and synth is None:  # the manifest is read once, for every setting
            rows = catalog.synthetic_rows(run, p.synth_method, images_per_class)
            synth = [(row["file"], row["class_index"]) for row in rows]
            shots = [row.get("source_shot") for row in rows]
        with tracking.curves(p.tracking, run.dir if the_stage else None, f"classification/{setting}") as curves:
            results[setting] = train_and_evaluate(p, setting, split, synth or [], progress,
                                                  methods.METHODS[p.synth_method].classifier_options(p),
                                                  shots if synth else None, curves)
        results[setting]["weights"] = run.weights  # the classifier's CLIP (weights/<id>.json)
        if setting in SYNTHETIC_SETTINGS:  # and those its synthetic images were made with (their manifest rows')
            results[setting]["synthetic_weights"] = sorted({str(row.get("weights")) for row in rows})
        write_json(path, results[setting])
    if the_stage and all(_read_metrics(out_root / s / "metrics.json") is not None for s in p.clf_settings):
        run.outputs_complete("classification", settings=sorted(path.parent.name for path in out_root.glob("*/metrics.json")))
    return results
