r"""Inception-v3 pool3 features for FID, as ``pytorch_fid.inception.InceptionV3`` computes them.

The network is pytorch-fid's ``fid_inception_v3()`` (torchvision's Inception-v3 trunk with the
TensorFlow FID graph's blocks) up to the 2048-d global average pool:

* ``Mixed_5b/5c/5d`` = ``FIDInceptionA``, ``Mixed_6b..6e`` = ``FIDInceptionC`` and
  ``Mixed_7b`` = ``FIDInceptionE_1``: their pool branch is a 3x3 average pool (stride 1, pad 1)
  that divides by the number of *in-image* pixels (``count_include_pad=False``);
* ``Mixed_7c`` = ``FIDInceptionE_2``: its pool branch is a 3x3 max pool (stride 1, pad 1);
* ``Mixed_6a`` (InceptionB) and ``Mixed_7a`` (InceptionD) as torchvision;
* every convolution is ``BasicConv2d``: conv without bias, BatchNorm (running statistics,
  ``eps = 1e-3``), ReLU.

Preprocessing (``InceptionV3.forward`` with ``resize_input=True, normalize_input=True``) on
images in ``[0, 1]``: ``F.interpolate(x, (299, 299), mode="bilinear", align_corners=False)``
(no antialias, so downsampling large images aliases exactly as the reference does), then
``2 x - 1``. The features are ``pool3 [n, 2048]``, not normalised.

Weights: the ``pt_inception-2015-12-05`` state dict (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch1x1.bn.running_mean``, ...; ``fc.*`` ignored) or an ``InceptionV3`` module's
state dict (``blocks.0.0.conv.weight``, ...), as safetensors. pytorch-fid's published ``.pth`` is
converted once with::

    python -m memjax.features.convert inception pt_inception-2015-12-05-6726825d.pth pt_inception.safetensors
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from memjax.features import preprocess as preprocess_lib
from memjax.features import weights
from memjax.features.base import FeatureExtractor, check_precision, from_nnx

__all__ = ["FIDInceptionV3", "IGNORE", "convert_keys", "load", "preprocess"]

# InceptionV3 (pytorch-fid wrapper) block positions -> torchvision / pt_inception names.
_BLOCKS = [["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"],
           ["Conv2d_3b_1x1", "Conv2d_4a_3x3"],
           ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
            "Mixed_6e"],
           ["Mixed_7a", "Mixed_7b", "Mixed_7c"]]
# Keys of the published state dict the pool3 features do not use: the 1008-way classifier
# and BatchNorm's step counters.
IGNORE = ("fc.*",) + weights.BN_COUNTERS


# -- pooling ---------------------------------------------------------------------------------------
def max_pool(x, stride: int, pad: int = 0):
    """3x3 max pool, torch ``max_pool2d`` (padding never wins: it is ``-inf``)."""
    p = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), p)


def avg_pool_exclude_pad(x):
    """3x3 average pool, stride 1, pad 1, ``count_include_pad=False``: the window sum over the
    pixels inside the image divided by their number (4 at corners, 6 on edges, 9 inside)."""
    p = ((0, 0), (1, 1), (1, 1), (0, 0))
    window = (1, 3, 3, 1)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1, 1, 1, 1), p)
    ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, (1, 1, 1, 1), p)
    return total / count


# -- layers ----------------------------------------------------------------------------------------
class BasicConv2d(nnx.Module):
    """``relu(BN(conv(x)))``, conv without bias, BN eps 1e-3 (torchvision ``BasicConv2d``)."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0, *, rngs: nnx.Rngs):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
        self.conv = nnx.Conv(cin, cout, (kh, kw), strides=stride, padding=((ph, ph), (pw, pw)),
                             use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(cout, epsilon=1e-3, use_running_average=True, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.conv(x)))


def _chain(x, *layers):
    for layer in layers:
        x = layer(x)
    return x


