r"""FFT-accelerated t-SNE in JAX (FIt-SNE: Linderman et al. 2019; openTSNE's default method).

The exact t-SNE of :mod:`memjax.metrics.embedding` costs :math:`O(n^2)` per iteration. This
module computes the same gradient (same objective, optimiser and defaults) in
:math:`O(n k + G \log G)`: sparse input affinities for the attractive term, and polynomial
interpolation on an equispaced grid with FFT convolution for the repulsive term. It is what
:func:`memjax.metrics.tsne` runs for ``method="fft"`` (and ``"auto"`` above
:data:`memjax.metrics.embedding.FFT_FROM`); 2-D output only.

**Sparse affinities** (van der Maaten 2014, section 4.1). Each point keeps its
:math:`k = \min(n - 1, \lfloor 3\,\mathrm{perp} \rfloor)` nearest neighbours, found by
memjax's exact search :func:`memjax.metrics.memorization.nearest_neighbours` (the point
itself dropped), and :math:`p_{j|i}` is calibrated on them to the perplexity by the bisection
of the exact method. With :math:`c_{ij} = p_{j|i}` on those edges,
:math:`p_{ij} = (c_{ij} + c_{ji}) / 2n` (sums to 1). The attractive force

.. math::  F^{\mathrm{attr}}_i = \sum_j p_{ij} w_{ij} (y_i - y_j), \qquad
           w_{ij} = (1 + \|y_i - y_j\|^2)^{-1},

is then a sum over the :math:`nk` directed edges :math:`f_e = (c_e / 2n)\, w_e\,
(y_{\mathrm{from}} - y_{\mathrm{to}})`: :math:`F^{\mathrm{attr}} = \mathrm{rowsum}(f) -
\mathrm{segment\_sum}(f, \mathrm{to})` (no symmetrised matrix is ever built).

**Repulsion by interpolation** (Linderman et al. 2019, section 2). The repulsive force and
the normaliser

.. math::  F^{\mathrm{rep}}_i = \sum_{j} w_{ij}^2 (y_i - y_j), \qquad
           Z = \sum_{i \ne j} w_{ij},

are sums :math:`\phi(y_i) = \sum_j K(y_i - y_j)` of three translation-invariant kernels,
:math:`K_1(u) = (1 + \|u\|^2)^{-1}` (:math:`Z = \sum_i \phi_1(y_i) - n`) and
:math:`K_c(u) = u_c (1 + \|u\|^2)^{-2}`, :math:`c = 1, 2` (:math:`F^{\mathrm{rep}}`),
with unit charges. The bounding square of the embedding is cut into :math:`B \times B` boxes
of side :math:`h` with :math:`p = 3` equispaced nodes per box and axis (node :math:`g` at
:math:`\min y + (g + \tfrac12) h/p`), so all :math:`(Bp)^2` nodes lie on one equispaced grid.
Each point spreads its charge on the :math:`p^2` nodes of its box with the Lagrange weights
:math:`L_a(t_x) L_b(t_y)` (:math:`t` its position in the box), the kernel sums over the grid
are one circulant convolution of size :math:`(2Bp)^2` by real FFTs, and each point reads its
:math:`\phi` back with the same weights. Using the odd kernels :math:`K_c` for the force,
rather than FIt-SNE's charges :math:`(1, y, \|y\|^2)` on :math:`K_1^2`, avoids the
cancellation of large terms that float32 could not afford. The error is that of degree-2
interpolation of smooth kernels on boxes of side :math:`\le 1` (openTSNE's default
accuracy): about 1% of the gradient on a spread-out embedding, falling as :math:`h^3` on finer
grids (tests/test_tsne_fft.py measures it against the exact gradient).

**Grid size.** As in openTSNE, :math:`B = \max(50, \lceil \mathrm{span} \rceil)` boxes per
axis (side at most 1), rounded up to one of :data:`BOX_COUNTS` (FFT-friendly sizes, a factor
1.25 apart) so that only a few programs are compiled. The optimisation runs in segments of
:data:`SEGMENT` iterations, each one jitted XLA loop for a fixed :math:`B` chosen from the
span at its start (the box side follows the span at every iteration).

The gradient is :math:`4 (\alpha F^{\mathrm{attr}} - F^{\mathrm{rep}} / Z)` with the
exaggeration :math:`\alpha`, fed to the exact method's optimiser (momentum and gains). Cost per
iteration: :math:`O(nk)` for the attraction, :math:`O(n p^2)` for spreading and reading back,
:math:`O(B^2 p^2 \log B)` for the FFTs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from memjax.metrics import embedding as _exact
from memjax.metrics.memorization import nearest_neighbours

__all__ = ["BOX_COUNTS", "SEGMENT", "sparse_affinities", "gradient", "tsne_fft"]

INTERPOLATION_POINTS = 3
BOX_COUNTS = (50, 64, 80, 100, 128, 160, 200, 256, 320, 400, 512, 640, 800, 1024)
"""Boxes per axis the grid is rounded up to: ``6 B`` (the FFT size) is 2-3-5 smooth."""
SEGMENT = 50
"""Iterations per jitted segment (the grid size is chosen again between segments)."""
_MARGIN = 1.05     # box side set to this times the smallest that fits when recomputed
_REUSE = 1.25      # kernel FFTs reused while the side that fits is within this factor


# ----------------------------------------------------------------------------------------
# sparse input affinities

def _neighbours(x: Float[Array, "n d"], k: int) -> tuple[Array, Array]:
    """The ``k`` nearest other points of every row: squared distances and indices ``[n, k]``.

    A point is dropped from its own list wherever it sits (duplicates of lower index come
    first); if a row does not list it, its ``k + 1``-th neighbour is dropped instead.
    """
    n = x.shape[0]
    dist, idx = nearest_neighbours(x, x, k=k + 1, metric="l2")
    is_self = idx == jnp.arange(n, dtype=idx.dtype)[:, None]
    drop = jnp.where(jnp.any(is_self, axis=1), jnp.argmax(is_self, axis=1), k)
    keep = jnp.arange(k)[None, :]
    keep = keep + (keep >= drop[:, None])                     # skip the dropped column
    dist = jnp.take_along_axis(dist, keep, axis=1)
    return dist * dist, jnp.take_along_axis(idx, keep, axis=1)


def sparse_affinities(x: Float[Array, "n d"], perplexity: float = 30.0
                      ) -> tuple[Int[Array, "n k"], Float[Array, "n k"]]:
    r"""Neighbour lists ``cols [n, k]`` and edge weights :math:`c_{ij} / 2n` ``[n, k]``.

    :math:`c_{ij} = p_{j|i}` over the :math:`k = \min(n - 1, \lfloor 3\,\mathrm{perp}
    \rfloor)` exact nearest neighbours, perplexity-calibrated; the symmetric affinities are
    :math:`p_{ij} = (c_{ij} + c_{ji}) / 2n` (see the module docstring).
    """
    n = x.shape[0]
    k = min(n - 1, int(3 * perplexity))
    d2, cols = _neighbours(x, k)
    p = jax.jit(_exact.calibrated_rows)(d2, jnp.ones(d2.shape, bool), perplexity)
    return cols, p / (2.0 * n)


# ----------------------------------------------------------------------------------------
# gradient

def _lagrange(t: Float[Array, " n"], p: int) -> Float[Array, "n p"]:
    """Lagrange basis on the nodes ``(a + 1/2) / p`` of the unit box, evaluated at ``t``."""
    nodes = (np.arange(p) + 0.5) / p
    cols = []
    for a in range(p):
        others = [b for b in range(p) if b != a]
        denom = float(np.prod([nodes[a] - nodes[b] for b in others]))
        num = functools.reduce(jnp.multiply, [t - nodes[b] for b in others], jnp.ones_like(t))
        cols.append(num / denom)
    return jnp.stack(cols, axis=1)


def _kernel_hat(num_nodes: int, spacing) -> Array:
    """Real FFTs of ``K_1, K_x, K_y`` at the node offsets, laid out for a circular
    convolution of size ``2 * num_nodes`` (offset ``a`` at index ``a mod 2 num_nodes``)."""
    a = jnp.arange(2 * num_nodes)
    off = jnp.where(a < num_nodes, a, a - 2 * num_nodes).astype(spacing.dtype) * spacing
    u, v = off[:, None], off[None, :]
    k1 = 1.0 / (1.0 + u * u + v * v)
    k2 = k1 * k1
    return jnp.fft.rfft2(jnp.stack([k1, u * k2, v * k2]))


def _box_side(y: Float[Array, "n 2"], num_boxes: int) -> Float[Array, ""]:
    """The smallest box side ``h`` whose ``num_boxes`` boxes per axis cover ``y``."""
    span = jnp.max(jnp.max(y, axis=0) - jnp.min(y, axis=0))
    return jnp.maximum(span, jnp.finfo(y.dtype).tiny) / num_boxes


def _spread(y: Float[Array, "n 2"], num_boxes: int, h, p: int):
    """Grid nodes ``[n, p * p]`` (flat indices) of each point's box and their weights
    :math:`L_a(t_x) L_b(t_y)`; the grid starts at the embedding's lower corner."""
    n = y.shape[0]
    m = num_boxes * p
    u = (y - jnp.min(y, axis=0)) / h
    box = jnp.clip(jnp.floor(u), 0, num_boxes - 1)
    t = u - box
    box = box.astype(jnp.int32) * p
    wx, wy = _lagrange(t[:, 0], p), _lagrange(t[:, 1], p)    # [n, p]
    ix = box[:, 0:1] + jnp.arange(p)                           # [n, p] node rows
    iy = box[:, 1:2] + jnp.arange(p)
    flat = (ix[:, :, None] * m + iy[:, None, :]).reshape(n, p * p)
    return flat, (wx[:, :, None] * wy[:, None, :]).reshape(n, p * p)


