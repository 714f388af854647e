r"""Memorization metrics: exact nearest neighbours, Carlini's normalized L2, AMS / UMS, fractions.

Everything compares a generated set ``[m, ...]`` with a training set ``[n, ...]``; examples are
flattened to vectors internally (pass features from :mod:`memjax.metrics.features` to compare in
a feature space instead of pixel space).

Nearest neighbours (the workhorse)
----------------------------------
:func:`nearest_neighbours` is exact and memory-bounded:

1. *Candidates.* References are visited in blocks of ``block_size`` rows. For each block the
   matmul form ``||b||^2 - 2 a.b`` (``||a||^2`` is constant per query and dropped) or the
   normalised dot product (cosine) scores every pair; ``lax.top_k`` keeps the best
   ``num_candidates`` (default ``k + 8``) and merges them with the running best set. Memory is
   ``O(query_block_size * block_size)`` whatever ``n`` is.
2. *Exact re-scoring.* The matmul form cancels catastrophically for near copies (an exact copy
   gets a distance of ``~1e-3`` instead of 0). The candidates are therefore re-scored directly,
   ``sum((a - b)^2)`` or ``a.b / (||a|| ||b||)``, and sorted lexicographically by (value, index).

So distances are true Euclidean distances (not squared), copies have distance exactly 0, and ties
break like NumPy's stable ``argsort``: the lowest reference index first. The result equals a
float64 NumPy brute force exactly whenever the float32 values of distinct candidates are ordered
as their float64 values (always for data on a grid such as 8-bit images, and for the digits),
provided the true top-``k`` lies within the ``num_candidates`` best by the matmul form -- the
matmul error is ``~1e-7 (||a||^2 + ||b||^2)``, so raise ``num_candidates`` only for thousands of
near-exact ties.

Queries are split over the devices of a mesh (``jax.shard_map`` over the axis ``"data"``,
references replicated); each device walks its queries in chunks of ``query_block_size`` with
``lax.map`` and the reference blocks with ``lax.scan``. Results are identical on 1 and 8 devices.

Speed (benchmarks/results/metrics.md): the time is the matmul's, plus 0.15-0.3x of it for the
top-k and the exact re-scoring. Against faiss ``IndexFlatL2`` (OpenBLAS sgemm, no re-scoring)
on the 2-core dev box: 0.86x on one thread at load 12, 1.3-1.9x at loads 12-47 on two threads
and at load 40 on one. Eigen's dot instead of YNNPACK's (per computation:
``jax.jit(..., compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""})``) was not
reproducibly faster (benchmarks/results/metrics.md), so memjax sets no XLA option.

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
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from jaxtyping import Array, Bool, Float, Int

from memjax import _checks, parallel

__all__ = [
    "BANDS", "Band", "AmsUms", "NormalizedL2", "SimilaritySummary", "ams_ums",
    "ams_ums_from_best", "best_match",
    "extracted", "nearest_neighbours", "normalized_l2", "similarity_fractions",
    "similarity_summary",
]

METRICS = ("l2", "cosine")
MEASURES = ("cosine", "l2", "normalized_l2")
_HIGHEST = jax.lax.Precision.HIGHEST


# -- input handling --------------------------------------------------------------------------------
def _as_rows(name: str, x: Any) -> jax.Array:
    """``[n, ...]`` -> ``[n, D]`` floating array (at least float32)."""
    arr = _checks.as_array(name, x, min_ndim=2)
    if arr.shape[0] < 1:
        raise ValueError(f"{name}: expected at least one example, got shape {arr.shape}")
    arr = arr.reshape(arr.shape[0], -1)
    return arr.astype(jnp.promote_types(arr.dtype, jnp.float32))


def _check_pair(queries, refs, qname="queries", rname="refs"):
    q = _as_rows(qname, queries)
    r = _as_rows(rname, refs)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"{rname}: expected {q.shape[1]} features per example (as {qname}), got "
                         f"{r.shape[1]} (shapes {tuple(np.shape(queries))} and "
                         f"{tuple(np.shape(refs))})")
    dtype = jnp.promote_types(q.dtype, r.dtype)
    return q.astype(dtype), r.astype(dtype)


# -- exact blocked k-nearest neighbours ------------------------------------------------------------
_GROUP = 16


def _block_top_k(s, c, group):
    """``lax.top_k(s, c)`` along the last axis, exact and equally stable, in two cheap stages.

    Columns are split into groups of ``group``; the ``c`` groups with the largest maxima (ties:
    lower group first) contain the top ``c`` entries: an entry outside them is preceded by the
    maxima of ``c`` groups, each ahead of it in (value desc, index asc) order. So a max-reduce
    (vectorised) and two small ``top_k`` replace one ``top_k`` over the whole row.
    """
    if group == 1:
        return jax.lax.top_k(s, c)
    rows, cols = s.shape
    sg = s.reshape(rows, cols // group, group)
    _, gi = jax.lax.top_k(jnp.max(sg, axis=2), c)              # [rows, c] group indices
    gi = jnp.sort(gi, axis=1)                                   # keep column order in ties
    vals = jnp.take_along_axis(sg, gi[:, :, None], axis=1).reshape(rows, c * group)
    cols_idx = (gi[:, :, None] * group + jnp.arange(group)[None, None, :]).reshape(rows, -1)
    v, pos = jax.lax.top_k(vals, c)
    return v, jnp.take_along_axis(cols_idx, pos, axis=1)


def _local_knn(q, refs, *, n, k, c, metric, block, qblock):
    """Per-device work: queries ``[mq, D]`` (``mq`` a multiple of ``qblock``) against all refs."""
    d = refs.shape[1]
    nb = refs.shape[0] // block
    rnorm2 = jnp.sum(refs * refs, axis=1)
    rnorm = jnp.sqrt(rnorm2)
    if metric == "l2":
        rcand = refs
    else:
        rcand = refs / jnp.where(rnorm > 0, rnorm, 1.0)[:, None]
    rblocks = rcand.reshape(nb, block, d)
    sqblocks = rnorm2.reshape(nb, block)
    starts = jnp.arange(nb, dtype=jnp.int32) * block
    cb = min(c, block)
    group = _GROUP if block % _GROUP == 0 and block // _GROUP >= cb else 1

    def one_chunk(qc):                                        # [qblock, D]
        qn = jnp.sqrt(jnp.sum(qc * qc, axis=1))
        qcand = qc if metric == "l2" else qc / jnp.where(qn > 0, qn, 1.0)[:, None]

        def step(carry, inp):
            vals, idx = carry                                 # larger score = better
            rb, sqb, start = inp
            s = jnp.matmul(qcand, rb.T, precision=_HIGHEST)
            if metric == "l2":
                s = 2.0 * s - sqb[None, :]                    # -(||b||^2 - 2 a.b)
            col = start + jnp.arange(block, dtype=jnp.int32)
            s = jnp.where(col[None, :] < n, s, -jnp.inf)
            bv, bi = _block_top_k(s, cb, group)               # stable: lower index first
            allv = jnp.concatenate([vals, bv], axis=1)        # running set first (lower indices)
            alli = jnp.concatenate([idx, bi + start], axis=1)
            v, pos = jax.lax.top_k(allv, c)
            return (v, jnp.take_along_axis(alli, pos, axis=1)), None

        init = (jnp.full((qc.shape[0], c), -jnp.inf, qc.dtype),
                jnp.zeros((qc.shape[0], c), jnp.int32))
        (_, cand), _ = jax.lax.scan(step, init, (rblocks, sqblocks, starts))

        def rescore(j):                                       # j: [qblock] one candidate slot
            r = refs[j]
            if metric == "l2":
                return jnp.sum(jnp.square(qc - r), axis=1)
            dot = jnp.sum(qc * r, axis=1)
            den = qn * rnorm[j]
            cos = jnp.where(den > 0, dot / jnp.where(den > 0, den, 1.0), 0.0)
            return jnp.clip(cos, -1.0, 1.0)                   # copies may round to 1 + ulp

        exact = jax.lax.map(rescore, cand.T).T               # [qblock, c]
        key = exact if metric == "l2" else -exact
        key = jnp.where(key == 0, jnp.zeros_like(key), key)  # -0.0 and +0.0 sort as equal
        key, order = jax.lax.sort((key, cand), dimension=1, num_keys=2)
        key = key[:, :k]
        vals = jnp.sqrt(key) if metric == "l2" else -key
        return vals, order[:, :k]

    chunks = q.reshape(-1, qblock, d)
    vals, idx = jax.lax.map(one_chunk, chunks)
    return vals.reshape(-1, k), idx.reshape(-1, k)


def _balanced(total: int, most: int) -> int:
    """The smallest block size that covers ``total`` in as few blocks of at most ``most`` as
    possible (so padding wastes less than one block: 10,000 in 2,048s -> 5 blocks of 2,000)."""
    num = -(-total // max(1, min(most, total)))
    return -(-total // num)


@functools.partial(jax.jit, static_argnames=("k", "c", "metric", "block", "qblock", "mesh"))
def _knn(queries, refs, *, k, c, metric, block, qblock, mesh):
    m, n = queries.shape[0], refs.shape[0]
    ndev = mesh.devices.size
    mult = ndev * qblock
    mp = -(-m // mult) * mult
    queries = jnp.pad(queries, ((0, mp - m), (0, 0)))
    npad = -(-n // block) * block
    refs = jnp.pad(refs, ((0, npad - n), (0, 0)))
    fn = functools.partial(_local_knn, n=n, k=k, c=c, metric=metric, block=block, qblock=qblock)
    vals, idx = jax.shard_map(fn, mesh=mesh, in_specs=(P(parallel.DATA_AXIS), P()),
                              out_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)),
                              check_vma=False)(queries, refs)
    return vals[:m], idx[:m]


def nearest_neighbours(queries: Float[Array, "m ..."], refs: Float[Array, "n ..."], k: int = 1,
                       metric: str = "l2", block_size: int | None = None, *,
                       query_block_size: int | None = None, num_candidates: int | None = None,
                       mesh: Mesh | None = None, gather: bool = True
                       ) -> tuple[Float[Array, "m k"], Int[Array, "m k"]]:
    r"""The exact ``k`` nearest references of every query.

    Args:
      queries: ``[m, ...]``; flattened to ``[m, D]``.
      refs: ``[n, ...]`` with the same number of features.
      k: neighbours per query, ``1 <= k <= n``.
      metric: ``"l2"``: Euclidean distance ``||a - b||_2``, ascending; ``"cosine"``:
        ``a.b / (||a|| ||b||)``, descending (a zero vector has similarity 0 to everything).
      block_size: at most this many references per block (default 2048; blocks are balanced
        and rounded up to a multiple of 16); memory is ``O(query_block_size * block_size)``
        per device.
      query_block_size: at most this many queries per device per step (default 4096).
      num_candidates: best matmul-form matches kept for exact re-scoring (default
        ``min(n, k + 8)``); see the module docstring.
      mesh: the device mesh queries are split over (default: all devices, of every process).
        In a multi-process job every process passes the same ``queries`` and ``refs``.
      gather: when ``mesh`` spans several processes, return the whole result on every process
        (``process_allgather``); ``False`` keeps the global arrays on the mesh.

    Returns:
      ``(values [m, k], indices [m, k])``: true distances (not squared) or similarities, best
      first; ties by lowest reference index (NumPy's stable ``argsort``). ``int32`` indices.
    """
    q, r = _check_pair(queries, refs)
    _checks.check_choice("metric", metric, METRICS)
    _checks.check_positive_int("k", k)
    _checks.check_positive_int("block_size", block_size, allow_none=True)
    _checks.check_positive_int("query_block_size", query_block_size, allow_none=True)
    _checks.check_positive_int("num_candidates", num_candidates, allow_none=True)
    m, n = q.shape[0], r.shape[0]
    if k > n:
        raise ValueError(f"k: expected at most the number of references ({n}), got {k}")
    if num_candidates is not None and num_candidates < k:
        raise ValueError(f"num_candidates: expected at least k = {k}, got {num_candidates}")
    mesh = parallel.data_mesh() if mesh is None else mesh
    ndev = mesh.devices.size
    c = min(n, k + 8 if num_candidates is None else num_candidates)
    block = _balanced(n, 2048 if block_size is None else block_size)
    if block >= _GROUP:                  # a multiple of the group size (refs are padded anyway)
        block = -(-block // _GROUP) * _GROUP
    qblock = _balanced(-(-m // ndev), 4096 if query_block_size is None else query_block_size)
    distributed = mesh.is_multi_process
    if distributed:                      # each process copies in its own devices' part
        q, r = parallel.replicate((q, r), mesh)
    vals, idx = _knn(q, r, k=int(k), c=int(c), metric=metric, block=int(block),
                     qblock=int(qblock), mesh=mesh)
    if distributed and gather:
        vals, idx = (jnp.asarray(a) for a in parallel.fetch((vals, idx)))
    return vals, idx


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
