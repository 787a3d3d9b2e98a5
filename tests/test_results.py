"""Table 1, Fig. 4 and Fig. 5 rebuilt from many runs: the aggregation notebook on tiny runs of two
seeds (and a cls run), checked against the metrics files themselves."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from datadream_lib import datasets, figures, params, results, runs
from datadream_lib.errors import DataDreamError

ROOT = runs.project_root()


@pytest.fixture(scope="module")
def rebuilt(tiny_runs, tmp_path_factory):
    root, _, _ = tiny_runs
    out = tmp_path_factory.mktemp("figures")
    executed = out / "06_paper_results.ipynb"
    result = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "06_paper_results.ipynb"),
                             str(executed), "-y", json.dumps({"run_roots": [str(root)], "out_dir": str(out)})],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, out


def _top1(root, run, setting):
    return json.loads((root / run / "classification" / setting / "metrics.json").read_text())["top1"]


def test_table1_is_mean_and_std_over_seeds_of_the_metrics_files(rebuilt):
    root, out = rebuilt
    table = pd.read_csv(out / "table1.csv")
    row = table[(table["method"] == "DataDream-dset, synthetic + real") & (table["dataset"] == "toy")].iloc[0]
    seeds = [_top1(root, f"demo_seed{s}", "synthetic_real") for s in (0, 1)]
    assert row["seeds"] == 2
    assert row["mean"] == pytest.approx(np.mean(seeds), abs=0.01) and row["std"] == pytest.approx(np.std(seeds, ddof=1), abs=0.01)
    cls = table[(table["method"] == "DataDream-cls, synthetic only") & (table["dataset"] == "toy")].iloc[0]
    assert cls["seeds"] == 1 and cls["mean"] == pytest.approx(_top1(root, "demo_cls_seed0", "synthetic"), abs=0.01)
    assert set(table["dataset"]) == {"toy"}  # the ten benchmarks were not run: no rows, no Avg
    assert table["paper"].isna().all()  # nor a paper number for the toy dataset


def test_table1_layout_shows_missing_cells_empty_and_the_papers_numbers(rebuilt):
    _, out = rebuilt
    markdown = (out / "table1.md").read_text()
    header = markdown.splitlines()[0]
    assert header.startswith("| method | IN | CAL | DTD | EuSAT | AirC | Pets | Cars | SUN | Food | FLO | toy | Avg |")
    zero_shot = next(line for line in markdown.splitlines() if line.startswith("| CLIP zero-shot |"))
    cells = [c.strip() for c in zero_shot.strip("|").split("|")]
    assert cells[1:11] == [""] * 10 and cells[12] == ""  # not run: empty, never 0; no average without all ten
    assert "±" in cells[11]
    paper = markdown.splitlines()[markdown.splitlines().index(zero_shot) + 1]
    assert paper.startswith("|   paper (difference) | 70.2 | 96.1 |") and "| 64.1 |" in paper
    assert r"$\pm$" in (out / "table1.tex").read_text()


def test_fig4_and_fig5_are_drawn_per_dataset(rebuilt):
    root, out = rebuilt
    for name in ("fig4_fid_toy.png", "fig5_ablations_toy.png"):
        assert (out / name).stat().st_size > 5000
    tables = results.collect(results.find_runs([root]))
    assert set(tables["fid"]["method"]) == {"DataDream-dset", "DataDream-cls", "real val (reference)"}
    ablation = tables["ablations"]
    assert set(ablation["seed"]) == {0, 1}
    assert set(ablation["method"]) == {"DataDream-dset, synthetic + real", "Real-finetune"}
    # Fig. 5 right: Real-finetune on the same K shots, a point per K and seed; it does not vary with n (left)
    real = ablation[ablation["method"] == "Real-finetune"]
    assert set(real["ablation"]) == {"shots"} and sorted(real["shots"]) == [1, 1, 2, 2]
    k1 = real[(real["shots"] == 1) & (real["seed"] == 0)]["top1"].item()
    sub_run = root / "demo_seed0" / "ablations" / "shots" / "k1" / "classification" / "real_finetune" / "metrics.json"
    metrics = json.loads(sub_run.read_text())
    assert metrics["top1"] == k1 and metrics["n_real"] == 4  # 1 shot x 4 classes
    assert not any("ablations" in str(r) for r in results.find_runs([root]))  # sub-runs belong to their parent


def test_table1_has_the_cls_synthetic_plus_real_row_with_the_papers_numbers(rebuilt):
    root, out = rebuilt
    table = pd.read_csv(out / "table1.csv")
    row = table[(table["method"] == "DataDream-cls, synthetic + real") & (table["dataset"] == "toy")].iloc[0]
    assert row["mean"] == pytest.approx(_top1(root, "demo_cls_seed0", "synthetic_real"), abs=0.01)
    lines = (out / "table1.md").read_text().splitlines()
    ours = next(i for i, line in enumerate(lines) if line.startswith("| DataDream-cls, synthetic + real |"))
    paper = [c.strip() for c in lines[ours + 1].strip("|").split("|")]
    # the paper's row: printed numbers, and the AirC cell (unreadable in our copy) derived from the Avg, marked
    assert paper[1:6] == ["73.8", "97.6", "81.6", "93.8", "≈68.1"] and paper[-1] == "86.5"
    assert r"$\approx$68.1" in (out / "table1.tex").read_text()


def test_table1_average_needs_all_ten_datasets_and_compares_with_the_paper():
    rows = [{"method": "Real-finetune", "dataset": d, "seed": s, "top1": results.PAPER_TABLE1["Real-finetune"][d] + s}
            for d in datasets.BENCHMARKS for s in (0, 1)]
    table = results.table1(pd.DataFrame(rows))
    avg = table[table["dataset"] == "Avg"].iloc[0]
    assert avg["mean"] == pytest.approx(np.mean([results.PAPER_TABLE1["Real-finetune"][d] for d in datasets.BENCHMARKS]) + 0.5)
    eurosat = table[table["dataset"] == "eurosat"].iloc[0]
    assert (eurosat["paper"], eurosat["difference"]) == (93.5, pytest.approx(0.5))
    display = results.table1_display(table)
    assert display.iloc[1]["EuSAT"] == "93.5 (+0.5)" and display.iloc[0]["EuSAT"] == "94.0 ± 0.7"
    nine = results.table1(pd.DataFrame([r for r in rows if r["dataset"] != "dtd"]))
    assert "Avg" not in set(nine["dataset"])


def test_the_papers_table1_is_the_reference_copy():
    # docs/hyperparameters.md §7 = the paper's Table 1; two rows state an average that is not the mean of their ten numbers
    off = {m for m, row in results.PAPER_TABLE1.items()
           if abs(np.mean([row[d] for d in datasets.BENCHMARKS]) - row["Avg"]) > 0.051}
    assert off == {"CLIP zero-shot", "DataDream-cls, synthetic only"}
    cls_real = results.PAPER_TABLE1["DataDream-cls, synthetic + real"]
    assert results.PAPER_DERIVED == {("DataDream-cls, synthetic + real", "fgvc_aircraft")}
    assert cls_real["fgvc_aircraft"] == pytest.approx(10 * 86.5 - (73.8 + 97.6 + 81.6 + 93.8 + 94.5 + 91.2 + 77.5 + 87.5 + 99.4))


def test_the_notebook_stops_on_a_typo_and_on_no_runs(tmp_path):
    with pytest.raises(DataDreamError, match="Did you mean 'run_roots'"):
        params.notebook_values({"run_root": ["x"]}, results.NOTEBOOK_PARAMETERS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataDreamError, match="no run folders"):
        results.rebuild([tmp_path / "empty"], tmp_path / "out")


def test_a_table1_cell_whose_seeds_used_different_weights_is_marked_and_said(tiny_runs, tmp_path, capsys):
    root, _, _ = tiny_runs
    for seed in (0, 1):
        shutil.copytree(root / f"demo_seed{seed}", tmp_path / "runs" / f"demo_seed{seed}")
    same = results.rebuild([tmp_path / "runs"], tmp_path / "same")
    assert not same["table1"].apply(lambda column: column.astype(str).str.contains("mixed weights")).any().any()
    assert all("sd_model: tiny (random weights" in w for w in same["weights"]["weights"])

    # seed 1's images as if made from another Stable Diffusion: the record its synthetic metrics name
    seed1 = tmp_path / "runs" / "demo_seed1"
    made_with = json.loads((seed1 / "classification" / "synthetic" / "metrics.json").read_text())["synthetic_weights"]
    for rid in made_with:
        path = seed1 / "weights" / f"{rid}.json"
        record = json.loads(path.read_text())
        record["models"]["sd_model"] = {"parameter": "sd_model", "source": "someone/another-sd", "revision": "c" * 40,
                                        "files": {"unet/diffusion_pytorch_model.safetensors": "d" * 64}}
        path.write_text(json.dumps(record))
    mixed = results.rebuild([tmp_path / "runs"], tmp_path / "mixed")
    markdown = (tmp_path / "mixed" / "table1.md").read_text().splitlines()
    synthetic = next(line for line in markdown if line.startswith("| DataDream-dset, synthetic only |"))
    zero_shot = next(line for line in markdown if line.startswith("| CLIP zero-shot |"))
    assert "(mixed weights)" in synthetic and "(mixed weights)" not in zero_shot  # zero-shot used the same CLIP
    said = capsys.readouterr().out
    assert "DataDream-dset, synthetic only / toy holds runs made with different pretrained weights" in said
    assert "someone/another-sd@cccccccccc" in mixed["weights"].set_index("run").loc["demo_seed1", "weights"]
    assert "someone/another-sd" in (tmp_path / "mixed" / "weights_used.csv").read_text()


def test_fig3_by_shots_and_what_an_unfinished_run_lacks(tiny_runs, tmp_path, capsys):
    """Fig. 3 as the paper draws it: one class, a row per source, a column group per K (the run's K
    and its shot-ablation sub-runs'), dset beside cls, drawn at the paper's column width; a run
    whose classification and FID are not done is named, with what it leaves out of which result and
    the command that finishes it, and Fig. 3 draws no empty row for it."""
    from PIL import Image

    root, _, _ = tiny_runs
    for name in ("demo_seed0", "demo_cls_seed0"):
        shutil.copytree(root / name, tmp_path / "runs" / name)
    unfinished = tmp_path / "runs" / "demo_cls_seed0"
    shutil.rmtree(unfinished / "classification")
    for stage in ("classification", "fid"):
        (unfinished / "stages" / f"{stage}.json").unlink()
    split_file, sources = results.fig3_shot_sources(results.find_runs([tmp_path / "runs"]))["toy"]
    assert set(sources) == {("DataDream-dset", 1), ("DataDream-dset", 2), ("DataDream-dset", 4), ("DataDream-cls", 4)}
    written = results.rebuild([tmp_path / "runs"], tmp_path / "out")
    with Image.open(written["fig3_shots_toy"]) as image:
        assert image.width <= 1.1 * figures.COLUMN_WIDTH_IN * 150  # drawn at the paper's width (150 dpi)
    said = capsys.readouterr().out
    assert "Table 1 leaves out 1 run(s) whose classification stage is not done: demo_cls_seed0" in said
    assert f"python -m datadream_lib.pipeline {unfinished / 'params.yaml'}" in said
    assert set(written["unfinished"]["stage"]) == {"classification", "fid"}

    (unfinished / "stages" / "synthesis.json").unlink()  # its images are not all made: no row of its own
    assert ("DataDream-cls", 4) not in results.fig3_shot_sources(results.find_runs([tmp_path / "runs"]))["toy"][1]
    assert "DataDream-cls" not in results.fig3_sources(results.find_runs([tmp_path / "runs"]))["toy"][1]


OLD_RUN = ROOT / "tests" / "data" / "old_runs" / "demo_seed1"  # the records of a run made by 885130f (2026-12-07)


def test_results_are_joined_by_identity_so_a_renamed_label_splits_no_row(tiny_runs, tmp_path, monkeypatch):
    """Rows of Table 1, Fig. 3, 4 and 5 are named from each run's identity (synth_method and its
    variant), not from names stored in its files: a run made before results stored their identity
    (885130f, whose files stored display names; here as if DataDream-dset had had another name then)
    joins today's runs in the same rows, and renaming the method's display name renames its rows and
    their paper numbers, reading and changing no stored file."""
    import shutil

    from datadream_lib.methods.datadream import DataDream

    root, _, _ = tiny_runs
    old = tmp_path / "old" / "demo_seed1"
    shutil.copytree(OLD_RUN, old)
    stored = [*old.rglob("metrics.json"), *old.rglob("*.csv"), *old.rglob("manifest*.jsonl")]
    assert all("variant" not in path.read_text() for path in stored)  # the old layout: names, not identity
    for path in stored:
        path.write_text(path.read_text().replace("DataDream-dset", "DataDream (old name)"))
    assert any("DataDream (old name)" in path.read_text() for path in stored)
    today = results.collect([root / "demo_seed0", root / "demo_seed1"])
    mixed = results.collect([root / "demo_seed0", old])
    assert mixed["skipped"].empty
    for kind in ("metrics", "fid", "ablations"):
        assert sorted(set(mixed[kind]["method"])) == sorted(set(today[kind]["method"])), kind
    table = results.table1(mixed["metrics"])
    assert table[(table["method"] == "DataDream-dset, synthetic + real") & (table["dataset"] == "toy")]["seeds"].item() == 2
    assert set(results.fig3_sources([old])["toy"][1]) == {"DataDream-dset"}

    files = sorted(p for p in root.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    monkeypatch.setattr(DataDream, "display", classmethod(lambda cls, variant: f"DD-{variant}"))
    renamed = results.collect([root / "demo_seed0", old])
    assert set(renamed["metrics"]["method"]) >= {"DD-dset, synthetic only", "DD-dset, synthetic + real", "Real-finetune"}
    assert "DD-dset" in set(renamed["fid"]["method"]) and not any("DataDream" in m for m in renamed["fid"]["method"])
    assert results.paper_rows()[0]["DD-dset, synthetic only"] == results.PAPER_TABLE1["DataDream-dset, synthetic only"]
    assert {p: p.read_bytes() for p in files} == before
