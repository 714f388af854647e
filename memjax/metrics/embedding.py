r"""t-SNE in JAX (van der Maaten & Hinton 2008): exact and jitted end to end, or FFT-accelerated.

Paper 003 (section 3.5, eq. 18, appendix A Algorithm 1) embeds deep features of real and
generated images with t-SNE before drawing the boundary of the real points; this module is
that embedding. :func:`tsne` runs the exact method below (one ``jax.jit`` program, matching
scikit-learn's ``TSNE(method="exact")`` step for step) for fewer than :data:`FFT_FROM` points,
and from there on the FFT-accelerated method of :mod:`memjax.metrics.tsne_fft` (FIt-SNE /
openTSNE: same objective, optimiser and defaults; sparse affinities on the ``3 * perplexity``
nearest neighbours; repulsion by grid interpolation and FFT). ``method=`` forces either.

**Input affinities.** With squared Euclidean distances :math:`d_{ij} = \|x_i - x_j\|^2`,
each point gets a Gaussian bandwidth :math:`\beta_i = 1 / (2\sigma_i^2)` such that the
conditional distribution

.. math::  p_{j|i} = \frac{\exp(-\beta_i d_{ij})}{\sum_{k \ne i} \exp(-\beta_i d_{ik})}

has perplexity :math:`2^{H(P_i)}` (entropy in nats: :math:`H_i = \log \mathrm{perp}`).
:math:`\beta_i` is found by the bisection of van der Maaten's reference code (start at 1,
double / halve until bracketed, then bisect; at most 100 steps, entropy tolerance 1e-5),
vectorised over all rows at once. Row minima are subtracted from the distances before the
exponential: that leaves every :math:`p_{j|i}` unchanged and avoids the underflow that hits
scikit-learn for far-apart data. The joint distribution is symmetrised,
:math:`p_{ij} = (p_{j|i} + p_{i|j}) / 2n`, floored at float64's machine epsilon as in
scikit-learn.

**Output affinities and gradient.** With the Cauchy (Student-t, one degree of freedom)
kernel :math:`w_{ij} = (1 + \|y_i - y_j\|^2)^{-1}` and :math:`q_{ij} = w_{ij} / \sum_{k\ne l}
w_{kl}`, the objective is :math:`\mathrm{KL}(P\|Q) = \sum_{i\ne j} p_{ij}\log(p_{ij}/q_{ij})`
and its gradient is

.. math::  \frac{\partial\,\mathrm{KL}}{\partial y_i} = 4 \sum_j (p_{ij} - q_{ij})\, w_{ij}\,
           (y_i - y_j),

computed as ``4 * (rowsum(W) * y - W @ y)`` with ``W = (P - Q) * w``: :math:`O(n^2)` time
and memory per iteration, no :math:`[n, n, 2]` tensor.

**Optimiser** (scikit-learn's ``_gradient_descent``, van der Maaten's reference): gradient
descent with momentum and per-coordinate gains (``+0.2`` when the gradient changes sign
against the last update, ``x0.8`` otherwise, floored at 0.01); ``exaggeration_iters``
(250) iterations with :math:`P` multiplied by ``early_exaggeration`` (12) and momentum 0.5,
then the rest with momentum 0.8; updates and gains restart between the phases, as in
scikit-learn. The learning rate ``"auto"`` is :math:`\max(n / \mathrm{early\_exaggeration}
/ 4, 50)` (Belkina et al. 2019; scikit-learn's default). Initialisation ``"pca"`` projects the
centred data on its first principal axes (exact SVD, signs fixed as scikit-learn's
``svd_flip``) scaled so the first coordinate has standard deviation 1e-4; ``"random"`` draws
:math:`N(0, 10^{-8} I)`.

Differences from scikit-learn, on purpose: a fixed number of iterations (no early stop on a
small gradient or lack of progress; scikit-learn's checks rarely fire before 1000 on real
data), and the Cauchy kernel in every output dimension (scikit-learn uses
``dof = max(num_components - 1, 1)``, the same for the usual 2-D output).

Cost of the exact method: :math:`O(n^2 d)` once for the distances, :math:`O(n^2)` per
bisection step and per iteration; memory a few :math:`n \times n` arrays (n = 5,000: ~100 MB
each in float32). The FFT method costs about the same per iteration for every n below a few
thousand (its grid has at least 50 x 50 boxes), so the exact one wins for small n; the
switch-over :data:`FFT_FROM` = 2,000 is about where they cross on a 2-core CPU (n = 2,000: exact
34 s, FFT 21-42 s, loaded machine; benchmarks/results/tsne.md). On an accelerator the exact
method stays fast to larger n (pass ``method="exact"``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from memjax import _checks

__all__ = ["FFT_FROM", "METHODS", "tsne", "joint_probabilities", "kl_divergence",
           "learning_rate_auto"]

_MACHINE_EPSILON = float(np.finfo(np.float64).eps)   # scikit-learn's floor for P and Q
_PERPLEXITY_TOLERANCE = 1e-5                          # entropy tolerance (nats)
_BINARY_SEARCH_STEPS = 100
_MIN_GAIN = 0.01
INITS = ("pca", "random")
METHODS = ("auto", "exact", "fft")
FFT_FROM = 2000
"""``method="auto"`` runs the FFT method from this many points on (2-D output), else exact."""


# ----------------------------------------------------------------------------------------
# input affinities

def _squared_distances(x: Float[Array, "n d"]) -> Float[Array, "n n"]:
    """Pairwise squared Euclidean distances, matmul form on centred data, diagonal 0."""
    x = x - jnp.mean(x, axis=0)
    sq = jnp.sum(x * x, axis=1)
    gram = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    return jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, d2)


def _conditional_probabilities(d2: Float[Array, "n n"], perplexity) -> Float[Array, "n n"]:
    """Row-stochastic :math:`p_{j|i}` with each row's perplexity matched by bisection."""
    return calibrated_rows(d2, ~jnp.eye(d2.shape[0], dtype=bool), perplexity)


