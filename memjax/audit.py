r"""The memorization audit job: one job from a model (trained here or restored) to a report.

Stages, each cached in the workdir so that a second run reuses its result and a killed run
resumes where it stopped and writes the same report::

    model        train ``config.train`` into ``workdir/model`` (resumable, memjax.training), or
                 restore a training workdir / an orbax checkpoint; the split trained on and held
                 out comes with it (``data_split.npz``)
    ease         paper 000's ease of reproduction (log volume growth along the probability-flow
                 ODE, Algorithm 1 / eq. 13) of every trained and held-out image, for each
                 setting ``(N axes, steps)`` -- for the network AND for the exact empirical
                 score of the same training set (eq. 11), a perfect memoriser, as a reference
    samples      samples of the network (memjax.sampling)
    memorization nearest training image of every sample: L2 distance, Carlini's normalized L2
                 (paper 000 eq. 7), the d1/d2 ratio, AMS / UMS (paper 001 eqs. 14-15); the same
                 numbers for the held-out images as a calibration of "not a copy"
    diverse      paper 003's diverse samples (outside the convex hull of the real points in a
                 t-SNE embedding of features)
    report       report.json, report.md and figures

Each stage is stored under ``workdir/audit/<stage>.npz`` with the key of what it depends on
(:func:`memjax.workdir.cached`): change one config field and only the stages that read it are
recomputed (the job says so in one line). The pieces live in the library:
:mod:`memjax.volume_settings` (nested settings, :func:`volume_curves`),
:mod:`memjax.metrics.groups` (:func:`separation`, :func:`memorization_metrics`),
:mod:`memjax.jobs.audit_report` (report, table, figures), :mod:`memjax.jobs.sources` (models
and features).

Statistics per setting: the AUROC of the score for "trained" (positive) against "held out"
(the Mann-Whitney statistic; 1 means every trained image grows more than every held-out one,
0.5 no separation, below 0.5 held-out images grow more) and Welch's t-test (paper 000 Fig. 3
plots its p-values against ``N`` and steps), computed in float64.

Everything is deterministic for a given config: per-image keys come from ``fold_in``, samples
from the sampler's per-example keys, so a resumed run reproduces ``report.json`` bit for bit
(timings live in ``timings.json``, not in the report).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from memjax import _checks
from memjax import parallel as _parallel
from memjax import workdir as wd
from memjax.jobs.audit_report import (REPORT_VERSION, build_report, make_figures,  # noqa: F401
                                      report_markdown, summary_table)
from memjax.metrics.groups import memorization_metrics, separation  # noqa: F401
from memjax.sde import VPSDE, ScoreFn
from memjax.volume_settings import (Setting, VolumeCurves, covering_run, nested_axes,  # noqa: F401
                                    parse_settings, plan_runs, volume_curves)
from memjax.workdir import fingerprint  # noqa: F401

__all__ = ["STAGES", "Subject", "prepare_model", "ease_scores", "audit_arrays", "run_audit", "validate_config",
           "restore_trained", "Setting", "parse_settings", "plan_runs", "covering_run",
           "nested_axes", "VolumeCurves", "volume_curves", "separation", "memorization_metrics",
           "build_report", "make_figures", "summary_table", "report_markdown"]

STAGES = ("model", "ease", "samples", "memorization", "diverse", "report")
# the version of the numerics behind the cached stages: bump it when they change
CODE_VERSION = 1


# =================================================================================================
# the model stage
# =================================================================================================
@dataclasses.dataclass
class Subject:
    """What the audit analyses: the network's score, its SDE, and the split."""

    score_fn: ScoreFn
    sde: VPSDE
    train: np.ndarray
    heldout: np.ndarray
    model_id: str
    description: str
    train_source: np.ndarray | None = None
    heldout_source: np.ndarray | None = None
    step: int | None = None


def _subject(src, dataset) -> Subject:
    return Subject(score_fn=src.score_fn, sde=src.sde, train=np.asarray(dataset.train, np.float32),
                   heldout=np.asarray(dataset.heldout, np.float32), model_id=src.model_id,
                   description=src.description, train_source=dataset.train_source,
                   heldout_source=dataset.heldout_source,
                   step=None if src.trained is None else int(src.trained.step))


