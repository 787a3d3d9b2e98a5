"""Synthesis: the engine that makes `images_per_class` images per class with the run's method
(paper section 3.2, docs/hyperparameters.md §2; the methods are in `methods/`).

Every image is a job (class, index) with its own seed, hashed from (run seed, class, index), so no
two classes share a noise sequence (the authors' code restarts the same noise for every class).
The method derives the image's plan (prompt, source shot, strength, caption shot, ...) from that
seed alone. Jobs run in fixed blocks of `synth_batch_size` consecutive indices of one class (unset:
as many as the GPU's free memory holds, at most 64), within chunks of 64 indices; shards
(`shard_index` / `num_shards`) own whole chunks, so shards on different GPUs, with different batch
sizes, still split the images exactly. A method whose images of a class depend on each other
(DISEF's per-class filter budget: `Method.whole_classes`) is sharded by whole classes instead. A resume regenerates a whole block, so sharding and resuming
never change a single bit of an image at a fixed configuration. What changes pixels by
floating-point roundoff only (at most a level or two of a few pixels) is recorded in each manifest
row: the batch size, a fused LoRA, fused q/k/v projections, channels_last, a compiled UNet and VAE
decoder (`methods/stable_diffusion.py`); on a CPU also the number of torch threads. The row names
the environment record it was made under (`environment.py`).

Each image is encoded and written atomically (temporary file + rename) on background threads, off
the generation loop, and then listed by one row of the shard's manifest (`catalog.py`), in the
order the images were made: its plan, how it was made, its size in bytes and the sha256 of its
bytes. A job is done when its row exists and its image is intact (a shard checks its own images
against their checksums), so an interrupted run resumes exactly where it stopped,
nothing half-written is ever listed (a kill -9 loses only images not yet listed), and an image
deleted or damaged later is generated again, bit for bit.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from datadream_lib.progress import bar as progress_bar
from datadream_lib import catalog, methods, runtime
from datadream_lib.schema import SYNTH_BATCH_MAX
from datadream_lib.files import atomic_write_bytes
from datadream_lib.runs import Run
from datadream_lib.splits import FewShotSplit


def image_seed(run_seed: int, class_index: int, index: int) -> int:
    """The seed of one image: a hash of (run seed, class, index), independent of everything else."""
    return methods.seed_of(run_seed, class_index, index)


@dataclasses.dataclass(frozen=True)
class ImageJob:
    class_index: int
    class_dir: str
    class_name: str
    index: int
    seed: int
    plan: dict = dataclasses.field(default_factory=dict, compare=False)  # the method's, from the seed
    needed: bool = dataclasses.field(default=True, compare=False)  # False: on disk, made again only for its batch

    @property
    def key(self) -> tuple[int, int]:
        return self.class_index, self.index

    @property
    def relpath(self) -> str:
        return f"{self.class_dir}/{self.index:05d}.png"


def all_jobs(p, split: FewShotSplit) -> list[ImageJob]:
    dirs = split.class_dirs()
    return [ImageJob(c, dirs[c], name, i, image_seed(p.seed, c, i))
            for c, name in enumerate(split.classnames) for i in range(p.images_per_class)]


SHARD_CHUNK = SYNTH_BATCH_MAX  # consecutive images of one class a shard owns, whatever batch size each shard runs


def blocks(jobs: list[ImageJob], batch_size: int) -> list[list[ImageJob]]:
    """Fixed batches: up to `batch_size` consecutive indices of one class, never across a chunk of
    SHARD_CHUNK indices (so shards with different batch sizes still own whole, disjoint chunks)."""
    out, current = [], []
    for job in jobs:
        if current and (job.class_index != current[0].class_index or len(current) == batch_size
                        or job.index // SHARD_CHUNK != current[0].index // SHARD_CHUNK):
            out.append(current)
            current = []
        current.append(job)
    return out + ([current] if current else [])


def shard_of(block: list[ImageJob], images_per_class: int, num_shards: int, whole_classes: bool = False) -> int:
    """The shard that owns a block: chunks of SHARD_CHUNK images are dealt out in turn, or whole
    classes where the method's images of a class depend on each other (DISEF's filter budget)."""
    if whole_classes:
        return block[0].class_index % num_shards
    chunks_per_class = -(-images_per_class // SHARD_CHUNK)
    return (block[0].class_index * chunks_per_class + block[0].index // SHARD_CHUNK) % num_shards


class ImageWriter:
    """PNG encoding and atomic writes on background threads (PIL releases the GIL while encoding);
    each image is listed in the manifest, in the order submitted, once its file is in place. After a
    failed write nothing more is listed."""

    def __init__(self, folder: Path, manifest: catalog.JsonlWriter, workers: int = min(4, os.cpu_count() or 1)):
        self.folder, self.manifest = Path(folder), manifest
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-writer")
        self.pending: collections.deque = collections.deque()
        self.in_flight = 4 * workers + 16  # images held in memory at most
        self.failed = False

    def submit(self, image, relpath: str, row: dict) -> int:
        """Queue one image; returns how many images were listed meanwhile."""
        self.pending.append((self.pool.submit(self._write, image, relpath), row))
        return self.list_finished(keep=self.in_flight)

    def _write(self, image, relpath: str) -> dict:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        atomic_write_bytes(self.folder / relpath, data)
        return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def list_finished(self, keep: int) -> int:
        """List the finished images at the head of the queue, waiting while more than `keep` are queued."""
        listed = 0
        while self.pending and (len(self.pending) > keep or self.pending[0][0].done()):
            future, row = self.pending.popleft()
            try:
                written = future.result()
            except BaseException:
                self.failed = True
                raise
            self.manifest.append({**row, **written})
            listed += 1
        return listed

    def close(self) -> int:
        """Wait for every image queued and list it (none after a failed write)."""
        try:
            return 0 if self.failed else self.list_finished(keep=0)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.manifest.close()


def status(p, run: Run, split: FewShotSplit) -> dict:
    folder = catalog.folder(run, p.synth_method)
    rows = catalog.read_manifest(folder)
    done = catalog.intact_keys(folder, rows) - {(r["class_index"], r["index"])
                                                for r in methods.get(p, run, split).outdated(rows)}
    jobs = all_jobs(p, split)
    return {"total": len(jobs), "done": sum(job.key in done for job in jobs)}


def damaged(p, run: Run, split: FewShotSplit) -> list[str]:
    """The synthesis stage's damage check: every planned image listed and intact (a lost or torn
    manifest row is missing work), none made from a prepared input that has changed since."""
    folder = catalog.folder(run, p.synth_method)
    rows = catalog.read_manifest(folder)  # read once: a manifest has a row per image (500,000 for ImageNet)
    damage = catalog.damaged_images(folder, rows)
    damage += [f"{folder / r['path']}: made from a prepared input that has changed since"
               for r in methods.get(p, run, split).outdated(rows)]
    listed = {(r["class_index"], r["index"]) for r in rows}
    return damage + [f"{folder / job.relpath}: not listed in any manifest" for job in all_jobs(p, split) if job.key not in listed]


def my_blocks(p, split: FewShotSplit, batch_size: int) -> list[list[ImageJob]]:
    """This shard's fixed blocks of jobs."""
    whole_classes = methods.METHODS[p.synth_method].whole_classes(p)
    return [block for block in blocks(all_jobs(p, split), batch_size)
            if shard_of(block, p.images_per_class, p.num_shards, whole_classes) == p.shard_index]


