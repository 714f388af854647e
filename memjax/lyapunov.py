r"""Tangent-space machinery for any ODE ``dy/dt = f(t, y)``: exact stretches and Lyapunov spectra.

A set of ``n`` tangent vectors ``V = [v_1, ..., v_n]`` (rows) evolves with the linearised flow
(the variational equations)::

    dV/dt = J_f(t, y(t)) V,      J_f = \partial f / \partial y,

so after an interval ``V(t + \Delta) = \Phi V(t)`` with ``\Phi`` the Jacobian of the flow map.
memjax computes ``J_f v`` exactly with ``jax.jvp``, vmapped over the tangents (the primal is
evaluated once per call; ``n`` tangent products ride along as batched linear work), and never
by finite differences.

Benettin's QR method (Benettin et al. 1980; ChaosTools.jl ``lyapunovspectrum``): every
``\Delta`` the evolved tangents are factorised ``W = Q R`` (Householder, with the signs fixed so
that ``R_jj > 0``); ``Q`` replaces ``V`` and ``\log R_jj`` is the log stretch of axis ``j``
over the interval. Then::

    \lambda_j = \frac{1}{T} \sum_k \log R^{(k)}_{jj},
    \sum_{j\le n} \log R_{jj} = \log vol_n(\Phi V)

the second identity being what paper 000 (Algorithm 1, eq. 13) calls the volume growth: with
``n = D`` it is ``\log|\det \Phi| = \int \nabla\cdot f\,dt`` (Liouville), basis-independent.

Building blocks, reused by :mod:`memjax.volume`:

* :func:`tangent_map` -- ``f(t, y)`` and ``J_f V`` in one call (optionally in chunks of tangents);
* :func:`euler_step` -- the Euler step map and its exact Jacobian applied to ``V``;
* :func:`advance` -- state and tangents integrated together over one interval with diffrax
  (variational equations; the step controller controls the tangent error too);
* :func:`qr_step` -- sign-fixed QR: orthonormal new axes and ``\log|R_jj|``;
* :func:`sorted_orthonormalize` -- the reference code's re-orthonormalisation (sort by norm,
  largest first, then Gram-Schmidt).

Tangent sets are arrays ``[n, *y.shape]`` (axis 0 indexes the tangents).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from memjax import _checks
from memjax import flow as _flow

__all__ = ["Advance", "advance", "euler_step", "orthonormal_axes", "qr_reduced", "qr_step",
           "sorted_orthonormalize", "Spectrum", "spectrum", "tangent_map", "variational_field",
           "VectorField"]

VectorField = Callable[[Array, Array], Array]
"""``f(t, y) -> dy/dt``."""


# -- linear algebra ------------------------------------------------------------------------------
@jax.custom_batching.custom_vmap
def qr_reduced(a: Float[Array, "d n"]) -> tuple[Float[Array, "d n"], Float[Array, "n n"]]:
    """``jnp.linalg.qr(a, mode="reduced")`` as ``(q, r)``, safe to ``vmap`` on several CPU
    devices (:func:`_qr_batched`)."""
    return tuple(jnp.linalg.qr(a, mode="reduced"))


@qr_reduced.def_vmap
def _qr_batched(axis_size, in_batched, a):
    """A batch of QRs: one LAPACK call per matrix on CPU (``lax.map``), batched elsewhere.

    jaxlib's batched CPU QR splits a large batch over XLA's intra-op thread pool and blocks a
    pool thread until the pieces are done. With as many CPU devices as pool threads
    (``--xla_force_host_platform_device_count``) each device's program can reach the QR on a
    pool thread at once; then every pool thread waits and none runs the pieces: a deadlock
    (``tests/test_volume.py::test_full_volume_on_several_cpu_devices_does_not_hang``). A single
    matrix per call is never split, and gives the same numbers.
    """
    del axis_size
    if not in_batched[0]:
        return qr_reduced(a), (False, False)
    out = jax.lax.platform_dependent(a, cpu=lambda x: jax.lax.map(qr_reduced, x),
                                     default=lambda x: tuple(jnp.linalg.qr(x, mode="reduced")))
    return out, (True, True)


def qr_step(w: Float[Array, "n *shape"]) -> tuple[Float[Array, "n *shape"], Float[Array, " n"]]:
    r"""Re-orthonormalises the tangent rows ``w`` by a sign-fixed QR factorisation.

    ``w^T = Q R`` (``w`` flattened to ``[n, D]``, Householder QR), with the signs of the columns
    of ``Q`` flipped so that ``R_jj >= 0``; this is exactly the (modified) Gram-Schmidt basis of
    the rows of ``w`` in order. Returns ``(Q^T, \log R_jj)``: the new orthonormal axes (same
    shape as ``w``) and the log stretch of each axis. ``\sum_j \log R_jj`` is the log of the
    ``n``-volume spanned by ``w``.
    """
    n = w.shape[0]
    a = w.reshape(n, -1).T
    q, r = qr_reduced(a)
    d = jnp.diagonal(r)
    sign = jnp.where(d < 0, -1.0, 1.0).astype(a.dtype)
    q = q * sign[None, :]
    return q.T.reshape(w.shape), jnp.log(jnp.abs(d))


def sorted_orthonormalize(w: Float[Array, "n *shape"]
                          ) -> tuple[Float[Array, "n *shape"], Float[Array, " n"]]:
    r"""The reference code's re-orthonormalisation (paper 000, Algorithm 1 lines 11-12).

    Rows are sorted by norm, largest first, and Gram-Schmidt-orthonormalised in that order, so
    the first new axis points along the most stretched vector. Gram-Schmidt is computed as a
    sign-fixed Householder QR of the sorted rows (the same basis in exact arithmetic, stable in
    floating point). Returns ``(axes, \log\|w_i\|)`` with the norms in the input order.
    """
    n = w.shape[0]
    norms = jnp.sqrt(jnp.sum(w.reshape(n, -1) ** 2, axis=1))
    order = jnp.argsort(-norms, stable=True)
    q, _ = qr_step(w[order])
    return q, jnp.log(norms)


def orthonormal_axes(axes: Float[Array, "n *shape"]) -> Float[Array, "n *shape"]:
    """Initial axes made orthonormal the reference code's way (sorted by norm, Gram-Schmidt)."""
    return sorted_orthonormalize(axes)[0]