def calibrated_rows(d: Float[Array, "n k"], valid: Bool[Array, "n k"],
                    perplexity) -> Float[Array, "n k"]:
    r"""Row-stochastic :math:`p_{j|i} \propto \exp(-\beta_i d_{ij})` over the ``valid`` entries
    of each row of squared distances ``d``, each :math:`\beta_i` bisected to the perplexity
    (all ``n`` off-diagonal entries for the exact method, the ``k`` nearest for the FFT one)."""
    n = d.shape[0]
    dtype = d.dtype
    # Shifting each row by its smallest valid distance leaves p_{j|i} and the bisection path
    # unchanged (entropy is shift invariant) and keeps exp() from underflowing.
    d = jnp.where(valid, d, jnp.inf)
    d = jnp.where(valid, d - jnp.min(d, axis=1, keepdims=True), 0.0)
    target = jnp.log(jnp.asarray(perplexity, dtype))

    def probs(beta):
        w = jnp.where(valid, jnp.exp(-d * beta[:, None]), 0.0)
        s = jnp.sum(w, axis=1)                     # >= 1: the nearest neighbour has weight 1
        p = w / s[:, None]
        entropy = jnp.log(s) + beta * jnp.sum(d * p, axis=1)
        return p, entropy

    def cond(state):
        step, _, _, _, done, _ = state
        return (step < _BINARY_SEARCH_STEPS) & ~jnp.all(done)

    def body(state):
        step, beta, lo, hi, done, _ = state
        p, entropy = probs(beta)
        diff = entropy - target
        done = done | (jnp.abs(diff) <= _PERPLEXITY_TOLERANCE)
        too_flat = diff > 0                         # entropy too high: sharpen (raise beta)
        new_lo = jnp.where(too_flat, beta, lo)
        new_hi = jnp.where(too_flat, hi, beta)
        up = jnp.where(jnp.isinf(new_hi), beta * 2.0, (beta + new_hi) / 2.0)
        down = jnp.where(jnp.isinf(new_lo), beta / 2.0, (beta + new_lo) / 2.0)
        new_beta = jnp.where(too_flat, up, down)
        return (step + 1, jnp.where(done, beta, new_beta), jnp.where(done, lo, new_lo),
                jnp.where(done, hi, new_hi), done, p)

    # p is carried so that it leaves the loop as one materialised buffer: the probabilities of
    # the last evaluated beta, as in scikit-learn (a fused recomputation could round p_{j|i}
    # differently where p + p.T reads it transposed, and P would not be exactly symmetric).
    ones = jnp.ones((n,), dtype)
    state = (jnp.asarray(0), ones, -jnp.inf * ones, jnp.inf * ones, jnp.zeros((n,), bool),
             jnp.zeros_like(d))
    return jax.lax.while_loop(cond, body, state)[-1]


