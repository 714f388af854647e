r"""Exact k-nearest neighbours on the host: the CPU's BLAS for the products, certified candidates.

On CPU, with concrete inputs, :func:`memjax.metrics.nearest_neighbours` runs this NumPy
implementation instead of its jitted XLA kernel (``method="xla"`` forces that one). It is
*rigorously* exact: the result equals a float64 brute force for any data, ties broken by the
lowest reference index.

**Scores.** For a query ``a`` and reference ``b`` the ranking score is

.. math::  s(a, b) = a\cdot b - \|b\|^2 / 2 = (\|a\|^2 - \|a - b\|^2) / 2  \quad (\text{"l2"}),
           \qquad s(a, b) = a\cdot b / \|b\| = \|a\| \cos(a, b)  \quad (\text{"cosine"}),

larger is better (``||a||`` is constant per query). The products come from one BLAS ``gemm`` per
[query chunk, reference block], then one pass subtracts ``||b||^2 / 2`` or scales by ``1/||b||``.

**Error bound.** Any evaluation order of a length-``D`` dot product satisfies
``|fl(x.y) - x.y| <= gamma_D ||x|| ||y||``, ``gamma_D = D u / (1 - D u)`` (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., eq. 3.5, with Cauchy-Schwarz), ``u`` the unit
roundoff. The norms are float sums too (within ``gamma_D``), and the last subtraction or
product rounds once more, so every computed score is within

.. math::  E_a = (\gamma_D + u(1 + \gamma_D))\,(\|a\| B + (1 + \gamma_D) B^2 / 2)
                 + \gamma_D B^2 / 2 \quad (\text{"l2"}),
           \qquad E_a = (3\gamma_D / 2 + 3u)\,\|a\| \quad (\text{"cosine"})

of its true value, ``B = max_b ||b||``; memjax uses ``1.01 E_a`` plus ``4 D`` times the smallest
subnormal (underflow), with the norms rounded up.

**Certificate.** Let ``t`` be the ``k``-th largest computed score of a query. ``k`` references
have true scores ``>= t - E``, so the true ``k``-th best is ``>= t - E``, and every true top-``k``
reference has a computed score ``>= t - 2E``. Each block keeps its ``k + 1`` best computed
scores; a block whose ``(k + 1)``-th kept score still clears ``t - 2E`` may hide more
candidates, and its scores are computed again for that query (rare: a near-tie inside one
block). The ``(k + 1)``-th is searched for only where the block's ``k``-th best clears the
running ``k``-th best (over the blocks so far, never above ``t``) minus ``2E``; elsewhere nothing
below it can be a candidate. Every candidate is then re-scored in float64 (float32 inputs are
exact there, and so is ``a - b``), ``||a - b||^2`` or ``cos |cos| = a.b |a.b| / (||a||^2 ||b||^2)``
(one rounding, so equal cosines of small-integer data tie exactly), and sorted by (value, index).

**Speed** (benchmarks/results/metrics.md): the products run at the BLAS's speed (OpenBLAS
through NumPy, 2 threads: ~80 % of the 2-core dev box's FMA peak, the rate faiss-cpu's search
runs at; 0.87-0.96x faiss's whole search for the products alone). On top (4,000^2 x 3,072, k = 1,
~8 % in all): the norms, which double as the finiteness check (5-8 ms), the offset pass and two
arg-max passes per block (~4 ms per [4,000, 1,000] block), and the float64 re-scoring, a gather
of one query and one reference row per candidate (25-33 ms for ~4,500 pairs; OpenBLAS's worker
spins for ~0.1 s after each call and takes one of the two cores meanwhile).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from memjax import _checks

__all__ = ["host_knn"]

_ARGMAX_MAX_KEEP = 4          # keep <= this many per block by repeated argmax, else argpartition
_THREADS = max(1, min(8, os.cpu_count() or 1))
_pool: tuple[int, ThreadPoolExecutor] | None = None      # (owner pid, pool): fork-safe
_CANDIDATE_BYTES = 1 << 28    # per query chunk: [rows, blocks, k + 1] kept values and indices


def _in_parts(fn: Callable[[slice], object], total: int, least: int = 256) -> list:
    """``fn`` over contiguous slices of ``range(total)``, one per core (NumPy's loops let go of
    the GIL), results in order; one slice when ``total < 2 * least``."""
    global _pool
    parts = max(1, min(_THREADS, total // least))
    if parts == 1:
        return [fn(slice(0, total))]
    if _pool is None or _pool[0] != os.getpid():    # a forked child has no pool threads
        _pool = (os.getpid(), ThreadPoolExecutor(_THREADS, thread_name_prefix="memjax-knn"))
    edges = [total * i // parts for i in range(parts + 1)]
    jobs = [_pool[1].submit(fn, slice(a, b)) for a, b in zip(edges[:-1], edges[1:])]
    return [job.result() for job in jobs]


def _balanced(total: int, most: int) -> int:
    """The smallest block size that covers ``total`` in as few blocks of at most ``most`` as
    possible (so padding wastes less than one block: 10,000 in 2,048s -> 5 blocks of 2,000)."""
    num = -(-total // max(1, min(most, total)))
    return -(-total // num)


def _unit_roundoff(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2.0


def _norms2(x: np.ndarray) -> np.ndarray:
    """Row ``||x||^2`` in the working precision."""
    return np.concatenate(_in_parts(lambda sl: np.einsum("ij,ij->i", x[sl], x[sl]), x.shape[0]))


def _prepare(q: np.ndarray, r: np.ndarray, metric: str, names: tuple[str, str]):
    """Each reference's offset (l2: ``||b||^2 / 2``) or scale (cosine: ``1 / ||b||``), and the
    per-query error bound ``E`` (module docstring). Finite norms imply finite inputs, so the
    element-wise check (a pass over both sets) runs only when a norm is not finite."""
    dtype = q.dtype
    d = q.shape[1]
    u = _unit_roundoff(dtype)
    gamma = d * u / (1.0 - d * u)
    grow = 1.0 / (1.0 - gamma)               # a float norm^2 is within gamma of the true one
    tiny = 4.0 * d * float(np.finfo(dtype).smallest_subnormal)
    qn2, rn2 = _norms2(q), _norms2(r)
    for name, x, n2 in ((names[0], q, qn2), (names[1], r, rn2)):
        if not np.isfinite(n2).all():        # NaN / inf in x, or a huge finite row
            _checks.check_finite(name, x)
            raise ValueError(f"{name}: squared row norms overflow {dtype} (largest |value| "
                             f"{float(np.abs(x).max()):.3g}); rescale the features")
    qn = np.sqrt(qn2.astype(np.float64) * grow)
    bmax = float(np.sqrt(float(rn2.astype(np.float64).max()) * grow))
    if metric == "l2":                       # score a.b - ||b||^2 / 2 (halving is exact)
        half = 0.5 * bmax ** 2
        bound = (gamma + u * (1 + gamma)) * (qn * bmax + half * (1 + gamma)) + gamma * half
        return rn2 * dtype.type(0.5), None, 1.01 * bound + tiny
    inv = np.zeros(rn2.shape, np.float64)
    np.divide(1.0, np.sqrt(rn2.astype(np.float64)), out=inv, where=rn2 > 0)
    return None, inv.astype(dtype), 1.01 * (1.5 * gamma + 3 * u) * qn + tiny


def _scores(q, r, j0, j1, offset, scale, out=None) -> np.ndarray:
    """Computed scores of the queries ``q`` against references ``j0:j1`` (into ``out``):
    ``a.b - ||b||^2 / 2`` (l2) or ``a.b / ||b||`` (cosine)."""
    s = np.matmul(q, r[j0:j1].T, out=out)
    if offset is not None:
        np.subtract(s, offset[j0:j1], out=s)
    else:
        np.multiply(s, scale[j0:j1], out=s)
    return s


def _block_best(s: np.ndarray, keep: int, running: np.ndarray, slack: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """``keep`` (= k + 1) largest scores of every row (any order) and their columns; ``s`` is
    clobbered. ``running``: ``[rows, k]`` best scores of the blocks before (updated in place).

    The last arg-max pass runs only on rows where it can matter: entries below a row's k-th best
    in this block are ``<= v_k``, and if ``v_k`` is below the running k-th best minus ``slack``
    (= 2E; the running k-th best never exceeds the final one, so neither does that threshold)
    they cannot be candidates; such rows get ``-inf`` there. On random data a block holds a row's
    near-best with probability ~1/blocks so far, so the pass shrinks to a few rows.
    """
    rows, width = s.shape
    if keep >= width:
        return s.copy(), np.broadcast_to(np.arange(width), s.shape).copy()
    if keep > _ARGMAX_MAX_KEEP:
        cols = np.argpartition(s, width - keep, axis=1)[:, width - keep:]
        return np.take_along_axis(s, cols, axis=1), cols
    k = keep - 1
    ar = np.arange(rows)
    cols = np.zeros((rows, keep), np.int64)
    vals = np.full((rows, keep), -np.inf, s.dtype)
    for i in range(k):
        cols[:, i] = c = s.argmax(axis=1)
        vals[:, i] = s[ar, c]
        s[ar, c] = -np.inf
    best = np.concatenate([running, vals[:, :k].astype(np.float64)], axis=1)
    running[:] = np.sort(best, axis=1)[:, k:] if k > 1 else best.max(axis=1, keepdims=True)
    need = np.flatnonzero(vals[:, k - 1] >= running[:, 0] - slack)
    if need.size == rows:
        cols[:, k] = c = s.argmax(axis=1)
        vals[:, k] = s[ar, c]
    elif need.size:
        sub = s[need]
        cols[need, k] = c = sub.argmax(axis=1)
        vals[need, k] = sub[np.arange(need.size), c]
    return vals, cols


def _chunk_candidates(q, r, offset, scale, k, block, buf, slack):
    """Per block, the ``k + 1`` best computed scores (the last ``-inf`` where it cannot matter,
    :func:`_block_best`): values / indices ``[rows, blocks, keep]`` and whether each block kept
    all its columns."""
    n, rows = r.shape[0], q.shape[0]
    vals, idx, full = [], [], []
    running = np.full((rows, k), -np.inf)
    for j0 in range(0, n, block):
        j1 = min(n, j0 + block)
        s = _scores(q, r, j0, j1, offset, scale, out=buf[: rows * (j1 - j0)].reshape(rows, -1))
        keep = min(k + 1, j1 - j0)
        v, c = _block_best(s, keep, running, slack)   # one thread: threads measured no faster
        pad = k + 1 - keep                    # a short last block: pad with -inf, never used
        vals.append(np.pad(v, ((0, 0), (0, pad)), constant_values=-np.inf))
        idx.append(np.pad(c + j0, ((0, 0), (0, pad))))
        full.append(keep == j1 - j0)
    return np.stack(vals, 1), np.stack(idx, 1), np.array(full)


def _candidates(q, r, offset, scale, bound, k, block, qblock):
    """Every (query, reference) pair that may belong to a query's true top ``k``."""
    m, n = q.shape[0], r.shape[0]
    buf = np.empty(min(qblock, m) * min(block, n), q.dtype)
    pair_q, pair_r = [], []
    for i0 in range(0, m, qblock):
        i1 = min(m, i0 + qblock)
        vals, idx, full = _chunk_candidates(q[i0:i1], r, offset, scale, k, block, buf,
                                             2.0 * bound[i0:i1])
        flat = vals.reshape(i1 - i0, -1).astype(np.float64)
        kth = -np.partition(-flat, k - 1, axis=1)[:, k - 1]
        thr = kth - 2.0 * bound[i0:i1]
        # a block whose last kept score clears the threshold may hide more candidates
        refine = (vals[:, :, -1].astype(np.float64) >= thr[:, None]) & ~full[None, :]
        keep = (vals.astype(np.float64) >= thr[:, None, None]) & ~refine[:, :, None]
        rows, _, _ = np.nonzero(keep)
        pair_q.append(rows + i0)
        pair_r.append(idx[keep])
        for b in np.flatnonzero(refine.any(axis=0)):
            sel = np.flatnonzero(refine[:, b])
            j0, j1 = b * block, min(n, (b + 1) * block)
            s = _scores(q[i0 + sel], r, j0, j1, offset, scale)
            qi, rj = np.nonzero(s.astype(np.float64) >= thr[sel, None])
            pair_q.append(sel[qi] + i0)
            pair_r.append(rj + j0)
    return np.concatenate(pair_q), np.concatenate(pair_r)


