r"""DINOv2 CLS-token features (paper 002's memorization similarity), weights from Hugging Face.

``load(path)`` reads a Hugging Face ``Dinov2Model`` directory (``config.json`` +
``model.safetensors``, or a sharded ``model.safetensors.index.json``) with safetensors and NumPy,
no torch, and returns a :class:`~memjax.features.base.FeatureExtractor` named
``"dinov2-vits14"`` / ``"dinov2-vitb14"`` / ... whose rows are the ``pooler_output`` (the CLS
row of the final layer norm, :mod:`memjax.features.vit`), L2-normalised by default so that inner
products are cosine similarities.

Accepted key layouts (all mapped to the current ``transformers`` one): ``save_pretrained``'s
(``attention.attention.query``, ``attention.output.dense``, ``mlp.weights_in/out``), the current
in-memory one (``attention.q_proj``, ``mlp.gate_proj``), either with a ``dinov2.`` prefix, and
the original facebookresearch state dict (``blocks.N.attn.qkv``, ``ls1.gamma``, ``pos_embed``).
A Hugging Face directory needs no conversion; the facebookresearch ``.pth`` (torch hub's
``dinov2_vits14_pretrain.pth``, ...) is converted once, to the ``transformers`` names, with::

    python -m memjax.features.convert dinov2 dinov2_vits14_pretrain.pth dinov2_vits14.safetensors

A bare ``.safetensors`` file without ``config.json`` takes its shapes from the weights and the
head count from ``arch`` (or the ViT-S/B/L/g table).

Preprocessing, the ``facebook/dinov2-*`` ``BitImageProcessor`` configuration applied to float
images in ``[0, 1]``:

1. resize the shorter side to ``resize = 256`` (longer side ``int(256 long / short)``),
   bicubic with antialias (torchvision ``resize(..., BICUBIC, antialias=True)`` on a float
   tensor: Keys' cubic ``a = -0.5``, support scaled when shrinking);
2. center crop ``crop = 224`` with corner ``((h - 224) // 2, (w - 224) // 2)`` (Hugging Face's
   rounding, ``center_crop(..., rounding="floor")``);
3. normalise with the ImageNet mean ``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``.

This equals ``BitImageProcessor`` applied to the float images with ``do_rescale=False``
(the interop test runs exactly that). Given ``uint8`` images the processor resizes them in
``uint8``, rounding and clamping the result (measured on 120 x 160 -> 256 x 341: about 1 grey
level at most on smooth images, mean 0.3; up to 39 levels on pixel noise, where bicubic
overshoots); memjax keeps float32 throughout instead. ``resize=None`` / ``crop=None`` skip a
step. The original facebookresearch code interpolates its positional embeddings with a ``+0.1``
scale offset; memjax always uses the Hugging Face rule (:mod:`memjax.features.vit`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from memjax.features import preprocess as preprocess_lib
from memjax.features import weights
from memjax.features.base import FeatureExtractor, check_precision, from_nnx
from memjax.features.preprocess import IMAGENET_MEAN, IMAGENET_STD
from memjax.features.vit import ViTConfig, Dinov2

__all__ = ["ARCHS", "IGNORE", "convert_keys", "load", "preprocess", "read_checkpoint"]

# Published sizes (``facebook/dinov2-*``): (hidden, depth, heads, swiglu).
ARCHS = {
    "vits14": ViTConfig(384, 12, 6),
    "vitb14": ViTConfig(768, 12, 12),
    "vitl14": ViTConfig(1024, 24, 16),
    "vitg14": ViTConfig(1536, 40, 24, use_swiglu_ffn=True),
}

# Keys of the checkpoints the CLS features do not use: the masked-image-modelling token.
IGNORE = ("embeddings.mask_token",)

_HF_OLD = [  # save_pretrained's (original) layout -> the current transformers layout
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.mlp\.weights_out\.", ".mlp.down_proj."),
]
_FB = [  # facebookresearch/dinov2 state dict -> the current transformers layout
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^mask_token$", "embeddings.mask_token"),
    (r"^pos_embed$", "embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^norm\.", "layernorm."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layer.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.ls(\d)\.gamma$", r"encoder.layer.\1.layer_scale\2.lambda1"),
    (r"^blocks\.(\d+)\.mlp\.w3\.", r"encoder.layer.\1.mlp.down_proj."),
    (r"^blocks\.(\d+)\.", r"encoder.layer.\1."),
]
_FUSED = [  # fused tensors split along dim 0 into these parts
    (r"^(.*)\.attn\.qkv\.(weight|bias)$", ("attention.q_proj", "attention.k_proj", "attention.v_proj")),
    (r"^(.*)\.mlp\.w12\.(weight|bias)$", ("mlp.gate_proj", "mlp.up_proj")),
    (r"^(.*)\.mlp\.weights_in\.(weight|bias)$", ("mlp.gate_proj", "mlp.up_proj")),
]


def _rename(key: str, rules) -> str:
    for pattern, new in rules:
        key, n = re.subn(pattern, new, key)
        if n and pattern.startswith("^"):
            break
    return key


def convert_keys(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Maps any accepted key layout (module docstring) to the current ``transformers`` one
    (idempotent; :func:`load` applies it, ``python -m memjax.features.convert dinov2`` too)."""
    out = {}
    facebook = "pos_embed" in tensors or "cls_token" in tensors
    for key, w in tensors.items():
        key = key[len("dinov2."):] if key.startswith("dinov2.") else key
        for pattern, parts in _FUSED:
            m = re.match(pattern, key)
            if m:
                prefix = _rename(m.group(1) + ".", _FB if facebook else [])[:-1]
                for part, chunk in zip(parts, np.split(w, len(parts), axis=0)):
                    out[f"{prefix}.{part}.{m.group(2)}"] = chunk
                break
        else:
            out[_rename(key, _FB) if facebook else _rename("." + key, _HF_OLD)[1:]] = w
    return out


