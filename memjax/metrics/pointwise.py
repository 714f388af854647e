r"""Pointwise memorization (paper 001 Definition 1, eqs. 1-2), estimated with the model's own
likelihood.

.. math::
    \mathcal M_{point}(\mathcal D; \theta) = \sum_{i=1}^N \int p_\theta(x)
        \log\frac{p_\theta(x)}{q(x, x_i, \epsilon)}\, dx
    = \sum_i \mathrm{KL}\big(p_\theta \,\|\, \mathcal N(x_i, \epsilon I)\big),
    \qquad q(x, x_i, \epsilon) = (2\pi\epsilon)^{-d/2} e^{-\|x - x_i\|^2 / (2\epsilon)}.

Smaller means more memorization. With samples ``x_s ~ p_theta`` (s = 1..S) each term is a
Monte Carlo average,

.. math::
    \widehat{\mathrm{KL}}_i = \frac1S \sum_s \log p_\theta(x_s)
        + \frac d2 \log(2\pi\epsilon) + \frac{v + \|\bar x - x_i\|^2}{2\epsilon},

where ``\bar x`` and ``v = (1/S) \sum_s \|x_s - \bar x\|^2`` are the sample mean and spread (the
quadratic term's average is exact in this centred form, so no ``S x N`` distances are formed)
and ``\log p_\theta(x_s)`` comes from :func:`memjax.flow.log_likelihood` (instantaneous change of
variables along the probability-flow ODE).

Assumptions (state them when reporting numbers):

1. *The samples follow the density that is evaluated.* ``log_likelihood`` gives the density of
   the probability-flow ODE's pushforward of ``N(0, I)`` at ``t_max`` down to ``t_min``. Samples
   drawn with that ODE (``memjax.flow.decode`` of prior noise) follow it exactly; samples from a
   reverse-SDE or DDIM sampler follow a nearby but different density, which biases the estimate.
2. *``p_theta`` is the density at ``t_min``* (not ``t = 0``), and ``N(0, I)`` stands in for
   ``p_{t_max}`` (see ``log_likelihood``). ``epsilon`` should be compared with the smallest
   noise variance ``sigma(t_min)^2`` of the model: below it the quadratic term dominates.
3. *Monte Carlo error* ``O(1/sqrt(S))``: ``stderr`` reports it for each term and for the sum.
   ``log p`` is the same in every term, so the per-image ranking only depends on
   ``||x_bar - x_i||^2``; the log-likelihood fixes the level (``-H(p_theta)``).
4. Everything is in nats, over ``d = prod(image shape)`` dimensions, with images in the model's
   units (``[-1, 1]``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from memjax import _checks, parallel

__all__ = ["PointwiseMemorization", "pointwise_memorization", "pointwise_from_log_prob"]


class PointwiseMemorization(NamedTuple):
    """``total`` (eq. 1), ``per_point [N]`` (the KL of each training image), their Monte Carlo
    standard errors ``total_stderr`` and ``per_point_stderr [N]``, and ``log_prob [S]``, the
    model log-density of each sample."""
    total: Float[Array, ""]
    per_point: Float[Array, " n"]
    total_stderr: Float[Array, ""]
    per_point_stderr: Float[Array, " n"]
    log_prob: Float[Array, " s"]


@jax.jit
def _estimate(samples, train, log_prob, epsilon):
    s, d = samples.shape
    n = train.shape[0]
    xbar = jnp.mean(samples, axis=0)
    dev = samples - xbar
    sq = jnp.sum(dev * dev, axis=1)                       # ||x_s - xbar||^2
    v = jnp.mean(sq)
    dist2 = jnp.sum(jnp.square(train - xbar), axis=1)     # ||xbar - x_i||^2
    const = 0.5 * d * jnp.log(2.0 * jnp.pi * epsilon)
    mean_lp = jnp.mean(log_prob)
    per_point = mean_lp + const + (v + dist2) / (2.0 * epsilon)
    # per-sample terms: g_is = lp_s + ||x_s - x_i||^2 / (2 eps) (+ const); its variance over s:
    # ||x_s - x_i||^2 = sq_s + 2 dev_s.(xbar - x_i) + dist2_i, so with a_s = lp_s + sq_s / (2 eps)
    # and b_s = dev_s / eps: Var_s(g_is) = Var(a) + 2 Cov(a, b).(xbar - x_i) + (xbar - x_i)^T
    # Cov(b) (xbar - x_i), computed without the S x N matrix.
    a = log_prob + sq / (2.0 * epsilon)
    ac = a - jnp.mean(a)
    b = dev / epsilon
    cov_ab = ac @ b / (s - 1)                              # [d]
    var_a = jnp.sum(ac * ac) / (s - 1)
    diff = xbar[None, :] - train                           # [n, d]
    bd = b @ diff.T                                        # [s, n]
    var_i = var_a + 2.0 * diff @ cov_ab + jnp.sum(bd * bd, axis=0) / (s - 1)
    per_point_stderr = jnp.sqrt(jnp.maximum(var_i, 0.0) / s)
    # total: sum_i g_is = n lp_s + (n sq_s + 2 dev_s.sum_i(xbar - x_i) + sum_i dist2_i) / (2 eps)
    g = n * log_prob + (n * sq + 2.0 * dev @ jnp.sum(diff, axis=0)) / (2.0 * epsilon)
    total_stderr = jnp.std(g, ddof=1) / jnp.sqrt(s)
    return PointwiseMemorization(total=jnp.sum(per_point), per_point=per_point,
                                 total_stderr=total_stderr, per_point_stderr=per_point_stderr,
                                 log_prob=log_prob)


def _check_samples_train(samples, train):
    """``samples`` [S >= 2, ...] and ``train`` [N, ...] with the same example shape."""
    x = _checks.as_array("samples", samples, min_ndim=2)
    t = _checks.as_array("train", train, min_ndim=2)
    if x.shape[1:] != t.shape[1:]:
        raise ValueError(f"train: expected examples of shape {x.shape[1:]} (as samples), got "
                         f"{t.shape[1:]}")
    if x.shape[0] < 2:
        raise ValueError(f"samples: expected at least 2 samples, got {x.shape[0]}")
    return x, t


def pointwise_from_log_prob(samples: Float[Array, "s ..."], train: Float[Array, "n ..."],
                            log_prob: Float[Array, " s"], *, epsilon: float
                            ) -> PointwiseMemorization:
    """The estimator given the model log-densities of the samples (any density model)."""
    _checks.check_positive("epsilon", epsilon)
    x, t = _check_samples_train(samples, train)
    lp = _checks.as_array("log_prob", log_prob, ndim=1)
    if lp.shape[0] != x.shape[0]:
        raise ValueError(f"log_prob: expected {x.shape[0]} values (one per sample), got "
                         f"{lp.shape[0]}")
    dtype = jnp.promote_types(jnp.promote_types(x.dtype, t.dtype), jnp.float32)
    return _estimate(x.reshape(x.shape[0], -1).astype(dtype),
                     t.reshape(t.shape[0], -1).astype(dtype), lp.astype(dtype),
                     jnp.asarray(epsilon, dtype))


def pointwise_memorization(score_fn: Callable, sde: Any, samples: Float[Array, "s ..."],
                           train: Float[Array, "n ..."], *, epsilon: float,
                           batch_size: int = 64, progress: bool = False,
                           **likelihood_kwargs) -> PointwiseMemorization:
    r"""Paper 001's pointwise memorization ``M_point`` of ``train`` under the model ``score_fn``.

    Args:
      score_fn: the model's one-example score ``score_fn(x, t)``.
      sde: its :class:`memjax.VPSDE`.
      samples: ``[S, ...]`` draws from the model (see assumption 1 in the module docstring).
      train: ``[N, ...]`` training images.
      epsilon: variance of the Gaussian ``q`` around each training image (eq. 2).
      batch_size: samples per likelihood batch (vmapped, sharded over devices).
      likelihood_kwargs: passed to :func:`memjax.flow.log_likelihood` (``divergence``,
        ``key``, ``solver``, ``rtol``, ...). With ``divergence="hutchinson"`` one key is shared
        by all samples.

    Returns:
      :class:`PointwiseMemorization`.
    """
    from memjax import flow

    _checks.check_positive("epsilon", epsilon)
    _checks.check_positive_int("batch_size", batch_size)
    x, t = _check_samples_train(samples, train)
    # validate the likelihood options once, on the first sample, before the batched solve
    flow._check_common(score_fn, sde, x[0], "samples")
    fn = lambda xi: flow.log_likelihood(score_fn, sde, xi, return_solution=True,
                                        **likelihood_kwargs)
    res = parallel.batched_map(fn, np.asarray(x), batch_size=batch_size, progress=progress,
                               desc="log-likelihood")
    if not np.all(res.success):
        import warnings

        warnings.warn(f"pointwise_memorization: {int((~res.success).sum())} likelihood solves "
                      f"failed; their log-densities are unreliable", RuntimeWarning, stacklevel=2)
    return pointwise_from_log_prob(x, t, jnp.asarray(res.log_prob), epsilon=epsilon)
