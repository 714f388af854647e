"""Probability-flow ODE against the closed-form linear flow of Gaussian data (REFERENCE.md)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
from memjax import flow, scores

SDE = mj.VPSDE()
D = 6


def _case(mean_scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(D, D))
    cov = a @ a.T / D + 0.05 * np.eye(D)
    mean = mean_scale * rng.normal(size=D)
    g = scores.gaussian(jnp.asarray(mean), jnp.asarray(cov), SDE)
    return g, mean, cov


def _closed_form_map(g, x, t0, t1):
    """x(t1) = alpha1 mu + U diag(sqrt(lam(t1)/lam(t0))) U^T (x - alpha0 mu)."""
    ratio = jnp.sqrt(g.cov_eigvals(t1) / g.cov_eigvals(t0))
    r = g.eigvecs.T @ (x - SDE.alpha(t0) * g.mean)
    return SDE.alpha(t1) * g.mean + g.eigvecs @ (ratio * r)


def test_encode_matches_closed_form_and_round_trips(x64):
    g, mean, _ = _case()
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(5, D))) + mean
    enc = jax.vmap(lambda x: flow.encode(g, SDE, x, rtol=1e-6, atol=1e-6, return_solution=True))(xs)
    assert bool(jnp.all(enc.success))
    expected = jax.vmap(lambda x: _closed_form_map(g, x, SDE.t_min, SDE.t_max))(xs)
    np.testing.assert_allclose(enc.y, expected, rtol=1e-4, atol=1e-4 * float(jnp.abs(expected).max()))
    dec = jax.vmap(lambda z: flow.decode(g, SDE, z, rtol=1e-6, atol=1e-6))(enc.y)
    np.testing.assert_allclose(dec, xs, rtol=1e-4, atol=1e-4)


def test_encode_float32_partial_span():
    g, mean, _ = _case()
    x = jnp.asarray(mean, jnp.float32)
    z = flow.encode(g, SDE, x, t0=0.1, t1=0.6, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(z, _closed_form_map(g, x, 0.1, 0.6), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("solver, num_steps, tol", [("euler", 4000, 2e-3), ("heun", 200, 1e-4),
                                                    ("heun", None, 1e-4), ("kvaerno5", None, 1e-4)])
def test_other_solvers(x64, solver, num_steps, tol):
    g, mean, _ = _case()
    x = jnp.asarray(mean) + 0.3
    z = flow.encode(g, SDE, x, solver=solver, num_steps=num_steps, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(z, _closed_form_map(g, x, SDE.t_min, SDE.t_max), rtol=tol, atol=tol)


def test_log_likelihood_exact_matches_true_density(x64):
    # zero-mean data: p_{t_max} is N(0, I) up to alpha(1)^2 ~ 4e-5 per dimension
    g, _, _ = _case(mean_scale=0.0)
    xs = jnp.asarray(np.random.default_rng(2).normal(size=(4, D)))
    ll = jax.vmap(lambda x: flow.log_likelihood(g, SDE, x, rtol=1e-7, atol=1e-7))(xs)
    true = jax.vmap(lambda x: g.log_prob(x, SDE.t_min))(xs)
    assert float(jnp.max(jnp.abs(ll - true))) / D < 1e-3
    # a non-zero mean with the exact prior of p_{t_max}
    g, mean, _ = _case(mean_scale=1.0)
    x = jnp.asarray(mean) + 0.5
    ll = flow.log_likelihood(g, SDE, x, rtol=1e-7, atol=1e-7, chunk_size=4,
                             prior_logp=lambda z: g.log_prob(z, SDE.t_max))
    assert abs(float(ll - g.log_prob(x, SDE.t_min))) / D < 1e-3


def test_log_likelihood_of_single_point(x64):
    """One training point y: p_t = N(alpha y, v I), so the flow's likelihood has a closed form."""
    y = jnp.array([0.2, -0.5, 0.9])
    s = scores.empirical(y[None], SDE)
    x = y + jnp.array([0.01, 0.0, -0.02])
    ll = flow.log_likelihood(s, SDE, x, rtol=1e-8, atol=1e-8,
                             prior_logp=lambda z: s.log_prob(z, SDE.t_max))
    np.testing.assert_allclose(ll, s.log_prob(x, SDE.t_min), rtol=1e-6)


