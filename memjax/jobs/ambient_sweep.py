r"""Paper 002 in miniature: standard against ambient training over seeds, and a sigma_tn sweep.

    python -m memjax.scripts.ambient_sweep --config=ambient_sweep --workdir=/tmp/sweep

Every run trains the same images (``train.data.seed``) from the same recipe and differs only in
the objective (``"standard"``: DDPM x0 loss, eq. 3; ``"ambient"``: Algorithm 1 at ``sigma_tn``)
and the seed (initialisation, batch order, step keys, and the fixed noisy copies of ambient
training, ``objective.noise_seed = seed``). The runs:

* ``seeds`` x {standard, ambient at ``sigma_tn``}: the headline comparison, mean and standard
  error over seeds (``objectives``, default both, picks the arms: ``("standard",)`` runs the
  standard arm alone, e.g. a pilot over training-set sizes);
* ``sweep_seeds`` x ``sweep_sigma_tn``: the other points of the memorization-quality plane
  (paper 002 Fig. 2; there ``sigma_tn`` is an EDM noise level s, here the VP scale
  ``s / sqrt(1 + s^2)``).

Per run (``workdir/runs/<name>``, resumed from its checkpoints; its numbers cached in
``eval.npz`` under the key of the checkpoint and the evaluation fields): ``num_samples`` samples,
the fraction ``memorized`` whose nearest training image lies within L2 ``radius`` in pixels, the
median nearest-neighbour L2, and the Fréchet distance ``fd`` to the held-out images in the
penultimate features of memjax's digits classifier
(:func:`memjax.metrics.features.digits_classifier_features`). Writes ``runs.json`` (one row a
run), ``summary.json`` / ``summary.md`` (mean and standard error per condition, Pareto flags) and
``pareto.png``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, NamedTuple, Sequence

import numpy as np

from memjax import _checks
from memjax import workdir as wd

__all__ = ["RunSpec", "validate_config", "run_specs", "run_config", "mean_sem", "summarize",
           "pareto_front", "evaluate", "plot_pareto", "summary_table", "run"]

CODE_VERSION = 1
EVAL_FIELDS = ("num_samples", "sampler", "num_steps", "radius")


class RunSpec(NamedTuple):
    """One training run: ``objective`` ("standard" / "ambient"), ``sigma_tn`` (None for
    standard) and ``seed``."""
    objective: str
    sigma_tn: float | None
    seed: int

    @property
    def condition(self) -> str:
        return "standard" if self.sigma_tn is None else f"ambient {self.sigma_tn:.3f}"

    @property
    def name(self) -> str:
        tag = "standard" if self.sigma_tn is None else f"ambient_{self.sigma_tn:.3f}"
        return f"{tag}_seed{self.seed}"


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_seeds(name: str, seeds) -> None:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise ValueError(f"{name}: expected a sequence of distinct ints >= 0, got {seeds!r}")
    if not all(_is_int(s) and s >= 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"{name}: expected a sequence of distinct ints >= 0, got {seeds!r}")


def _check_sigma(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name}: expected a VP noise scale in the open interval (0, 1) (an EDM "
                         f"level s is s / sqrt(1 + s^2)), got {value!r}")


HEADLINE_OBJECTIVES = ("standard", "ambient")


def _objectives(config) -> tuple[str, ...]:
    """The arms of the headline pair to run (``config.objectives``; both when absent)."""
    return tuple(config.get("objectives", HEADLINE_OBJECTIVES))


def validate_config(config) -> None:
    """``ValueError`` naming the field of an invalid sweep config (every run's training config
    included), before anything compiles."""
    from memjax import sampling, training

    _check_seeds("seeds", config.seeds)
    _check_seeds("sweep_seeds", config.sweep_seeds)
    objectives = config.get("objectives", HEADLINE_OBJECTIVES)
    if (isinstance(objectives, (str, bytes)) or not isinstance(objectives, Sequence)
            or not objectives or len(set(objectives)) != len(objectives)
            or not set(objectives) <= set(HEADLINE_OBJECTIVES)):
        raise ValueError(f"objectives: expected a non-empty sequence of distinct names from "
                         f"{HEADLINE_OBJECTIVES}, got {objectives!r}")
    _check_sigma("sigma_tn", config.sigma_tn)
    if isinstance(config.sweep_sigma_tn, (str, bytes)) or not isinstance(config.sweep_sigma_tn,
                                                                          Sequence):
        raise ValueError(f"sweep_sigma_tn: expected a sequence of VP noise scales in (0, 1), got "
                         f"{config.sweep_sigma_tn!r}")
    for i, s in enumerate(config.sweep_sigma_tn):
        _check_sigma(f"sweep_sigma_tn[{i}]", s)
    if not run_specs(config):
        raise ValueError("seeds: expected at least one run; with seeds = () (no headline pair) "
                         "sweep_seeds and sweep_sigma_tn must not be empty, got "
                         f"sweep_seeds {config.sweep_seeds!r}, sweep_sigma_tn "
                         f"{config.sweep_sigma_tn!r}")
    _checks.check_positive_int("num_samples", config.num_samples)
    if config.num_samples < 2:
        raise ValueError(f"num_samples: expected at least 2 (a covariance), got {config.num_samples}")
    _checks.check_positive("radius", config.radius)
    sampling.check_sampler_args(config.sampler, config.num_steps, 0.0, "tsit5", 1e-5, 1e-5)
    for spec in run_specs(config):
        training.validate_config(run_config(config, spec))


def run_specs(config) -> list[RunSpec]:
    """The runs of a sweep: standard and ambient at ``sigma_tn`` (those of them in
    ``objectives``) for every seed of ``seeds``, then ambient at every other ``sweep_sigma_tn``
    for every seed of ``sweep_seeds``. With ``seeds = ()`` only the sweep runs (e.g. more seeds
    for the sweep points alone)."""
    main = float(config.sigma_tn)
    arms = _objectives(config)
    specs = [RunSpec("standard", None, int(s)) for s in config.seeds if "standard" in arms]
    specs += [RunSpec("ambient", main, int(s)) for s in config.seeds if "ambient" in arms]
    specs += [RunSpec("ambient", float(v), int(s)) for v in config.sweep_sigma_tn
              for s in config.sweep_seeds if not math.isclose(float(v), main)]
    return specs


def run_config(config, spec: RunSpec):
    """The training config of one run: ``config.train`` with the spec's seed and objective."""
    c = config.train.copy_and_resolve_references()
    c.seed = spec.seed
    c.objective.name = spec.objective
    if spec.objective == "ambient":
        c.objective.t_n = None
        c.objective.sigma_tn = spec.sigma_tn
        c.objective.noise_seed = spec.seed
    else:
        c.objective.sigma_tn = None
        c.objective.t_n = None
    return c


