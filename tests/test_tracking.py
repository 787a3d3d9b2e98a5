"""Experiment trackers (tracking.py): what a run sends to TensorBoard, W&B (offline) and MLflow are
its records' numbers, readable by each tool's own reader, and readable while the stage still runs."""

import json
import struct

import pytest

from datadream_lib import classification, tracking
from datadream_lib.errors import DataDreamError

ALL = "tensorboard+wandb+mlflow"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """W&B offline and MLflow in the run's own store, whatever the user's shell says."""
    for name in ("WANDB_MODE", "MLFLOW_TRACKING_URI", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))


def tensorboard_scalars(run_dir, part: str, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / tracking.TENSORBOARD / part))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def mlflow_scalars(run_dir, part: str, tag: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir / tracking.MLFLOW / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("datadream")
    [run] = client.search_runs([experiment.experiment_id], f"tags.`datadream.part` = '{part}'")
    assert run.data.tags["datadream.run"] == run_dir.name
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag))


def wandb_records(path):
    """The protobuf records of an offline W&B run's .wandb file: W&B's header (7 bytes), then
    LevelDB's log format (32 KiB blocks of chunks: crc32, length, type; records may span chunks).
    W&B has no Python reader of its own since its Go core; this one is for the test."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or kind == 0:  # a block's padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_scalars(run_dir, part: str, tag: str) -> list[tuple[int, float]]:
    """A scalar of the offline W&B run named for `part` (on its own axis, `<tag>/step`)."""
    [path] = [p for p in (run_dir / tracking.WANDB).rglob("offline-run-*/*.wandb")
              if any(r.WhichOneof("record_type") == "run" and r.run.display_name == f"{run_dir.name}/{part}"
                     for r in wandb_records(p))]
    out = []
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "run":
            assert (record.run.run_group, record.run.project) == (run_dir.name, "datadream")
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            if tag in row:
                out.append((row[f"{tag}/step"], row[tag]))
    return out


READERS = (tensorboard_scalars, mlflow_scalars, wandb_scalars)


def same(got: list[tuple[int, float]], expected: list[tuple[int, float]], rel: float = 1e-6) -> bool:
    """The same steps, and values within float32 roundoff."""
    return [s for s, _ in got] == [s for s, _ in expected] and \
        [v for _, v in got] == pytest.approx([v for _, v in expected], rel=rel)


def test_a_tracking_value_is_checked_before_any_work():
    for good in ("tensorboard", "none", "tensorboard+wandb", "mlflow+wandb", ALL):
        tracking.check(good, "parameter 'tracking'")
    for bad in ("tensorbord", "tensorboard+tensorboard", "tensorboard+", "None"):
        with pytest.raises(DataDreamError, match="joined by '\\+'"):
            tracking.check(bad, "parameter 'tracking'")


def test_each_tracker_gets_the_same_scalars_and_shows_them_before_the_part_ends(tmp_path):
    run_dir = tmp_path / "demo_seed0"
    part = "classification/synthetic"
    curves = tracking.curves(ALL, run_dir, part)
    curves.scalars("classifier/loss", [0.5, 0.4, 0.3])
    curves.scalars("classifier/lr", [1e-3, 5e-4, 1e-5])  # a second sweep from step 1, as the stages send them
    curves.flush()
    expected_loss = [(1, 0.5), (2, 0.4), (3, 0.3)]
    assert same(tensorboard_scalars(run_dir, part, "classifier/loss"), expected_loss)  # before close
    assert same(mlflow_scalars(run_dir, part, "classifier/loss"), expected_loss)
    curves.scalar("classifier/test_top1", 62.5, 2)
    curves.close()
    for read in READERS:  # each scalar on its own axis in W&B: the second sweep was kept
        assert same(read(run_dir, part, "classifier/loss"), expected_loss)
        assert same(read(run_dir, part, "classifier/lr"), [(1, 1e-3), (2, 5e-4), (3, 1e-5)])
        assert same(read(run_dir, part, "classifier/test_top1"), [(2, 62.5)])


def test_a_classifier_setting_sends_its_records_numbers_to_every_tracker(demo_run):
    """The classification stage with every tracker on: each one's curves are metrics.json's."""
    p, run, split = demo_run(tracking=ALL, clf_settings=["real_finetune"], clf_epochs=2, clf_warmup_epochs=0)
    classification.classify(p, run, split, progress=False)
    metrics = json.loads((run.dir / "classification" / "real_finetune" / "metrics.json").read_text())
    part = "classification/real_finetune"
    val = [(e["epoch"], e["val_top1"]) for e in metrics["history"]]
    losses = [(i, v) for i, v in enumerate((v for e in metrics["history"] for v in e["losses"]), start=1)]
    for read in READERS:
        assert same(read(run.dir, part, "classifier/val_top1"), val)
        assert same(read(run.dir, part, "classifier/loss"), losses)
        assert same(read(run.dir, part, "classifier/test_top1"), [(metrics["best_epoch"], metrics["top1"])])


def test_nothing_is_tracked_with_none(demo_run):
    p, run, split = demo_run(tracking="none", clf_settings=["zero_shot"])
    classification.classify(p, run, split, progress=False)
    assert not any((run.dir / folder).exists() for folder in (tracking.TENSORBOARD, tracking.WANDB, tracking.MLFLOW))
