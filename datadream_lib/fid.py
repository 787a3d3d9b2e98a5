"""Per-class FID and KID between synthetic and real images (paper Fig. 4, docs/hyperparameters.md §5).

Features: Inception-v3 with the standard FID weights (`pt_inception-2015-12-05`, the network of
pytorch-fid / torchmetrics / clean-fid), read from `inception_weights` when offline, with
`weights_only=True`. The extractor is swappable: `clip` takes the run's CLIP image tower (the toy
world's features: a network trained on that world), `tiny` is a small seeded random conv net for
offline checks of the machinery (its numbers mean nothing about image quality).

With K real images a 2048-d covariance has rank at most K - 1, so per-class FID on the shots is
dominated by that degeneracy: KID (unbiased, polynomial kernel) is reported beside it, and the
real set used ("train": all train images of the class; "shots": the K shots) is written in every
row. A reference row compares the held-out real validation images with the same real set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from datadream_lib.progress import bar as progress_bar
from datadream_lib import catalog, methods, models, naming, runtime, tracking
from datadream_lib import weights as used_weights  # (the name `weights` is Inception's file parameter here)
from datadream_lib.splits import FewShotSplit, load_rgb
from datadream_lib.datasets import by_class
from datadream_lib.errors import DataDreamError
from datadream_lib.files import record_damage, write_json
from datadream_lib.runs import Run

FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"


# --- the statistics ----------------------------------------------------------------------------

def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    The trace of the matrix square root is the sum of the square roots of the eigenvalues of
    S1 S2 (real and non-negative for covariance matrices), computed in float64.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    eigenvalues = np.linalg.eigvals(sigma1 @ sigma2)
    tr_sqrt = np.sqrt(np.clip(eigenvalues.real, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    if len(features_a) < 2 or len(features_b) < 2:
        raise DataDreamError("FID needs at least 2 images on each side.")
    return frechet_distance(*statistics(features_a), *statistics(features_b))


def kid(features_a: np.ndarray, features_b: np.ndarray, subset_size: int = 1000, subsets: int = 100, seed: int = 0) -> float:
    """Unbiased MMD^2 with the kernel (x.y / d + 1)^3 (Binkowski et al.); exact on small sets,
    averaged over random subsets of `subset_size` when both sets are larger."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise DataDreamError("KID needs at least 2 images on each side.")
    if len(a) <= subset_size and len(b) <= subset_size:
        return _mmd2_unbiased(a, b)
    m = min(len(a), len(b), subset_size)
    rng = np.random.default_rng(seed)
    return float(np.mean([_mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
                          for _ in range(subsets)]))


def _mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    d = a.shape[1]
    k_aa, k_bb, k_ab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    n, m = len(a), len(b)
    return float((k_aa.sum() - np.trace(k_aa)) / (n * (n - 1)) + (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
                 - 2 * k_ab.mean())


# --- feature extractors ------------------------------------------------------------------------

class TinyFeatures(nn.Module):
    """A seeded random conv net (64-d features) for offline checks; no meaning as a quality score."""

    input_size = 64

    def __init__(self):
        super().__init__()
        used_weights.note(used_weights.preset("fid_features", "tiny", models.TINY_SEED))
        with models.seeded(models.TINY_SEED):
            self.net = nn.Sequential(
                nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1),
                nn.ReLU(), nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # uint8-range floats in [0, 255]
        return self.net(images / 127.5 - 1)


class InceptionFeatures(nn.Module):
    """The FID Inception-v3 (pytorch-fid's blocks), pool3 features (2048-d)."""

    input_size = 299

    def __init__(self, weights: Optional[str | Path] = None, load: bool = True):
        super().__init__()
        from pytorch_fid import inception as fid_inception
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
        net.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
        net.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
        if load:
            net.load_state_dict(self.state_dict_from(weights))
            used_weights.note(self.describe(weights))
        net.fc = nn.Identity()
        net.dropout = nn.Identity()
        self.net = net.eval()

    @staticmethod
    def describe(weights) -> dict:
        """Which Inception weights: the file `inception_weights`, or the one torch's hub cache holds."""
        path = Path(weights).expanduser() if weights is not None else \
            Path(torch.hub.get_dir()) / "checkpoints" / Path(FID_WEIGHTS_URL).name
        return used_weights.describe_file("inception_weights", path)

    @staticmethod
    def state_dict_from(weights):
        if weights is not None:
            path = Path(weights).expanduser()
            fix = f"download {FID_WEIGHTS_URL} and point inception_weights at it."
            if not path.is_file():
                raise DataDreamError(f"inception_weights {str(path)!r} does not exist; {fix}")
            models.check_weights_file(path, "inception_weights", fix)
            return torch.load(path, map_location="cpu", weights_only=True)
        try:
            return torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, map_location="cpu", progress=False, weights_only=True)
        except Exception as exc:
            raise DataDreamError(f"the FID Inception weights are not reachable ({type(exc).__name__}). Download "
                                 f"{FID_WEIGHTS_URL} once and set inception_weights to its path.") from None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images / 127.5 - 1)