def _repulsion(y: Float[Array, "n 2"], num_boxes: int, h, kernel_hat,
               p: int = INTERPOLATION_POINTS):
    """``(F_rep [n, 2], Z)`` by interpolation on the grid of box side ``h`` (at least
    :func:`_box_side`) and FFT convolution with ``kernel_hat = _kernel_hat(B p, h / p)``."""
    n = y.shape[0]
    m = num_boxes * p                                          # nodes per axis
    flat, weight = _spread(y, num_boxes, h, p)
    charge = jnp.zeros((m * m,), y.dtype).at[flat.reshape(-1)].add(weight.reshape(-1))
    size = (2 * m, 2 * m)
    charge_hat = jnp.fft.rfft2(charge.reshape(m, m), s=size)
    phi = jnp.fft.irfft2(kernel_hat * charge_hat[None], s=size)[:, :m, :m]   # [3, m, m]
    # one gather per kernel: [n, p * p] reads of a flat grid are far cheaper than [3, n, p * p]
    at = [jnp.sum(phi[c].reshape(-1)[flat] * weight, axis=1) for c in range(3)]
    z = jnp.sum(at[0]) - n                                     # K_1(0) = 1 for j = i
    return jnp.stack(at[1:], axis=1), z


def _attraction(y: Float[Array, "n 2"], cols: Int[Array, "n k"],
                vals: Float[Array, "n k"]) -> Float[Array, "n 2"]:
    r""":math:`\sum_j p_{ij} w_{ij} (y_i - y_j)` from the directed edges (module docstring).

    Coordinates are gathered and scattered one at a time: XLA on CPU is several times faster
    on ``[n, k]`` gathers of a vector than on ``[n, k, 2]`` gathers of rows."""
    n = y.shape[0]
    dx = y[:, 0:1] - y[:, 0][cols]
    dy = y[:, 1:2] - y[:, 1][cols]
    w = vals / (1.0 + dx * dx + dy * dy)
    out = []
    for f in (w * dx, w * dy):
        back = jnp.zeros((n,), y.dtype).at[cols.reshape(-1)].add(f.reshape(-1))
        out.append(jnp.sum(f, axis=1) - back)
    return jnp.stack(out, axis=1)


