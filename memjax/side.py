r"""SIDE: Surrogate condItional Data Extraction from unconditional diffusion models (paper 001).

Paper 001 section 4 / appendix E, in stages (each stage is cached under a workdir, so a run
that is stopped continues where it stopped):

1. **Implicit labels.** Either a normal (time-independent) classifier trained on the training
   data with its original labels ("OL"), or implicit labels by k-means (``K`` clusters) on
   features of generated images (section 4.1; the later version of the paper uses K = 100 on
   copy-detection features). :func:`kmeans` is a jittable Lloyd's algorithm with k-means++
   seeding.
2. **Synthetic set.** Unguided samples of the target model (the training data is unknown).
3. **Pseudo-labels.** The teacher's distribution ``p_theta(y | x)`` on the synthetic set: the
   classifier's softmax, or (k-means) the one-hot cluster assignment.
4. **TDKD** (eq. 13). A time-dependent ResNet (time module after the first BatchNorm of every
   residual block, appendix C) is trained with AdamW (lr 1e-4 in the paper) to minimise
   ``KL(p_theta(y | x_0) || p^t_theta(y | x_t))`` at random ``t``
   (:func:`memjax.objectives.tdkd_loss`). The KL on held-out synthetic images at fixed noisy
   draws is recorded as training goes.
5. **Guided extraction** (eqs. 11-12). For every ``lambda`` of the sweep and every class, ``N``
   samples of the guided reverse process ``s + lambda grad log p_t(y | x_t)``
   (:func:`memjax.sampling.classifier_guidance`); ``lambda = 0`` is the unguided "Random"
   baseline. One compiled sampler serves the whole sweep (the class and lambda are per-example
   inputs), and each finished ``lambda`` is written to its own file, never recomputed.
6. **Scores.** AMS / UMS (eqs. 14-15, :func:`memjax.metrics.memorization.ams_ums`) in bands of a
   similarity measure; a table like paper 001 Table 1 / 4, AMS and UMS against lambda (Fig. 4)
   and extracted images next to their nearest training images (Fig. 1).

Every stage is stored under the workdir with the key of what it depends on (the config fields
it reads and the stages it consumes, :mod:`memjax.workdir`): change ``num_clusters`` and the
pseudo-labels, the TDKD student and the extractions are recomputed, the synthetic set is not.
The library pieces: :mod:`memjax.metrics.kmeans`, :mod:`memjax.fit` (the classifier fit loop
and its orbax checkpoints), :func:`heldout_kl` and :func:`score_extraction` here, and
:mod:`memjax.jobs.side_report`; :func:`run` composes them.
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jaxtyping import PRNGKeyArray

from memjax import _checks, console, sampling
from memjax import workdir as wd
from memjax.fit import FitHistory, batched_logits, fit_classifier  # noqa: F401
from memjax.jobs.side_report import (band_order, best_lambda, lambda_tag,  # noqa: F401
                                     results_table, write_report)
from memjax.metrics.kmeans import KMeans, kmeans, kmeans_assign, kmeans_plusplus  # noqa: F401
from memjax.sde import VPSDE

__all__ = ["LABELS", "FEATURES", "heldout_kl", "onehot_logits", "classifier_logits_fn",
           "ExtractionScores", "score_extraction", "default_config", "validate_config",
           "band_objects", "run", "load_target", "kmeans", "kmeans_plusplus", "kmeans_assign",
           "KMeans", "fit_classifier", "FitHistory", "batched_logits", "best_lambda",
           "results_table", "write_report", "band_order", "lambda_tag"]

LABELS = ("original", "kmeans")
FEATURES = ("pixels", "classifier")
CODE_VERSION = 1


# -- library pieces ------------------------------------------------------------------------------
def heldout_kl(td_model, images: np.ndarray, teacher_logits: np.ndarray, sde: VPSDE, *,
               key: PRNGKeyArray, num_draws: int = 4, batch_size: int = 512) -> float:
    r"""Mean ``KL(p_teacher(y | x_0) || p^t(y | x_t))`` over held-out images at fixed noisy draws.

    ``t ~ U(t_min, t_max)`` and the noise are drawn once from ``key`` (``num_draws`` per image),
    so successive calls during training measure the same quantity.
    """
    n = len(images)
    kt, kz = jax.random.split(key)
    t = np.asarray(jax.random.uniform(kt, (num_draws, n), minval=sde.t_min, maxval=sde.t_max))
    z = np.asarray(jax.random.normal(kz, (num_draws,) + images.shape, jnp.float32))
    logp = np.asarray(jax.nn.log_softmax(jnp.asarray(teacher_logits), -1))
    kls = []
    for d in range(num_draws):
        tb = t[d].reshape((-1,) + (1,) * (images.ndim - 1))
        xt = np.asarray(sde.alpha(tb)) * images + np.asarray(sde.sigma(tb)) * z[d]
        logq = np.asarray(jax.nn.log_softmax(jnp.asarray(
            batched_logits(td_model, xt.astype(np.float32), t[d], batch_size=batch_size)), -1))
        kls.append(np.sum(np.exp(logp) * (logp - logq), -1))
    return float(np.mean(kls))


def onehot_logits(labels: np.ndarray, num_classes: int, confidence: float = 30.0) -> np.ndarray:
    """Logits whose softmax is one-hot up to ``(K-1) e^{-confidence}``: hard pseudo-labels for
    the KL of eq. 13 (which then equals the cross-entropy)."""
    return (confidence * np.eye(num_classes, dtype=np.float32)[labels]).astype(np.float32)


# -- guided extraction and scores -----------------------------------------------------------------
def classifier_logits_fn(model) -> Callable:
    """``(x, t) -> logits [K]`` for one example from a batched time-dependent NNX classifier
    (in eval mode)."""
    model.eval()

    def fn(x, t):
        return model(x[None], jnp.reshape(jnp.asarray(t, x.dtype), (1,)))[0]

    return fn


class ExtractionScores(NamedTuple):
    """Scores of one set of generated images against the training set."""

    best: np.ndarray              # [N_G] best value of the measure per generated image
    index: np.ndarray             # [N_G] index of the best-matching training image
    l2: np.ndarray                # [N_G] L2 distance to the nearest training image
    ams: dict                     # band name -> AMS
    ums: dict                     # band name -> UMS


def score_extraction(generated: np.ndarray, train: np.ndarray, *, measure: str,
                     bands: dict, n: int = 50, alpha: float = 0.5) -> ExtractionScores:
    """AMS / UMS (paper 001 eqs. 14-15) of ``generated`` in every band of ``bands``
    (name -> :class:`memjax.metrics.memorization.Band`), with the best match of each image."""
    from memjax.metrics import memorization as mem

    best, idx = mem.best_match(generated, train, measure=measure, n=min(n, len(train)), alpha=alpha)
    d, _ = mem.nearest_neighbours(generated, train, k=1, metric="l2")
    ams, ums = {}, {}
    for name, band in bands.items():
        r = mem.ams_ums(generated, train, band=band, measure=measure, n=min(n, len(train)),
                        alpha=alpha)
        ams[name], ums[name] = float(r.ams), float(r.ums)
    return ExtractionScores(np.asarray(best), np.asarray(idx), np.asarray(d)[:, 0], ams, ums)


def default_config() -> ml_collections.ConfigDict:
    """The SIDE config (all fields documented here; ``configs/digits_side.py`` starts from it).

    Fields:
      seed: seeds every stage.
      target_workdir: training workdir of the target model (:func:`memjax.training.load_trained`).
        Empty: the script trains ``target`` (a training config) under ``workdir/target``.
      target_step: checkpoint step of the target to use (0: the latest).
      model.source: instead of ``target_workdir``, any model source
        (:func:`memjax.jobs.sources.load_model_source`: ``"diffusers:PATH"``,
        ``"package.module:function"``); its training images (the original labels, and the
        similarity of extractions) come from a data section ``config.data``
        (:func:`memjax.data.data_config`), which the config then has to add.
      labels: ``"original"`` (a normal classifier on the training labels; "OL") or ``"kmeans"``.
      num_clusters: K for k-means (paper: 100).
      kmeans_features: ``"pixels"``, ``"classifier"`` (the normal classifier's penultimate
        features; needs labels to train it, so mostly for ablations) or a feature network
        ``"sscd:PATH"``, ``"dinov2:PATH"``, ``"inception:PATH"``, ``"squeezenet:PATH"``
        (:mod:`memjax.features`; the later version of paper 001 clusters SSCD features).
      classifier: ``stage_sizes``, ``width``, ``num_steps``, ``batch_size``, ``learning_rate``,
        ``weight_decay`` of the normal classifier (a :class:`memjax.models.ResNet`).
      synthetic: ``num_samples`` unguided samples from the target, ``sampler``, ``num_steps``,
        ``heldout`` (images held out to measure the TDKD KL).
      tdkd: ``stage_sizes``, ``width``, ``num_steps``, ``batch_size``, ``learning_rate`` (1e-4),
        ``weight_decay``, ``temperature``, ``log_every``.
      extraction: ``lambdas`` (0 = "Random"), ``samples_per_class`` (N_G = that x classes),
        ``sampler`` (``"ddim"``, ``"sde"``, ``"ode"``), ``num_steps``, ``eta``, ``batch_size``.
      metrics: ``measure`` (``"normalized_l2"``, ``"l2"``, ``"cosine"``), ``features`` (the
        space the measure is taken in: ``"pixels"``, or with ``measure="cosine"`` a feature
        network ``"NAME:PATH"`` as above), ``bands`` (name -> ``(lo, hi)``, half-open
        ``[lo, hi)``; reported as user-chosen. Empty with ``"cosine"`` on ``"sscd:PATH"``:
        paper 001's SSCD bands; empty otherwise is an error), ``n`` and ``alpha`` of
        normalized L2, ``grid_size`` (extracted images shown).
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
    c.classifier = ml_collections.ConfigDict(dict(
        stage_sizes=(1, 1), width=16, num_steps=400, batch_size=128, learning_rate=1e-3,
        weight_decay=1e-4))
    c.synthetic = ml_collections.ConfigDict(dict(num_samples=1024, sampler="ddim", num_steps=100,
                                                 heldout=128))
    c.tdkd = ml_collections.ConfigDict(dict(
        stage_sizes=(1, 1), width=16, num_steps=600, batch_size=128, learning_rate=1e-3,
        weight_decay=1e-4, temperature=1.0, log_every=100))
    c.extraction = ml_collections.ConfigDict(dict(
        lambdas=(0, 1, 2, 4, 8), samples_per_class=50, sampler="ddim", num_steps=100, eta=0.0,
        batch_size=256))
    c.metrics = ml_collections.ConfigDict(dict(
        measure="normalized_l2", features="pixels", bands=ml_collections.ConfigDict(dict(
            low=(1.5, 10.0), mid=(1.4, 1.5), high=(1.35, 1.4))),
        n=50, alpha=0.5, grid_size=16))
    c.progress = True
    return c


def validate_config(c) -> None:
    """``ValueError`` naming the field of an invalid SIDE config (before any work)."""
    _checks.check_choice("labels", c.labels, LABELS)
    from memjax.jobs import feature_space as fs

    fs.check_spec(c.kmeans_features, "kmeans_features")
    _checks.check_positive_int("num_clusters", c.num_clusters)
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
    lams = list(e.lambdas)
    if not lams:
        raise ValueError("extraction.lambdas: expected at least one lambda")
    for lam in lams:
        if not np.isscalar(lam) or not np.isfinite(lam) or lam < 0:
            raise ValueError(f"extraction.lambdas: expected finite lambdas >= 0, got {lam!r}")
    if len(set(float(v) for v in lams)) != len(lams):
        raise ValueError(f"extraction.lambdas: expected distinct values, got {lams}")
    _checks.check_positive_int("extraction.samples_per_class", e.samples_per_class)
    _checks.check_positive_int("extraction.batch_size", e.batch_size)
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
        _metric_bands(c)



def band_objects(bands) -> dict:
    """Config bands ``name -> (lo, hi)`` as half-open :class:`~memjax.metrics.memorization.Band`."""
    from memjax.metrics import memorization as mem

    return {k: mem.Band(float(v[0]), float(v[1]), "left") for k, v in bands.items()}


def _metric_bands(c, feature_space: str | None = None) -> tuple[dict, str]:
    """The bands of ``c.metrics`` and where they come from: the config's (user-chosen), or
    paper 001's for cosine similarities of SSCD descriptors with empty ``metrics.bands``."""
    from memjax.jobs import feature_space as fs

    mc = c.metrics
    if mc.measure == "cosine":
        return fs.similarity_bands(mc.get("features", "pixels"), mc.bands,
                                   field="metrics.bands", feature_space=feature_space)
    return band_objects(mc.bands), "user-chosen (metrics.bands)"


# -- the stages ------------------------------------------------------------------------------------
def _fit_cfg(c) -> dict:
    return dict(num_steps=int(c.num_steps), batch_size=int(c.batch_size),
                learning_rate=float(c.learning_rate), weight_decay=float(c.weight_decay))


def _classifier_stage(config, workdir, ds, train_images, target_key, log):
    """The normal classifier on the original labels (or None when no stage needs it)."""
    from flax import nnx

    from memjax import fit, objectives
    from memjax.models import ResNet

    if not (config.labels == "original" or config.kmeans_features == "classifier"):
        return None, None
    if ds.train_labels is None:
        raise ValueError("labels: 'original' needs a labelled training set; use 'kmeans'")
    num_classes = int(ds.num_classes or int(ds.train_labels.max()) + 1)
    cc = config.classifier
    clf = ResNet(num_classes=num_classes, in_channels=train_images.shape[-1],
                 stage_sizes=tuple(cc.stage_sizes), width=cc.width, rngs=nnx.Rngs(config.seed))
    key = (target_key, cc.to_dict(), int(config.seed), wd.fingerprint(ds.train_labels), CODE_VERSION)

    def train_it():
        fit.fit_classifier(clf, objectives.classifier_loss,
                           {"image": train_images, "label": np.asarray(ds.train_labels, np.int32)},
                           key=jax.random.fold_in(jax.random.key(config.seed), 1),
                           progress=bool(config.progress), desc="classifier", **_fit_cfg(cc))
        acc = {}
        for split, x, y in (("train", ds.train, ds.train_labels),
                            ("heldout", ds.heldout, ds.heldout_labels)):
            if y is not None and len(x):
                acc[split] = float(np.mean(np.argmax(batched_logits(clf, np.asarray(x)), -1) == y))
        wd.save_json(f"{workdir}/classifier.json", {"accuracy": acc, "num_classes": num_classes})

    fit.fit_or_restore(clf, f"{workdir}/classifier", key, train_it, log=log, name="classifier")
    return clf, wd.fingerprint(key)


def _pseudo_label_stage(config, workdir, synthetic, syn_key, clf, clf_key, log):
    """Teacher logits on the synthetic set: the classifier's, or one-hot k-means clusters."""
    if config.labels == "original":
        key = ("original", syn_key, clf_key)

        def compute():
            logits = batched_logits(clf, synthetic)
            return {"logits": logits, "labels": np.argmax(logits, -1).astype(np.int32)}
    else:
        key = ("kmeans", syn_key, int(config.num_clusters), config.kmeans_features,
               clf_key if config.kmeans_features == "classifier" else None, int(config.seed))

        if ":" in config.kmeans_features:
            from memjax.jobs import feature_space as fs

            key = key + (fs.spec_id(config.kmeans_features),)

        def compute():
            feats, space = _kmeans_features(config, workdir, synthetic, clf, log)
            km = kmeans(jax.random.fold_in(jax.random.key(config.seed), 3), jnp.asarray(feats),
                        int(config.num_clusters))
            labels = np.asarray(km.labels)
            return {"logits": onehot_logits(labels, int(config.num_clusters)), "labels": labels,
                    "centroids": np.asarray(km.centroids), "inertia": np.asarray(km.inertia),
                    "feature_space": np.asarray(space)}
    pl, _ = wd.cached(f"{workdir}/pseudo_labels", (key, CODE_VERSION), compute, log=log)
    return pl, wd.fingerprint(key)


def _kmeans_features(config, workdir, synthetic, clf, log) -> tuple[np.ndarray, str]:
    """The features k-means clusters and their space: pixels, the classifier's, or a feature
    network's (cached stage ``features_synthetic``)."""
    from memjax.jobs import feature_space as fs

    if config.kmeans_features == "classifier":
        return _features(clf, synthetic), "normal classifier features"
    embed, space = fs.embedder(config.kmeans_features, workdir, field="kmeans_features", log=log)
    return embed(synthetic, "synthetic").reshape(len(synthetic), -1), space


def _tdkd_stage(config, workdir, synthetic, teacher_logits, pl_key, sde, log):
    """The time-dependent student distilled from the teacher (eq. 13)."""
    from flax import nnx

    from memjax import fit, objectives
    from memjax.models import ResNet

    tc = config.tdkd
    td = ResNet(num_classes=teacher_logits.shape[1], in_channels=synthetic.shape[-1],
                stage_sizes=tuple(tc.stage_sizes), width=tc.width, time_dependent=True,
                rngs=nnx.Rngs(config.seed + 1))
    key = (pl_key, tc.to_dict(), int(config.synthetic.heldout), int(config.seed), CODE_VERSION)
    nh = int(config.synthetic.heldout)

    def train_it():
        ho_x, ho_l = synthetic[:nh], teacher_logits[:nh]
        kl_key = jax.random.fold_in(jax.random.key(config.seed), 4)
        eval_fn = (lambda m: {"heldout_kl": heldout_kl(m, ho_x, ho_l, sde, key=kl_key)}) if nh else None
        kl0 = eval_fn(td)["heldout_kl"] if nh else None

        def loss(model, batch, k):
            return objectives.tdkd_loss(model, batch["teacher"], {"image": batch["image"]}, k,
                                        sde=sde, temperature=float(tc.temperature))

        hist = fit.fit_classifier(td, loss, {"image": synthetic[nh:], "teacher": teacher_logits[nh:]},
                                  key=jax.random.fold_in(jax.random.key(config.seed), 5),
                                  log_every=tc.log_every, eval_fn=eval_fn,
                                  progress=bool(config.progress), desc="tdkd", **_fit_cfg(tc))
        wd.save_json(f"{workdir}/tdkd.json", {
            "steps": [0] + hist.steps, "train": hist.train,
            "heldout_kl": ([kl0] + [e["heldout_kl"] for e in hist.evals]) if nh else []})

    fit.fit_or_restore(td, f"{workdir}/td_classifier", key, train_it, log=log, name="tdkd")
    return td, wd.fingerprint(key)


def _extraction_stage(config, workdir, score_fn, sde, td, num_classes, td_key, train_images,
                      shape, stop_after_lambdas, log):
    """Guided samples and their scores, one stored stage per lambda."""
    e, mc = config.extraction, config.metrics
    guided = sampling.classifier_guidance(score_fn, classifier_logits_fn(td), scale=0.0,
                                          num_classes=num_classes)
    smp = sampling.make_sampler(guided, sde, shape, sampler=e.sampler, num_steps=e.num_steps,
                                eta=e.eta, batch_size=e.batch_size)
    classes = np.repeat(np.arange(num_classes, dtype=np.int32), e.samples_per_class)
    from memjax.jobs import feature_space as fs

    embed, space = fs.embedder(mc.get("features", "pixels"), workdir, field="metrics.features",
                               log=log)
    bands, _ = _metric_bands(config, space)
    f_train = embed(train_images, "train")
    rows, extracted, new = [], {}, 0
    ekey = {k: v for k, v in e.to_dict().items() if k != "lambdas"}
    mkey = {k: v for k, v in mc.to_dict().items() if k != "grid_size"}
    if space != "pixels":
        mkey["features_id"] = fs.spec_id(mc.features)
    for lam in e.lambdas:
        tag = lambda_tag(lam)
        key = (td_key, ekey, mkey, float(lam), int(config.seed), CODE_VERSION)
        stage = f"{workdir}/lambdas/{tag}"
        if wd.lookup(stage, key) is None and stop_after_lambdas is not None \
                and new >= stop_after_lambdas:
            break

        def compute(lam=lam):
            imgs = smp(jax.random.fold_in(jax.random.key(config.seed), 6), len(classes),
                       sampling.Guide(classes, np.full(len(classes), float(lam), np.float32)),
                       progress=console.bars(config.progress))
            sc = score_extraction(embed(imgs, None), f_train, measure=mc.measure, bands=bands,
                                  n=mc.n, alpha=mc.alpha)
            row = {"lambda": float(lam), "num_generated": int(len(imgs)), "ams": sc.ams,
                   "ums": sc.ums, "mean_best": float(np.mean(sc.best)),
                   "mean_nn_l2": float(np.mean(sc.l2))}
            return {"images": imgs, "classes": classes, "best": sc.best, "index": sc.index,
                    "l2": sc.l2, "row": np.asarray(wd.json_dumps(row))}

        arrays, reused = wd.cached(stage, key, compute, log=log)
        new += not reused
        extracted[tag] = arrays
        rows.append(wd.json_loads(str(arrays["row"])))
    return rows, extracted, space


def run(config, workdir: str, *, trained=None, stop_after_lambdas: Optional[int] = None,
        log: Callable[[str], None] = print) -> dict:
    """Runs (or resumes) SIDE as ``config`` says, writing every stage under ``workdir``::

        workdir/side_config.json, run_info.json   the config, versions and devices
        workdir/classifier/                 normal classifier (orbax), classifier.json (accuracy)
        workdir/synthetic.npz               unguided samples of the target
        workdir/pseudo_labels.npz           teacher logits (and k-means centroids)
        workdir/td_classifier/              time-dependent classifier (orbax), tdkd.json (KL curve)
        workdir/lambdas/lambda_*.npz        extracted images, scores and the table row per lambda
        workdir/results.csv, results.md     AMS / UMS per lambda and band (Table 1 / 4)
        workdir/ams_ums_vs_lambda.png       Fig. 4
        workdir/extracted.png               best-lambda extractions over their nearest training images

    Each stage is reused only when the config fields and stages it depends on are unchanged.

    Args:
      trained: a :class:`memjax.training.Trained` or :class:`memjax.jobs.sources.Target`
        (default: :func:`memjax.jobs.sources.job_target` of ``config``).
      stop_after_lambdas: compute at most this many new lambdas, then return (tests, preemption).
    Returns:
      a summary dict (also written to ``workdir/summary.json``).
    """
    from memjax.jobs import run_info, sources

    validate_config(config)
    workdir = str(workdir)
    wd.save_json(f"{workdir}/side_config.json", config)
    wd.save_json(f"{workdir}/run_info.json", run_info(config))
    if trained is None:
        if not (config.target_workdir or config.get("model", {}).get("source", "")):
            raise ValueError("target_workdir: expected the training workdir of the target model "
                             "(or model.source)")
        trained = sources.job_target(config, workdir)
    src, ds = sources.as_target(trained)
    sde, score_fn = src.sde, src.score_fn
    train_images = np.asarray(ds.train, np.float32)
    shape = tuple(train_images.shape[1:])
    target_key = wd.fingerprint(src.model_id, train_images)
    clf, clf_key = _classifier_stage(config, workdir, ds, train_images, target_key, log)
    sc = config.synthetic
    syn_key = (target_key, sc.to_dict(), int(config.seed), CODE_VERSION)
    synthetic = wd.cached(f"{workdir}/synthetic", syn_key, lambda: {"images": sampling.sample(
        score_fn, sde, jax.random.fold_in(jax.random.key(config.seed), 2), sc.num_samples, shape,
        sampler=sc.sampler, num_steps=sc.num_steps, batch_size=256,
        progress=console.bars(config.progress))}, log=log)[0]["images"]
    pl, pl_key = _pseudo_label_stage(config, workdir, synthetic, wd.fingerprint(syn_key), clf,
                                     clf_key, log)
    td, td_key = _tdkd_stage(config, workdir, synthetic, pl["logits"], pl_key, sde, log)
    num_classes = pl["logits"].shape[1]
    rows, extracted, space = _extraction_stage(config, workdir, score_fn, sde, td, num_classes,
                                               td_key, train_images, shape, stop_after_lambdas,
                                               log)
    summary = {"num_classes": int(num_classes), "lambdas_done": [r["lambda"] for r in rows],
               "complete": len(rows) == len(config.extraction.lambdas),
               "similarity": f"{config.metrics.measure} in {space}", "feature_space": space,
               "kmeans_feature_space": str(pl["feature_space"]) if "feature_space" in pl else None,
               "bands_origin": _metric_bands(config, space)[1]}
    if rows:
        summary.update(write_report(rows, workdir, config, train_images, extracted,
                                    features=space, bands_origin=summary["bands_origin"]))
    wd.save_json(f"{workdir}/summary.json", summary)
    return summary


def _features(clf, images, batch_size=512):
    from flax import nnx

    clf.eval()
    f = nnx.jit(lambda m, x: m.features(x))
    return np.concatenate([np.asarray(f(clf, jnp.asarray(images[s:s + batch_size])))
                           for s in range(0, len(images), batch_size)])


# -- the target model -------------------------------------------------------------------------------
def load_target(target_workdir: str, train_config, workdir: str, step: int = 0):
    """The target diffusion model: ``load_trained(target_workdir)``, or (``target_workdir`` empty)
    train ``train_config`` under ``workdir/target`` first (resuming an interrupted training)."""
    from memjax import training

    step = int(step) or None
    if target_workdir:
        return training.load_trained(target_workdir, step=step)
    if train_config is None:
        raise ValueError("target_workdir: expected a training workdir, or a training config "
                         "(config.target) to train one")
    tdir = os.path.join(workdir, "target")
    if not _training_done(tdir, train_config):
        training.train(train_config, tdir)
    return training.load_trained(tdir, step=step)


def _training_done(tdir, train_config) -> bool:
    from memjax import training

    path = os.path.join(tdir, training.CHECKPOINT_DIRNAME)
    if not os.path.isdir(path):
        return False
    steps = [int(n) for n in os.listdir(path) if n.isdigit()]
    return bool(steps) and max(steps) >= int(train_config.training.num_steps)

