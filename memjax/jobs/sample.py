"""The sample job (``memjax-sample``): chunked samples of a model (a memjax training workdir,
a diffusers directory or ``module:function``: :func:`memjax.jobs.sources.job_target`) and how
close they are to its training set.

Each chunk ``workdir/samples/chunk_<c>.npz`` is a stage keyed by the model, the sampler fields,
the seed and the chunk (:func:`memjax.workdir.cached`): an interrupted run resumes from the
chunks it finished, and a changed sampler field recomputes the chunks instead of mixing runs.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, console, sampling
from memjax import workdir as wd

__all__ = ["validate_config", "score_for", "nearest_stats", "run"]

CODE_VERSION = 1
SAMPLER_FIELDS = ("sampler", "num_steps", "eta", "denoise", "label", "guidance_scale")


def validate_config(config) -> None:
    """``ValueError`` naming the field of an invalid sample config."""
    _checks.check_positive_int("num_samples", config.num_samples)
    _checks.check_positive_int("chunk_size", config.chunk_size)
    _checks.check_positive_int("batch_size", config.batch_size)
    sampling.check_sampler_args(config.sampler, config.num_steps, config.eta, "tsit5", 1e-5, 1e-5)


def score_for(trained, label: int = -1, guidance_scale: float = 1.0) -> Callable:
    """The score of a trained model: unconditional (``label = -1``), or classifier-free guided
    towards ``label`` with ``guidance_scale`` (``score_fn(x, t, y)``)."""
    from memjax import scores, training

    if int(label) < 0:
        return training.trained_score_fn(trained)
    model, sde = trained.model, trained.sde
    num_classes = getattr(model, "num_classes", None)
    if not num_classes:
        raise ValueError("label: the target model is unconditional; use label = -1")
    if int(label) >= num_classes:
        raise ValueError(f"label: expected a class in [0, {num_classes}), got {label}")
    sampling._check_scale("guidance_scale", guidance_scale)
    param = trained.config.model.parameterization

    def cond_score(x, t, y):
        out = model(x[None], jnp.reshape(t, (1,)), jnp.reshape(y, (1,)))[0]
        return scores.eps_to_score(out, t, sde) if param == "eps" else \
            scores.x0_to_score(out, x, t, sde)

    return sampling.classifier_free_guidance(cond_score, scale=float(guidance_scale),
                                             null_label=num_classes, num_classes=num_classes)


def nearest_stats(samples: np.ndarray, train: np.ndarray) -> tuple[dict, np.ndarray]:
    """L2 and normalized L2 (paper 000 eq. 7, n = 50) of each sample to the training set:
    summary numbers and the index of each sample's nearest training image."""
    from memjax.metrics import memorization as mem

    d, idx = mem.nearest_neighbours(samples, train, k=1, metric="l2")
    d, idx = np.asarray(d)[:, 0], np.asarray(idx)[:, 0]
    nl2 = np.asarray(mem.normalized_l2(samples, train, n=min(50, len(train))).ratio)
    return {"mean_nn_l2": float(d.mean()), "median_nn_l2": float(np.median(d)),
            "fraction_nn_l2_below_1": float(np.mean(d < 1.0)),
            "median_normalized_l2": float(np.median(nl2)),
            "unique_nearest": int(len(np.unique(idx))), "similarity_space": "pixels"}, idx


def run(config, workdir: str, target, *, stop_after_chunks: int | None = None,
        log: Callable[[str], None] = print) -> dict:
    """Draws ``config.num_samples`` samples of ``target`` (a :class:`memjax.training.Trained`
    or a :class:`memjax.jobs.sources.Target`: any model source and its training images, see
    :func:`memjax.jobs.sources.job_target`) in chunks of ``config.chunk_size``, then writes
    ``samples.npz``, ``grid.png``, ``nearest.png`` (samples over their nearest training images),
    ``stats.json`` and ``run_info.json``.

    Fields: ``seed``, ``num_samples``, ``chunk_size``, ``sampler``, ``num_steps``, ``eta``,
    ``denoise``, ``batch_size``, ``label`` (class-conditional models: -1 means unconditional),
    ``guidance_scale`` (classifier-free guidance lambda for ``label >= 0``), ``progress``.
    """
    from memjax import report
    from memjax.jobs import run_info, sources

    validate_config(config)
    workdir = str(workdir)
    src, dataset = sources.as_target(target)
    if src.trained is not None:
        score_fn = score_for(src.trained, int(config.label), float(config.guidance_scale))
    elif int(config.label) >= 0:
        raise ValueError(f"label: {src.description} is an unconditional score_fn; use label = -1")
    else:
        score_fn = src.score_fn
    cond = (None if int(config.label) < 0 else
            np.full(config.num_samples, int(config.label), np.int32))
    smp = sampling.make_sampler(score_fn, src.sde, tuple(np.shape(dataset.train)[1:]),
                                sampler=config.sampler, num_steps=config.num_steps,
                                eta=config.eta, denoise=config.denoise,
                                batch_size=config.batch_size)
    base = (src.model_id, {f: config[f] for f in SAMPLER_FIELDS},
            int(config.seed), int(config.chunk_size), CODE_VERSION)
    key = jax.random.key(config.seed)
    chunks, new = [], 0
    for c, s in enumerate(range(0, config.num_samples, config.chunk_size)):
        stage = f"{workdir}/samples/chunk_{c:05d}"
        m = min(config.chunk_size, config.num_samples - s)
        if wd.lookup(stage, (base, c, m)) is None and stop_after_chunks is not None \
                and new >= stop_after_chunks:
            return {"complete": False, "chunks_done": len(chunks)}
        arrays, reused = wd.cached(stage, (base, c, m), lambda c=c, s=s, m=m: {"images": smp(
            jax.random.fold_in(key, c), m, None if cond is None else cond[s:s + m],
            progress=console.bars(config.progress))}, log=log)
        chunks.append(arrays["images"])
        new += not reused
    samples = np.concatenate(chunks)
    wd.save_npz(f"{workdir}/samples.npz", images=samples)
    train = np.asarray(dataset.train, np.float32)
    near, idx = nearest_stats(samples, train)
    stats = {"num_samples": int(len(samples)), "sampler": config.sampler,
             "num_steps": config.num_steps, **near, "complete": True}
    wd.save_json(f"{workdir}/stats.json", stats)
    wd.save_json(f"{workdir}/run_info.json", run_info(config))
    if wd.is_writer():
        k = min(16, len(samples))
        report.pairs(samples[:k], train[idx[:k]], f"{workdir}/nearest.png", scale=0.8,
                     title=f"{config.sampler}, {config.num_steps} steps: samples over their "
                           "nearest training images")
        report.image_grid(samples[:64], f"{workdir}/grid.png", ncols=8, scale=0.6)
    return stats
