"""Exact nearest neighbours, normalized L2, AMS / UMS and similarity summaries."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from memjax.data import load_digits
from memjax.metrics.memorization import (BANDS, Band, ams_ums, ams_ums_from_best, best_match,
                                         extracted, nearest_neighbours, normalized_l2,
                                         similarity_fractions, similarity_summary)


def brute_force(q, r, k, metric):
    """Float64 NumPy reference: all pairs, stable argsort (lowest index first on ties)."""
    q = np.asarray(q, np.float64).reshape(len(q), -1)
    r = np.asarray(r, np.float64).reshape(len(r), -1)
    if metric == "l2":
        d = np.sqrt(((q[:, None, :] - r[None]) ** 2).sum(-1))
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
    else:
        d = (q @ r.T) / np.linalg.norm(q, axis=1)[:, None] / np.linalg.norm(r, axis=1)[None]
        order = np.argsort(-d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), order


def random_with_ties(seed=0, m=37, n=211, d=24):
    rng = np.random.default_rng(seed)
    refs = rng.normal(size=(n, d)).astype(np.float32)
    refs[150:160] = refs[3]            # duplicates of an early row: exact ties
    refs[100] = refs[60]
    queries = rng.normal(size=(m, d)).astype(np.float32)
    queries[:5] = refs[[3, 60, 100, 7, 155]]   # exact copies (distance 0, tied with duplicates)
    queries[5:8] = refs[[10, 20, 30]] + 1e-3 * rng.normal(size=(3, d)).astype(np.float32)
    return queries, refs


@pytest.mark.parametrize("method", ["host", "xla"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("k", [1, 4, 13])
def test_nearest_neighbours_random_equals_brute_force(metric, k, method):
    q, r = random_with_ties()
    vals, idx = nearest_neighbours(q, r, k=k, metric=metric, block_size=160, method=method)
    rv, ri = brute_force(q, r, k, metric)
    np.testing.assert_array_equal(np.asarray(idx), ri)
    np.testing.assert_allclose(np.asarray(vals), rv, rtol=2e-6, atol=2e-6)
    if metric == "l2":   # exact copies have distance exactly 0; ties resolved lowest index first
        assert np.all(np.asarray(vals)[:5, 0] == 0.0)
        assert np.asarray(idx)[0, 0] == 3 and np.asarray(idx)[4, 0] == 3
        assert np.asarray(idx)[2, 0] == 60


@pytest.mark.parametrize("method", ["host", "xla"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_nearest_neighbours_digits_equals_brute_force(metric, method):
    x = load_digits()
    # all 1,797 digits, then duplicates and doubled copies (exact ties for both metrics; the
    # integer pixels also give many exact L2 ties between distinct digits)
    refs = np.concatenate([x, x[::40], 2 * x[::45]])
    q = x[::6]                           # 300 queries, all also in the reference set
    k = 6
    vals, idx = nearest_neighbours(q, refs, k=k, metric=metric, block_size=500, method=method)
    rv, ri = brute_force(q, refs, k + 1, metric)
    assert np.sum(rv[:, 1:] == rv[:, :-1]) > 20          # the test exercises ties
    np.testing.assert_array_equal(np.asarray(idx), ri[:, :k])
    np.testing.assert_allclose(np.asarray(vals), rv[:, :k], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["host", "xla"])
def test_nearest_neighbours_block_sizes_agree(method):
    q, r = random_with_ties(seed=1)
    ref = nearest_neighbours(q, r, k=3, method=method)
    # block 1: plain top_k; 7: not a multiple of the group size; 256: grouped top_k
    for kwargs in ({"block_size": 1}, {"block_size": 7, "query_block_size": 5},
                   {"block_size": 256}, {"block_size": 48, "num_candidates": 3},
                   {"block_size": 1000, "num_candidates": 3}):
        out = nearest_neighbours(q, r, k=3, method=method, **kwargs)
        np.testing.assert_array_equal(np.asarray(out[1]), np.asarray(ref[1]))
        np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(ref[0]))


@pytest.mark.parametrize("method", ["host", "xla"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_nearest_neighbours_blocking_edge_cases_equal_brute_force(metric, method):
    """Ragged last blocks (211 references in blocks of 16 after balancing, 37 queries in chunks
    of 7 / 36), k larger than a reference block (and than the candidates kept per block)."""
    q, r = random_with_ties(seed=2)
    rv, ri = brute_force(q, r, 13, metric)
    for kwargs in ({"block_size": 5, "query_block_size": 7},
                   {"block_size": 2, "query_block_size": 36, "num_candidates": 20}):
        vals, idx = nearest_neighbours(q, r, k=13, metric=metric, method=method, **kwargs)
        np.testing.assert_array_equal(np.asarray(idx), ri, err_msg=str(kwargs))
        np.testing.assert_allclose(np.asarray(vals), rv, rtol=2e-6, atol=2e-6)


def test_nearest_neighbours_images_and_jit():
    x = load_digits()[:120]            # [n, 8, 8, 1] images are flattened
    out = jax.jit(lambda a, b: nearest_neighbours(a, b, k=2))(x[:30], x)
    rv, ri = brute_force(x[:30], x, 2, "l2")
    np.testing.assert_array_equal(np.asarray(out[1]), ri)


def test_nearest_neighbours_same_on_8_devices(on_devices):
    """The XLA kernel sharded over 8 devices equals it on 1 (the host search ignores meshes)."""
    q, r = random_with_ties(seed=2)
    vals, idx = nearest_neighbours(q, r, k=5, block_size=256, method="xla")
    code = """
        import json, jax, numpy as np
        from memjax.metrics.memorization import nearest_neighbours
        from tests.test_memorization import random_with_ties
        q, r = random_with_ties(seed=2)
        out = {}
        for metric in ("l2", "cosine"):
            v, i = nearest_neighbours(q, r, k=5, metric=metric, block_size=256, method="xla")
            out[metric] = [np.asarray(v).tolist(), np.asarray(i).tolist()]
        out["devices"] = jax.device_count()
        print(json.dumps(out))
    """
    res = on_devices(code)
    assert res["devices"] == 8
    np.testing.assert_array_equal(np.asarray(res["l2"][1]), np.asarray(idx))
    np.testing.assert_array_equal(np.asarray(res["l2"][0], np.float32), np.asarray(vals))
    cv, ci = nearest_neighbours(q, r, k=5, metric="cosine", block_size=256, method="xla")
    np.testing.assert_array_equal(np.asarray(res["cosine"][1]), np.asarray(ci))
    np.testing.assert_array_equal(np.asarray(res["cosine"][0], np.float32), np.asarray(cv))


def test_nearest_neighbours_rejects_bad_input():
    q, r = random_with_ties()
    with pytest.raises(ValueError, match="metric"):
        nearest_neighbours(q, r, metric="l1")
    with pytest.raises(ValueError, match="^k"):
        nearest_neighbours(q, r, k=0)
    with pytest.raises(ValueError, match="^k"):
        nearest_neighbours(q, r, k=r.shape[0] + 1)
    with pytest.raises(ValueError, match="refs"):
        nearest_neighbours(q, r[:, :5])
    with pytest.raises(ValueError, match="queries"):
        nearest_neighbours(q[0], r)
    with pytest.raises(ValueError, match="block_size"):
        nearest_neighbours(q, r, block_size=0)
    with pytest.raises(ValueError, match="refs"):
        nearest_neighbours(q, np.full_like(r, np.nan))
    with pytest.raises(ValueError, match="refs"):
        nearest_neighbours(q, np.full_like(r, np.nan), method="xla")
    with pytest.raises(ValueError, match="method"):
        nearest_neighbours(q, r, method="faiss")
    with pytest.raises(ValueError, match="method: 'host'.*traced"):
        jax.jit(lambda a, b: nearest_neighbours(a, b, method="host"))(q, r)


# -- normalized L2 ---------------------------------------------------------------------------------
def copies_of_digits(seed=0):
    """Train: 500 digits. Generated: 8 exact copies, 4 near copies, 12 held-out digits."""
    x = load_digits()
    rng = np.random.default_rng(seed)
    train = x[:500]
    copy_idx = np.array([5, 17, 17, 80, 123, 300, 301, 499])
    near_idx = np.array([9, 42, 250, 400])
    near = train[near_idx] + 0.01 * rng.normal(size=train[near_idx].shape).astype(np.float32)
    held_out = x[1000:1012]
    gen = np.concatenate([train[copy_idx], near, held_out])
    is_copy = np.arange(len(gen)) < len(copy_idx) + len(near_idx)
    return gen, train, np.concatenate([copy_idx, near_idx]), is_copy


def test_normalized_l2_flags_exactly_the_copies():
    gen, train, src, is_copy = copies_of_digits()
    res = normalized_l2(gen, train, n=50, alpha=0.5)
    ratio = np.asarray(res.ratio)
    np.testing.assert_array_equal(np.asarray(res.index)[is_copy], src)
    assert np.all(ratio[:8] == 0.0)
    np.testing.assert_array_equal(np.asarray(extracted(res.ratio, 1.0 / 3.0)), is_copy)
    # against the definition (paper 000 eq. 7) in float64
    d, _ = brute_force(gen, train, 50, "l2")
    ref = d[:, 0] / (0.5 * d.mean(1))
    np.testing.assert_allclose(ratio, ref, rtol=1e-5, atol=1e-7)
    assert np.all(ratio <= 2.0 + 1e-6)          # ratio in [0, 1/alpha]


# -- AMS / UMS -------------------------------------------------------------------------------------
def orthonormal_setup(d=64, n=20, seed=0):
    """Orthonormal training vectors and unit vectors orthogonal to all of them."""
    rng = np.random.default_rng(seed)
    qmat, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return qmat[:n], qmat[n:]


def test_ams_ums_cosine_bands_known_by_construction():
    train, extra = orthonormal_setup()
    # (train index, cosine to it); cosine to every other training vector is 0
    spec = [(0, 1.0), (0, 1.0), (1, 0.8), (2, 0.65), (3, 0.55), (3, 0.52), (4, 0.45),
            (5, 0.42), (5, 0.48), (6, 0.2), (7, 0.3)]
    gen = np.stack([s * train[j] + np.sqrt(1 - s * s) * extra[i] for i, (j, s) in enumerate(spec)])
    best, idx = best_match(gen.astype(np.float32), train.astype(np.float32), measure="cosine")
    np.testing.assert_allclose(np.asarray(best), [s for _, s in spec], atol=1e-6)
    n_g = len(spec)
    expect = {"high": ({0, 1, 2}, 4), "mid": ({3}, 2), "low": ({4, 5}, 3)}
    for name, (train_set, count) in expect.items():
        res = ams_ums(gen, train, band=BANDS["sscd"][name], measure="cosine")
        assert float(res.ams) == pytest.approx(count / n_g)
        assert float(res.ums) == pytest.approx(len(train_set) / n_g)
        np.testing.assert_array_equal(np.flatnonzero(np.asarray(res.matched)), sorted(train_set))
    # a plain tuple is the closed band [lo, hi]
    res = ams_ums(gen, train, band=(0.44, 0.56), measure="cosine")
    assert float(res.ams) == pytest.approx(4 / n_g)


def test_ams_ums_distance_bands_oriented_smaller_is_closer():
    train, extra = orthonormal_setup()
    # generated = train[j] + r u with u orthogonal: distance r to train[j], sqrt(2 + r^2) to others
    spec = [(0, 0.0), (1, 0.05), (1, 0.1), (2, 0.3), (3, 0.6), (4, 1.2)]
    gen = np.stack([train[j] + r * extra[i] for i, (j, r) in enumerate(spec)]).astype(np.float32)
    res = ams_ums(gen, train, band=Band(0.0, 0.2, "left"), measure="l2")   # close: distance < 0.2
    assert float(res.ams) == pytest.approx(3 / 6) and float(res.ums) == pytest.approx(2 / 6)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(res.matched)), [0, 1])
    res = ams_ums(gen, train, band=(0.25, 0.7), measure="l2")
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(res.matched)), [2, 3])

    # normalized L2 with n = 5: ratio(r) = r / (0.5 (r + 4 sqrt(2 + r^2)) / 5), increasing in r.
    ratio = lambda r: 10 * r / (r + 4 * np.sqrt(2 + r * r))
    def solve(target):
        lo, hi = 0.0, 5.0
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if ratio(mid) < target else (lo, mid)
        return lo
    spec = [(0, 0.0), (1, solve(1.375)), (2, solve(1.375)), (2, solve(1.45)), (3, solve(1.45)),
            (4, solve(1.7)), (5, solve(1.2))]
    gen = np.stack([train[j] + r * extra[i] for i, (j, r) in enumerate(spec)]).astype(np.float32)
    best, _ = best_match(gen, train, measure="normalized_l2", n=5)
    np.testing.assert_allclose(np.asarray(best), [0.0, 1.375, 1.375, 1.45, 1.45, 1.7, 1.2],
                               atol=1e-5)
    expect = {"high": ([1, 2], 2), "mid": ([2, 3], 2), "low": ([4], 1)}
    for name, (train_idx, count) in expect.items():
        res = ams_ums(gen, train, band=BANDS["normalized_l2"][name], measure="normalized_l2", n=5)
        assert float(res.ams) == pytest.approx(count / 7), name
        np.testing.assert_array_equal(np.flatnonzero(np.asarray(res.matched)), train_idx)
        assert float(res.ums) == pytest.approx(len(train_idx) / 7)
    # the exact copy (ratio 0) and ratio 1.2 lie below the printed high band; Band(0, 1.4) has them
    res = ams_ums(gen, train, band=Band(0.0, 1.4, "left"), measure="normalized_l2", n=5)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(res.matched)), [0, 1, 2, 5])


def test_ams_ums_match_all_counts_every_training_image_in_band():
    train, extra = orthonormal_setup()
    # g0 = c (t1 + t2) + s e with ||g0|| = 1: cosine c = 0.55 to both t1 and t2
    c = 0.55
    s = np.sqrt(1 - 2 * c * c)
    g = np.stack([c * (train[1] + train[2]) + s * extra[0],
                  0.9 * train[7] + np.sqrt(0.19) * extra[1]]).astype(np.float32)
    band = BANDS["sscd"]["mid"]
    best = ams_ums(g, train, band=band, measure="cosine")
    got = np.flatnonzero(np.asarray(best.matched))    # one of the (rounded) tie, not both
    assert len(got) == 1 and got[0] in (1, 2)
    every = ams_ums(g, train, band=band, measure="cosine", match="all")
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(every.matched)), [1, 2])
    assert float(every.ams) == float(best.ams) == pytest.approx(0.5)
    assert float(every.ums) == pytest.approx(1.0)


def test_ams_ums_rejects_bad_input():
    train, extra = orthonormal_setup()
    with pytest.raises(ValueError, match="band"):
        ams_ums(extra, train, band=(0.6, 0.5))
    with pytest.raises(ValueError, match="band"):
        ams_ums(extra, train, band=0.5)
    with pytest.raises(ValueError, match="measure"):
        ams_ums(extra, train, band=(0.1, 0.2), measure="ssim")
    with pytest.raises(ValueError, match="match"):
        ams_ums(extra, train, band=(0.1, 0.2), match="any")
    with pytest.raises(ValueError, match="train"):
        ams_ums(extra, train[:, :3], band=(0.1, 0.2))


# -- fractions and summaries -----------------------------------------------------------------------
def test_similarity_fractions_and_summary_match_numpy():
    rng = np.random.default_rng(3)
    s = rng.uniform(0.5, 1.0, 1001).astype(np.float32)
    s[:10] = 0.9                                       # exactly at a threshold: not counted (>)
    th = [0.85, 0.9, 0.95]
    got = np.asarray(similarity_fractions(s, th))
    np.testing.assert_allclose(got, [(s > t).mean() for t in th], atol=1e-7)
    summ = similarity_summary(s)
    np.testing.assert_allclose(float(summ.mean), s.astype(np.float64).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(summ.median), np.median(s), rtol=1e-6)
    np.testing.assert_allclose(float(summ.p95), np.quantile(s, 0.95), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(summ.top),
                               np.quantile(s, 1 - np.array([0.001, 0.005, 0.01, 0.05, 0.1])),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="top_fractions"):
        similarity_summary(s, top_fractions=[1.5])
    with pytest.raises(ValueError, match="best_similarity"):
        similarity_fractions(s[None], th)


def test_ams_ums_from_best_equals_ams_ums():
    gen, train, _, _ = copies_of_digits()
    best, idx = best_match(gen, train, measure="normalized_l2")
    for band in list(BANDS["normalized_l2"].values()) + [Band(0.0, 1.0, "left")]:
        a = ams_ums(gen, train, band=band, measure="normalized_l2")
        b = ams_ums_from_best(best, idx, train.shape[0], band=band)
        assert float(a.ams) == float(b.ams) and float(a.ums) == float(b.ums)
        np.testing.assert_array_equal(np.asarray(a.matched), np.asarray(b.matched))
    res = ams_ums_from_best(best, idx, train.shape[0], band=(0.0, 0.3))
    assert float(res.ams) == pytest.approx(12 / 24) and float(res.ums) == pytest.approx(11 / 24)
    with pytest.raises(ValueError, match="index"):
        ams_ums_from_best(best, np.asarray(idx)[:3], train.shape[0], band=(0.0, 0.3))
