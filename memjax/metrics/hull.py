r"""Convex hull of 2-D points and point-in-hull tests, jittable with fixed-size outputs.

Paper 003 (appendix A, Algorithm 2) draws the boundary of the real points' t-SNE embedding
with Quickhull (Barber et al. 1996, i.e. Qhull through SciPy in the public code); generated
points outside it are the *diverse samples* (eq. 18). Here the same hull comes from
Andrew's monotone chain, which has a static shape and so runs under ``jax.jit``:

1. sort the points lexicographically by ``(x, y)`` (stable, so equal points keep index order);
2. drop exact duplicates, keeping the lowest index of each group;
3. scan left to right keeping a stack whose last two entries and the new point must make a
   strict left (counter-clockwise) turn, :math:`(b - a) \times (p - a) > 0`; points failing it
   are popped. That builds the lower hull; the same scan right to left builds the upper hull.

:math:`O(n \log n)` for the sort, :math:`O(n)` amortised for the scans.

**Conventions** (they match ``scipy.spatial.ConvexHull`` wherever Qhull gives an answer):

- vertices come counter-clockwise, starting from the smallest ``(x, y)`` point (SciPy also
  lists 2-D hull vertices counter-clockwise, from another start);
- points lying on an edge between two vertices (collinear) are **not** vertices;
- among exactly equal points only the lowest index can be a vertex;
- degenerate inputs, where Qhull raises ``QhullError``: all points equal gives one vertex;
  all points on a line gives the two end points (a segment of zero area).

Arithmetic is exact for coordinates whose differences and cross products are representable
(e.g. small integers); for general floats a point within rounding of an edge may fall on
either side, as in any floating-point hull.

**Containment** (:func:`in_hull`). With counter-clockwise vertices :math:`v_0, \dots,
v_{h-1}`, a point :math:`p` is inside when it lies left of every edge,
:math:`(v_{k+1} - v_k) \times (p - v_k) \ge 0`. It is found in :math:`O(\log h)` per point:
binary search for the fan triangle :math:`(v_0, v_k, v_{k+1})` whose wedge contains
:math:`p`, then one test against the edge :math:`v_k v_{k+1}`. With ``strict=True`` (the
paper's public code, and the default) every inequality is strict, so a point **on the
boundary is outside** and a degenerate hull (one point or a segment) contains nothing.
``strict=False`` counts the boundary as inside, as SciPy's ``Delaunay.find_simplex`` does (up
to its tolerance).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from memjax import _checks

__all__ = ["Hull", "convex_hull", "in_hull"]


class Hull(NamedTuple):
    """A convex hull with a static size (a pytree; unpacks as ``vertices, mask, polygon``).

    Attributes:
      vertices: ``[n]`` int32 indices into the input points, counter-clockwise from the
        smallest ``(x, y)`` point; entries past the last vertex repeat ``vertices[0]``.
      mask: ``[n]`` bool, True for the real vertices (``mask.sum()`` is their number h).
      polygon: ``[n, 2]`` the vertex coordinates, padded like ``vertices``.
    """

    vertices: Int[Array, " n"]
    mask: Bool[Array, " n"]
    polygon: Float[Array, "n 2"]


def _cross(o, a, b):
    """z-component of (a - o) x (b - o): > 0 when o -> a -> b turns counter-clockwise."""
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - \
        (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])


def _chain(pts: Float[Array, "n 2"], valid: Bool[Array, " n"]):
    """One monotone-chain pass over ``pts`` in the given order; returns (stack, size)."""
    n = pts.shape[0]

    def push(carry, i):
        stack, size = carry
        p = pts[i]

        def pop_needed(s):
            a = pts[stack[jnp.maximum(s - 2, 0)]]
            b = pts[stack[jnp.maximum(s - 1, 0)]]
            return valid[i] & (s >= 2) & (_cross(a, b, p) <= 0)

        size = jax.lax.while_loop(pop_needed, lambda s: s - 1, size)
        stack = stack.at[size].set(jnp.where(valid[i], i, stack[size]))
        return (stack, size + valid[i].astype(size.dtype)), None

    init = (jnp.zeros((n,), jnp.int32), jnp.asarray(0, jnp.int32))
    (stack, size), _ = jax.lax.scan(push, init, jnp.arange(n, dtype=jnp.int32))
    return stack, size


@jax.jit
def _convex_hull(points: Float[Array, "n 2"]) -> Hull:
    n = points.shape[0]
    order = jnp.lexsort((points[:, 1], points[:, 0])).astype(jnp.int32)  # by x, then y; stable
    pts = points[order]
    first = jnp.concatenate([jnp.ones((1,), bool), jnp.any(pts[1:] != pts[:-1], axis=1)])
    lower, nl = _chain(pts, first)
    upper_rev, nu = _chain(pts[::-1], first[::-1])
    upper = (n - 1) - upper_rev                       # positions in the forward sorted order
    # Andrew: lower[:-1] + upper[:-1]. One distinct point gives nl = nu = 1 -> h = 1.
    h = jnp.maximum(nl + nu - 2, 1)
    j = jnp.arange(n, dtype=jnp.int32)
    pos = jnp.where(j < nl - 1, lower[j], upper[jnp.clip(j - (nl - 1), 0, n - 1)])
    mask = j < h
    pos = jnp.where(mask, pos, pos[0])
    vertices = order[pos]
    return Hull(vertices=vertices, mask=mask, polygon=points[vertices])


def convex_hull(points: Float[Array, "n 2"]) -> Hull:
    """Convex hull of ``[n, 2]`` points: vertex indices (padded to ``n``), mask, polygon.

    Same vertex set as ``scipy.spatial.ConvexHull(points).vertices`` (see the module
    docstring for order, collinear, duplicate and degenerate conventions). Jitted; the
    output shapes depend only on ``n``.
    """
    points = _checks.as_array("points", points, ndim=2)
    if points.shape[1] != 2 or points.shape[0] < 1:
        raise ValueError(f"points: expected shape [n, 2] with n >= 1, got {points.shape}")
    return _convex_hull(points)


@functools.partial(jax.jit, static_argnames=("strict",))
def _in_hull(points: Float[Array, "m 2"], hull: Hull, strict: bool) -> Bool[Array, " m"]:
    poly, mask = hull.polygon.astype(points.dtype), hull.mask
    n = poly.shape[0]
    h = jnp.sum(mask).astype(jnp.int32)
    v0 = poly[0]
    last = poly[jnp.maximum(h - 1, 0)]
    num_steps = max(int(np.ceil(np.log2(max(n, 2)))) + 1, 1)

    def one(p):
        c_first = _cross(v0, poly[jnp.minimum(1, n - 1)], p)   # edge v0 -> v1
        c_last = _cross(v0, last, p)                             # edge v_{h-1} -> v0 (reversed)

        # largest k in [1, h-2] with cross(v0, v_k, p) >= 0 (monotone in k for a convex fan)
        def bisect(_, lohi):
            lo, hi = lohi
            mid = (lo + hi + 1) // 2
            ok = _cross(v0, poly[mid], p) >= 0
            return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

        k, _ = jax.lax.fori_loop(0, num_steps, bisect,
                                 (jnp.asarray(1, jnp.int32), jnp.maximum(h - 2, 1)))
        c_edge = _cross(poly[k], poly[jnp.minimum(k + 1, n - 1)], p)
        if strict:
            inside = (c_first > 0) & (c_last < 0) & (c_edge > 0)
            return inside & (h >= 3)
        inside_polygon = (c_first >= 0) & (c_last <= 0) & (c_edge >= 0)
        # Degenerate hulls: a point (h = 1) or a segment (h = 2), boundary included.
        lo = jnp.minimum(v0, last)
        hi = jnp.maximum(v0, last)
        on_segment = (c_last == 0) & jnp.all((p >= lo) & (p <= hi))
        return jnp.where(h >= 3, inside_polygon, on_segment)

    return jax.vmap(one)(points)


def in_hull(points: Float[Array, "m 2"], hull: Hull, *, strict: bool = True) -> Bool[Array, " m"]:
    """Which of ``points`` ``[m, 2]`` lie inside ``hull`` (from :func:`convex_hull`).

    ``strict=True``: the boundary (edges and vertices) is outside, as in paper 003's public
    code, so a generated point on the real points' boundary counts as diverse.
    ``strict=False``: the closed hull, which agrees with SciPy's ``Delaunay.find_simplex(p)
    >= 0``. :math:`O(m \\log h)`; jitted.
    """
    points = _checks.as_array("points", points, ndim=2)
    if points.shape[1] != 2:
        raise ValueError(f"points: expected shape [m, 2], got {points.shape}")
    if not isinstance(hull, Hull):
        raise ValueError(f"hull: expected a Hull from convex_hull(...), got {type(hull).__name__}")
    if hull.polygon.ndim != 2 or hull.polygon.shape[1] != 2:
        raise ValueError(f"hull: expected a polygon of shape [n, 2], got {hull.polygon.shape}")
    if not isinstance(strict, (bool, np.bool_)):
        raise ValueError(f"strict: expected a bool, got {strict!r}")
    return _in_hull(points, hull, bool(strict))
