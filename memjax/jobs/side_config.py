"""SIDE's config (paper 001): the fields, their paper values, and validation before any work.

:func:`default_config` documents every field; ``configs/digits_side.py`` starts from it.
Re-exported by :mod:`memjax.side`.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from memjax import _checks, sampling

__all__ = ["LABELS", "FEATURES", "GUIDANCE", "PAPER_LAMBDA_BAND", "default_config",
           "validate_config", "band_objects", "metric_bands"]

LABELS = ("original", "kmeans")
FEATURES = ("pixels", "classifier")
GUIDANCE = ("td", "ti")
PAPER_LAMBDA_BAND = (5.0, 9.0)
"""Paper 001 section 5.3: Table 1 averages the results over lambda from 5 to 9."""


def default_config() -> ml_collections.ConfigDict:
    """The SIDE config (all fields documented here; ``configs/digits_side.py`` starts from it).

    Fields:
      seed: seeds every stage.
      target_workdir: training workdir of the target model (:func:`memjax.training.load_trained`).
        Empty: the script trains ``target`` (a training config) under ``workdir/target``.
      target_step: checkpoint step of the target to use (0: the latest).
      model.source: instead of ``target_workdir``, any model source
        (:func:`memjax.jobs.sources.load_model_source`: ``"diffusers:PATH"``, ``"module:fn"``);
        its training images then come from a data section ``config.data`` the config adds.
      labels: ``"original"`` (a normal classifier on the training labels; "OL") or ``"kmeans"``.
      num_clusters: K for k-means (paper: 100).
      kmeans_features: ``"pixels"``, ``"classifier"`` (the normal classifier's penultimate
        features; needs labels to train it, so mostly for ablations) or a feature network
        ``"sscd:PATH"``, ``"dinov2:PATH"``, ``"inception:PATH"``, ``"squeezenet:PATH"``
        (:mod:`memjax.features`; the later version of paper 001 clusters SSCD features).
      guidance_classifier: ``"td"`` (the TDKD student, eq. 13: SIDE) or ``"ti"`` (paper 001
        Table 1's time-independent ablation: guidance by a classifier of clean images, called
        at every ``t`` without knowing it; with ``labels="original"`` the normal classifier
        itself, with k-means a time-independent ResNet of the ``tdkd`` size fitted to the
        pseudo-labels of the clean synthetic images).
      lambda_band: ``(lo, hi)``, declared before the run: the reported SIDE number is the mean
        of AMS / UMS over the sweep's lambdas in ``[lo, hi]`` (paper 001 Table 1: 5 to 9). The
        best lambda per band is printed only as a labelled post-hoc extra.
      classifier: ``stage_sizes``, ``width``, ``num_steps``, ``batch_size``, ``learning_rate``,
        ``weight_decay`` of the normal classifier (a :class:`memjax.models.ResNet`).
      synthetic: ``num_samples`` unguided samples from the target, ``sampler``, ``num_steps``,
        ``heldout`` (images held out to measure the TDKD KL).
      tdkd: ``stage_sizes``, ``width``, ``num_steps``, ``batch_size``, ``learning_rate`` (AdamW,
        1e-4 as in paper 001 section 5.1), ``weight_decay``, ``temperature``, ``log_every``.
        The time module sits directly after the first BatchNorm of every residual block
        (appendix C, :class:`memjax.models.layers.BasicBlock`).
      extraction: ``lambdas`` (paper: every integer 0..50; 0 = "Random"), ``samples_per_class``
        (N_G = that x classes), ``sampler`` (``"ddim"``, ``"sde"``, ``"ode"``), ``num_steps``,
        ``eta``, ``batch_size``.
      metrics: ``measure`` (``"normalized_l2"``, ``"l2"``, ``"cosine"``), ``features`` (the
        space the measure is taken in: ``"pixels"``, or with ``measure="cosine"`` a feature
        network ``"NAME:PATH"`` as above), ``bands`` (name -> ``(lo, hi)``, half-open
        ``[lo, hi)``; reported as user-chosen. Empty with ``"cosine"`` on ``"sscd:PATH"``:
        paper 001's SSCD bands; empty otherwise is an error), ``n`` and ``alpha`` of
        normalized L2, ``grid_size`` (extracted images shown). UMS is reported twice: with the
        best match of each image (``match="best"``) and as eq. 15 defines it (every training
        image in the band, ``match="all"``).
      classes_ablation: paper 001 Table 2. ``num_clusters`` (empty: off): k-means K values, each
        a full SIDE run under ``workdir/classes/K_<K>`` sharing the synthetic set, at
        ``lambdas`` (paper: 5) with ``extraction.samples_per_class`` images per class
        (paper: 1,200); a linear fit of AMS / UMS against K per band.
      progress: tqdm bars.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.target_workdir = ""
    c.target_step = 0
    c.model = ml_collections.ConfigDict(dict(source=""))
    c.labels = "original"
    c.num_clusters = 10
    c.kmeans_features = "pixels"
    c.guidance_classifier = "td"
    c.lambda_band = PAPER_LAMBDA_BAND
    c.classifier = ml_collections.ConfigDict(dict(
        stage_sizes=(1, 1), width=16, num_steps=400, batch_size=128, learning_rate=1e-3,
        weight_decay=1e-4))
    c.synthetic = ml_collections.ConfigDict(dict(num_samples=1024, sampler="ddim", num_steps=100,
                                                 heldout=128))
    c.tdkd = ml_collections.ConfigDict(dict(
        stage_sizes=(1, 1), width=16, num_steps=600, batch_size=128, learning_rate=1e-4,
        weight_decay=1e-4, temperature=1.0, log_every=100))
    c.extraction = ml_collections.ConfigDict(dict(
        lambdas=tuple(range(51)), samples_per_class=50, sampler="ddim", num_steps=100, eta=0.0,
        batch_size=256))
    c.metrics = ml_collections.ConfigDict(dict(
        measure="normalized_l2", features="pixels", bands=ml_collections.ConfigDict(dict(
            low=(1.5, 10.0), mid=(1.4, 1.5), high=(1.35, 1.4))),
        n=50, alpha=0.5, grid_size=16))
    c.classes_ablation = ml_collections.ConfigDict(dict(num_clusters=(), lambdas=(5.0,),
                                                        samples_per_class=0))
    c.progress = True
    return c


def _check_lambdas(field: str, lams, *, allow_empty: bool = False) -> None:
    lams = list(lams)
    if not lams and not allow_empty:
        raise ValueError(f"{field}: expected at least one lambda")
    for lam in lams:
        if not np.isscalar(lam) or not np.isfinite(lam) or lam < 0:
            raise ValueError(f"{field}: expected finite lambdas >= 0, got {lam!r}")
    if len(set(float(v) for v in lams)) != len(lams):
        raise ValueError(f"{field}: expected distinct values, got {lams}")


def _check_lambda_band(band) -> None:
    try:
        lo, hi = (float(v) for v in band)
    except (TypeError, ValueError) as e:
        raise ValueError(f"lambda_band: expected (lo, hi), got {band!r}") from e
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo <= hi):
        raise ValueError(f"lambda_band: expected finite 0 <= lo <= hi, got {band!r}")


