r"""The probability-flow ODE (paper 000 eq. 8) with diffrax: encode, decode, likelihood.

``dx/dt = -\beta(t)/2 [x + s(x, t)]`` maps data at ``t_min`` one-to-one to noise at
``t_max``. :func:`encode` integrates forward (data to noise), :func:`decode` backward.
:func:`log_likelihood` integrates the instantaneous change of variables (Chen et al. 2018;
Song et al. 2021, appendix D.2) alongside::

    \log p_{t_0}(x(t_0)) = \log p_{t_1}(x(t_1)) + \int_{t_0}^{t_1} \nabla\cdot f(x(t), t)\,dt

with the divergence exact (a sum of ``D`` basis JVPs, chunked) or Hutchinson's unbiased
estimate ``E_v[v^T J v]`` (Rademacher or Gaussian probes, fixed along the trajectory).

All functions take one example; batch with ``jax.vmap``. Solves use ``throw=False`` so they
vmap; pass ``return_solution=True`` to get the solver status and step counts.
"""

from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from memjax import _checks
from memjax.sde import VPSDE, ScoreFn

__all__ = ["ADAPTIVE_ONLY", "bits_per_dim", "check_solver_args", "decode", "encode",
           "exact_divergence", "FIXED_ONLY", "FlowSolution", "hutchinson_divergence",
           "LikelihoodResult", "log_likelihood", "make_solver", "solve", "SOLVERS"]

SOLVERS = ("euler", "heun", "midpoint", "tsit5", "dopri5", "kvaerno3", "kvaerno5")
ADAPTIVE_ONLY = ()
FIXED_ONLY = ("euler",)


class FlowSolution(NamedTuple):
    """Result of one ODE solve (a pytree; batched under vmap)."""

    y: Array                        # the state at the end time
    success: Bool[Array, ""]        # diffrax reported success
    num_steps: Int[Array, ""]       # accepted steps
    num_evals: Int[Array, ""]       # drift evaluations (diffrax ``num_steps`` x stages, approx.)


def make_solver(solver: str) -> diffrax.AbstractSolver:
    """The diffrax solver behind a memjax solver name."""
    _checks.check_choice("solver", solver, SOLVERS)
    return {
        "euler": diffrax.Euler,
        "heun": diffrax.Heun,
        "midpoint": diffrax.Midpoint,
        "tsit5": diffrax.Tsit5,
        "dopri5": diffrax.Dopri5,
        "kvaerno3": diffrax.Kvaerno3,
        "kvaerno5": diffrax.Kvaerno5,
    }[solver]()


_STAGES = {"euler": 1, "heun": 2, "midpoint": 2, "tsit5": 6, "dopri5": 6, "kvaerno3": 4,
           "kvaerno5": 7}


def check_solver_args(solver: str, num_steps, rtol, atol, max_steps) -> None:
    """Validates the solver options shared by every diffrax-backed function."""
    _checks.check_choice("solver", solver, SOLVERS)
    _checks.check_positive_int("num_steps", num_steps, allow_none=True)
    if solver in FIXED_ONLY and num_steps is None:
        raise ValueError(f"num_steps: expected a positive integer for the fixed-step solver "
                         f"{solver!r}, got None")
    if num_steps is None:
        _checks.check_positive("rtol", rtol)
        _checks.check_positive("atol", atol)
    _checks.check_positive_int("max_steps", max_steps)


def solve(drift: Callable, y0, t0: float, t1: float, *, solver: str = "tsit5",
          rtol: float = 1e-5, atol: float = 1e-5, num_steps: int | None = None,
          max_steps: int = 16_384, adjoint: diffrax.AbstractAdjoint | None = None) -> FlowSolution:
    """Integrates ``dy/dt = drift(t, y)`` from ``t0`` to ``t1`` (either direction).

    ``num_steps`` given: a fixed grid of that many equal steps with any solver. Otherwise an
    adaptive solve with a PID controller at ``rtol``/``atol``. ``y0`` may be any pytree.
    """
    check_solver_args(solver, num_steps, rtol, atol, max_steps)
    term = diffrax.ODETerm(lambda t, y, args: drift(t, y))
    if num_steps is not None:
        controller = diffrax.ConstantStepSize()
        dt0 = (t1 - t0) / num_steps
        max_steps = max(max_steps, num_steps)
    else:
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = None
    sol = diffrax.diffeqsolve(
        term, make_solver(solver), t0=t0, t1=t1, dt0=dt0, y0=y0,
        stepsize_controller=controller, max_steps=max_steps, throw=False,
        saveat=diffrax.SaveAt(t1=True),
        adjoint=adjoint if adjoint is not None else diffrax.RecursiveCheckpointAdjoint(),
    )
    y = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
    steps = sol.stats["num_steps"]
    evals = sol.stats["num_steps"] * _STAGES[solver] if num_steps is not None else \
        (sol.stats["num_accepted_steps"] + sol.stats["num_rejected_steps"]) * _STAGES[solver]
    return FlowSolution(y=y, success=sol.result == diffrax.RESULTS.successful,
                        num_steps=steps, num_evals=evals)


