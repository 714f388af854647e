r"""Group statistics of scores and nearest-training-image summaries.

* :func:`separation`: how well a score separates two groups (trained vs held-out images):
  the AUROC (Mann-Whitney statistic, trained positive) and Welch's t-test, in float64;
* :func:`memorization_metrics`: per-query nearest-training-image numbers (L2, Carlini's
  normalized L2 of paper 000 eq. 7, the d1/d2 ratio) and the memorized fraction / UMS.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["separation", "memorization_metrics"]


def separation(trained: Float[Array, " n"], heldout: Float[Array, " m"]) -> dict:
    """AUROC (trained positive), Welch's t-test (float64) and summaries of two score sets."""
    from memjax.metrics import stats

    a = np.asarray(trained, np.float64)
    b = np.asarray(heldout, np.float64)
    labels = np.r_[np.ones(a.size, bool), np.zeros(b.size, bool)]
    both = np.r_[a, b]
    out = {"n_trained": int(a.size), "n_heldout": int(b.size),
           "mean_trained": float(a.mean()), "mean_heldout": float(b.mean()),
           "std_trained": float(a.std(ddof=1)) if a.size > 1 else float("nan"),
           "std_heldout": float(b.std(ddof=1)) if b.size > 1 else float("nan")}
    if not np.all(np.isfinite(both)):
        out.update(auroc=float("nan"), t_statistic=float("nan"), p_value=float("nan"))
        return out
    with jax.enable_x64(True):
        out["auroc"] = float(stats.auroc(jnp.asarray(both), jnp.asarray(labels)))
        if a.size > 1 and b.size > 1 and (a.std() > 0 or b.std() > 0):
            t = stats.welch_t_test(jnp.asarray(a), jnp.asarray(b))
            out["t_statistic"], out["p_value"] = float(t.statistic), float(t.pvalue)
        else:
            out["t_statistic"], out["p_value"] = float("nan"), float("nan")
    return out


def memorization_metrics(queries: np.ndarray, train: np.ndarray, *, n: int = 50,
                         alpha: float = 0.5, delta: float = 1.0 / 3.0,
                         ratio_threshold: float = 1.0 / 3.0, mesh=None) -> dict:
    """Per-query nearest-training-image numbers and the fraction counted as memorized.

    ``l2``: distance to the nearest training image; ``normalized_l2``: Carlini's eq. 7 with the
    ``n`` nearest (``alpha``); ``d1_d2``: nearest over second-nearest distance. A query is
    *memorized* when ``normalized_l2 < delta`` (Carlini et al.'s criterion as paper 000 eq. 7
    uses it); ``frac_d1_d2`` counts ``d1 / d2 < ratio_threshold``. ``ums`` is the number of
    distinct training images matched by a memorized query over the number of queries (paper
    001 eq. 15 with the band ``[0, delta)``).
    """
    from memjax.metrics import memorization as mem

    ntr = train.shape[0]
    k = min(max(n, 2), ntr)
    dist, idx = mem.nearest_neighbours(queries, train, k=k, metric="l2", mesh=mesh)
    dist, idx = np.asarray(dist, np.float64), np.asarray(idx)
    ratio = np.asarray(mem.normalized_l2(queries, train, n=min(n, ntr), alpha=alpha,
                                         mesh=mesh).ratio, np.float64)
    d1, d2 = dist[:, 0], dist[:, 1] if k > 1 else np.full(len(dist), np.inf)
    d1d2 = np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1.0), 0.0)
    memorized = ratio < delta
    ums = len(set(idx[memorized, 0].tolist())) / max(len(queries), 1)
    return {"l2": d1, "normalized_l2": ratio, "d1_d2": d1d2, "nearest": idx[:, 0],
            "memorized": memorized, "frac_memorized": float(memorized.mean()),
            "frac_d1_d2": float((d1d2 < ratio_threshold).mean()), "ums": float(ums)}
