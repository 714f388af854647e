"""Which similarity thresholds belong to which feature space (issue 14: honest bands).

A band of similarity values means something only in the feature space it was calibrated in.
Paper 001 calibrates its AMS / UMS bands on the cosine similarity of SSCD copy-detection
descriptors (low ``[0.4, 0.5)``, mid ``[0.5, 0.6)``, high ``[0.6, 1.0]``,
:data:`memjax.metrics.memorization.BANDS` ``["sscd"]``); on DINOv2, Inception or pixel
features the same numbers mean something else. :data:`FEATURE_BANDS` states, per feature-space
pattern (the :attr:`~memjax.features.base.FeatureExtractor.name` of an extractor, ``fnmatch``
syntax), the bands declared for it, and :func:`bands_for` refuses any other space.
"""

from __future__ import annotations

import fnmatch
from types import MappingProxyType
from typing import Mapping

from memjax.metrics.memorization import BANDS, Band

__all__ = ["FEATURE_BANDS", "bands_for"]

FEATURE_BANDS: Mapping[str, Mapping[str, Band]] = MappingProxyType({
    # SSCD descriptors (unit rows, cosine similarity): paper 001 section 5.2.
    "sscd-*": MappingProxyType(dict(BANDS["sscd"])),
})
"""Feature-space pattern -> ``{"low" | "mid" | "high": Band}``."""


def bands_for(feature_name) -> Mapping[str, Band]:
    """The similarity bands declared for the feature space ``feature_name``.

    Args:
      feature_name: a feature-space name such as ``"sscd-resnet50"``, or an extractor (its
        ``name`` is used).

    Raises:
      ValueError: no bands are declared for that feature space (e.g. SSCD bands requested on
        ``"dinov2-vits14"`` or ``"pixels"`` features).
    """
    name = getattr(feature_name, "name", feature_name)
    if not isinstance(name, str):
        raise ValueError(f"feature_name: expected a feature-space name, got {feature_name!r}")
    for pattern, bands in FEATURE_BANDS.items():
        if fnmatch.fnmatchcase(name, pattern):
            return bands
    raise ValueError(f"feature_name: no similarity bands are declared for the feature space "
                     f"{name!r}; bands exist for {sorted(FEATURE_BANDS)} only (paper 001's "
                     f"SSCD bands do not transfer to other features: pass explicit thresholds)")
