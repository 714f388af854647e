"""Datasets. The embedded default is scikit-learn's bundled 8x8 digits: real data, no download.

Images are channel-last ``[n, H, W, C]`` float32 in ``[-1, 1]``.
"""

from __future__ import annotations

import numpy as np


def load_digits(*, return_labels: bool = False):
    """All 1,797 of scikit-learn's 8x8 digits as ``[1797, 8, 8, 1]`` float32 in [-1, 1].

    The raw pixels are integers 0..16; they are mapped by ``x / 8 - 1``.
    """
    from sklearn.datasets import load_digits as _load

    d = _load()
    images = (d.images.astype(np.float32) / 8.0 - 1.0)[..., None]
    if return_labels:
        return images, d.target.astype(np.int32)
    return images
