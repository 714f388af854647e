r"""Building blocks of the score U-Net and the (time-dependent) ResNet classifier.

Everything here is Flax NNX. Layers take channel-last activations ``[b, H, W, C]`` and
(where relevant) a per-example conditioning vector ``temb [b, E]``.

Time embeddings of a continuous time ``t \in [0, 1]``:

* ``"sinusoidal"`` -- the Transformer / DDPM positional embedding of ``1000 t`` (DDPM's
  integer-step convention, so a model trained here sees the same frequencies as one
  conditioned on ``t * 999``)::

      e(t) = [\sin(1000 t \omega_k), \cos(1000 t \omega_k)],  \omega_k = 10000^{-k/(d/2-1)}

* ``"fourier"`` -- random Fourier features (Tancik et al. 2020; score_sde's
  ``GaussianFourierProjection``)::

      e(t) = [\sin(2\pi W t), \cos(2\pi W t)],  W_k \sim N(0, s^2) drawn once, never trained

  ``W`` is a :class:`Constant` variable: saved with the model state, excluded from
  ``nnx.Param`` (so optimizers and ``nnx.grad`` leave it alone).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

__all__ = ["AttnBlock", "BasicBlock", "Constant", "conv", "Downsample", "EMBEDDINGS",
           "FourierEmbedding", "group_norm", "num_groups", "ResBlock", "sinusoidal_embedding",
           "TimeEmbedding", "TimeModule", "Upsample"]

EMBEDDINGS = ("fourier", "sinusoidal")

# DDPM++ (score_sde) initialiser: variance scaling 1, fan_avg, uniform.
default_init = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform")


class Constant(nnx.Variable):
    """A non-trainable array that belongs to the model state (e.g. fixed Fourier frequencies)."""


def num_groups(channels: int, max_groups: int = 32) -> int:
    """GroupNorm groups as in DDPM++: ``min(C // 4, 32)``, lowered to a divisor of ``C``."""
    g = max(1, min(max_groups, channels // 4))
    while channels % g:
        g -= 1
    return g


def group_norm(channels: int, *, rngs: nnx.Rngs) -> nnx.GroupNorm:
    return nnx.GroupNorm(channels, num_groups=num_groups(channels), epsilon=1e-6, rngs=rngs)


def conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, *, rngs: nnx.Rngs,
         init_scale: float = 1.0) -> nnx.Conv:
    """``kernel x kernel`` convolution with 'SAME' padding and the DDPM++ initialiser."""
    init = default_init if init_scale == 1.0 else nnx.initializers.variance_scaling(
        max(init_scale, 1e-10), "fan_avg", "uniform")
    return nnx.Conv(in_ch, out_ch, kernel_size=(kernel, kernel), strides=(stride, stride),
                    padding="SAME", kernel_init=init, rngs=rngs)


# -- time embeddings -------------------------------------------------------------------------------
def sinusoidal_embedding(t: Float[Array, " b"], dim: int, max_period: float = 10000.0
                         ) -> Float[Array, "b dim"]:
    r"""Transformer positional embedding of (real-valued) positions ``t``: ``[sin, cos]`` halves."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class FourierEmbedding(nnx.Module):
    r"""Random Fourier features ``[sin(2 pi W t), cos(2 pi W t)]`` with fixed ``W ~ N(0, scale^2)``."""

    def __init__(self, dim: int, scale: float = 16.0, *, rngs: nnx.Rngs):
        self.W = Constant(scale * jax.random.normal(rngs.params(), (dim // 2,)))

    def __call__(self, t: Float[Array, " b"]) -> Float[Array, "b dim"]:
        w = jax.lax.stop_gradient(self.W[...])
        args = 2 * jnp.pi * t.astype(jnp.float32)[:, None] * w[None, :]
        return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class TimeEmbedding(nnx.Module):
    """``t [b] -> temb [b, out_dim]``: a fixed embedding followed by ``Linear-SiLU-Linear``."""

    def __init__(self, embed_dim: int, out_dim: int, *, embedding: str = "sinusoidal",
                 fourier_scale: float = 16.0, rngs: nnx.Rngs):
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding: expected one of {EMBEDDINGS}, got {embedding!r}")
        self.embedding = embedding
        self.embed_dim = embed_dim
        self.fourier = (FourierEmbedding(embed_dim, fourier_scale, rngs=rngs)
                        if embedding == "fourier" else None)
        self.dense0 = nnx.Linear(embed_dim, out_dim, kernel_init=default_init, rngs=rngs)
        self.dense1 = nnx.Linear(out_dim, out_dim, kernel_init=default_init, rngs=rngs)

    def __call__(self, t: Float[Array, " b"]) -> Float[Array, "b out"]:
        if self.fourier is not None:
            e = self.fourier(t)
        else:
            e = sinusoidal_embedding(1000.0 * t, self.embed_dim)
        return self.dense1(nnx.silu(self.dense0(e)))


# -- U-Net blocks ----------------------------------------------------------------------------------
class ResBlock(nnx.Module):
    r"""DDPM++ residual block (score_sde ``ResnetBlockDDPM`` with ``skip_rescale``)::

        h = Conv(SiLU(GN(x))) + Dense(SiLU(temb))
        h = Conv(Dropout(SiLU(GN(h))))
        out = (skip(x) + h) / sqrt(2)

    ``skip`` is a 1x1 convolution when the channel count changes, the identity otherwise.
    """

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, *, dropout: float = 0.0,
                 rngs: nnx.Rngs):
        self.norm0 = group_norm(in_ch, rngs=rngs)
        self.conv0 = conv(in_ch, out_ch, rngs=rngs)
        self.temb_proj = nnx.Linear(temb_dim, out_ch, kernel_init=default_init, rngs=rngs)
        self.norm1 = group_norm(out_ch, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.conv1 = conv(out_ch, out_ch, rngs=rngs)
        self.skip = conv(in_ch, out_ch, kernel=1, rngs=rngs) if in_ch != out_ch else None

    def __call__(self, x, temb, *, key=None):
        h = self.conv0(nnx.silu(self.norm0(x)))
        h = h + self.temb_proj(nnx.silu(temb))[:, None, None, :]
        h = nnx.silu(self.norm1(h))
        h = self.dropout(h, rngs=key)
        h = self.conv1(h)
        skip = x if self.skip is None else self.skip(x)
        return (skip + h) * (1.0 / math.sqrt(2.0))


class AttnBlock(nnx.Module):
    r"""Self-attention over the ``H x W`` positions (score_sde ``AttnBlockpp`` with ``skip_rescale``)::

        q, k, v = 1x1 projections of GN(x);   h = softmax(q k^T / sqrt(d)) v;   out = (x + W_o h) / sqrt(2)
    """

    def __init__(self, channels: int, num_heads: int = 1, *, rngs: nnx.Rngs):
        if channels % num_heads:
            raise ValueError(f"num_heads: expected a divisor of the channel count {channels}, got "
                             f"{num_heads}")
        self.num_heads = num_heads
        self.norm = group_norm(channels, rngs=rngs)
        self.qkv = nnx.Linear(channels, 3 * channels, kernel_init=default_init, rngs=rngs)
        self.out = nnx.Linear(channels, channels, kernel_init=default_init, rngs=rngs)

    def __call__(self, x):
        b, hh, ww, c = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, hh * ww, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(c // self.num_heads)
        w = jax.nn.softmax(logits, axis=-1)
        h = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, hh, ww, c)
        return (x + self.out(h)) * (1.0 / math.sqrt(2.0))


class Downsample(nnx.Module):
    """Strided 3x3 convolution halving ``H`` and ``W`` (even sizes)."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = conv(channels, channels, stride=2, rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


class Upsample(nnx.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = conv(channels, channels, rngs=rngs)

    def __call__(self, x):
        b, h, w, c = x.shape
        x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
        x = x.reshape(b, 2 * h, 2 * w, c)
        return self.conv(x)


# -- ResNet blocks ---------------------------------------------------------------------------------
class TimeModule(nnx.Module):
    r"""The time module of paper 001 appendix C (FiLM form).

    Maps the shared time embedding ``temb [b, E]`` to a per-channel scale and shift applied to
    the batch-normalised features ``x_BN``::

        out = x_BN * (1 + scale(t)) + shift(t),    [scale, shift] = Linear(SiLU(temb))

    The projection is zero-initialised, so at initialisation the block computes exactly what
    the time-independent block computes (a time-dependent classifier can start from a
    trained classifier's weights).
    """

    def __init__(self, temb_dim: int, channels: int, *, rngs: nnx.Rngs):
        self.proj = nnx.Linear(temb_dim, 2 * channels, kernel_init=nnx.initializers.zeros,
                               bias_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x, temb):
        scale, shift = jnp.split(self.proj(nnx.silu(temb)), 2, axis=-1)
        return x * (1.0 + scale[:, None, None, :]) + shift[:, None, None, :]


class BasicBlock(nnx.Module):
    r"""ResNet basic block (He et al. 2016), with the paper 001 appendix C time module::

        h = relu(TimeModule(BN1(Conv1(x)), t))      # time module directly after the first BN
        out = relu(BN2(Conv2(h)) + shortcut(x))

    ``time_module`` is ``None`` for a time-independent block.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, temb_dim: int | None,
                 rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(in_ch, out_ch, (3, 3), strides=(stride, stride), padding=1,
                              use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(out_ch, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.time_module = TimeModule(temb_dim, out_ch, rngs=rngs) if temb_dim else None
        self.conv2 = nnx.Conv(out_ch, out_ch, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(out_ch, momentum=0.9, epsilon=1e-5, rngs=rngs)
        if stride != 1 or in_ch != out_ch:
            self.shortcut_conv = nnx.Conv(in_ch, out_ch, (1, 1), strides=(stride, stride),
                                          use_bias=False, rngs=rngs)
            self.shortcut_bn = nnx.BatchNorm(out_ch, momentum=0.9, epsilon=1e-5, rngs=rngs)
        else:
            self.shortcut_conv = None
            self.shortcut_bn = None

    def __call__(self, x, temb=None):
        h = self.bn1(self.conv1(x))
        if self.time_module is not None:
            h = self.time_module(h, temb)
        h = nnx.relu(h)
        h = self.bn2(self.conv2(h))
        skip = x if self.shortcut_conv is None else self.shortcut_bn(self.shortcut_conv(x))
        return nnx.relu(h + skip)
