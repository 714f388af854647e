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
   residual block, appendix C) is trained with AdamW (lr 1e-4, paper 001 section 5.1) to
   minimise ``KL(p_theta(y | x_0) || p^t_theta(y | x_t))`` at random ``t``
   (:func:`memjax.objectives.tdkd_loss`). The KL on held-out synthetic images at fixed noisy
   draws is recorded as training goes. ``guidance_classifier="ti"`` replaces the student by a
   time-independent classifier (Table 1's "TI" ablation).
5. **Guided extraction** (eqs. 11-12). For every ``lambda`` of the sweep and every class, ``N``
   samples of the guided reverse process ``s + lambda grad log p_t(y | x_t)``
   (:func:`memjax.sampling.classifier_guidance`); ``lambda = 0`` is the unguided "Random"
   baseline. One compiled sampler serves the whole sweep (the class and lambda are per-example
   inputs), and each finished ``lambda`` is written to its own file, never recomputed.
6. **Scores.** AMS / UMS (eqs. 14-15, :func:`memjax.metrics.memorization.ams_ums`) in bands of a
   similarity measure, UMS both with the best match and as eq. 15 defines it; a table like
   paper 001 Table 4, Random against the mean over a lambda band declared in the config
   (Table 1), AMS and UMS against lambda (Fig. 4) and extracted images next to their nearest
   training images (Fig. 1). :mod:`memjax.jobs.side_ablation` runs Table 2 (the number of
   classes).

Every stage is stored under the workdir with the key of what it depends on (the config fields
it reads and the stages it consumes, :mod:`memjax.workdir`): change ``num_clusters`` and the
pseudo-labels, the TDKD student and the extractions are recomputed, the synthetic set is not.
The library pieces: :mod:`memjax.metrics.kmeans`, :mod:`memjax.fit` (the classifier fit loop
and its orbax checkpoints), :func:`heldout_kl` and :func:`score_extraction` here,
:mod:`memjax.jobs.side_config` (the config), :mod:`memjax.jobs.side_report` and
:mod:`memjax.jobs.side_target`; :func:`run` composes them.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from memjax import console, sampling
from memjax import workdir as wd
from memjax.fit import FitHistory, batched_logits, fit_classifier  # noqa: F401
from memjax.jobs.side_config import (FEATURES, GUIDANCE, LABELS, band_objects,  # noqa: F401
                                     default_config, metric_bands, validate_config)
from memjax.jobs.side_report import (band_order, best_lambda, lambda_band_summary,  # noqa: F401
                                     lambda_tag, results_table, write_report)
from memjax.jobs.side_target import load_target  # noqa: F401
from memjax.metrics.kmeans import KMeans, kmeans, kmeans_assign, kmeans_plusplus  # noqa: F401
from memjax.sde import VPSDE

__all__ = ["LABELS", "FEATURES", "heldout_kl", "onehot_logits", "classifier_logits_fn",
           "ExtractionScores", "score_extraction", "default_config", "validate_config",
           "band_objects", "run", "load_target", "kmeans", "kmeans_plusplus", "kmeans_assign",
           "KMeans", "fit_classifier", "FitHistory", "batched_logits", "best_lambda",
           "results_table", "write_report", "band_order", "lambda_tag", "lambda_band_summary",
           "GUIDANCE"]

CODE_VERSION = 2


# -- library pieces ------------------------------------------------------------------------------
def heldout_kl(td_model, images: np.ndarray, teacher_logits: np.ndarray, sde: VPSDE, *,
               key: PRNGKeyArray, num_draws: int = 4, batch_size: int = 512) -> float:
    r"""Mean ``KL(p_teacher(y | x_0) || p^t(y | x_t))`` over held-out images at fixed noisy draws.

    ``t ~ U(t_min, t_max)`` and the noise are drawn once from ``key`` (``num_draws`` per image),
    so successive calls during training measure the same quantity. A time-independent model
    (the "TI" ablation) is called without ``t``.
    """
    with_t = getattr(td_model, "time_dependent", True)
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
            batched_logits(td_model, xt.astype(np.float32), t[d] if with_t else None,
                           batch_size=batch_size)), -1))
        kls.append(np.sum(np.exp(logp) * (logp - logq), -1))
    return float(np.mean(kls))


def onehot_logits(labels: np.ndarray, num_classes: int, confidence: float = 30.0) -> np.ndarray:
    """Logits whose softmax is one-hot up to ``(K-1) e^{-confidence}``: hard pseudo-labels for
    the KL of eq. 13 (which then equals the cross-entropy)."""
    return (confidence * np.eye(num_classes, dtype=np.float32)[labels]).astype(np.float32)


# -- guided extraction and scores -----------------------------------------------------------------
def classifier_logits_fn(model) -> Callable:
    """``(x, t) -> logits [K]`` for one example from a batched NNX classifier (in eval mode).
    A time-independent classifier (``model.time_dependent`` false: the "TI" ablation) ignores
    ``t``, as a classifier of clean images does when it guides at every noise level."""
    model.eval()
    if not getattr(model, "time_dependent", True):
        return lambda x, t: model(x[None])[0]

    def fn(x, t):
        return model(x[None], jnp.reshape(jnp.asarray(t, x.dtype), (1,)))[0]

    return fn


class ExtractionScores(NamedTuple):
    """Scores of one set of generated images against the training set."""

    best: np.ndarray              # [N_G] best value of the measure per generated image
    index: np.ndarray             # [N_G] index of the best-matching training image
    l2: np.ndarray                # [N_G] L2 distance to the nearest training image
    ams: dict                     # band name -> AMS (eq. 14)
    ums: dict                     # band name -> UMS, best match of each image
    ums_all: dict                 # band name -> UMS as eq. 15 defines it (all in the band)


