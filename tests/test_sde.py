"""VP-SDE schedule against paper 000 eqs. 3-6, and the probability-flow drift (eq. 8)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj


def test_schedule_closed_forms(x64):
    sde = mj.VPSDE(beta_min=0.1, beta_max=20.0)
    t = jnp.linspace(1e-3, 1.0, 57)
    m = 0.5 * t * 0.1 + 0.25 * t**2 * (20.0 - 0.1)            # eq. 5
    np.testing.assert_allclose(sde.beta(t), 0.1 + t * 19.9, rtol=1e-14)
    np.testing.assert_allclose(sde.m(t), m, rtol=1e-14)
    np.testing.assert_allclose(sde.alpha(t), np.exp(-m), rtol=1e-14)                 # eq. 4
    np.testing.assert_allclose(sde.variance(t), 1 - np.exp(-2 * m), rtol=1e-12)      # eq. 6
    np.testing.assert_allclose(sde.sigma(t), np.sqrt(1 - np.exp(-2 * m)), rtol=1e-12)
    # m is the integral of beta / 2, so alpha^2 + sigma^2 = 1 (variance preserving)
    np.testing.assert_allclose(jax.vmap(jax.grad(sde.m))(t), sde.beta(t) / 2, rtol=1e-12)
    np.testing.assert_allclose(sde.alpha(t) ** 2 + sde.variance(t), 1.0, rtol=1e-14)


def test_t_from_sigma_inverts_sigma(x64):
    sde = mj.VPSDE()
    t = jnp.linspace(0.01, 1.0, 11)
    np.testing.assert_allclose(sde.t_from_sigma(sde.sigma(t)), t, rtol=1e-10)


def test_marginal_matches_forward_sde_moments(x64):
    """Simulating eq. 3 by Euler-Maruyama reproduces the kernel of eq. 4."""
    sde = mj.VPSDE()
    n, steps, t1 = 20_000, 400, 0.3
    x = jnp.full((n,), 0.7)
    dt = t1 / steps
    key = jax.random.PRNGKey(0)
    for k in range(steps):
        key, sub = jax.random.split(key)
        drift, diff = sde.sde(x, k * dt)
        x = x + drift * dt + diff * jnp.sqrt(dt) * jax.random.normal(sub, (n,))
    assert abs(float(x.mean()) - float(sde.alpha(t1)) * 0.7) < 0.01
    assert abs(float(x.std()) - float(sde.sigma(t1))) < 0.01


def test_pf_drift_formula():
    sde = mj.VPSDE()
    score = lambda x, t: -2.0 * x
    f = sde.pf_drift(score)
    x = jnp.arange(4.0)
    np.testing.assert_allclose(f(0.5, x), -0.5 * sde.beta(0.5) * (x - 2 * x), rtol=1e-6)


def test_hashable_static_argument():
    sde = mj.VPSDE()
    assert hash(sde) == hash(mj.VPSDE())

    @jax.jit
    def g(x, s=sde):
        return s.alpha(x)

    f = jax.jit(lambda x, s: s.alpha(x), static_argnums=1)
    np.testing.assert_allclose(f(0.5, sde), sde.alpha(0.5))


@pytest.mark.parametrize("kwargs, field", [
    (dict(beta_min=-1.0), "beta_min"),
    (dict(beta_min=5.0, beta_max=1.0), "beta_min/beta_max"),
    (dict(t_min=0.5, t_max=0.1), "t_min/t_max"),
    (dict(t_max=float("nan")), "t_max"),
])
def test_bad_sde_parameters(kwargs, field):
    with pytest.raises(ValueError, match=field):
        mj.VPSDE(**kwargs)
