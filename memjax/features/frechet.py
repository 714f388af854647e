r"""Fréchet Inception Distance (Heusel et al. 2017), in the pytorch-fid convention.

.. math:: \mathrm{FID} = \|\mu_r - \mu_g\|^2 + \operatorname{tr}\Sigma_r + \operatorname{tr}\Sigma_g
          - 2 \operatorname{tr}\big(\Sigma_r^{1/2} \Sigma_g \Sigma_r^{1/2}\big)^{1/2}

with ``mu``, ``Sigma`` the mean and unbiased covariance (``ddof = 1``) of the 2048-d pool3
features of pytorch-fid's Inception-v3 (:mod:`memjax.features.inception`). Each side of
:func:`fid` may be

* images ``[n, H, W, C]`` (``uint8`` or float in ``[-1, 1]``), embedded with ``features``;
* feature rows ``[n, d]``;
* reference statistics: a :class:`Statistics`, or the path of an ``.npz`` holding ``mu [d]`` and
  ``sigma [d, d]`` (what pytorch-fid's ``--save-stats`` writes, and :func:`save_statistics`).

Two feature sets go to :func:`memjax.metrics.stats.frechet_distance`; when a side is given as
statistics the same formula runs on the moments in float64 NumPy (``eigh`` square roots, as
``frechet_distance``), matching pytorch-fid's float64 ``sqrtm``.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from memjax.features.base import FeatureExtractor

__all__ = ["Statistics", "fid", "frechet_from_statistics", "load_statistics", "save_statistics",
           "statistics"]


class Statistics(NamedTuple):
    """Gaussian moments of a feature set: ``mu [d]`` and unbiased ``sigma [d, d]`` (float64)."""
    mu: np.ndarray
    sigma: np.ndarray


def _extractor(features) -> FeatureExtractor:
    if isinstance(features, FeatureExtractor):
        return features
    if isinstance(features, (str, os.PathLike)):
        from memjax.features import load

        return load(os.fspath(features))
    raise ValueError("features: expected a FeatureExtractor or a spec such as "
                     f"'inception:/path/to/pt_inception.safetensors' to embed images, got {features!r}")


def statistics(x, *, features: FeatureExtractor | str | None = None) -> Statistics:
    """``Statistics`` of feature rows ``[n, d]``, or of images ``[n, H, W, C]`` embedded by
    ``features``; ``mu`` and ``sigma = np.cov(rowvar=False)`` in float64 as pytorch-fid."""
    f = _features("x", x, features)
    return Statistics(np.mean(f, axis=0), np.cov(f, rowvar=False))


def _features(name: str, x, features) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 4:
        if features is None:
            raise ValueError(f"{name}: got images of shape {x.shape}; pass features= (e.g. "
                             "'inception:/path/to/weights.safetensors') to embed them")
        x = np.asarray(_extractor(features)(x))
    if x.ndim != 2:
        raise ValueError(f"{name}: expected images [n, H, W, C], features [n, d] or statistics, "
                         f"got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name}: expected at least 2 rows for a covariance, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite features, found NaN or infinity")
    return x.astype(np.float64)


def save_statistics(path: str, stats: Statistics) -> None:
    """Writes ``mu`` and ``sigma`` as pytorch-fid does (``np.savez_compressed``)."""
    np.savez_compressed(path, mu=np.asarray(stats.mu), sigma=np.asarray(stats.sigma))


def load_statistics(path: str) -> Statistics:
    """Reads an ``.npz`` with ``mu [d]`` and ``sigma [d, d]`` (pytorch-fid's format)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file (expected FID statistics .npz with mu and sigma)")
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive with mu and sigma, got a single array")
    with f:
        missing = sorted({"mu", "sigma"} - set(f.files))
        if missing:
            raise ValueError(f"{path}: missing {missing} (has {sorted(f.files)}); expected FID "
                             "statistics with mu and sigma")
        mu, sigma = f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
    _check_statistics(path, mu, sigma)
    return Statistics(mu, sigma)


def _check_statistics(name: str, mu: np.ndarray, sigma: np.ndarray) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{name}: expected mu [d] and sigma [d, d], got {mu.shape} and {sigma.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"{name}: expected finite mu and sigma, found NaN or infinity")


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (s + s.T))
    return (v * np.sqrt(np.maximum(w, 0.0))) @ v.T


def frechet_from_statistics(a: Statistics, b: Statistics) -> float:
    """The Fréchet distance of the module docstring from two sets of moments (float64)."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"statistics: expected the same dimension on both sides, got {a.mu.shape[0]} "
                         f"and {b.mu.shape[0]}")
    r = _psd_sqrt(a.sigma)
    m = r @ b.sigma @ r
    tr_sqrt = np.sum(np.sqrt(np.maximum(np.linalg.eigvalsh(0.5 * (m + m.T)), 0.0)))
    d = a.mu - b.mu
    return float(d @ d + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * tr_sqrt)


def _side(name: str, x, features):
    """Statistics for an ``.npz`` path or ``Statistics``; float64 feature rows otherwise."""
    if isinstance(x, Statistics):
        mu, sigma = np.asarray(x.mu, np.float64), np.asarray(x.sigma, np.float64)
        _check_statistics(name, mu, sigma)
        return Statistics(mu, sigma)
    if isinstance(x, (str, os.PathLike)):
        return load_statistics(x)
    return _features(name, x, features)


def fid(real, generated, *, features: FeatureExtractor | str | None = None) -> float:
    """FID between ``real`` and ``generated`` (each images, features or statistics; module
    docstring). ``features`` embeds image inputs: a :class:`FeatureExtractor` or a spec such as
    ``"inception:/path/to/pt_inception.safetensors"``."""
    if isinstance(features, (str, os.PathLike)) and any(np.ndim(v) == 4 for v in (real, generated)
                                                        if not isinstance(v, (str, os.PathLike))):
        features = _extractor(features)  # load the network once for both sides
    a, b = _side("real", real, features), _side("generated", generated, features)
    da = a.mu.shape[0] if isinstance(a, Statistics) else a.shape[1]
    db = b.mu.shape[0] if isinstance(b, Statistics) else b.shape[1]
    if da != db:
        raise ValueError(f"real, generated: expected features of the same dimension, got {da} and {db}")
    if isinstance(a, Statistics) or isinstance(b, Statistics):
        a = a if isinstance(a, Statistics) else statistics(a)
        b = b if isinstance(b, Statistics) else statistics(b)
        return frechet_from_statistics(a, b)
    import jax

    from memjax.metrics.stats import frechet_distance

    with jax.enable_x64(True):  # float64 features: pytorch-fid's precision
        return float(frechet_distance(a, b))
