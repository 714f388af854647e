r"""Statistics used to report memorization results, all pure and jittable.

* :func:`frechet_distance` -- the Fréchet distance between Gaussians fitted to two feature sets
  (FID when the features are Inception's; FD_DINOv2 in paper 002 Table 3).
* :func:`welch_t_test` -- Welch's unequal-variance t-test (paper 000 compares trained and
  held-out volume-growth scores with p-values).
* :func:`auroc` -- the area under the ROC curve, with ties counted one half (Mann-Whitney U).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from memjax import _checks

__all__ = ["TTestResult", "auroc", "frechet_distance", "welch_t_test"]


# -- Fréchet distance ----------------------------------------------------------------------------
def _mean_cov(x):
    mu = jnp.mean(x, axis=0)
    xc = x - mu
    cov = jnp.matmul(xc.T, xc, precision=jax.lax.Precision.HIGHEST) / (x.shape[0] - 1)
    return mu, cov


def _psd_sqrt(s):
    """Symmetric square root of a symmetric PSD matrix by ``eigh`` (negative round-off -> 0)."""
    w, v = jnp.linalg.eigh(0.5 * (s + s.T))
    return (v * jnp.sqrt(jnp.maximum(w, 0.0))[None, :]) @ v.T


@jax.jit
def _frechet(a, b):
    mu1, s1 = _mean_cov(a)
    mu2, s2 = _mean_cov(b)
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    w = jnp.linalg.eigvalsh(0.5 * (m + m.T))
    tr_sqrt = jnp.sum(jnp.sqrt(jnp.maximum(w, 0.0)))
    diff = mu1 - mu2
    return jnp.dot(diff, diff) + jnp.trace(s1) + jnp.trace(s2) - 2.0 * tr_sqrt


def frechet_distance(features_a: Float[Array, "n d"], features_b: Float[Array, "m d"]
                     ) -> Float[Array, ""]:
    r"""Fréchet distance between ``N(mu_a, S_a)`` and ``N(mu_b, S_b)`` fitted to two feature sets:

    .. math:: \|\mu_a - \mu_b\|^2 + \operatorname{tr} S_a + \operatorname{tr} S_b
              - 2 \operatorname{tr}\big(S_a^{1/2} S_b S_a^{1/2}\big)^{1/2}

    Covariances are unbiased (``ddof = 1``, as ``np.cov`` and pytorch-fid). The trace of
    ``(S_a S_b)^{1/2}`` equals that of the symmetric ``(S_a^{1/2} S_b S_a^{1/2})^{1/2}``, whose
    eigenvalues ``eigh`` gives stably (no complex ``sqrtm``); negative round-off eigenvalues are
    clipped. In float32 the result carries an absolute error of about ``1e-6 (tr S_a + tr S_b)``
    (the last term cancels), so enable float64 to compare nearly equal sets.
    """
    a = _checks.as_array("features_a", features_a, ndim=2)
    b = _checks.as_array("features_b", features_b, ndim=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_b: expected {a.shape[1]} features (as features_a), got "
                         f"shape {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"features_a, features_b: expected at least 2 rows each, got {a.shape} "
                         f"and {b.shape}")
    dtype = jnp.promote_types(jnp.promote_types(a.dtype, b.dtype), jnp.float32)
    return _frechet(a.astype(dtype), b.astype(dtype))


# -- Welch's t-test --------------------------------------------------------------------------------
class TTestResult(NamedTuple):
    """``statistic`` (t) and two-sided ``pvalue``; ``df`` the Welch-Satterthwaite degrees."""
    statistic: Float[Array, ""]
    pvalue: Float[Array, ""]
    df: Float[Array, ""]


@jax.jit
def _welch(a, b):
    na, nb = a.shape[0], b.shape[0]
    ma, mb = jnp.mean(a), jnp.mean(b)
    va = jnp.sum(jnp.square(a - ma)) / (na - 1) / na
    vb = jnp.sum(jnp.square(b - mb)) / (nb - 1) / nb
    se2 = va + vb
    t = (ma - mb) / jnp.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    # two-sided p = 2 * sf(|t|; df) = I_x(df/2, 1/2), x = df / (df + t^2). The continued
    # fraction of I_x(a, b) converges fast for x < (a + 1) / (a + b + 2), i.e. for
    # t^2 > 3 df / (df + 2) (p below ~0.1); there the direct form keeps full relative precision
    # down to the smallest p. Only for smaller |t| (p above ~0.08, where absolute precision is
    # what matters) is 1 - I_y(1/2, df/2), y = t^2 / (df + t^2), used. Neither forms 1 - x.
    half = jnp.asarray(0.5, a.dtype)
    x = df / (df + t * t)
    y = t * t / (df + t * t)
    p = jnp.where(t * t < 3.0 * df / (df + 2.0), 1.0 - jax.scipy.special.betainc(half, 0.5 * df, y),
                  jax.scipy.special.betainc(0.5 * df, half, x))
    return TTestResult(statistic=t, pvalue=jnp.clip(p, 0.0, 1.0), df=df)


def welch_t_test(a: Float[Array, " n"], b: Float[Array, " m"]) -> TTestResult:
    r"""Welch's two-sample t-test (unequal variances), as ``scipy.stats.ttest_ind(a, b,
    equal_var=False)``:

    .. math:: t = \frac{\bar a - \bar b}{\sqrt{s_a^2/n_a + s_b^2/n_b}}, \qquad
              \nu = \frac{(s_a^2/n_a + s_b^2/n_b)^2}{\frac{(s_a^2/n_a)^2}{n_a - 1}
              + \frac{(s_b^2/n_b)^2}{n_b - 1}}, \qquad p = I_{\nu/(\nu + t^2)}(\nu/2, 1/2)

    (two-sided; ``I`` the regularised incomplete beta function). Float64 inputs (with
    ``jax_enable_x64``) match SciPy to ~1e-12; in float32 the statistic is exact to rounding but
    the p-value only to about 3e-5 absolute for large ``df`` (float32 ``betainc`` evaluates its
    prefactor from log-gammas of size ~df), so pass float64 when p-values matter. Returns
    :class:`TTestResult` ``(statistic, pvalue, df)``; it unpacks as ``t, p, df``.
    """
    a = _checks.as_array("a", a, ndim=1)
    b = _checks.as_array("b", b, ndim=1)
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"a, b: expected at least 2 values each, got {a.shape[0]} and "
                         f"{b.shape[0]}")
    dtype = jnp.promote_types(jnp.promote_types(a.dtype, b.dtype), jnp.float32)
    return _welch(a.astype(dtype), b.astype(dtype))


# -- AUROC -----------------------------------------------------------------------------------------
@jax.jit
def _auroc(scores, labels):
    order = jnp.argsort(scores, stable=True)
    s = scores[order]
    neg = (~labels[order]).astype(jnp.int32)
    cneg = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(neg)])   # exclusive prefix
    lo = jnp.searchsorted(s, s, side="left")
    hi = jnp.searchsorted(s, s, side="right")
    below = cneg[lo]                       # negatives scored strictly lower
    equal = cneg[hi] - cneg[lo]            # negatives tied with this score
    n_neg = cneg[-1]
    pos = labels[order]
    n_pos = jnp.sum(pos)
    if scores.shape[0] < 46_000:         # 2 n_pos n_neg <= n^2 / 2 fits in int32: exact count
        wins2 = jnp.sum(jnp.where(pos, 2 * below + equal, 0))
        return wins2.astype(scores.dtype) / (2 * n_pos * n_neg).astype(scores.dtype)
    wins = (below.astype(scores.dtype) + 0.5 * equal.astype(scores.dtype)) / n_neg
    return jnp.sum(jnp.where(pos, wins, 0.0)) / n_pos


def auroc(scores: Float[Array, " n"], labels) -> Float[Array, ""]:
    r"""Area under the ROC curve of ``scores`` for binary ``labels`` (positives = 1 / True):

    .. math:: \mathrm{AUC} = \frac{1}{n_+ n_-} \sum_{i \in +} \sum_{j \in -}
              \big(\mathbb 1[s_i > s_j] + \tfrac12 \mathbb 1[s_i = s_j]\big),

    the Mann-Whitney statistic, equal to scikit-learn's ``roc_auc_score`` (ties count one half).
    ``O(n log n)`` by one sort and prefix counts of negatives. Both classes must be present.
    """
    s = _checks.as_array("scores", scores, ndim=1)
    lab = jnp.asarray(labels)
    if lab.shape != s.shape:
        raise ValueError(f"labels: expected shape {s.shape} (as scores), got {lab.shape}")
    if _checks.is_concrete(lab):
        vals = np.unique(np.asarray(lab))
        if not np.all(np.isin(vals, [0, 1])):
            raise ValueError(f"labels: expected binary labels (0/1 or bool), got values {vals}")
        if len(vals) < 2:
            raise ValueError("labels: expected both classes present, got only "
                             f"{vals.tolist()}")
    s = s.astype(jnp.promote_types(s.dtype, jnp.float32))
    return _auroc(s, lab.astype(bool))
