"""Synthesis: one seeded generator per image; batch size, shards and resuming never change an image."""

import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from datadream_lib import adaptation, catalog, files, runs, synthesis
from datadream_lib.errors import DataDreamError


def _images(run, method="datadream"):
    folder = run.path("synthetic", method)
    return {(r["class_index"], r["index"]): (folder / r["path"]).read_bytes() for r in catalog.read_manifest(folder)}


@pytest.fixture
def adapted(demo_run):
    """A demo run with its dset adapter trained (few steps), and a factory for sibling runs sharing it."""
    p, run, split = demo_run(adapt_epochs=1, images_per_class=3, num_inference_steps=3, ablation_images_per_class=[3])
    adaptation.train_adapters(p, run, split, progress=False)

    def sibling(name, **changes):
        q = p.replace(**changes)
        other = runs.open_run(q, run.dir.parent / name)
        adapter = other.path("adaptation")
        if not adapter.exists():
            adapter.symlink_to(run.path("adaptation"), target_is_directory=True)
        return q, other
    return p, run, split, sibling


def _pixels(png: bytes):
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)


@pytest.mark.parametrize("scheduler", ["pndm", "euler_ancestral"])  # the second draws fresh noise at every step
def test_same_images_whatever_the_sharding_bit_for_bit(adapted, scheduler):
    p, run, split, sibling = adapted
    q, single = sibling("single", synth_batch_size=2, scheduler=scheduler)
    state = synthesis.generate(q, single, split, progress=False)
    assert state == {"total": 12, "done": 12} and single.finish_stage("synthesis")
    reference = _images(single)

    q, sharded = sibling("sharded", synth_batch_size=2, scheduler=scheduler)
    for shard in (2, 0, 1):
        assert not sharded.finish_stage("synthesis")  # done only when every shard is
        synthesis.generate(q.replace(shard_index=shard, num_shards=3), sharded, split, progress=False)
    assert sharded.finish_stage("synthesis")
    assert len(list(sharded.path("synthetic", "datadream").glob("manifest-*-of-003.jsonl"))) == 3
    assert _images(sharded) == reference


def test_batch_size_changes_images_by_roundoff_at_most(adapted):
    p, run, split, sibling = adapted
    synthesis.generate(p.replace(synth_batch_size=1), run, split, progress=False)
    reference = _images(run)
    q, batched = sibling("batched", synth_batch_size=5)
    synthesis.generate(q, batched, split, progress=False)
    ours = _images(batched)
    assert ours.keys() == reference.keys()
    for key in reference:
        diff = np.abs(_pixels(ours[key]) - _pixels(reference[key]))
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01, key


def test_classes_never_share_a_noise_sequence(adapted):
    p, run, split, _ = adapted
    seeds = [job.seed for job in synthesis.all_jobs(p, split)]
    assert len(set(seeds)) == len(seeds)


def test_manifest_rows_describe_each_image(adapted):
    p, run, split, _ = adapted
    synthesis.generate(p, run, split, progress=False)
    rows = catalog.read_manifest(run.path("synthetic", "datadream"))
    assert len(rows) == 12
    row = rows[0]
    for key in ("class_index", "class_name", "index", "seed", "prompt", "model", "adapter", "sampler", "steps", "guidance"):
        assert key in row
    assert row["prompt"] == split.prompts()[row["class_index"]]
    assert (row["sampler"], row["steps"], row["guidance"], row["adapter"]) == ("pndm", 3, 2.0, "adaptation/dset")


