r"""Resizing, cropping and normalisation as the reference implementations do them, in JAX.

Every function takes a batch ``[b, H, W, C]`` of float images (any range; the feature networks
pass ``[0, 1]``) and is pure and jittable: the output size depends only on the static input
shape. They reproduce PyTorch's float-tensor operations:

* :func:`resize` is ``F.interpolate(x, (height, width), mode, align_corners=False,
  antialias)`` (torchvision's ``Resize`` on float tensors). Each axis is resized by a fixed
  matrix ``W [out, in]`` built on the host in float64 (the sizes are static), so a resize is
  two matrix products. For output pixel ``i`` along an axis of input length ``n``, output
  length ``m`` and scale ``r = n / m``:

  - ``antialias=True`` (``_upsample_*_aa``, PIL's scheme; SSCD, SqueezeNet, DINOv2's image
    resize): centre ``c_i = r (i + 1/2)``, filter widened by ``sigma = max(r, 1)``,

    .. math:: W_{ij} = \frac{k((j + 1/2 - c_i) / \sigma)}{\sum_{j'} k((j' + 1/2 - c_i) / \sigma)},

    taps inside the image only, ``k`` the triangle ``max(0, 1 - |t|)`` (bilinear) or Keys'
    cubic with ``a = -1/2`` (bicubic).
  - ``antialias=False``: sample position ``s_i = r (i + 1/2) - 1/2``; bilinear takes the taps
    ``floor(s_i)``, ``floor(s_i) + 1`` (``s_i`` clamped at 0, indices at ``n - 1``) with weights
    ``1 - f, f`` (pytorch-fid's resize to 299); bicubic takes four taps with Keys' cubic,
    ``a = -3/4``, indices clamped to the border (DINOv2's positional-embedding grid).
* :func:`resize_shorter` is ``Resize(size)`` with an int size (HF's ``shortest_edge``): the
  shorter side becomes ``size`` and the longer ``int(size * long / short)`` (truncated).
* :func:`center_crop` is torchvision's ``CenterCrop(size)`` (offsets ``int(round((H - h) / 2))``)
  or, with ``rounding="floor"``, Hugging Face's ``center_crop`` (``int((H - h) / 2)``).
* :func:`normalize` is ``Normalize(mean, std)``: ``(x - mean) / std`` per channel.

uint8 pipelines (PIL images, or torchvision on ``uint8`` tensors) additionally round the
resized image to integers, in two passes (width, then height); memjax resizes in float32 and
does not, so on ``uint8`` input its resized pixels differ from those pipelines by at most about
one grey level on smooth images (``tests/test_features_sscd_squeezenet_interop.py`` checks the
gap) and equal the float pipeline ``ToDtype(float32, scale=True)`` -> ``Resize`` to float
rounding.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "resize", "resize_matrix", "resize_shorter",
           "shorter_side_size", "center_crop", "normalize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
METHODS = ("bilinear", "bicubic")


def _check_size(name: str, size) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{name}: expected a positive int, got {size!r}")


def _cubic(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    far = ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    return np.where(t <= 1.0, near, np.where(t < 2.0, far, 0.0))


def _matrix_antialias(n: int, m: int, method: str) -> np.ndarray:
    r = n / m
    half = 1.0 if method == "bilinear" else 2.0
    sigma = max(r, 1.0)
    w = np.zeros((m, n))
    for i in range(m):
        centre = r * (i + 0.5)
        lo = max(int(centre - half * sigma + 0.5), 0)
        hi = min(int(centre + half * sigma + 0.5), n)
        t = (np.arange(lo, hi) - centre + 0.5) / sigma
        k = np.maximum(0.0, 1.0 - np.abs(t)) if method == "bilinear" else _cubic(t, -0.5)
        w[i, lo:hi] = k / k.sum()
    return w


def _matrix_sampled(n: int, m: int, method: str) -> np.ndarray:
    s = (np.arange(m) + 0.5) * (n / m) - 0.5
    rows = np.arange(m)
    w = np.zeros((m, n))
    if method == "bilinear":
        s = np.maximum(s, 0.0)
        i0 = np.floor(s).astype(int)
        np.add.at(w, (rows, np.minimum(i0, n - 1)), 1.0 - (s - i0))
        np.add.at(w, (rows, np.minimum(i0 + 1, n - 1)), s - i0)
        return w
    i0 = np.floor(s).astype(int)
    for k in range(-1, 3):
        np.add.at(w, (rows, np.clip(i0 + k, 0, n - 1)), _cubic(s - i0 - k, -0.75))
    return w


@functools.lru_cache(maxsize=64)
def resize_matrix(n: int, m: int, method: str = "bilinear", antialias: bool = True) -> np.ndarray:
    """``W [m, n]`` (float64) with ``y = W x`` torch's 1-D resize of ``x`` (module docstring)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return (_matrix_antialias if antialias else _matrix_sampled)(n, m, method)


