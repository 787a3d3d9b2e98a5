"""FID and KID against independent computations; the FID Inception network; the stage's table."""

import numpy as np
import pytest
import torch
from scipy import linalg

from datadream_lib import adaptation, fid, synthesis


def _reference_fid(a, b):
    """pytorch-fid's formula with scipy's matrix square root: an independent computation."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    covmean = covmean.real
    return ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("n_a, n_b, d", [(200, 150, 16), (40, 60, 8), (300, 300, 64)])
def test_frechet_distance_matches_scipy_sqrtm(n_a, n_b, d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(n_a, d)) @ rng.normal(size=(d, d))
    b = rng.normal(0.3, 1.2, size=(n_b, d)) @ rng.normal(size=(d, d))
    assert fid.fid(a, b) == pytest.approx(_reference_fid(a, b), rel=1e-6, abs=1e-6)
    assert fid.fid(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_known_gaussians():
    # N(0, I) vs N(m, 4I) in d dims: |m|^2 + d + 4d - 2 * 2d = |m|^2 + d
    d = 5
    m = np.arange(d, dtype=float)
    assert fid.frechet_distance(np.zeros(d), np.eye(d), m, 4 * np.eye(d)) == pytest.approx(m @ m + d)


def test_kid_matches_a_direct_loop():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 4)), rng.normal(0.5, 1, size=(9, 4))
    k = lambda x, y: (x @ y / 4 + 1) ** 3  # noqa: E731
    xx = sum(k(a[i], a[j]) for i in range(12) for j in range(12) if i != j) / (12 * 11)
    yy = sum(k(b[i], b[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(a[i], b[j]) for i in range(12) for j in range(9)) / (12 * 9)
    assert fid.kid(a, b) == pytest.approx(xx + yy - 2 * xy)
    big = rng.normal(size=(60, 4))
    assert abs(fid.kid(big[:30], big[30:])) < abs(fid.kid(big, big + 1.0))


def test_fid_inception_architecture_gives_2048_features_and_refuses_a_missing_file(tmp_path):
    net = fid.InceptionFeatures(load=False)
    with torch.no_grad():
        assert net(torch.rand(2, 3, 299, 299) * 255).shape == (2, 2048)
    from datadream_lib.errors import DataDreamError

    with pytest.raises(DataDreamError, match="inception_weights .* does not exist"):
        fid.InceptionFeatures(tmp_path / "missing.pth")
    torch.save(net.net.state_dict(), tmp_path / "w.pth")  # a plain state dict loads with weights_only=True
    assert set(fid.InceptionFeatures.state_dict_from(tmp_path / "w.pth")) == set(net.net.state_dict())


def test_per_class_table_names_the_real_set(demo_run):
    p, run, split = demo_run(adapt_epochs=1, images_per_class=4, num_inference_steps=2, ablation_images_per_class=[4])
    adaptation.train_adapters(p, run, split, progress=False)
    synthesis.generate(p, run, split, progress=False)
    table = fid.analyse(p, run, split, progress=False)
    assert set(table["method"]) == {"DataDream-dset", "real val (reference)"}
    assert len(table) == 2 * len(split.classnames)
    assert set(table["real_set"]) == {"train"} and (table["n_real"] == 20).all()
    rows = table[table["method"] == "DataDream-dset"]
    assert (rows["n_images"] == 4).all() and np.isfinite(rows["fid"]).all()
    assert run.path("fid", "per_class.csv").exists() and run.finish_stage("fid")
