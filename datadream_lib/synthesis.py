"""Synthesis: `images_per_class` images per class (paper section 3.2, hyperparameters.md section 2).

Every image is a job (class, index) with its own generator, seeded from (run seed, class, index),
so no two classes share a noise sequence (the authors' code restarts the same noise for every
class). Jobs run in fixed blocks of `synth_batch_size` consecutive indices of one class; shards
(`shard_index` / `num_shards`) own whole blocks and a resume regenerates a whole block, so sharding
and resuming never change a single bit of an image. A different batch size gives the same images up
to floating-point roundoff of batched kernels (at most a level or two of a few pixels).

Each image is written atomically (temporary file + rename) and then recorded as one row of the
shard's manifest (`manifest-SSS-of-NNN.jsonl`: class, index, seed, prompt, size in bytes, model,
adapter, sampler, steps, guidance). A job is done when its row exists and its image is intact (the
size matches), so an interrupted run resumes exactly where it stopped, nothing half-written is ever
listed, and an image deleted or damaged later is generated again, bit for bit.

Generation methods plug in through `METHODS`: a class that turns a list of jobs of one class into
images. DataDream (text-to-image with the run's adapter) and plain Stable Diffusion ship here; the
baselines (img2img from real shots, textual inversion, unCLIP) are further entries of the registry.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from datadream_lib import models
from datadream_lib.data import FewShotSplit
from datadream_lib.errors import DataDreamError
from datadream_lib.runs import Run, atomic_write_bytes

MANIFEST_GLOB = "manifest-*.jsonl"


def image_seed(run_seed: int, class_index: int, index: int) -> int:
    """The seed of one image: a hash of (run seed, class, index), independent of everything else."""
    words = np.random.SeedSequence([run_seed, class_index, index]).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 31 | int(words[1]) >> 1


@dataclasses.dataclass(frozen=True)
class ImageJob:
    class_index: int
    class_dir: str
    class_name: str
    index: int
    seed: int
    prompt: str

    @property
    def key(self) -> tuple[int, int]:
        return self.class_index, self.index

    @property
    def relpath(self) -> str:
        return f"{self.class_dir}/{self.index:05d}.png"


def all_jobs(p, split: FewShotSplit) -> list[ImageJob]:
    prompts, dirs = split.prompts(), split.class_dirs()
    return [ImageJob(c, dirs[c], name, i, image_seed(p.seed, c, i), prompts[c])
            for c, name in enumerate(split.classnames) for i in range(p.images_per_class)]


def blocks(p, jobs: list[ImageJob]) -> list[list[ImageJob]]:
    """Fixed batches: `synth_batch_size` consecutive indices of one class (the last may be short)."""
    out, current = [], []
    for job in jobs:
        if current and (job.class_index != current[0].class_index or len(current) == p.synth_batch_size):
            out.append(current)
            current = []
        current.append(job)
    return out + ([current] if current else [])


# --- samplers ----------------------------------------------------------------------------------

def make_scheduler(name: str, config):
    """A short name below, or any diffusers scheduler class, built from the model's scheduler config."""
    import diffusers

    kinds = {
        "pndm": (diffusers.PNDMScheduler, {}),
        "ddim": (diffusers.DDIMScheduler, {}),
        "dpmsolver++": (diffusers.DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
        "euler": (diffusers.EulerDiscreteScheduler, {}),
        "euler_ancestral": (diffusers.EulerAncestralDiscreteScheduler, {}),
        "ddpm": (diffusers.DDPMScheduler, {}),
        "unipc": (diffusers.UniPCMultistepScheduler, {}),
    }
    cls, extra = kinds[name] if name in kinds else (getattr(diffusers, name), {})
    return cls.from_config(config, **extra)


# --- methods -----------------------------------------------------------------------------------

class TextToImage:
    """Stable Diffusion text-to-image with the class prompt; no adapter (the frozen model)."""

    name = "stable_diffusion"
    uses_adapters = False  # reads the adaptation stage's DataDream adapters

    def __init__(self, p, run: Run, split: FewShotSplit):
        self.p, self.run, self.split = p, run, split
        self.device = models.resolve_device(p)
        dtype = models.autocast_dtype(p, self.device) or torch.float32
        self.pipe = models.load_sd_pipeline(p)
        self.pipe.scheduler = make_scheduler(p.scheduler, self.pipe.scheduler.config)
        for module in (self.pipe.vae, self.pipe.unet, self.pipe.text_encoder):
            models.place(module, self.device, dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.model = p.sd_model if p.models == "pretrained" else f"{p.models} (random weights, seed {models.TINY_SEED})"

    def check(self) -> None:
        """Stop before any image is made if an input is missing."""

    def adapter(self, class_index: int) -> Optional[str]:
        return None

    def begin_class(self, class_index: int) -> None:
        pass

    @torch.no_grad()
    def generate(self, jobs: list[ImageJob]):
        p = self.p
        generators = [torch.Generator().manual_seed(job.seed) for job in jobs]  # CPU: same noise on any device
        out = self.pipe([job.prompt for job in jobs], height=p.resolution, width=p.resolution,
                        num_inference_steps=p.num_inference_steps, guidance_scale=p.guidance_scale,
                        generator=generators, output_type="pil")
        return out.images


class DataDream(TextToImage):
    """Text-to-image with the run's DataDream adapter (dset: one; cls: the class's own)."""

    name = "datadream"
    uses_adapters = True

    def _folder(self, class_index: int) -> Path:
        from datadream_lib.adaptation import adapter_folder

        return adapter_folder(self.p, self.run, class_index, self.split)

    def check(self) -> None:
        from datadream_lib.adaptation import adapter_damage

        bad = {str(self._folder(c)): why for c in range(len(self.split.classnames))
               if (why := adapter_damage(self._folder(c), full=False))}
        if bad:
            folder, why = next(iter(bad.items()))
            raise DataDreamError(f"{len(bad)} DataDream adapter(s) are missing or damaged, e.g. {folder} ({why}). "
                                 f"Run the adaptation stage (notebooks/01_adaptation.ipynb, or the pipeline) for this "
                                 f"run: it trains missing adapters and retrains damaged ones.")

    def adapter(self, class_index: int) -> Optional[str]:
        return str(self._folder(class_index).relative_to(self.run.dir))

    def begin_class(self, class_index: int) -> None:
        from datadream_lib.adaptation import adapter_damage

        folder = self._folder(class_index)
        if getattr(self, "_loaded", None) == folder:
            return
        damage = adapter_damage(folder)  # the full checksum, once per adapter loaded
        if damage:
            raise DataDreamError(f"adapter {folder} is damaged ({damage}); run the adaptation stage again: it retrains it.")
        if getattr(self, "_loaded", None) is not None:
            self.pipe.unload_lora_weights()
        self.pipe.load_lora_weights(str(folder))
        self._loaded = folder


METHODS: dict[str, type[TextToImage]] = {cls.name: cls for cls in (DataDream, TextToImage)}


def source_label(method: str, variant: str) -> str:
    """How tables and figures name a source of synthetic images: "DataDream-dset", "DataDream-cls", or the method."""
    return f"DataDream-{variant}" if method == DataDream.name else method


# --- the manifest ------------------------------------------------------------------------------

def read_manifest(folder: Path) -> list[dict]:
    """One row per image (class, index), from every complete row of every shard's manifest: a torn
    last line is ignored, and an image listed twice (regenerated after damage, perhaps by another
    shard layout) counts once, by the row that matches the file on disk."""
    rows: dict[tuple[int, int], list[dict]] = {}
    for path in sorted(Path(folder).glob(MANIFEST_GLOB)):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows.setdefault((row["class_index"], row["index"]), []).append(row)
    return [listed[-1] if len(listed) == 1 else
            ([r for r in listed if image_damage(folder, r) is None] or listed)[-1] for listed in rows.values()]


def image_damage(folder: Path, row: dict) -> Optional[str]:
    """Why a listed image cannot be used (None if it can): a cheap check, its size against the row's."""
    path = Path(folder) / row["path"]
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != row.get("bytes", size) or size == 0:
        return f"{size} bytes, not the {row.get('bytes')} written"
    return None


def damaged_images(p, run: Run) -> list[str]:
    """The listed images of the run that are missing or damaged (for the pipeline's resume check)."""
    folder = output_folder(p, run)
    return [f"{folder / row['path']}: {why}" for row in read_manifest(folder) if (why := image_damage(folder, row))]


class ManifestWriter:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # drop a torn last line left by a crash mid-write
            text = self.path.read_text()
            if text and not text.endswith("\n"):
                self.path.write_text(text[: text.rfind("\n") + 1])
        self.handle = open(self.path, "a")

    def append(self, row: dict) -> None:
        self.handle.write(json.dumps(row) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def output_folder(p, run: Run) -> Path:
    return run.path("synthetic", p.synth_method)


def synthetic_items(run: Run, method: str, limit_per_class: Optional[int] = None) -> list[tuple[str, int]]:
    """(path, label) of the synthetic images listed in the manifest, class-major, index order. A
    listed image that is missing or damaged stops here, with the fix."""
    folder = run.path("synthetic", method)
    rows = sorted(read_manifest(folder), key=lambda r: (r["class_index"], r["index"]))
    rows = [r for r in rows if limit_per_class is None or r["index"] < limit_per_class]
    bad = [f"{folder / r['path']} ({why})" for r in rows if (why := image_damage(folder, r))]
    if bad:
        raise DataDreamError(f"{len(bad)} synthetic image(s) listed in the manifest are missing or damaged, e.g. "
                             f"{bad[0]}. Run the synthesis stage again (the pipeline, or notebooks/02_synthesis.ipynb): "
                             f"it regenerates exactly those images.")
    return [(str(folder / r["path"]), r["class_index"]) for r in rows]


def status(p, run: Run, split: FewShotSplit) -> dict:
    jobs = all_jobs(p, split)
    folder = output_folder(p, run)
    done = {(r["class_index"], r["index"]) for r in read_manifest(folder) if image_damage(folder, r) is None}
    return {"total": len(jobs), "done": sum(job.key in done for job in jobs)}


def run(p, run: Run, split: FewShotSplit, progress: bool = True) -> dict:
    """Generate this shard's missing images; mark the stage done when every shard is complete."""
    folder = output_folder(p, run)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.rglob(".*.tmp"):  # temporary files of an interrupted write: never valid
        stale.unlink()
    rows = read_manifest(folder)
    done = {(r["class_index"], r["index"]) for r in rows if image_damage(folder, r) is None}
    if len(done) < len(rows):
        print(f"[synthesis] {len(rows) - len(done)} listed image(s) are missing or damaged; generating them again")
    mine = [block for number, block in enumerate(blocks(p, all_jobs(p, split))) if number % p.num_shards == p.shard_index]
    todo = [block for block in mine if any(job.key not in done for job in block)]
    if todo:
        method = METHODS[p.synth_method](p, run, split)
        method.check()
        writer = ManifestWriter(folder / f"manifest-{p.shard_index:03d}-of-{p.num_shards:03d}.jsonl")
        missing = sum(job.key not in done for block in todo for job in block)
        bar = tqdm(total=missing, desc=f"synthesis shard {p.shard_index}/{p.num_shards}", disable=not progress)
        try:
            for block in todo:
                class_index = block[0].class_index
                method.begin_class(class_index)
                for job, image in zip(block, method.generate(block)):
                    if job.key in done:  # generated again only to keep the block's batch intact
                        continue
                    buffer = io.BytesIO()
                    image.save(buffer, format="PNG")
                    atomic_write_bytes(folder / job.relpath, buffer.getvalue())
                    writer.append({
                        "class_index": job.class_index, "class_name": job.class_name, "index": job.index,
                        "seed": job.seed, "prompt": job.prompt, "path": job.relpath, "bytes": buffer.tell(),
                        "method": p.synth_method, "model": method.model, "adapter": method.adapter(class_index),
                        "sampler": p.scheduler, "steps": p.num_inference_steps, "guidance": p.guidance_scale,
                        "resolution": p.resolution, "batch_size": p.synth_batch_size})
                    bar.update()
        finally:
            bar.close()
            writer.close()
    state = status(p, run, split)
    if state["done"] == state["total"]:
        run.outputs_complete("synthesis", method=p.synth_method, images=state["total"])
    return state