def resize(x: Float[Array, "b h w c"], height: int, width: int, *, method: str = "bilinear",
           antialias: bool = True) -> Float[Array, "b H W c"]:
    """Resize to ``[b, height, width, c]`` as ``F.interpolate(..., align_corners=False)``.

    Args:
      method: ``"bilinear"`` or ``"bicubic"``.
      antialias: ``True``: the filter widened by the downscaling factor (Keys ``a = -1/2`` for
        bicubic; torchvision's ``Resize`` default); ``False``: plain interpolation (Keys
        ``a = -3/4`` for bicubic). See the module docstring.
    """
    _check_size("height", height)
    _check_size("width", width)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    h, w = x.shape[1:3]
    if (h, w) == (height, width):  # every kernel here is the identity then
        return x
    mh = jnp.asarray(resize_matrix(h, height, method, antialias), x.dtype)
    mw = jnp.asarray(resize_matrix(w, width, method, antialias), x.dtype)
    hi = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,bhwc->bowc", mh, x, precision=hi)
    return jnp.einsum("pw,bowc->bopc", mw, x, precision=hi)


def shorter_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's output size for ``Resize(size)``: shorter side ``size``, aspect kept."""
    _check_size("size", size)
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_shorter(x: Float[Array, "b h w c"], size: int, **kwargs) -> Float[Array, "b H W c"]:
    """``Resize(size)``: the shorter side becomes ``size``, the aspect ratio is kept
    (``kwargs``: :func:`resize`'s ``method`` and ``antialias``)."""
    return resize(x, *shorter_side_size(x.shape[1], x.shape[2], size), **kwargs)


def center_crop(x: Float[Array, "b h w c"], size: int, *,
                rounding: str = "torchvision") -> Float[Array, "b size size c"]:
    """The central ``size x size`` window.

    ``rounding="torchvision"`` (``CenterCrop``): offsets ``int(round((H - size) / 2))``;
    ``"floor"`` (Hugging Face's ``center_crop``, DINOv2's processor): ``int((H - size) / 2)``.
    They differ when ``H - size`` is odd.
    """
    _check_size("size", size)
    if rounding not in ("torchvision", "floor"):
        raise ValueError(f"rounding: expected 'torchvision' or 'floor', got {rounding!r}")
    h, w = x.shape[1:3]
    if size > h or size > w:
        raise ValueError(f"images: expected at least {size} x {size} pixels before the center "
                         f"crop to {size}, got {h} x {w}")
    offset = (lambda d: int(round(d / 2.0))) if rounding == "torchvision" else (lambda d: d // 2)
    top, left = offset(h - size), offset(w - size)
    return x[:, top:top + size, left:left + size]


def normalize(x: Float[Array, "b h w c"], mean=IMAGENET_MEAN,
              std=IMAGENET_STD) -> Float[Array, "b h w c"]:
    """``(x - mean) / std`` per channel (defaults: ImageNet statistics)."""
    return (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)
