"""Bridges in: diffusers UNet2DModel -> Flax NNX (safetensors, no torch), any torch module -> score_fn.

``memjax.interop.load_pretrained(path)`` (:mod:`memjax.interop.diffusers`) loads a diffusers
``save_pretrained`` directory; the network itself is :mod:`memjax.interop.unet2d`.
"""

_LAZY = {"load_pretrained": "diffusers", "Pretrained": "diffusers"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"memjax.interop.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'memjax.interop' has no attribute {name!r}")
