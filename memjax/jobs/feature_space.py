r"""Feature spaces in the jobs: one spec syntax, cached feature stages, honest bands (issue 14).

Every job that measures similarity, diversity or quality in a feature space takes a spec::

    "pixels" | "classifier" | "sscd:PATH" | "dinov2:PATH" | "inception:PATH" | "squeezenet:PATH"

resolved by :func:`memjax.jobs.sources.load_features`. This module adds what the jobs share:

* :func:`check_spec` validates a spec (``ValueError`` naming the field, before any compile);
* :func:`spec_id` fingerprints a spec with the *content* of its weight file (or directory), so
  a cached stage is recomputed when the weights change even if the path does not;
* :func:`cached_features` is the stage ``features(images)`` stored in the workdir under that id
  and the images' fingerprint;
* :func:`similarity_bands` says which bands the similarities of a feature space are read in:
  paper 001's SSCD bands only for SSCD descriptors (:func:`memjax.features.bands_for`), the
  user's own named bands (reported as user-chosen) otherwise, else a ``ValueError``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Mapping

import numpy as np

from memjax import workdir as wd

__all__ = ["NETWORKS", "check_spec", "spec_id", "cached_features", "embedder",
           "similarity_bands", "declared_bands_apply", "frechet_label"]

NETWORKS = ("sscd", "dinov2", "inception", "squeezenet")


def check_spec(spec, field: str = "features") -> None:
    """``ValueError`` naming ``field`` unless ``spec`` is ``"pixels"``, ``"classifier"`` or
    ``"NAME:PATH"`` with NAME in :data:`NETWORKS` and a non-empty PATH."""
    if spec in ("pixels", "classifier"):
        return
    name, sep, path = str(spec).partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or name.strip().lower() not in NETWORKS or not path:
        raise ValueError(f"{field}: expected 'pixels', 'classifier' or 'NAME:PATH' with NAME in "
                         f"{list(NETWORKS)}, got {spec!r}")


def _content_hash(path: str) -> str:
    h = hashlib.sha1()
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
    for f in files:
        h.update(os.path.relpath(f, path).encode() if f != path else b"")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def spec_id(spec: str) -> str:
    """A fingerprint of ``spec`` and, for ``NAME:PATH``, of the bytes of its weights."""
    name, sep, path = spec.partition(":")
    if sep and os.path.exists(path):
        return wd.fingerprint(name.lower(), _content_hash(path))
    return wd.fingerprint(spec)


def cached_features(feats: Callable, spec: str, images: np.ndarray, stage: str, *,
                    extra=None, log: Callable[[str], None] | None = print) -> np.ndarray:
    """``feats(images)`` as a cached stage at ``stage`` (``<stage>.npz``), keyed by
    :func:`spec_id` of ``spec``, the images and ``extra`` (e.g. the classifier's training set)."""
    key = (spec_id(spec), getattr(feats, "name", spec), wd.fingerprint(images), extra)
    arrays, _ = wd.cached(stage, key, lambda: {"features": np.asarray(feats(images), np.float32)},
                          log=log)
    return arrays["features"]


def embedder(spec: str, workdir: str, *, field: str, train=None, seed: int = 0,
             log: Callable[[str], None] | None = print) -> tuple[Callable, str]:
    """``(embed, feature space name)``: ``embed(images, stage)`` returns the rows of ``spec``
    (the images themselves for ``"pixels"``), cached as ``workdir/features_<stage>.npz`` when
    ``stage`` is given and computed directly when it is None."""
    if spec == "pixels":
        return (lambda x, stage: np.asarray(x, np.float32).reshape(len(x), -1)), "pixels"
    from memjax.jobs import sources

    feats = sources.load_features(spec, train=train, workdir=f"{workdir}/classifier", seed=seed,
                                  field=field)
    extra = wd.fingerprint(train, int(seed)) if spec == "classifier" else None

    def embed(x, stage):
        if stage is None:
            return np.asarray(feats(x), np.float32)
        return cached_features(feats, spec, x, f"{workdir}/features_{stage}", extra=extra, log=log)

    return embed, getattr(feats, "name", spec)


def declared_bands_apply(spec: str) -> bool:
    """Whether ``spec`` names a network whose similarities have declared bands (SSCD)."""
    return isinstance(spec, str) and spec.partition(":")[0].strip().lower() == "sscd"


def similarity_bands(spec: str, user_bands: Mapping | None, *, field: str,
                     feature_space: str | None = None) -> tuple[dict, str]:
    """``({name: Band}, origin)``: the bands the cosine similarities of ``spec`` are read in.

    ``user_bands`` (``name -> (lo, hi)``, half-open ``[lo, hi)``; ``hi >= 1`` closes the top) are
    the user's own thresholds, ``origin = "user-chosen (<field>)"``. Without them only SSCD
    descriptors have bands (paper 001 section 5.2, ``origin = "paper 001 (SSCD)"``); any other
    feature space raises ``ValueError`` naming ``field``. ``feature_space`` (the extractor's
    name, once loaded) is checked with :func:`memjax.features.bands_for` as well.
    """
    from memjax.metrics import memorization as mem

    if user_bands:
        out = {}
        for name, b in dict(user_bands).items():
            b = tuple(b)
            if len(b) != 2 or not float(b[0]) < float(b[1]):
                raise ValueError(f"{field}.{name}: expected (lo, hi) with lo < hi, got {b!r}")
            out[str(name)] = mem.Band(float(b[0]), float(b[1]),
                                      "both" if float(b[1]) >= 1.0 else "left")
        return out, f"user-chosen ({field})"
    if not declared_bands_apply(spec):
        raise ValueError(f"{field}: no similarity bands are declared for features {spec!r} "
                         "(paper 001's bands hold for SSCD descriptors only); set your own named "
                         f"thresholds, e.g. {field} = {{'high': (0.95, 1.0)}}")
    if feature_space is not None:
        from memjax.features import bands_for

        return dict(bands_for(feature_space)), "paper 001 (SSCD)"
    return dict(mem.BANDS["sscd"]), "paper 001 (SSCD)"


def frechet_label(spec: str, feature_space: str) -> str:
    """``"FID"`` for Inception (pytorch-fid) features, else ``"Fréchet distance in <space>"``."""
    if isinstance(spec, str) and spec.partition(":")[0].strip().lower() == "inception":
        return "FID"
    return f"Fréchet distance in {feature_space}"
