"""DPM-Solver++(2M): closed-form Gaussian flow, convergence order, the sampler wiring, diffusers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax.dpm_solver import dpm_solver_pp_2m
from memjax.schedules import DiscreteVP
from memjax.sde import VPSDE
from memjax.sampling import ddim, make_sampler

MU, S2 = 0.7, 0.25          # data N(MU, S2 I): the score of every p_t is known


def gaussian_score(sde):
    def score(x, t):
        a = sde.alpha(t)
        return -(x - a * MU) / (a**2 * S2 + sde.variance(t))
    return score


def exact_flow(sde, z, t0, t1):
    """The probability flow of Gaussian data keeps ``(x - alpha mu) / sqrt(v)`` fixed,
    ``v = alpha^2 s^2 + sigma^2``."""
    def v(t):
        return sde.alpha(t) ** 2 * S2 + sde.variance(t)
    return sde.alpha(t1) * MU + jnp.sqrt(v(t1) / v(t0)) * (z - sde.alpha(t0) * MU)


def test_dpm_solver_pp_2m_is_second_order_on_the_gaussian_flow():
    sde = VPSDE()
    z = jax.random.normal(jax.random.key(0), (64,))
    exact = exact_flow(sde, z, sde.t_max, sde.t_min)
    score = gaussian_score(sde)

    def err(solver, n):
        return float(jnp.max(jnp.abs(solver(score, sde, z, num_steps=n) - exact)))

    e = [err(dpm_solver_pp_2m, n) for n in (32, 64, 128)]
    d = [err(ddim, n) for n in (64, 128)]
    assert e[2] < 0.02
    assert e[0] / e[1] > 3.0 and e[1] / e[2] > 3.5       # halving h divides the error by ~4
    assert 1.7 < d[0] / d[1] < 2.5                        # DDIM (first order): by ~2
    assert e[2] < d[1] / 2


def test_dpm_solver_pp_2m_first_step_is_ddim_and_exact_for_a_point_mass():
    sde = VPSDE()
    z = jax.random.normal(jax.random.key(1), (8,))
    score = gaussian_score(sde)
    # one step: DPM-Solver++(1) = deterministic DDIM
    np.testing.assert_allclose(dpm_solver_pp_2m(score, sde, z, num_steps=1),
                               ddim(score, sde, z, num_steps=1), rtol=1e-4, atol=1e-4)

    # a point mass at MU: the data prediction is constant, so any grid lands on the exact flow
    def point(x, t):
        return -(x - sde.alpha(t) * MU) / sde.variance(t)
    out = dpm_solver_pp_2m(point, sde, z, num_steps=6)
    ex = sde.alpha(sde.t_min) * MU + sde.sigma(sde.t_min) / sde.sigma(sde.t_max) * (
        z - sde.alpha(sde.t_max) * MU)
    np.testing.assert_allclose(out, ex, rtol=1e-4, atol=1e-5)


def test_make_sampler_dpm_pp_2m_equals_the_function():
    sde = VPSDE()
    score = gaussian_score(sde)
    smp = make_sampler(score, sde, (2, 2, 1), sampler="dpm++2m", num_steps=8, batch_size=4)
    out = smp(jax.random.key(3), 5)
    key = jax.random.fold_in(jax.random.key(3), 2)
    z = sde.prior(jax.random.split(key)[0], (2, 2, 1))
    np.testing.assert_allclose(out[2], dpm_solver_pp_2m(score, sde, z, num_steps=8),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="eta"):
        make_sampler(score, sde, (2,), sampler="dpm++2m", num_steps=8, eta=0.5)


@pytest.mark.interop
@pytest.mark.parametrize("num_steps", [8, 20])
def test_dpm_solver_pp_2m_matches_diffusers(num_steps):
    torch = pytest.importorskip("torch")
    schedulers = pytest.importorskip("diffusers.schedulers")
    sched = schedulers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        algorithm_type="dpmsolver++", solver_order=2)
    sched.set_timesteps(num_steps)
    abar = torch.tensor(np.asarray(sched.alphas_cumprod, np.float64))

    def eps_model(x, i):            # the same Gaussian model, as diffusers calls it
        a2 = abar[int(i)]
        return (1 - a2).sqrt() * (x - a2.sqrt() * MU) / (a2 * S2 + 1 - a2)

    z = np.random.default_rng(0).normal(size=(16,)).astype(np.float32)
    x = torch.tensor(z)
    for t in sched.timesteps:
        x = sched.step(eps_model(x, t), t, x).prev_sample

    sde = DiscreteVP.from_scheduler_config({"num_train_timesteps": 1000})
    ts = np.concatenate([(np.asarray(sched.timesteps, np.float64) + 1) / 1000, [0.0]])
    ours = dpm_solver_pp_2m(gaussian_score(sde), sde, jnp.asarray(z), ts=jnp.asarray(ts))
    np.testing.assert_allclose(np.asarray(ours), x.numpy(), rtol=1e-4, atol=1e-4)