def score_extraction(generated: np.ndarray, train: np.ndarray, *, measure: str,
                     bands: dict, n: int = 50, alpha: float = 0.5) -> ExtractionScores:
    """AMS / UMS (paper 001 eqs. 14-15) of ``generated`` in every band of ``bands``
    (name -> :class:`memjax.metrics.memorization.Band`), with the best match of each image.

    UMS twice: ``ums`` counts the best-matching training image of each generated image whose
    best value is in the band (``match="best"``, so ``UMS <= AMS``); ``ums_all`` is eq. 15 as
    written, the union over generated images of every training index in the band
    (``match="all"``, which can exceed AMS).
    """
    from memjax.metrics import memorization as mem

    n = min(n, len(train))
    best, idx = mem.best_match(generated, train, measure=measure, n=n, alpha=alpha)
    d, _ = mem.nearest_neighbours(generated, train, k=1, metric="l2")
    ams, ums, ums_all = {}, {}, {}
    for name, band in bands.items():
        r = mem.ams_ums_from_best(best, idx, len(train), band=band)
        ams[name], ums[name] = float(r.ams), float(r.ums)
        ums_all[name] = float(mem.ams_ums(generated, train, band=band, measure=measure,
                                          match="all", n=n, alpha=alpha).ums)
    return ExtractionScores(np.asarray(best), np.asarray(idx), np.asarray(d)[:, 0], ams, ums,
                            ums_all)


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


def _guide_stage(config, workdir, synthetic, pl, pl_key, clf, clf_key, sde, log):
    """The classifier that guides: the TDKD student (eq. 13), or for ``guidance_classifier="ti"``
    a time-independent one: the normal classifier (original labels) or a ResNet fitted to the
    k-means labels of the clean synthetic images."""
    from flax import nnx

    from memjax import fit, objectives
    from memjax.models import ResNet

    td = config.get("guidance_classifier", "td") == "td"
    if not td and config.labels == "original":
        return clf, clf_key
    tc, teacher, nh = config.tdkd, pl["logits"], int(config.synthetic.heldout)
    model = ResNet(num_classes=teacher.shape[1], in_channels=synthetic.shape[-1],
                   stage_sizes=tuple(tc.stage_sizes), width=tc.width, time_dependent=td,
                   rngs=nnx.Rngs(config.seed + 1))
    key = (pl_key, tc.to_dict(), nh, int(config.seed), CODE_VERSION) + (() if td else ("ti",))
    name = "tdkd" if td else "ti"

    def loss(m, batch, k):
        if not td:  # one-hot k-means teachers: the cross-entropy is the KL at t = 0
            return objectives.classifier_loss(m, {"image": batch["image"],
                                                  "label": jnp.argmax(batch["teacher"], -1)}, k)
        return objectives.tdkd_loss(m, batch["teacher"], {"image": batch["image"]}, k,
                                    sde=sde, temperature=float(tc.temperature))

    def train_it():
        ho_x, ho_l = synthetic[:nh], teacher[:nh]
        kl_key = jax.random.fold_in(jax.random.key(config.seed), 4)
        eval_fn = (lambda m: {"heldout_kl": heldout_kl(m, ho_x, ho_l, sde, key=kl_key)}) if nh else None
        kl0 = eval_fn(model)["heldout_kl"] if nh else None
        hist = fit.fit_classifier(model, loss, {"image": synthetic[nh:], "teacher": teacher[nh:]},
                                  key=jax.random.fold_in(jax.random.key(config.seed), 5),
                                  log_every=tc.log_every, eval_fn=eval_fn,
                                  progress=bool(config.progress), desc=name, **_fit_cfg(tc))
        wd.save_json(f"{workdir}/{name}.json", {
            "steps": [0] + hist.steps, "train": hist.train,
            "heldout_kl": ([kl0] + [e["heldout_kl"] for e in hist.evals]) if nh else []})

    fit.fit_or_restore(model, f"{workdir}/{'td' if td else 'ti'}_classifier", key, train_it,
                       log=log, name=name)
    return model, wd.fingerprint(key)


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
    bands, _ = metric_bands(config, space)
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
                   "ums": sc.ums, "ums_all": sc.ums_all, "mean_best": float(np.mean(sc.best)),
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
        workdir/ti_classifier/, ti.json     the time-independent one ("ti" ablation, k-means)
        workdir/lambdas/lambda_*.npz        extracted images, scores and the table row per lambda
        workdir/results.csv, results.md     AMS / UMS per lambda and band (Table 4), Random
                                            against the declared lambda band (Table 1)
        workdir/ams_ums_vs_lambda.png       Fig. 4
        workdir/extracted.png               extractions at the lambda band's middle over their
                                            nearest training images

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
    td, td_key = _guide_stage(config, workdir, synthetic, pl, pl_key, clf, clf_key, sde, log)
    num_classes = pl["logits"].shape[1]
    rows, extracted, space = _extraction_stage(config, workdir, score_fn, sde, td, num_classes,
                                               td_key, train_images, shape, stop_after_lambdas,
                                               log)
    summary = {"num_classes": int(num_classes), "lambdas_done": [r["lambda"] for r in rows],
               "complete": len(rows) == len(config.extraction.lambdas),
               "similarity": f"{config.metrics.measure} in {space}", "feature_space": space,
               "kmeans_feature_space": str(pl["feature_space"]) if "feature_space" in pl else None,
               "bands_origin": metric_bands(config, space)[1],
               "guidance_classifier": config.get("guidance_classifier", "td"), "rows": rows}
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