def validate_config(c) -> None:
    """``ValueError`` naming the field of an invalid SIDE config (before any work)."""
    _checks.check_choice("labels", c.labels, LABELS)
    from memjax.jobs import feature_space as fs

    fs.check_spec(c.kmeans_features, "kmeans_features")
    _checks.check_positive_int("num_clusters", c.num_clusters)
    _checks.check_choice("guidance_classifier", c.get("guidance_classifier", "td"), GUIDANCE)
    _check_lambda_band(c.get("lambda_band", PAPER_LAMBDA_BAND))
    for sec in ("classifier", "tdkd"):
        for f in ("num_steps", "batch_size", "width"):
            _checks.check_positive_int(f"{sec}.{f}", c[sec][f])
        _checks.check_positive(f"{sec}.learning_rate", c[sec].learning_rate)
    _checks.check_positive("tdkd.temperature", c.tdkd.temperature)
    _checks.check_positive_int("synthetic.num_samples", c.synthetic.num_samples)
    if not 0 <= c.synthetic.heldout < c.synthetic.num_samples:
        raise ValueError(f"synthetic.heldout: expected 0 <= heldout < num_samples, got "
                         f"{c.synthetic.heldout}")
    sampling.check_sampler_args(c.synthetic.sampler, c.synthetic.num_steps, 0.0, "tsit5", 1e-5, 1e-5)
    e = c.extraction
    sampling.check_sampler_args(e.sampler, e.num_steps, e.eta, "tsit5", 1e-5, 1e-5)
    _check_lambdas("extraction.lambdas", e.lambdas)
    _checks.check_positive_int("extraction.samples_per_class", e.samples_per_class)
    _checks.check_positive_int("extraction.batch_size", e.batch_size)
    ab = c.get("classes_ablation", {})
    for k in ab.get("num_clusters", ()):
        _checks.check_positive_int("classes_ablation.num_clusters", k)
    if ab.get("num_clusters", ()):
        if c.labels != "kmeans":
            raise ValueError("classes_ablation.num_clusters: the number of classes is varied by "
                             f"k-means; expected labels='kmeans', got {c.labels!r}")
        _check_lambdas("classes_ablation.lambdas", ab.lambdas)
        if int(ab.get("samples_per_class", 0)) < 0:
            raise ValueError(f"classes_ablation.samples_per_class: expected >= 0 (0: "
                             f"extraction.samples_per_class), got {ab.samples_per_class}")
    from memjax.metrics import memorization as mem

    _checks.check_choice("metrics.measure", c.metrics.measure, mem.MEASURES)
    for name, b in c.metrics.bands.items():
        if len(tuple(b)) != 2 or not b[0] < b[1]:
            raise ValueError(f"metrics.bands.{name}: expected (lo, hi) with lo < hi, got {b!r}")
    space = c.metrics.get("features", "pixels")  # a feature network: cosine in its bands
    if space != "pixels":
        fs.check_spec(space, "metrics.features")
        if space == "classifier" or c.metrics.measure != "cosine":
            raise ValueError(f"metrics.features: a feature network 'NAME:PATH' is measured by "
                             f"metrics.measure='cosine', got {space!r} with "
                             f"{c.metrics.measure!r}")
        metric_bands(c)


def band_objects(bands) -> dict:
    """Config bands ``name -> (lo, hi)`` as half-open :class:`~memjax.metrics.memorization.Band`."""
    from memjax.metrics import memorization as mem

    return {k: mem.Band(float(v[0]), float(v[1]), "left") for k, v in bands.items()}


def metric_bands(c, feature_space: str | None = None) -> tuple[dict, str]:
    """The bands of ``c.metrics`` and where they come from: the config's (user-chosen), or
    paper 001's for cosine similarities of SSCD descriptors with empty ``metrics.bands``."""
    from memjax.jobs import feature_space as fs

    mc = c.metrics
    if mc.measure == "cosine":
        return fs.similarity_bands(mc.get("features", "pixels"), mc.bands,
                                   field="metrics.bands", feature_space=feature_space)
    return band_objects(mc.bands), "user-chosen (metrics.bands)"
