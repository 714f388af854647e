"""FID: closed forms, pytorch-fid's ``calculate_frechet_distance`` and its ``.npz`` statistics."""

from __future__ import annotations

import numpy as np
import pytest

from memjax import features
from memjax.features import frechet as fidlib


def _features(seed, n=120, d=12, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return (shift + scale * rng.normal(size=(n, d)) @ mix).astype(np.float32)


def test_fid_closed_form_diagonal_gaussians():
    """Diagonal covariances: FID = |mu_a - mu_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2."""
    rng = np.random.default_rng(0)
    va, vb = rng.uniform(0.5, 2.0, 6), rng.uniform(0.5, 2.0, 6)
    a = fidlib.Statistics(rng.normal(size=6), np.diag(va))
    b = fidlib.Statistics(rng.normal(size=6), np.diag(vb))
    expected = np.sum((a.mu - b.mu) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
    assert fidlib.fid(a, b) == pytest.approx(expected, rel=1e-12)
    assert fidlib.fid(a, a) == pytest.approx(0.0, abs=1e-12)


def test_fid_features_equal_statistics_path(tmp_path):
    """Feature rows (memjax.metrics.stats.frechet_distance) and their saved statistics agree."""
    x, y = _features(1), _features(2, shift=0.3, scale=1.2)
    direct = fidlib.fid(x, y)
    fidlib.save_statistics(tmp_path / "x.npz", fidlib.statistics(x))
    assert fidlib.fid(str(tmp_path / "x.npz"), y) == pytest.approx(direct, rel=1e-9)
    assert fidlib.fid(fidlib.statistics(x), fidlib.statistics(y)) == pytest.approx(direct, rel=1e-9)
    assert fidlib.fid(x, x) == pytest.approx(0.0, abs=1e-9)
    assert direct > 0.1


def test_fid_bad_inputs(tmp_path):
    x = _features(3)
    with pytest.raises(ValueError, match="no such file"):
        fidlib.fid(str(tmp_path / "missing.npz"), x)
    np.savez(tmp_path / "bad.npz", mean=np.zeros(12), cov=np.eye(12))
    with pytest.raises(ValueError, match=r"missing \['mu', 'sigma'\]"):
        fidlib.load_statistics(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(12), sigma=np.eye(11))
    with pytest.raises(ValueError, match=r"expected mu \[d\] and sigma \[d, d\]"):
        fidlib.load_statistics(tmp_path / "shape.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable .npz"):
        fidlib.load_statistics(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="same dimension, got 12 and 5"):
        fidlib.fid(x, x[:, :5])
    with pytest.raises(ValueError, match="generated: expected at least 2 rows"):
        fidlib.fid(x, x[:1])
    with pytest.raises(ValueError, match="pass features="):
        fidlib.fid(np.zeros((2, 8, 8, 3), np.uint8), x)
    with pytest.raises(ValueError, match="expected images"):
        fidlib.fid(np.zeros(5), x)


@pytest.mark.interop
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # scipy's sqrtm(disp=) inside pytorch-fid
def test_fid_matches_pytorch_fid(tmp_path):
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    pytest.importorskip("torch")
    x = _features(4, n=300, d=64).astype(np.float64)
    y = _features(5, n=250, d=64, shift=0.2, scale=0.9).astype(np.float64)
    mx, sx = np.mean(x, axis=0), np.cov(x, rowvar=False)
    my, sy = np.mean(y, axis=0), np.cov(y, rowvar=False)
    ref = fid_score.calculate_frechet_distance(mx, sx, my, sy)
    assert fidlib.fid(x, y) == pytest.approx(ref, rel=1e-3)
    # pytorch-fid's statistics file (its --save-stats writer: np.savez_compressed(mu, sigma))
    np.savez_compressed(tmp_path / "ref.npz", mu=mx, sigma=sx)
    assert fidlib.fid(str(tmp_path / "ref.npz"), y) == pytest.approx(ref, rel=1e-3)
    # ... and pytorch-fid reads memjax's
    fidlib.save_statistics(tmp_path / "memjax.npz", fidlib.statistics(y))
    m, s = fid_score.compute_statistics_of_path(str(tmp_path / "memjax.npz"), None, 1, 64, "cpu")
    np.testing.assert_allclose(m, my, rtol=1e-12)
    np.testing.assert_allclose(s, sy, rtol=1e-12)


def test_fid_of_images_with_an_extractor():
    """Images go through the extractor (here a fixed linear map, so the FID is known); the
    package-level ``features.fid`` is this function."""
    import jax.numpy as jnp

    from memjax.features.base import FeatureExtractor

    w = np.random.default_rng(6).normal(size=(4 * 4 * 3, 5)).astype(np.float32)
    lin = FeatureExtractor("linear", 5, lambda x: jnp.reshape(x, (x.shape[0], -1)) @ w)
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)
    b = rng.integers(0, 128, (30, 4, 4, 3), dtype=np.uint8)
    fa = (a.reshape(40, -1).astype(np.float32) / 255.0) @ w
    fb = (b.reshape(30, -1).astype(np.float32) / 255.0) @ w
    assert features.fid(a, b, features=lin) == pytest.approx(fidlib.fid(fa, fb), rel=1e-4)
    assert features.fid is fidlib.fid and features.statistics is fidlib.statistics
