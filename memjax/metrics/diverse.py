r"""Diverse samples: generated points outside the support of the real ones (paper 003).

Paper 003 (section 3.5, eq. 18) calls a generated image *diverse* when its deep features fall
outside the boundary of the real images' features:

.. math::  I_{DS} = \{ I_{gen,i} \mid \text{t-SNE}(f_d(I_{gen,i})) \notin B_{train} \},

where :math:`B_{train}` is the convex hull (Quickhull, appendix A Algorithm 2) of the t-SNE
embedding of the real features. Two ways to compute it are offered.

``method="tsne_hull"`` (:func:`tsne_hull`) is the paper as its public code runs it: **one**
t-SNE of the concatenation ``[real; generated]`` (``joint=True``), the convex hull of the real
points' embedding, and a strict containment test, so a generated point exactly on the
boundary counts as diverse. ``joint=False`` embeds the two sets separately, as appendix A's
Algorithm 1 reads; the two embeddings then live in unrelated coordinate systems (t-SNE is
defined up to rotation, reflection and translation, and its scale depends on n), so the count
it gives says little and is offered only to reproduce that reading. Caveats of the method
itself: t-SNE preserves neighbourhoods, not support, and a convex hull fills the gaps between
clusters, so generated points between real clusters, or a compact group of novel points
that t-SNE places in such a gap, are not found.

``method="knn_support"`` (:func:`knn_support`) works in feature space, with no projection.
The support of the real features :math:`\{r_i\}_{i=1}^n` is estimated by the union of
k-nearest-neighbour balls (the manifold estimate of Kynkäänniemi et al. 2019, "Improved
precision and recall"):

.. math::  S_k = \bigcup_i \bar B(r_i, \rho_k(r_i)), \qquad
           \rho_k(r_i) = \| r_i - \mathrm{NN}_k(r_i) \|,

with :math:`\mathrm{NN}_k(r_i)` the k-th nearest *other* real point (duplicates count as
other points). A generated point :math:`g` is diverse when :math:`g \notin S_k`, i.e.

.. math::  \| g - r_i \| > \rho_k(r_i) \quad \text{for every } i
           \iff s(g) = \min_i \| g - r_i \| / \rho_k(r_i) > 1.

The balls are closed (a point on a sphere is inside), as in Kynkäänniemi et al.; the
fraction of non-diverse generated points is exactly their per-sample "precision". The score
:math:`s(g)` ranks the diverse samples by how far out they are. ``k`` trades false positives
(small k: holes between real points) against sensitivity (large k: balls swell in sparse
regions); k = 3 to 5 is usual. Exact: :math:`O((n + m)\, n\, d)` time, memory
:math:`O(\text{block\_size} \cdot n)`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from memjax import _checks
from memjax.metrics.hull import Hull, _convex_hull, _in_hull
from memjax.metrics.embedding import tsne

__all__ = ["METHODS", "TsneHull", "KnnSupport", "diverse_samples", "tsne_hull", "knn_support"]

METHODS = ("tsne_hull", "knn_support")


class TsneHull(NamedTuple):
    """Result of :func:`tsne_hull` (a pytree)."""

    diverse: Bool[Array, " m"]                     # generated point outside the real hull
    real_embedding: Float[Array, "n 2"]
    generated_embedding: Float[Array, "m 2"]
    hull: Hull                                      # hull of ``real_embedding``


class KnnSupport(NamedTuple):
    """Result of :func:`knn_support` (a pytree)."""

    diverse: Bool[Array, " m"]                     # outside every real k-NN ball
    score: Float[Array, " m"]                      # min_i ||g - r_i|| / rho_k(r_i); > 1 iff diverse
    radii: Float[Array, " n"]                      # rho_k(r_i)


# ----------------------------------------------------------------------------------------
# checks

def _check_sets(real, generated):
    real = _checks.as_array("real_features", real, min_ndim=2)
    generated = _checks.as_array("generated_features", generated, min_ndim=2)
    _checks.check_same_trailing_shape("generated_features", generated, real.shape[1:],
                                      "real_features' features")
    if real.shape[0] < 1 or generated.shape[0] < 1:
        raise ValueError(f"real_features / generated_features: expected at least one row each, "
                         f"got shapes {real.shape} and {generated.shape}")
    dtype = jnp.result_type(real.dtype, generated.dtype)
    return (real.reshape(real.shape[0], -1).astype(dtype),
            generated.reshape(generated.shape[0], -1).astype(dtype))


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected a bool, got {value!r}")


# ----------------------------------------------------------------------------------------
# t-SNE + convex hull (the paper)

def tsne_hull(real_features: Float[Array, "n ..."], generated_features: Float[Array, "m ..."], *,
              key: PRNGKeyArray | None = None, joint: bool = True, perplexity: float = 30.0,
              num_iters: int = 1000, strict: bool = True,
              embed_fn: Callable[[Array], Array] | None = None,
              **tsne_options: Any) -> TsneHull:
    """Paper 003's diverse samples: t-SNE, convex hull of the real points, containment.

    Args:
      real_features: ``[n, ...]`` features of the real (training) images (flattened).
      generated_features: ``[m, ...]`` features of the generated images, same trailing shape.
      key: PRNG key, needed only with ``init="random"`` in ``tsne_options``.
      joint: True (the public code): one t-SNE of ``[real; generated]``. False (Algorithm 1
        as written): separate embeddings of the two sets.
      perplexity, num_iters, **tsne_options: passed to :func:`memjax.metrics.embedding.tsne`.
      strict: boundary points count as outside (diverse), as in the public code.
      embed_fn: optional replacement for memjax's exact t-SNE, ``[N, d] -> [N, 2]``, e.g.
        ``lambda x: sklearn.manifold.TSNE().fit_transform(np.asarray(x))`` for the public
        code's own embedding (scikit-learn's Barnes-Hut t-SNE), or openTSNE for tens of
        thousands of points (the exact t-SNE needs a few ``(n + m)^2`` arrays). Called
        outside ``jit``.

    Returns:
      :class:`TsneHull` with the ``[m]`` diverse mask, both embeddings and the real hull.
    """
    real, gen = _check_sets(real_features, generated_features)
    _check_bool("joint", joint)
    _check_bool("strict", strict)
    n, m = real.shape[0], gen.shape[0]
    if "num_components" in tsne_options and tsne_options["num_components"] != 2:
        raise ValueError(f"num_components: expected 2 for a planar hull, got "
                         f"{tsne_options['num_components']!r}")
    tsne_options = dict(tsne_options, num_components=2)
    if embed_fn is not None:
        if not callable(embed_fn):
            raise ValueError(f"embed_fn: expected a callable [N, d] -> [N, 2], got {embed_fn!r}")
        if len(tsne_options) > 1:
            raise ValueError(f"tsne_options: not used with embed_fn, got {sorted(tsne_options)}")

        def embed(x, _):
            y = _checks.as_array("embed_fn output", embed_fn(x), ndim=2)
            if y.shape != (x.shape[0], 2):
                raise ValueError(f"embed_fn: expected an output of shape {(x.shape[0], 2)}, "
                                 f"got {y.shape}")
            return y
    else:
        def embed(x, k):
            return tsne(x, perplexity=perplexity, num_iters=num_iters, key=k, **tsne_options)

    if joint:
        emb = embed(jnp.concatenate([real, gen]), key)
        emb_real, emb_gen = emb[:n], emb[n:]
    else:
        if embed_fn is None:
            for name, size in (("real_features", n), ("generated_features", m)):
                if not perplexity < size:
                    raise ValueError(f"{name}: with joint=False each set is embedded alone and "
                                     f"needs more than perplexity = {perplexity!r} rows, got "
                                     f"{size}")
        k_real, k_gen = (None, None) if key is None else jax.random.split(key)
        emb_real, emb_gen = embed(real, k_real), embed(gen, k_gen)
    hull = _convex_hull(emb_real)
    diverse = ~_in_hull(emb_gen, hull, bool(strict))
    return TsneHull(diverse=diverse, real_embedding=emb_real, generated_embedding=emb_gen,
                    hull=hull)


# ----------------------------------------------------------------------------------------
# k-NN support (feature space)

def _blocks(x, block_size):
    """``[n, d] -> ([nb, block_size, d], n)`` padded by repeating the last row."""
    n = x.shape[0]
    pad = (-n) % block_size
    xp = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x
    return xp.reshape(-1, block_size, x.shape[1]), n


def _sq_dist(q, r, r_sq):
    """Squared distances ``[b, n]`` in matmul form, clamped at 0."""
    g = jnp.matmul(q, r.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(jnp.sum(q * q, axis=1)[:, None] + r_sq[None, :] - 2.0 * g, 0.0)


def _knn_support(real, gen, *, k: int, real_block: int, gen_block: int) -> KnnSupport:
    mean = jnp.mean(real, axis=0)                  # centring: fewer cancellation errors
    real, gen = real - mean, gen - mean
    n = real.shape[0]
    r_sq = jnp.sum(real * real, axis=1)

    # rho_k^2: k-th smallest squared distance from r_i to the other real points
    rb, _ = _blocks(real, real_block)
    ib = jnp.arange(rb.shape[0] * real_block).reshape(rb.shape[0], real_block)

    def radius_block(args):
        q, idx = args
        d2 = _sq_dist(q, real, r_sq)
        d2 = jnp.where(idx[:, None] == jnp.arange(n)[None, :], jnp.inf, d2)   # exclude self
        return -jax.lax.top_k(-d2, k)[0][:, k - 1]

    rho2 = jax.lax.map(radius_block, (rb, ib)).reshape(-1)[:n]

    gb, m = _blocks(gen, gen_block)

    def test_block(q):
        d2 = _sq_dist(q, real, r_sq)
        inside = jnp.any(d2 <= rho2[None, :], axis=1)
        ratio = jnp.where(rho2[None, :] > 0, d2 / jnp.where(rho2 > 0, rho2, 1.0)[None, :],
                          jnp.where(d2 > 0, jnp.inf, 0.0))
        return ~inside, jnp.sqrt(jnp.min(ratio, axis=1))

    diverse, score = jax.lax.map(test_block, gb)
    return KnnSupport(diverse=diverse.reshape(-1)[:m], score=score.reshape(-1)[:m],
                      radii=jnp.sqrt(rho2))


_knn_support_jit = jax.jit(_knn_support, static_argnames=("k", "real_block", "gen_block"))


def knn_support(real_features: Float[Array, "n ..."], generated_features: Float[Array, "m ..."],
                *, k: int = 5, block_size: int = 1024) -> KnnSupport:
    """Generated points outside the union of the real points' k-NN balls (feature space).

    Args:
      real_features: ``[n, ...]`` real features (flattened), n > k.
      generated_features: ``[m, ...]`` generated features, same trailing shape.
      k: the ball of real point i reaches its k-th nearest other real point.
      block_size: rows per block of the distance computation (memory ``block_size * n``).

    Returns:
      :class:`KnnSupport`: ``diverse`` ``[m]``, ``score`` ``[m]`` (> 1 exactly when diverse,
      up to rounding of the division), and the radii ``[n]``.
    """
    real, gen = _check_sets(real_features, generated_features)
    _checks.check_positive_int("k", k)
    _checks.check_positive_int("block_size", block_size)
    if real.shape[0] <= k:
        raise ValueError(f"k: expected fewer than the number of real points n = {real.shape[0]}, "
                         f"got {k}")
    return _knn_support_jit(real, gen, k=k, real_block=min(block_size, real.shape[0]),
                            gen_block=min(block_size, gen.shape[0]))


# ----------------------------------------------------------------------------------------
# the front door

def diverse_samples(real_features: Float[Array, "n ..."],
                    generated_features: Float[Array, "m ..."], *, method: str = "tsne_hull",
                    key: PRNGKeyArray | None = None, joint: bool = True, k: int = 5,
                    perplexity: float = 30.0, num_iters: int = 1000, strict: bool = True,
                    block_size: int = 1024, **tsne_options: Any) -> Bool[Array, " m"]:
    """Mask ``[m]`` of the generated samples that are diverse (paper 003, eq. 18).

    ``method="tsne_hull"``: :func:`tsne_hull` (uses ``key``, ``joint``, ``perplexity``,
    ``num_iters``, ``strict`` and ``tsne_options``). ``method="knn_support"``:
    :func:`knn_support` (uses ``k`` and ``block_size``). See the module docstring for the
    maths and the caveats of each.
    """
    _checks.check_choice("method", method, METHODS)
    if method == "tsne_hull":
        return tsne_hull(real_features, generated_features, key=key, joint=joint,
                         perplexity=perplexity, num_iters=num_iters, strict=strict,
                         **tsne_options).diverse
    if tsne_options:
        raise ValueError(f"tsne_options: only used by method='tsne_hull', got "
                         f"{sorted(tsne_options)}")
    return knn_support(real_features, generated_features, k=k, block_size=block_size).diverse
