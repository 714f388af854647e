r"""The DINOv2 Vision Transformer in Flax NNX, laid out as Hugging Face's ``Dinov2Model``.

Attribute names follow ``transformers.models.dinov2.modeling_dinov2`` (the ``q_proj / k_proj /
v_proj / o_proj`` layout), so the NNX state paths are the state-dict keys
(:mod:`memjax.features.weights`). For ``x`` the ``[b, H, W, 3]`` normalised pixels,
patch size ``p`` and a ``g_h x g_w = (H // p) x (W // p)`` patch grid:

.. math::
    z_0 = [\,c;\ \mathrm{Conv}_{p \times p, \mathrm{stride}\ p}(x)\,] + [\,e_0;\ \mathrm{bicubic}
          (E, g_h \times g_w)\,]

    z' = z + \gamma_1 \odot \mathrm{MHA}(\mathrm{LN}_1 z), \qquad
    z_{l+1} = z' + \gamma_2 \odot \mathrm{MLP}(\mathrm{LN}_2 z')

and the features are the CLS row of ``LN(z_L)`` (``pooler_output``). The positional embeddings
``E`` (a square grid, ``image_size // p`` per side) are resized with torch's non-antialiased
bicubic (``a = -0.75``, ``align_corners=False``) to the input grid unless it already matches,
exactly as ``Dinov2Embeddings.interpolate_pos_encoding``. The MLP is ``fc2(act(fc1 z))`` with
hidden size ``int(d * mlp_ratio)``, or SwiGLU ``down(silu(gate z) * up z)`` (ViT-g).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from memjax.features import preprocess

__all__ = ["ACTIVATIONS", "ViTConfig", "Dinov2"]

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """The fields of HF's ``Dinov2Config`` that shape the network (defaults: ViT-B/14)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 14
    image_size: int = 518
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu"
    qkv_bias: bool = True
    use_swiglu_ffn: bool = False

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"config: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"config: hidden_act expected one of {sorted(ACTIVATIONS)}, "
                             f"got {self.hidden_act!r}")


def _linear(i: int, o: int, rngs: nnx.Rngs, bias: bool = True) -> nnx.Linear:
    return nnx.Linear(i, o, use_bias=bias, rngs=rngs)