def restore_trained(train_config, checkpoint_dir: str, dataset, *, step: int | None = None):
    """A :class:`memjax.training.Trained` (EMA weights, eval mode) from an orbax checkpoint
    directory of a memjax train state (:func:`memjax.training.restore_model`: restored into an
    abstract template, the network never initialised)."""
    from memjax import training

    model, step = training.restore_model(train_config, checkpoint_dir, step=step,
                                         field="model.checkpoint")
    return training.Trained(model=model, config=train_config, sde=training.make_sde(train_config),
                            dataset=dataset, step=step)


def _trained_steps(model_dir, keep: int) -> int:
    from memjax import training

    try:
        ck = training.Checkpointer(f"{model_dir}/{training.CHECKPOINT_DIRNAME}", keep=keep)
        done = ck.latest_step() or 0
        ck.close()
        return done
    except Exception:  # noqa: BLE001 -- train() reports a broken checkpoint itself
        return 0


def _data_section(config) -> tuple[str, Any]:
    """Where a ``model.source`` that is not a memjax workdir takes its trained / held-out
    images from: ``config.data``, else ``config.train.data`` (None when neither exists)."""
    if "data" in config:
        return "data", config.data
    if "train" in config and "data" in config.train:
        return "train.data", config.train.data
    return "data", None


def prepare_model(config, workdir: str, *, log: Callable[[str], None] = print) -> Subject:
    """Stage ``model``: trains ``config.train`` into ``workdir/model`` (resuming from its last
    checkpoint), or restores ``config.model.workdir`` (a memjax training workdir),
    ``config.model.checkpoint`` (an orbax checkpoint directory of a memjax train state, with the
    architecture of ``config.train.model`` and the split of ``config.train.data``) or loads
    ``config.model.source`` (:func:`memjax.jobs.sources.load_target`: a training workdir with
    its own split, or a diffusers directory / ``module:function`` with the split of
    ``config.data``, else ``config.train.data``, and the held-out images of
    ``config.heldout_data`` when set)."""
    from memjax import data as data_lib
    from memjax import training
    from memjax.jobs import sources

    m = config.model
    if m.workdir:
        src = sources.load_model_source(m.workdir, step=m.step or None, field="model.workdir")
        return _subject(src, src.trained.dataset)
    if m.get("source", ""):
        data_field, data_config = _data_section(config)
        t = sources.load_target(m.source, data_config, heldout_config=config.get("heldout_data"),
                                step=m.step or None, field="model.source", data_field=data_field)
        return _subject(t.source, t.dataset)
    if m.checkpoint:
        training.validate_config(config.train)
        dataset = data_lib.load_dataset(config.train.data)
        trained = restore_trained(config.train, m.checkpoint, dataset, step=m.step or None)
        return _subject(sources.from_trained(trained, f"restored checkpoint {m.checkpoint} "
                                                      f"(step {trained.step})"), dataset)
    model_dir = f"{workdir}/model"
    num_steps = int(config.train.training.num_steps)
    done = _trained_steps(model_dir, int(config.train.training.keep_checkpoints))
    if done < num_steps:
        log(f"[model] training {config.train.data.source} model for {num_steps} steps "
            f"({'resuming at ' + str(done) if done else 'from scratch'}) in {model_dir}")
        training.train(config.train, model_dir)
    src = sources.load_model_source(model_dir, field="model")
    return _subject(src._replace(description=f"trained here ({model_dir}, step "
                                             f"{src.trained.step})"), src.trained.dataset)


# =================================================================================================
# the ease stage
# =================================================================================================
def _ease_options(ec) -> dict:
    return dict(method=ec.method, accumulate=ec.accumulate, sigma=float(ec.sigma),
                solver=ec.solver, check_stability=bool(ec.check_stability))


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


# =================================================================================================
# the other stages
# =================================================================================================
def _timed(timings: dict, name: str, fn: Callable[[], tuple[Any, bool]]) -> Any:
    t0 = time.perf_counter()
    out, reused = fn()
    timings[name] = "cached" if reused else round(time.perf_counter() - t0, 2)
    return out


