r"""SqueezeNet 1.1 (Iandola et al. 2016), torchvision's ``squeezenet1_1``: 1000 ImageNet logits.

Paper 003 embeds these class scores with t-SNE. The attribute tree mirrors torchvision's
(``features.0`` the stem convolution, ``features.3`` .. ``features.12`` the :class:`Fire`
modules, ``classifier.1`` the 1x1 classifier convolution), so a torchvision state dict loads by
name (:mod:`memjax.features.weights`). Layers::

    conv 3x3/2 (64) - ReLU - maxpool 3/2 (ceil) - Fire(16, 64) x2 - maxpool - Fire(32, 128) x2
    - maxpool - Fire(48, 192) x2 - Fire(64, 256) x2 - [dropout] - conv 1x1 (1000) - ReLU - mean

A Fire module squeezes with a 1x1 convolution (ReLU) and concatenates 1x1 and 3x3 expansions
(each ReLU). The logits are the spatial mean of the last ReLU, as in torchvision (so they are
non-negative).

Preprocessing (torchvision's ImageNet evaluation transform, with which the weights were
trained): resize the shorter side to 256 (antialiased bilinear), center crop 224 x 224, ImageNet
mean / std.

Weights: the torchvision state dict (``squeezenet1_1-b8a52dc0.pth``) converted once with
``python -m memjax.features.convert squeezenet IN.pth OUT.safetensors``.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from memjax.features import preprocess, weights
from memjax.features.base import FeatureExtractor, check_precision, from_nnx
from memjax.features.resnet import conv, max_pool

__all__ = ["Fire", "SqueezeNet", "load"]

# features index -> (in channels, squeeze, expand per branch); torchvision's max-pools sit at
# indices 2, 5, 8 (after the stem and after Fire 4 and 7).
_FIRES = {3: (64, 16, 64), 4: (128, 16, 64), 6: (128, 32, 128), 7: (256, 32, 128),
          9: (256, 48, 192), 10: (384, 48, 192), 11: (384, 64, 256), 12: (512, 64, 256)}
_POOL_AFTER = (4, 7)


class Fire(nnx.Module):
    """torchvision's ``Fire``: squeeze 1x1, then concat(expand 1x1, expand 3x3), all ReLU."""

    def __init__(self, cin: int, squeeze: int, expand: int, *, rngs: nnx.Rngs):
        self.squeeze = conv(cin, squeeze, 1, bias=True, rngs=rngs)
        self.expand1x1 = conv(squeeze, expand, 1, bias=True, rngs=rngs)
        self.expand3x3 = conv(squeeze, expand, 3, bias=True, rngs=rngs)

    def __call__(self, x):
        s = nnx.relu(self.squeeze(x))
        return jnp.concatenate([nnx.relu(self.expand1x1(s)), nnx.relu(self.expand3x3(s))], -1)


class SqueezeNet(nnx.Module):
    """SqueezeNet 1.1 with ``num_classes`` outputs (module docstring)."""

    def __init__(self, num_classes: int = 1000, *, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        layers = {"0": conv(3, 64, 3, stride=2, padding=0, bias=True, rngs=rngs)}
        layers.update({str(i): Fire(*c, rngs=rngs) for i, c in _FIRES.items()})
        self.features = nnx.Dict(layers)
        self.classifier = nnx.Dict({"1": conv(512, num_classes, 1, bias=True, rngs=rngs)})

    def __call__(self, x):
        x = nnx.relu(self.features["0"](x))
        x = max_pool(x, 3, 2, ceil_mode=True)
        for i in sorted(_FIRES):
            x = self.features[str(i)](x)
            if i in _POOL_AFTER:
                x = max_pool(x, 3, 2, ceil_mode=True)
        return jnp.mean(nnx.relu(self.classifier["1"](x)), axis=(1, 2))


def load(path, *, batch_size: int = 64, precision: str = "highest") -> FeatureExtractor:
    """SqueezeNet 1.1 logits (1000) from a converted ``.safetensors`` torchvision state dict
    (``precision``: :func:`memjax.features.base.from_nnx`).

    Raises:
      ValueError: bad ``precision``, missing or unreadable file, or weights that do not fit
        SqueezeNet 1.1.
    """
    check_precision(precision)
    model = weights.load_into(SqueezeNet, path, what="squeezenet1_1")

    def fn(net: SqueezeNet, x):
        x = preprocess.center_crop(preprocess.resize_shorter(x, 256), 224)
        return net(preprocess.normalize(x))

    return from_nnx("squeezenet1_1", model, fn, dim=1000, batch_size=batch_size,
                    precision=precision)
