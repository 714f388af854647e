r"""diffusers' ``UNet2DModel`` (the DDPM U-Net of Ho et al. 2020) in Flax NNX, channel-last.

The module tree and attribute names mirror diffusers' (``down_blocks.1.attentions.0.to_q``,
``mid_block.resnets.0.norm1``, ...), so a checkpoint's tensor names map one-to-one onto NNX
paths (:mod:`memjax.interop.diffusers` loads them). Images are ``[B, H, W, C]`` here where
diffusers takes ``[B, C, H, W]``; every layer is the same function of its input:

* time: the sinusoidal embedding of DDPM (``exponent_k = -\log(10^4) k / (half - freq\_shift)``,
  ``[sin, cos]``, or ``[cos, sin]`` with ``flip_sin_to_cos``), then Linear-SiLU-Linear;
* ``ResnetBlock2D``: ``GN-act-conv``, ``+ W act(temb)`` (``"default"``) or
  ``GN(h) (1 + scale) + shift`` (``"scale_shift"``), ``GN-act-conv``, 1x1 shortcut when the
  width changes, ``(x + h) / output_scale_factor``;
* ``Attention``: GroupNorm, single-block multi-head self-attention over the ``H W`` positions
  (``heads = C / attention_head_dim``), output projection, residual, ``/ rescale``;
* ``Downsample2D``: 3x3 stride-2 conv (``downsample_padding = 0`` pads bottom/right by one);
  ``Upsample2D``: nearest x2, 3x3 conv.

Only inference is ported (no dropout): the analyses need the trained function, not training.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

__all__ = ["ACTIVATIONS", "Attention", "DOWN_BLOCKS", "DownBlock", "Downsample2D", "MID_BLOCKS",
           "MidBlock", "ResnetBlock2D", "timestep_embedding", "TimestepEmbedding", "UNet2DModel",
           "UNetConfig", "UP_BLOCKS", "UpBlock", "Upsample2D"]

DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D")
MID_BLOCKS = ("UNetMidBlock2D", None)
ACTIVATIONS = {"silu": jax.nn.silu, "swish": jax.nn.silu, "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
               "gelu": lambda x: jax.nn.gelu(x, approximate=False), "relu": jax.nn.relu}
# Keys of UNet2DModel's config and the values this port supports (None: any value).
_SUPPORTED: dict[str, Any] = {
    "sample_size": None, "in_channels": None, "out_channels": None, "center_input_sample": None,
    "time_embedding_type": ("positional",), "time_embedding_dim": None, "freq_shift": None,
    "flip_sin_to_cos": None, "down_block_types": None, "mid_block_type": MID_BLOCKS,
    "up_block_types": None, "block_out_channels": None, "layers_per_block": None,
    "mid_block_scale_factor": None, "downsample_padding": (0, 1), "downsample_type": ("conv",),
    "upsample_type": ("conv",), "dropout": None, "act_fn": tuple(ACTIVATIONS),
    "attention_head_dim": None, "norm_num_groups": None, "attn_norm_num_groups": None,
    "norm_eps": None, "resnet_time_scale_shift": ("default", "scale_shift"),
    "add_attention": None, "class_embed_type": (None,), "num_class_embeds": (None,),
    "num_train_timesteps": None,
}


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The subset of a diffusers ``UNet2DModel`` ``config.json`` this port runs (defaults: diffusers')."""

    in_channels: int = 3
    out_channels: int = 3
    center_input_sample: bool = False
    time_embedding_dim: int | None = None
    freq_shift: int = 0
    flip_sin_to_cos: bool = True
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                                         "AttnDownBlock2D")
    mid_block_type: str | None = "UNetMidBlock2D"
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    block_out_channels: tuple[int, ...] = (224, 448, 672, 896)
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1.0
    downsample_padding: int = 1
    act_fn: str = "silu"
    attention_head_dim: int | None = 8
    norm_num_groups: int = 32
    attn_norm_num_groups: int | None = None
    norm_eps: float = 1e-5
    resnet_time_scale_shift: str = "default"
    add_attention: bool = True
    sample_size: Any = None

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> UNetConfig:
        """Validates a ``config.json`` dict: an unknown key, block or option raises ``ValueError``."""
        if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
            raise ValueError(f"config.json: _class_name: expected 'UNet2DModel', got {config['_class_name']!r}")
        for key, value in config.items():
            if key.startswith("_"):
                continue
            if key not in _SUPPORTED:
                raise ValueError(f"config.json: unsupported key {key!r} (memjax ports UNet2DModel's "
                                 f"options {sorted(_SUPPORTED)})")
            allowed = _SUPPORTED[key]
            if allowed is not None and value not in allowed:
                raise ValueError(f"config.json: {key}={value!r} is not supported; expected one of {allowed}")
        for key in ("down_block_types", "up_block_types"):
            allowed = DOWN_BLOCKS if key.startswith("down") else UP_BLOCKS
            for block in config.get(key, ()):
                if block not in allowed:
                    raise ValueError(f"config.json: {key}: unsupported block {block!r}; expected {allowed}")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
        cfg = cls(**kwargs)
        cfg._check()
        return cfg

    def _check(self):
        n = len(self.block_out_channels)
        if not (len(self.down_block_types) == len(self.up_block_types) == n >= 1):
            raise ValueError(f"config.json: down_block_types, up_block_types and block_out_channels need one "
                             f"entry per level, got {len(self.down_block_types)}, "
                             f"{len(self.up_block_types)}, {n}")
        for ch in self.block_out_channels:
            if ch % self.norm_num_groups:
                raise ValueError(f"config.json: block_out_channels {ch} is not divisible by "
                                 f"norm_num_groups={self.norm_num_groups}")
            if self.attention_head_dim is not None and ch % self.attention_head_dim:
                raise ValueError(f"config.json: block_out_channels {ch} is not divisible by "
                                 f"attention_head_dim={self.attention_head_dim}")

    @property
    def time_dim(self) -> int:
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    def heads(self, channels: int) -> int:
        return 1 if self.attention_head_dim is None else channels // self.attention_head_dim