def _ease_stage(config, subject, cache, mesh, progress, log, timings) -> dict:
    ec = config.ease
    opts = _ease_options(ec)
    key = jax.random.key(int(config.seed))
    dim = int(np.prod(subject.train.shape[1:]))
    data_id = fingerprint(subject.train, subject.heldout)
    rows = {}
    timings["ease"] = {}
    for kind in ("network", "exact"):
        kc = ec[kind]
        if not kc.enabled:
            continue
        settings = parse_settings(kc.settings, dim=dim, grid_steps=int(ec.grid_steps),
                                  name=f"ease.{kind}.settings")
        if kind == "network":
            score_fn, cache_key = subject.score_fn, ("network", subject.model_id, data_id)
        else:
            from memjax import scores

            score_fn = scores.empirical(jnp.asarray(subject.train), subject.sde)
            cache_key = ("exact", data_id, subject.sde.__dict__)
        res, tm = ease_scores(score_fn, subject.sde, subject.train, subject.heldout, settings,
                              key=jax.random.fold_in(key, 0 if kind == "network" else 1),
                              grid_steps=int(ec.grid_steps), batch_size=int(kc.batch_size),
                              options=opts, cache_dir=cache,
                              cache_key=(cache_key, int(config.seed), CODE_VERSION),
                              label=kind, mesh=mesh, progress=progress, log=log)
        timings["ease"].update(tm)
        rows[kind] = res
    return rows


def _samples_stage(config, subject, cache, progress, log):
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


def _memorization_stage(config, subject, samples, cache, mesh, log):
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
        arrays = dict(arrays, feature_similarity=_feature_similarity(
            config, subject, samples, workdir=cache.rsplit("/", 1)[0], cache=cache, log=log))
    return arrays, reused


def _feature_similarity(config, subject, samples, *, workdir, cache, log) -> dict:
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


def _diverse_stage(config, subject, samples, workdir, cache, log):
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


def _write_report(config, workdir, subject, rows, samples, mem, diverse) -> dict:
    from memjax.jobs import run_info

    report = build_report(config, subject, rows, samples, mem, diverse)
    wd.save_json(f"{workdir}/report.json", report)
    figures = make_figures(config, subject, rows, samples, mem, diverse, f"{workdir}/figures")
    info = run_info(config)
    wd.write_text(f"{workdir}/report.md", report_markdown(report, figures) + (
        f"\nRun: memjax {info['memjax']}, JAX {info['jax']}, {len(info['devices'])} "
        f"{info['backend']} device(s), {info['process_count']} process(es); the full config is in "
        "run_info.json.\n"))
    wd.save_json(f"{workdir}/run_info.json", info)
    return report


def run_audit(config, workdir: str, *, progress: bool = True,
              log: Callable[[str], None] = print) -> dict:
    """Runs (or resumes) the audit ``config`` describes, writing everything under ``workdir``.

    Returns the report (the content of ``workdir/report.json``). See the module docstring for
    the stages and ``configs/digits_audit.py`` for every config field.
    """
    validate_config(config)
    workdir = str(workdir)
    cache = f"{workdir}/audit"
    wd.makedirs(cache)
    timings: dict[str, Any] = {}
    t_all = time.perf_counter()
    mesh = _parallel.data_mesh()
    subject = _timed(timings, "model", lambda: (prepare_model(config, workdir, log=log), False))
    if subject.heldout.shape[0] < 2:
        raise ValueError("train.data.num_heldout: the audit compares trained with held-out "
                         f"images and needs at least 2 held-out images, got {subject.heldout.shape[0]}")
    log(f"[model] {subject.description}; {subject.train.shape[0]} trained and "
        f"{subject.heldout.shape[0]} held-out images of shape {tuple(subject.train.shape[1:])} "
        f"({timings['model']} s)")
    rows = _ease_stage(config, subject, cache, mesh, progress, log, timings)
    samples = mem = diverse = None
    sc, dc = config.sampling, config.diverse
    if sc.num_samples > 0:
        samples = _timed(timings, "samples",
                         lambda: _samples_stage(config, subject, cache, progress, log))["samples"]
        log(f"[samples] {samples.shape[0]} samples ({sc.sampler}, {sc.num_steps} steps): "
            f"{timings['samples']}")
        mem = _timed(timings, "memorization",
                     lambda: _memorization_stage(config, subject, samples, cache, mesh, log))
        if "feature_similarity" in mem:
            log(f"[memorization] cosine similarity in "
                f"{mem['feature_similarity']['feature_space']} ({config.memorization.features})")
        log(f"[memorization] nearest training images of {len(samples)} samples and "
            f"{len(subject.heldout)} held-out images: {timings['memorization']}")
        if dc.enabled:
            diverse = _timed(timings, "diverse",
                             lambda: _diverse_stage(config, subject, samples, workdir, cache, log))
            log(f"[diverse] {dc.method} in {dc.features} features: {timings['diverse']}")
    report = _timed(timings, "report", lambda: (_write_report(
        config, workdir, subject, rows, samples, mem, diverse), False))
    timings["total"] = round(time.perf_counter() - t_all, 2)
    wd.save_json(f"{workdir}/timings.json", timings)
    log(summary_table(report))
    log(f"[audit] report in {workdir}/report.md ({timings['total']} s this run)")
    return wd.to_jsonable(report)


