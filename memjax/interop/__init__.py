"""Bridges in: diffusers UNet2DModel -> Flax NNX (safetensors, no torch); any torch module -> score_fn.

* ``memjax.interop.load_pretrained(path)`` (:mod:`memjax.interop.diffusers`) loads a diffusers
  ``save_pretrained`` directory into the Flax NNX port (:mod:`memjax.interop.unet2d`) with its
  schedule (:mod:`memjax.schedules`) and a ``score_fn``; no torch needed.
* :mod:`memjax.interop.torch` -- ``from_torch(module, sde, example_shape, prediction=...)``: a
  ``torch.nn.Module`` (eps / x0 / v prediction called ``module(x, label(t))``, or an EDM
  denoiser ``D(x, sigma)`` with the VP change of variables) as a memjax ``score_fn``, through
  ``jax.pure_callback`` with a ``torch.func.jvp`` forward-mode rule. Needs the ``interop``
  extra (torch).

Everything is imported on first attribute access, so ``import memjax`` never imports torch.
"""

import importlib

__all__ = ["Pretrained", "diffusers", "load_pretrained", "torch", "unet2d"]

_MODULES = ("diffusers", "torch", "unet2d")
_NAMES = {"load_pretrained": "diffusers", "Pretrained": "diffusers"}


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"memjax.interop.{name}")  # import binds it on this package
    if name in _NAMES:
        return getattr(importlib.import_module(f"memjax.interop.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'memjax.interop' has no attribute {name!r}")
