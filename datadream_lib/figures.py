"""The paper's figures and tables, drawn from result files only (never from live objects).

    fig3_shots               one class: its real shots, then each method's images at 1, 4, 8, 16 shots (Fig. 3)
    fig3_real_vs_synthetic   real shots beside synthetic images, a row per class (a per-class grid)
    fig4_fid_histogram       per-class FID, a histogram per method (Fig. 4)
    fig5_ablations           accuracy vs synthetic images per class; accuracy vs real shots (Fig. 5)
    adaptation_losses        the adaptation loss of every adapter
    preview                  a row of labelled images (a method's preview: unCLIP's conditioning variants)

Table 1 is built in `results.py`, which also draws these figures across many runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from datadream_lib.splits import FewShotSplit


class PaperFigure(Figure):
    """A figure that belongs to no pyplot state: a notebook shows it as a PNG where a cell returns it
    (whatever the kernel's backend; the library never switches one), and it is never left open."""

    def _repr_png_(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


def _subplots(rows: int = 1, cols: int = 1, figsize=(5, 3), squeeze: bool = True):
    fig = PaperFigure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=squeeze)


def _save(fig, path: Optional[Path]) -> None:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")


COLUMN_WIDTH_IN = 4.8  # LNCS text width (122 mm), the paper's: figures are drawn at that width, fonts 7 pt


def fig3_shots(split_file: Path, sources: dict[tuple[str, int], Path], class_index: int = 0, n_images: int = 2,
               path: Optional[Path] = None):
    """Fig. 3 as the paper draws it: one class; on top its real shots (the largest K's, which hold
    every smaller K's: the draw is nested); below, a row per source of synthetic images ({(label,
    shots): folder}: DataDream-dset and -cls, IsSynth, DISEF, ...) with `n_images` of that class
    for each number of shots a run of it used (a source without a run at some K leaves those cells
    empty)."""
    from datadream_lib import catalog

    split = FewShotSplit.load(split_file)
    shots = sorted({k for _, k in sources})
    labels = list(dict.fromkeys(label for label, _ in sources))
    real = split.shot_order[class_index][:max(shots)]
    cols = max(len(shots) * n_images, min(len(real), 16))
    real_rows = -(-len(real) // cols)
    rows = real_rows + len(labels)
    cell = COLUMN_WIDTH_IN / cols
    fig, axes = _subplots(rows, cols, figsize=(COLUMN_WIDTH_IN, cell * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(real):
        with Image.open(image) as img:
            axes[i // cols][i % cols].imshow(img.convert("RGB"))
    axes[0][0].set_title(f"real few-shot images ({len(real)})", fontsize=7, loc="left")
    for r, label in enumerate(labels, start=real_rows):
        axes[r][0].text(-0.08, 0.5, label, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=7)
        for g, k in enumerate(shots):
            folder = sources.get((label, k))
            rows_of_class = [row for row in catalog.accepted(folder) if row["class_index"] == class_index][:n_images] \
                if folder is not None else []
            for i, row in enumerate(rows_of_class):
                with Image.open(Path(folder) / row["path"]) as img:
                    axes[r][g * n_images + i].imshow(img.convert("RGB"))
            if r == real_rows:
                axes[r][g * n_images].set_title(f"{k}-shot", fontsize=7, loc="left")
    fig.suptitle(f"Fig. 3: class {split.classnames[class_index]!r}, synthetic images with increasing shots",
                 fontsize=7)
    _save(fig, path)
    return fig


def fig3_real_vs_synthetic(split_file: Path, sources: dict[str, Path], n_real: int = 4, n_synthetic: int = 4,
                           classes: Optional[Iterable[int]] = None, path: Optional[Path] = None):
    """Rows: classes. Left: the first real shots; then, per source of synthetic images ({label:
    folder}, e.g. DataDream-dset, IsSynth, DISEF of runs on the same shots), its first images."""
    from datadream_lib import catalog

    split = FewShotSplit.load(split_file)
    classes = list(classes) if classes is not None else list(range(min(6, len(split.classnames))))
    blocks = [("real", [split.shot_order[c][:n_real] for c in range(len(split.classnames))], n_real)]
    for label, folder in sources.items():
        per_class: dict[int, list[Path]] = {}
        for row in catalog.accepted(folder, n_synthetic):
            per_class.setdefault(row["class_index"], []).append(Path(folder) / row["path"])
        blocks.append((label, [per_class.get(c, []) for c in range(len(split.classnames))], n_synthetic))
    cols = sum(width for _, _, width in blocks)
    cell = COLUMN_WIDTH_IN / cols  # the paper's width, whatever the number of columns
    fig, axes = _subplots(len(classes), cols, figsize=(COLUMN_WIDTH_IN, cell * len(classes) + 0.4), squeeze=False)
    for r, c in enumerate(classes):
        j = 0
        for label, images, width in blocks:
            for k in range(width):
                ax = axes[r][j]
                ax.axis("off")
                if k < len(images[c]):
                    with Image.open(images[c][k]) as img:
                        ax.imshow(img.convert("RGB"))
                if r == 0 and k == 0:
                    ax.set_title(label, fontsize=7, loc="left")
                j += 1
        axes[r][0].text(-0.1, 0.5, split.classnames[c], transform=axes[r][0].transAxes, ha="right", va="center", fontsize=7)
    names = ", ".join(sources) or "none yet"
    fig.suptitle(f"Real few-shot images (left) and synthetic images ({names})", fontsize=7)
    _save(fig, path)
    return fig


def fig4_fid_histogram(per_class: pd.DataFrame, path: Optional[Path] = None, metric: str = "fid", bins: int = 20,
                       title: Optional[str] = None):
    """Per-class FID (or KID) distribution, one histogram per method, shared bins."""
    import seaborn as sns

    fig, ax = _subplots(figsize=(COLUMN_WIDTH_IN, 3.2))
    values = per_class[metric].to_numpy()
    edges = np.histogram_bin_edges(values, bins=min(bins, max(1, len(values))))
    sns.histplot(data=per_class, x=metric, hue="method", bins=edges, element="step", alpha=0.35, ax=ax)
    from datadream_lib.schema import FID_FEATURE_NAMES

    real_set = ", ".join(sorted(set(per_class.get("real_set", pd.Series(["?"])))))
    features = "; ".join(FID_FEATURE_NAMES.get(f, str(f)) for f in sorted(set(per_class.get("features", pd.Series(["?"])))))
    ax.set_xlabel(f"per-class {metric.upper()} on {features}\n(real set: {real_set})", fontsize=8)
    ax.set_ylabel("classes")
    ax.set_title(f"Fig. 4: {title or f'per-class {metric.upper()}, synthetic vs real'}", fontsize=9)
    _save(fig, path)
    return fig


def adaptation_losses(losses: dict[str, list[float]], path: Optional[Path] = None, smooth: int = 10):
    """Per-step adaptation loss of every adapter (a running mean over `smooth` steps)."""
    fig, ax = _subplots(figsize=(COLUMN_WIDTH_IN, 3))
    windows = set()
    for name, values in losses.items():
        values = np.asarray(values)
        k = max(1, min(smooth, len(values) // 4 or 1))
        windows.add(k)
        ax.plot(np.arange(k, len(values) + 1), np.convolve(values, np.ones(k) / k, mode="valid"), label=name, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("noise-prediction MSE (eq. 3)")
    if len(losses) <= 10:
        ax.legend(fontsize=7)
    window = "/".join(str(k) for k in sorted(windows))
    ax.set_title(f"Adaptation loss (running mean over {window} steps)" if windows != {1} else "Adaptation loss", fontsize=9)
    _save(fig, path)
    return fig


def preview(images: dict, title: str = "", path: Optional[Path] = None):
    """A row of images ({label: PIL image}), each under its label (e.g. one image per unCLIP
    conditioning variant, all from one seed)."""
    fig, axes = _subplots(1, len(images), figsize=(1.6 * len(images), 2.0), squeeze=False)
    for ax, (label, image) in zip(axes[0], images.items()):
        ax.imshow(image.convert("RGB"))
        ax.axis("off")
        ax.set_title(label, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, path)
    return fig


def _mean_std(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.groupby(by)["top1"].agg(["mean", "std", "count"]).reset_index()


def fig5_ablations(results: pd.DataFrame, reference: Optional[dict[str, float]] = None, path: Optional[Path] = None):
    """Left: accuracy vs synthetic images per class, with `reference` lines (e.g. Real-finetune at
    the run's K). Right: accuracy vs real shots, Real-finetune a curve of its own. A curve per
    method (e.g. "DataDream-dset, synthetic + real"); error bars: std over seeds."""
    fig, axes = _subplots(1, 2, figsize=(COLUMN_WIDTH_IN, 2.4))
    for ax, x in zip(axes, ("images_per_class", "shots")):
        part = results[results["ablation"] == x]
        for method, group in _mean_std(part, ["method", x]).groupby("method"):
            ax.errorbar(group[x], group["mean"], yerr=group["std"].fillna(0), marker="o", capsize=3, label=method)
        for label, value in (reference or {}).items() if x == "images_per_class" else ():
            ax.axhline(value, ls="--", lw=1, color="grey")
            ax.text(ax.get_xlim()[0], value, f" {label}", fontsize=7, va="bottom", color="grey")
        ax.set_xlabel("synthetic images per class" if x == "images_per_class" else "real shots per class (K)", fontsize=8)
        if x == "shots":
            ax.set_xscale("log", base=2)
        ax.set_ylabel("top-1 accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle("Fig. 5: ablations", fontsize=8)
    _save(fig, path)
    return fig
