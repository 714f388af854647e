r"""Score U-Net of the DDPM++ family (Song et al. 2021; score_sde ``ddpm`` / ``ncsnpp``, no FIR).

Layout (``L = len(channel_mults)`` levels, ``C_l = base_channels * channel_mults[l]``)::

    conv3x3 -> for l in 0..L-1: num_res_blocks x [ResBlock(C_l) (+ Attn if res in attn_resolutions)]
                                 Downsample (except the last level)
            -> middle: ResBlock, Attn, ResBlock
            -> for l in L-1..0: (num_res_blocks + 1) x [concat skip, ResBlock(C_l) (+ Attn)]
                                 Upsample (except level 0)
            -> GroupNorm, SiLU, conv3x3 -> output [b, H, W, C]

Every ResBlock receives ``temb = TimeEmbedding(t) (+ ClassEmbedding(y))``. The output is the
noise ``eps`` or the clean image ``x0`` per ``parameterization``; ``memjax.scores.from_model``
turns either into a score function.

Resolutions not divisible by ``2**(L-1)`` are zero-padded (bottom/right) to the next multiple
and the output is cropped back; the padding is a fixed function of the input, so the network is
still a deterministic map ``[b, H, W, C] -> [b, H, W, C]``.

Randomness: dropout is active in ``model.train()`` mode and off in ``model.eval()`` mode. Pass
``key=`` to ``__call__`` to draw the dropout masks from an explicit key (what the objectives do,
so a training step is a pure function of its key); otherwise the model's own ``dropout`` stream,
forked from the ``rngs`` given at construction, is used and advanced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from memjax.models import config as config_lib
from memjax.models import layers

__all__ = ["create_unet", "UNet"]


class UNet(nnx.Module):
    """DDPM++-style score U-Net (Flax NNX). See the module docstring for the architecture.

    Args:
      image_size: input resolution, an int or an ``(H, W)`` pair.
      channels: image channels ``C``.
      base_channels, channel_mults, num_res_blocks, attn_resolutions, num_heads, dropout:
        architecture (see :mod:`memjax.models.config`).
      num_classes: ``None`` for an unconditional model; otherwise labels ``0..num_classes-1``
        plus the null label ``num_classes`` (classifier-free dropout; used when ``y`` is None).
      parameterization: ``"eps"`` or ``"x0"``; what the output means (stored, not used inside).
      embedding: ``"sinusoidal"`` or ``"fourier"`` time embedding.
      rngs: ``nnx.Rngs`` for initialisation (and the fallback dropout stream).
    """

    def __init__(self, *, image_size, channels: int, base_channels: int = 64,
                 channel_mults=(1, 2, 2), num_res_blocks: int = 2, attn_resolutions=(16,),
                 dropout: float = 0.0, num_classes: int | None = None,
                 parameterization: str = "eps", embedding: str = "sinusoidal",
                 num_heads: int = 1, fourier_scale: float = 16.0, rngs: nnx.Rngs):
        cfg = config_lib.unet_config(
            image_size=image_size, channels=channels, base_channels=base_channels,
            channel_mults=tuple(channel_mults), num_res_blocks=num_res_blocks,
            attn_resolutions=tuple(attn_resolutions), dropout=dropout, num_classes=num_classes,
            parameterization=parameterization, embedding=embedding, num_heads=num_heads,
            fourier_scale=fourier_scale)
        config_lib.validate_model_config(cfg)
        self.image_hw = config_lib.image_hw(image_size)
        self.channels = channels
        self.num_classes = num_classes
        self.parameterization = parameterization
        levels = len(channel_mults)
        self.padded_hw = config_lib.padded_hw(image_size, levels)
        temb_dim = 4 * base_channels

        self.time_embed = layers.TimeEmbedding(base_channels, temb_dim, embedding=embedding,
                                               fourier_scale=fourier_scale, rngs=rngs)
        self.class_embed = (nnx.Embed(num_classes + 1, temb_dim, rngs=rngs)
                            if num_classes is not None else None)
        self.conv_in = layers.conv(channels, base_channels, rngs=rngs)

        res = self.padded_hw[0]
        attn = set(attn_resolutions)
        ch = base_channels
        skip_chs = [ch]
        down = []
        for level, mult in enumerate(channel_mults):
            out = base_channels * mult
            for _ in range(num_res_blocks):
                block = nnx.List([layers.ResBlock(ch, out, temb_dim, dropout=dropout, rngs=rngs)])
                if res in attn:
                    block.append(layers.AttnBlock(out, num_heads, rngs=rngs))
                down.append(block)
                ch = out
                skip_chs.append(ch)
            if level != levels - 1:
                down.append(nnx.List([layers.Downsample(ch, rngs=rngs)]))
                skip_chs.append(ch)
                res //= 2
        self.down = nnx.List(down)

        self.mid = nnx.List([layers.ResBlock(ch, ch, temb_dim, dropout=dropout, rngs=rngs),
                             layers.AttnBlock(ch, num_heads, rngs=rngs),
                             layers.ResBlock(ch, ch, temb_dim, dropout=dropout, rngs=rngs)])

        up = []
        for level in reversed(range(levels)):
            out = base_channels * channel_mults[level]
            for _ in range(num_res_blocks + 1):
                block = nnx.List([layers.ResBlock(ch + skip_chs.pop(), out, temb_dim,
                                                  dropout=dropout, rngs=rngs)])
                if res in attn:
                    block.append(layers.AttnBlock(out, num_heads, rngs=rngs))
                up.append(block)
                ch = out
            if level != 0:
                up.append(nnx.List([layers.Upsample(ch, rngs=rngs)]))
                res *= 2
        assert not skip_chs
        self.up = nnx.List(up)
        self.norm_out = layers.group_norm(ch, rngs=rngs)
        self.conv_out = layers.conv(ch, channels, rngs=rngs)

    def __call__(self, x: Float[Array, "b h w c"], t: Float[Array, " b"],
                 y: Int[Array, " b"] | None = None, *, key: jax.Array | None = None
                 ) -> Float[Array, "b h w c"]:
        """Predicts ``eps`` or ``x0`` (per ``self.parameterization``) for noisy images at times ``t``.

        Args:
          x: ``[b, H, W, C]`` noisy images.
          t: ``[b]`` continuous times in ``[0, 1]`` (a scalar is broadcast).
          y: ``[b]`` int labels in ``0..num_classes`` (``num_classes`` = null label) for a
            class-conditional model; ``None`` means the null label. Must be ``None`` for an
            unconditional model.
          key: optional PRNG key for the dropout masks (train mode only).
        """
        if x.ndim != 4 or tuple(x.shape[1:3]) != self.image_hw or x.shape[3] != self.channels:
            raise ValueError(f"x: expected shape [b, {self.image_hw[0]}, {self.image_hw[1]}, "
                             f"{self.channels}], got {tuple(x.shape)}")
        b = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,)) if jnp.ndim(t) == 0 else t
        if t.shape != (b,):
            raise ValueError(f"t: expected shape [{b}] (one time per image), got {tuple(t.shape)}")
        if self.class_embed is None:
            if y is not None:
                raise ValueError("y: this U-Net is unconditional (num_classes=None); pass y=None")
        else:
            if y is None:
                y = jnp.full((b,), self.num_classes, jnp.int32)
            if jnp.shape(y) != (b,):
                raise ValueError(f"y: expected shape [{b}] of int labels, got "
                                 f"{tuple(jnp.shape(y))}")
            if not jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer):
                raise ValueError(f"y: expected integer labels, got dtype {jnp.asarray(y).dtype}")

        keys = iter(jax.random.split(key, self._num_res_blocks())) if key is not None else None
        nk = (lambda: next(keys)) if keys is not None else (lambda: None)  # noqa: E731

        temb = self.time_embed(t)
        if self.class_embed is not None:
            temb = temb + self.class_embed(y)

        ph, pw = self.padded_hw
        h0, w0 = self.image_hw
        h = x.astype(jnp.float32)
        if (ph, pw) != (h0, w0):
            h = jnp.pad(h, ((0, 0), (0, ph - h0), (0, pw - w0), (0, 0)))
        h = self.conv_in(h)
        hs = [h]
        for block in self.down:
            h = self._block(block, h, temb, nk)
            hs.append(h)
        h = self.mid[0](h, temb, key=nk())
        h = self.mid[1](h)
        h = self.mid[2](h, temb, key=nk())
        for block in self.up:
            if isinstance(block[0], layers.ResBlock):
                h = jnp.concatenate([h, hs.pop()], axis=-1)
            h = self._block(block, h, temb, nk)
        h = self.conv_out(nnx.silu(self.norm_out(h)))
        return h[:, :h0, :w0, :]

    @staticmethod
    def _block(block, h, temb, nk):
        for layer in block:
            if isinstance(layer, layers.ResBlock):
                h = layer(h, temb, key=nk())
            else:
                h = layer(h)
        return h

    def _num_res_blocks(self) -> int:
        n = 2
        for blocks in (self.down, self.up):
            n += sum(isinstance(b[0], layers.ResBlock) for b in blocks)
        return n


def create_unet(model_config, *, rngs: nnx.Rngs) -> UNet:
    """Builds a :class:`UNet` from a model ``ConfigDict`` (see :func:`memjax.models.config.unet_config`).

    The config is validated first (``ValueError`` naming ``model.<field>``).
    """
    config_lib.validate_model_config(model_config)
    c = model_config
    return UNet(image_size=c["image_size"], channels=c["channels"],
                base_channels=c["base_channels"], channel_mults=tuple(c["channel_mults"]),
                num_res_blocks=c["num_res_blocks"], attn_resolutions=tuple(c["attn_resolutions"]),
                dropout=c["dropout"], num_classes=c["num_classes"],
                parameterization=c["parameterization"], embedding=c["embedding"],
                num_heads=c["num_heads"], fourier_scale=c["fourier_scale"], rngs=rngs)
