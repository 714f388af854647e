"""memjax.schedules: closed forms, the discrete table's exactness, and the family's shared interface."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
from memjax import schedules, scores
from memjax.schedules import CosineVP, DiscreteVP

LINEAR = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
FAMILY = [mj.VPSDE(), CosineVP(), DiscreteVP.from_scheduler_config(LINEAR),
          DiscreteVP.from_scheduler_config({**LINEAR, "beta_schedule": "squaredcos_cap_v2"})]


def test_cosine_alpha_bar_is_nichol_dhariwal(x64):
    sched = CosineVP()
    s = 0.008
    t = np.linspace(0.0, 0.999, 101)
    f = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(np.asarray(sched.alpha_bar(jnp.asarray(t))), f / f[0], rtol=1e-10)
    # the clip: beta reaches max_beta near t = 1 and stays there; alpha_bar(1) small but positive
    tc = sched.t_clip
    assert 0.999 < tc < 1.0
    assert float(sched.beta(1.0)) == pytest.approx(sched.max_beta)
    assert float(sched.beta(tc - 1e-6)) == pytest.approx(sched.max_beta, rel=1e-2)
    assert 0 < float(sched.alpha_bar(1.0)) < 1e-6


def test_discrete_table_is_exact_at_the_timesteps(x64):
    betas = np.linspace(1e-4, 0.02, 1000)
    table = DiscreteVP.from_betas(betas)
    abar = np.cumprod(1 - betas)
    ts = (np.arange(1000) + 1) / 1000
    np.testing.assert_allclose(np.asarray(table.alpha(jnp.asarray(ts))) ** 2, abar, rtol=1e-12)
    np.testing.assert_allclose(table.alphas_cumprod(), abar, rtol=1e-12)
    assert table.t_min == pytest.approx(1e-3) and table.t_max == 1.0
    np.testing.assert_allclose(np.asarray(table.timestep(jnp.asarray(ts))), np.arange(1000), atol=1e-9)
    # piecewise-linear log alpha_bar: midpoints interpolate the logs of the neighbours
    mid = np.asarray(table.m(jnp.asarray(ts[:-1] + 0.5e-3)))
    np.testing.assert_allclose(mid, -0.25 * (np.log(abar[:-1]) + np.log(abar[1:])), rtol=1e-12)
    # the rate is the slope: -N log(1 - beta_i) on (t_{i-1}, t_i]
    np.testing.assert_allclose(np.asarray(table.beta(jnp.asarray(ts - 0.3e-3))), -1000 * np.log1p(-betas),
                               rtol=1e-12)


def test_discrete_linear_differs_from_continuous_sde_as_documented(x64):
    """REFERENCE.md: log alphas_cumprod -10.118 (table) vs -10.050 (VPSDE) at i = 999, -2.544 vs -2.537 at 499."""
    table = DiscreteVP.from_scheduler_config(LINEAR)
    sde = mj.VPSDE()
    for i, want_table, want_sde in ((999, -10.118, -10.050), (499, -2.544, -2.537)):
        t = (i + 1) / 1000
        assert -2 * float(table.m(t)) == pytest.approx(want_table, abs=1e-3)
        assert -2 * float(sde.m(t)) == pytest.approx(want_sde, abs=1e-3)
    assert float(schedules.linear_timestep(0.5)) == 499.5 and float(table.timestep(0.5)) == 499.0


@pytest.mark.parametrize("sched", FAMILY, ids=lambda s: type(s).__name__)
def test_family_kernel_is_consistent(sched, x64):
    t = jnp.linspace(sched.t_min, sched.t_max * 0.999, 37)
    a, s, v = sched.alpha(t), sched.sigma(t), sched.variance(t)
    np.testing.assert_allclose(np.asarray(a), np.exp(-np.asarray(sched.m(t))), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(a**2 + v), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(s**2), np.asarray(v), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(sched.log_snr(t)), np.log(np.asarray(a**2 / v)), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(sched.t_from_sigma(s)), np.asarray(t), rtol=1e-8, atol=1e-10)
    assert hash(sched) == hash(sched)  # a static argument of jax.jit


@pytest.mark.parametrize("sched", FAMILY, ids=lambda s: type(s).__name__)
def test_beta_is_twice_dm_dt(sched, x64):
    # midway between the discrete knots t_i = (i + 1) / 1000, where the table's rate jumps
    t = (np.arange(12, 988, 24) + 0.5) / 1000
    h = 1e-7
    dm = (np.asarray(sched.m(jnp.asarray(t + h))) - np.asarray(sched.m(jnp.asarray(t - h)))) / (2 * h)
    np.testing.assert_allclose(np.asarray(sched.beta(jnp.asarray(t))), 2 * dm, rtol=1e-5)
    assert np.allclose(np.asarray(jax.vmap(jax.grad(sched.m))(jnp.asarray(t))), dm, rtol=1e-5)


@pytest.mark.parametrize("sched", FAMILY[1:], ids=lambda s: type(s).__name__)
def test_analyses_take_any_member(sched):
    """The exact score of a finite set, sampling and volume growth run unchanged on the family."""
    train = jax.random.normal(jax.random.key(0), (5, 2, 2, 1))
    score = scores.empirical(train, sched)
    x = mj.sampling.ddim(score, sched, jax.random.normal(jax.random.key(1), (2, 2, 1)), num_steps=40)
    assert float(jnp.min(jnp.sum((train - x) ** 2, axis=(1, 2, 3)))) < 1e-2  # lands on a training point
    gauss = scores.gaussian(jnp.zeros((2, 2, 1)), 0.5 * jnp.eye(4), sched)
    vg = mj.volume_growth(gauss, sched, train[0], num_axes=2, num_steps=50, key=jax.random.key(2))
    assert np.all(np.isfinite(np.asarray(vg.log_growth))) and bool(np.all(vg.stable))


def test_ddim_grid_is_diffusers_leading_spacing():
    table = DiscreteVP.from_scheduler_config(LINEAR)
    grid = np.asarray(table.ddim_grid(50))
    np.testing.assert_allclose(np.round(grid[:-1] * 1000 - 1), np.arange(980, -1, -20))
    assert grid[-1] == 0.0 and float(table.alpha(0.0)) == 1.0


@pytest.mark.parametrize("config, match", [
    ({"beta_schedule": "sigmoid"}, "beta_schedule"),
    ({"num_train_timesteps": 1}, "num_train_timesteps"),
    ({"beta_start": 0.0}, "beta_start"),
    ({"beta_end": 1.5}, "beta_end"),
    ([1, 2], "config"),
])
def test_bad_scheduler_configs(config, match):
    with pytest.raises(ValueError, match=match):
        DiscreteVP.from_scheduler_config(config)


def test_bad_schedules():
    with pytest.raises(ValueError, match="DiscreteVP.betas"):
        DiscreteVP.from_betas([0.1, 1.0])
    with pytest.raises(ValueError, match="DiscreteVP.betas"):
        DiscreteVP.from_betas([0.1])
    with pytest.raises(ValueError, match="DiscreteVP.t_min/t_max"):
        DiscreteVP.from_betas([0.1, 0.2], t_min=0.9, t_max=0.5)
    with pytest.raises(ValueError, match="CosineVP.s"):
        CosineVP(s=-1.0)
    with pytest.raises(ValueError, match="CosineVP.t_min/t_max"):
        CosineVP(t_max=1.5)
    with pytest.raises(ValueError, match="num_steps"):
        DiscreteVP.from_scheduler_config(LINEAR).ddim_grid(1001)
    assert math.isfinite(CosineVP().t_clip)
