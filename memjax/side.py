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

Library functions here are pure (``kmeans``, ``fit_classifier``, ``heldout_kl``,
``score_extraction``); :func:`run` strings them together with the caching.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from memjax import _checks, sampling
from memjax.sde import VPSDE

log = logging.getLogger(__name__)

LABELS = ("original", "kmeans")
FEATURES = ("pixels", "classifier")


# -- k-means -----------------------------------------------------------------------------------
class KMeans(NamedTuple):
    """Result of :func:`kmeans`: ``centroids [k, d]``, ``labels [n]``, ``inertia`` (sum of squared
    distances of the points to their centroids)."""

    centroids: Float[Array, "k d"]
    labels: Int[Array, " n"]
    inertia: Float[Array, ""]


def _sq_dists(x, c):
    # ||x||^2 - 2 x.c + ||c||^2, clipped: fine for assignment (ties are measure-zero)
    d = jnp.sum(x * x, 1)[:, None] - 2.0 * x @ c.T + jnp.sum(c * c, 1)[None, :]
    return jnp.maximum(d, 0.0)


def kmeans_plusplus(key: PRNGKeyArray, x: Float[Array, "n d"], k: int) -> Float[Array, "k d"]:
    r"""k-means++ seeding (Arthur & Vassilvitskii 2007): the first centroid uniformly at random,
    each next one drawn with probability ``\propto D(x)^2``, the squared distance to the nearest
    centroid chosen so far."""
    n = x.shape[0]
    keys = jax.random.split(key, k)
    first = x[jax.random.randint(keys[0], (), 0, n)]
    cents = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    d2 = jnp.sum((x - first) ** 2, 1)

    def body(i, carry):
        cents, d2 = carry
        logits = jnp.where(d2 > 0, jnp.log(jnp.where(d2 > 0, d2, 1.0)), -jnp.inf)
        # all points coincide with centroids: fall back to uniform
        logits = jnp.where(jnp.all(d2 <= 0), jnp.zeros_like(d2), logits)
        j = jax.random.categorical(keys[i], logits)
        c = x[j]
        return cents.at[i].set(c), jnp.minimum(d2, jnp.sum((x - c) ** 2, 1))

    cents, _ = jax.lax.fori_loop(1, k, body, (cents, d2))
    return cents


def _lloyd(x, cents, num_iters):
    k = cents.shape[0]

    def body(_, cents):
        labels = jnp.argmin(_sq_dists(x, cents), 1)
        sums = jax.ops.segment_sum(x, labels, k)
        counts = jax.ops.segment_sum(jnp.ones(x.shape[0], x.dtype), labels, k)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], cents)

    cents = jax.lax.fori_loop(0, num_iters, body, cents)
    d = _sq_dists(x, cents)
    labels = jnp.argmin(d, 1)
    return KMeans(cents, labels.astype(jnp.int32), jnp.sum(jnp.min(d, 1)))


def kmeans(key: PRNGKeyArray, x: Float[Array, "n d"], k: int, *, num_iters: int = 100,
           num_init: int = 4) -> KMeans:
    """Lloyd's k-means with k-means++ seeding; the best of ``num_init`` restarts (lowest inertia).

    Jittable (``k``, ``num_iters``, ``num_init`` static); restarts run vmapped. Empty clusters
    keep their previous centroid. ``x`` is ``[n, d]`` (flatten images first).
    """
    x = _checks.as_array("x", x, ndim=2)
    _checks.check_positive_int("k", k)
    _checks.check_positive_int("num_iters", num_iters)
    _checks.check_positive_int("num_init", num_init)
    if k > x.shape[0]:
        raise ValueError(f"k: expected at most the number of points {x.shape[0]}, got {k}")
    return _kmeans_jit(key, x, k, num_iters, num_init)


@jax.jit
def _kmeans_assign(x, cents):
    return jnp.argmin(_sq_dists(x, cents), 1).astype(jnp.int32)


def kmeans_assign(x: Float[Array, "n d"], centroids: Float[Array, "k d"]) -> Int[Array, " n"]:
    """Index of the nearest centroid for every row of ``x``."""
    return _kmeans_assign(jnp.asarray(x), jnp.asarray(centroids))


from functools import partial  # noqa: E402


