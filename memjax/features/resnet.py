r"""torchvision's ResNet / ResNeXt (bottleneck blocks) in Flax NNX, for pretrained weights.

The attribute tree mirrors ``torchvision.models.ResNet`` (``conv1``, ``bn1``, ``layer1`` ..
``layer4`` of :class:`Bottleneck` blocks with ``conv1..3``, ``bn1..3`` and ``downsample``,
then ``fc``), so :func:`memjax.features.weights.load_into` reads a torchvision state dict with
no name table. Inference only: BatchNorm always uses the running statistics,
``y = (x - mu) / sqrt(var + 1e-5) * gamma + beta``. Activations are NHWC.

torchvision's ResNet v1.5 puts the stride on the 3x3 convolution; a bottleneck block of
``planes`` has width ``int(planes * width_per_group / 64) * groups`` and ``4 * planes``
outputs (ResNet-50: ``(3, 4, 6, 3)`` blocks, 1 group of 64; ResNeXt-101 32x4d:
``(3, 4, 23, 3)``, 32 groups of 4).

The global pooling is the average, or generalised-mean (GeM, Radenovic et al. 2018) pooling
with exponent ``p`` over the ``N = H W`` positions, as SSCD uses it:

.. math:: \mathrm{GeM}_p(x)_c = \Big(\frac{1}{N} \sum_{n} \max(x_{nc}, 10^{-6})^p\Big)^{1/p}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

__all__ = ["conv", "batch_norm", "Bottleneck", "ResNet", "gem_pool", "max_pool"]


def conv(cin: int, cout: int, k: int, *, stride: int = 1, groups: int = 1, padding: int | None = None,
         bias: bool = False, rngs: nnx.Rngs) -> nnx.Conv:
    """A PyTorch-style ``Conv2d`` (explicit symmetric padding, default ``k // 2``)."""
    p = k // 2 if padding is None else padding
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=((p, p), (p, p)),
                    feature_group_count=groups, use_bias=bias, rngs=rngs)


def batch_norm(c: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """``BatchNorm2d`` in eval mode (running statistics, eps 1e-5)."""
    return nnx.BatchNorm(c, use_running_average=True, epsilon=1e-5, rngs=rngs)


def max_pool(x: Float[Array, "b h w c"], k: int, stride: int, *, padding: int = 0,
             ceil_mode: bool = False) -> Float[Array, "b H W c"]:
    """``MaxPool2d(k, stride, padding, ceil_mode)``: padding (and the ceil-mode tail) is -inf."""
    pads = []
    for n in x.shape[1:3]:
        span = n + 2 * padding - k
        out = (-(-span // stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (out - 1) * stride >= n + padding:  # last window must start inside
            out -= 1
        pads.append((padding, (out - 1) * stride + k - n - padding))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, stride, stride, 1),
                                 ((0, 0), *pads, (0, 0)))


def gem_pool(x: Float[Array, "b h w c"], p: float) -> Float[Array, "b c"]:
    """Generalised-mean pooling over the spatial axes (module docstring)."""
    return jnp.mean(jnp.maximum(x, 1e-6) ** p, axis=(1, 2)) ** (1.0 / p)


class Bottleneck(nnx.Module):
    """torchvision's ``Bottleneck``: 1x1 -> 3x3 (stride, groups) -> 1x1 (x4), residual."""

    def __init__(self, cin: int, planes: int, stride: int, groups: int, base_width: int, *,
                 rngs: nnx.Rngs):
        width = int(planes * (base_width / 64.0)) * groups
        cout = 4 * planes
        self.conv1, self.bn1 = conv(cin, width, 1, rngs=rngs), batch_norm(width, rngs=rngs)
        self.conv2 = conv(width, width, 3, stride=stride, groups=groups, rngs=rngs)
        self.bn2 = batch_norm(width, rngs=rngs)
        self.conv3, self.bn3 = conv(width, cout, 1, rngs=rngs), batch_norm(cout, rngs=rngs)
        self.downsample = (nnx.List([conv(cin, cout, 1, stride=stride, rngs=rngs),
                                     batch_norm(cout, rngs=rngs)])
                           if stride != 1 or cin != cout else None)

    def __call__(self, x):
        h = nnx.relu(self.bn1(self.conv1(x)))
        h = nnx.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        skip = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        return nnx.relu(h + skip)


class ResNet(nnx.Module):
    """torchvision ``ResNet(Bottleneck, layers, groups, width_per_group)`` with ``fc``.

    Args:
      layers: bottleneck blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
      num_outputs: outputs of the final linear layer ``fc``.
      groups, width_per_group: ResNeXt cardinality and group width (1, 64 for ResNet).
      gem_p: GeM exponent for the global pooling; ``None`` for average pooling.
    """

    def __init__(self, layers=(3, 4, 6, 3), *, num_outputs: int = 1000, groups: int = 1,
                 width_per_group: int = 64, gem_p: float | None = None, rngs: nnx.Rngs):
        self.gem_p = gem_p
        self.conv1 = conv(3, 64, 7, stride=2, rngs=rngs)
        self.bn1 = batch_norm(64, rngs=rngs)
        cin = 64
        for i, n in enumerate(layers):
            planes = 64 * 2**i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(Bottleneck(cin, planes, stride, groups, width_per_group,
                                         rngs=rngs))
                cin = 4 * planes
            setattr(self, f"layer{i + 1}", nnx.List(blocks))
        self.num_stages = len(layers)
        self.fc = nnx.Linear(cin, num_outputs, rngs=rngs)

    def trunk(self, x: Float[Array, "b h w 3"]) -> Float[Array, "b h2 w2 c"]:
        """Convolutional trunk: stem, max-pool, the residual stages."""
        x = max_pool(nnx.relu(self.bn1(self.conv1(x))), 3, 2, padding=1)
        for i in range(self.num_stages):
            for block in getattr(self, f"layer{i + 1}"):
                x = block(x)
        return x

    def __call__(self, x: Float[Array, "b h w 3"]) -> Float[Array, "b d"]:
        h = self.trunk(x)
        pooled = jnp.mean(h, axis=(1, 2)) if self.gem_p is None else gem_pool(h, self.gem_p)
        return self.fc(pooled)
