"""The whole chain on params/demo.yaml through papermill, and what it leaves in the run folder."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from datadream_lib import catalog, files, pipeline, runs, stages, weights
from tests.conftest import run_pipeline_cli

ROOT = runs.project_root()
_pipeline = run_pipeline_cli


@pytest.fixture(scope="module")
def demo_run_dir(tiny_runs):
    root, args, stdout = tiny_runs
    return root, root / "demo_seed0", args


def test_pipeline_writes_every_stage_output(demo_run_dir):
    root, run_dir, _ = demo_run_dir
    for stage, notebook in ((s.name, s.notebook) for s in stages.STAGES):
        executed = json.loads((run_dir / "notebooks" / notebook).read_text())
        assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code")
        assert (run_dir / "stages" / f"{stage}.json").exists()
    rows = catalog.read_manifest(run_dir / "synthetic" / "datadream")
    assert len(rows) == 4 * 8 and len({(r["class_index"], r["index"]) for r in rows}) == 32
    assert all((run_dir / "synthetic" / "datadream" / r["path"]).exists() for r in rows)
    for setting in ("zero_shot", "real_finetune", "synthetic", "synthetic_real"):
        metrics = json.loads((run_dir / "classification" / setting / "metrics.json").read_text())
        assert {"top1", "per_class", "val_top1", "best_epoch", "selected_on", "test_evaluations"} <= set(metrics)
        assert 0 <= metrics["top1"] <= 100 and len(metrics["per_class"]) == 4
    fid_table = pd.read_csv(run_dir / "fid" / "per_class.csv")
    assert {"fid", "kid", "real_set", "class_name", "images", "synth_method", "variant"} <= set(fid_table.columns)
    ablation = pd.read_csv(run_dir / "ablations" / "results.csv")
    assert set(ablation["ablation"]) == {"images_per_class", "shots"}
    shots = ablation[ablation["ablation"] == "shots"]
    assert sorted(shots[shots["setting"] == "synthetic_real"]["shots"]) == [1, 2]
    assert sorted(shots[shots["setting"] == "real_finetune"]["shots"]) == [1, 2]  # Fig. 5 right: Real-finetune per K
    # the grid point equal to the run (8 images per class) is the run's own classifier
    own = ablation[(ablation["ablation"] == "images_per_class") & (ablation["images_per_class"] == 8)]
    assert list(own["top1"]) == [json.loads((run_dir / "classification" / "synthetic_real" / "metrics.json").read_text())["top1"]]
    assert not (run_dir / "ablations" / "images_per_class" / "n8").exists()
    for figure in ("fig3_real_vs_synthetic.png", "fig4_fid_histogram.png", "fig5_ablations.png", "adaptation_loss.png",
                   "table1.csv", "table1.md", "table1.tex"):
        assert (run_dir / "figures" / figure).stat().st_size > 0
    assert "Real-finetune" in (run_dir / "figures" / "table1.md").read_text()
    # which weights made what (weights.py): adapters, images, classifiers and FID name their records
    recorded = weights.records(run_dir)
    adapter = json.loads((run_dir / "adaptation" / "dset" / "adapter.json").read_text())
    assert recorded[adapter["weights"]]["sd_model"]["preset"] == "tiny"
    assert {r["weights"] for r in rows} == {adapter["weights"]}
    synthetic = json.loads((run_dir / "classification" / "synthetic" / "metrics.json").read_text())
    assert "clip_pretrained" in recorded[synthetic["weights"]] and synthetic["synthetic_weights"] == [adapter["weights"]]
    assert "fid_features" in recorded[json.loads((run_dir / "fid" / "summary.json").read_text())["weights"]]


def test_rerun_skips_finished_stages_and_other_parameters_are_refused(demo_run_dir):
    root, run_dir, args = demo_run_dir
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "synthetic").rglob("*.png")}
    again = _pipeline(*args, "--set", "seed=0")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("complete, skipped") == 5
    assert before == {p: p.stat().st_mtime_ns for p in (run_dir / "synthetic").rglob("*.png")}
    other = _pipeline(*args, "--set", "seed=0", "--set", "guidance_scale=3.0")
    assert other.returncode == 2
    assert "other parameters" in other.stderr and "guidance_scale: 2.0 -> 3.0" in other.stderr
    assert "Traceback" not in other.stderr


def test_one_command_ran_every_seed(demo_run_dir):
    root, _, _ = demo_run_dir
    seeds = [files.read_json(root / f"demo_seed{s}" / "stages" / "classification.json") for s in (0, 1)]
    assert all(seeds)
    split0, split1 = (json.loads((root / f"demo_seed{s}" / "split.json").read_text()) for s in (0, 1))
    assert split0["seed"] == 0 and split1["seed"] == 1 and split0["shot_order"] != split1["shot_order"]
    assert split0["test"] == split1["test"]  # every seed is tested on the same images


@pytest.mark.parametrize("override, needle", [
    ("shotz=3", "Did you mean 'shots'"),
    ("dataset=imagenett", "valid datasets"),
    ("images_per_class=0", "must be >= 1"),
])
def test_bad_input_stops_before_any_work(tmp_path, override, needle):
    result = _pipeline("params/demo.yaml", "--set", f"runs_root={tmp_path}", "--set", override)
    assert result.returncode == 2 and needle in result.stderr
    assert not any(tmp_path.iterdir())  # nothing was created


def test_missing_dataset_root_stops_before_the_first_notebook(tmp_path):
    result = _pipeline("params/demo.yaml", "--set", f"runs_root={tmp_path / 'runs'}", "--set", "dataset=imagefolder",
                       "--set", f"data_root={tmp_path / 'nowhere'}")
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "runs").exists()  # no run folder is left to refuse the corrected parameters


def test_shards_wait_for_the_adapters(tmp_path):
    result = _pipeline("params/demo.yaml", "--set", f"runs_root={tmp_path / 'runs'}", "--set", "num_shards=2")
    assert result.returncode == 2 and "Make every part of adaptation first" in result.stderr


def _papermill(notebook, out, *args):
    return subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / notebook), str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_papermill_cli_with_a_parameter_file(tmp_path):
    out = tmp_path / "01_adaptation.ipynb"
    result = _papermill("01_adaptation.ipynb", out, "-f", "params/demo.yaml", "-p", "runs_root", str(tmp_path / "runs"),
                        "-p", "adapt_epochs", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    adapter = tmp_path / "runs" / "demo" / "adaptation" / "dset"
    assert (adapter / "pytorch_lora_weights.safetensors").exists()
    assert json.loads((adapter / "adapter.json").read_text())["steps"] == 4  # 1 epoch x ceil(4 x 4 / 4)
    assert json.loads(out.read_text())["cells"][1]["metadata"]["tags"] == ["parameters"]


def test_papermill_cli_stops_on_a_typo_in_a_key(tmp_path):
    result = _papermill("01_adaptation.ipynb", tmp_path / "out.ipynb", "-f", "params/demo.yaml",
                        "-p", "runs_root", str(tmp_path / "runs"), "-p", "shotz", "3")
    assert result.returncode != 0
    assert "unknown parameter 'shotz'. Did you mean 'shots'?" in result.stderr + result.stdout
    assert not (tmp_path / "runs").exists()


def test_unreachable_weights_stop_the_pipeline_before_any_stage(tmp_path):
    result = _pipeline("params/demo.yaml", "--set", f"runs_root={tmp_path / 'runs'}", "--set", "models=pretrained",
                       "--set", "device=cpu", "--set", "fid_features=inception", "--set", "sd_model=nobody/no-such-model",
                       "--set", "local_files_only=true")
    assert result.returncode == 2
    assert "Stable Diffusion weights 'nobody/no-such-model' are not reachable" in result.stderr
    assert "sd_model" in result.stderr and "models: tiny" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing to refuse once sd_model is corrected


def test_an_earlier_executed_notebook_is_kept_not_overwritten(tmp_path):
    out = tmp_path / "02_synthesis.ipynb"
    for attempt in ("first", "second"):
        out.write_text(attempt)
        pipeline._keep_previous(out)
        assert not out.exists()
    assert (tmp_path / "02_synthesis.attempt-1.ipynb").read_text() == "first"
    assert (tmp_path / "02_synthesis.attempt-2.ipynb").read_text() == "second"


FIGURE_CALLS = {"01_adaptation.ipynb": ["fig3_real_vs_synthetic", "adaptation_losses"],
                "02_synthesis.ipynb": ["fig3_real_vs_synthetic"], "04_fid_analysis.ipynb": ["fig4_fid_histogram"],
                "05_ablations.ipynb": ["fig5_ablations"]}


def test_every_executed_notebook_holds_its_figures_as_images(tiny_runs):
    """The record of a run shows its figures: each figure cell of an executed notebook holds an
    image/png output, and no figure is an output of text only (`<Figure size ...>`); the record is
    read-only."""
    root, _, _ = tiny_runs
    for notebook, calls in FIGURE_CALLS.items():
        record = root / "demo_seed0" / "notebooks" / notebook
        assert record.stat().st_mode & 0o222 == 0  # read-only: opening the record in JupyterLab cannot rewrite it
        cells = json.loads(record.read_text())["cells"]
        for call in calls:
            cell = next(c for c in cells if f"figures.{call}(" in "".join(c["source"]))
            kinds = [kind for output in cell["outputs"] for kind in output.get("data", {})]
            assert "image/png" in kinds, (notebook, call, kinds)
        figures_as_text = [o["data"]["text/plain"] for c in cells for o in c.get("outputs", [])
                           if "Figure size" in "".join(o.get("data", {}).get("text/plain", "")) and "image/png" not in o["data"]]
        assert not figures_as_text, (notebook, figures_as_text)


def test_a_run_stores_its_results_by_identity_and_names_them_only_in_drawings(tiny_runs):
    """Renaming a method's display name changes no stored file: no record of a finished run (manifest
    rows, metrics, the FID and ablation tables and summary, the curves) holds a display name of its
    images or of its classifiers' rows; only what is drawn does (its figures/ and executed notebooks)."""
    from datadream_lib import methods, naming

    root, _, _ = tiny_runs
    run = root / "demo_seed0"
    names = {methods.display("datadream", "dset"), *naming.SETTING_LABELS.values(), naming.REFERENCE_LABEL}
    records = [path for path in run.rglob("*") if path.is_file() and path.suffix not in (".png", ".ipynb")
               and "figures" not in path.relative_to(run).parts]
    assert {"manifest-000-of-001.jsonl", "metrics.json", "per_class.csv", "summary.json", "results.csv"} <= {p.name for p in records}
    assert any("tfevents" in p.name for p in records)
    holding = {str(path.relative_to(run)): name for path in records for name in names if name.encode() in path.read_bytes()}
    assert not holding
    drawn = (run / "figures" / "table1.md").read_text()
    assert "DataDream-dset, synthetic + real" in drawn