@partial(jax.jit, static_argnums=(2, 3, 4))
def _kmeans_jit(key, x, k, num_iters, num_init):
    def one(kk):
        return _lloyd(x, kmeans_plusplus(kk, x, k), num_iters)

    res = jax.vmap(one)(jax.random.split(key, num_init))
    best = jnp.argmin(res.inertia)
    return jax.tree_util.tree_map(lambda a: a[best], res)


# -- classifier training (normal and time-dependent) --------------------------------------------
class FitHistory(NamedTuple):
    steps: list
    train: list           # metrics dicts, averaged over each log interval
    evals: list           # eval_fn results at the logged steps (or [])


def fit_classifier(model, loss_fn: Callable, data: dict, *, key: PRNGKeyArray, num_steps: int,
                   batch_size: int, learning_rate: float = 1e-4, weight_decay: float = 1e-4,
                   log_every: int = 50, eval_fn: Optional[Callable] = None,
                   progress: bool = False, desc: str = "classifier") -> FitHistory:
    """Trains an NNX classifier in place with AdamW (paper 001: lr 1e-4).

    ``loss_fn(model, batch, key) -> (loss, metrics)`` (e.g. :func:`memjax.objectives.classifier_loss`
    or a ``functools.partial`` of :func:`memjax.objectives.tdkd_loss`); ``data`` is a dict of
    arrays with a common leading axis, sampled in shuffled epochs (seeded from ``key``).
    ``eval_fn(model) -> dict`` runs (in eval mode) every ``log_every`` steps and at the end.
    """
    from flax import nnx

    _checks.check_positive_int("num_steps", num_steps)
    _checks.check_positive_int("batch_size", batch_size)
    _checks.check_positive("learning_rate", learning_rate)
    n = len(next(iter(data.values())))
    batch_size = min(batch_size, n)
    model.train()
    opt = nnx.Optimizer(model, optax.adamw(learning_rate, weight_decay=weight_decay), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, batch, k):
        (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch, k)
        opt.update(model, grads)
        return metrics

    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    perm, pos = rng.permutation(n), 0
    hist = FitHistory([], [], [])
    pending = []
    steps = range(num_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=desc, unit="step")
    for s in steps:
        if pos + batch_size > n:
            perm, pos = rng.permutation(n), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        batch = {k: jnp.asarray(v[idx]) for k, v in data.items()}
        pending.append(step(model, opt, batch, jax.random.fold_in(key, s)))
        if (s + 1) % log_every == 0 or s + 1 == num_steps:
            vals = jax.device_get(pending)
            hist.steps.append(s + 1)
            hist.train.append({k: float(np.mean([v[k] for v in vals])) for k in vals[0]})
            pending = []
            if eval_fn is not None:
                model.eval()
                hist.evals.append(eval_fn(model))
                model.train()
    model.eval()
    return hist


def batched_logits(model, images: np.ndarray, t: Optional[np.ndarray] = None, *,
                   batch_size: int = 512) -> np.ndarray:
    """``model(images[, t])`` in eval mode, in batches, as host float32 logits ``[n, K]``."""
    from flax import nnx

    model.eval()

    @nnx.jit
    def f(model, x, tt):
        return model(x) if tt is None else model(x, tt)

    out = []
    for s in range(0, len(images), batch_size):
        tt = None if t is None else jnp.asarray(t[s:s + batch_size])
        out.append(np.asarray(f(model, jnp.asarray(images[s:s + batch_size]), tt), np.float32))
    return np.concatenate(out)


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