def _exact_part(q, r, pq, pr, metric, out, chunk: int = 32) -> None:
    """float64 keys of the pairs ``(q[pq], r[pr])`` into ``out``: ``||a - b||^2`` (l2) or
    ``cos |cos| = a.b |a.b| / (||a||^2 ||b||^2)`` (cosine; increasing in the cosine, and one
    correctly rounded division, so equal cosines of small-integer data give equal keys).
    Rows are gathered straight into float64 buffers of ``chunk`` rows (cache-sized)."""
    d = q.shape[1]
    a, b = np.empty((chunk, d), np.float64), np.empty((chunk, d), np.float64)
    for s in range(0, pq.shape[0], chunk):
        c = min(chunk, pq.shape[0] - s)
        a64, b64 = a[:c], b[:c]
        np.copyto(a64, q[pq[s:s + c]])           # float32 values are exact in float64
        np.copyto(b64, r[pr[s:s + c]])
        if metric == "l2":                       # and so is a - b
            np.subtract(a64, b64, out=a64)
            out[s:s + c] = np.einsum("ij,ij->i", a64, a64)
            continue
        dot = np.einsum("ij,ij->i", a64, b64)
        den = np.einsum("ij,ij->i", a64, a64) * np.einsum("ij,ij->i", b64, b64)
        out[s:s + c] = np.divide(dot * np.abs(dot), den, out=np.zeros_like(dot), where=den > 0)