def _cached_gradient(y, cache, cols, vals, exaggeration, *, num_boxes: int):
    """:func:`gradient` with the kernel FFTs kept in ``cache = (h, kernel_hat)`` while the
    embedding fits the grid and uses at least 1 / :data:`_REUSE` of it (the box side is
    then set to :data:`_MARGIN` times the smallest that fits)."""
    h, kernel_hat = cache
    need = _box_side(y, num_boxes)
    stale = (need > h) | (need * _REUSE < h)
    h = jnp.where(stale, need * _MARGIN, h)
    m = num_boxes * INTERPOLATION_POINTS
    kernel_hat = jax.lax.cond(stale, lambda: _kernel_hat(m, h / INTERPOLATION_POINTS),
                              lambda: kernel_hat)
    rep, z = _repulsion(y, num_boxes, h, kernel_hat)
    grad = 4.0 * (exaggeration * _attraction(y, cols, vals) - rep / z)
    return grad, (h, kernel_hat)


def _empty_cache(y, num_boxes: int):
    m = num_boxes * INTERPOLATION_POINTS
    return (jnp.zeros((), y.dtype), _kernel_hat(m, jnp.zeros((), y.dtype)) * 0)


def gradient(y: Float[Array, "n 2"], cols: Int[Array, "n k"], vals: Float[Array, "n k"],
             exaggeration=1.0, *, num_boxes: int | None = None) -> Float[Array, "n 2"]:
    r"""Approximate :math:`\partial\,\mathrm{KL}/\partial y = 4 (\alpha F^{\mathrm{attr}} -
    F^{\mathrm{rep}} / Z)` for the affinities of :func:`sparse_affinities` (``num_boxes``
    defaults to the rule of the module docstring; the grid fits ``y`` exactly)."""
    if num_boxes is None:
        num_boxes = _num_boxes(y)
    return _gradient(y, cols, vals, exaggeration, num_boxes=num_boxes)