# -- aggregation -----------------------------------------------------------------------------------
def mean_sem(values: Sequence[float]) -> tuple[float, float]:
    r"""Mean and standard error ``s / sqrt(n)`` (``s`` with ``ddof = 1``) of ``values``; the
    standard error is NaN for a single value."""
    v = np.asarray(values, np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values: expected a non-empty 1-d sequence, got shape {v.shape}")
    sem = float(np.std(v, ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), sem


def summarize(rows: Sequence[dict], metrics: Sequence[str] = ("memorized", "fd", "median_nn_l2")
              ) -> list[dict]:
    """One row per condition (``objective``, ``sigma_tn``), in first-seen order: ``n`` seeds
    and ``<metric>_mean`` / ``<metric>_sem`` over them, with ``pareto`` true where no other
    condition has both a lower-or-equal mean memorized fraction and Fréchet distance and one of
    them strictly lower."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["objective"], r["sigma_tn"]), []).append(r)
    out = []
    for (objective, sigma), rs in groups.items():
        row = {"objective": objective, "sigma_tn": sigma, "n": len(rs),
               "seeds": [r["seed"] for r in rs]}
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_sem"] = mean_sem([r[m] for r in rs])
        out.append(row)
    if out and "memorized" in metrics and "fd" in metrics:
        front = pareto_front([[r["memorized_mean"], r["fd_mean"]] for r in out])
        for r, p in zip(out, front):
            r["pareto"] = bool(p)
    return out


def pareto_front(points) -> np.ndarray:
    """``[n]`` bools: the points ``[n, d]`` no other point dominates (lower-or-equal in every
    coordinate, strictly lower in one; all coordinates minimised). Duplicates are all kept."""
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"points: expected a non-empty array [n, d], got shape {p.shape}")
    le = np.all(p[:, None, :] <= p[None, :, :], axis=-1)   # le[j, i]: j <= i everywhere
    lt = np.any(p[:, None, :] < p[None, :, :], axis=-1)
    return ~np.any(le & lt, axis=0)


# -- one run ---------------------------------------------------------------------------------------
def _nearest_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from memjax.metrics import memorization as mem

    d, _ = mem.nearest_neighbours(a, b, k=1, metric="l2")
    return np.asarray(d)[:, 0]


def evaluate(trained, config, feature_fn: Callable, ref_features: np.ndarray) -> dict:
    """Samples of ``trained`` (key ``seed`` of the run) and their numbers: ``memorized``
    (fraction within L2 ``config.radius`` of the nearest training image, pixels),
    ``median_nn_l2`` and ``fd`` (Fréchet distance of ``feature_fn`` features to
    ``ref_features``)."""
    import jax

    from memjax import sampling, training
    from memjax.metrics import features, stats

    x = sampling.sample(training.trained_score_fn(trained), trained.sde,
                        jax.random.key(int(trained.config.seed)), int(config.num_samples),
                        tuple(np.shape(trained.dataset.train)[1:]), sampler=config.sampler,
                        num_steps=int(config.num_steps))
    x = np.asarray(x, np.float32)
    d = _nearest_l2(x, np.asarray(trained.dataset.train, np.float32))
    fd = float(stats.frechet_distance(features.compute_features(feature_fn, x), ref_features))
    return {"samples": x, "memorized": float(np.mean(d < config.radius)),
            "median_nn_l2": float(np.median(d)), "fd": fd}


# -- figure ----------------------------------------------------------------------------------------
def plot_pareto(summary: Sequence[dict], path: str, *, reference: dict | None = None,
                title: str = "") -> str:
    """Memorized fraction against Fréchet distance, one point (mean +- standard error) per
    condition, ambient points labelled by sigma_tn, the Pareto front joined by a line."""
    from memjax import report

    fig = report.figure(5.2, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for r in summary:
        std = r["objective"] == "standard"
        xe, ye = (np.nan_to_num(r[k]) for k in ("memorized_sem", "fd_sem"))
        ax.errorbar(r["memorized_mean"], r["fd_mean"], xerr=xe, yerr=ye,
                    fmt="s" if std else "o", color="C3" if std else "C0", capsize=2, ms=5)
        label = "standard (DDPM)" if std else f"ambient, sigma_tn {r['sigma_tn']:.2f}"
        ax.annotate(label, (r["memorized_mean"], r["fd_mean"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    front = sorted((r["memorized_mean"], r["fd_mean"]) for r in summary if r.get("pareto"))
    if len(front) > 1:
        ax.plot(*zip(*front), "--", color="0.5", lw=0.8, label="Pareto front")
        ax.legend(fontsize=7, loc="best")
    if reference:
        ax.axhline(reference["fd"], color="0.7", lw=0.8, ls=":")
        ax.annotate("training images", (0.0, reference["fd"]), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(2, 2), fontsize=6, color="0.4")
    ax.set_xlabel("memorized fraction (nearest training image within L2 radius, pixels)")
    ax.set_ylabel("Fréchet distance (digits-classifier features)")
    ax.set_title(title, fontsize=8)
    return report.save_figure(fig, path)


# -- the job ---------------------------------------------------------------------------------------
def _train(config, spec: RunSpec, rundir: str) -> float:
    from memjax import training

    t0 = time.perf_counter()
    training.train(run_config(config, spec), rundir)
    return time.perf_counter() - t0


def _evaluate_run(config, spec: RunSpec, rundir: str, feature_fn, ref, train_s: float,
                  log) -> dict:
    from memjax import training

    trained = training.load_trained(rundir)
    key = (CODE_VERSION, spec, trained.step, {f: config[f] for f in EVAL_FIELDS},
           wd.fingerprint(ref))
    arrays, reused = wd.cached(f"{rundir}/eval", key, lambda: evaluate(trained, config,
                                                                         feature_fn, ref), log=log)
    row = {"name": spec.name, "objective": spec.objective, "sigma_tn": spec.sigma_tn,
           "seed": spec.seed, "step": trained.step,
           **{k: float(arrays[k]) for k in ("memorized", "median_nn_l2", "fd")}}
    if not reused:
        row["train_s"], row["load_1min"] = round(train_s, 1), os.getloadavg()[0]
    log(f"[ambient_sweep] {spec.name}: memorized {row['memorized']:.3f}, "
        f"FD {row['fd']:.3f} (digits-classifier features)")
    return row


def _reference(config, workdir: str):
    """The feature function, the held-out features and the reference numbers of the data."""
    from memjax import data as data_lib
    from memjax.metrics import features, stats

    dataset = data_lib.load_dataset(config.train.data)
    feature_fn = features.digits_classifier_features(train=dataset.train,
                                                     workdir=f"{workdir}/features")
    ref = np.asarray(features.compute_features(feature_fn, dataset.heldout))
    train_x = np.asarray(dataset.train, np.float32)
    reference = {
        "heldout_memorized": float(np.mean(_nearest_l2(np.asarray(dataset.heldout, np.float32),
                                                       train_x) < config.radius)),
        "fd": float(stats.frechet_distance(features.compute_features(feature_fn, train_x), ref)),
        "num_train": int(len(train_x)), "num_heldout": int(len(ref)),
        "classifier_accuracy": feature_fn.accuracy}
    return feature_fn, ref, reference


def summary_table(summary: Sequence[dict]) -> str:
    head = ("| condition | seeds | memorized (L2 < radius, pixels) | median NN L2 | "
            "FD (digits-classifier features) | Pareto |\n| --- | ---: | ---: | ---: | ---: | --- |")
    lines = [head]
    for r in summary:
        cond = "standard" if r["sigma_tn"] is None else f"ambient sigma_tn={r['sigma_tn']:.3f}"
        lines.append(f"| {cond} | {r['n']} | {r['memorized_mean']:.3f} +- "
                     f"{r['memorized_sem']:.3f} | {r['median_nn_l2_mean']:.3f} +- "
                     f"{r['median_nn_l2_sem']:.3f} | {r['fd_mean']:.3f} +- {r['fd_sem']:.3f} | "
                     f"{'yes' if r.get('pareto') else ''} |")
    return "\n".join(lines) + "\n"


def run(config, workdir: str, *, shard: int = 0, num_shards: int = 1,
        log: Callable[[str], None] = print) -> dict:
    """Trains (or resumes) every run of :func:`run_specs`, evaluates each, and writes
    ``runs.json``, ``summary.json``, ``summary.md`` and ``pareto.png`` under ``workdir``.
    Returns ``{"runs", "summary", "reference"}``; ``reference`` holds the held-out images'
    own numbers (the fraction within ``radius`` of a training image) and the Fréchet distance of
    the training images themselves (a perfect copier).

    With ``num_shards > 1`` this process trains and evaluates only the runs
    ``run_specs(config)[shard::num_shards]`` and writes no summary (``summary`` is None): start
    one process per shard, then one with ``num_shards = 1``, which reuses every finished run.
    Each process trains its runs first, then the feature classifier (``workdir/features``: the
    first process to get there trains it, so stagger the shards), then evaluates."""
    from memjax.jobs import run_info

    validate_config(config)
    if not (_is_int(num_shards) and num_shards >= 1 and _is_int(shard) and 0 <= shard < num_shards):
        raise ValueError(f"shard, num_shards: expected 0 <= shard < num_shards, got {shard!r}, "
                         f"{num_shards!r}")
    workdir = str(workdir)
    specs = run_specs(config)[shard::num_shards]
    train_s = [_train(config, spec, f"{workdir}/runs/{spec.name}") for spec in specs]
    feature_fn, ref, reference = _reference(config, workdir)
    rows = [_evaluate_run(config, spec, f"{workdir}/runs/{spec.name}", feature_fn, ref, t, log)
            for spec, t in zip(specs, train_s)]
    if num_shards > 1:
        return {"runs": rows, "summary": None, "reference": reference}
    summary = summarize(rows)
    wd.save_json(f"{workdir}/runs.json", rows)
    wd.save_json(f"{workdir}/summary.json", {"summary": summary, "reference": reference})
    wd.write_text(f"{workdir}/summary.md", summary_table(summary))
    wd.save_json(f"{workdir}/run_info.json", run_info(config))
    if wd.is_writer():
        plot_pareto(summary, f"{workdir}/pareto.png", reference=reference,
                    title=f"{reference['num_train']} digits, {config.train.training.num_steps} "
                          "steps; mean +- s.e. over seeds")
    return {"runs": rows, "summary": summary, "reference": reference}