def _exact(q, r, pq, pr, metric) -> np.ndarray:
    """:func:`_exact_part` over all pairs, one slice per core."""
    out = np.empty(pq.shape[0], np.float64)
    _in_parts(lambda sl: _exact_part(q, r, pq[sl], pr[sl], metric, out[sl]), pq.shape[0])
    return out


def host_knn(q: np.ndarray, r: np.ndarray, k: int, metric: str, block: int, qblock: int,
             names: tuple[str, str] = ("queries", "refs")) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest references of every query (module docstring).

    Args:
      q, r: ``[m, D]`` and ``[n, D]`` arrays of one floating dtype, ``k <= n``; a NaN or
        infinity raises a ``ValueError`` naming ``names[0]`` or ``names[1]``.
      metric: ``"l2"`` or ``"cosine"``.
      block, qblock: references per block and queries per chunk (memory ``qblock * block``).

    Returns:
      ``(values [m, k], indices [m, k] int32)``: distances (not squared) ascending, or cosine
      similarities descending; ties by lowest reference index.
    """
    m, n = q.shape[0], r.shape[0]
    block = _balanced(n, block)
    per_query = -(-n // block) * (k + 1) * 24          # float32 + int64 kept, float64 copies
    qblock = _balanced(m, max(1, min(qblock, _CANDIDATE_BYTES // per_query)))
    offset, scale, bound = _prepare(q, r, metric, names)
    pq, pr = _candidates(q, r, offset, scale, bound, k, block, qblock)
    key = _exact(q, r, pq, pr, metric)
    key = key if metric == "l2" else -key
    order = np.lexsort((pr, key, pq))                  # by query, then (value, index)
    pq, pr, key = pq[order], pr[order], key[order]
    first = np.searchsorted(pq, np.arange(m))
    take = first[:, None] + np.arange(k)[None, :]      # every query has >= k candidates
    key = key[take]
    if metric == "l2":
        vals = np.sqrt(key)
    else:                                              # -cos |cos| -> cos
        vals = np.clip(-np.sign(key) * np.sqrt(np.abs(key)), -1.0, 1.0)
    return vals.astype(q.dtype), pr[take].astype(np.int32)