# -- tangent propagation -------------------------------------------------------------------------
def tangent_map(f: Callable[[Array], Array], y: Array, v: Float[Array, "n *shape"], *,
                chunk: int | None = None) -> tuple[Array, Array]:
    r"""``(f(y), [J_f(y) v_1, ..., J_f(y) v_n])`` with ``jax.jvp`` vmapped over the tangents.

    ``chunk`` bounds memory: tangents are processed ``chunk`` at a time (``jax.lax.map`` with
    ``batch_size``); the primal is then evaluated once more per chunk.
    """
    if chunk is None or chunk >= v.shape[0]:
        return jax.vmap(lambda u: jax.jvp(f, (y,), (u,)), out_axes=(None, 0))(v)
    fy = f(y)
    jv = jax.lax.map(lambda u: jax.jvp(f, (y,), (u,))[1], v, batch_size=chunk)
    return fy, jv


def variational_field(f: VectorField, *, chunk: int | None = None) -> VectorField:
    r"""The variational system ``(y, V) -> (f(t, y), J_f(t, y) V)`` as one vector field."""

    def field(t, state):
        y, v = state
        return tangent_map(lambda z: f(t, z), y, v, chunk=chunk)

    return field


def euler_step(f: VectorField, t, dt, y: Array, v: Array, *, chunk: int | None = None):
    r"""One Euler step ``y + dt f(t, y)`` and its exact Jacobian applied to the tangents.

    The step map ``E(y) = y + dt f(t, y)`` has Jacobian ``I + dt J_f``, so the tangents become
    ``V + dt J_f V``: the discrete map's derivative, not an approximation of the flow's.
    """
    fy, jv = tangent_map(lambda z: f(t, z), y, v, chunk=chunk)
    return y + dt * fy, v + dt * jv


class Advance(NamedTuple):
    """State and tangents after one interval (a pytree)."""

    y: Array
    v: Array
    success: Bool[Array, ""]
    num_evals: Int[Array, ""]


