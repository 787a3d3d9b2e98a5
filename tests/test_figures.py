"""Figures are drawn from result tables only."""


import pandas as pd

from datadream_lib import figures


def test_fig5_from_a_results_table(tmp_path):
    results = pd.DataFrame([
        {"ablation": "images_per_class", "images_per_class": n, "shots": 16, "method": "DataDream-dset, synthetic only", "top1": t, "seed": s}
        for n, t, s in [(100, 50, 0), (100, 52, 1), (200, 60, 0), (200, 61, 1)]
    ] + [{"ablation": "shots", "images_per_class": 500, "shots": k, "method": "DataDream-dset, synthetic + real", "top1": 40 + k, "seed": 0}
         for k in (1, 2, 4)])
    figures.fig5_ablations(results, {"Real-finetune": 55.0}, path=tmp_path / "fig5.png")
    assert (tmp_path / "fig5.png").stat().st_size > 1000
