"""Pointwise memorization (paper 001 eqs. 1-2): the estimator and a Gaussian closed form."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from memjax import scores
from memjax.metrics.pointwise import pointwise_from_log_prob, pointwise_memorization
from memjax.sde import VPSDE


def kl_gauss_to_iso(m, c, xi, eps):
    """KL(N(m, C) || N(x_i, eps I)) in closed form."""
    d = len(m)
    return 0.5 * (np.trace(c) / eps + np.sum((m - xi) ** 2) / eps - d + d * np.log(eps)
                  - np.linalg.slogdet(c)[1])


def test_estimator_equals_brute_force_monte_carlo():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3, 2, 1))
    train = rng.normal(size=(7, 3, 2, 1))
    lp = rng.normal(size=50) - 4.0
    eps = 0.3
    res = pointwise_from_log_prob(x, train, lp, epsilon=eps)
    xs, ts = x.reshape(50, -1), train.reshape(7, -1)
    d = xs.shape[1]
    logq = (-0.5 * d * np.log(2 * np.pi * eps)
            - ((xs[:, None] - ts[None]) ** 2).sum(-1) / (2 * eps))        # [S, N]
    terms = lp[:, None] - logq
    np.testing.assert_allclose(np.asarray(res.per_point), terms.mean(0), rtol=1e-5)
    np.testing.assert_allclose(float(res.total), terms.mean(0).sum(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(res.per_point_stderr),
                               terms.std(0, ddof=1) / np.sqrt(50), rtol=1e-4)
    np.testing.assert_allclose(float(res.total_stderr),
                               terms.sum(1).std(ddof=1) / np.sqrt(50), rtol=1e-4)


def test_gaussian_model_matches_closed_form_kl():
    """Exact Gaussian score: p_theta = N(alpha mu, alpha^2 S + sigma^2 I) at t_min, so every
    KL term is known; the estimate (with flow.log_likelihood) lands within its standard error."""
    sde = VPSDE()
    mu = np.array([0.3, -0.2])
    cov = np.array([[0.5, 0.1], [0.1, 0.2]])
    score_fn = scores.gaussian(mu, cov, sde)
    a = float(sde.alpha(sde.t_min))
    m_t = a * mu
    c_t = a * a * cov + float(sde.variance(sde.t_min)) * np.eye(2)
    rng = np.random.default_rng(1)
    samples = rng.multivariate_normal(m_t, c_t, size=96).astype(np.float32)
    train = np.array([[0.3, -0.2], [1.0, 0.5], [-0.6, 0.0]], np.float32)
    eps = 0.25
    res = pointwise_memorization(score_fn, sde, samples, train, epsilon=eps, batch_size=96)
    # the model log-density is the Gaussian's (the ODE is exact up to solver tolerance)
    ref_lp = scipy.stats.multivariate_normal(m_t, c_t).logpdf(samples)
    np.testing.assert_allclose(np.asarray(res.log_prob), ref_lp, atol=1e-2)
    expect = np.array([kl_gauss_to_iso(m_t, c_t, xi, eps) for xi in train])
    err = np.abs(np.asarray(res.per_point) - expect)
    assert np.all(err < 4 * np.asarray(res.per_point_stderr)), (err, res.per_point_stderr)
    assert abs(float(res.total) - expect.sum()) < 4 * float(res.total_stderr)
    # the training image at the mean is the most memorized (smallest KL)
    assert int(np.argmin(np.asarray(res.per_point))) == 0


def test_pointwise_rejects_bad_input():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="epsilon"):
        pointwise_from_log_prob(x, x, np.zeros(4), epsilon=0.0)
    with pytest.raises(ValueError, match="log_prob"):
        pointwise_from_log_prob(x, x, np.zeros(3), epsilon=1.0)
    with pytest.raises(ValueError, match="train"):
        pointwise_from_log_prob(x, np.zeros((4, 3)), np.zeros(4), epsilon=1.0)
    with pytest.raises(ValueError, match="score_fn"):
        pointwise_memorization(None, VPSDE(), x, x, epsilon=1.0)
    with pytest.raises(ValueError, match="samples"):
        pointwise_memorization(lambda x, t: -x, VPSDE(), x[:1], x, epsilon=1.0)
