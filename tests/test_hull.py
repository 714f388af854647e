"""Convex hull and containment against SciPy (Qhull), including degenerate inputs."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy.spatial import ConvexHull, Delaunay

from memjax.metrics.hull import Hull, convex_hull, in_hull


def _vertices(hull: Hull) -> np.ndarray:
    return np.asarray(hull.vertices)[np.asarray(hull.mask)]


def _same_cycle(a, b) -> bool:
    """Same cyclic order (both counter-clockwise), whatever the starting vertex."""
    a, b = list(a), list(b)
    if len(a) != len(b) or set(a) != set(b):
        return False
    k = a.index(b[0])
    return a[k:] + a[:k] == b


@pytest.mark.parametrize("n", [3, 7, 50, 2000])
def test_random_points_match_qhull(n):
    rng = np.random.default_rng(n)
    for trial in range(3):
        pts = (rng.normal(size=(n, 2)) * [3.0, 1.0]).astype(np.float32)
        hull = convex_hull(pts)
        ref = ConvexHull(pts.astype(np.float64)).vertices
        assert _same_cycle(_vertices(hull), ref)
        assert hull.vertices.shape == (n,) and hull.mask.shape == (n,)
        np.testing.assert_array_equal(np.asarray(hull.polygon), pts[np.asarray(hull.vertices)])
        # padding repeats the first vertex
        assert np.all(np.asarray(hull.vertices)[~np.asarray(hull.mask)] == hull.vertices[0])


def test_collinear_points_on_edges_are_not_vertices():
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(4)), -1).reshape(-1, 2).astype(np.float32)
    rng = np.random.default_rng(0)
    for pts in (grid, grid[rng.permutation(len(grid))],
                # a triangle with many points on its edges and inside
                np.concatenate([[[0, 0], [8, 0], [0, 8]], [[i, 0] for i in range(1, 8)],
                                [[0, i] for i in range(1, 8)], [[i, 8 - i] for i in range(1, 8)],
                                [[1, 1], [2, 3]]]).astype(np.float32)):
        hull = convex_hull(pts)
        ref = ConvexHull(pts.astype(np.float64)).vertices
        assert _same_cycle(_vertices(hull), ref)
        assert len(ref) in (3, 4)


def test_duplicates_keep_the_lowest_index():
    rng = np.random.default_rng(1)
    base = rng.integers(-5, 6, size=(40, 2)).astype(np.float32)
    pts = np.concatenate([base, base[::-1], base[:7]])       # every point two or three times
    perm = rng.permutation(len(pts))
    pts = pts[perm]
    hull = convex_hull(pts)
    verts = _vertices(hull)
    ref = ConvexHull(pts.astype(np.float64)).vertices
    # same corner set as Qhull (which may pick any copy) ...
    assert {tuple(p) for p in pts[verts]} == {tuple(p) for p in pts[ref]}
    assert len(verts) == len(ref)
    # ... and each corner is the first occurrence of that point
    for v in verts:
        assert v == np.flatnonzero(np.all(pts == pts[v], axis=1)).min()


def test_degenerate_inputs():
    # one point, all equal points, a segment (Qhull raises on the last two)
    assert _vertices(convex_hull(np.array([[1.0, 2.0]]))).tolist() == [0]
    assert _vertices(convex_hull(np.ones((5, 2)))).tolist() == [0]
    line = np.array([[2.0, 2.0], [0.0, 0.0], [3.0, 3.0], [1.0, 1.0], [3.0, 3.0]])
    assert _vertices(convex_hull(line)).tolist() == [1, 2]
    seg = convex_hull(line)
    q = np.array([[1.5, 1.5], [0.0, 0.0], [4.0, 4.0], [1.0, 0.0]])
    assert not np.any(np.asarray(in_hull(q, seg)))                       # zero area, strict
    assert np.asarray(in_hull(q, seg, strict=False)).tolist() == [True, True, False, False]
    dot = convex_hull(np.ones((3, 2)))
    assert np.asarray(in_hull(np.array([[1.0, 1.0], [1.0, 2.0]]), dot, strict=False)).tolist() \
        == [True, False]
    assert not np.any(np.asarray(in_hull(np.array([[1.0, 1.0]]), dot)))


@pytest.mark.parametrize("n", [3, 30, 1000])
def test_in_hull_matches_delaunay_off_the_boundary(n):
    rng = np.random.default_rng(10 + n)
    pts = rng.normal(size=(n, 2)).astype(np.float32)
    q = (rng.normal(size=(4000, 2)) * 1.5).astype(np.float32)
    hull = convex_hull(pts)
    ref = Delaunay(pts.astype(np.float64)).find_simplex(q.astype(np.float64)) >= 0
    np.testing.assert_array_equal(np.asarray(in_hull(q, hull)), ref)
    np.testing.assert_array_equal(np.asarray(in_hull(q, hull, strict=False)), ref)


def test_boundary_rule():
    """Vertices, edge points and interior points of an integer polygon (exact arithmetic)."""
    pts = np.array([[0, 0], [6, 0], [8, 3], [4, 6], [0, 4], [2, 2], [5, 3]], np.float32)
    hull = convex_hull(pts)
    on_edges = np.array([[3, 0], [7, 1.5], [2, 5], [0, 2], [6, 4.5]], np.float32)
    inside = np.array([[1, 1], [4, 3], [7, 2.5], [0.5, 4]], np.float32)
    outside = np.array([[-1, 0], [9, 3], [4, 7], [8, 0], [0, 5], [3, -1e-3]], np.float32)
    q = np.concatenate([pts[_vertices(hull)], on_edges, inside, outside])
    ref = Delaunay(pts.astype(np.float64)).find_simplex(q.astype(np.float64)) >= 0
    nb = len(_vertices(hull)) + len(on_edges)
    expected_closed = np.r_[np.ones(nb + len(inside), bool), np.zeros(len(outside), bool)]
    np.testing.assert_array_equal(ref, expected_closed)                 # SciPy: boundary inside
    np.testing.assert_array_equal(np.asarray(in_hull(q, hull, strict=False)), expected_closed)
    strict = np.asarray(in_hull(q, hull))                               # paper: boundary outside
    np.testing.assert_array_equal(strict, np.r_[np.zeros(nb, bool), np.ones(len(inside), bool),
                                                np.zeros(len(outside), bool)])


def test_jittable_with_fixed_shapes():
    rng = np.random.default_rng(3)
    pts = rng.normal(size=(64, 2)).astype(np.float32)
    q = rng.normal(size=(10, 2)).astype(np.float32)
    f = jax.jit(lambda p, q: in_hull(q, convex_hull(p)))
    np.testing.assert_array_equal(np.asarray(f(pts, q)), np.asarray(in_hull(q, convex_hull(pts))))
    h = jax.jit(convex_hull)(pts)
    assert isinstance(h, Hull) and h.vertices.dtype == np.int32


@pytest.mark.parametrize("bad, match", [
    (np.zeros((5, 3)), "points"), (np.zeros((0, 2)), "points"), (np.zeros(4), "points"),
    (np.array([[0.0, np.inf]]), "points"), (np.array([["a", "b"]]), "points"),
])
def test_convex_hull_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        convex_hull(bad)


def test_in_hull_bad_input():
    hull = convex_hull(np.eye(3)[:, :2])
    with pytest.raises(ValueError, match="points"):
        in_hull(np.zeros((4, 3)), hull)
    with pytest.raises(ValueError, match="hull"):
        in_hull(np.zeros((4, 2)), np.eye(3)[:, :2])
    with pytest.raises(ValueError, match="strict"):
        in_hull(np.zeros((4, 2)), hull, strict="yes")