def test_hutchinson_is_unbiased(x64):
    g, _, _ = _case(mean_scale=0.0)
    x = jnp.asarray(np.random.default_rng(3).normal(size=D))
    exact = flow.log_likelihood(g, SDE, x, rtol=1e-6, atol=1e-6)
    for probe in ("rademacher", "gaussian"):
        keys = jax.random.split(jax.random.PRNGKey(7), 64)
        est = jax.vmap(lambda k: flow.log_likelihood(g, SDE, x, divergence="hutchinson", key=k,
                                                     probe=probe, rtol=1e-6, atol=1e-6))(keys)
        se = float(jnp.std(est, ddof=1)) / 8.0
        assert se > 0
        assert abs(float(jnp.mean(est) - exact)) < 3.5 * se, (probe, float(jnp.mean(est)), float(exact), se)
    # more probes reduce the variance of one estimate
    many = jax.vmap(lambda k: flow.log_likelihood(g, SDE, x, divergence="hutchinson", key=k,
                                                  num_probes=16, rtol=1e-6, atol=1e-6))(keys)
    assert float(jnp.std(many)) < float(jnp.std(est))


def test_bits_per_dim_offset():
    # a uniform density over [-1, 1]^D (log p = -D log 2) is 8 bits per 8-bit dimension
    np.testing.assert_allclose(flow.bits_per_dim(-10 * jnp.log(2.0), 10), 8.0, rtol=1e-6)


def test_failed_solve_is_reported():
    g, mean, _ = _case()
    sol = flow.encode(g, SDE, jnp.asarray(mean, jnp.float32), max_steps=2, return_solution=True)
    assert not bool(sol.success)
    with pytest.warns(RuntimeWarning, match="did not finish"):
        flow.encode(g, SDE, jnp.asarray(mean, jnp.float32), max_steps=2)


def test_bad_inputs_raise_before_compiling():
    g, mean, _ = _case()
    x = jnp.asarray(mean, jnp.float32)
    cases = [
        (dict(solver="rk4"), "solver: expected one of"),
        (dict(solver="euler"), "num_steps: expected a positive integer for the fixed-step"),
        (dict(num_steps=0), "num_steps: expected a positive integer"),
        (dict(t0=0.0), r"t0: expected a time in \[t_min, t_max\]"),
        (dict(t1=2.0), r"t1: expected a time in \[t_min, t_max\]"),
        (dict(t0=0.5, t1=0.2), "t0, t1: expected t0 < t1"),
        (dict(rtol=-1.0), "rtol: expected a positive"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(ValueError, match=msg):
            flow.encode(g, SDE, x, **kwargs)
    with pytest.raises(ValueError, match="x0: expected finite values"):
        flow.encode(g, SDE, x.at[0].set(jnp.inf))
    with pytest.raises(ValueError, match="z: expected finite values"):
        flow.decode(g, SDE, x.at[0].set(jnp.nan))
    with pytest.raises(ValueError, match="score_fn: expected a callable"):
        flow.encode(None, SDE, x)
    with pytest.raises(ValueError, match="divergence: expected one of"):
        flow.log_likelihood(g, SDE, x, divergence="skilling")
    with pytest.raises(ValueError, match="key: expected a jax.random key"):
        flow.log_likelihood(g, SDE, x, divergence="hutchinson")
    with pytest.raises(ValueError, match=r"x: expected one example of shape \(6,\)"):
        flow.encode(g, SDE, jnp.zeros(5))