class InceptionA(nnx.Module):
    """``FIDInceptionA``: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg-pool(exclude pad)-1x1."""

    def __init__(self, cin: int, pool_features: int, *, rngs: nnx.Rngs):
        C = lambda *a, **k: BasicConv2d(*a, **k, rngs=rngs)  # noqa: E731
        self.branch1x1 = C(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = C(cin, 48, 1), C(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = C(cin, 64, 1)
        self.branch3x3dbl_2 = C(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = C(96, 96, 3, padding=1)
        self.branch_pool = C(cin, pool_features, 1)

    def __call__(self, x):
        return jnp.concatenate([
            self.branch1x1(x),
            _chain(x, self.branch5x5_1, self.branch5x5_2),
            _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            self.branch_pool(avg_pool_exclude_pad(x))], axis=-1)


class InceptionB(nnx.Module):
    """``Mixed_6a``: 3x3/2 | 1x1-3x3-3x3/2 | max-pool/2."""

    def __init__(self, cin: int, *, rngs: nnx.Rngs):
        C = lambda *a, **k: BasicConv2d(*a, **k, rngs=rngs)  # noqa: E731
        self.branch3x3 = C(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = C(cin, 64, 1)
        self.branch3x3dbl_2 = C(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = C(96, 96, 3, stride=2)

    def __call__(self, x):
        return jnp.concatenate([
            self.branch3x3(x),
            _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            max_pool(x, 2)], axis=-1)


class InceptionC(nnx.Module):
    """``FIDInceptionC``: factorised 7x7 branches, avg-pool (exclude pad)."""

    def __init__(self, cin: int, c7: int, *, rngs: nnx.Rngs):
        C = lambda *a, **k: BasicConv2d(*a, **k, rngs=rngs)  # noqa: E731
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = C(cin, 192, 1)
        self.branch7x7_1, self.branch7x7_2 = C(cin, c7, 1), C(c7, c7, **row)
        self.branch7x7_3 = C(c7, 192, **col)
        self.branch7x7dbl_1, self.branch7x7dbl_2 = C(cin, c7, 1), C(c7, c7, **col)
        self.branch7x7dbl_3, self.branch7x7dbl_4 = C(c7, c7, **row), C(c7, c7, **col)
        self.branch7x7dbl_5 = C(c7, 192, **row)
        self.branch_pool = C(cin, 192, 1)

    def __call__(self, x):
        return jnp.concatenate([
            self.branch1x1(x),
            _chain(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
            _chain(x, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                   self.branch7x7dbl_4, self.branch7x7dbl_5),
            self.branch_pool(avg_pool_exclude_pad(x))], axis=-1)


class InceptionD(nnx.Module):
    """``Mixed_7a``: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max-pool/2."""

    def __init__(self, cin: int, *, rngs: nnx.Rngs):
        C = lambda *a, **k: BasicConv2d(*a, **k, rngs=rngs)  # noqa: E731
        self.branch3x3_1, self.branch3x3_2 = C(cin, 192, 1), C(192, 320, 3, stride=2)
        self.branch7x7x3_1 = C(cin, 192, 1)
        self.branch7x7x3_2 = C(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = C(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = C(192, 192, 3, stride=2)

    def __call__(self, x):
        return jnp.concatenate([
            _chain(x, self.branch3x3_1, self.branch3x3_2),
            _chain(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3,
                   self.branch7x7x3_4),
            max_pool(x, 2)], axis=-1)


class InceptionE(nnx.Module):
    """``FIDInceptionE_1`` (avg-pool, exclude pad) or ``FIDInceptionE_2`` (``max_pool=True``)."""

    def __init__(self, cin: int, max_pool: bool, *, rngs: nnx.Rngs):
        C = lambda *a, **k: BasicConv2d(*a, **k, rngs=rngs)  # noqa: E731
        self.max_pool = max_pool
        self.branch1x1 = C(cin, 320, 1)
        self.branch3x3_1 = C(cin, 384, 1)
        self.branch3x3_2a = C(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = C(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = C(cin, 448, 1), C(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = C(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = C(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = C(cin, 192, 1)

    def __call__(self, x):
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = max_pool(x, 1, pad=1) if self.max_pool else avg_pool_exclude_pad(x)
        return jnp.concatenate([
            self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), self.branch_pool(pooled)], axis=-1)


class FIDInceptionV3(nnx.Module):
    """pytorch-fid's Inception-v3 up to pool3: ``[b, 299, 299, 3]`` in ``[-1, 1]`` -> ``[b, 2048]``."""

    def __init__(self, *, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        C = lambda *a, **k: BasicConv2d(*a, **k, rngs=rngs)  # noqa: E731
        self.Conv2d_1a_3x3 = C(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = C(32, 32, 3)
        self.Conv2d_2b_3x3 = C(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = C(64, 80, 1)
        self.Conv2d_4a_3x3 = C(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
        self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
        self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
        self.Mixed_6a = InceptionB(288, rngs=rngs)
        self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
        self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
        self.Mixed_7a = InceptionD(768, rngs=rngs)
        self.Mixed_7b = InceptionE(1280, False, rngs=rngs)
        self.Mixed_7c = InceptionE(2048, True, rngs=rngs)

    def __call__(self, x: Float[Array, "b h w 3"]) -> Float[Array, "b 2048"]:
        x = _chain(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        x = _chain(max_pool(x, 2), self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        x = _chain(max_pool(x, 2), self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                   self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a,
                   self.Mixed_7b, self.Mixed_7c)
        return jnp.mean(x, axis=(1, 2))


def convert_keys(tensors: dict) -> dict:
    """``blocks.i.j.*`` (the ``InceptionV3`` wrapper's keys) -> the pt_inception names; those
    pass through (so the published ``pt_inception-2015-12-05`` ``.pth`` needs no renaming)."""
    out = {}
    for key, w in tensors.items():
        m = re.match(r"^blocks\.(\d)\.(\d)\.(.*)$", key)
        if m and int(m.group(1)) < len(_BLOCKS) and int(m.group(2)) < len(_BLOCKS[int(m.group(1))]):
            key = f"{_BLOCKS[int(m.group(1))][int(m.group(2))]}.{m.group(3)}"
        out[key] = w
    return out


def preprocess(x: Float[Array, "b h w 3"], resize: bool = True) -> Float[Array, "b s s 3"]:
    """Bilinear resize to 299 x 299 (no antialias, ``align_corners=False``), then ``2 x - 1``."""
    if resize:
        x = preprocess_lib.resize(x, 299, 299, method="bilinear", antialias=False)
    return 2.0 * x - 1.0


def load(path, *, resize: bool = True, batch_size: int = 50, precision: str = "highest"
         ) -> FeatureExtractor:
    """pytorch-fid's Inception pool3 features (module docstring) from a safetensors state dict.

    Args:
      path: ``.safetensors`` with the pt_inception (or ``InceptionV3`` module) key names.
      resize: resize inputs to 299 x 299 first (pytorch-fid's ``resize_input``).
      batch_size: default images per step.
      precision: matmul / convolution precision (:func:`memjax.features.base.from_nnx`).

    Raises:
      ValueError: bad ``precision``, missing or unreadable file, or weights that do not fit.
    """
    check_precision(precision)
    tensors = convert_keys(weights.read_safetensors(path))
    model = weights.load_into(FIDInceptionV3, path, what="FID Inception-v3", tensors=tensors,
                              ignore=IGNORE)

    def forward(m: FIDInceptionV3, images):
        x = preprocess(images, resize)
        if min(x.shape[1:3]) < 75:
            raise ValueError(f"images: expected at least 75 x 75 pixels (or resize=True), got "
                             f"{x.shape[1:3]}")
        return m(x)

    return from_nnx("inception-fid", model, forward, dim=2048, normalized=False,
                    batch_size=batch_size, precision=precision)
