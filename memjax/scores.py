r"""Score functions: ``score_fn(x, t) -> \nabla_x \log p_t(x)`` for one example.

Three families satisfy the one protocol every analysis in memjax consumes:

* :func:`empirical` -- the exact score of a finite training set pushed through the SDE
  (paper 000 eqs. 10-11; paper 002 section 2.2), a perfect memoriser;
* :func:`gaussian` -- the analytic score of Gaussian data ``N(mean, cov)``;
* :func:`from_model` -- a trained network predicting ``eps``, ``x0`` or the score.

Tweedie's formula (paper 002 eq. 2) links the parameterisations::

    E[x_0 | x_t] = (x_t + \sigma_t^2 s(x_t, t)) / \alpha_t,     s = -\epsilon / \sigma_t
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from memjax import _checks
from memjax.sde import VPSDE, ScoreFn

__all__ = ["empirical", "EmpiricalScore", "eps_to_score", "eps_to_x0", "from_model", "gaussian",
           "GaussianScore", "PARAMETERIZATIONS", "score_to_eps", "score_to_x0", "x0_to_eps",
           "x0_to_score"]

PARAMETERIZATIONS = ("eps", "x0", "score")


# -- Tweedie conversions (paper 002 eq. 2) -------------------------------------------------------
def eps_to_score(eps: Array, t: Array, sde: VPSDE) -> Array:
    r"""``s = -\epsilon / \sigma_t``."""
    return -eps / sde.sigma(t)


def score_to_eps(score: Array, t: Array, sde: VPSDE) -> Array:
    r"""``\epsilon = -\sigma_t s``."""
    return -sde.sigma(t) * score


def x0_to_score(x0: Array, x: Array, t: Array, sde: VPSDE) -> Array:
    r"""``s = (\alpha_t \hat x_0 - x_t) / \sigma_t^2``."""
    return (sde.alpha(t) * x0 - x) / sde.variance(t)


def score_to_x0(score: Array, x: Array, t: Array, sde: VPSDE) -> Array:
    r"""Tweedie: ``\hat x_0 = (x_t + \sigma_t^2 s) / \alpha_t``."""
    return (x + sde.variance(t) * score) / sde.alpha(t)


def eps_to_x0(eps: Array, x: Array, t: Array, sde: VPSDE) -> Array:
    r"""``\hat x_0 = (x_t - \sigma_t \epsilon) / \alpha_t``."""
    return (x - sde.sigma(t) * eps) / sde.alpha(t)


def x0_to_eps(x0: Array, x: Array, t: Array, sde: VPSDE) -> Array:
    r"""``\epsilon = (x_t - \alpha_t \hat x_0) / \sigma_t``."""
    return (x - sde.alpha(t) * x0) / sde.sigma(t)


# -- the exact score of a finite set ---------------------------------------------------------------
def _default_chunk(n: int, d: int) -> int:
    return int(max(1, min(n, 2**22 // max(d, 1))))


def _empirical_stats(train_chunks, mask_chunks, x, alpha, var):
    """Online log-sum-exp over chunks: returns (logsumexp of logits, weighted mean of y)."""
    xf = x.reshape(-1)

    def body(carry, inp):
        m_run, s_run, ybar = carry
        y, valid = inp
        d2 = jnp.sum((xf[None, :] - alpha * y) ** 2, axis=-1)
        logits = jnp.where(valid, -0.5 * d2 / var, -jnp.inf)
        m_new = jnp.maximum(m_run, jnp.max(logits))
        scale = jnp.exp(m_run - m_new)
        w = jnp.exp(logits - m_new)
        s_new = s_run * scale + jnp.sum(w)
        ybar_new = ybar * scale + w @ y
        return (m_new, s_new, ybar_new), None

    dtype = train_chunks.dtype
    init = (jnp.asarray(-jnp.inf, dtype), jnp.asarray(0.0, dtype), jnp.zeros_like(xf))
    (m_run, s_run, ybar), _ = jax.lax.scan(body, init, (train_chunks, mask_chunks))
    return m_run + jnp.log(s_run), ybar / s_run


class EmpiricalScore:
    r"""Exact score of the finite set ``{y_i}`` under the VP perturbation kernel (eq. 11).

    ``p_t(x) = (1/n) \sum_i N(x; \alpha_t y_i, \sigma_t^2 I)``, so with softmax weights
    ``w_i \propto \exp(-\|x - \alpha_t y_i\|^2 / 2\sigma_t^2)``::

        s(x, t) = (\alpha_t \sum_i w_i y_i - x) / \sigma_t^2

    Differences are formed directly (not by the ``|a|^2 - 2ab + |b|^2`` expansion) because
    near ``t_min`` the logits are scaled by ``1/\sigma^2 \approx 10^4`` and cancellation
    would shift the weights. The training set is scanned in chunks of ``chunk_size``
    images with an online log-sum-exp, so memory is ``O(chunk_size * D)`` per example.
    Instances are callables ``(x, t) -> score`` and also expose :meth:`log_prob` and
    :meth:`posterior_mean` (Tweedie's ``E[x_0 | x_t]``).
    """

    def __init__(self, train: Array, sde: VPSDE, chunk_size: int | None = None):
        train = _checks.as_array("train", train, min_ndim=1)
        if train.shape[0] < 1:
            raise ValueError("train: expected at least one training example, got an empty array")
        _checks.check_schedule("sde", sde)
        _checks.check_positive_int("chunk_size", chunk_size, allow_none=True)
        n = train.shape[0]
        self.example_shape = tuple(train.shape[1:])
        d = int(np.prod(self.example_shape)) if self.example_shape else 1
        chunk = _default_chunk(n, d) if chunk_size is None else min(chunk_size, n)
        num_chunks = -(-n // chunk)
        flat = train.reshape(n, d)
        pad = num_chunks * chunk - n
        flat = jnp.concatenate([flat, jnp.zeros((pad, d), flat.dtype)]) if pad else flat
        mask = jnp.arange(num_chunks * chunk) < n
        self.sde = sde
        self.num_train = n
        self.chunk_size = chunk
        self._chunks = flat.reshape(num_chunks, chunk, d)
        self._mask = mask.reshape(num_chunks, chunk)

    def _check(self, x):
        if tuple(np.shape(x)) != self.example_shape:
            raise ValueError(f"x: expected one example of shape {self.example_shape} (the shape of "
                             f"a training example), got {tuple(np.shape(x))}; vmap for batches")

    def _stats(self, x, t):
        self._check(x)
        self.sde.check_time("t", t)
        dtype = jnp.result_type(x, self._chunks)
        t = jnp.asarray(t, dtype)
        chunks = self._chunks.astype(dtype)
        return _empirical_stats(chunks, self._mask, x.astype(dtype), self.sde.alpha(t),
                                self.sde.variance(t))

    def posterior_mean(self, x: Array, t: Float[Array, ""]) -> Array:
        r"""``E[x_0 | x_t = x] = \sum_i w_i y_i`` (the optimal denoiser of paper 002 section 2.2)."""
        _, ybar = self._stats(x, t)
        return ybar.reshape(self.example_shape)

    def __call__(self, x: Array, t: Float[Array, ""]) -> Array:
        _, ybar = self._stats(x, t)
        t = jnp.asarray(t, ybar.dtype)
        alpha, var = self.sde.alpha(t), self.sde.variance(t)
        return ((alpha * ybar - x.reshape(-1)) / var).reshape(self.example_shape)

    def log_prob(self, x: Array, t: Float[Array, ""]) -> Float[Array, ""]:
        r"""``\log p_t(x)`` of the mixture, in nats (normalisation included)."""
        lse, ybar = self._stats(x, t)
        var = self.sde.variance(jnp.asarray(t, ybar.dtype))
        d = ybar.size
        return lse - jnp.log(self.num_train) - 0.5 * d * jnp.log(2 * jnp.pi * var)


def empirical(train: Float[Array, "n *shape"], sde: VPSDE, chunk_size: int | None = None
              ) -> EmpiricalScore:
    """The exact score of the finite training set ``train`` (paper 000 eq. 11). See :class:`EmpiricalScore`."""
    return EmpiricalScore(train, sde, chunk_size)


# -- Gaussian data ---------------------------------------------------------------------------------
class GaussianScore:
    r"""Analytic score of data ``x_0 \sim N(\mu, \Sigma)`` after the VP kernel.

    ``x_t \sim N(\alpha_t \mu, \Sigma_t)``, ``\Sigma_t = \alpha_t^2 \Sigma + \sigma_t^2 I``, hence
    ``s(x, t) = -\Sigma_t^{-1}(x - \alpha_t \mu)``. ``\Sigma = U diag(s) U^T`` is diagonalised
    once, so ``\Sigma_t^{-1} = U diag(1 / (\alpha_t^2 s_i + \sigma_t^2)) U^T`` at every t.
    ``cov`` may be singular (``s_i = 0``: a point mass along those directions).
    """

    def __init__(self, mean: Array, cov: Array, sde: VPSDE):
        mean = _checks.as_array("mean", mean)
        cov = _checks.as_array("cov", cov, ndim=2)
        d = int(mean.size)
        if cov.shape != (d, d):
            raise ValueError(f"cov: expected shape ({d}, {d}) for a mean with {d} elements, got "
                             f"{cov.shape}")
        cov_np = np.asarray(cov, dtype=np.float64)
        if not np.allclose(cov_np, cov_np.T, atol=1e-8 * max(1.0, np.abs(cov_np).max())):
            raise ValueError("cov: expected a symmetric matrix")
        s, u = np.linalg.eigh(0.5 * (cov_np + cov_np.T))
        if s.min() < -1e-8 * max(1.0, s.max()):
            raise ValueError(f"cov: expected a positive semi-definite matrix, smallest eigenvalue {s.min():g}")
        dtype = mean.dtype
        self.sde = sde
        self.mean = mean
        self.eigvals = jnp.asarray(np.clip(s, 0.0, None), dtype)
        self.eigvecs = jnp.asarray(u, dtype)

    def cov_eigvals(self, t: Float[Array, ""]) -> Float[Array, " d"]:
        r"""Eigenvalues of ``\Sigma_t`` (eigenvectors are those of ``\Sigma`` at every t)."""
        return self.sde.alpha(t) ** 2 * self.eigvals + self.sde.variance(t)

    def __call__(self, x: Array, t: Float[Array, ""]) -> Array:
        if tuple(np.shape(x)) != tuple(self.mean.shape):
            raise ValueError(f"x: expected one example of shape {tuple(self.mean.shape)} (the shape "
                             f"of mean), got {tuple(np.shape(x))}; vmap for batches")
        self.sde.check_time("t", t)
        t = jnp.asarray(t, self.eigvals.dtype)
        r = (x - self.sde.alpha(t) * self.mean).reshape(-1)
        coef = self.eigvecs.T @ r / self.cov_eigvals(t)
        return -(self.eigvecs @ coef).reshape(self.mean.shape)

    def log_prob(self, x: Array, t: Float[Array, ""]) -> Float[Array, ""]:
        r"""``\log N(x; \alpha_t \mu, \Sigma_t)``."""
        t = jnp.asarray(t, self.eigvals.dtype)
        lam = self.cov_eigvals(t)
        r = self.eigvecs.T @ (x - self.sde.alpha(t) * self.mean).reshape(-1)
        return -0.5 * (jnp.sum(r**2 / lam) + jnp.sum(jnp.log(lam)) + lam.size * jnp.log(2 * jnp.pi))


def gaussian(mean: Array, cov: Array, sde: VPSDE) -> GaussianScore:
    """The analytic score of ``N(mean, cov)`` data pushed through ``sde``. See :class:`GaussianScore`."""
    return GaussianScore(mean, cov, sde)


# -- trained networks ------------------------------------------------------------------------------
def from_model(apply_fn: Callable[[Array, Array], Array], sde: VPSDE, parameterization: str = "eps",
               *, time_scale: float = 1.0) -> ScoreFn:
    r"""Adapts a batched network to the one-example score protocol.

    Args:
      apply_fn: ``apply_fn(x_batch [b, *shape], t_batch [b]) -> [b, *shape]``, e.g. a Flax NNX
        module in eval mode or ``functools.partial(model.apply, params)``.
      sde: the SDE the network was trained with.
      parameterization: what the network predicts: ``"eps"`` (noise; ``s = -eps/sigma``),
        ``"x0"`` (Tweedie denoiser; ``s = (alpha x0 - x)/sigma^2``) or ``"score"``.
      time_scale: the network receives ``t * time_scale`` (e.g. 999 for DDPM-style
        integer-time conditioning as in paper 000's code).

    Returns:
      ``score_fn(x, t)`` for a single example; batch it with ``jax.vmap``.
    """
    _checks.check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    if not callable(apply_fn):
        raise ValueError(f"apply_fn: expected a callable, got {type(apply_fn).__name__}")

    def score_fn(x, t):
        t = jnp.asarray(t, x.dtype)
        out = apply_fn(x[None], jnp.reshape(t * time_scale, (1,)))[0]
        if out.shape != x.shape:
            raise ValueError(f"apply_fn: expected an output of shape {x.shape} (the input's), got "
                             f"{out.shape}")
        if parameterization == "eps":
            return eps_to_score(out, t, sde)
        if parameterization == "x0":
            return x0_to_score(out, x, t, sde)
        return out

    return score_fn
