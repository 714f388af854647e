r"""Feature networks for the memorization, diversity and quality metrics (issue 14).

``load(spec)`` returns a :class:`FeatureExtractor` (see :mod:`memjax.features.base`) from a
spec ``"NAME:PATH"`` (``sscd``, ``dinov2``, ``inception``, ``squeezenet``) or ``"pixels"``.
Each network lives in its own module exposing ``load(path, **options) -> FeatureExtractor``;
they are imported lazily, so importing memjax never builds a network.
"""

from __future__ import annotations

from memjax.features.base import FeatureExtractor, to_rgb, to_unit_interval

__all__ = ["FeatureExtractor", "load", "to_rgb", "to_unit_interval"]

# name -> "module:function"; each function takes (path, **options) and returns a FeatureExtractor.
_LOADERS = {
    "sscd": "memjax.features.sscd:load",
    "dinov2": "memjax.features.dinov2:load",
    "inception": "memjax.features.inception:load",
    "squeezenet": "memjax.features.squeezenet:load",
}