def generate(p, run: Run, split: FewShotSplit, progress: bool = True) -> dict:
    """The synthesis stage: this shard's missing images; its outputs are complete when every shard's are."""
    folder = catalog.folder(run, p.synth_method)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.rglob(".*.tmp"):  # temporary files of an interrupted write: never valid
        stale.unlink()
    rows = catalog.read_manifest(folder)
    batch_size = runtime.synth_batch_size(p, runtime.resolve_device(p))
    mine = my_blocks(p, split, batch_size)
    method = methods.get(p, run, split)  # (nothing is loaded until there is work)
    done = catalog.intact_keys(folder, rows, checksum_keys={job.key for block in mine for job in block})
    done -= {(r["class_index"], r["index"]) for r in method.outdated(rows)}  # made from inputs that changed since
    if len(done) < len(rows):
        print(f"[synthesis] {len(rows) - len(done)} listed image(s) are missing, damaged or made from inputs that "
              f"changed since; generating them again")
    todo = [block for block in mine if any(job.key not in done for job in block)]
    if todo:
        method.check_prepared()
        method.load(images=sum(len(block) for block in todo), batch_size=batch_size)
        variant = type(method).variant(p)  # with the method, the images' identity (naming.py names them)
        writer = ImageWriter(folder, catalog.JsonlWriter(folder / catalog.manifest_name(p.shard_index, p.num_shards),
                                                         sync=False))
        missing = sum(job.key not in done for block in todo for job in block)
        bar = progress_bar(total=missing, desc=f"synthesis shard {p.shard_index}/{p.num_shards}", unit="image", disable=not progress)
        try:
            for block in todo:
                class_index = block[0].class_index
                method.begin_class(class_index)
                shared = {"method": p.synth_method, "variant": variant, **method.describe(class_index),
                          "resolution": p.method.resolution, "batch_size": len(block),
                          "environment": run.environment, "weights": run.weights, "torch_threads": torch.get_num_threads()}
                planned = [dataclasses.replace(job, plan=method.plan(job), needed=job.key not in done) for job in block]
                for job, (image, made) in zip(planned, method.generate(planned), strict=True):
                    if not job.needed:  # generated again only to keep the block's batch intact
                        continue
                    bar.update(writer.submit(image, job.relpath, {
                        "class_index": job.class_index, "class_name": job.class_name, "index": job.index,
                        "seed": job.seed, "path": job.relpath, **job.plan, **shared, **made}))
        finally:
            bar.update(writer.close())
            bar.close()
    state = status(p, run, split)
    if state["done"] == state["total"]:
        run.outputs_complete("synthesis", method=p.synth_method, images=state["total"])
    return state