@functools.partial(jax.jit, static_argnames=("num_boxes",))
def _gradient(y, cols, vals, exaggeration, *, num_boxes: int):
    """:func:`gradient` as one XLA program for a fixed grid size."""
    h = _box_side(y, num_boxes)
    rep, z = _repulsion(y, num_boxes, h, _kernel_hat(num_boxes * INTERPOLATION_POINTS,
                                                     h / INTERPOLATION_POINTS))
    return 4.0 * (exaggeration * _attraction(y, cols, vals) - rep / z)


# ----------------------------------------------------------------------------------------
# optimisation

def _num_boxes(y) -> int:
    """``max(50, ceil(span))`` boxes per axis, rounded up to :data:`BOX_COUNTS`."""
    y = np.asarray(y)
    span = float(np.max(np.ptp(y, axis=0)))
    need = max(BOX_COUNTS[0], int(np.ceil(span * _MARGIN)))
    for b in BOX_COUNTS:
        if b >= need:
            return b
    return -(-need // BOX_COUNTS[-1]) * BOX_COUNTS[-1]


@functools.partial(jax.jit, static_argnames=("num_boxes",))
def _segment(state, cols, vals, num_iters, exaggeration, momentum, learning_rate, *,
             num_boxes: int):
    grad_fn = functools.partial(_cached_gradient, cols=cols, vals=vals,
                                exaggeration=exaggeration, num_boxes=num_boxes)
    state = (*state, _empty_cache(state[0], num_boxes))
    return _exact.gd_steps(grad_fn, state, num_iters, momentum, learning_rate)[:3]


def _phase(y, cols, vals, num_iters: int, exaggeration, momentum, learning_rate):
    """One optimisation phase (fresh update and gains), in segments of :data:`SEGMENT`."""
    state = (y, jnp.zeros_like(y), jnp.ones_like(y))
    done = 0
    while done < num_iters:
        steps = min(SEGMENT, num_iters - done)
        state = _segment(state, cols, vals, steps, exaggeration, momentum, learning_rate,
                         num_boxes=_num_boxes(state[0]))
        done += steps
    return state[0]


def tsne_fft(x: Float[Array, "n d"], y0: Float[Array, "n 2"], *, perplexity: float,
             early_exaggeration: float, learning_rate: float, num_iters: int,
             exaggeration_iters: int) -> Float[Array, "n 2"]:
    """FFT-accelerated t-SNE from the start ``y0`` (arguments already checked by
    :func:`memjax.metrics.tsne`): ``exaggeration_iters`` iterations with momentum 0.5 and
    :math:`P` times ``early_exaggeration``, then the rest with momentum 0.8."""
    cols, vals = sparse_affinities(x, perplexity)
    dtype = y0.dtype
    lr = jnp.asarray(learning_rate, dtype)
    y = _phase(y0, cols, vals, exaggeration_iters, jnp.asarray(early_exaggeration, dtype),
               jnp.asarray(0.5, dtype), lr)
    return _phase(y, cols, vals, num_iters - exaggeration_iters, jnp.asarray(1.0, dtype),
                  jnp.asarray(0.8, dtype), lr)