def cached_arrays(path: str, key: Any, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """Deprecated alias: :func:`memjax.workdir.cached` without the log line."""
    return wd.cached(path, key, compute, log=None)


# =================================================================================================
# config validation
# =================================================================================================
def validate_config(config) -> None:
    """Raises ``ValueError`` naming the field of an invalid audit config."""
    for field in ("seed", "model", "ease", "sampling", "memorization", "diverse", "report"):
        if field not in config:
            raise ValueError(f"{field}: missing from the audit config (see configs/digits_audit.py)")
    if not (config.model.workdir or config.model.checkpoint or config.model.get("source", "")) \
            and "train" not in config:
        raise ValueError("train: the audit trains a model unless model.workdir or "
                         "model.checkpoint is set; expected a training config")
    chosen = [f for f in ("workdir", "checkpoint", "source") if config.model.get(f, "")]
    if len(chosen) > 1:
        raise ValueError(f"model.{', model.'.join(chosen)}: set at most one")
    if config.model.get("source", ""):
        from memjax import data as data_lib

        data_field, data_config = _data_section(config)
        if data_config is not None:  # a workdir source needs none; load_target says so
            data_lib.validate_data_config(data_config, prefix=data_field)
        if config.get("heldout_data") is not None:
            data_lib.validate_data_config(config.heldout_data, prefix="heldout_data")
    elif not config.model.workdir:
        from memjax import training

        try:
            training.validate_config(config.train)
        except ValueError as e:
            raise ValueError(f"train.{e}") from e
    ec = config.ease
    _checks.check_choice("ease.method", ec.method, ("jvp", "finite_difference"))
    _checks.check_choice("ease.accumulate", ec.accumulate, ("qr", "norms"))
    _checks.check_positive_int("ease.grid_steps", ec.grid_steps)
    for kind in ("network", "exact"):
        _checks.check_positive_int(f"ease.{kind}.batch_size", ec[kind].batch_size)
        if ec[kind].enabled:
            parse_settings(ec[kind].settings, grid_steps=int(ec.grid_steps),
                           name=f"ease.{kind}.settings")
    sc = config.sampling
    if not isinstance(sc.num_samples, int) or sc.num_samples < 0:
        raise ValueError(f"sampling.num_samples: expected a non-negative integer, got "
                         f"{sc.num_samples!r}")
    from memjax.sampling import SAMPLERS
    _checks.check_choice("sampling.sampler", sc.sampler, SAMPLERS)
    _checks.check_positive_int("sampling.num_steps", sc.num_steps)
    _checks.check_positive_int("sampling.batch_size", sc.batch_size)
    mc = config.memorization
    _checks.check_positive_int("memorization.n", mc.n)
    _checks.check_positive("memorization.alpha", mc.alpha)
    _checks.check_positive("memorization.delta", mc.delta)
    _checks.check_positive("memorization.ratio_threshold", mc.ratio_threshold)
    from memjax.jobs import feature_space as fs

    fs.check_spec(config.diverse.features, "diverse.features")
    if mc.get("features", ""):
        fs.check_spec(mc.features, "memorization.features")
        fs.similarity_bands(mc.features, mc.get("bands"), field="memorization.bands")
    _checks.check_choice("diverse.method", config.diverse.method, ("tsne_hull", "knn_support"))
    _checks.check_choice("diverse.reference", config.diverse.reference, ("train", "all"))
    _checks.check_positive_int("report.num_show", config.report.num_show)