def test_progress_shows_in_the_terminal_and_in_the_record(tiny_runs):
    """The pipeline's terminal shows each stage's work as it goes (steps or images done, rate) and
    the saved notebooks hold each bar's final state (n/n), not its first frame; no kernel warning
    (ipykernel's TCP one) reaches the terminal."""
    root, _, stdout = tiny_runs
    assert re.search(r"\[pipeline\] adaptation: adapt dset: 24/24 step, [\d.]+ step/s, done in", stdout), stdout
    assert re.search(r"\[pipeline\] synthesis: synthesis shard 0/1: 32/32 image", stdout), stdout
    assert re.search(r"\[pipeline\] classification: classifier \(synthetic_real\): (\d+)/\1 step", stdout), stdout
    assert "without encryption" not in stdout
    for notebook in ("01_adaptation.ipynb", "02_synthesis.ipynb", "03_classification.ipynb", "04_fid_analysis.ipynb"):
        cells = json.loads((root / "demo_seed0" / "notebooks" / notebook).read_text())["cells"]
        text = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []) if o.get("output_type") == "stream")
        final = {}  # what a viewer shows: the last redraw of each bar (carriage returns overwrite the line)
        for frame in re.split(r"[\r\n]", text):
            bar = re.match(r"(.+?):\s+\d+%\|.*?\| (\d+)/(\d+) ", frame)
            if bar:
                final[bar.group(1)] = (int(bar.group(2)), int(bar.group(3)))
        assert final and all(n == total for n, total in final.values()), (notebook, final)