def _joint_probabilities(x: Float[Array, "n d"], perplexity) -> Float[Array, "n n"]:
    p = _conditional_probabilities(_squared_distances(x), perplexity)
    p = p + p.T
    p = p / jnp.maximum(jnp.sum(p), _MACHINE_EPSILON)
    off = ~jnp.eye(p.shape[0], dtype=bool)
    return jnp.where(off, jnp.maximum(p, _MACHINE_EPSILON), 0.0)


def joint_probabilities(x: Float[Array, "n d"], perplexity: float = 30.0) -> Float[Array, "n n"]:
    r"""The symmetric input affinities :math:`p_{ij} = (p_{j|i} + p_{i|j}) / 2n` (zero diagonal).

    Each conditional row :math:`p_{\cdot|i}` has perplexity ``perplexity`` (see the module
    docstring). Equals scikit-learn's ``_joint_probabilities`` in square form.
    """
    x = _check_x(x)
    _check_perplexity(perplexity, x.shape[0])
    return jax.jit(_joint_probabilities)(x, perplexity)


# ----------------------------------------------------------------------------------------
# objective and gradient

def _embedding_kernel(y: Float[Array, "n c"]) -> Float[Array, "n n"]:
    """Cauchy weights :math:`(1 + \\|y_i - y_j\\|^2)^{-1}`, zero diagonal (exact differences)."""
    d2 = sum((y[:, c, None] - y[None, :, c]) ** 2 for c in range(y.shape[1]))
    w = 1.0 / (1.0 + d2)
    return jnp.where(jnp.eye(y.shape[0], dtype=bool), 0.0, w)


def kl_divergence(p: Float[Array, "n n"], y: Float[Array, "n c"]) -> Float[Array, ""]:
    r""":math:`\mathrm{KL}(P \| Q(Y)) = \sum_{i \ne j} p_{ij} \log(p_{ij} / q_{ij})`, Cauchy
    kernel (``p`` from :func:`joint_probabilities`, ``y`` the embedding)."""
    w = _embedding_kernel(y)
    q = jnp.maximum(w / jnp.sum(w), _MACHINE_EPSILON)
    off = ~jnp.eye(p.shape[0], dtype=bool)
    terms = p * (jnp.log(jnp.maximum(p, _MACHINE_EPSILON)) - jnp.log(q))
    return jnp.sum(jnp.where(off, terms, 0.0))


def _kl_gradient(p: Float[Array, "n n"], y: Float[Array, "n c"]) -> Float[Array, "n c"]:
    r""":math:`4 \sum_j (p_{ij} - q_{ij}) w_{ij} (y_i - y_j)` as ``4 (rowsum(W) y - W y)``."""
    w = _embedding_kernel(y)
    q = jnp.maximum(w / jnp.sum(w), _MACHINE_EPSILON)
    pq = (p - q) * w                                   # diagonal is 0 because w_ii = 0
    wy = jnp.matmul(pq, y, precision=jax.lax.Precision.HIGHEST)
    return 4.0 * (jnp.sum(pq, axis=1)[:, None] * y - wy)


# ----------------------------------------------------------------------------------------
# optimisation

def gd_steps(grad_fn, state, num_iters, momentum, learning_rate):
    """``num_iters`` steps of gradient descent with momentum and gains (scikit-learn's) from
    ``state = (y, update, gains, aux)``; ``grad_fn(y, aux) -> (grad, aux)`` may carry a cache
    from step to step in ``aux``; ``num_iters`` may be traced."""

    def step(_, carry):
        y, update, gains, aux = carry
        grad, aux = grad_fn(y, aux)
        inc = update * grad < 0.0
        gains = jnp.maximum(jnp.where(inc, gains + 0.2, gains * 0.8), _MIN_GAIN)
        update = momentum * update - learning_rate * (gains * grad)
        return y + update, update, gains, aux

    return jax.lax.fori_loop(0, num_iters, step, state)


def _descend(p, y, num_iters: int, momentum, learning_rate):
    """A fresh optimisation phase (zero update, unit gains) on the exact gradient."""
    init = (y, jnp.zeros_like(y), jnp.ones_like(y), ())
    return gd_steps(lambda y, aux: (_kl_gradient(p, y), aux), init, num_iters, momentum,
                    learning_rate)[0]


