r"""Feature networks for the memorization, diversity and quality metrics (issue 14).

``load(spec)`` returns a :class:`FeatureExtractor` (see :mod:`memjax.features.base`) from a
spec ``"NAME:PATH"`` or ``(NAME, PATH)`` (``sscd``, ``dinov2``, ``inception``, ``squeezenet``)
or ``"pixels"``::

    sscd = features.load("sscd:/weights/sscd_disc_mixup.safetensors")
    desc = sscd(images)                      # [n, 512] NumPy, unit rows

Each network lives in its own module exposing ``load(path, **options) -> FeatureExtractor``;
they are imported lazily, so importing memjax never builds a network. Published PyTorch files
are converted once with ``python -m memjax.features.convert NAME IN OUT.safetensors``.

Also here: FID (:func:`fid`, :func:`statistics`, :func:`save_statistics`,
:func:`load_statistics`, from :mod:`memjax.features.frechet`) and which similarity bands belong
to which feature space (:func:`bands_for`, :mod:`memjax.features.bands`).
"""

from __future__ import annotations

import importlib
import os

from memjax.features.bands import FEATURE_BANDS, bands_for
from memjax.features.base import FeatureExtractor
from memjax.features.frechet import fid, load_statistics, save_statistics, statistics

__all__ = ["FEATURE_BANDS", "FeatureExtractor", "NAMES", "bands_for", "fid", "load",
           "load_statistics", "save_statistics", "statistics"]

# name -> "module:function"; each function takes (path, **options) and returns a FeatureExtractor.
_LOADERS = {
    "sscd": "memjax.features.sscd:load",
    "dinov2": "memjax.features.dinov2:load",
    "inception": "memjax.features.inception:load",
    "squeezenet": "memjax.features.squeezenet:load",
}
NAMES = ("pixels",) + tuple(_LOADERS)


def _pixels() -> FeatureExtractor:
    """The identity feature space: images flattened, in ``[-1, 1]`` (``dim`` 0: ``H W C``)."""
    return FeatureExtractor(name="pixels", dim=0,
                            apply=lambda x: (2.0 * x - 1.0).reshape(x.shape[0], -1), rgb=False)


def _parse(spec, path):
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        name, path = spec
    elif isinstance(spec, str):
        name, sep, rest = spec.partition(":")
        if sep:
            path = rest
    else:
        raise ValueError(f"spec: expected 'NAME:PATH', (NAME, PATH) or 'pixels' with NAME in "
                         f"{list(NAMES)}, got {spec!r}")
    return name.strip().lower(), path


def load(spec, path=None, **options) -> FeatureExtractor:
    """The feature network named by ``spec``.

    Args:
      spec: ``"NAME:PATH"``, ``(NAME, PATH)``, ``NAME`` with ``path`` given, or ``"pixels"``;
        NAME in :data:`NAMES`.
      path: the weights (a ``.safetensors`` file, or a directory for ``dinov2``).
      **options: passed to the network's ``load`` (e.g. ``size=``, ``batch_size=``).

    Raises:
      ValueError: unknown name (the message lists the valid names), missing path or file.
    """
    name, path = _parse(spec, path)
    if name == "pixels":
        if path or options:
            raise ValueError(f"spec: 'pixels' takes no path or options, got {path!r}, "
                             f"{sorted(options)}")
        return _pixels()
    if name not in _LOADERS:
        raise ValueError(f"spec: unknown feature network {name!r} in {spec!r}; expected one of "
                         f"{list(NAMES)} ('NAME:PATH' for the networks)")
    if not path:
        raise ValueError(f"path: feature network {name!r} needs its weights: "
                         f"'{name}:/path/to/weights'")
    if not os.path.exists(os.fspath(path)):
        raise ValueError(f"path: no such file or directory {os.fspath(path)!r} for feature "
                         f"network {name!r}")
    module, fn = _LOADERS[name].split(":")
    return getattr(importlib.import_module(module), fn)(path, **options)
