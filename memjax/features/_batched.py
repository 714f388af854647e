"""The one batching path of every feature network: jitted, sharded over devices, NumPy out.

:func:`extract` hands a per-image function to :func:`memjax.parallel.batched_map` (chunks of
``batch_size`` images, padded to a multiple of the device count and split over the mesh's
``"data"`` axis; the weights replicated). The raw images travel to the devices as they are
(``uint8`` stays 1 byte a channel); the conversion to ``[0, 1]`` RGB (:func:`to_unit_interval`,
:func:`to_rgb`) and the network's own preprocessing run inside the compiled function.
"""

from __future__ import annotations

import functools

import numpy as np

from memjax import parallel
from memjax.features.base import FeatureExtractor, to_rgb, to_unit_interval

__all__ = ["extract", "check_images"]


def check_images(images) -> np.ndarray:
    """``images`` as a NumPy ``[n, H, W, C]`` array (C in {1, 3}, uint8 or float); ValueError."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or 0 in x.shape:
        raise ValueError(f"images: expected a non-empty [n, H, W, C] batch with C = 1 or 3, "
                         f"got shape {x.shape}")
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"images: expected uint8 in [0, 255] or float in [-1, 1], got dtype "
                         f"{x.dtype}")
    return x


@functools.lru_cache(maxsize=16)
def _per_image(extractor: FeatureExtractor):
    """The per-image function for :func:`memjax.parallel.batched_map` (one per extractor, so
    its compilation is reused across calls)."""
    def prepare(x):
        x = to_unit_interval(x[None])
        return to_rgb(x) if extractor.rgb else x

    if extractor.forward is not None:
        def fn(x, variables):
            return extractor.forward(variables, prepare(x))[0]
    else:
        def fn(x):
            return extractor.apply(prepare(x))[0]
    return fn


def extract(extractor: FeatureExtractor, images, *, batch_size: int, mesh=None,
            progress: bool = False) -> np.ndarray:
    """Features ``[n, extractor.dim]`` (float32 NumPy) of ``images`` ``[n, H, W, C]``.

    Args:
      extractor: the network.
      images: ``uint8`` in ``[0, 255]`` or float in ``[-1, 1]``; grey (C = 1) or RGB.
      batch_size: images per step (rounded up to a multiple of the device count).
      mesh: a 1-D ``"data"`` mesh (default: all devices).
      progress: show a progress bar.
    """
    x = check_images(images)
    args = () if extractor.forward is None else (extractor.variables,)
    out = parallel.batched_map(_per_image(extractor), x, batch_size=batch_size, mesh=mesh,
                               args=args, progress=progress, desc=extractor.name)
    return np.asarray(out, np.float32)