def _read_tensors(path: str) -> dict[str, np.ndarray]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isdir(path) and os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors.update(weights.read_safetensors(os.path.join(path, shard)))
        return tensors
    file = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
    return weights.read_safetensors(file)


def _config_from_json(path: str, file: str) -> ViTConfig:
    with open(file) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "dinov2":
        raise ValueError(f"path: {path!r}: config.json has model_type {cfg.get('model_type')!r}, "
                         "expected 'dinov2' (a Dinov2Model directory)")
    fields = {f.name for f in dataclasses.fields(ViTConfig)}
    kwargs = {k: v for k, v in cfg.items() if k in fields}
    for key in ("image_size", "patch_size"):
        if isinstance(kwargs.get(key), (list, tuple)):
            kwargs[key] = int(kwargs[key][0])
    return ViTConfig(**kwargs)


def _config_from_weights(path: str, t: dict[str, np.ndarray], arch: str | None) -> ViTConfig:
    if "embeddings.cls_token" not in t or "embeddings.patch_embeddings.projection.weight" not in t:
        raise ValueError(f"path: {path!r} is not a DINOv2 state dict: no embeddings.cls_token / "
                         "patch embedding (and no config.json beside it)")
    d = t["embeddings.cls_token"].shape[-1]
    heads = {c.hidden_size: c.num_attention_heads for c in ARCHS.values()}
    if arch is not None:
        heads[d] = ARCHS[arch].num_attention_heads
    if d not in heads:
        raise ValueError(f"path: {path!r}: hidden size {d} is not a published DINOv2 size; give arch= or a "
                         "config.json with num_attention_heads")
    depth = len({k.split(".")[2] for k in t if k.startswith("encoder.layer.")})
    patch = t["embeddings.patch_embeddings.projection.weight"].shape[-1]
    side = int(round((t["embeddings.position_embeddings"].shape[1] - 1) ** 0.5))
    swiglu = "encoder.layer.0.mlp.gate_proj.weight" in t
    fc1 = "encoder.layer.0.mlp.fc1.weight"
    ratio = t[fc1].shape[0] / d if fc1 in t else 4.0
    return ViTConfig(d, depth, heads[d], ratio, patch, side * patch, use_swiglu_ffn=swiglu)


