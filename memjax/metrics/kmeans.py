r"""k-means: Lloyd's algorithm with k-means++ seeding, jittable, restarts vmapped.

SIDE (paper 001 section 4.1) uses it for implicit labels: ``K`` clusters of features of
generated images stand in for the unknown classes.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from memjax import _checks

__all__ = ["KMeans", "kmeans", "kmeans_plusplus", "kmeans_assign"]


class KMeans(NamedTuple):
    """Result of :func:`kmeans`: ``centroids [k, d]``, ``labels [n]``, ``inertia`` (sum of squared
    distances of the points to their centroids)."""

    centroids: Float[Array, "k d"]
    labels: Int[Array, " n"]
    inertia: Float[Array, ""]


def _sq_dists(x, c):
    # ||x||^2 - 2 x.c + ||c||^2, clipped: fine for assignment (ties are measure-zero)
    d = jnp.sum(x * x, 1)[:, None] - 2.0 * x @ c.T + jnp.sum(c * c, 1)[None, :]
    return jnp.maximum(d, 0.0)


def kmeans_plusplus(key: PRNGKeyArray, x: Float[Array, "n d"], k: int) -> Float[Array, "k d"]:
    r"""k-means++ seeding (Arthur & Vassilvitskii 2007): the first centroid uniformly at random,
    each next one drawn with probability ``\propto D(x)^2``, the squared distance to the nearest
    centroid chosen so far."""
    n = x.shape[0]
    keys = jax.random.split(key, k)
    first = x[jax.random.randint(keys[0], (), 0, n)]
    cents = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    d2 = jnp.sum((x - first) ** 2, 1)

    def body(i, carry):
        cents, d2 = carry
        logits = jnp.where(d2 > 0, jnp.log(jnp.where(d2 > 0, d2, 1.0)), -jnp.inf)
        # all points coincide with centroids: fall back to uniform
        logits = jnp.where(jnp.all(d2 <= 0), jnp.zeros_like(d2), logits)
        j = jax.random.categorical(keys[i], logits)
        c = x[j]
        return cents.at[i].set(c), jnp.minimum(d2, jnp.sum((x - c) ** 2, 1))

    cents, _ = jax.lax.fori_loop(1, k, body, (cents, d2))
    return cents


def _lloyd(x, cents, num_iters):
    k = cents.shape[0]

    def body(_, cents):
        labels = jnp.argmin(_sq_dists(x, cents), 1)
        sums = jax.ops.segment_sum(x, labels, k)
        counts = jax.ops.segment_sum(jnp.ones(x.shape[0], x.dtype), labels, k)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], cents)

    cents = jax.lax.fori_loop(0, num_iters, body, cents)
    d = _sq_dists(x, cents)
    labels = jnp.argmin(d, 1)
    return KMeans(cents, labels.astype(jnp.int32), jnp.sum(jnp.min(d, 1)))


def kmeans(key: PRNGKeyArray, x: Float[Array, "n d"], k: int, *, num_iters: int = 100,
           num_init: int = 4) -> KMeans:
    """Lloyd's k-means with k-means++ seeding; the best of ``num_init`` restarts (lowest inertia).

    Jittable (``k``, ``num_iters``, ``num_init`` static); restarts run vmapped. Empty clusters
    keep their previous centroid. ``x`` is ``[n, d]`` (flatten images first).
    """
    x = _checks.as_array("x", x, ndim=2)
    _checks.check_positive_int("k", k)
    _checks.check_positive_int("num_iters", num_iters)
    _checks.check_positive_int("num_init", num_init)
    if k > x.shape[0]:
        raise ValueError(f"k: expected at most the number of points {x.shape[0]}, got {k}")
    return _kmeans_jit(key, x, k, num_iters, num_init)


@jax.jit
def _kmeans_assign(x, cents):
    return jnp.argmin(_sq_dists(x, cents), 1).astype(jnp.int32)


def kmeans_assign(x: Float[Array, "n d"], centroids: Float[Array, "k d"]) -> Int[Array, " n"]:
    """Index of the nearest centroid for every row of ``x``."""
    return _kmeans_assign(jnp.asarray(x), jnp.asarray(centroids))



@partial(jax.jit, static_argnums=(2, 3, 4))
def _kmeans_jit(key, x, k, num_iters, num_init):
    def one(kk):
        return _lloyd(x, kmeans_plusplus(kk, x, k), num_iters)

    res = jax.vmap(one)(jax.random.split(key, num_init))
    best = jnp.argmin(res.inertia)
    return jax.tree_util.tree_map(lambda a: a[best], res)
