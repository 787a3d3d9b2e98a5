"""Figures and tables are built from result files only; a missing cell is empty, never zero."""

import json

import pandas as pd

from datadream_lib import figures


def _metrics(tmp_path, name, **fields):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"synth_method": "datadream", "variant": "dset", **fields}))
    return path


def test_accuracy_table_mean_std_over_seeds_and_empty_missing_cells(tmp_path):
    files = [
        _metrics(tmp_path, "a", dataset="eurosat", seed=0, setting="synthetic", top1=80.0),
        _metrics(tmp_path, "b", dataset="eurosat", seed=1, setting="synthetic", top1=82.0),
        _metrics(tmp_path, "c", dataset="dtd", seed=0, setting="synthetic", top1=70.0),
        _metrics(tmp_path, "d", dataset="eurosat", seed=0, setting="zero_shot", top1=38.1),
    ]
    table = figures.accuracy_table(figures.collect_metrics(files), out_stem=tmp_path / "table1")
    by_method = table.set_index("method")
    assert by_method.loc["DataDream-dset, synthetic only", "eurosat"] == "81.0 ± 1.4"
    assert by_method.loc["DataDream-dset, synthetic only", "Avg"] == f"{(81.0 + 70.0) / 2:.1f}"
    assert by_method.loc["CLIP zero-shot", "dtd"] == "" and by_method.loc["CLIP zero-shot", "Avg"] == ""
    assert list(table["method"])[0] == "CLIP zero-shot"
    assert pd.read_csv(tmp_path / "table1.csv").shape == table.shape
    assert r"$\pm$" in (tmp_path / "table1.tex").read_text()
    assert "| CLIP zero-shot |  | 38.1 |  |" in (tmp_path / "table1.md").read_text()


def test_fig5_from_a_results_table(tmp_path):
    results = pd.DataFrame([
        {"ablation": "images_per_class", "images_per_class": n, "shots": 16, "setting": "synthetic", "top1": t, "seed": s}
        for n, t, s in [(100, 50, 0), (100, 52, 1), (200, 60, 0), (200, 61, 1)]
    ] + [{"ablation": "shots", "images_per_class": 500, "shots": k, "setting": "synthetic_real", "top1": 40 + k, "seed": 0}
         for k in (1, 2, 4)])
    figures.fig5_ablations(results, {"Real-finetune": 55.0}, path=tmp_path / "fig5.png")
    assert (tmp_path / "fig5.png").stat().st_size > 1000