def read_checkpoint(path: str, arch: str | None = None) -> tuple[ViTConfig, dict[str, np.ndarray]]:
    """``(config, tensors)`` of a DINOv2 checkpoint, keys in the current ``transformers`` layout."""
    path = os.fspath(path)
    if arch is not None and arch not in ARCHS:
        raise ValueError(f"arch: expected one of {sorted(ARCHS)}, got {arch!r}")
    if not os.path.exists(path):
        raise ValueError(f"path: no such file or directory {path!r} (expected a Dinov2Model "
                         "directory or .safetensors file)")
    tensors = convert_keys(_read_tensors(path))
    config_file = os.path.join(path if os.path.isdir(path) else os.path.dirname(path), "config.json")
    if os.path.isfile(config_file):
        config = _config_from_json(path, config_file)
    else:
        config = _config_from_weights(path, tensors, arch)
    for key in ("layer_scale1", "layer_scale2"):  # checkpoints trained without layer scale
        for i in range(config.num_hidden_layers):
            tensors.setdefault(f"encoder.layer.{i}.{key}.lambda1",
                               np.ones((config.hidden_size,), np.float32))
    return config, tensors


def preprocess(x: Float[Array, "b h w 3"], resize: int | None = 256, crop: int | None = 224,
               mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Float[Array, "b s s 3"]:
    """Steps 1-3 of the module docstring on float images in ``[0, 1]``."""
    if resize is not None:
        x = preprocess_lib.resize_shorter(x, resize, method="bicubic", antialias=True)
    if crop is not None:
        x = preprocess_lib.center_crop(x, crop, rounding="floor")
    return preprocess_lib.normalize(x, mean, std)


def _name(c: ViTConfig) -> str:
    for name, a in ARCHS.items():
        if (a.hidden_size, a.num_hidden_layers, c.patch_size) == (c.hidden_size, c.num_hidden_layers, 14):
            return f"dinov2-{name}"
    return f"dinov2-d{c.hidden_size}x{c.num_hidden_layers}p{c.patch_size}"


def load(path: str, *, arch: str | None = None, normalized: bool = True, resize: int | None = 256,
         crop: int | None = 224, batch_size: int = 64, precision: str = "highest"
         ) -> FeatureExtractor:
    """DINOv2 CLS features from a ``Dinov2Model`` directory or safetensors file (module docstring).

    Args:
      path: directory with ``config.json`` and ``model.safetensors``, or a ``.safetensors`` file.
      arch: ``"vits14"``, ``"vitb14"``, ``"vitl14"``, ``"vitg14"``: head count when no
        ``config.json`` is present (otherwise inferred from the hidden size).
      normalized: L2-normalise the features (cosine similarities by inner product).
      resize, crop: preprocessing sizes (``None`` skips the step).
      batch_size: default images per step.
      precision: matmul / convolution precision (:func:`memjax.features.base.from_nnx`).

    Raises:
      ValueError: bad ``arch`` or ``precision``, a missing or unreadable checkpoint, or weights
        that do not fit the configuration.
    """
    check_precision(precision)
    config, tensors = read_checkpoint(path, arch)
    model = weights.load_into(Dinov2, path, args=(config,), what="DINOv2", tensors=tensors,
                              ignore=IGNORE)

    def forward(m: Dinov2, images):
        x = preprocess(images, resize, crop)
        if x.shape[1] < config.patch_size or x.shape[2] < config.patch_size:
            raise ValueError(f"images: expected at least {config.patch_size} pixels per side after "
                             f"preprocessing, got {x.shape[1:3]}")
        f = m(x)[:, 0]
        if normalized:
            f = f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
        return f

    return from_nnx(_name(config), model, forward, dim=config.hidden_size, normalized=normalized,
                    batch_size=batch_size, precision=precision)
