"""The host search's certificate (memjax.metrics.neighbours_host): its error bound holds, it
finds the float64 answer where float32 products rank wrongly, and it agrees with the XLA kernel."""

from __future__ import annotations

import numpy as np
import pytest

from memjax.metrics import neighbours_host as host
from memjax.metrics.neighbours import nearest_neighbours
from tests.test_memorization import brute_force


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_error_bound_holds_for_every_computed_score(metric):
    """|computed score - float64 score| <= E for every pair, over norms spanning 1e-3..1e3."""
    rng = np.random.default_rng(0)
    q = (rng.normal(size=(64, 300)) * 10.0 ** rng.uniform(-3, 3, size=(64, 1))).astype(np.float32)
    r = (rng.normal(size=(200, 300)) * 10.0 ** rng.uniform(-3, 3, size=(200, 1))).astype(
        np.float32)
    r[7] = 0.0
    offset, scale, bound = host._prepare(q, r, metric, ("q", "r"))
    computed = host._scores(q, r, 0, r.shape[0], offset, scale).astype(np.float64)
    q64, r64 = q.astype(np.float64), r.astype(np.float64)
    if metric == "l2":
        true = q64 @ r64.T - 0.5 * (r64 * r64).sum(1)[None, :]
    else:
        norm = np.linalg.norm(r64, axis=1)
        true = (q64 @ r64.T) / np.where(norm > 0, norm, 1.0)[None, :]
    err = np.abs(computed - true)
    assert np.all(err <= bound[:, None])
    assert np.max(err / bound[:, None]) > 1e-4          # the bound is not vacuous either


def _near_ties(seed=0, m=40, n=300, d=512):
    """All vectors share one large component (norm ~1e3) and differ by ~1e-2: the float32
    matmul form cancels ~1e6 -> its ranking is mostly noise, the true one is not."""
    rng = np.random.default_rng(seed)
    base = 1e3 * rng.normal(size=(1, d)) / np.sqrt(d)
    refs = (base + 1e-2 * rng.normal(size=(n, d))).astype(np.float32)
    queries = (base + 1e-2 * rng.normal(size=(m, d))).astype(np.float32)
    refs[50:53] = refs[10]                     # exact ties, broken by the lowest index
    queries[0] = refs[10]
    return queries, refs


@pytest.mark.parametrize("method", ["host", "xla"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_certified_result_equals_float64_where_float32_products_rank_wrongly(k, method):
    """The host search certifies its candidates; the XLA kernel centres the data first."""
    q, r = _near_ties()
    rv, ri = brute_force(q, r, k, "l2")
    fast = (q @ r.T - 0.5 * (r * r).sum(1)[None, :]).astype(np.float32)    # float32 products
    assert np.mean(np.argmax(fast, axis=1) != ri[:, 0]) > 0.5              # mostly wrong
    vals, idx = nearest_neighbours(q, r, k=k, block_size=64, query_block_size=16, method=method)
    np.testing.assert_array_equal(np.asarray(idx), ri)
    np.testing.assert_allclose(np.asarray(vals), rv, rtol=1e-6)
    assert list(np.asarray(idx)[0, :min(k, 4)]) == [10, 50, 51, 52][:min(k, 4)]
    assert np.asarray(vals)[0, 0] == 0.0


def test_host_and_xla_give_the_same_neighbours():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(500, 300)).astype(np.float32)
    r = rng.normal(size=(700, 300)).astype(np.float32)
    for metric in ("l2", "cosine"):
        hv, hi = nearest_neighbours(q, r, k=5, metric=metric, method="host")
        xv, xi = nearest_neighbours(q, r, k=5, metric=metric, method="xla")
        np.testing.assert_array_equal(np.asarray(hi), np.asarray(xi))
        np.testing.assert_allclose(np.asarray(hv), np.asarray(xv), rtol=2e-6)


def test_zero_vectors_under_cosine():
    """A zero query ties with everything at similarity 0 (so it gets references 0..k-1); a zero
    reference has similarity 0 to every query."""
    rng = np.random.default_rng(4)
    q = rng.normal(size=(6, 10)).astype(np.float32)
    r = rng.normal(size=(40, 10)).astype(np.float32)
    q[2] = 0.0
    r[:3] = 0.0
    r[5] = -q[0]                               # similarity -1: last for query 0
    vals, idx = nearest_neighbours(q, r, k=40, metric="cosine", block_size=8, method="host")
    q64, r64 = q.astype(np.float64), r.astype(np.float64)
    den = np.linalg.norm(q64, axis=1)[:, None] * np.linalg.norm(r64, axis=1)[None, :]
    sim = np.divide(q64 @ r64.T, den, out=np.zeros(den.shape), where=den > 0)
    ri = np.argsort(-sim, axis=1, kind="stable")
    assert np.all(ri[2] == np.arange(40))
    np.testing.assert_array_equal(np.asarray(idx), ri)
    np.testing.assert_allclose(np.asarray(vals), np.take_along_axis(sim, ri, 1), atol=1e-7)
    np.testing.assert_array_equal(np.asarray(vals)[2], 0.0)
    assert np.asarray(idx)[0, -1] == 5 and np.asarray(vals)[0, -1] == pytest.approx(-1.0)


def test_numpy_and_jax_inputs_and_dtypes():
    """NumPy input skips the device round trip; integer and float16 inputs are promoted."""
    rng = np.random.default_rng(5)
    q = rng.integers(0, 4, size=(30, 2, 3)).astype(np.int32)
    r = rng.integers(0, 4, size=(50, 6)).astype(np.float16)
    rv, ri = brute_force(q, r, 4, "l2")
    for a, b in ((q, r), (np.asarray(q, np.float32), r.astype(np.float32))):
        vals, idx = nearest_neighbours(a, b, k=4, method="host")
        assert vals.dtype == np.float32 and idx.dtype == np.int32
        np.testing.assert_array_equal(np.asarray(idx), ri)
        np.testing.assert_allclose(np.asarray(vals), rv, rtol=1e-6)


@pytest.mark.parametrize("where", ["queries", "refs"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 3e20])
@pytest.mark.parametrize("as_jax", [False, True])
def test_non_finite_or_overflowing_input_is_named(where, bad, as_jax):
    """One bad entry, NumPy or JAX input: a ValueError naming the argument (found on the row
    norms, so clean input pays no extra pass); 3e20 is finite but its square overflows."""
    import jax

    rng = np.random.default_rng(6)
    arrays = {"queries": rng.normal(size=(40, 9)).astype(np.float32),
              "refs": rng.normal(size=(70, 9)).astype(np.float32)}
    arrays[where][17, 4] = bad
    if as_jax:
        arrays = {name: jax.device_put(x) for name, x in arrays.items()}
    match = "finite" if np.isinf(bad) or np.isnan(bad) else "overflow"
    with pytest.raises(ValueError, match=f"^{where}: .*{match}"):
        nearest_neighbours(arrays["queries"], arrays["refs"], k=3, method="host")


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")      # the child uses NumPy only
def test_forked_child_gets_its_own_threads():
    """The re-scoring's thread pool is per process: a child forked after the parent used it
    (a DataLoader worker, multiprocessing) gets a fresh pool instead of waiting forever on the
    parent's threads, which a fork does not copy."""
    import os
    import pickle
    import signal

    rng = np.random.default_rng(6)
    q = rng.normal(size=(600, 16)).astype(np.float32)  # >= 512 pairs: two threads re-score
    r = rng.normal(size=(300, 16)).astype(np.float32)
    expected = host.host_knn(q, r, 2, "l2", 128, 256)
    assert host._pool is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                        # the child: NumPy only, then leave
        signal.alarm(60)
        os.write(write, pickle.dumps(host.host_knn(q, r, 2, "l2", 128, 256)))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        got = pickle.loads(f.read())
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])


