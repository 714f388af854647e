"""FFT-accelerated t-SNE: sparse affinities, the interpolated gradient against the exact one,
and embeddings against openTSNE."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.manifold import trustworthiness

from memjax.metrics import embedding as T
from memjax.metrics import tsne_fft as F


_kl_gradient = jax.jit(T._kl_gradient)     # the exact O(n^2) reference, one program


@pytest.fixture(scope="module")
def digits():
    return load_digits().data.astype(np.float32)


def _dense(cols, vals):
    """The symmetric ``P`` of the sparse edges: ``(c + c^T) / 2n`` as an ``[n, n]`` array."""
    n, k = cols.shape
    p = jnp.zeros((n, n), vals.dtype).at[jnp.repeat(jnp.arange(n), k), cols.reshape(-1)].add(
        vals.reshape(-1))
    return p + p.T


def test_sparse_affinities_with_all_neighbours_equal_the_exact_ones(digits):
    """With k = n - 1 neighbours the sparse calibration sees every point: same P as exact."""
    x = digits[:60]
    cols, vals = F.sparse_affinities(x, perplexity=20.0)       # 3 * 20 >= 59: all neighbours
    assert cols.shape == (60, 59)
    assert not np.any(np.asarray(cols) == np.arange(60)[:, None])   # never itself
    p = np.asarray(_dense(cols, vals))
    ref = np.asarray(T.joint_probabilities(x, perplexity=20.0))
    np.testing.assert_allclose(p, ref, rtol=1e-4, atol=1e-6 * ref.max())


def test_sparse_affinities_rows(digits):
    x = digits[:500]        # the size of the gradient tests below: programs compiled once
    cols, vals = F.sparse_affinities(x, perplexity=30.0)
    assert cols.shape == (500, 90)
    np.testing.assert_allclose(np.asarray(vals).sum(axis=1), 1.0 / 1000, rtol=1e-5)
    # the listed neighbours are the 90 nearest other points (float64 brute force)
    d = ((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    kth = np.sort(d, axis=1)[:, 89]
    listed = np.take_along_axis(d, np.asarray(cols), axis=1)
    assert np.all(listed <= kth[:, None])


@pytest.mark.parametrize("scale, num_boxes, bound", [
    pytest.param(5.0, None, 2e-2, marks=pytest.mark.slow),
    pytest.param(5.0, 200, 1e-3, marks=pytest.mark.slow), (1e-3, None, 1e-4)])
def test_gradient_matches_exact(digits, scale, num_boxes, bound):
    """The interpolated gradient against the exact O(n^2) gradient with the same P.

    The default grid (boxes of side <= 1, 3 nodes each: openTSNE's accuracy) is within 2% of
    the exact gradient on a spread-out embedding, and the error falls as the grid is refined
    (degree-2 interpolation: ~h^3).
    """
    x = digits[:500]
    cols, vals = F.sparse_affinities(x, perplexity=30.0)
    y = jnp.asarray(np.random.default_rng(0).normal(size=(500, 2)) * scale, jnp.float32)
    for exaggeration in (1.0, 12.0):
        exact = _kl_gradient(_dense(cols, vals) * exaggeration, y)
        approx = F.gradient(y, cols, vals, exaggeration, num_boxes=num_boxes)
        err = float(jnp.linalg.norm(approx - exact) / jnp.linalg.norm(exact))
        assert err < bound, (exaggeration, err)


def test_cached_kernel_gradient(digits):
    """The optimiser's gradient keeps the kernel FFTs while the embedding fits the grid, and
    is as accurate as the fresh one."""
    x = digits[:300]
    cols, vals = F.sparse_affinities(x, perplexity=30.0)
    p = _dense(cols, vals)
    y = jnp.asarray(np.random.default_rng(1).normal(size=(300, 2)) * 3, jnp.float32)
    cached_gradient = jax.jit(functools.partial(F._cached_gradient, num_boxes=50))  # as in _segment
    cache = jax.jit(F._empty_cache, static_argnums=1)(y, 50)
    g1, cache = cached_gradient(y, cache, cols, vals, 1.0)
    g2, cache2 = cached_gradient(y * 0.99, cache, cols, vals, 1.0)
    assert float(cache2[0]) == float(cache[0]) > 0            # reused: still fits
    g3, cache3 = cached_gradient(y * 1.1, cache, cols, vals, 1.0)
    assert float(cache3[0]) > float(cache[0])                 # recomputed: outgrew the grid
    for g, yy in ((g1, y), (g2, y * 0.99), (g3, y * 1.1)):
        exact = _kl_gradient(p, yy)
        assert float(jnp.linalg.norm(g - exact) / jnp.linalg.norm(exact)) < 5e-3


@pytest.mark.slow  # CI's second step; benchmarks/results/tsne.md compares up to n = 50,000
def test_trustworthiness_matches_opentsne(digits):
    """1,000 digits, both libraries with 1000 iterations (250 exaggerated): within 0.01.

    (benchmarks/results/tsne.md compares them from 2,000 to 50,000 points.)"""
    openTSNE = pytest.importorskip("openTSNE")
    x = digits[:1000]
    y = np.asarray(T.tsne(x, method="fft"))
    assert y.shape == (1000, 2) and np.all(np.isfinite(y))
    ours = trustworthiness(x, y, n_neighbors=10)
    ref_y = np.asarray(openTSNE.TSNE(n_iter=750, n_jobs=1, random_state=0).fit(x))
    ref = trustworthiness(x, ref_y, n_neighbors=10)
    assert abs(ours - ref) <= 0.01, (ours, ref)
    assert ours > 0.98


def test_auto_switches_at_fft_from():
    x = np.random.default_rng(0).normal(size=(80, 5)).astype(np.float32)
    assert T.FFT_FROM > 80
    np.testing.assert_array_equal(np.asarray(T.tsne(x, num_iters=20)),
                                  np.asarray(T.tsne(x, num_iters=20, method="exact")))


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="bh"), "method"),
    (dict(method="fft", num_components=3), "num_components"),
    (dict(method="fft", perplexity=80.0), "perplexity"),
    (dict(method="fft", init=np.zeros((60, 3))), "init"),
    (dict(method="fft", init="random"), "key"),
])
def test_bad_input_raises(kwargs, match):
    x = np.random.default_rng(0).normal(size=(60, 8))
    with pytest.raises(ValueError, match=match):
        T.tsne(x, **kwargs)
