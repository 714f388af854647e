r"""Resizing, cropping and normalisation as the reference implementations do them, in JAX.

Every function takes a batch ``[b, H, W, C]`` of float images (any range; the feature networks
pass ``[0, 1]``) and is pure and jittable: the output size depends only on the static input
shape. They reproduce torchvision's tensor transforms on float tensors:

* :func:`resize` is ``transforms.v2.Resize(size, interpolation=BILINEAR, antialias=True)``.
  For an output pixel ``i`` along an axis of input length ``n`` and output length ``m``
  (scale ``s = m / n``) the sample position is ``u_i = (i + 1/2) / s - 1/2`` and the value is

  .. math:: y_i = \frac{\sum_j k((j - u_i) / \sigma)\, x_j}{\sum_j k((j - u_i) / \sigma)},
     \qquad k(t) = \max(0, 1 - |t|), \quad \sigma = \max(1, 1 / s),

  the triangle filter widened by the downscaling factor (antialiasing; PIL's and torch's
  ``_upsample_bilinear2d_aa``), renormalised over the taps inside the image. Upscaling
  (``sigma = 1``) is ordinary half-pixel bilinear interpolation with clamped borders. Axes are
  resized separably (``jax.image.scale_and_translate``, ``method="linear"``, ``antialias=True``).
* :func:`resize_shorter` is ``Resize(size)`` with an int size: the shorter side becomes
  ``size`` and the longer ``int(size * long / short)`` (truncated, as torchvision does).
* :func:`center_crop` is ``CenterCrop(size)``: offsets ``int(round((H - h) / 2))``.
* :func:`normalize` is ``Normalize(mean, std)``: ``(x - mean) / std`` per channel.

uint8 pipelines (PIL images, or torchvision on ``uint8`` tensors) additionally round the
resized image to integers, in two passes (width, then height); memjax resizes in float32 and
does not, so on ``uint8`` input its resized pixels differ from those pipelines by at most about
one grey level (``tests/test_features_sscd_squeezenet_interop.py`` checks the gap) and equal the
float pipeline ``ToDtype(float32, scale=True)`` -> ``Resize`` to float rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "resize", "resize_shorter", "shorter_side_size",
           "center_crop", "normalize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_size(name: str, size) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{name}: expected a positive int, got {size!r}")


def resize(x: Float[Array, "b h w c"], height: int, width: int, *, method: str = "bilinear",
           antialias: bool = True) -> Float[Array, "b H W c"]:
    """Resize to ``[b, height, width, c]`` as torchvision's ``Resize([height, width])``.

    Args:
      method: ``"bilinear"`` (triangle filter) or ``"bicubic"`` (Keys cubic with ``a = -1/2``,
        which is torch's antialiased bicubic and PIL's; torch's non-antialiased bicubic uses
        ``a = -3/4`` and is not reproduced).
      antialias: widen the filter by the downscaling factor (module docstring). ``False`` with
        ``"bilinear"`` is ``F.interpolate(mode="bilinear", align_corners=False)`` (pytorch-fid's
        resize to 299).
    """
    _check_size("height", height)
    _check_size("width", width)
    methods = {"bilinear": "linear", "bicubic": "cubic"}
    if method not in methods or (method == "bicubic" and not antialias):
        raise ValueError(f"method: expected 'bilinear' or antialiased 'bicubic', got {method!r} "
                         f"(antialias={antialias})")
    b, h, w, c = x.shape
    if (h, w) == (height, width):
        return x
    scale = jnp.array([height / h, width / w], jnp.float32)
    return jax.image.scale_and_translate(
        x, (b, height, width, c), (1, 2), scale, jnp.zeros(2, jnp.float32),
        method=methods[method], antialias=antialias)


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


def center_crop(x: Float[Array, "b h w c"], size: int) -> Float[Array, "b size size c"]:
    """``CenterCrop(size)``: the central ``size x size`` window (torchvision's rounding)."""
    _check_size("size", size)
    h, w = x.shape[1:3]
    if size > h or size > w:
        raise ValueError(f"size: expected at most the image size {h}x{w}, got {size}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[:, top:top + size, left:left + size]


def normalize(x: Float[Array, "b h w c"], mean=IMAGENET_MEAN,
              std=IMAGENET_STD) -> Float[Array, "b h w c"]:
    """``(x - mean) / std`` per channel (defaults: ImageNet statistics)."""
    return (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)
