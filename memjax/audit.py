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
:mod:`memjax.jobs.audit_stages` (the stages, :func:`ease_scores`, :func:`audit_arrays`),
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
from typing import Any, Callable

import numpy as np

from memjax import _checks
from memjax import parallel as _parallel
from memjax import workdir as wd
from memjax.jobs import audit_stages as stages
from memjax.jobs.audit_report import (REPORT_VERSION, build_report, make_figures,  # noqa: F401
                                      report_markdown, summary_table)
from memjax.jobs.audit_stages import CODE_VERSION, audit_arrays, ease_scores  # noqa: F401
from memjax.metrics.groups import memorization_metrics, separation  # noqa: F401
from memjax.sde import VPSDE, ScoreFn
from memjax.volume_settings import (Setting, VolumeCurves, covering_run, nested_axes,  # noqa: F401
                                    parse_settings, plan_runs, volume_curves)
from memjax.workdir import fingerprint  # noqa: F401

__all__ = ["STAGES", "Subject", "prepare_model", "ease_scores", "audit_arrays", "run_audit",
           "validate_config", "restore_trained", "Setting", "parse_settings", "plan_runs",
           "covering_run", "nested_axes", "VolumeCurves", "volume_curves", "separation",
           "memorization_metrics", "build_report", "make_figures", "summary_table",
           "report_markdown"]

STAGES = ("model", "ease", "samples", "memorization", "diverse", "report")


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
# running the stages (memjax.jobs.audit_stages)
# =================================================================================================
def _timed(timings: dict, name: str, fn: Callable[[], tuple[Any, bool]]) -> Any:
    t0 = time.perf_counter()
    out, reused = fn()
    timings[name] = "cached" if reused else round(time.perf_counter() - t0, 2)
    return out


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
    rows = stages.ease_stage(config, subject, cache, mesh, progress, log, timings)
    samples = mem = diverse = None
    sc, dc = config.sampling, config.diverse
    if sc.num_samples > 0:
        samples = _timed(timings, "samples",
                         lambda: stages.samples_stage(config, subject, cache, progress, log))["samples"]
        log(f"[samples] {samples.shape[0]} samples ({sc.sampler}, {sc.num_steps} steps): "
            f"{timings['samples']}")
        mem = _timed(timings, "memorization",
                     lambda: stages.memorization_stage(config, subject, samples, cache, mesh, log))
        if "feature_similarity" in mem:
            log(f"[memorization] cosine similarity in "
                f"{mem['feature_similarity']['feature_space']} ({config.memorization.features})")
        log(f"[memorization] nearest training images of {len(samples)} samples and "
            f"{len(subject.heldout)} held-out images: {timings['memorization']}")
        if dc.enabled:
            diverse = _timed(timings, "diverse",
                             lambda: stages.diverse_stage(config, subject, samples, workdir, cache, log))
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
    from memjax.jobs import ease_rows

    for kind in (k for k in ease_rows.ROW_KINDS if k in ec):
        _checks.check_positive_int(f"ease.{kind}.batch_size", ec[kind].batch_size)
        for f in ("method", "accumulate"):
            if f in ec[kind]:
                _checks.check_choice(f"ease.{kind}.{f}", ec[kind][f], ease_rows.CHOICES[f])
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