class ClipFeatures(nn.Module):
    """The image embeddings of the run's CLIP image tower (the classifier's backbone, before any
    fine-tuning): FID on features of a network trained on the images' own world. The toy world's
    default, as the paper's Inception was trained on the natural images it scores; with the
    pretrained models it is CLIP-feature FID (as in clean-fid's `clip_vit_b_32` mode), not the
    paper's FID."""

    def __init__(self, p):
        super().__init__()
        model, _, self.input_size = models.load_clip(p)  # notes which weights (clip_pretrained)
        self.visual = model.visual.eval()
        self.register_buffer("mean", torch.tensor(models.CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(models.CLIP_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # uint8-range floats in [0, 255]
        return self.visual((images / 255 - self.mean) / self.std)


EXTRACTORS: dict[str, Callable[..., nn.Module]] = {
    "inception": lambda p: InceptionFeatures(p.inception_weights),
    "clip": ClipFeatures,
    "tiny": lambda p: TinyFeatures(),
}


@torch.no_grad()
def extract(extractor: nn.Module, paths: list[str], device, batch_size: int = 50) -> np.ndarray:
    """Features of images resized (bilinear) to the extractor's input size."""
    size = extractor.input_size
    extractor.to(device).eval()
    out = []
    for start in range(0, len(paths), batch_size):
        batch = [torch.from_numpy(np.array(load_rgb(path).resize((size, size), resample=2))).permute(2, 0, 1)
                 for path in paths[start:start + batch_size]]
        out.append(extractor(torch.stack(batch).float().to(device)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1))


# --- the stage ---------------------------------------------------------------------------------

def real_set(p, split: FewShotSplit) -> dict[int, list[str]]:
    groups = by_class(split.train if p.fid_real_set == "train" else split.shots(p.shots))
    return {c: groups.get(c, []) for c in range(len(split.classnames))}


def _image_sets(p, run: Run) -> dict[tuple, Path]:
    """{(synth_method, variant): folder} of every method's images in the run, by the identity their
    manifest rows carry (rows of a run made before they carried it: the run's own variant)."""
    out = {}
    for folder, row in catalog.first_rows(run).items():
        method = row.get("method", folder.name)
        own = methods.METHODS[p.synth_method].variant(p) if method == p.synth_method else None
        out[(method, row.get("variant", own))] = folder
    return out


def per_class(p, run: Run, split: FewShotSplit, progress: bool = True, extractor: Optional[nn.Module] = None) -> pd.DataFrame:
    """One row per (image set, class): FID and KID against the class's real set. A row says its
    image set by identity: `images` ("synthetic", or naming.REFERENCE for the real validation
    images), `synth_method`, `variant` (`naming.named` names it)."""
    device = runtime.resolve_device(p)
    extractor = extractor or EXTRACTORS[p.fid_features](p)
    reals = real_set(p, split)
    folders = _image_sets(p, run)
    if not folders:
        raise DataDreamError("no synthetic images in this run; run the synthesis stage first.")
    sets = {("synthetic", *identity): by_class(catalog.synthetic_items(run, folder.name)) for identity, folder in folders.items()}
    sets[(naming.REFERENCE, None, None)] = by_class(split.val)
    reported = {("synthetic", *identity): methods.class_summary(folder).set_index("class_index").to_dict("index")
                for identity, folder in folders.items()}  # the method's own per-class figures
    rows = []
    for c, name in enumerate(progress_bar(split.classnames, desc="per-class FID", unit="class", disable=not progress)):
        real_features = extract(extractor, reals[c], device)
        for (images, synth_method, variant), groups in sets.items():
            features = extract(extractor, groups.get(c, []), device)
            if len(features) < 2 or len(real_features) < 2:
                continue
            rows.append({"images": images, "synth_method": synth_method, "variant": variant, "class_index": c,
                         "class_name": name, "fid": fid(features, real_features),
                         "kid": kid(features, real_features), "n_images": len(features),
                         "n_real": len(real_features), "real_set": p.fid_real_set, "features": p.fid_features,
                         **reported.get((images, synth_method, variant), {}).get(c, {})})
    return pd.DataFrame(rows)


def damaged(p, run: Run, split: FewShotSplit) -> list[str]:
    """The FID stage's damage check: its table and summary, readable."""
    return [f"{path}: {why}" for path in (run.path("fid", "per_class.csv"), run.path("fid", "summary.json"))
            if (why := record_damage(path, path.suffix[1:]))]


def analyse(p, run: Run, split: FewShotSplit, progress: bool = True) -> pd.DataFrame:
    """The FID stage: per-class FID and KID of every image set of the run (fid/per_class.csv; the
    summary and the curves by each set's `naming.key`). Returns the table with its rows named."""
    started = time.time()
    table = per_class(p, run, split, progress)
    out = run.path("fid")
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "per_class.csv", index=False)
    keys = [naming.key(*identity) for identity in zip(table["images"], table["synth_method"], table["variant"])]
    summary = table.assign(set=keys).groupby("set", sort=False)[["fid", "kid"]].agg(["mean", "median"]).round(4)
    summary.columns = [f"{a}_{b}" for a, b in summary.columns]
    write_json(out / "summary.json", {"real_set": p.fid_real_set, "features": p.fid_features, "weights": run.weights,
                                      "image_sets": summary.to_dict(orient="index"), "seconds": round(time.time() - started, 2)})
    with tracking.curves(p.tracking, run.dir, "fid") as curves:  # one point per class, in class order
        for key, rows in table.assign(set=keys).groupby("set", sort=False):
            curves.scalars(f"fid/{key}", rows["fid"], first_step=0)
            curves.scalars(f"kid/{key}", rows["kid"], first_step=0)
        curves.text("fid/classes", ", ".join(f"{i}: {name}" for i, name in enumerate(split.classnames)))
    run.outputs_complete("fid", rows=len(table))
    return naming.named(table)
