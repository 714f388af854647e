"""Score functions against jax.grad of the densities they represent (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import multivariate_normal

import memjax as mj
from memjax import scores
from memjax.data import load_digits

SDE = mj.VPSDE()


def _mixture_logp(x, train, t):
    a, v = SDE.alpha(t), SDE.variance(t)
    d2 = jnp.sum((x.reshape(1, -1) - a * train.reshape(train.shape[0], -1)) ** 2, axis=1)
    dim = x.size
    return logsumexp(-0.5 * d2 / v) - jnp.log(train.shape[0]) - 0.5 * dim * jnp.log(2 * jnp.pi * v)


@pytest.mark.parametrize("t", [1e-3, 0.02, 0.3, 1.0])
def test_empirical_score_is_grad_log_mixture(x64, t):
    train = jnp.asarray(load_digits()[:50], jnp.float64)
    s = scores.empirical(train, SDE, chunk_size=7)          # uneven chunks: padding is masked
    key = jax.random.PRNGKey(1)
    for i, x in enumerate([train[3], train[3] + 0.05 * jax.random.normal(key, train[3].shape),
                           jax.random.normal(key, train[0].shape)]):
        x = SDE.alpha(t) * x if i < 2 else x
        expected = jax.grad(_mixture_logp)(x, train, t)
        got = s(x, t)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * float(jnp.abs(expected).max()))
        np.testing.assert_allclose(s.log_prob(x, t), _mixture_logp(x, train, t), rtol=1e-10)


def test_empirical_chunking_and_jit_invariant(x64):
    train = jnp.asarray(load_digits()[:40], jnp.float64)
    x = train[5] * 0.9 + 0.1
    ref = scores.empirical(train, SDE)(x, 0.05)
    for chunk in (1, 3, 16, 40, 1000):
        s = scores.empirical(train, SDE, chunk_size=chunk)
        np.testing.assert_allclose(jax.jit(s)(x, 0.05), ref, rtol=1e-12, atol=1e-12)


def test_empirical_posterior_mean_is_tweedie(x64):
    train = jnp.asarray(load_digits()[:20], jnp.float64)
    s = scores.empirical(train, SDE)
    x, t = train[2] * 0.5 + 0.3, 0.2
    np.testing.assert_allclose(s.posterior_mean(x, t), scores.score_to_x0(s(x, t), x, t, SDE),
                               rtol=1e-10, atol=1e-12)


def test_empirical_float32_is_stable_near_t_min():
    """Logits of order 1e5 must not overflow: the log-sum-exp keeps the score finite."""
    train = jnp.asarray(load_digits()[:64])
    s = jax.jit(jax.vmap(scores.empirical(train, SDE), in_axes=(0, None)))
    out = s(jnp.asarray(load_digits()[100:110]), SDE.t_min)
    assert np.all(np.isfinite(out))


def _gaussian_case(d=6, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    cov = a @ a.T / d + 0.05 * np.eye(d)
    mean = rng.normal(size=d)
    return jnp.asarray(mean), jnp.asarray(cov)


@pytest.mark.parametrize("t", [1e-3, 0.1, 0.7])
def test_gaussian_score_is_grad_log_normal(x64, t):
    mean, cov = _gaussian_case()
    g = scores.gaussian(mean, cov, SDE)
    a, v = SDE.alpha(t), SDE.variance(t)
    logp = lambda x: multivariate_normal.logpdf(x, a * mean, a**2 * cov + v * jnp.eye(6))
    for x in (mean, jnp.ones(6), -2.0 * mean):
        np.testing.assert_allclose(g(x, t), jax.grad(logp)(x), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(g.log_prob(x, t), logp(x), rtol=1e-10)


def test_gaussian_singular_cov_is_point_mass(x64):
    """A zero covariance gives the single-point score (alpha y - x) / sigma^2."""
    y = jnp.array([0.3, -0.2, 0.5])
    g = scores.gaussian(y, jnp.zeros((3, 3)), SDE)
    e = scores.empirical(y[None], SDE)
    x = jnp.array([1.0, 0.0, -1.0])
    np.testing.assert_allclose(g(x, 0.4), e(x, 0.4), rtol=1e-12)


def test_conversions_round_trip(x64):
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (4, 4, 1))
    eps = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 1))
    t = 0.37
    s = scores.eps_to_score(eps, t, SDE)
    np.testing.assert_allclose(scores.score_to_eps(s, t, SDE), eps, rtol=1e-12)
    x0 = scores.eps_to_x0(eps, x, t, SDE)
    np.testing.assert_allclose(scores.x0_to_score(x0, x, t, SDE), s, rtol=1e-10)
    np.testing.assert_allclose(scores.score_to_x0(s, x, t, SDE), x0, rtol=1e-10)
    np.testing.assert_allclose(scores.x0_to_eps(x0, x, t, SDE), eps, rtol=1e-10)


@pytest.mark.parametrize("param", ["eps", "x0", "score"])
def test_from_model_recovers_the_score(x64, param):
    """A 'network' that outputs the exact eps / x0 / score of Gaussian data gives back the score."""
    mean, cov = _gaussian_case(d=4)
    g = scores.gaussian(mean, cov, SDE)

    def apply_fn(xb, tb):
        s = jax.vmap(g)(xb, tb)
        if param == "eps":
            return jax.vmap(lambda s_, t_: scores.score_to_eps(s_, t_, SDE))(s, tb)
        if param == "x0":
            return jax.vmap(lambda s_, x_, t_: scores.score_to_x0(s_, x_, t_, SDE))(s, xb, tb)
        return s

    sf = scores.from_model(apply_fn, SDE, param)
    x = jnp.array([0.1, -0.4, 2.0, 0.0])
    np.testing.assert_allclose(sf(x, 0.25), g(x, 0.25), rtol=1e-10)
    batched = jax.vmap(sf)(jnp.stack([x, 2 * x]), jnp.array([0.25, 0.5]))
    np.testing.assert_allclose(batched[1], g(2 * x, 0.5), rtol=1e-10)


def test_from_model_time_scale():
    seen = []
    sf = scores.from_model(lambda xb, tb: seen.append(tb) or xb, SDE, "score", time_scale=999.0)
    sf(jnp.ones(2), 0.5)
    np.testing.assert_allclose(seen[0], [499.5])


def test_bad_inputs():
    train = jnp.zeros((5, 3, 3, 1))
    s = scores.empirical(train, SDE)
    with pytest.raises(ValueError, match=r"x: expected one example of shape \(3, 3, 1\)"):
        s(jnp.zeros((2, 3, 3, 1)), 0.5)
    with pytest.raises(ValueError, match=r"t: expected a time in \[t_min, t_max\]"):
        s(jnp.zeros((3, 3, 1)), 1.5)
    with pytest.raises(ValueError, match="train: expected finite values"):
        scores.empirical(jnp.array([[jnp.nan]]), SDE)
    with pytest.raises(ValueError, match="chunk_size: expected a positive integer"):
        scores.empirical(train, SDE, chunk_size=0)
    with pytest.raises(ValueError, match=r"cov: expected shape \(3, 3\)"):
        scores.gaussian(jnp.zeros(3), jnp.eye(2), SDE)
    with pytest.raises(ValueError, match="positive semi-definite"):
        scores.gaussian(jnp.zeros(2), -jnp.eye(2), SDE)
    with pytest.raises(ValueError, match="parameterization: expected one of"):
        scores.from_model(lambda x, t: x, SDE, "v")
    with pytest.raises(ValueError, match="sde: expected a memjax VP schedule"):
        scores.empirical(train, "vp")
