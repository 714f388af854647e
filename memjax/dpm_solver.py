r"""DPM-Solver++(2M): the second-order multistep data-prediction solver of the probability flow.

Lu, Zhou, Bao, Chen, Li & Zhu, *DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models* (2022), Algorithm 2, on any VP schedule (``alpha_t``, ``sigma_t``,
``lambda_t = log(alpha_t / sigma_t)``). The data prediction is Tweedie's estimate from the score,

.. math:: x_\theta(x, t) = (x + \sigma_t^2\, s(x, t)) / \alpha_t ,

and with ``h_i = \lambda_{t_i} - \lambda_{t_{i-1}}`` and ``r_i = h_{i-1} / h_i`` one step is

.. math:: \tilde x_{t_i} = \frac{\sigma_{t_i}}{\sigma_{t_{i-1}}} \tilde x_{t_{i-1}}
          - \alpha_{t_i} (e^{-h_i} - 1) D_i, \qquad
          D_i = \Big(1 + \frac{1}{2 r_i}\Big) x_\theta(\tilde x_{t_{i-1}}, t_{i-1})
              - \frac{1}{2 r_i} x_\theta(\tilde x_{t_{i-2}}, t_{i-2}),

one network call per step (the previous prediction is reused). The first step uses
``D_1 = x_\theta(\tilde x_{t_0}, t_0)`` (DPM-Solver++(1), i.e. deterministic DDIM). As in
diffusers' ``DPMSolverMultistepScheduler`` (``lower_order_final``), the last step is first-order
too when the grid has fewer than 15 steps or ends at ``sigma = 0``. The coefficient is evaluated
as ``alpha_{t_i} (e^{-h_i} - 1) = sigma_{t_i} alpha_{t_{i-1}} / sigma_{t_{i-1}} - alpha_{t_i}``,
finite also at ``sigma = 0`` (the last step then returns ``D``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from memjax.sde import VPSchedule

__all__ = ["dpm_solver_pp_2m", "LOWER_ORDER_FINAL_BELOW"]

LOWER_ORDER_FINAL_BELOW = 15
"""Grids with fewer steps take a first-order last step (diffusers' ``lower_order_final``)."""


def _grid(sde: VPSchedule, num_steps: int, dtype) -> Float[Array, " n"]:
    grid = getattr(sde, "ddim_grid", None)      # a discrete table: diffusers' grid, ends at t = 0
    if grid is not None:
        return grid(num_steps, dtype)
    return jnp.linspace(sde.t_max, sde.t_min, num_steps + 1, dtype=dtype)


def dpm_solver_pp_2m(score_fn: Callable, sde: VPSchedule, z: Array, *, num_steps: int = 20,
                     ts: Float[Array, " n"] | None = None, cond: Any = None) -> Array:
    r"""DPM-Solver++(2M) from ``z`` at the first time of the grid to its last, for one example.

    Args:
      score_fn: ``score_fn(x, t)`` (or ``score_fn(x, t, cond)``).
      sde: any VP schedule; its ``alpha`` and ``sigma`` set the exponential integrator.
      z: the starting point (a prior draw at ``t_max``).
      num_steps: steps (network calls) on the default grid: the schedule's ``ddim_grid`` when
        it has one (:class:`memjax.schedules.DiscreteVP`), else uniform from ``t_max`` to
        ``t_min`` (the grid of the ``"sde"`` and ``"ddim"`` samplers).
      ts: an explicit decreasing grid ``[num_steps + 1]`` instead (e.g. diffusers' timesteps).

    Returns:
      The sample at the last time of the grid (the module docstring has the update).
    """
    ts = _grid(sde, num_steps, z.dtype) if ts is None else jnp.asarray(ts, z.dtype)
    steps = ts.shape[0] - 1
    lower_final = steps < LOWER_ORDER_FINAL_BELOW

    def data_pred(x, t):
        s = score_fn(x, t) if cond is None else score_fn(x, t, cond)
        return (x + sde.variance(t) * s) / sde.alpha(t)

    def lam(a, s):
        return jnp.log(a) - jnp.log(s)

    def step(carry, inp):
        x, m_prev, h_prev = carry
        i, t, t_next = inp
        a, s, an, sn = sde.alpha(t), sde.sigma(t), sde.alpha(t_next), sde.sigma(t_next)
        m0 = data_pred(x, t)
        h = lam(an, sn) - lam(a, s)                      # +inf when sigma(t_next) = 0
        first = (i == 0) | (sn == 0)
        if lower_final:
            first = first | (i == steps - 1)
        r = jnp.where(first, 1.0, h_prev / jnp.where(first, 1.0, h))
        c = jnp.where(first, 0.0, 0.5 / r)
        d = m0 + c * (m0 - m_prev)                       # (1 + 1/2r) m0 - (1/2r) m_prev
        x_next = (sn / s) * x - (sn * a / s - an) * d
        return (x_next, m0, h), None

    init = (z, jnp.zeros_like(z), jnp.zeros((), z.dtype))
    (x, _, _), _ = jax.lax.scan(step, init, (jnp.arange(steps), ts[:-1], ts[1:]))
    return x