def timestep_embedding(t: Float[Array, " b"], dim: int, flip_sin_to_cos: bool, freq_shift: float
                       ) -> Float[Array, "b dim"]:
    r"""diffusers' ``get_timestep_embedding``: ``[sin(t w_k), cos(t w_k)]``, ``w_k = 10^{-4k/(half - shift)}``."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
    arg = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(arg), jnp.sin(arg)] if flip_sin_to_cos else [jnp.sin(arg), jnp.cos(arg)], -1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class _Layers:
    """Constructors with the torch layer semantics (param dtype, GroupNorm's exact variance)."""

    def __init__(self, cfg: UNetConfig, dtype, rngs: nnx.Rngs):
        self.cfg, self.dtype, self.rngs = cfg, dtype, rngs

    def conv(self, cin, cout, k=3, stride=1, padding=1):
        return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=padding, dtype=self.dtype,
                        param_dtype=self.dtype, rngs=self.rngs)

    def linear(self, cin, cout):
        return nnx.Linear(cin, cout, dtype=self.dtype, param_dtype=self.dtype, rngs=self.rngs)

    def norm(self, ch, groups=None):
        return nnx.GroupNorm(ch, num_groups=groups or self.cfg.norm_num_groups, epsilon=self.cfg.norm_eps,
                             use_fast_variance=False, dtype=self.dtype, param_dtype=self.dtype, rngs=self.rngs)


class ResnetBlock2D(nnx.Module):
    def __init__(self, mk: _Layers, cin: int, cout: int, output_scale_factor: float = 1.0):
        cfg = mk.cfg
        self.act = ACTIVATIONS[cfg.act_fn]
        self.scale_shift = cfg.resnet_time_scale_shift == "scale_shift"
        self.output_scale_factor = output_scale_factor
        self.norm1 = mk.norm(cin)
        self.conv1 = mk.conv(cin, cout)
        self.time_emb_proj = mk.linear(cfg.time_dim, 2 * cout if self.scale_shift else cout)
        self.norm2 = mk.norm(cout)
        self.conv2 = mk.conv(cout, cout)
        self.conv_shortcut = mk.conv(cin, cout, k=1, padding=0) if cin != cout else None

    def __call__(self, x, temb):
        h = self.conv1(self.act(self.norm1(x)))
        t = self.time_emb_proj(self.act(temb))[:, None, None, :]
        if self.scale_shift:
            scale, shift = jnp.split(t, 2, axis=-1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + t)
        h = self.conv2(self.act(h))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor


class Attention(nnx.Module):
    """Spatial self-attention with diffusers' ``Attention(residual_connection=True, bias=True)``."""

    def __init__(self, mk: _Layers, ch: int, heads: int, groups: int | None, rescale: float = 1.0):
        self.heads, self.rescale = heads, rescale
        self.group_norm = mk.norm(ch, groups) if groups else None
        self.to_q, self.to_k, self.to_v = mk.linear(ch, ch), mk.linear(ch, ch), mk.linear(ch, ch)
        self.to_out = nnx.List([mk.linear(ch, ch)])

    def __call__(self, x, temb=None):
        b, hh, ww, c = x.shape
        h = self.group_norm(x) if self.group_norm is not None else x
        h = h.reshape(b, hh * ww, c)
        d = c // self.heads
        q, k, v = (f(h).reshape(b, hh * ww, self.heads, d) for f in (self.to_q, self.to_k, self.to_v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d)
        w = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, hh * ww, c)
        out = self.to_out[0](out).reshape(b, hh, ww, c)
        return (out + x) / self.rescale


class Downsample2D(nnx.Module):
    def __init__(self, mk: _Layers, ch: int):
        self.pad_right = mk.cfg.downsample_padding == 0
        self.conv = mk.conv(ch, ch, stride=2, padding=0 if self.pad_right else 1)

    def __call__(self, x):
        if self.pad_right:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return self.conv(x)


