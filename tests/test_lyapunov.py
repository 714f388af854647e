"""Tests of memjax.lyapunov: exact tangents, QR re-orthonormalisation, Lyapunov spectra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from memjax import lyapunov as ly


def test_diagonal_linear_system_exponents(x64):
    """ChaosTools' analytic case: dy/dt = diag(a) y has exponents a (sorted)."""
    a = jnp.array([-2.0, 1.0, -0.5, 0.25])
    res = ly.spectrum(lambda t, y: a * y, jnp.zeros(4), t0=0.0, t1=10.0, dt=1.0)
    np.testing.assert_allclose(res.exponents, [1.0, 0.25, -0.5, -2.0], atol=1e-3)
    assert res.log_stretch.shape == (10, 4)
    np.testing.assert_allclose(res.times, np.arange(11.0))
    assert bool(res.success)


def test_non_normal_linear_system_with_known_spectrum(x64):
    """A non-normal (upper-triangular, strongly coupled) matrix: exponents are its eigenvalues."""
    b = jnp.array([[0.5, 8.0, -3.0],
                   [0.0, -1.0, 5.0],
                   [0.0, 0.0, -3.0]])
    res = ly.spectrum(lambda t, y: b @ y, jnp.zeros(3), t0=0.0, t1=40.0, dt=0.5,
                      transient=20.0, key=jax.random.key(0))
    np.testing.assert_allclose(res.exponents, [0.5, -1.0, -3.0], atol=1e-3)
    assert res.log_stretch.shape == (40, 3)          # only the recorded intervals
    np.testing.assert_allclose(res.times[0], 20.0)
    # Without a transient the finite-time estimate is off (the axes have not aligned yet).
    short = ly.spectrum(lambda t, y: b @ y, jnp.zeros(3), t0=0.0, t1=2.0, dt=0.5,
                        key=jax.random.key(0))
    assert np.max(np.abs(np.asarray(short.exponents) - [0.5, -1.0, -3.0])) > 1e-2


def test_partial_spectrum_of_linear_system(x64):
    """num_exponents < D gives the leading exponents."""
    rng = np.random.default_rng(3)
    s = rng.normal(size=(5, 5))
    lam = np.array([0.3, -0.2, -0.7, -1.5, -2.5])
    a = jnp.asarray(s @ np.diag(lam) @ np.linalg.inv(s))
    res = ly.spectrum(lambda t, y: a @ y, jnp.zeros(5), t0=0.0, t1=60.0, dt=1.0,
                      num_exponents=2, transient=30.0, key=jax.random.key(1))
    np.testing.assert_allclose(res.exponents, lam[:2], atol=1e-3)


def _van_der_pol(mu):
    def f(t, u):
        x, v = u
        return jnp.stack([v, mu * (1 - x**2) * v - x])
    return f


def test_liouville_nonlinear_sum_equals_time_averaged_divergence(x64):
    """Sum of all exponents = (1/T) int div f dt along the same trajectory (van der Pol)."""
    mu = 1.5
    f = _van_der_pol(mu)
    y0 = jnp.array([0.3, -0.1])
    res = ly.spectrum(f, y0, t0=0.0, t1=12.0, dt=0.25, rtol=1e-10, atol=1e-10)

    def aug(t, state):
        u, _ = state
        return f(t, u), mu * (1 - u[0] ** 2)            # div f = d/dv of the second component

    from memjax import flow
    sol = flow.solve(aug, (y0, jnp.zeros(())), 0.0, 12.0, rtol=1e-11, atol=1e-11)
    mean_div = float(sol.y[1]) / 12.0
    np.testing.assert_allclose(float(jnp.sum(res.exponents)), mean_div, atol=1e-3)
    np.testing.assert_allclose(res.y, sol.y[0], atol=1e-6)
    # And interval by interval: sum_j log R_jj = integral of the divergence over the interval.
    assert abs(mean_div) > 0.1                           # a non-trivial check


def test_lorenz_float32_sum_and_leading_exponent():
    """Lorenz-63 in float32: sum = -(sigma + 1 + beta) (Liouville), lambda_1 ~ 0.9."""
    def lorenz(t, u):
        x, y, z = u[0], u[1], u[2]
        return jnp.stack([10.0 * (y - x), x * (28.0 - z) - y, x * y - 8.0 / 3.0 * z])

    res = ly.spectrum(lorenz, jnp.array([1.0, 1.0, 1.0], jnp.float32), t0=0.0, t1=60.0, dt=0.1,
                      transient=10.0, rtol=1e-6, atol=1e-6)
    assert res.exponents.dtype == jnp.float32
    np.testing.assert_allclose(float(jnp.sum(res.exponents)), -(11.0 + 8.0 / 3.0), rtol=1e-3)
    assert 0.7 < float(res.exponents[0]) < 1.1          # known 0.906, finite-time spread
    assert abs(float(res.exponents[1])) < 0.1           # the flow direction


