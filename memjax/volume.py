r"""Paper 000: the volume growth rate of a small ball along the probability-flow ODE.

A ball of radius ``\sigma`` around an image ``x_0`` is carried by the probability-flow ODE
(eq. 8) **forward**, data to noise, ``dx/dt = f(t, x) = -\beta(t)/2 [x + s(x, t)]``. The
volume of the region of latent space that decodes near ``x_0`` is ``vol(ball)`` times the
Jacobian determinant of the flow map; paper 000 measures its logarithm with ``N`` axes
(Algorithm 1, eq. 13)::

    \log l_T = \sum_{k<T} \sum_{j\le N} \log(\text{stretch of axis } j \text{ over step } k)

memjax computes the stretches exactly and along the paper's own grid:

* ``method="jvp"`` (default): tangents ``V`` [N, *x.shape] propagated with ``jax.jvp`` of the
  drift, vmapped over the axes -- the exact Jacobian of the discrete Euler step map
  ``V -> V + dt J_f V``, or the variational equations ``dV/dt = J_f V`` integrated with the
  state by an adaptive diffrax solver (``solver="tsit5"``, ``"heun"``, implicit
  ``"kvaerno5"`` ...). About the cost of ``N + 1`` forward passes per drift evaluation.
* ``method="finite_difference"``: the paper's neighbours ``x + \sigma v_j`` evolved by the same
  integrator; stretches from ``(x_j(t_{k+1}) - x(t_{k+1})) / \sigma`` (Algorithm 1 lines 6-10).
  Same cost, but only exact for a linear drift (the Gaussian score).

and accumulates them two ways (given the evolved axes ``W = \Phi_k Q_k``):

* ``accumulate="qr"`` (default): ``W = Q R`` with ``R_jj > 0``, stretch ``\log R_jj``. The sum
  is the log growth of the ``N``-volume spanned by the axes -- the true volume growth
  (with ``N = D``, ``\log|\det|`` of the flow map's Jacobian, Liouville).
* ``accumulate="norms"``: the reference code's number: ``\log\|w_j\|`` (the raw per-axis
  stretch before re-orthonormalisation), then rows sorted by norm (largest first),
  Gram-Schmidt, rescaled. By Hadamard's inequality ``\sum_j \log\|w_j\| \ge \sum_j \log R_jj``,
  so it over-estimates the volume growth, step by step.

The recording grid is the reference code's: ``dt = t_max / num_steps``,
``t_k = t_min + k dt`` (``k = 0 .. num_steps - 1``; with the defaults ``t_k = (k+1)/1000``),
each step taken from ``t_k`` to ``t_k + dt``, so the final time is ``t_min + t_max`` (1.001),
as in the authors' loop. ``solver="euler"`` takes exactly one drift evaluation per step
(reproducing the paper's discretisation); adaptive solvers integrate the continuous ODE
inside each recording interval, so their numbers converge to the flow's as tolerances
tighten. "step = 1" in the paper is the growth after the first ``dt = 1e-3`` step.

Stiffness. The score of a memorising model is very stiff near ``t_min``: around images it
was not trained on the drift Jacobian ``J_f`` has eigenvalues of ``-10^4 .. -10^5`` (the
posterior-covariance term of the exact score), so one Euler step multiplies those directions
by ``|1 + dt \lambda| \gg 1`` (amplifying what the ODE contracts) or nearly zeroes them.
Each step therefore also estimates the dominant eigenvalue ``\lambda_k`` of ``J_f(t_k, x_k)``
by power iteration warm-started across steps (one extra tangent in the same batched jvp;
the Rayleigh quotient, exact for the symmetric Jacobian of an exact score) and reports
``stiffness = dt |\lambda_k|``. An Euler step is flagged unstable when
``stiffness > stability_limit`` (default 2, the end of explicit Euler's real stability
interval ``-2 <= dt \lambda <= 0``); an adaptive step when its solve failed (``max_steps``).
When the flag is raised, the paper-grid (Euler) numbers are properties of the discrete map,
not of the ODE: they depend on ``dt``, on float precision (float32 and float64 can differ
by tens of nats) and on the implementation's rounding; use an adaptive solver (explicit or
the implicit ``"kvaerno5"``) for numbers that converge, and compare images only within one
setting (report ``N``, steps, accumulation mode and solver with every score).

Everything here takes one example and is ``jax.jit``/``jax.vmap`` compatible;
:func:`ease_of_reproduction` batches and shards a dataset.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from memjax import _checks
from memjax import flow as _flow
from memjax import parallel as _parallel
from memjax.lyapunov import advance, orthonormal_axes, qr_step, sorted_orthonormalize, tangent_map
from memjax.sde import VPSDE, ScoreFn

__all__ = ["ACCUMULATE", "ease_of_reproduction", "METHODS", "rank_images", "SOLVERS",
           "volume_growth", "VolumeGrowth"]

METHODS = ("jvp", "finite_difference")
ACCUMULATE = ("qr", "norms")
SOLVERS = _flow.SOLVERS


class VolumeGrowth(NamedTuple):
    """Result of :func:`volume_growth` for one example (a pytree; batched under vmap)."""

    log_growth: Float[Array, " steps"]          # cumulative log volume growth after each step
    log_stretch: Float[Array, "steps axes"]     # per-step log stretch of each axis
    times: Float[Array, " steps1"]              # t_k, k = 0 .. steps
    stable: Bool[Array, " steps"]               # the step was numerically trustworthy
    stiffness: Float[Array, " steps"]           # dt |lambda_max(J_f)| at the start of each step
    x: Array                                    # the centre at the final time
    axes: Array                                 # final orthonormal axes [axes, *x.shape]
    num_evals: Int[Array, ""]                   # drift evaluations (each batched over the axes)


@dataclasses.dataclass(frozen=True)
class _Config:
    num_axes: int
    num_steps: int
    stop_after: int
    method: str
    accumulate: str
    sigma: float
    solver: str
    rtol: float
    atol: float
    max_steps: int
    tangent_chunk: int | None
    check_stability: bool
    stability_limit: float


def _prepare(score_fn, sde, example_shape, *, num_axes=100, num_steps=1000, method="jvp",
             accumulate="qr", sigma=0.05, solver="euler", initial_axes=None, key=None,
             tangent_chunk=None, rtol=1e-5, atol=1e-5, max_steps=4096, stop_after=None,
             check_stability=True, stability_limit=2.0) -> tuple[_Config, Array | None]:
    """Validates every option (before any tracing) and returns the static configuration."""
    if not callable(score_fn):
        raise ValueError(f"score_fn: expected a callable score_fn(x, t), got "
                         f"{type(score_fn).__name__}")
    _checks.check_schedule("sde", sde)
    d = int(np.prod(example_shape)) if example_shape else 1
    _checks.check_positive_int("num_axes", num_axes)
    if num_axes > d:
        raise ValueError(f"num_axes: expected at most the example dimension D = {d}, got "
                         f"{num_axes}")
    _checks.check_positive_int("num_steps", num_steps)
    stop_after = num_steps if stop_after is None else stop_after
    _checks.check_positive_int("stop_after", stop_after)
    if stop_after > num_steps:
        raise ValueError(f"stop_after: expected at most num_steps = {num_steps}, got {stop_after}")
    _checks.check_choice("method", method, METHODS)
    _checks.check_choice("accumulate", accumulate, ACCUMULATE)
    _checks.check_choice("solver", solver, SOLVERS)
    _checks.check_positive("sigma", sigma)
    _checks.check_positive("rtol", rtol)
    _checks.check_positive("atol", atol)
    _checks.check_positive_int("max_steps", max_steps)
    _checks.check_positive_int("tangent_chunk", tangent_chunk, allow_none=True)
    _checks.check_positive("stability_limit", stability_limit)
    if not isinstance(check_stability, (bool, np.bool_)):
        raise ValueError(f"check_stability: expected a bool, got {check_stability!r}")
    axes = None
    if initial_axes is not None:
        axes = _checks.as_array("initial_axes", initial_axes)
        expected = (num_axes,) + tuple(example_shape)
        if tuple(axes.shape) != expected:
            raise ValueError(f"initial_axes: expected shape {expected} (num_axes x the example's "
                             f"shape), got {tuple(axes.shape)}")
    elif key is None:
        raise ValueError("key: expected a jax.random key to draw the initial axes (or pass "
                         "initial_axes), got None")
    cfg = _Config(num_axes=int(num_axes), num_steps=int(num_steps), stop_after=int(stop_after),
                  method=method, accumulate=accumulate, sigma=float(sigma), solver=solver,
                  rtol=float(rtol), atol=float(atol), max_steps=int(max_steps),
                  tangent_chunk=None if tangent_chunk is None else int(tangent_chunk),
                  check_stability=bool(check_stability), stability_limit=float(stability_limit))
    return cfg, axes


def _start(cfg: _Config, x0: Array, axes: Array | None, key) -> tuple[Array, Array]:
    """Initial axes (given, or drawn from ``key``) and the power-iteration start vector.

    The power vector only feeds the stiffness estimate; it is a fixed pseudo-random pattern
    (a trace-time constant, so no extra random draw is compiled) shared by every example.
    """
    shape = (cfg.num_axes,) + x0.shape
    if axes is None:
        axes = jax.random.normal(key, shape, x0.dtype)
    p0 = np.random.default_rng(0).standard_normal(x0.shape)
    p0 = jnp.asarray(p0 / np.linalg.norm(p0), x0.dtype)
    return axes.astype(x0.dtype), p0


def _map_points(g, pts, chunk):
    if chunk is None or chunk >= pts.shape[0]:
        return jax.vmap(g)(pts)
    return jax.lax.map(g, pts, batch_size=chunk)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _core(score_fn, sde: VPSDE, cfg: _Config, x0, axes, p0) -> VolumeGrowth:
    dtype = x0.dtype
    n, sig, chunk = cfg.num_axes, cfg.sigma, cfg.tangent_chunk
    f = sde.pf_drift(score_fn)
    h = float(sde.t_max) / cfg.num_steps
    times = jnp.asarray(float(sde.t_min) + h * np.arange(cfg.stop_after + 1), dtype)
    dt = jnp.asarray(h, dtype)
    euler = cfg.solver == "euler"
    fd = cfg.method == "finite_difference"
    check = cfg.check_stability

    def stacked_field(t, state):  # centre and neighbours, all evolved by the same solver
        y, xs = state
        return f(t, y), _map_points(lambda z: f(t, z), xs, chunk)

    def step(carry, k):
        y, q, p = carry
        t = times[k]
        jp = None
        if euler and not fd:
            tang = jnp.concatenate([q, p[None]]) if check else q
            fy, jv = tangent_map(lambda z: f(t, z), y, tang, chunk=chunk)
            y1, w = y + dt * fy, q + dt * jv[:n]
            jp = jv[n] if check else None
            ok, evals = jnp.asarray(True), jnp.asarray(1)
        elif euler:
            pts = jnp.concatenate([y[None], y + sig * q] + ([(y + sig * p)[None]] if check else []))
            fx = _map_points(lambda z: f(t, z), pts, chunk)
            x1 = pts + dt * fx
            y1, w = x1[0], (x1[1:n + 1] - x1[0]) / sig
            jp = (fx[n + 1] - fx[0]) / sig if check else None
            ok, evals = jnp.asarray(True), jnp.asarray(1)
        else:
            if fd:
                sol = _flow.solve(stacked_field, (y, y + sig * q), t, t + dt, solver=cfg.solver,
                                  rtol=cfg.rtol, atol=cfg.atol, max_steps=cfg.max_steps)
                y1, xs1 = sol.y
                w, ok, evals = (xs1 - y1) / sig, sol.success, sol.num_evals
            else:
                adv = advance(f, t, t + dt, y, q, solver=cfg.solver, rtol=cfg.rtol,
                              atol=cfg.atol, max_steps=cfg.max_steps, chunk=chunk)
                y1, w, ok, evals = adv.y, adv.v, adv.success, adv.num_evals
            if check:
                if fd:
                    jp = (f(t, y + sig * p) - f(t, y)) / sig
                else:
                    jp = jax.jvp(lambda z: f(t, z), (y,), (p,))[1]
                evals = evals + 1
        if check:
            lam = jnp.vdot(p, jp)
            norm = jnp.linalg.norm(jp)
            p1 = jnp.where(norm > 0, jp / jnp.where(norm > 0, norm, 1), p)
            stiff = dt * jnp.abs(lam)
        else:
            p1, stiff = p, jnp.asarray(jnp.nan, dtype)
        if euler and check:
            ok = ok & (stiff <= cfg.stability_limit)
        if cfg.accumulate == "qr":
            q1, ls = qr_step(w)
        else:
            q1, ls = sorted_orthonormalize(w)
        return (y1, q1, p1), (ls, ok, stiff, evals)

    q0 = orthonormal_axes(axes)
    (y, q, _), (ls, ok, stiff, evals) = jax.lax.scan(step, (x0, q0, p0),
                                                      jnp.arange(cfg.stop_after))
    return VolumeGrowth(log_growth=jnp.cumsum(jnp.sum(ls, axis=1)), log_stretch=ls, times=times,
                        stable=ok, stiffness=stiff, x=y, axes=q, num_evals=jnp.sum(evals))


def _warn_unstable(stable, what: str) -> None:
    if _checks.is_concrete(stable) and not bool(np.all(np.asarray(stable))):
        warnings.warn(
            f"{what}: some steps were numerically unstable (explicit Euler step beyond its "
            "stability interval for the stiffest direction, dt |lambda| > stability_limit, or "
            "an adaptive solve that did not finish); those numbers describe the discrete map, "
            "not the ODE. See the `stable` / `stiffness` fields; an adaptive or implicit solver "
            "(solver='tsit5' / 'kvaerno5') gives converged values.", RuntimeWarning,
            stacklevel=3)


def volume_growth(score_fn: ScoreFn, sde: VPSDE, x0: Float[Array, "*shape"], *,
                  num_axes: int = 100, num_steps: int = 1000, method: str = "jvp",
                  accumulate: str = "qr", sigma: float = 0.05, solver: str = "euler",
                  initial_axes: Float[Array, "axes *shape"] | None = None,
                  key: PRNGKeyArray | None = None, tangent_chunk: int | None = None,
                  rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 4096,
                  stop_after: int | None = None, check_stability: bool = True,
                  stability_limit: float = 2.0) -> VolumeGrowth:
    r"""Log volume growth of a small ball around ``x0`` along the forward probability-flow ODE.

    Paper 000, Algorithm 1 and eq. 13, computed exactly (see the module docstring for the
    maths, the grid, the accumulation modes and the stability flag).

    Args:
      score_fn: ``score_fn(x, t) -> \nabla_x \log p_t(x)`` for one example.
      sde: the :class:`memjax.VPSDE` (its ``t_min``, ``t_max`` fix the grid).
      x0: one example (any shape, e.g. ``[H, W, C]``).
      num_axes: ``N``, number of axes (``<= D``); ``N = D`` gives the full volume.
      num_steps: ``T``, steps of the grid ``t_k = t_min + k t_max / T``.
      method: ``"jvp"`` (exact tangents) or ``"finite_difference"`` (neighbours at distance
        ``sigma``, the paper's Algorithm 1).
      accumulate: ``"qr"`` (true volume, ``\sum \log R_jj``) or ``"norms"`` (the reference
        code's raw per-axis stretches, sort, Gram-Schmidt).
      sigma: radius of the ball in image units (finite differences only).
      solver: ``"euler"`` (the paper's grid, one evaluation per step) or an adaptive diffrax
        solver integrating state and tangents inside each recording interval (``"heun"``,
        ``"midpoint"``, ``"tsit5"``, ``"dopri5"``, implicit ``"kvaerno3"``/``"kvaerno5"``;
        the implicit ones build a dense Jacobian of the whole state-plus-tangents system, so
        keep ``N D`` small).
      initial_axes: ``[N, *x0.shape]`` starting axes, orthonormalised the reference code's way
        (sorted by norm, largest first, then Gram-Schmidt). Default: Gaussian draws from ``key``.
      key: PRNG key for the initial axes (required unless ``initial_axes`` is given).
      tangent_chunk: evaluate the tangents (or neighbours) this many at a time
        (``jax.lax.map``), bounding memory for large ``N`` (e.g. ``N = D = 3072``).
      rtol, atol, max_steps: adaptive solver settings (per recording interval).
      stop_after: integrate only the first ``stop_after`` steps of the ``num_steps`` grid.
      check_stability: estimate the stiffness and flag steps (one extra tangent per step).
      stability_limit: the largest ``dt |\lambda_max|`` an Euler step may have to count as stable.

    Returns:
      :class:`VolumeGrowth` with ``log_growth [S]`` (cumulative, nats), ``log_stretch [S, N]``,
      ``times [S + 1]``, ``stable [S]``, ``stiffness [S]``, the final centre and axes, and the
      number of drift evaluations (``S = stop_after or num_steps``). Warns once (outside jit)
      if any step was unstable.
    """
    x0 = _checks.as_array("x0", x0)
    cfg, axes = _prepare(score_fn, sde, x0.shape, num_axes=num_axes, num_steps=num_steps,
                         method=method, accumulate=accumulate, sigma=sigma, solver=solver,
                         initial_axes=initial_axes, key=key, tangent_chunk=tangent_chunk,
                         rtol=rtol, atol=atol, max_steps=max_steps, stop_after=stop_after,
                         check_stability=check_stability, stability_limit=stability_limit)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.float32)
    axes, p0 = _start(cfg, x0, axes, key)
    res = _core(score_fn, sde, cfg, x0, axes, p0)
    _warn_unstable(res.stable, "volume_growth")
    return res


def ease_of_reproduction(score_fn: ScoreFn, sde: VPSDE, images: Float[Array, "n *shape"], *,
                         num_axes: int = 1, steps: int | None = None, grid_steps: int = 1000,
                         batch_size: int = 64, key: PRNGKeyArray | None = None, mesh=None,
                         progress: bool | None = None, num_steps: int | None = None,
                         return_stable: bool = False, **volume_growth_options):
    r"""Ease-of-reproduction score of every image: paper 000's dataset ranking (Fig. 3, 7, 8).

    The score of an image is its log volume growth after the first ``steps`` steps of the
    ``grid_steps`` grid (paper: ``N = 1`` axis, ``step = 1`` of ``T = 1000``; only those steps
    are integrated). Higher means the image occupies more latent volume: easier to reproduce.

    Each image gets its own key ``jax.random.fold_in(key, index)``, so the numbers do not depend
    on ``batch_size`` or on the number of devices. Images are processed ``batch_size`` at a time
    with ``jax.vmap`` and sharded over ``mesh`` (default: all devices) by
    :func:`memjax.parallel.batched_map`.

    Args:
      images: ``[n, *shape]`` dataset.
      num_axes, steps, grid_steps: ``N``, steps recorded and the grid (``T``); ``num_steps`` is
        an alias of ``steps`` (DESIGN.md spelling).
      batch_size: images per device batch (rounded up to a multiple of the device count).
      key: PRNG key (required unless ``initial_axes``, shared by every image, is given).
      mesh: a :func:`memjax.parallel.data_mesh`; default all devices.
      progress: show a progress bar (default: when there are more than 16 batches).
      return_stable: also return a per-image bool, every step stable.
      **volume_growth_options: ``method``, ``accumulate``, ``sigma``, ``solver``,
        ``initial_axes``, ``tangent_chunk``, ``rtol``, ``atol``, ``max_steps``,
        ``check_stability``, ``stability_limit`` (see :func:`volume_growth`).

    Returns:
      NumPy ``[n]`` scores (and ``[n]`` stability flags if ``return_stable``).
    """
    if steps is not None and num_steps is not None and steps != num_steps:
        raise ValueError(f"steps, num_steps: num_steps is an alias of steps; got both, {steps} "
                         f"and {num_steps}")
    if steps is None:
        steps = 1 if num_steps is None else num_steps
    images = _checks.as_array("images", images, min_ndim=1)
    if images.shape[0] < 1:
        raise ValueError("images: expected at least one image, got an empty array")
    _checks.check_positive_int("batch_size", batch_size)
    _checks.check_positive_int("grid_steps", grid_steps)
    _checks.check_positive_int("steps", steps)
    if steps > grid_steps:
        raise ValueError(f"steps: expected at most grid_steps = {grid_steps}, got {steps}")
    if "stop_after" in volume_growth_options:
        raise ValueError("stop_after: not an option of ease_of_reproduction; use steps")
    shape = tuple(images.shape[1:])
    cfg, axes = _prepare(score_fn, sde, shape, num_axes=num_axes, num_steps=grid_steps,
                         stop_after=steps, key=key, **volume_growth_options)
    n = images.shape[0]
    dtype = images.dtype

    if progress is None:
        progress = n > 16 * batch_size
    images_np = np.asarray(images, dtype=dtype)
    scores, stable = _parallel.batched_map(
        _ease_one(score_fn, sde, cfg), (images_np, np.arange(n, dtype=np.int32)),
        args=(axes, key), batch_size=batch_size, mesh=mesh, progress=progress,
        desc="ease of reproduction")
    _warn_unstable(stable, "ease_of_reproduction")
    return (scores, stable) if return_stable else scores


@functools.lru_cache(maxsize=16)
def _ease_one(score_fn, sde: VPSDE, cfg: _Config):
    """The per-image ease-of-reproduction function, cached so repeated calls with the same
    score function and settings (trained, then held-out images) reuse one compilation."""

    def one(example, axes, key):
        image, index = example
        k = None if key is None else jax.random.fold_in(key, index)
        ax, p0 = _start(cfg, image, axes, k)
        res = _core(score_fn, sde, cfg, image, ax, p0)
        return res.log_growth[-1], jnp.all(res.stable)

    return one


def rank_images(scores: Float[Array, " n"], k: int) -> tuple[Int[np.ndarray, " k"],
                                                             Int[np.ndarray, " k"]]:
    """The ``k`` easiest (highest score first) and ``k`` hardest (lowest first) image indices.

    Paper 000 Fig. 7 / 8 select the top and bottom 1,280 CIFAR-10 images this way. Ties keep
    index order. NaN scores are ranked neither easiest nor hardest (placed last in both).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size < 1:
        raise ValueError(f"scores: expected a non-empty 1-D array, got shape {s.shape}")
    _checks.check_positive_int("k", k)
    if k > s.size:
        raise ValueError(f"k: expected at most the number of scores {s.size}, got {k}")
    finite = np.isfinite(s)
    easiest = np.argsort(np.where(finite, -s, np.inf), kind="stable")[:k]
    hardest = np.argsort(np.where(finite, s, np.inf), kind="stable")[:k]
    return easiest, hardest