def advance(f: VectorField, t0, t1, y: Array, v: Array, *, solver: str = "tsit5",
            rtol: float = 1e-6, atol: float = 1e-6, num_substeps: int | None = None,
            max_steps: int = 4096, chunk: int | None = None) -> Advance:
    r"""Integrates ``y`` and its tangents ``v`` from ``t0`` to ``t1`` (variational equations).

    The augmented state ``(y, V)`` is solved by diffrax (any solver of
    :data:`memjax.flow.SOLVERS`, including the implicit Kvaerno family). With ``num_substeps``
    the solve takes that many equal steps; for an explicit Runge-Kutta method the discretised
    variational equations are then exactly the Jacobian of the discrete map. Otherwise it is
    adaptive (PID controller on ``rtol``/``atol``, error measured over state *and* tangents).
    """
    sol = _flow.solve(variational_field(f, chunk=chunk), (y, v), t0, t1, solver=solver,
                      rtol=rtol, atol=atol, num_steps=num_substeps, max_steps=max_steps)
    y1, v1 = sol.y
    return Advance(y1, v1, sol.success, sol.num_evals)


# -- Lyapunov spectrum ---------------------------------------------------------------------------
class Spectrum(NamedTuple):
    """Result of :func:`spectrum` (a pytree)."""

    exponents: Float[Array, " n"]           # descending; sum of log R_jj / recorded time
    log_stretch: Float[Array, "k n"]        # log R_jj of each recorded interval
    times: Float[Array, " k1"]              # recorded interval boundaries [k + 1]
    y: Array                                # final state (same pytree structure as y0)
    axes: Array                             # final orthonormal tangents [n, D] (flattened state)
    success: Bool[Array, ""]                # every interval's solve succeeded


def _num_intervals(name, span, dt):
    k = span / dt
    kr = int(round(k))
    if kr < 0 or abs(k - kr) > 1e-6 * max(1.0, k):
        raise ValueError(f"{name}: expected a whole number of intervals of length dt = {dt:g}, "
                         f"got a span of {span:g}")
    return kr


def _intervals(t0, t1, dt, transient) -> tuple[int, int]:
    """``(intervals in [t0, t1], intervals in the transient)`` of length ``dt``, checked."""
    for name, val in (("t0", t0), ("t1", t1), ("dt", dt), ("transient", transient)):
        if not isinstance(val, (int, float, np.integer, np.floating)) or not np.isfinite(val):
            raise ValueError(f"{name}: expected a finite Python number, got {val!r}")
    if not t1 > t0:
        raise ValueError(f"t0, t1: expected t0 < t1, got {t0}, {t1}")
    _checks.check_positive("dt", dt)
    if transient < 0:
        raise ValueError(f"transient: expected a non-negative number, got {transient}")
    num_total = _num_intervals("t1 - t0", float(t1) - float(t0), float(dt))
    num_skip = _num_intervals("transient", float(transient), float(dt))
    if num_total < 1 or num_skip >= num_total:
        raise ValueError(f"transient: expected less than t1 - t0 = {t1 - t0:g} so that something "
                         f"is recorded, got {transient:g}")
    return num_total, num_skip


def _starting_axes(initial_axes, key, n: int, d: int, dtype) -> Array:
    """Orthonormal ``[n, d]`` starting tangents: ``initial_axes``, else a Gaussian draw from
    ``key``, else the first ``n`` standard basis vectors."""
    if initial_axes is not None:
        axes = _checks.as_array("initial_axes", initial_axes)
        if axes.shape[0] != n or axes.size != n * d:
            raise ValueError(f"initial_axes: expected shape ({n}, {d}) (num_exponents x state "
                             f"size), got {axes.shape}")
        axes = axes.reshape(n, d).astype(dtype)
    elif key is not None:
        axes = jax.random.normal(key, (n, d), dtype)
    else:
        axes = jnp.eye(n, d, dtype=dtype)
    return orthonormal_axes(axes)


