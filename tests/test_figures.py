"""Figures are drawn from result tables only."""


import numpy as np
import pandas as pd
from PIL import Image

from datadream_lib import figures


def test_fig5_from_a_results_table(tmp_path):
    results = pd.DataFrame([
        {"ablation": "images_per_class", "images_per_class": n, "shots": 16, "method": "DataDream-dset, synthetic only", "top1": t, "seed": s}
        for n, t, s in [(100, 50, 0), (100, 52, 1), (200, 60, 0), (200, 61, 1)]
    ] + [{"ablation": "shots", "images_per_class": 500, "shots": k, "method": "DataDream-dset, synthetic + real", "top1": 40 + k, "seed": 0}
         for k in (1, 2, 4)])
    fig = figures.fig5_ablations(results, {"Real-finetune": 55.0}, path=tmp_path / "fig5.png")
    left, right = fig.axes
    curves = {ax: {c.get_label(): c for c in ax.containers} for ax in (left, right)}  # read back what is drawn
    assert list(curves[left]) == ["DataDream-dset, synthetic only"] and list(curves[right]) == ["DataDream-dset, synthetic + real"]
    drawn = curves[left]["DataDream-dset, synthetic only"]
    assert drawn.lines[0].get_xydata().tolist() == [[100, 51], [200, 60.5]]  # the mean over seeds at each n
    bars = drawn.lines[2][0].get_segments()  # the error bars: the std over seeds
    assert np.allclose([segment[1][1] - segment[0][1] for segment in bars], 2 * np.array([np.std([50, 52], ddof=1),
                                                                                           np.std([60, 61], ddof=1)]))
    assert [line.get_ydata()[0] for line in left.get_lines() if line.get_linestyle() == "--"] == [55.0]  # Real-finetune
    assert curves[right]["DataDream-dset, synthetic + real"].lines[0].get_xydata().tolist() == [[1, 41], [2, 42], [4, 44]]
    assert right.get_xscale() == "log" and left.get_xlabel() == "synthetic images per class"
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["DataDream-dset, synthetic only"]
    with Image.open(tmp_path / "fig5.png") as png:  # the file is that figure at 150 dpi (margins trimmed)
        assert png.format == "PNG" and 0.75 < png.size[0] / (figures.COLUMN_WIDTH_IN * 150) < 1.1, png.size
