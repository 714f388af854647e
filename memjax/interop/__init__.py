"""Bridges in: diffusers UNet2DModel -> Flax NNX (safetensors, no torch); any torch module -> score_fn.

* :mod:`memjax.interop.torch` -- ``from_torch(module, sde, example_shape, prediction=...)``: a
  ``torch.nn.Module`` (eps / x0 / v prediction called ``module(x, label(t))``, or an EDM
  denoiser ``D(x, sigma)`` with the VP change of variables) as a memjax ``score_fn``, through
  ``jax.pure_callback`` with a ``torch.func.jvp`` forward-mode rule. Needs the ``interop``
  extra (torch); imported on first attribute access.
"""

import importlib

_LAZY = ("torch",)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'memjax.interop' has no attribute {name!r}")
    return importlib.import_module(f"memjax.interop.{name}")  # import binds it on this package
