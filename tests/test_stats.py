"""Welch's t-test, AUROC and the Fréchet distance against SciPy / scikit-learn."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from sklearn.metrics import roc_auc_score

from memjax.metrics.stats import auroc, frechet_distance, welch_t_test


def samples(seed, shift, na=40, nb=70, scale=2.0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, na), rng.normal(shift, scale, nb)


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0, 3.0])
def test_welch_t_test_matches_scipy_float64(x64, shift):
    a, b = samples(0, shift)
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    t, p, df = welch_t_test(a, b)
    assert float(t) == pytest.approx(ref.statistic, rel=1e-6, abs=1e-9)
    assert float(p) == pytest.approx(ref.pvalue, abs=1e-6, rel=1e-6)
    assert float(df) == pytest.approx(ref.df, rel=1e-9)


@pytest.mark.parametrize("shift", [0.1, 0.25, 0.4, 1.0, 1.5, 2.5])
def test_welch_small_p_values_keep_relative_precision(x64, shift):
    """p from ~0.3 down to ~4e-48 at the audit's size (128 vs 128, df ~ 250), to 1e-8 relative:
    the complement form 1 - I_y(1/2, df/2) must not be used where p is small (it rounds
    p < 1e-16 to 0)."""
    rng = np.random.default_rng(7)
    a, b = rng.normal(shift, 1.0, 128), rng.normal(0.0, 1.3, 128)
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    _, p, _ = welch_t_test(a, b)
    assert ref.pvalue > 1e-300
    assert float(p) == pytest.approx(ref.pvalue, rel=1e-8, abs=0.0)


@pytest.mark.parametrize("shift", [0.0, 0.5, 3.0])
def test_welch_t_test_float32_and_jit(shift):
    a, b = (v.astype(np.float32) for v in samples(1, shift, na=25, nb=9, scale=0.5))
    ref = scipy.stats.ttest_ind(a.astype(np.float64), b.astype(np.float64), equal_var=False)
    t, p, _ = jax.jit(welch_t_test)(a, b)
    assert float(t) == pytest.approx(ref.statistic, rel=1e-6)
    assert float(p) == pytest.approx(ref.pvalue, abs=3e-5)   # documented float32 limit


@pytest.mark.parametrize("seed", range(3))
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    discrete = rng.integers(0, 6, 500).astype(np.float32) + labels    # many ties
    continuous = (rng.normal(size=500) + 0.7 * labels).astype(np.float32)
    for s in (discrete, continuous):
        assert float(auroc(s, labels)) == pytest.approx(roc_auc_score(labels, s), abs=1e-6)
    # bool labels, jit, and the closed cases
    assert float(jax.jit(auroc)(continuous, labels.astype(bool))) == pytest.approx(
        roc_auc_score(labels, continuous), abs=1e-6)
    assert float(auroc(labels.astype(np.float32), labels)) == 1.0
    assert float(auroc(np.zeros(500), labels)) == 0.5


def test_auroc_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        auroc(np.arange(4.0), np.ones(4))
    with pytest.raises(ValueError, match="labels"):
        auroc(np.arange(4.0), np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="labels"):
        auroc(np.arange(4.0), np.array([0, 1, 1]))


def frechet_reference(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    mean_term = ((a.mean(0) - b.mean(0)) ** 2).sum()
    return mean_term + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("d", [4, 32, 96])
def test_frechet_distance_matches_scipy(d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(600, d)).astype(np.float32)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    b = (rng.normal(size=(500, d)) @ mix + 0.3).astype(np.float32)
    ref = frechet_reference(a, b)
    assert float(frechet_distance(a, b)) == pytest.approx(ref, rel=1e-4)
    assert float(jax.jit(frechet_distance)(b, a)) == pytest.approx(ref, rel=1e-4)   # symmetric


def test_frechet_distance_closed_forms(x64):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    assert float(frechet_distance(a, a)) == pytest.approx(0.0, abs=1e-9)
    # shifting one set by c adds ||c||^2 exactly (covariances unchanged)
    c = np.arange(8) / 4.0
    assert float(frechet_distance(a, a + c)) == pytest.approx(np.sum(c * c), rel=1e-9)
    # fewer rows than features: singular covariances are handled (clipped eigenvalues)
    b = rng.normal(size=(5, 8))
    assert float(frechet_distance(a, b)) == pytest.approx(frechet_reference(a, b), rel=1e-6)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="features_b"):
        frechet_distance(np.ones((5, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="features_a"):
        frechet_distance(np.ones(5), np.ones((5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.ones((1, 3)), np.ones((5, 3)))


def test_auroc_large_n_float_path():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 60_000)
    s = (rng.integers(0, 50, 60_000) + 3 * labels).astype(np.float32)
    assert float(auroc(s, labels)) == pytest.approx(roc_auc_score(labels, s), abs=1e-6)
