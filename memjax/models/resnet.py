r"""ResNet classifiers (He et al. 2016) and the time-dependent variant of paper 001 appendix C.

``ResNet(stage_sizes=(2, 2, 2, 2))`` is ResNet-18, ``(3, 4, 6, 3)`` ResNet-34 (basic blocks).
The time-dependent classifier ``p_theta^t(y | x_t)`` used by SIDE (paper 001 section 4.2)
inserts a :class:`~memjax.models.layers.TimeModule` directly after the first BatchNorm of every
residual block (``block.bn1`` then ``block.time_module``); all blocks share one time embedding
``TimeEmbedding(t)`` computed once per call.

Stems: ``"cifar"`` (3x3 conv, stride 1, no max-pool: for images of 32 px or less) and
``"imagenet"`` (7x7 conv stride 2 + 3x3 max-pool stride 2: for 64 px and up).

BatchNorm state: in ``model.train()`` mode BatchNorm normalises with batch statistics and
updates its running averages (``nnx.BatchStat`` variables) in place; in ``model.eval()`` mode it
uses the running averages. Under ``nnx.jit`` / ``nnx.value_and_grad`` (or ``nnx.split`` /
``nnx.merge`` with the ``BatchStat`` state carried alongside the params) those in-place updates
flow out of the transformed function automatically; gradients are taken w.r.t. ``nnx.Param``
only, so the statistics are never differentiated.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from memjax.models import layers

__all__ = ["ResNet", "resnet18", "resnet34", "STEMS"]

STEMS = ("cifar", "imagenet")


class ResNet(nnx.Module):
    """ResNet with basic blocks; optionally time-dependent (paper 001 appendix C).

    Args:
      num_classes: number of output logits.
      in_channels: image channels.
      stage_sizes: blocks per stage; widths are ``width * 2**stage``, stages after the first
        downsample by 2.
      width: channels of the first stage.
      time_dependent: add a time module after the first BatchNorm of each block.
      time_embed_dim: width of the shared time embedding (time-dependent only).
      stem: ``"cifar"`` or ``"imagenet"`` (see module docstring).
      rngs: ``nnx.Rngs`` for initialisation.
    """

    def __init__(self, *, num_classes: int, in_channels: int, stage_sizes=(2, 2, 2, 2),
                 width: int = 64, time_dependent: bool = False, time_embed_dim: int = 128,
                 stem: str = "cifar", rngs: nnx.Rngs):
        for name, v in (("num_classes", num_classes), ("in_channels", in_channels),
                        ("width", width), ("time_embed_dim", time_embed_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if (not isinstance(stage_sizes, (tuple, list)) or not stage_sizes or
                not all(isinstance(s, int) and s >= 1 for s in stage_sizes)):
            raise ValueError(f"stage_sizes: expected a non-empty tuple of positive ints, got "
                             f"{stage_sizes!r}")
        if stem not in STEMS:
            raise ValueError(f"stem: expected one of {STEMS}, got {stem!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.time_dependent = bool(time_dependent)
        self.stem = stem
        if stem == "cifar":
            self.conv_stem = nnx.Conv(in_channels, width, (3, 3), padding=1, use_bias=False,
                                      rngs=rngs)
        else:
            self.conv_stem = nnx.Conv(in_channels, width, (7, 7), strides=(2, 2), padding=3,
                                      use_bias=False, rngs=rngs)
        self.bn_stem = nnx.BatchNorm(width, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.time_embed = (layers.TimeEmbedding(time_embed_dim, time_embed_dim, rngs=rngs)
                           if time_dependent else None)
        temb_dim = time_embed_dim if time_dependent else None
        blocks = []
        ch = width
        for i, n in enumerate(stage_sizes):
            out = width * 2**i
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(layers.BasicBlock(ch, out, stride, temb_dim=temb_dim, rngs=rngs))
                ch = out
        self.blocks = nnx.List(blocks)
        self.feature_dim = ch
        self.head = nnx.Linear(ch, num_classes, rngs=rngs)

    def features(self, x: Float[Array, "b h w c"], t: Float[Array, " b"] | None = None
                 ) -> Float[Array, "b d"]:
        """Penultimate features: global average pool of the last stage, ``[b, feature_dim]``."""
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"x: expected shape [b, H, W, {self.in_channels}], got "
                             f"{tuple(x.shape)}")
        b = x.shape[0]
        temb = None
        if self.time_dependent:
            if t is None:
                raise ValueError("t: this ResNet is time-dependent; expected times [b], got None")
            t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,)) if jnp.ndim(t) == 0 else t
            if t.shape != (b,):
                raise ValueError(f"t: expected shape [{b}], got {tuple(t.shape)}")
            temb = self.time_embed(t)
        elif t is not None:
            raise ValueError("t: this ResNet is time-independent (time_dependent=False); "
                             "pass t=None")
        h = nnx.relu(self.bn_stem(self.conv_stem(x)))
        if self.stem == "imagenet":
            h = nnx.max_pool(h, (3, 3), strides=(2, 2), padding="SAME")
        for block in self.blocks:
            h = block(h, temb)
        return jnp.mean(h, axis=(1, 2))

    def __call__(self, x: Float[Array, "b h w c"], t: Float[Array, " b"] | None = None
                 ) -> Float[Array, "b k"]:
        """Logits ``[b, num_classes]``; ``t`` is required iff the model is time-dependent."""
        return self.head(self.features(x, t))


def resnet18(*, num_classes: int, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-18: ``stage_sizes=(2, 2, 2, 2)``."""
    return ResNet(num_classes=num_classes, in_channels=in_channels, stage_sizes=(2, 2, 2, 2),
                  **kwargs)


def resnet34(*, num_classes: int, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-34 (paper 001's classifier): ``stage_sizes=(3, 4, 6, 3)``."""
    return ResNet(num_classes=num_classes, in_channels=in_channels, stage_sizes=(3, 4, 6, 3),
                  **kwargs)