def _warn_if_failed(sol: FlowSolution, what: str) -> None:
    if _checks.is_concrete(sol.success) and not bool(np.all(np.asarray(sol.success))):
        warnings.warn(f"{what}: the ODE solver did not finish (max_steps reached or step size "
                      "too small); results are not valid. Raise max_steps or loosen tolerances.",
                      RuntimeWarning, stacklevel=3)


def _span(sde: VPSDE, t0, t1, forward: bool):
    t0 = sde.t_min if t0 is None else t0
    t1 = sde.t_max if t1 is None else t1
    for name, t in (("t0", t0), ("t1", t1)):
        if not isinstance(t, (int, float, np.floating, np.integer)):
            raise ValueError(f"{name}: expected a Python float, got {type(t).__name__}")
        sde.check_time(name, t)
    if not t0 < t1:
        raise ValueError(f"t0, t1: expected t0 < t1 (the span runs from data to noise), got {t0}, {t1}")
    return (float(t0), float(t1)) if forward else (float(t1), float(t0))


def _check_common(score_fn, sde, x, name):
    if not callable(score_fn):
        raise ValueError(f"score_fn: expected a callable score_fn(x, t), got {type(score_fn).__name__}")
    _checks.check_schedule("sde", sde)
    return _checks.as_array(name, x)


def _transport(score_fn, sde, x, name, *, forward: bool, t0, t1, return_solution, **solver_args):
    """:func:`encode` (``forward``: ``t0 -> t1``) or :func:`decode` (``t1 -> t0``) of ``x``."""
    x = _check_common(score_fn, sde, x, name)
    ta, tb = _span(sde, t0, t1, forward=forward)
    sol = solve(sde.pf_drift(score_fn), x, ta, tb, **solver_args)
    if return_solution:
        return sol
    _warn_if_failed(sol, "encode" if forward else "decode")
    return sol.y


def encode(score_fn: ScoreFn, sde: VPSDE, x0: Array, *, solver: str = "tsit5",
           rtol: float = 1e-5, atol: float = 1e-5, num_steps: int | None = None,
           t0: float | None = None, t1: float | None = None, max_steps: int = 16_384,
           return_solution: bool = False):
    """Maps data ``x0`` at ``t0`` (default ``t_min``) to its latent at ``t1`` (default ``t_max``)
    along the probability-flow ODE (eq. 8). Returns the latent, or a :class:`FlowSolution`."""
    return _transport(score_fn, sde, x0, "x0", forward=True, t0=t0, t1=t1,
                      return_solution=return_solution, solver=solver, rtol=rtol, atol=atol,
                      num_steps=num_steps, max_steps=max_steps)


def decode(score_fn: ScoreFn, sde: VPSDE, z: Array, *, solver: str = "tsit5",
           rtol: float = 1e-5, atol: float = 1e-5, num_steps: int | None = None,
           t0: float | None = None, t1: float | None = None, max_steps: int = 16_384,
           return_solution: bool = False):
    """Maps a latent ``z`` at ``t1`` (default ``t_max``) back to data at ``t0`` (default ``t_min``):
    the inverse of :func:`encode`, and the probability-flow sampler when ``z ~ N(0, I)``."""
    return _transport(score_fn, sde, z, "z", forward=False, t0=t0, t1=t1,
                      return_solution=return_solution, solver=solver, rtol=rtol, atol=atol,
                      num_steps=num_steps, max_steps=max_steps)


# -- divergence ------------------------------------------------------------------------------------
def exact_divergence(f: Callable[[Array], Array], x: Array, chunk_size: int | None = None) -> Array:
    r"""``\nabla\cdot f(x) = \sum_i e_i^T J_f(x) e_i``: one JVP per basis vector, exact.

    The basis is processed ``chunk_size`` vectors at a time (``jax.lax.map``), bounding memory
    at ``chunk_size`` tangent copies of the activations.
    """
    d = x.size
    basis = jnp.eye(d, dtype=x.dtype).reshape((d,) + x.shape)

    def diag_entry(e):
        _, jv = jax.jvp(f, (x,), (e,))
        return jnp.vdot(e, jv)

    batch = d if chunk_size is None else min(chunk_size, d)
    return jnp.sum(jax.lax.map(diag_entry, basis, batch_size=batch))


def hutchinson_divergence(f: Callable[[Array], Array], x: Array, probes: Array) -> Array:
    r"""Hutchinson's estimate ``(1/K) \sum_k v_k^T J_f(x) v_k`` for probes ``[K, *x.shape]``."""
    def one(v):
        _, jv = jax.jvp(f, (x,), (v,))
        return jnp.vdot(v, jv)

    return jnp.mean(jax.vmap(one)(probes))


