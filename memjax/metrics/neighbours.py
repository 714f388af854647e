r"""Exact k-nearest neighbours, blocked and sharded: the search every memorization metric uses.

:func:`nearest_neighbours` is exact and memory-bounded. Its jitted XLA kernel
(``method="xla"``; the host search is described below) works in two steps:

1. *Candidates.* References are visited in blocks of ``block_size`` rows. For each block the
   matmul form ``||b||^2 - 2 a.b`` (``||a||^2`` is constant per query and dropped; for l2 both
   sides are first centred on the references' mean, which leaves distances unchanged) or the
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
matmul error is ``~1e-7 (||a - c||^2 + ||b - c||^2)`` around the centre ``c``, so raise
``num_candidates`` only for thousands of near-exact ties. (A 20,000-point, k = 91 search on
64-d Gaussian data misordered 28 rows' pairs whose distances agree to 7 digits; the host search
orders them as float64 does.)

Queries are split over the devices of a mesh (``jax.shard_map`` over the axis ``"data"``,
references replicated); each device walks its queries in chunks of ``query_block_size`` with
``lax.map`` and the reference blocks with ``lax.scan``. Results are identical on 1 and 8 devices.

Two implementations, one answer. With concrete inputs on CPU in one process (``method=None``
picks it; ``method="host"`` insists), the search runs on the host
(:mod:`memjax.metrics.neighbours_host`): NumPy's BLAS computes the products and a rounding-error
bound *certifies* the candidates, so the result equals a float64 brute force for any data (no
``num_candidates`` assumption), distances re-scored in float64. Under ``jax.jit`` / ``vmap``, on
GPU / TPU, or on a mesh of several processes, the jitted XLA kernel above runs
(``method="xla"``). Both break ties by the lowest reference index, so they return the same
neighbours except where the kernel's float32 re-scoring cannot tell two distances apart (above);
their distances agree to float32 rounding.

Speed (benchmarks/results/metrics.md, 2-core AMD EPYC dev box, AVX2, 2 threads, idle): faiss's
whole ``IndexFlatL2`` search for 4,000 x 4,000 x 3,072 costs its OpenBLAS sgemm, at ~80 % of the
CPU's FMA peak. The host search runs the same sgemm in [4,096, 1,024] blocks (0.87-0.96x faiss for
the products alone) and adds the selection, the certificate and the float64 re-scoring (~8 %):
per-round medians 1.03-1.10x faiss at 4,000^2 and 10,000^2 (single rounds 0.93-1.27x), 1.16-1.17x at
50,000^2 x 512, where the per-block passes weigh more against a cheaper sgemm. The XLA kernel's
dot matches faiss only in its best shapes, and its selection, re-scoring and centring come on
top: 1.4-1.6x on CPU. bfloat16 / float16 products are slower on this CPU (no AVX-512) and not
exact.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from jaxtyping import Array, Float, Int

from memjax import _checks, parallel
from memjax.metrics.neighbours_host import _balanced, host_knn

__all__ = ["METHODS", "METRICS", "nearest_neighbours"]

METRICS = ("l2", "cosine")
METHODS = ("host", "xla")
_HIGHEST = jax.lax.Precision.HIGHEST


# -- input handling --------------------------------------------------------------------------------
def _as_rows(name: str, x: Any) -> jax.Array:
    """``[n, ...]`` -> ``[n, D]`` floating array (at least float32)."""
    arr = _checks.as_array(name, x, min_ndim=2)
    if arr.shape[0] < 1:
        raise ValueError(f"{name}: expected at least one example, got shape {arr.shape}")
    arr = arr.reshape(arr.shape[0], -1)
    return arr.astype(jnp.promote_types(arr.dtype, jnp.float32))


def _check_pair(queries, refs, qname="queries", rname="refs", *, host: bool = False):
    """Both sets as ``[n, D]`` rows of one floating dtype: JAX arrays, or NumPy ones (``host``)."""
    rows = _host_rows if host else _as_rows
    q, r = rows(qname, queries), rows(rname, refs)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"{rname}: expected {q.shape[1]} features per example (as {qname}), got "
                         f"{r.shape[1]} (shapes {tuple(np.shape(queries))} and "
                         f"{tuple(np.shape(refs))})")
    if host:
        dtype = np.promote_types(q.dtype, r.dtype)
        return q.astype(dtype, copy=False), r.astype(dtype, copy=False)
    dtype = jnp.promote_types(q.dtype, r.dtype)
    return q.astype(dtype), r.astype(dtype)


def _host_rows(name: str, x: Any) -> np.ndarray:
    """``[n, ...]`` -> C-contiguous ``[n, D]`` NumPy array, without copies where possible: a CPU
    ``jax.Array`` is viewed in place, NumPy input is used as is (a trip through JAX costs ~0.05 s
    per 50 MB, measured, ~8 % of a search). Finiteness is checked by :func:`host_knn` on the
    row norms it computes anyway."""
    if isinstance(x, jax.Array):
        x = np.asarray(x)                    # concrete CPU arrays only reach here: a view
    kind = getattr(getattr(x, "dtype", None), "kind", "")
    if not isinstance(x, np.ndarray) or kind not in "fiub" or x.ndim < 2 or x.shape[0] < 1:
        return np.ascontiguousarray(np.asarray(_as_rows(name, x)))  # jnp's checks and messages
    dtype = jax.dtypes.canonicalize_dtype(np.promote_types(x.dtype, np.float32))
    return np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=dtype)


def _host_blocker(queries: Any, refs: Any, mesh: Mesh) -> str | None:
    """Why the host search cannot run on these inputs (``None`` when it can)."""
    for name, x in (("queries", queries), ("refs", refs)):
        if isinstance(x, jax.core.Tracer):
            return f"{name} is traced (inside jax.jit, vmap or grad)"
        if isinstance(x, jax.Array):
            platforms = sorted({d.platform for d in x.devices()})
            if platforms != ["cpu"]:
                return f"{name} lives on {'/'.join(platforms)}"
    if mesh.is_multi_process:
        return "the mesh spans several processes"
    platforms = sorted({d.platform for d in mesh.devices.flat})
    if platforms != ["cpu"]:
        return f"the mesh's devices are {'/'.join(platforms)}"
    return None


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
    rnorm = jnp.sqrt(jnp.sum(refs * refs, axis=1))
    # l2 is translation invariant: centring on the references' mean (padding rows are zero)
    # makes the matmul form's cancellation error scale with the spread, not the offset
    centre = jnp.sum(refs, axis=0) / n if metric == "l2" else None
    if metric == "l2":
        rcand = refs - centre
    else:
        rcand = refs / jnp.where(rnorm > 0, rnorm, 1.0)[:, None]
    rblocks = rcand.reshape(nb, block, d)
    sqblocks = jnp.sum(rcand * rcand, axis=1).reshape(nb, block)
    starts = jnp.arange(nb, dtype=jnp.int32) * block
    cb = min(c, block)
    group = _GROUP if block % _GROUP == 0 and block // _GROUP >= cb else 1

    def one_chunk(qc):                                        # [qblock, D]
        qn = jnp.sqrt(jnp.sum(qc * qc, axis=1))
        qcand = qc - centre if metric == "l2" else qc / jnp.where(qn > 0, qn, 1.0)[:, None]

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
                       mesh: Mesh | None = None, gather: bool = True, method: str | None = None
                       ) -> tuple[Float[Array, "m k"], Int[Array, "m k"]]:
    r"""The exact ``k`` nearest references of every query.

    Args:
      queries: ``[m, ...]``; flattened to ``[m, D]``.
      refs: ``[n, ...]`` with the same number of features.
      k: neighbours per query, ``1 <= k <= n``.
      metric: ``"l2"``: Euclidean distance ``||a - b||_2``, ascending; ``"cosine"``:
        ``a.b / (||a|| ||b||)``, descending (a zero vector has similarity 0 to everything).
      block_size: at most this many references per block (default 2048 for XLA, 1024 on the
        host; XLA's blocks are balanced and rounded up to a multiple of 16); memory is
        ``O(query_block_size * block_size)`` per device.
      query_block_size: at most this many queries per device per step (default 4096).
      num_candidates: XLA only: best matmul-form matches kept for exact re-scoring (default
        ``min(n, k + 8)``); see the module docstring. The host search certifies its own.
      mesh: the device mesh queries are split over (default: all devices, of every process).
        In a multi-process job every process passes the same ``queries`` and ``refs``.
      gather: when ``mesh`` spans several processes, return the whole result on every process
        (``process_allgather``); ``False`` keeps the global arrays on the mesh.
      method: ``"host"`` (NumPy + BLAS, certified exact; concrete CPU inputs in one process),
        ``"xla"`` (the jitted kernel; traceable, any device), or ``None``: the host whenever it
        can run (module docstring).

    Returns:
      ``(values [m, k], indices [m, k])``: true distances (not squared) or similarities, best
      first; ties by lowest reference index (NumPy's stable ``argsort``). ``int32`` indices.
    """
    _check_options(metric, k, block_size, query_block_size, num_candidates, method)
    mesh = parallel.data_mesh() if mesh is None else mesh
    blocker = None if method == "xla" else _host_blocker(queries, refs, mesh)
    if method == "host" and blocker is not None:
        raise ValueError(f"method: 'host' needs concrete CPU inputs in one process, but "
                         f"{blocker}; use method='xla' or None")
    if method == "xla" or blocker is not None:
        return _xla_search(queries, refs, k, metric, block_size, query_block_size,
                           num_candidates, mesh, gather)
    q, r = _check_pair(queries, refs, host=True)
    _check_k(k, r.shape[0], num_candidates)
    vals, idx = host_knn(q, r, int(k), metric, 1024 if block_size is None else int(block_size),
                         4096 if query_block_size is None else int(query_block_size))
    return jnp.asarray(vals), jnp.asarray(idx)


def _check_options(metric, k, block_size, query_block_size, num_candidates, method) -> None:
    _checks.check_choice("metric", metric, METRICS)
    _checks.check_positive_int("k", k)
    _checks.check_positive_int("block_size", block_size, allow_none=True)
    _checks.check_positive_int("query_block_size", query_block_size, allow_none=True)
    _checks.check_positive_int("num_candidates", num_candidates, allow_none=True)
    _checks.check_choice("method", method, (None,) + METHODS)


def _check_k(k: int, n: int, num_candidates: int | None) -> None:
    if k > n:
        raise ValueError(f"k: expected at most the number of references ({n}), got {k}")
    if num_candidates is not None and num_candidates < k:
        raise ValueError(f"num_candidates: expected at least k = {k}, got {num_candidates}")


def _xla_search(queries, refs, k, metric, block_size, query_block_size, num_candidates, mesh,
                gather):
    """The jitted kernel :func:`_knn`: blocks, padding and the multi-process hand-over."""
    q, r = _check_pair(queries, refs)
    m, n = q.shape[0], r.shape[0]
    _check_k(k, n, num_candidates)
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