def _layer_norm(d: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # two-pass variance, as torch (the one-pass E[x^2] - E[x]^2 loses digits on large means)
    return nnx.LayerNorm(d, epsilon=eps, use_fast_variance=False, rngs=rngs)


class Attention(nnx.Module):
    def __init__(self, c: ViTConfig, rngs: nnx.Rngs):
        d = c.hidden_size
        self.heads = c.num_attention_heads
        self.q_proj = _linear(d, d, rngs, c.qkv_bias)
        self.k_proj = _linear(d, d, rngs, c.qkv_bias)
        self.v_proj = _linear(d, d, rngs, c.qkv_bias)
        self.o_proj = _linear(d, d, rngs)

    def __call__(self, z: Float[Array, "b n d"]) -> Float[Array, "b n d"]:
        b, n, d = z.shape
        split = lambda t: t.reshape(b, n, self.heads, d // self.heads)  # noqa: E731
        q, k, v = split(self.q_proj(z)), split(self.k_proj(z)), split(self.v_proj(z))
        out = jax.nn.dot_product_attention(q, k, v, implementation="xla")
        return self.o_proj(out.reshape(b, n, d))


class MLP(nnx.Module):
    def __init__(self, c: ViTConfig, rngs: nnx.Rngs):
        h = int(c.hidden_size * c.mlp_ratio)
        self.act = ACTIVATIONS[c.hidden_act]
        self.fc1 = _linear(c.hidden_size, h, rngs)
        self.fc2 = _linear(h, c.hidden_size, rngs)

    def __call__(self, z):
        return self.fc2(self.act(self.fc1(z)))


class SwiGLU(nnx.Module):
    def __init__(self, c: ViTConfig, rngs: nnx.Rngs):
        h = (int(int(c.hidden_size * c.mlp_ratio) * 2 / 3) + 7) // 8 * 8
        self.gate_proj = _linear(c.hidden_size, h, rngs)
        self.up_proj = _linear(c.hidden_size, h, rngs)
        self.down_proj = _linear(h, c.hidden_size, rngs)

    def __call__(self, z):
        return self.down_proj(jax.nn.silu(self.gate_proj(z)) * self.up_proj(z))


class LayerScale(nnx.Module):
    def __init__(self, d: int):
        self.lambda1 = nnx.Param(jnp.ones((d,)))

    def __call__(self, z):
        return z * self.lambda1[...]


class Layer(nnx.Module):
    def __init__(self, c: ViTConfig, rngs: nnx.Rngs):
        d, eps = c.hidden_size, c.layer_norm_eps
        self.norm1 = _layer_norm(d, eps, rngs)
        self.attention = Attention(c, rngs)
        self.layer_scale1 = LayerScale(d)
        self.norm2 = _layer_norm(d, eps, rngs)
        self.mlp = SwiGLU(c, rngs) if c.use_swiglu_ffn else MLP(c, rngs)
        self.layer_scale2 = LayerScale(d)

    def __call__(self, z):
        z = z + self.layer_scale1(self.attention(self.norm1(z)))
        return z + self.layer_scale2(self.mlp(self.norm2(z)))


class PatchEmbeddings(nnx.Module):
    def __init__(self, c: ViTConfig, rngs: nnx.Rngs):
        p = c.patch_size
        self.projection = nnx.Conv(c.num_channels, c.hidden_size, kernel_size=(p, p),
                                   strides=(p, p), padding="VALID", rngs=rngs)

    def __call__(self, x):
        y = self.projection(x)
        return y.reshape(y.shape[0], -1, y.shape[-1])


class Embeddings(nnx.Module):
    def __init__(self, c: ViTConfig, rngs: nnx.Rngs):
        d, g = c.hidden_size, c.image_size // c.patch_size
        self.patch_size = c.patch_size
        self.cls_token = nnx.Param(jnp.zeros((1, 1, d)))
        self.position_embeddings = nnx.Param(jnp.zeros((1, g * g + 1, d)))
        self.patch_embeddings = PatchEmbeddings(c, rngs)

    def positions(self, gh: int, gw: int) -> Float[Array, "1 n d"]:
        """Positional embeddings for a ``gh x gw`` grid (HF ``interpolate_pos_encoding``)."""
        pos = self.position_embeddings[...]
        n = pos.shape[1] - 1
        if n == gh * gw and gh == gw:
            return pos
        side = int(round(n ** 0.5))
        grid = pos[0, 1:].reshape(side, side, -1)
        grid = preprocess.resize(grid[None], gh, gw, method="bicubic", antialias=False)[0]
        return jnp.concatenate([pos[:, :1], grid.reshape(1, gh * gw, -1)], axis=1)

    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b n d"]:
        z = self.patch_embeddings(x)
        cls = jnp.broadcast_to(self.cls_token[...], (z.shape[0], 1, z.shape[-1]))
        z = jnp.concatenate([cls, z], axis=1)
        gh, gw = x.shape[1] // self.patch_size, x.shape[2] // self.patch_size
        return z + self.positions(gh, gw)


class Encoder(nnx.Module):
    def __init__(self, c: ViTConfig, rngs: nnx.Rngs):
        self.layer = nnx.List([Layer(c, rngs) for _ in range(c.num_hidden_layers)])


class Dinov2(nnx.Module):
    """``Dinov2Model``: ``__call__`` gives ``last_hidden_state [b, 1 + g_h g_w, d]``."""

    def __init__(self, c: ViTConfig, *, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.embeddings = Embeddings(c, rngs)
        self.encoder = Encoder(c, rngs)
        self.layernorm = _layer_norm(c.hidden_size, c.layer_norm_eps, rngs)

    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b n d"]:
        z = self.embeddings(x)
        for layer in self.encoder.layer:
            z = layer(z)
        return self.layernorm(z)