class LikelihoodResult(NamedTuple):
    log_prob: Float[Array, ""]      # log p_{t0}(x0) in nats
    prior_log_prob: Float[Array, ""]  # log N(x(t1); 0, I)
    delta: Float[Array, ""]         # integral of the divergence over [t0, t1]
    z: Array                        # the latent x(t1)
    success: Bool[Array, ""]
    num_evals: Int[Array, ""]


def log_likelihood(score_fn: ScoreFn, sde: VPSDE, x0: Array, *, divergence: str = "exact",
                   key: PRNGKeyArray | None = None, num_probes: int = 1,
                   probe: str = "rademacher", solver: str = "tsit5", rtol: float = 1e-5,
                   atol: float = 1e-5, num_steps: int | None = None, t0: float | None = None,
                   t1: float | None = None, chunk_size: int | None = None,
                   max_steps: int = 16_384, prior_logp: Callable[[Array], Array] | None = None,
                   return_solution: bool = False):
    r"""``\log p_{t_0}(x_0)`` in nats by the instantaneous change of variables.

    The augmented state ``(x, \ell)`` with ``d\ell/dt = \nabla\cdot f(x, t)`` is integrated from
    ``t0`` to ``t1``; then ``\log p_{t0}(x_0) = \log N(x(t_1); 0, I) + \ell(t_1)``. The prior
    ``N(0, I)`` stands in for ``p_{t_1}`` (exact as ``\alpha(t_1) \to 0``; at ``t_max = 1`` with
    the default schedule ``\alpha^2 \approx 4\cdot 10^{-5}``).

    Args:
      divergence: ``"exact"`` (D basis JVPs, ``chunk_size`` at a time) or ``"hutchinson"``
        (``num_probes`` probes drawn once from ``key`` and held along the trajectory; unbiased).
      probe: ``"rademacher"`` or ``"gaussian"`` (Hutchinson only).
      prior_logp: ``log p_{t1}`` of the latent; default ``sde.prior_logp`` (the standard normal).
        Pass the exact marginal when it is known (e.g. ``lambda z: g.log_prob(z, t1)`` for a
        :class:`memjax.scores.GaussianScore`) to remove the prior mismatch.
    """
    x0 = _check_common(score_fn, sde, x0, "x0")
    _checks.check_choice("divergence", divergence, ("exact", "hutchinson"))
    _checks.check_choice("probe", probe, ("rademacher", "gaussian"))
    _checks.check_positive_int("num_probes", num_probes)
    _checks.check_positive_int("chunk_size", chunk_size, allow_none=True)
    if prior_logp is not None and not callable(prior_logp):
        raise ValueError(f"prior_logp: expected a callable z -> log p(z), got {type(prior_logp).__name__}")
    if divergence == "hutchinson" and key is None:
        raise ValueError("key: expected a jax.random key for divergence='hutchinson', got None")
    ta, tb = _span(sde, t0, t1, forward=True)
    drift = sde.pf_drift(score_fn)

    if divergence == "hutchinson":
        shape = (num_probes,) + x0.shape
        if probe == "rademacher":
            probes = jax.random.rademacher(key, shape, dtype=x0.dtype)
        else:
            probes = jax.random.normal(key, shape, dtype=x0.dtype)
        div = lambda t, x: hutchinson_divergence(lambda y: drift(t, y), x, probes)
    else:
        div = lambda t, x: exact_divergence(lambda y: drift(t, y), x, chunk_size)

    def aug(t, state):
        x, _ = state
        return drift(t, x), div(t, x)

    sol = solve(aug, (x0, jnp.zeros((), x0.dtype)), ta, tb, solver=solver, rtol=rtol, atol=atol,
                num_steps=num_steps, max_steps=max_steps)
    z, delta = sol.y
    prior = sde.prior_logp(z) if prior_logp is None else prior_logp(z)
    res = LikelihoodResult(log_prob=prior + delta, prior_log_prob=prior, delta=delta, z=z,
                           success=sol.success, num_evals=sol.num_evals)
    if return_solution:
        return res
    _warn_if_failed(sol, "log_likelihood")
    return res.log_prob


def bits_per_dim(log_prob: Array, num_dims: int, *, data_range: float = 2.0,
                 num_bins: int = 256) -> Array:
    r"""Bits per dimension of ``num_bins``-level data scaled to an interval of width ``data_range``.

    For 8-bit images scaled to ``[-1, 1]`` (width 2), each bin has width ``2/256`` in model
    units, so a density ``p`` over the continuous, uniformly dequantised data gives
    ``bpd = -\log p / (D \ln 2) + \log_2(256 / 2) = -\log p/(D\ln 2) + 7`` -- the offset
    score_sde adds. The caller dequantises (adds ``U[0, 2/256)`` noise) before
    :func:`log_likelihood` for a proper bound.
    """
    return -log_prob / (num_dims * jnp.log(2.0)) + jnp.log2(num_bins / data_range)