def spectrum(f: VectorField, y0, *, t0: float, t1: float, dt: float,
             num_exponents: int | None = None, transient: float = 0.0,
             initial_axes: Array | None = None, key: PRNGKeyArray | None = None,
             solver: str = "tsit5", rtol: float = 1e-8, atol: float = 1e-8,
             num_substeps: int | None = None, max_steps: int = 4096,
             chunk: int | None = None) -> Spectrum:
    r"""The leading ``num_exponents`` Lyapunov exponents of ``dy/dt = f(t, y)`` (Benettin QR).

    State and tangents are integrated together (:func:`advance`) over intervals of length
    ``dt`` from ``t0`` to ``t1``; after each interval the tangents are re-orthonormalised by
    :func:`qr_step`. The first ``transient`` time units (a whole number of intervals) are
    integrated and re-orthonormalised without recording, so the axes can align with the
    leading directions; then ``\lambda_j = \sum_k \log R^{(k)}_{jj} / (t_1 - t_0 - transient)``.

    Args:
      f: ``f(t, y) -> dy/dt``; ``y`` an array or any pytree of arrays (flattened internally).
      y0: initial state.
      t0, t1, dt: span and re-orthonormalisation interval (``(t1 - t0) / dt`` a whole number).
      num_exponents: how many exponents (default: the state dimension ``D``).
      transient: time integrated before recording starts (a multiple of ``dt``).
      initial_axes: ``[num_exponents, D]`` (or ``[num_exponents, *y0.shape]`` for an array
        state) starting tangents, orthonormalised first; default: ``key``'s Gaussian draw, or the
        first ``num_exponents`` standard basis vectors when ``key`` is None.
      solver: a :data:`memjax.flow.SOLVERS` name; ``"euler"`` needs ``num_substeps``.
      rtol, atol: adaptive tolerances (used when ``num_substeps`` is None).
      num_substeps: fixed steps per interval instead of step-size control.
      chunk: tangents per ``jax.jvp`` batch (memory bound for large ``num_exponents``).

    Returns:
      :class:`Spectrum` with ``exponents`` sorted descending. Works in float32 and float64
      (the dtype of ``y0``); long runs in float32 lose accuracy in the smallest exponents.
    """
    if not callable(f):
        raise ValueError(f"f: expected a callable f(t, y), got {type(f).__name__}")
    flat0, unravel = ravel_pytree(y0)
    if flat0.size == 0:
        raise ValueError("y0: expected a non-empty state")
    if not jnp.issubdtype(flat0.dtype, jnp.floating):
        flat0 = flat0.astype(jnp.result_type(float))
    _checks.check_finite("y0", flat0)
    d = flat0.size
    num_total, num_skip = _intervals(t0, t1, dt, transient)
    n = d if num_exponents is None else num_exponents
    _checks.check_positive_int("num_exponents", n)
    if n > d:
        raise ValueError(f"num_exponents: expected at most the state dimension {d}, got {n}")
    _checks.check_choice("solver", solver, _flow.SOLVERS)
    if solver in _flow.FIXED_ONLY and num_substeps is None:
        raise ValueError(f"num_substeps: expected a positive integer for the fixed-step solver "
                         f"{solver!r}, got None")
    _flow.check_solver_args(solver, num_substeps, rtol, atol, max_steps)
    _checks.check_positive_int("chunk", chunk, allow_none=True)
    dtype = flat0.dtype
    axes = _starting_axes(initial_axes, key, n, d, dtype)

    def flat_f(t, y):
        out, _ = ravel_pytree(f(t, unravel(y)))
        return out.astype(y.dtype)

    h = (float(t1) - float(t0)) / num_total
    grid = jnp.asarray(float(t0) + h * np.arange(num_total + 1), dtype)

    def body(carry, k):
        y, q, ok = carry
        adv = advance(flat_f, grid[k], grid[k + 1], y, q, solver=solver, rtol=rtol, atol=atol,
                      num_substeps=num_substeps, max_steps=max_steps, chunk=chunk)
        q_new, log_r = qr_step(adv.v)
        return (adv.y, q_new, ok & adv.success), log_r

    carry = (flat0, axes, jnp.asarray(True))
    if num_skip:
        carry, _ = jax.lax.scan(body, carry, jnp.arange(num_skip))
    carry, log_r = jax.lax.scan(body, carry, jnp.arange(num_skip, num_total))
    y, q, ok = carry
    elapsed = h * (num_total - num_skip)
    exponents = -jnp.sort(-jnp.sum(log_r, axis=0) / elapsed)
    return Spectrum(exponents=exponents, log_stretch=log_r, times=grid[num_skip:],
                    y=unravel(y), axes=q, success=ok)