def _pca_init(x: Float[Array, "n d"], num_components: int) -> Float[Array, "n c"]:
    xc = x - jnp.mean(x, axis=0)
    _, _, vt = jnp.linalg.svd(xc, full_matrices=False)
    vt = vt[:num_components]
    # scikit-learn's svd_flip(u_based_decision=False): largest |entry| of each axis positive.
    sign = jnp.sign(vt[jnp.arange(num_components), jnp.argmax(jnp.abs(vt), axis=1)])
    y = jnp.matmul(xc, (vt * sign[:, None]).T, precision=jax.lax.Precision.HIGHEST)
    return y / jnp.std(y[:, 0]) * 1e-4


def _tsne(x, y0, perplexity, early_exaggeration, learning_rate, *, num_iters: int,
          exaggeration_iters: int):
    p = _joint_probabilities(x, perplexity)
    y = _descend(p * early_exaggeration, y0, exaggeration_iters, 0.5, learning_rate)
    if num_iters > exaggeration_iters:
        y = _descend(p, y, num_iters - exaggeration_iters, 0.8, learning_rate)
    return y


def _initial(x, key, *, init: str, num_components: int):
    if init == "pca":
        return _pca_init(x, num_components)
    return 1e-4 * jax.random.normal(key, (x.shape[0], num_components), x.dtype)


_initial_jit = jax.jit(_initial, static_argnames=("init", "num_components"))


def _tsne_from_init(x, key, perplexity, early_exaggeration, learning_rate, *, init: str,
                    num_components: int, num_iters: int, exaggeration_iters: int):
    y0 = _initial(x, key, init=init, num_components=num_components)
    return _tsne(x, y0, perplexity, early_exaggeration, learning_rate, num_iters=num_iters,
                 exaggeration_iters=exaggeration_iters)


_tsne_jit = jax.jit(_tsne_from_init, static_argnames=("init", "num_components", "num_iters",
                                                       "exaggeration_iters"))
_tsne_given_init_jit = jax.jit(_tsne, static_argnames=("num_iters", "exaggeration_iters"))


def learning_rate_auto(n: int, early_exaggeration: float = 12.0) -> float:
    """scikit-learn's ``learning_rate="auto"``: ``max(n / early_exaggeration / 4, 50)``."""
    return max(n / early_exaggeration / 4.0, 50.0)


