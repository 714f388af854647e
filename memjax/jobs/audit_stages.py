r"""The stages of the audit job (:func:`memjax.audit.run_audit`) as functions, and the ease test
on arrays (:func:`audit_arrays`).

    ease          paper 000's ease of reproduction (log volume growth along the probability-flow
                  ODE, Algorithm 1 / eq. 13) of trained and held-out images for every setting
                  ``(N axes, steps)`` (:func:`ease_scores`; :func:`ease_stage`: for the network
                  and for the exact empirical score of the training set, eq. 11)
    samples       samples of the network (:func:`samples_stage`)
    memorization  nearest training image of every sample and held-out image (L2, normalized L2,
                  paper 000 eq. 7; d1/d2; AMS / UMS, paper 001 eqs. 14-15), and the best cosine
                  similarity in a feature space (:func:`feature_similarity`, paper 002)
    diverse       paper 003's diverse samples (:func:`diverse_stage`)

Each stage is a :func:`memjax.workdir.cached` result keyed by what it reads, with
:data:`CODE_VERSION`, so a resumed audit reuses it.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from memjax import _checks
from memjax import workdir as wd
from memjax.metrics.groups import memorization_metrics, separation
from memjax.sde import VPSDE, ScoreFn
from memjax.volume_settings import Setting, covering_run, parse_settings, plan_runs, volume_curves
from memjax.workdir import fingerprint

__all__ = ["CODE_VERSION", "audit_arrays", "diverse_stage", "ease_scores",
           "ease_stage", "feature_similarity", "memorization_stage", "samples_stage"]

# the version of the numerics behind the cached stages: bump it when they change
CODE_VERSION = 1


def ease_scores(score_fn: ScoreFn, sde: VPSDE, trained: np.ndarray, heldout: np.ndarray,
                settings: Sequence[Setting], *, key: PRNGKeyArray, grid_steps: int,
                batch_size: int, options: dict, cache_dir: str | None = None,
                cache_key: str = "", label: str = "", mesh=None, progress: bool = True,
                log: Callable[[str], None] = print) -> tuple[dict, dict]:
    """Ease of reproduction of ``trained`` and ``heldout`` images for every setting.

    Integrates only :func:`plan_runs` of ``settings`` (each cached as
    ``cache_dir/ease_<label>_N<N>_S<S>.npz``, keyed by ``cache_key`` and the run). Returns
    ``({setting: {"trained": [n], "heldout": [m], "stable_trained", "stable_heldout"}},
    {run name: seconds or "cached"})``.
    """
    runs = plan_runs(settings, options.get("accumulate", "qr"))
    images = np.concatenate([trained, heldout]).astype(np.float32)
    n = trained.shape[0]
    per_run = {r: [s for s in settings if covering_run(s, runs) == r] for r in runs}
    out, timing = {}, {}
    for r in runs:
        want = per_run[r]
        if not want:
            continue
        r_axes = sorted({s.num_axes for s in want})
        r_steps = sorted({s.steps for s in want})
        desc = f"ease {label} N={r.num_axes} steps={r.steps}"

        def compute(r=r, r_axes=r_axes, r_steps=r_steps, desc=desc):
            vc = volume_curves(score_fn, sde, images, num_axes=r.num_axes, steps=r.steps,
                               report_axes=r_axes, report_steps=r_steps, key=key,
                               grid_steps=grid_steps, batch_size=batch_size, mesh=mesh,
                               progress=progress, desc=desc, **options)
            return {"growth": vc.growth, "stable": vc.stable, "axes": np.asarray(vc.axes),
                    "steps": np.asarray(vc.steps)}

        t0 = time.perf_counter()
        if cache_dir is None:
            arrays, reused = compute(), False
        else:
            arrays, reused = wd.cached(f"{cache_dir}/ease_{label}_N{r.num_axes}_S{r.steps}",
                                       (cache_key, r_axes, r_steps, r, grid_steps, options),
                                       compute, log=log)
        timing[desc] = "cached" if reused else round(time.perf_counter() - t0, 2)
        log(f"[ease] {desc}: {timing[desc]}{'' if reused else ' s'}")
        axes_l, steps_l = list(arrays["axes"]), list(arrays["steps"])
        for s in want:
            a, k = axes_l.index(s.num_axes), steps_l.index(s.steps)
            g, st = arrays["growth"][:, a, k], arrays["stable"][:, k]
            out[s] = {"trained": g[:n], "heldout": g[n:], "stable_trained": st[:n],
                      "stable_heldout": st[n:], "run": r}
    return out, timing



def audit_arrays(score_fn: ScoreFn, sde: VPSDE, trained: np.ndarray, heldout: np.ndarray, *,
                 key: PRNGKeyArray, settings: Sequence = ((1, 1), (-1, 1)), grid_steps: int = 1000,
                 batch_size: int = 32, method: str = "jvp", accumulate: str = "qr",
                 solver: str = "euler", sigma: float = 0.05, check_stability: bool = False,
                 progress: bool = False) -> dict:
    r"""The audit's ease-of-reproduction test on arrays: no workdir, no config.

    For each setting ``(N axes, steps)`` (``N = -1``: the full volume ``D``), the log volume
    growth (paper 000 Algorithm 1 / eq. 13) of every ``trained`` and ``heldout`` image
    ``[n, H, W, C]`` under ``score_fn(x, t)`` on ``sde`` (any VP schedule), and how well it
    separates the two groups: the AUROC (trained positive; Mann-Whitney) and Welch's t-test
    (float64), as in :func:`run_audit`'s report; any model (memjax, diffusers port, torch
    bridge, closed form).

    Returns ``{setting name: {"num_axes", "steps", "auroc", "p_value", "t_statistic",
    "mean_trained", ..., "trained": [n], "heldout": [m], "stable_trained",
    "stable_heldout"}}`` (growth arrays as NumPy).
    """
    if not callable(score_fn):
        raise ValueError(f"score_fn: expected a callable score_fn(x, t), got {type(score_fn).__name__}")
    _checks.check_schedule("sde", sde)
    trained = np.asarray(_checks.as_array("trained", trained, ndim=4), np.float32)
    heldout = np.asarray(_checks.as_array("heldout", heldout, ndim=4), np.float32)
    if trained.shape[1:] != heldout.shape[1:]:
        raise ValueError(f"heldout: expected images of shape {trained.shape[1:]} like trained, "
                         f"got {heldout.shape[1:]}")
    if heldout.shape[0] < 2 or trained.shape[0] < 2:
        raise ValueError("trained, heldout: expected at least 2 images in each group")
    for name, v in (("grid_steps", grid_steps), ("batch_size", batch_size)):
        _checks.check_positive_int(name, v)
    _checks.check_choice("method", method, ("jvp", "finite_difference"))
    _checks.check_choice("accumulate", accumulate, ("qr", "norms"))
    parsed = parse_settings(settings, dim=int(np.prod(trained.shape[1:])), grid_steps=grid_steps)
    options = dict(method=method, accumulate=accumulate, sigma=float(sigma), solver=solver,
                   check_stability=bool(check_stability))
    res, _ = ease_scores(score_fn, sde, trained, heldout, parsed, key=key, grid_steps=grid_steps,
                         batch_size=batch_size, options=options, progress=progress,
                         log=lambda line: None)
    return {s.name: {"num_axes": s.num_axes, "steps": s.steps,
                     **separation(r["trained"], r["heldout"]),
                     **{k: np.asarray(r[k]) for k in ("trained", "heldout", "stable_trained",
                                                      "stable_heldout")}}
            for s, r in res.items()}


def ease_stage(config, subject, cache, mesh, progress, log, timings) -> dict:
    from memjax.jobs import ease_rows

    ec = config.ease
    key = jax.random.key(int(config.seed))
    dim = int(np.prod(subject.train.shape[1:]))
    data_id = fingerprint(subject.train, subject.heldout)
    rows = {}
    timings["ease"] = {}
    for kind in ease_rows.row_kinds(ec):
        kc, opts = ec[kind], ease_rows.row_options(ec, kind)
        settings = parse_settings(kc.settings, dim=dim, grid_steps=int(ec.grid_steps),
                                  name=f"ease.{kind}.settings")
        if kind in ease_rows.NETWORK_KINDS:
            score_fn, cache_key = subject.score_fn, ("network", subject.model_id, data_id)
        else:
            from memjax import scores

            score_fn = scores.empirical(jnp.asarray(subject.train), subject.sde)
            cache_key = ("exact", data_id, subject.sde.__dict__)
        res, tm = ease_scores(score_fn, subject.sde, subject.train, subject.heldout, settings,
                              key=jax.random.fold_in(key, 1 if kind == "exact" else 0),
                              grid_steps=int(ec.grid_steps), batch_size=int(kc.batch_size),
                              options=opts, cache_dir=cache,
                              cache_key=(cache_key, int(config.seed), CODE_VERSION),
                              label=kind, mesh=mesh, progress=progress, log=log)
        timings["ease"].update(tm)
        rows[kind] = res
    return rows


def samples_stage(config, subject, cache, progress, log):
    from memjax import sampling

    sc = config.sampling
    shape = tuple(subject.train.shape[1:])

    def draw():
        return {"samples": sampling.sample(
            subject.score_fn, subject.sde, jax.random.fold_in(jax.random.key(int(config.seed)), 2),
            int(sc.num_samples), shape, sampler=sc.sampler, num_steps=int(sc.num_steps),
            eta=float(sc.eta), batch_size=int(sc.batch_size), progress=progress)}

    key = (subject.model_id, sc.to_dict(), int(config.seed), CODE_VERSION)
    return wd.cached(f"{cache}/samples", key, draw, log=log)


def memorization_stage(config, subject, samples, cache, mesh, log):
    mc = config.memorization
    margs = dict(n=int(mc.n), alpha=float(mc.alpha), delta=float(mc.delta),
                 ratio_threshold=float(mc.ratio_threshold))

    def memo():
        s = memorization_metrics(samples, subject.train, mesh=mesh, **margs)
        h = memorization_metrics(subject.heldout, subject.train, mesh=mesh, **margs)
        keys = ("l2", "normalized_l2", "d1_d2", "nearest", "memorized")
        return {**{f"samples_{k}": s[k] for k in keys}, **{f"heldout_{k}": h[k] for k in keys}}

    key = (fingerprint(samples), fingerprint(subject.train, subject.heldout), margs, CODE_VERSION)
    arrays, reused = wd.cached(f"{cache}/memorization", key, memo, log=log)
    if mc.get("features", ""):
        arrays = dict(arrays, feature_similarity=feature_similarity(
            config, subject, samples, workdir=cache.rsplit("/", 1)[0], cache=cache, log=log))
    return arrays, reused


def feature_similarity(config, subject, samples, *, workdir, cache, log) -> dict:
    """Best cosine similarity of every sample and held-out image to the training set in the
    feature space ``memorization.features`` (paper 002's measure; AMS / UMS in its bands, paper
    001 eqs. 14-15, are read off in the report). Features are cached stages."""
    from memjax.jobs import feature_space as fs
    from memjax.metrics import memorization as mem

    mc = config.memorization
    embed, space = fs.embedder(mc.features, workdir, field="memorization.features",
                               train=subject.train, seed=int(config.seed), log=log)
    bands, origin = fs.similarity_bands(mc.features, mc.get("bands"), field="memorization.bands",
                                        feature_space=space)
    f = {k: embed(x, k) for k, x in (("train", subject.train), ("samples", samples),
                                     ("heldout", subject.heldout))}

    def best():
        out = {}
        for k in ("samples", "heldout"):
            sim, idx = mem.best_match(f[k], f["train"], measure="cosine")
            out[f"{k}_cosine"], out[f"{k}_index"] = np.asarray(sim), np.asarray(idx)
        return out

    key = (fs.spec_id(mc.features), fingerprint(f["train"], f["samples"], f["heldout"]),
           CODE_VERSION)
    arrays, _ = wd.cached(f"{cache}/feature_similarity", key, best, log=log)
    return {**arrays, "feature_space": space, "bands_origin": origin, "bands": bands,
            "num_train": len(f["train"])}


def diverse_stage(config, subject, samples, workdir, cache, log):
    from memjax.jobs import sources

    dc = config.diverse
    real = np.concatenate([subject.train, subject.heldout]) if dc.reference == "all" \
        else subject.train

    def div():
        from memjax.metrics import diverse as dv

        feats = sources.load_features(dc.features, train=subject.train,
                                      workdir=f"{workdir}/classifier", seed=int(config.seed),
                                      field="diverse.features")
        fr, fg = np.asarray(feats(real)), np.asarray(feats(samples))
        space = np.asarray(getattr(feats, "name", dc.features))
        if dc.method == "tsne_hull":
            res = dv.tsne_hull(fr, fg, key=jax.random.fold_in(jax.random.key(int(config.seed)), 3),
                               perplexity=float(dc.perplexity), num_iters=int(dc.num_iters))
            emb = np.concatenate([np.asarray(res.real_embedding),
                                  np.asarray(res.generated_embedding)])
            return {"mask": np.asarray(res.diverse), "embedding": emb, "feature_space": space}
        res = dv.knn_support(fr, fg, k=int(dc.k))
        return {"mask": np.asarray(res.diverse), "embedding": np.zeros((0, 2), np.float32),
                "feature_space": space}

    from memjax.jobs import feature_space as fs

    key = (fingerprint(samples), fingerprint(subject.train, subject.heldout), dc.to_dict(),
           int(config.seed), CODE_VERSION)
    if ":" in dc.features:   # the weights' content, not only their path
        key = key + (fs.spec_id(dc.features),)
    return wd.cached(f"{cache}/diverse", key, div, log=log)