def test_tensorboard_shows_the_runs_curves(tiny_runs):
    """`tensorboard --logdir runs` reads each run's curves: TensorBoard's own reader finds the
    adaptation losses of adapter.json, the classifier's per-epoch validation accuracy of
    metrics.json, and one FID point per class of fid/per_class.csv."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _, _ = tiny_runs
    run = root / "demo_seed0"

    def scalars(part: str, tag: str) -> list[tuple[int, float]]:
        events = EventAccumulator(str(run / "tensorboard" / part))
        events.Reload()
        return [(e.step, e.value) for e in events.Scalars(tag)]

    adapter = json.loads((run / "adaptation" / "dset" / "adapter.json").read_text())
    losses = scalars("adaptation/dset", "adaptation/loss")
    assert [s for s, _ in losses] == list(range(1, adapter["steps"] + 1))
    assert [v for _, v in losses] == pytest.approx(adapter["losses"], rel=1e-6)
    assert len(scalars("adaptation/dset", "adaptation/lr")) == adapter["steps"]
    metrics = json.loads((run / "classification" / "synthetic" / "metrics.json").read_text())
    assert [v for _, v in scalars("classification/synthetic", "classifier/val_top1")] == pytest.approx(
        [e["val_top1"] for e in metrics["history"]], rel=1e-6)
    assert scalars("classification/synthetic", "classifier/test_top1")[0][1] == pytest.approx(metrics["top1"], rel=1e-6)
    fid = pd.read_csv(run / "fid" / "per_class.csv")
    ours = fid[(fid["synth_method"] == "datadream") & (fid["variant"] == "dset")]
    assert len(ours) == len(set(fid["class_index"])) and set(fid["images"]) == {"synthetic", "reference"}
    assert [v for _, v in scalars("fid", "fid/datadream/dset")] == pytest.approx(list(ours["fid"]), rel=1e-5)
    assert [v for _, v in scalars("fid", "fid/reference")] == pytest.approx(list(fid[fid["images"] == "reference"]["fid"]), rel=1e-5)