def tsne(x: Float[Array, "n d"], *, perplexity: float = 30.0, num_iters: int = 1000,
         key: PRNGKeyArray | None = None, early_exaggeration: float = 12.0,
         learning_rate: float | str = "auto", init: str | Any = "pca",
         num_components: int = 2, exaggeration_iters: int = 250,
         method: str = "auto") -> Float[Array, "n c"]:
    r"""t-SNE embedding of the rows of ``x``: exact, or FFT-accelerated for large ``n``.

    Both methods minimise the same objective with the same optimiser and defaults (those of
    van der Maaten & Hinton 2008 and Linderman et al. 2019: perplexity 30, 1000 iterations,
    exaggeration 12 for the first 250, learning rate ``"auto"``); see the module docstring
    for the exact method and :mod:`memjax.metrics.tsne_fft` for the approximate one.

    Args:
      x: ``[n, d]`` features (any real dtype; computed in ``x``'s floating dtype).
      perplexity: target perplexity of every conditional :math:`p_{\cdot|i}`, in ``(0, n)``.
      num_iters: total gradient-descent iterations (scikit-learn's ``max_iter``), >= 1.
      key: PRNG key; needed only for ``init="random"``.
      early_exaggeration: factor on :math:`P` during the first ``exaggeration_iters``.
      learning_rate: a positive number or ``"auto"`` (:func:`learning_rate_auto`).
      init: ``"pca"`` (default, deterministic), ``"random"``, or an ``[n, num_components]``
        array of starting positions.
      num_components: output dimension (2 for the paper's plots and hulls; the FFT method
        is 2-D only).
      exaggeration_iters: length of the early-exaggeration phase (at most ``num_iters`` are
        run; scikit-learn always runs 250).
      method: ``"exact"`` (:math:`O(n^2)` per iteration, one jitted XLA program, matches
        scikit-learn's ``method="exact"``), ``"fft"`` (:math:`O(n)` per iteration: sparse
        affinities on the ``3 * perplexity`` exact nearest neighbours and FFT-interpolated
        repulsion, as openTSNE / FIt-SNE; jitted in segments of 50 iterations) or ``"auto"``:
        ``"fft"`` from :data:`FFT_FROM` points on when ``num_components == 2``, else
        ``"exact"``.

    Returns:
      ``[n, num_components]`` embedding.
    """
    x = _check_x(x)
    n, d = x.shape
    learning_rate, exaggeration_iters = _check_options(
        n, perplexity, num_iters, early_exaggeration, learning_rate, num_components,
        exaggeration_iters)
    _checks.check_choice("method", method, METHODS)
    if method == "auto":
        method = "fft" if n >= FFT_FROM and num_components == 2 else "exact"
    if method == "fft" and num_components != 2:
        raise ValueError(f"num_components: expected 2 for method='fft', got {num_components}")
    dtype = x.dtype
    if isinstance(init, str):
        _checks.check_choice("init", init, INITS)
        if init == "pca" and num_components > min(n, d):
            raise ValueError(f"num_components: expected at most min(n, d) = {min(n, d)} for "
                             f"init='pca', got {num_components}")
        if init == "random":
            if key is None:
                raise ValueError("key: expected a PRNG key for init='random', got None")
        else:
            key = jax.random.key(0)       # unused by the PCA branch; keeps one signature
        y0 = None
    else:
        y0 = _checks.as_array("init", init, ndim=2).astype(dtype)
        if y0.shape != (n, num_components):
            raise ValueError(f"init: expected an array of shape (n, num_components) = "
                             f"{(n, num_components)}, got {y0.shape}")
    if method == "fft":
        from memjax.metrics.tsne_fft import tsne_fft

        if y0 is None:
            y0 = _initial_jit(x, key, init=init, num_components=num_components)
        return tsne_fft(x, y0, perplexity=perplexity, early_exaggeration=early_exaggeration,
                        learning_rate=learning_rate, num_iters=num_iters,
                        exaggeration_iters=exaggeration_iters)
    scalars = (jnp.asarray(perplexity, dtype), jnp.asarray(early_exaggeration, dtype),
               jnp.asarray(learning_rate, dtype))
    if y0 is None:
        return _tsne_jit(x, key, *scalars, init=init, num_components=num_components,
                         num_iters=num_iters, exaggeration_iters=exaggeration_iters)
    return _tsne_given_init_jit(x, y0, *scalars, num_iters=num_iters,
                                exaggeration_iters=exaggeration_iters)


def _check_options(n, perplexity, num_iters, early_exaggeration, learning_rate,
                   num_components, exaggeration_iters) -> tuple[float, int]:
    """Checks the scalar options; returns the learning rate and the exaggeration length."""
    _check_perplexity(perplexity, n)
    _checks.check_positive_int("num_iters", num_iters)
    _checks.check_positive_int("num_components", num_components)
    if (isinstance(exaggeration_iters, bool)
            or not isinstance(exaggeration_iters, (int, np.integer)) or exaggeration_iters < 0):
        raise ValueError(f"exaggeration_iters: expected a non-negative integer, got "
                         f"{exaggeration_iters!r}")
    _checks.check_positive("early_exaggeration", early_exaggeration)
    if isinstance(learning_rate, str):
        _checks.check_choice("learning_rate", learning_rate, ("auto",))
        learning_rate = learning_rate_auto(n, early_exaggeration)
    else:
        _checks.check_positive("learning_rate", learning_rate)
    return float(learning_rate), min(int(exaggeration_iters), num_iters)


# ----------------------------------------------------------------------------------------
# checks

def _check_x(x) -> jax.Array:
    x = _checks.as_array("x", x, ndim=2)
    if x.shape[0] < 2:
        raise ValueError(f"x: expected at least 2 rows, got shape {x.shape}")
    if x.shape[1] < 1:
        raise ValueError(f"x: expected at least 1 feature, got shape {x.shape}")
    return x


def _check_perplexity(perplexity, n: int) -> None:
    _checks.check_positive("perplexity", perplexity)
    if perplexity >= n:
        raise ValueError(f"perplexity: expected a value below the number of points n = {n}, "
                         f"got {perplexity!r}")
