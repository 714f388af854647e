r"""Memorization metrics: exact nearest neighbours, Carlini's normalized L2, AMS / UMS, fractions.

Everything compares a generated set ``[m, ...]`` with a training set ``[n, ...]``; examples are
flattened to vectors internally (pass features from :mod:`memjax.metrics.features` to compare in
a feature space instead of pixel space).

Nearest neighbours
------------------
:func:`nearest_neighbours` (re-exported from :mod:`memjax.metrics.neighbours`, where the
search and its exactness are documented) is exact and memory-bounded: candidates by the matmul
form in reference blocks, then exact re-scoring, so copies have distance exactly 0 and ties
break by the lowest training index.

Bands and orientation (AMS / UMS, paper 001 eqs. 14-15)
-------------------------------------------------------
A :class:`Band` ``(lo, hi, closed)`` holds bounds in the units of the measure, always ``lo < hi``:
``closed="left"`` means ``lo <= v < hi``, ``closed="both"`` means ``lo <= v <= hi`` (the paper's
printed ``alpha <= gamma <= beta``; a plain ``(lo, hi)`` tuple means this). The *best match* of a
generated image is the training image with the **highest** similarity for ``measure="cosine"``
and the **lowest** distance for ``"l2"`` and ``"normalized_l2"`` (smaller is more similar). The
band is then applied to that best value. :data:`BANDS` holds the paper's presets:

=============== ======================== ======================== =========================
measure          low                      mid                      high
=============== ======================== ======================== =========================
sscd (cosine)    ``[0.4, 0.5)``           ``[0.5, 0.6)``           ``[0.6, 1.0]``
normalized_l2    ``[1.5, 10]``            ``[1.4, 1.5)``           ``[1.35, 1.4)``
=============== ======================== ======================== =========================

The normalized-L2 bands are printed in paper 001 section 5.2 (low ``alpha=1.5, beta=10``, mid
``1.4, 1.5``, high ``1.35, 1.4``); "high similarity" is the *smallest* distance band. Note that
with Carlini's ``alpha = 0.5`` the ratio lies in ``[0, 2]`` and the printed high band leaves out
ratios below 1.35 -- the clearest copies (an exact copy has ratio 0). Use ``Band(0.0, 1.4)`` to
count everything at least as similar as the high band.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, Bool, Float, Int

from memjax import _checks
from memjax.metrics.neighbours import _check_pair, nearest_neighbours

__all__ = [
    "BANDS", "Band", "AmsUms", "NormalizedL2", "SimilaritySummary", "ams_ums",
    "ams_ums_from_best", "best_match",
    "extracted", "nearest_neighbours", "normalized_l2", "similarity_fractions",
    "similarity_summary",
]

MEASURES = ("cosine", "l2", "normalized_l2")
_HIGHEST = jax.lax.Precision.HIGHEST


# -- Carlini et al.'s normalized L2 (paper 000 eq. 7) ----------------------------------------------
class NormalizedL2(NamedTuple):
    """``ratio [m]``: eq. 7 for the nearest training image; ``index [m]``: that image."""
    ratio: Float[Array, " m"]
    index: Int[Array, " m"]


def normalized_l2(generated: Float[Array, "m ..."], train: Float[Array, "n ..."], n: int = 50,
                  alpha: float = 0.5, *, block_size: int | None = None,
                  mesh: Mesh | None = None) -> NormalizedL2:
    r"""Carlini et al.'s extraction criterion (paper 000 eq. 7), for the nearest training image:

    .. math:: \ell(\hat x, x; S_{\hat x}) = \frac{\|\hat x - x\|_2}
              {\alpha\, \mathbb{E}_{y \in S_{\hat x}} \|\hat x - y\|_2}

    with ``x`` the nearest training image and ``S`` the ``n`` nearest (``x`` itself included, as
    in the public implementation). Since the mean is at least the nearest distance, the ratio
    lies in ``[0, 1/alpha]``; an exact copy has ratio 0 (also when all ``n`` neighbours are
    copies, where eq. 7 reads 0/0). Small means "much closer to one training image than to the
    others": extracted.
    """
    _checks.check_positive_int("n", n)
    _checks.check_positive("alpha", alpha)
    dist, idx = nearest_neighbours(generated, train, k=n, metric="l2", block_size=block_size,
                                   mesh=mesh)
    return NormalizedL2(ratio=_normalized_ratio(dist, alpha), index=idx[:, 0])


def _normalized_ratio(dist, alpha):
    d1 = dist[:, 0]
    den = alpha * jnp.mean(dist, axis=1)
    return jnp.where(d1 > 0, d1 / jnp.where(den > 0, den, 1.0), 0.0)


def extracted(ratio: Float[Array, " m"], delta: float) -> Bool[Array, " m"]:
    """``ratio < delta``: the generated images counted as extracted training images."""
    _checks.check_positive("delta", delta)
    return jnp.asarray(ratio) < delta


# -- AMS / UMS (paper 001 eqs. 14-15) --------------------------------------------------------------
class Band(NamedTuple):
    """Bounds in the measure's units, ``lo < hi``. ``closed``: ``"left"`` (``lo <= v < hi``) or
    ``"both"`` (``lo <= v <= hi``)."""
    lo: float
    hi: float
    closed: str = "both"

    def contains(self, v: Array) -> Array:
        upper = v < self.hi if self.closed == "left" else v <= self.hi
        return (v >= self.lo) & upper


BANDS: dict[str, dict[str, Band]] = {
    # SSCD / cosine similarity: larger is more similar (REFERENCE.md; paper 001 section 5.2).
    "sscd": {"low": Band(0.4, 0.5, "left"), "mid": Band(0.5, 0.6, "left"),
             "high": Band(0.6, 1.0, "both")},
    # Carlini's normalized L2 (a distance): smaller is more similar, so "high" is the lowest band.
    "normalized_l2": {"low": Band(1.5, 10.0, "both"), "mid": Band(1.4, 1.5, "left"),
                      "high": Band(1.35, 1.4, "left")},
}
"""Paper 001's similarity bands; see the module docstring for orientation and a caveat."""