def test_resumed_run_equals_uninterrupted_and_lists_no_half_written_image(adapted, monkeypatch):
    p, run, split, sibling = adapted
    synthesis.generate(p.replace(synth_batch_size=2), run, split, progress=False)
    reference = _images(run)

    q, interrupted = sibling("interrupted", synth_batch_size=2)
    real_write = files.atomic_write_bytes

    def crash_on_fifth(path, payload):  # on the writer's threads; class 1, index 1 is the 5th image made
        if path.parent.name.startswith("0001_") and path.name == "00001.png":  # die mid-write
            path.parent.mkdir(parents=True, exist_ok=True)  # the class's first image may still be on another thread
            (path.parent / f".{path.name}.crash.tmp").write_bytes(payload[: len(payload) // 2])
            raise KeyboardInterrupt
        real_write(path, payload)

    monkeypatch.setattr(synthesis, "atomic_write_bytes", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        synthesis.generate(q, interrupted, split, progress=False)
    partial = catalog.read_manifest(interrupted.path("synthetic", "datadream"))
    assert len(partial) == 4 and not interrupted.finish_stage("synthesis")
    for row in partial:  # every listed image is complete
        assert (interrupted.path("synthetic", "datadream") / row["path"]).read_bytes() == reference[(row["class_index"], row["index"])]

    monkeypatch.setattr(synthesis, "atomic_write_bytes", real_write)
    state = synthesis.generate(q, interrupted, split, progress=False)
    assert state == {"total": 12, "done": 12}
    assert _images(interrupted) == reference
    assert not list(interrupted.path("synthetic").rglob("*.tmp"))
    keys = [(r["class_index"], r["index"]) for r in catalog.read_manifest(interrupted.path("synthetic", "datadream"))]
    assert len(keys) == len(set(keys)) == 12


def test_images_are_listed_in_the_order_made_and_only_once_on_disk(tmp_path, monkeypatch):
    real_write = synthesis.atomic_write_bytes

    def slow_first(path, payload):  # the first image takes longest: the later ones are on disk first
        if path.name == "00000.png":
            time.sleep(0.5)
        real_write(path, payload)

    monkeypatch.setattr(synthesis, "atomic_write_bytes", slow_first)
    manifest = catalog.JsonlWriter(tmp_path / "manifest-000-of-001.jsonl", sync=False)
    listed = []
    append = manifest.append

    def checked_append(row):
        assert (tmp_path / row["path"]).stat().st_size == row["bytes"]  # listed only once complete on disk
        listed.append(row["index"])
        append(row)

    manifest.append = checked_append
    writer = synthesis.ImageWriter(tmp_path, manifest, workers=3)
    for i in range(6):
        writer.submit(Image.new("RGB", (8, 8), (40 * i, 0, 0)), f"c/{i:05d}.png", {"class_index": 0, "index": i,
                                                                                  "path": f"c/{i:05d}.png"})
    assert listed == []  # the first is still being written: nothing after it is listed
    assert writer.close() == 6 and listed == list(range(6))
    assert [r["index"] for r in catalog.read_manifest(tmp_path)] == list(range(6))


def test_fused_adapters_change_images_by_roundoff_at_most(adapted):
    p, run, split, sibling = adapted
    synthesis.generate(p, run, split, progress=False)
    fused = _images(run)
    assert {r["fused"] for r in catalog.read_manifest(run.path("synthetic", "datadream"))} == {True}
    q, unfused = sibling("unfused", synth_fuse_lora=False)
    synthesis.generate(q, unfused, split, progress=False)
    assert {r["fused"] for r in catalog.read_manifest(unfused.path("synthetic", "datadream"))} == {False}
    reference = _images(unfused)
    assert reference.keys() == fused.keys()
    for key in reference:
        diff = np.abs(_pixels(fused[key]) - _pixels(reference[key]))
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01, key


def test_cls_adapters_fused_class_by_class_give_the_same_images_whatever_the_sharding(demo_run):
    """Each class's adapter is fused into an exact copy of the base weights, so a shard that makes
    classes 0 and 3 gives class 3 the bits a single process gives it after classes 1 and 2."""
    p, run, split = demo_run(variant="cls", adapt_epochs=1, images_per_class=2, num_inference_steps=3, synth_batch_size=2,
                             ablation_images_per_class=[2])
    adaptation.train_adapters(p, run, split, progress=False)
    synthesis.generate(p, run, split, progress=False)
    reference = _images(run)
    sharded = runs.open_run(p, run.dir.parent / "sharded")
    sharded.path("adaptation").symlink_to(run.path("adaptation"), target_is_directory=True)
    for shard in (1, 0, 2):
        synthesis.generate(p.replace(shard_index=shard, num_shards=3), sharded, split, progress=False)
    assert _images(sharded) == reference and len(reference) == 8


def test_torn_manifest_line_is_ignored_and_repaired(tmp_path):
    path = tmp_path / "manifest-000-of-001.jsonl"
    path.write_text(json.dumps({"class_index": 0, "index": 0}) + "\n" + '{"class_index": 0, "ind')
    assert len(catalog.read_manifest(tmp_path)) == 1
    writer = catalog.JsonlWriter(path)
    writer.append({"class_index": 0, "index": 1})
    writer.close()
    assert [r["index"] for r in catalog.read_manifest(tmp_path)] == [0, 1]


def test_missing_adapter_stops_before_generating(demo_run):
    p, run, split = demo_run(images_per_class=2, ablation_images_per_class=[1])
    with pytest.raises(DataDreamError, match="adapter.*missing.*01_adaptation"):
        synthesis.generate(p, run, split, progress=False)
    assert catalog.read_manifest(run.path("synthetic", "datadream")) == []


def test_cls_fast_path_gives_each_class_the_weights_it_would_have_alone(demo_run):
    """Fused LoRA + fused q/k/v, class after class: class 3's attention weights, fused projections
    included, are bit for bit those of a process that loads class 3 first (the base is restored and
    the fused projections refreshed at every class), and differ from class 0's."""
    from diffusers.models.attention_processor import Attention

    from datadream_lib import methods

    p, run, split = demo_run(variant="cls", adapt_epochs=2, adapt_lr=5e-2, shots=1, images_per_class=2,
                             ablation_images_per_class=[2])
    adaptation.train_adapters(p, run, split, progress=False)

    def attention_weights(classes):
        method = methods.get(p, run, split)
        method.load()
        assert method.sd.speed["fused_qkv"] and not method.sd.speed["compiled"]
        for c in classes:
            method.begin_class(c)
        unet = method.pipe.unet
        assert not any("lora" in name for name, _ in unet.named_parameters())  # fused, then the LoRA layers removed
        weights = {}
        for name, attn in unet.named_modules():
            if isinstance(attn, Attention):
                fused = attn.to_qkv.weight if hasattr(attn, "to_qkv") else attn.to_kv.weight
                parts = [attn.to_q, attn.to_k, attn.to_v] if hasattr(attn, "to_qkv") else [attn.to_k, attn.to_v]
                assert torch.equal(fused, torch.cat([layer.weight for layer in parts]))
                weights[name] = fused.detach().clone()
        return weights

    after_others, alone, first = attention_weights([0, 1, 2, 3]), attention_weights([3]), attention_weights([0])
    assert all(torch.equal(after_others[k], alone[k]) for k in alone)
    assert any(not torch.equal(first[k], alone[k]) for k in alone)


def test_manifest_rows_say_how_each_image_was_made(adapted):
    p, run, split, sibling = adapted
    q, plain = sibling("plain", synth_fuse_qkv=False, synth_batch_size=None)
    synthesis.generate(q, plain, split, progress=False)
    rows = catalog.read_manifest(plain.path("synthetic", "datadream"))
    assert {(r["fused"], r["fused_qkv"], r["channels_last"], r["compiled"]) for r in rows} == {(True, False, False, False)}
    assert {r["batch_size"] for r in rows} == {3}  # unset on a CPU: blocks of 10, cut at the class's 3 images
    synthesis.generate(p, run, split, progress=False)
    fast = catalog.read_manifest(run.path("synthetic", "datadream"))
    assert {r["fused_qkv"] for r in fast} == {True}
    q, nhwc = sibling("nhwc", channels_last=True)
    synthesis.generate(q, nhwc, split, progress=False)
    assert {r["channels_last"] for r in catalog.read_manifest(nhwc.path("synthetic", "datadream"))} == {True}
    reference = _images(plain)
    for other in (_images(run), _images(nhwc)):  # one matmul for q, k, v; NHWC convolutions: roundoff at most
        for key in reference:
            diff = np.abs(_pixels(other[key]) - _pixels(reference[key]))
            assert diff.max() <= 2 and (diff > 0).mean() < 0.01, key


@pytest.mark.parametrize("images_per_class, num_shards", [(500, 3), (70, 2), (5, 4)])
def test_shards_with_different_batch_sizes_split_the_images_exactly(images_per_class, num_shards):
    """Each shard may pick its batch from its own GPU's memory: shards own chunks of 64 images, not
    batches, so together they make every image exactly once whatever batch sizes they run."""
    jobs = [synthesis.ImageJob(c, f"c{c}", f"class {c}", i, synthesis.image_seed(0, c, i))
            for c in range(3) for i in range(images_per_class)]
    for sizes in ([10] * num_shards, [64, 7, 10, 1][:num_shards], [1, 64, 3, 10][:num_shards]):
        made = []
        for shard, size in enumerate(sizes):
            batches = synthesis.blocks(jobs, size)
            assert all(len(b) <= size and len({j.class_index for j in b}) == 1 for b in batches)
            made += [job.key for b in batches if synthesis.shard_of(b, images_per_class, num_shards) == shard for job in b]
        assert sorted(made) == sorted(job.key for job in jobs), sizes