# -- the pipeline ------------------------------------------------------------------------------------
def default_config() -> ml_collections.ConfigDict:
    """The SIDE config (all fields documented here; ``configs/digits_side.py`` starts from it).

    Fields:
      seed: seeds every stage.
      target_workdir: training workdir of the target model (:func:`memjax.training.load_trained`).
        Empty: the script trains ``target`` (a training config) under ``workdir/target``.
      target_step: checkpoint step of the target to use (0: the latest).
      labels: ``"original"`` (a normal classifier on the training labels; "OL") or ``"kmeans"``.
      num_clusters: K for k-means (paper: 100).
      kmeans_features: ``"pixels"`` or ``"classifier"`` (the normal classifier's penultimate
        features; needs labels to train it, so mostly for ablations).
      classifier: ``stage_sizes``, ``width``, ``num_steps``, ``batch_size``, ``learning_rate``,
        ``weight_decay`` of the normal classifier (a :class:`memjax.models.ResNet`).
      synthetic: ``num_samples`` unguided samples from the target, ``sampler``, ``num_steps``,
        ``heldout`` (images held out to measure the TDKD KL).
      tdkd: ``stage_sizes``, ``width``, ``num_steps``, ``batch_size``, ``learning_rate`` (1e-4),
        ``weight_decay``, ``temperature``, ``log_every``.
      extraction: ``lambdas`` (0 = "Random"), ``samples_per_class`` (N_G = that x classes),
        ``sampler`` (``"ddim"``, ``"sde"``, ``"ode"``), ``num_steps``, ``eta``, ``batch_size``.
      metrics: ``measure`` (``"normalized_l2"``, ``"l2"``, ``"cosine"``), ``bands`` (name ->
        ``(lo, hi)``, half-open ``[lo, hi)``), ``n`` and ``alpha`` of normalized L2,
        ``grid_size`` (extracted images shown).
      progress: tqdm bars.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.target_workdir = ""
    c.target_step = 0
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
        measure="normalized_l2", bands=ml_collections.ConfigDict(dict(
            low=(1.5, 10.0), mid=(1.4, 1.5), high=(1.35, 1.4))),
        n=50, alpha=0.5, grid_size=16))
    c.progress = True
    return c


def validate_config(c) -> None:
    """``ValueError`` naming the field of an invalid SIDE config (before any work)."""
    _checks.check_choice("labels", c.labels, LABELS)
    _checks.check_choice("kmeans_features", c.kmeans_features, FEATURES)
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


def lambda_tag(lam: float) -> str:
    """File tag of a lambda: ``lambda_0007.500`` (sorts numerically)."""
    return f"lambda_{float(lam):08.3f}"


def _atomic_json(obj, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _atomic_npz(path, **arrays):
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _save_model(model, directory):
    from memjax import training

    _, params, other = training.split_model(model)
    ck = training.Checkpointer(directory, keep=1, async_save=False)
    ck.save(1, {"params": params, "other": other})
    ck.wait()
    ck.close()


def _restore_model(model, directory) -> bool:
    from flax import nnx

    from memjax import training

    ck = training.Checkpointer(directory, keep=1, async_save=False)
    step = ck.latest_step()
    if step is None:
        ck.close()
        return False
    graphdef, params, other = training.split_model(model)
    state = ck.restore(step, {"params": params, "other": other})
    ck.close()
    nnx.update(model, nnx.state(nnx.merge(graphdef, state["params"], state["other"])))
    return True


def band_order(bands) -> list:
    """Band names with ``low``, ``mid``, ``high`` first in that order (the paper's), then the rest."""
    names = list(bands.keys())
    std = [b for b in ("low", "mid", "high") if b in names]
    return std + [b for b in names if b not in std]


def band_objects(bands) -> dict:
    """Config bands ``name -> (lo, hi)`` as half-open :class:`~memjax.metrics.memorization.Band`."""
    from memjax.metrics import memorization as mem

    return {k: mem.Band(float(v[0]), float(v[1]), "left") for k, v in bands.items()}


def run(config, workdir: str, *, trained=None, stop_after_lambdas: Optional[int] = None) -> dict:
    """Runs (or resumes) SIDE as ``config`` says, writing every stage under ``workdir``::

        workdir/side_config.json            the config
        workdir/classifier/                 normal classifier (orbax), classifier.json (accuracy)
        workdir/synthetic.npz               unguided samples of the target
        workdir/pseudo_labels.npz           teacher logits (and k-means centroids)
        workdir/td_classifier/              time-dependent classifier (orbax), tdkd.json (KL curve)
        workdir/lambdas/lambda_*.npz/.json  extracted images and scores, one per lambda
        workdir/results.csv, results.md     AMS / UMS per lambda and band (Table 1 / 4)
        workdir/ams_ums_vs_lambda.png       Fig. 4
        workdir/extracted.png               best-lambda extractions over their nearest training images

    Args:
      trained: a :class:`memjax.training.Trained` (default: ``load_trained(config.target_workdir)``).
      stop_after_lambdas: compute at most this many new lambdas, then return (tests, preemption).
    Returns:
      a summary dict (also written to ``workdir/summary.json``).
    """
    from flax import nnx

    from memjax import objectives, training
    from memjax.models import ResNet

    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    _atomic_json(json.loads(config.to_json()), os.path.join(workdir, "side_config.json"))
    if trained is None:
        if not config.target_workdir:
            raise ValueError("target_workdir: expected the training workdir of the target model")
        trained = training.load_trained(config.target_workdir, step=int(config.target_step) or None)
    sde, ds = trained.sde, trained.dataset
    train_images = np.asarray(ds.train, np.float32)
    shape = tuple(train_images.shape[1:])
    channels = shape[-1]
    key = jax.random.key(config.seed)
    score_fn = training.trained_score_fn(trained)
    progress = bool(config.progress)

    # 1. normal classifier (original labels), or nothing for k-means on pixels
    need_clf = config.labels == "original" or config.kmeans_features == "classifier"
    clf = None
    if need_clf:
        if ds.train_labels is None:
            raise ValueError("labels: 'original' needs a labelled training set; use 'kmeans'")
        num_classes = int(ds.num_classes or int(ds.train_labels.max()) + 1)
        cc = config.classifier
        clf = ResNet(num_classes=num_classes, in_channels=channels, stage_sizes=tuple(cc.stage_sizes),
                     width=cc.width, rngs=nnx.Rngs(config.seed))
        cdir = os.path.join(workdir, "classifier")
        if not _restore_model(clf, cdir):
            fit_classifier(clf, objectives.classifier_loss,
                           {"image": train_images, "label": np.asarray(ds.train_labels, np.int32)},
                           key=jax.random.fold_in(key, 1), num_steps=cc.num_steps,
                           batch_size=cc.batch_size, learning_rate=cc.learning_rate,
                           weight_decay=cc.weight_decay, progress=progress, desc="classifier")
            _save_model(clf, cdir)
            acc = {}
            for split, x, y in (("train", ds.train, ds.train_labels),
                                ("heldout", ds.heldout, ds.heldout_labels)):
                if y is not None and len(x):
                    acc[split] = float(np.mean(np.argmax(batched_logits(clf, np.asarray(x)), -1) == y))
            _atomic_json({"accuracy": acc, "num_classes": num_classes},
                         os.path.join(workdir, "classifier.json"))

    # 2. synthetic set
    syn_path = os.path.join(workdir, "synthetic.npz")
    if os.path.exists(syn_path):
        synthetic = np.load(syn_path)["images"]
    else:
        sc = config.synthetic
        synthetic = sampling.sample(score_fn, sde, jax.random.fold_in(key, 2), sc.num_samples, shape,
                                    sampler=sc.sampler, num_steps=sc.num_steps, batch_size=256,
                                    progress=progress)
        _atomic_npz(syn_path, images=synthetic)

    # 3. pseudo-labels
    pl_path = os.path.join(workdir, "pseudo_labels.npz")
    if os.path.exists(pl_path):
        pl = dict(np.load(pl_path))
    elif config.labels == "original":
        pl = {"logits": batched_logits(clf, synthetic)}
        pl["labels"] = np.argmax(pl["logits"], -1).astype(np.int32)
        _atomic_npz(pl_path, **pl)
    else:
        feats = (synthetic.reshape(len(synthetic), -1) if config.kmeans_features == "pixels" else
                 _features(clf, synthetic))
        km = kmeans(jax.random.fold_in(key, 3), jnp.asarray(feats), int(config.num_clusters))
        labels = np.asarray(km.labels)
        pl = {"logits": onehot_logits(labels, int(config.num_clusters)), "labels": labels,
              "centroids": np.asarray(km.centroids), "inertia": np.asarray(km.inertia)}
        _atomic_npz(pl_path, **pl)
    teacher_logits = pl["logits"]
    num_classes = teacher_logits.shape[1]

    # 4. TDKD
    tc = config.tdkd
    td = ResNet(num_classes=num_classes, in_channels=channels, stage_sizes=tuple(tc.stage_sizes),
                width=tc.width, time_dependent=True, rngs=nnx.Rngs(config.seed + 1))
    tddir = os.path.join(workdir, "td_classifier")
    if not _restore_model(td, tddir):
        nh = int(config.synthetic.heldout)
        tr_x, tr_l = synthetic[nh:], teacher_logits[nh:]
        ho_x, ho_l = synthetic[:nh], teacher_logits[:nh]
        kl_key = jax.random.fold_in(key, 4)
        eval_fn = (lambda m: {"heldout_kl": heldout_kl(m, ho_x, ho_l, sde, key=kl_key)}) if nh else None
        kl0 = eval_fn(td)["heldout_kl"] if nh else None

        def loss(model, batch, k):
            return objectives.tdkd_loss(model, batch["teacher"], {"image": batch["image"]}, k,
                                        sde=sde, temperature=float(tc.temperature))

        hist = fit_classifier(td, loss, {"image": tr_x, "teacher": tr_l},
                              key=jax.random.fold_in(key, 5), num_steps=tc.num_steps,
                              batch_size=tc.batch_size, learning_rate=tc.learning_rate,
                              weight_decay=tc.weight_decay, log_every=tc.log_every,
                              eval_fn=eval_fn, progress=progress, desc="tdkd")
        _save_model(td, tddir)
        _atomic_json({"steps": [0] + hist.steps, "train": hist.train,
                      "heldout_kl": ([kl0] + [e["heldout_kl"] for e in hist.evals]) if nh else []},
                     os.path.join(workdir, "tdkd.json"))

    # 5. guided extraction, one file per lambda
    e = config.extraction
    guided = sampling.classifier_guidance(score_fn, classifier_logits_fn(td), scale=0.0,
                                          num_classes=num_classes)
    smp = sampling.make_sampler(guided, sde, shape, sampler=e.sampler, num_steps=e.num_steps,
                                eta=e.eta, batch_size=e.batch_size)
    classes = np.repeat(np.arange(num_classes, dtype=np.int32), e.samples_per_class)
    ldir = os.path.join(workdir, "lambdas")
    os.makedirs(ldir, exist_ok=True)
    bands = band_objects(config.metrics.bands)
    rows, new = [], 0
    for lam in e.lambdas:
        tag = lambda_tag(lam)
        jpath = os.path.join(ldir, tag + ".json")
        if os.path.exists(jpath):
            with open(jpath) as f:
                rows.append(json.load(f))
            continue
        if stop_after_lambdas is not None and new >= stop_after_lambdas:
            break
        imgs = smp(jax.random.fold_in(key, 6), len(classes),
                   sampling.Guide(classes, np.full(len(classes), float(lam), np.float32)),
                   progress=progress)
        sc = score_extraction(imgs, train_images, measure=config.metrics.measure, bands=bands,
                              n=config.metrics.n, alpha=config.metrics.alpha)
        _atomic_npz(os.path.join(ldir, tag + ".npz"), images=imgs, classes=classes, best=sc.best,
                    index=sc.index, l2=sc.l2)
        row = {"lambda": float(lam), "num_generated": int(len(imgs)), "ams": sc.ams, "ums": sc.ums,
               "mean_best": float(np.mean(sc.best)), "mean_nn_l2": float(np.mean(sc.l2))}
        _atomic_json(row, jpath)  # written last: its presence marks the lambda as done
        rows.append(row)
        new += 1
    summary = {"num_classes": int(num_classes), "lambdas_done": [r["lambda"] for r in rows],
               "complete": len(rows) == len(e.lambdas)}
    if rows:
        summary.update(write_report(rows, workdir, config, train_images))
    _atomic_json(summary, os.path.join(workdir, "summary.json"))
    return summary


def _features(clf, images, batch_size=512):
    from flax import nnx

    clf.eval()
    f = nnx.jit(lambda m, x: m.features(x))
    return np.concatenate([np.asarray(f(clf, jnp.asarray(images[s:s + batch_size])))
                           for s in range(0, len(images), batch_size)])


# -- the report ---------------------------------------------------------------------------------------
def best_lambda(rows: list, band: str, *, key: str = "ams") -> dict:
    """The row with the highest ``key`` in ``band`` among lambda > 0 (ties: smallest lambda)."""
    cand = [r for r in rows if r["lambda"] > 0]
    if not cand:
        return {}
    return max(cand, key=lambda r: (r[key][band], -r["lambda"]))


def results_table(rows: list, bands: list) -> tuple[str, str]:
    """(CSV, markdown) of AMS / UMS (percent) per lambda and band, like paper 001 Table 4."""
    rows = sorted(rows, key=lambda r: r["lambda"])
    head = ["lambda", "N_G"] + [f"AMS_{b}(%)" for b in bands] + [f"UMS_{b}(%)" for b in bands] + \
        ["mean_best", "mean_nn_l2"]
    lines = [",".join(head)]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [f"{r['lambda']:g}", str(r["num_generated"])] + \
            [f"{100 * r['ams'][b]:.2f}" for b in bands] + [f"{100 * r['ums'][b]:.2f}" for b in bands] + \
            [f"{r['mean_best']:.4f}", f"{r['mean_nn_l2']:.4f}"]
        lines.append(",".join(vals))
        md.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n", "\n".join(md) + "\n"


def write_report(rows: list, workdir: str, config, train_images: np.ndarray) -> dict:
    """Writes results.csv / results.md, the lambda plot and the extraction grid; returns the
    Table-1 style comparison (Random = lambda 0 vs the best lambda per band)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    bands = band_order(config.metrics.bands)
    csv, md = results_table(rows, bands)
    rows = sorted(rows, key=lambda r: r["lambda"])
    base = next((r for r in rows if r["lambda"] == 0), None)
    cmp_lines = ["| band | Random AMS(%) | Random UMS(%) | SIDE AMS(%) | SIDE UMS(%) | best lambda |",
                 "|---|---|---|---|---|---|"]
    table1 = {}
    for b in bands:
        best = best_lambda(rows, b)
        if not best:
            continue
        table1[b] = {"random_ams": base["ams"][b] if base else None,
                     "random_ums": base["ums"][b] if base else None,
                     "side_ams": best["ams"][b], "side_ums": best["ums"][b],
                     "best_lambda": best["lambda"]}
        rb = (f"{100 * base['ams'][b]:.2f} | {100 * base['ums'][b]:.2f}" if base else "- | -")
        cmp_lines.append(f"| {b} | {rb} | {100 * best['ams'][b]:.2f} | {100 * best['ums'][b]:.2f} | "
                         f"{best['lambda']:g} |")
    with open(os.path.join(workdir, "results.csv"), "w") as f:
        f.write(csv)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write("## AMS / UMS per lambda\n\n" + md + "\n## Random vs SIDE (best lambda per band)\n\n"
                + "\n".join(cmp_lines) + "\n")

    lams = [r["lambda"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, k in zip(axes, ("ams", "ums")):
        for b in bands:
            ax.plot(lams, [100 * r[k][b] for r in rows], marker="o", label=b)
        ax.set_xlabel("lambda")
        ax.set_ylabel(f"{k.upper()} (%)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "ams_ums_vs_lambda.png"), dpi=100)
    plt.close(fig)

    # extraction grid: the closest generated images of the best lambda over their neighbours
    first_band = "high" if "high" in bands else (bands[0] if bands else None)
    best = best_lambda(rows, first_band) if first_band else {}
    lam = best.get("lambda", rows[-1]["lambda"])
    npz = os.path.join(workdir, "lambdas", lambda_tag(lam) + ".npz")
    if os.path.exists(npz):
        d = np.load(npz)
        order = np.argsort(d["l2"])[: int(config.metrics.grid_size)]
        _pair_grid(d["images"][order], train_images[d["index"][order]],
                   os.path.join(workdir, "extracted.png"), f"lambda = {lam:g}")
    return {"table1": table1}


def _pair_grid(gen, nn, path, title):
    import matplotlib.pyplot as plt

    k = len(gen)
    fig, axes = plt.subplots(2, max(k, 1), figsize=(max(k, 1) * 0.8, 1.9), squeeze=False)
    for i in range(k):
        for r, img in ((0, gen[i]), (1, nn[i])):
            ax = axes[r, i]
            im = np.clip((img + 1) / 2, 0, 1)
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("gen", fontsize=7)
    axes[1, 0].set_ylabel("train", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