def test_pytree_state(x64):
    """A pytree state (dict of arrays) is flattened; exponents as for the array form."""
    f = lambda t, y: {"a": -y["a"], "b": 0.5 * y["b"]}
    y0 = {"a": jnp.zeros(2), "b": jnp.zeros(())}
    res = ly.spectrum(f, y0, t0=0.0, t1=4.0, dt=1.0)
    np.testing.assert_allclose(res.exponents, [0.5, -1.0, -1.0], atol=1e-6)
    assert set(res.y) == {"a", "b"}


def test_fixed_step_euler_spectrum_is_discrete_map(x64):
    """Euler with num_substeps gives exactly log|1 + h a| per step (the discrete map)."""
    a = jnp.array([0.7, -3.0])
    res = ly.spectrum(lambda t, y: a * y, jnp.ones(2), t0=0.0, t1=2.0, dt=0.5, solver="euler",
                      num_substeps=5)
    expected = np.sort(5 * np.log(np.abs(1 + 0.1 * np.array([0.7, -3.0]))) / 0.5)[::-1]
    np.testing.assert_allclose(res.exponents, expected, rtol=1e-12)


def test_qr_step_sign_fixed_and_matches_scipy(x64):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 2, 4))
    q, log_r = ly.qr_step(jnp.asarray(w))
    qq, r = scipy.linalg.qr(w.reshape(3, 8).T, mode="economic")
    np.testing.assert_allclose(log_r, np.log(np.abs(np.diag(r))), rtol=1e-12)
    qf = np.asarray(q).reshape(3, 8)
    np.testing.assert_allclose(qf @ qf.T, np.eye(3), atol=1e-12)
    # Gram-Schmidt basis: w_i = sum_{j <= i} R_ji q_j with R_ii > 0.
    coef = w.reshape(3, 8) @ qf.T
    np.testing.assert_allclose(np.triu(coef.T), coef.T, atol=1e-12)
    assert np.all(np.diag(coef) > 0)
    np.testing.assert_allclose(np.log(np.diag(coef)), log_r, rtol=1e-12)


def test_sorted_orthonormalize_follows_reference_order(x64):
    w = jnp.array([[1.0, 0.0, 0.0], [0.0, 3.0, 1.0], [0.5, 0.5, 2.0]])
    q, log_norms = ly.sorted_orthonormalize(w)
    np.testing.assert_allclose(log_norms, np.log(np.linalg.norm(np.asarray(w), axis=1)))
    # The first axis is the longest input vector, normalised.
    np.testing.assert_allclose(q[0], w[1] / jnp.linalg.norm(w[1]), atol=1e-12)
    np.testing.assert_allclose(np.asarray(q) @ np.asarray(q).T, np.eye(3), atol=1e-12)


def test_tangent_map_chunked_equals_unchunked(x64):
    f = lambda y: jnp.tanh(y) * jnp.sum(y**2)
    y = jnp.linspace(-1.0, 1.0, 7)
    v = jax.random.normal(jax.random.key(2), (5, 7), jnp.float64)
    fy, jv = ly.tangent_map(f, y, v)
    fy2, jv2 = ly.tangent_map(f, y, v, chunk=2)
    np.testing.assert_allclose(fy, f(y))
    np.testing.assert_allclose(jv, v @ jax.jacfwd(f)(y).T, rtol=1e-12)
    np.testing.assert_allclose(jv2, jv, rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(t0=0.0, t1=1.0, dt=0.3), "whole number"),
    (dict(t0=1.0, t1=0.0, dt=0.1), "t0 < t1"),
    (dict(t0=0.0, t1=1.0, dt=0.1, num_exponents=4), "num_exponents"),
    (dict(t0=0.0, t1=1.0, dt=0.1, transient=1.0), "transient"),
    (dict(t0=0.0, t1=1.0, dt=0.1, solver="rk4"), "solver"),
    (dict(t0=0.0, t1=1.0, dt=0.1, solver="euler"), "num_substeps"),
    (dict(t0=0.0, t1=1.0, dt=0.1, initial_axes=jnp.ones((2, 2))), "initial_axes"),
    (dict(t0=0.0, t1=1.0, dt=-0.1), "dt"),
])
def test_spectrum_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ly.spectrum(lambda t, y: -y, jnp.zeros(3), **kwargs)
