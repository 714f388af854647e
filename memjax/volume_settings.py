r"""Nested ease-of-reproduction settings: one volume-growth run per Pareto-maximal setting.

Ease of reproduction in one run per Pareto-maximal setting
----------------------------------------------------------
With ``accumulate="qr"`` the log stretches of the first ``k`` axes of an ``N``-axis run are
exactly those of a ``k``-axis run started from the same first ``k`` axes (Gram-Schmidt
processes the axes in order, so axis ``j`` never depends on axes after it), and the growth
after ``s`` steps is a prefix sum over steps. So a run at ``(N, S)`` yields every setting
``(k <= N, s <= S)`` at once, and the audit integrates only the Pareto-maximal settings of
the list it is given. The initial axes of an image are the rows of a Haar-random orthonormal
``N``-frame (QR of a Gaussian matrix drawn from ``fold_in(key, image index)``), whose first
``k`` rows are a Haar-random ``k``-frame: every prefix is a faithful ``k``-axis measurement.
(The reference code starts from non-orthonormal Gaussian neighbours sorted by norm; after the
first re-orthonormalisation the two agree in distribution.) With ``accumulate="norms"`` the
sort by norm breaks the nesting and every setting is run on its own.

"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from memjax import _checks
from memjax import parallel as _parallel
from memjax.lyapunov import qr_reduced
from memjax.sde import VPSDE, ScoreFn

__all__ = ["Setting", "parse_settings", "plan_runs", "covering_run", "nested_axes",
           "VolumeCurves", "volume_curves"]


class Setting(NamedTuple):
    """One ease-of-reproduction setting: ``num_axes`` (N) axes over the first ``steps`` steps."""

    num_axes: int
    steps: int

    @property
    def name(self) -> str:
        return f"N={self.num_axes},steps={self.steps}"


def parse_settings(settings: Any, *, dim: int | None = None, grid_steps: int | None = None,
                   name: str = "settings") -> tuple[Setting, ...]:
    """Validates a list of ``(num_axes, steps)`` pairs; ``num_axes = -1`` means ``D`` (full volume).

    Returns sorted, de-duplicated :class:`Setting` s. Raises ``ValueError`` naming ``name``.
    """
    try:
        pairs = [tuple(s) for s in settings]
    except TypeError as e:
        raise ValueError(f"{name}: expected a list of (num_axes, steps) pairs, got {settings!r}"
                         ) from e
    if not pairs:
        raise ValueError(f"{name}: expected at least one (num_axes, steps) pair, got none")
    out = []
    for p in pairs:
        if len(p) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                  for v in p):
            raise ValueError(f"{name}: expected (num_axes, steps) pairs of integers, got {p!r}")
        n, s = int(p[0]), int(p[1])
        if n == -1 and dim is not None:
            n = dim
        if (n < 1 and not (n == -1 and dim is None)) or s < 1:
            raise ValueError(f"{name}: expected positive num_axes (or -1 for D) and steps, got "
                             f"{p!r}")
        if dim is not None and n > dim:
            raise ValueError(f"{name}: num_axes {n} exceeds the image dimension D = {dim}")
        if grid_steps is not None and s > grid_steps:
            raise ValueError(f"{name}: steps {s} exceeds grid_steps = {grid_steps}")
        out.append(Setting(n, s))
    return tuple(sorted(set(out)))


def plan_runs(settings: Sequence[Setting], accumulate: str = "qr") -> tuple[Setting, ...]:
    """The runs that cover ``settings``: its Pareto-maximal elements for ``"qr"`` (a run at
    ``(N, S)`` covers every ``(k <= N, s <= S)``), every setting for ``"norms"``."""
    settings = tuple(sorted(set(Setting(*s) for s in settings)))
    if accumulate != "qr":
        return settings
    return tuple(s for s in settings
                 if not any(o != s and o.num_axes >= s.num_axes and o.steps >= s.steps
                            for o in settings))


def covering_run(setting: Setting, runs: Sequence[Setting]) -> Setting:
    """The cheapest run (fewest ``N * steps``) of ``runs`` that covers ``setting``."""
    cands = [r for r in runs if r.num_axes >= setting.num_axes and r.steps >= setting.steps]
    if not cands:
        raise ValueError(f"setting: {setting} is not covered by the runs {runs}")
    return min(cands, key=lambda r: ((r.num_axes + 1) * r.steps, r))


def nested_axes(key: PRNGKeyArray, num_axes: int, shape: tuple[int, ...],
                dtype=jnp.float32) -> Float[Array, "axes *shape"]:
    r"""A Haar-random orthonormal ``num_axes``-frame in ``R^D`` as rows ``[N, *shape]``.

    Rows ``0..k-1`` are themselves a Haar-random ``k``-frame for every ``k`` (QR of a Gaussian
    ``D x N`` matrix with ``R_jj > 0``: column ``j`` of ``Q`` depends only on Gaussian columns
    ``<= j``). Row ``j`` is scaled by ``1 - 10^{-3} j`` so that the reference code's "sort by
    norm, then Gram-Schmidt" initialisation (:func:`memjax.lyapunov.orthonormal_axes`) keeps
    this order and returns exactly these (unit) rows.
    """
    d = int(np.prod(shape))
    a = jax.random.normal(key, (num_axes, d), dtype).T
    q, r = qr_reduced(a)                      # vmapped over images: see qr_reduced
    q = q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(dtype)[None, :]
    scale = 1.0 - 1e-3 * jnp.arange(num_axes, dtype=dtype)
    return (q.T * scale[:, None]).reshape((num_axes,) + tuple(shape))


class VolumeCurves(NamedTuple):
    """``growth [n, A, S]``: log volume growth (nats) of each image with the first
    ``axes[a]`` axes after ``steps[s]`` steps; ``stable [n, S]``: every step up to ``steps[s]``
    was numerically stable (:func:`memjax.volume.volume_growth`'s flag)."""

    growth: Float[np.ndarray, "n a s"]
    stable: Bool[np.ndarray, "n s"]
    axes: tuple[int, ...]
    steps: tuple[int, ...]


def volume_curves(score_fn: ScoreFn, sde: VPSDE, images: Float[Array, "n *shape"], *,
                  num_axes: int, steps: int, report_axes: Sequence[int],
                  report_steps: Sequence[int], key: PRNGKeyArray, grid_steps: int = 1000,
                  batch_size: int = 64, mesh=None, progress: bool = False,
                  desc: str | None = None, **volume_growth_options) -> VolumeCurves:
    r"""Log volume growth of every image for every ``(k, s)`` in ``report_axes x report_steps``
    from ONE ``num_axes``-axis run over the first ``steps`` steps of the ``grid_steps`` grid.

    Image ``i`` starts from :func:`nested_axes` of ``fold_in(key, i)``; the growth with the
    first ``k`` axes after ``s`` steps is ``\sum_{step<s} \sum_{j<k} \log R_jj`` (QR
    accumulation; see the module docstring). Images are vmapped ``batch_size`` at a time and
    sharded over ``mesh`` (:func:`memjax.parallel.batched_map`). Options go to
    :func:`memjax.volume.volume_growth` (``method``, ``solver``, ``sigma``, ...);
    ``accumulate`` must be ``"qr"`` for prefixes ``k < num_axes``.
    """
    from memjax import volume

    images = _checks.as_array("images", images, min_ndim=1)
    shape = tuple(images.shape[1:])
    d = int(np.prod(shape))
    _checks.check_positive_int("num_axes", num_axes)
    _checks.check_positive_int("steps", steps)
    _checks.check_positive_int("grid_steps", grid_steps)
    if num_axes > d:
        raise ValueError(f"num_axes: expected at most D = {d}, got {num_axes}")
    if steps > grid_steps:
        raise ValueError(f"steps: expected at most grid_steps = {grid_steps}, got {steps}")
    ra = tuple(int(a) for a in report_axes)
    rs = tuple(int(s) for s in report_steps)
    if not ra or any(a < 1 or a > num_axes for a in ra):
        raise ValueError(f"report_axes: expected values in [1, num_axes = {num_axes}], got {ra}")
    if not rs or any(s < 1 or s > steps for s in rs):
        raise ValueError(f"report_steps: expected values in [1, steps = {steps}], got {rs}")
    accumulate = volume_growth_options.get("accumulate", "qr")
    if accumulate != "qr" and ra != (num_axes,):
        raise ValueError("report_axes: prefixes of the axes need accumulate='qr'; with "
                         f"{accumulate!r} report only num_axes = {num_axes}")
    for bad in ("initial_axes", "stop_after", "num_steps", "key"):
        if bad in volume_growth_options:
            raise ValueError(f"{bad}: set by volume_curves; not an option here")
    ia, is_ = jnp.asarray(ra) - 1, jnp.asarray(rs) - 1

    def one(args):
        image, index = args
        k = jax.random.fold_in(key, index)
        ax = nested_axes(k, num_axes, shape, image.dtype)
        res = volume.volume_growth(score_fn, sde, image, num_axes=num_axes,
                                   num_steps=grid_steps, stop_after=steps, initial_axes=ax,
                                   key=k, **volume_growth_options)
        per_axis = jnp.cumsum(res.log_stretch, axis=0)          # [S, N] growth of each axis
        prefix = jnp.cumsum(per_axis, axis=1)                   # [S, N] first-k volume
        growth = prefix[is_][:, ia].T                           # [A, S]
        stable = jnp.cumprod(res.stable.astype(jnp.int32))[is_].astype(bool)
        return growth, stable

    n = images.shape[0]
    growth, stable = _parallel.batched_map(
        one, (np.asarray(images), np.arange(n, dtype=np.int32)), batch_size=batch_size,
        mesh=mesh, progress=progress, desc=desc)
    return VolumeCurves(growth=np.asarray(growth), stable=np.asarray(stable), axes=ra, steps=rs)