def _as_band(band) -> Band:
    if isinstance(band, Band):
        b = band
    else:
        try:
            lo, hi = band
        except (TypeError, ValueError) as e:
            raise ValueError(f"band: expected a Band or a pair (lo, hi), got {band!r}") from e
        b = Band(float(lo), float(hi), "both")
    _checks.check_choice("band.closed", b.closed, ("left", "both"))
    if not (np.isfinite(b.lo) and np.isfinite(b.hi) and b.lo < b.hi):
        raise ValueError(f"band: expected finite bounds with lo < hi, got {band!r}")
    return b


class AmsUms(NamedTuple):
    """``ams``, ``ums`` (fractions of ``N_G``) and ``matched [n]`` (training images counted)."""
    ams: Float[Array, ""]
    ums: Float[Array, ""]
    matched: Bool[Array, " n"]


def best_match(generated: Float[Array, "m ..."], train: Float[Array, "n ..."], *,
               measure: str = "cosine", n: int = 50, alpha: float = 0.5,
               block_size: int | None = None, mesh: Mesh | None = None
               ) -> tuple[Float[Array, " m"], Int[Array, " m"]]:
    """Best value of ``measure`` and the best training index for every generated image: the
    highest cosine similarity, the lowest L2 distance, or the normalized L2 of the nearest
    image (``n``, ``alpha`` as in :func:`normalized_l2`)."""
    _checks.check_choice("measure", measure, MEASURES)
    if measure == "normalized_l2":
        res = normalized_l2(generated, train, n=n, alpha=alpha, block_size=block_size, mesh=mesh)
        return res.ratio, res.index
    v, i = nearest_neighbours(generated, train, k=1, metric=measure, block_size=block_size,
                              mesh=mesh)
    return v[:, 0], i[:, 0]


def ams_ums(generated: Float[Array, "m ..."], train: Float[Array, "n ..."], *, band,
            measure: str = "cosine", match: str = "best", n: int = 50, alpha: float = 0.5,
            block_size: int | None = None, mesh: Mesh | None = None) -> AmsUms:
    r"""Average and Unique Memorization Scores (paper 001 eqs. 14-15).

    .. math:: \mathrm{AMS} = \frac{1}{N_G} \sum_i \mathbb 1[\gamma^*_i \in \mathrm{band}], \qquad
              \mathrm{UMS} = \frac{|\bigcup_i \phi_i|}{N_G}

    where ``gamma*_i`` is the best value of ``measure`` for generated image ``i`` (highest
    similarity / lowest distance; see the module docstring for band orientation).

    Args:
      band: a :class:`Band` (e.g. ``BANDS["sscd"]["mid"]``) or ``(lo, hi)`` meaning ``[lo, hi]``.
      measure: ``"cosine"`` (pass SSCD / DINOv2 features for the paper's SSCD score), ``"l2"``
        or ``"normalized_l2"`` (Carlini, with ``n`` and ``alpha``).
      match: what ``phi_i`` holds. ``"best"`` (default): the best-matching training image of
        ``i`` when its value is in the band, so each generated image reproduces at most one
        training image and ``UMS <= AMS`` (as in every table of the paper). ``"all"``: eq. 15
        read literally, every training image whose value with ``i`` lies in the band (for
        normalized L2, ``||x_i - x_j|| / (alpha * mean distance to i's n nearest)``); computed
        block by block in the matmul form, so values within ``~1e-6`` relative of a band edge
        may fall on either side.

    Returns:
      :class:`AmsUms` ``(ams, ums, matched)``; ``matched[j]`` marks the training images in the
      union of eq. 15.
    """
    _checks.check_choice("measure", measure, MEASURES)
    _checks.check_choice("match", match, ("best", "all"))
    b = _as_band(band)
    g, t = _check_pair(generated, train, "generated", "train")
    best, idx = best_match(g, t, measure=measure, n=n, alpha=alpha, block_size=block_size,
                           mesh=mesh)
    if match == "best":
        return ams_ums_from_best(best, idx, t.shape[0], band=b)
    inside = b.contains(best)
    scale = None
    if measure == "normalized_l2":
        dist, _ = nearest_neighbours(g, t, k=n, metric="l2", block_size=block_size, mesh=mesh)
        scale = alpha * jnp.mean(dist, axis=1)
    matched = _band_union(g, t, scale, b, measure,
                          min(t.shape[0], 2048 if block_size is None else block_size))
    return AmsUms(ams=jnp.mean(inside.astype(jnp.float32)),
                  ums=jnp.sum(matched).astype(jnp.float32) / g.shape[0], matched=matched)