class Upsample2D(nnx.Module):
    def __init__(self, mk: _Layers, ch: int):
        self.conv = mk.conv(ch, ch)

    def __call__(self, x):
        return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class DownBlock(nnx.Module):
    """``DownBlock2D`` / ``AttnDownBlock2D``: resnets (+ attention each), then a downsampler."""

    def __init__(self, mk: _Layers, kind: str, cin: int, cout: int, last: bool):
        n = mk.cfg.layers_per_block
        self.resnets = nnx.List([ResnetBlock2D(mk, cin if i == 0 else cout, cout) for i in range(n)])
        attn = kind == "AttnDownBlock2D"
        self.attentions = nnx.List([Attention(mk, cout, mk.cfg.heads(cout), mk.cfg.norm_num_groups)
                                    for _ in range(n)]) if attn else None
        self.downsamplers = None if last else nnx.List([Downsample2D(mk, cout)])

    def __call__(self, x, temb):
        states = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
            states.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            states.append(x)
        return x, states


class UpBlock(nnx.Module):
    """``UpBlock2D`` / ``AttnUpBlock2D``: resnets on ``[x, skip]`` (+ attention), then an upsampler."""

    def __init__(self, mk: _Layers, kind: str, cin: int, prev: int, cout: int, last: bool):
        n = mk.cfg.layers_per_block + 1
        self.resnets = nnx.List([
            ResnetBlock2D(mk, (prev if i == 0 else cout) + (cin if i == n - 1 else cout), cout)
            for i in range(n)])
        attn = kind == "AttnUpBlock2D"
        self.attentions = nnx.List([Attention(mk, cout, mk.cfg.heads(cout), mk.cfg.norm_num_groups)
                                    for _ in range(n)]) if attn else None
        self.upsamplers = None if last else nnx.List([Upsample2D(mk, cout)])

    def __call__(self, x, skips, temb):
        for i, resnet in enumerate(self.resnets):
            x = resnet(jnp.concatenate([x, skips.pop()], axis=-1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nnx.Module):
    """``UNetMidBlock2D``: resnet, [attention, resnet]; attention GroupNorm only for ``"default"``."""

    def __init__(self, mk: _Layers, ch: int):
        cfg = mk.cfg
        scale = cfg.mid_block_scale_factor
        self.resnets = nnx.List([ResnetBlock2D(mk, ch, ch, scale) for _ in range(2)])
        groups = cfg.attn_norm_num_groups
        if groups is None and cfg.resnet_time_scale_shift == "default":
            groups = cfg.norm_num_groups
        self.attentions = nnx.List([Attention(mk, ch, cfg.heads(ch), groups, scale)]) \
            if cfg.add_attention else None

    def __call__(self, x, temb):
        x = self.resnets[0](x, temb)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, temb)


class TimestepEmbedding(nnx.Module):
    def __init__(self, mk: _Layers, cin: int, cout: int):
        self.linear_1, self.linear_2 = mk.linear(cin, cout), mk.linear(cout, cout)

    def __call__(self, x):
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


class UNet2DModel(nnx.Module):
    """``model(x [B, H, W, C], timesteps [B]) -> [B, H, W, C_out]``, diffusers' ``UNet2DModel(...).sample``.

    ``timesteps`` are the network's labels (0 .. N-1 at the training timesteps; fractional
    values are embedded as diffusers embeds float tensors).
    """

    def __init__(self, cfg: UNetConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        mk = _Layers(cfg, dtype, rngs)
        self.cfg = cfg
        chs = cfg.block_out_channels
        self.conv_in = mk.conv(cfg.in_channels, chs[0])
        self.time_embedding = TimestepEmbedding(mk, chs[0], cfg.time_dim)
        self.down_blocks = nnx.List([
            DownBlock(mk, kind, chs[max(i - 1, 0)], chs[i], i == len(chs) - 1)
            for i, kind in enumerate(cfg.down_block_types)])
        self.mid_block = MidBlock(mk, chs[-1]) if cfg.mid_block_type is not None else None
        rev = chs[::-1]
        self.up_blocks = nnx.List([
            UpBlock(mk, kind, rev[min(i + 1, len(chs) - 1)], rev[max(i - 1, 0)], rev[i], i == len(chs) - 1)
            for i, kind in enumerate(cfg.up_block_types)])
        self.conv_norm_out = mk.norm(chs[0])
        self.conv_out = mk.conv(chs[0], cfg.out_channels)

    def __call__(self, x: Float[Array, "b h w c"], timesteps: Float[Array, " b"]) -> Float[Array, "b h w c"]:
        cfg = self.cfg
        if cfg.center_input_sample:
            x = 2 * x - 1.0
        t = jnp.broadcast_to(jnp.asarray(timesteps), (x.shape[0],))
        emb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = self.time_embedding(emb.astype(x.dtype))
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            h, states = block(h, temb)
            skips.extend(states)
        if self.mid_block is not None:
            h = self.mid_block(h, temb)
        for block in self.up_blocks:
            h = block(h, skips, temb)
        h = jax.nn.silu(self.conv_norm_out(h))  # diffusers' conv_act is SiLU whatever act_fn is
        return self.conv_out(h)
