r"""Separable image resizing that reproduces PyTorch's ``F.interpolate`` (``align_corners=False``).

A private helper of :mod:`memjax.features.dinov2` and :mod:`memjax.features.inception`, to be
unified with :mod:`memjax.features.preprocess` at merge. Each 1-D resize is a fixed matrix
``W [out, in]`` built on the host in float64 (the sizes are static), so resizing a batch is
two ``einsum`` calls that XLA fuses into matrix products:

* ``"bilinear"`` (no antialias): source coordinate ``s = max((i + 1/2) in/out - 1/2, 0)``,
  taps ``floor(s)`` and ``floor(s) + 1`` (clamped to the border), weights ``1 - f, f``.
* ``"bicubic"`` (no antialias): Keys' cubic with ``a = -0.75`` at ``s = (i + 1/2) in/out - 1/2``,
  four taps with indices clamped to the border (replicate).
* ``antialias=True`` (the ``_upsample_*_aa`` kernels, PIL's scheme): filter support scaled by
  ``max(in/out, 1)`` around the centre ``(i + 1/2) in/out``, taps clipped to the image and the
  weights renormalised to sum 1; bilinear is the triangle filter, bicubic Keys' cubic with
  ``a = -0.5``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["center_crop", "pos_grid_resize", "resize", "resize_matrix", "shorter_side_size"]


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(x))


def _matrix_aa(n_in: int, n_out: int, method: str) -> np.ndarray:
    scale = n_in / n_out
    half = 1.0 if method == "bilinear" else 2.0
    support = half * scale if scale >= 1.0 else half
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        x = (np.arange(lo, hi) - centre + 0.5) * inv
        k = _triangle(x) if method == "bilinear" else _cubic(x, -0.5)
        w[i, lo:hi] = k / k.sum()
    return w


def _matrix(n_in: int, n_out: int, method: str) -> np.ndarray:
    scale = n_in / n_out
    s = (np.arange(n_out) + 0.5) * scale - 0.5
    w = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if method == "bilinear":
        s = np.maximum(s, 0.0)
        i0 = np.floor(s).astype(int)
        f = s - i0
        np.add.at(w, (rows, np.minimum(i0, n_in - 1)), 1.0 - f)
        np.add.at(w, (rows, np.minimum(i0 + 1, n_in - 1)), f)
        return w
    i0 = np.floor(s).astype(int)
    f = s - i0
    for k in range(-1, 3):
        np.add.at(w, (rows, np.clip(i0 + k, 0, n_in - 1)), _cubic(f - k, -0.75))
    return w


@functools.lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int, method: str, antialias: bool) -> np.ndarray:
    """``W [n_out, n_in]`` with ``y = W x`` equal to torch's 1-D ``interpolate`` of ``x``."""
    if method not in ("bilinear", "bicubic"):
        raise ValueError(f"method: expected 'bilinear' or 'bicubic', got {method!r}")
    if antialias:
        return _matrix_aa(n_in, n_out, method)
    return _matrix(n_in, n_out, method)


def resize(x: Float[Array, "b h w c"], size: tuple[int, int], method: str, *,
           antialias: bool) -> Float[Array, "b oh ow c"]:
    """Resizes channel-last images to ``size = (oh, ow)`` as ``F.interpolate`` does (float32)."""
    h, w = x.shape[1], x.shape[2]
    if (h, w) == tuple(size):  # every kernel here is the identity then
        return x
    mh = jnp.asarray(resize_matrix(h, size[0], method, antialias), x.dtype)
    mw = jnp.asarray(resize_matrix(w, size[1], method, antialias), x.dtype)
    hi = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,bhwc->bowc", mh, x, precision=hi)
    return jnp.einsum("pw,bowc->bopc", mw, x, precision=hi)


def shorter_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """Output size when the shorter side becomes ``size`` (torchvision / HF ``shortest_edge``):
    the longer side is ``int(size * long / short)``."""
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def center_crop(x: Float[Array, "b h w c"], size: int) -> Float[Array, "b s s c"]:
    """HF ``center_crop``: top-left corner ``((h - s) // 2, (w - s) // 2)``."""
    h, w = x.shape[1], x.shape[2]
    if h < size or w < size:
        raise ValueError(f"images: expected at least {size} x {size} before the crop, got {h} x {w}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[:, top:top + size, left:left + size, :]


def pos_grid_resize(grid: Float[Array, "gh gw d"], size: tuple[int, int], *, antialias: bool
                    ) -> Float[Array, "oh ow d"]:
    """Bicubic resize of a ``[gh, gw, d]`` grid (positional embeddings) to ``size``."""
    return resize(grid[None], size, "bicubic", antialias=antialias)[0]