def ams_ums_from_best(best: Float[Array, " m"], index: Int[Array, " m"], num_train: int, *,
                      band) -> AmsUms:
    """AMS / UMS (``match="best"``) from precomputed best values and indices (e.g. from
    :func:`best_match`), so that several bands cost one nearest-neighbour search."""
    b = _as_band(band)
    _checks.check_positive_int("num_train", num_train)
    best = _checks.as_array("best", best, ndim=1)
    index = jnp.asarray(index)
    if index.shape != best.shape or not jnp.issubdtype(index.dtype, jnp.integer):
        raise ValueError(f"index: expected integer indices of shape {best.shape}, got "
                         f"{index.dtype}{tuple(index.shape)}")
    inside = b.contains(best)
    matched = jnp.zeros(num_train, bool).at[index].max(inside)
    return AmsUms(ams=jnp.mean(inside.astype(jnp.float32)),
                  ums=jnp.sum(matched).astype(jnp.float32) / best.shape[0], matched=matched)


@functools.partial(jax.jit, static_argnames=("band", "measure", "block"))
def _band_union(g, t, scale, band, measure, block):
    """``matched[j] = any_i value(g_i, t_j) in band``, scanning blocks of training images."""
    n = t.shape[0]
    npad = -(-n // block) * block
    tp = jnp.pad(t, ((0, npad - n), (0, 0))).reshape(npad // block, block, -1)
    gn2 = jnp.sum(g * g, axis=1)
    gn = jnp.sqrt(gn2)

    def one(tb):
        dot = jnp.matmul(g, tb.T, precision=_HIGHEST)
        tn2 = jnp.sum(tb * tb, axis=1)
        if measure == "cosine":
            den = gn[:, None] * jnp.sqrt(tn2)[None, :]
            v = jnp.where(den > 0, dot / jnp.where(den > 0, den, 1.0), 0.0)
        else:
            v = jnp.sqrt(jnp.maximum(gn2[:, None] + tn2[None, :] - 2.0 * dot, 0.0))
            if measure == "normalized_l2":
                v = jnp.where(v > 0, v / jnp.where(scale > 0, scale, 1.0)[:, None], 0.0)
        return jnp.any(band.contains(v), axis=0)

    return jax.lax.map(one, tp).reshape(-1)[:n]


# -- similarity fractions and summaries (paper 002 Tables 1, 4, 5; paper 001 Table 4) -------------
def similarity_fractions(best_similarity: Float[Array, " m"],
                         thresholds: Sequence[float]) -> Float[Array, " t"]:
    """Fraction of generated images whose best similarity is strictly above each threshold
    (paper 002 Table 1's ``S > 0.9`` rows, which print these fractions as percentages)."""
    s = _checks.as_array("best_similarity", best_similarity, ndim=1)
    th = _checks.as_array("thresholds", thresholds, ndim=1)
    return jnp.mean((s[None, :] > th[:, None]).astype(jnp.float32), axis=1)


class SimilaritySummary(NamedTuple):
    """Summary of best-match similarities: ``mean`` and ``median`` (paper 002 Table 5 "Sim"),
    ``p95`` (the 95th percentile, Table 5 "95%"), and ``top[j]``: the ``1 - top_fractions[j]``
    quantile ("Top 0.1%" ... "Top 10%" in paper 001 Table 4)."""
    mean: Float[Array, ""]
    median: Float[Array, ""]
    p95: Float[Array, ""]
    top: Float[Array, " q"]


TOP_FRACTIONS = (0.001, 0.005, 0.01, 0.05, 0.1)


def similarity_summary(best_similarity: Float[Array, " m"],
                       top_fractions: Sequence[float] = TOP_FRACTIONS) -> SimilaritySummary:
    """Mean, median, 95th percentile and upper quantiles (linear interpolation, as NumPy)."""
    s = _checks.as_array("best_similarity", best_similarity, ndim=1)
    tf = np.asarray(top_fractions, dtype=np.float64)
    if tf.ndim != 1 or np.any(tf <= 0) or np.any(tf >= 1):
        raise ValueError(f"top_fractions: expected fractions in (0, 1), got {top_fractions!r}")
    qs = jnp.asarray(np.concatenate([[0.5, 0.95], 1.0 - tf]), s.dtype)
    q = jnp.quantile(s, qs)
    return SimilaritySummary(mean=jnp.mean(s), median=q[0], p95=q[1], top=q[2:])
