"""Diverse samples (paper 003): t-SNE + hull and k-NN support, on constructed and real data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import ConvexHull, Delaunay
from sklearn.datasets import load_digits
from sklearn.neighbors import NearestNeighbors

from memjax.metrics.diverse import diverse_samples, knn_support, tsne_hull


def _blob_with_planted(seed=0, d=10):
    """300 real and 100 generated points from N(0, I_10), plus 10 planted far away."""
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(300, d)).astype(np.float32)
    same = rng.normal(size=(100, d)).astype(np.float32)
    planted = (8.0 * np.eye(d)[0] + 0.3 * rng.normal(size=(10, d))).astype(np.float32)
    return real, np.concatenate([same, planted])


def _knn_support_numpy(real, gen, k):
    real, gen = real.astype(np.float64), gen.astype(np.float64)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(real)
    rho = nn.kneighbors(real)[0][:, k]          # column 0 is the point itself (no duplicates)
    d = np.sqrt(((gen[:, None, :] - real[None, :, :]) ** 2).sum(-1))
    return np.all(d > rho[None, :], axis=1), np.min(d / rho[None, :], axis=1), rho


def test_planted_points_found_by_both_methods():
    """Measured (seed 0): k-NN support (k=5) flags 7 of the 100 in-distribution points,
    the joint t-SNE hull 14 of 100; both flag all 10 planted points."""
    real, gen = _blob_with_planted()
    knn = knn_support(real, gen, k=5)
    th = tsne_hull(real, gen)
    for mask in (np.asarray(knn.diverse), np.asarray(th.diverse)):
        assert mask.shape == (110,) and mask.dtype == bool
        assert mask[100:].all()
        assert mask[:100].sum() <= 20
    assert np.all(np.asarray(knn.score)[100:] > 1.5)
    # the hull test is SciPy's on the same embedding (no point lies on the boundary here)
    outside = Delaunay(np.asarray(th.real_embedding, np.float64)).find_simplex(
        np.asarray(th.generated_embedding, np.float64)) < 0
    np.testing.assert_array_equal(np.asarray(th.diverse), outside)
    np.testing.assert_array_equal(np.asarray(diverse_samples(real, gen, method="knn_support")),
                                  np.asarray(knn.diverse))


def test_knn_support_matches_numpy_brute_force():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(150, 6)).astype(np.float32)
    gen = (rng.normal(size=(70, 6)) * 1.3).astype(np.float32)
    for k in (1, 4):
        ref_mask, ref_score, ref_rho = _knn_support_numpy(real, gen, k)
        res = knn_support(real, gen, k=k, block_size=32)
        np.testing.assert_allclose(np.asarray(res.radii), ref_rho, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(res.score), ref_score, rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(res.diverse), ref_mask)
        assert 0 < ref_mask.sum() < len(gen)
    # blocking changes nothing
    np.testing.assert_array_equal(np.asarray(knn_support(real, gen, k=4).diverse),
                                  np.asarray(res.diverse))


def test_knn_support_closed_form_on_a_lattice():
    """Real points (i, 0), i = 0..9. k = 1: every ball has radius 1; k = 2: radius 2 at the
    two ends, 1 inside. Balls are closed, so points on a sphere are not diverse."""
    real = np.stack([np.arange(10.0), np.zeros(10)], 1).astype(np.float32)
    gen = np.array([[0.5, 0.0], [4.5, 0.8], [4.5, 0.9], [10.0, 0.0], [11.0, 0.0], [-1.0, 0.0],
                    [-2.0, 0.0], [-2.1, 0.0]], np.float32)
    r1 = knn_support(real, gen, k=1)
    np.testing.assert_array_equal(np.asarray(r1.radii), np.ones(10))
    assert np.asarray(r1.diverse).tolist() == [False, False, True, False, True, False, True, True]
    r2 = knn_support(real, gen, k=2)
    np.testing.assert_array_equal(np.asarray(r2.radii), [2.0] + [1.0] * 8 + [2.0])
    assert np.asarray(r2.diverse).tolist() == [False, False, True, False, False, False, False,
                                               True]
    np.testing.assert_allclose(np.asarray(r2.score)[[4, 7]], [1.0, 1.05], rtol=1e-6)


def test_knn_support_duplicates_are_other_points():
    """Two copies of a point are each other's nearest neighbour: with k = 1 their balls have
    radius 0, and only the point itself is inside."""
    real = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [7.0, 0.0]], np.float32)
    res = knn_support(real, np.array([[0.0, 0.0], [0.1, 0.0]], np.float32), k=1)
    np.testing.assert_array_equal(np.asarray(res.radii), [0.0, 0.0, 2.0, 2.0])
    assert np.asarray(res.diverse).tolist() == [False, True]


def test_knn_support_on_digits():
    """1,200 random digits as the real set, the other 597 as generated: measured 25 of 597
    diverse (k = 5, raw pixels); 30 inverted digits (16 - x) are all diverse."""
    x = load_digits().data.astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    real, held = x[perm[:1200]], x[perm[1200:]]
    gen = np.concatenate([held, 16.0 - held[:30]])
    mask = np.asarray(diverse_samples(real, gen, method="knn_support", k=5))
    assert mask[597:].all()
    assert mask[:597].sum() <= 60


def test_separate_embeddings_as_algorithm_1_reads():
    real, gen = _blob_with_planted()
    res = tsne_hull(real[:80], gen[:60], joint=False, perplexity=10.0, num_iters=300)
    assert res.real_embedding.shape == (80, 2) and res.generated_embedding.shape == (60, 2)
    outside = Delaunay(np.asarray(res.real_embedding, np.float64)).find_simplex(
        np.asarray(res.generated_embedding, np.float64)) < 0
    np.testing.assert_array_equal(np.asarray(res.diverse), outside)


def test_tsne_hull_with_identity_embedding_is_the_planar_hull_test():
    """With embed_fn = identity on 2-D features the method is exactly SciPy's hull test, except
    that points on the boundary (vertices, edge midpoints) count as diverse."""
    rng = np.random.default_rng(2)
    real = rng.integers(-20, 21, size=(200, 2)).astype(np.float32)
    corners = real[ConvexHull(real.astype(np.float64)).vertices]
    boundary = np.concatenate([corners, (corners + np.roll(corners, -1, 0)) / 2])
    gen = np.concatenate([rng.integers(-25, 26, size=(300, 2)), real[:20], boundary])
    gen = gen.astype(np.float32)
    res = tsne_hull(real, gen, embed_fn=lambda x: x)
    ref = Delaunay(real.astype(np.float64)).find_simplex(gen.astype(np.float64)) < 0
    is_boundary = np.zeros(len(gen), bool)
    is_boundary[-len(boundary):] = True
    assert not ref[is_boundary].any()                        # SciPy: boundary is inside
    expected = ref | is_boundary
    # any other disagreement must be a random lattice point lying exactly on an edge
    for g in gen[np.asarray(res.diverse) != expected]:
        assert any((b - a)[0] * (g - a)[1] - (b - a)[1] * (g - a)[0] == 0
                   and np.all(g >= np.minimum(a, b)) and np.all(g <= np.maximum(a, b))
                   for a, b in zip(corners, np.roll(corners, -1, 0)))
    assert np.asarray(res.diverse)[is_boundary].all()
    np.testing.assert_array_equal(np.asarray(res.real_embedding), real)


@pytest.mark.slow
def test_tsne_hull_on_digits_few_in_distribution():
    """Joint t-SNE of 1,200 real + 597 held-out digits: measured 12 of 597 outside the hull."""
    x = load_digits().data.astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    mask = np.asarray(diverse_samples(x[perm[:1200]], x[perm[1200:]]))
    assert mask.shape == (597,)
    assert mask.sum() <= 60


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="umap"), "method"),
    (dict(generated=np.zeros((5, 3))), "generated_features"),
    (dict(real=np.zeros((20,))), "real_features"),
    (dict(real=np.full((20, 4), np.nan)), "real_features"),
    (dict(method="knn_support", k=40), "k"),
    (dict(method="knn_support", k=0), "k"),
    (dict(method="knn_support", block_size=0), "block_size"),
    (dict(method="knn_support", init="random"), "tsne_options"),
    (dict(joint="yes"), "joint"),
    (dict(strict=1), "strict"),
    (dict(joint=False, perplexity=10.0), "generated_features"),
    (dict(perplexity=50.0), "perplexity"),
    (dict(num_components=3), "num_components"),
    (dict(init="random"), "key"),
    (dict(embed_fn=lambda x: x[:, :3]), "embed_fn"),
    (dict(embed_fn="tsne"), "embed_fn"),
    (dict(embed_fn=lambda x: x[:, :2], init="random"), "tsne_options"),
])
def test_bad_input_raises_before_compiling(kwargs, match):
    kwargs = dict(kwargs)
    rng = np.random.default_rng(0)
    real = kwargs.pop("real", rng.normal(size=(40, 4)))
    gen = kwargs.pop("generated", rng.normal(size=(8, 4)))
    with pytest.raises(ValueError, match=match):
        diverse_samples(real, gen, **kwargs)


def test_tsne_defaults_are_paper_003s():
    """Paper 003's t-SNE (sklearn defaults in the public code): perplexity 30, 1000 iterations,
    in the library defaults and in every shipped config that counts diverse samples."""
    import importlib
    import inspect

    from memjax.metrics import diverse, embedding

    for fn in (embedding.tsne, diverse.tsne_hull, diverse.diverse_samples):
        params = inspect.signature(fn).parameters
        assert params["perplexity"].default == 30.0, fn.__name__
        assert params["num_iters"].default == 1000, fn.__name__
    for name in ("digits_audit", "evaluate_digits", "cifar10_diffusers_audit"):
        c = importlib.import_module(f"configs.{name}").get_config()
        assert (c.diverse.perplexity, c.diverse.num_iters) == (30.0, 1000), name
