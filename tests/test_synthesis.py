"""Synthesis: one seeded generator per image; batch size, shards and resuming never change an image."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from datadream_lib import adaptation, catalog, runs, synthesis
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
    real_write, calls = runs.atomic_write_bytes, {"n": 0}

    def crash_on_fifth(path, payload):
        calls["n"] += 1
        if calls["n"] == 5:  # die mid-write: a temporary file is left behind, nothing renamed
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