def _random_case(rng):
    """A random shape, k, metric, blocking and kind of data (ties, offsets, grids, zeros)."""
    m, n, d = int(rng.integers(1, 60)), int(rng.integers(1, 150)), int(rng.integers(1, 40))
    kind = rng.choice(["gauss", "grid", "offset", "duplicates"])
    if kind == "grid":
        x = rng.integers(-2, 3, size=(m + n, d)).astype(np.float32)
    elif kind == "offset":
        x = (50.0 + 1e-3 * rng.normal(size=(m + n, d))).astype(np.float32)
    else:
        x = rng.normal(size=(m + n, d)).astype(np.float32)
    q, r = x[:m], x[m:]
    if kind == "duplicates" and n > 3:
        r[rng.integers(0, n, size=n // 3)] = r[0]
        q[: m // 2] = r[0]
    r[rng.random(n) < 0.05] = 0.0
    k = int(rng.integers(1, n + 1))
    metric = str(rng.choice(["l2", "cosine"]))
    return q, r, k, metric, int(rng.integers(1, 40)), int(rng.integers(1, 30))


def test_random_cases_equal_float64():
    """40 random cases: the host search always equals a float64 brute force (the cosine
    reference gives zero vectors similarity 0, as memjax does)."""
    rng = np.random.default_rng(7)
    for case in range(40):
        q, r, k, metric, block, qblock = _random_case(rng)
        q64, r64 = q.astype(np.float64), r.astype(np.float64)
        if metric == "l2":
            key = ((q64[:, None, :] - r64[None]) ** 2).sum(-1)
        else:        # -cos |cos|: exact ties of the small-integer grids stay exact in float64
            dot = q64 @ r64.T
            den = (q64 * q64).sum(1)[:, None] * (r64 * r64).sum(1)[None, :]
            key = -np.divide(dot * np.abs(dot), den, out=np.zeros(den.shape), where=den > 0)
        want = np.argsort(key, axis=1, kind="stable")[:, :k]
        vals, idx = host.host_knn(q, r, k, metric, block, qblock)
        np.testing.assert_array_equal(idx, want, err_msg=f"case {case}: {metric}, k={k}")
        v = vals.astype(np.float64)
        got = v ** 2 if metric == "l2" else -v * np.abs(v)
        np.testing.assert_allclose(got, np.take_along_axis(key, want, 1), rtol=1e-6, atol=1e-6)
