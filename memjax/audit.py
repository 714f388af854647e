r"""The memorization audit: one job from a model (trained here or restored) to a report.

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

Ease of reproduction in one run per Pareto-maximal setting
----------------------------------------------------------
With ``accumulate="qr"`` the log stretches of the first ``k`` axes of an ``N``-axis run are
exactly those of a ``k``-axis run started from the same first ``k`` axes (Gram-Schmidt
processes the axes in order, so axis ``j`` never depends on axes after it), and the growth
after ``s`` steps is a prefix sum over steps. So a run at ``(N, S)`` yields every setting
``(k <= N, s <= S)`` at once, and the audit integrates only the Pareto-maximal settings of
the list it is given. The initial axes of an image are the rows of a Haar-random orthonormal
``N``-frame (QR of a Gaussian matrix drawn from ``fold_in(key, image index)``), whose first
``k`` rows are a Haar-random ``k``-frame: every prefix is a faithful ``k``-axis measurement.
(The reference code starts from non-orthonormal Gaussian neighbours sorted by norm; after the
first re-orthonormalisation the two agree in distribution.) With ``accumulate="norms"`` the
sort by norm breaks the nesting and every setting is run on its own.

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
import hashlib
import json
import os
import time
import zipfile
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from memjax import _checks
from memjax import parallel as _parallel
from memjax.sde import VPSDE, ScoreFn

STAGES = ("model", "ease", "samples", "memorization", "diverse", "report")
REPORT_VERSION = 1


# =================================================================================================
# settings and the volume-growth curves
# =================================================================================================
class Setting(NamedTuple):
    """One ease-of-reproduction setting: ``num_axes`` (N) axes over the first ``steps`` steps."""

    num_axes: int
    steps: int

    @property
    def name(self) -> str:
        return f"N={self.num_axes},steps={self.steps}"


def parse_settings(settings: Any, *, dim: int | None = None, grid_steps: int | None = None,
                   name: str = "settings") -> tuple[Setting, ...]:
    """Validates a list of ``(num_axes, steps)`` pairs; ``num_axes = -1`` means ``D`` (full volume).

    Returns sorted, de-duplicated :class:`Setting` s. Raises ``ValueError`` naming ``name``.
    """
    try:
        pairs = [tuple(s) for s in settings]
    except TypeError as e:
        raise ValueError(f"{name}: expected a list of (num_axes, steps) pairs, got {settings!r}"
                         ) from e
    if not pairs:
        raise ValueError(f"{name}: expected at least one (num_axes, steps) pair, got none")
    out = []
    for p in pairs:
        if len(p) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                  for v in p):
            raise ValueError(f"{name}: expected (num_axes, steps) pairs of integers, got {p!r}")
        n, s = int(p[0]), int(p[1])
        if n == -1 and dim is not None:
            n = dim
        if (n < 1 and not (n == -1 and dim is None)) or s < 1:
            raise ValueError(f"{name}: expected positive num_axes (or -1 for D) and steps, got "
                             f"{p!r}")
        if dim is not None and n > dim:
            raise ValueError(f"{name}: num_axes {n} exceeds the image dimension D = {dim}")
        if grid_steps is not None and s > grid_steps:
            raise ValueError(f"{name}: steps {s} exceeds grid_steps = {grid_steps}")
        out.append(Setting(n, s))
    return tuple(sorted(set(out)))


def plan_runs(settings: Sequence[Setting], accumulate: str = "qr") -> tuple[Setting, ...]:
    """The runs that cover ``settings``: its Pareto-maximal elements for ``"qr"`` (a run at
    ``(N, S)`` covers every ``(k <= N, s <= S)``), every setting for ``"norms"``."""
    settings = tuple(sorted(set(Setting(*s) for s in settings)))
    if accumulate != "qr":
        return settings
    return tuple(s for s in settings
                 if not any(o != s and o.num_axes >= s.num_axes and o.steps >= s.steps
                            for o in settings))


def covering_run(setting: Setting, runs: Sequence[Setting]) -> Setting:
    """The cheapest run (fewest ``N * steps``) of ``runs`` that covers ``setting``."""
    cands = [r for r in runs if r.num_axes >= setting.num_axes and r.steps >= setting.steps]
    if not cands:
        raise ValueError(f"setting: {setting} is not covered by the runs {runs}")
    return min(cands, key=lambda r: ((r.num_axes + 1) * r.steps, r))


def nested_axes(key: PRNGKeyArray, num_axes: int, shape: tuple[int, ...],
                dtype=jnp.float32) -> Float[Array, "axes *shape"]:
    r"""A Haar-random orthonormal ``num_axes``-frame in ``R^D`` as rows ``[N, *shape]``.

    Rows ``0..k-1`` are themselves a Haar-random ``k``-frame for every ``k`` (QR of a Gaussian
    ``D x N`` matrix with ``R_jj > 0``: column ``j`` of ``Q`` depends only on Gaussian columns
    ``<= j``). Row ``j`` is scaled by ``1 - 10^{-3} j`` so that the reference code's "sort by
    norm, then Gram-Schmidt" initialisation (:func:`memjax.lyapunov.orthonormal_axes`) keeps
    this order and returns exactly these (unit) rows.
    """
    d = int(np.prod(shape))
    a = jax.random.normal(key, (num_axes, d), dtype).T
    q, r = jnp.linalg.qr(a, mode="reduced")
    q = q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(dtype)[None, :]
    scale = 1.0 - 1e-3 * jnp.arange(num_axes, dtype=dtype)
    return (q.T * scale[:, None]).reshape((num_axes,) + tuple(shape))


class VolumeCurves(NamedTuple):
    """``growth [n, A, S]``: log volume growth (nats) of each image with the first
    ``axes[a]`` axes after ``steps[s]`` steps; ``stable [n, S]``: every step up to ``steps[s]``
    was numerically stable (:func:`memjax.volume.volume_growth`'s flag)."""

    growth: Float[np.ndarray, "n a s"]
    stable: Bool[np.ndarray, "n s"]
    axes: tuple[int, ...]
    steps: tuple[int, ...]


def volume_curves(score_fn: ScoreFn, sde: VPSDE, images: Float[Array, "n *shape"], *,
                  num_axes: int, steps: int, report_axes: Sequence[int],
                  report_steps: Sequence[int], key: PRNGKeyArray, grid_steps: int = 1000,
                  batch_size: int = 64, mesh=None, progress: bool = False,
                  desc: str | None = None, **volume_growth_options) -> VolumeCurves:
    r"""Log volume growth of every image for every ``(k, s)`` in ``report_axes x report_steps``
    from ONE ``num_axes``-axis run over the first ``steps`` steps of the ``grid_steps`` grid.

    Image ``i`` starts from :func:`nested_axes` of ``fold_in(key, i)``; the growth with the
    first ``k`` axes after ``s`` steps is ``\sum_{step<s} \sum_{j<k} \log R_jj`` (QR
    accumulation; see the module docstring). Images are vmapped ``batch_size`` at a time and
    sharded over ``mesh`` (:func:`memjax.parallel.batched_map`). Options go to
    :func:`memjax.volume.volume_growth` (``method``, ``solver``, ``sigma``, ...);
    ``accumulate`` must be ``"qr"`` for prefixes ``k < num_axes``.
    """
    from memjax import volume

    images = _checks.as_array("images", images, min_ndim=1)
    shape = tuple(images.shape[1:])
    d = int(np.prod(shape))
    _checks.check_positive_int("num_axes", num_axes)
    _checks.check_positive_int("steps", steps)
    _checks.check_positive_int("grid_steps", grid_steps)
    if num_axes > d:
        raise ValueError(f"num_axes: expected at most D = {d}, got {num_axes}")
    if steps > grid_steps:
        raise ValueError(f"steps: expected at most grid_steps = {grid_steps}, got {steps}")
    ra = tuple(int(a) for a in report_axes)
    rs = tuple(int(s) for s in report_steps)
    if not ra or any(a < 1 or a > num_axes for a in ra):
        raise ValueError(f"report_axes: expected values in [1, num_axes = {num_axes}], got {ra}")
    if not rs or any(s < 1 or s > steps for s in rs):
        raise ValueError(f"report_steps: expected values in [1, steps = {steps}], got {rs}")
    accumulate = volume_growth_options.get("accumulate", "qr")
    if accumulate != "qr" and ra != (num_axes,):
        raise ValueError("report_axes: prefixes of the axes need accumulate='qr'; with "
                         f"{accumulate!r} report only num_axes = {num_axes}")
    for bad in ("initial_axes", "stop_after", "num_steps", "key"):
        if bad in volume_growth_options:
            raise ValueError(f"{bad}: set by volume_curves; not an option here")
    ia, is_ = jnp.asarray(ra) - 1, jnp.asarray(rs) - 1

    def one(args):
        image, index = args
        k = jax.random.fold_in(key, index)
        ax = nested_axes(k, num_axes, shape, image.dtype)
        res = volume.volume_growth(score_fn, sde, image, num_axes=num_axes,
                                   num_steps=grid_steps, stop_after=steps, initial_axes=ax,
                                   key=k, **volume_growth_options)
        per_axis = jnp.cumsum(res.log_stretch, axis=0)          # [S, N] growth of each axis
        prefix = jnp.cumsum(per_axis, axis=1)                   # [S, N] first-k volume
        growth = prefix[is_][:, ia].T                           # [A, S]
        stable = jnp.cumprod(res.stable.astype(jnp.int32))[is_].astype(bool)
        return growth, stable

    n = images.shape[0]
    growth, stable = _parallel.batched_map(
        one, (np.asarray(images), np.arange(n, dtype=np.int32)), batch_size=batch_size,
        mesh=mesh, progress=progress, desc=desc)
    return VolumeCurves(growth=np.asarray(growth), stable=np.asarray(stable), axes=ra, steps=rs)


def separation(trained: Float[Array, " n"], heldout: Float[Array, " m"]) -> dict:
    """AUROC (trained positive), Welch's t-test (float64) and summaries of two score sets."""
    from memjax.metrics import stats

    a = np.asarray(trained, np.float64)
    b = np.asarray(heldout, np.float64)
    labels = np.r_[np.ones(a.size, bool), np.zeros(b.size, bool)]
    both = np.r_[a, b]
    out = {"n_trained": int(a.size), "n_heldout": int(b.size),
           "mean_trained": float(a.mean()), "mean_heldout": float(b.mean()),
           "std_trained": float(a.std(ddof=1)) if a.size > 1 else float("nan"),
           "std_heldout": float(b.std(ddof=1)) if b.size > 1 else float("nan")}
    if not np.all(np.isfinite(both)):
        out.update(auroc=float("nan"), t_statistic=float("nan"), p_value=float("nan"))
        return out
    with jax.enable_x64(True):
        out["auroc"] = float(stats.auroc(jnp.asarray(both), jnp.asarray(labels)))
        if a.size > 1 and b.size > 1 and (a.std() > 0 or b.std() > 0):
            t = stats.welch_t_test(jnp.asarray(a), jnp.asarray(b))
            out["t_statistic"], out["p_value"] = float(t.statistic), float(t.pvalue)
        else:
            out["t_statistic"], out["p_value"] = float("nan"), float("nan")
    return out


# =================================================================================================
# caching
# =================================================================================================
def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts and arrays (what a cached stage result depends on)."""
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, np.ndarray) or hasattr(p, "__array__") and not isinstance(p, (str, dict)):
            arr = np.ascontiguousarray(np.asarray(p))
            h.update(str((arr.dtype.str, arr.shape)).encode())
            h.update(arr.tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=_json_default).encode())
    return h.hexdigest()[:16]


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def _atomic_savez(path: str, **arrays) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def cached_arrays(path: str, key: str, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """Loads the arrays at ``path`` if they were saved under ``key``, else computes and saves
    them atomically. Returns ``(arrays, reused)``."""
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["__key__"]) == key:
                    return {k: f[k] for k in f.files if k != "__key__"}, True
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # unreadable (a truncated write by another tool) or stale: recompute
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    _atomic_savez(path, __key__=np.asarray(key), **arrays)
    return arrays, False


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


def _model_hash(model) -> str:
    from flax import nnx

    leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    return fingerprint(*[np.asarray(x) for x in leaves
                         if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.number)])


def _subject_from_trained(trained, description: str) -> Subject:
    from memjax import training

    ds = trained.dataset
    return Subject(score_fn=training.trained_score_fn(trained), sde=trained.sde,
                   train=np.asarray(ds.train, np.float32), heldout=np.asarray(ds.heldout, np.float32),
                   model_id=_model_hash(trained.model), description=description,
                   train_source=ds.train_source, heldout_source=ds.heldout_source,
                   step=int(trained.step))


def restore_trained(train_config, checkpoint_dir: str, dataset, *, step: int | None = None):
    """A :class:`memjax.training.Trained` (EMA weights, eval mode) from an orbax checkpoint
    directory of a memjax train state (:func:`memjax.training.restore_model`: restored into an
    abstract template, the network never initialised)."""
    from memjax import training

    model, step = training.restore_model(train_config, checkpoint_dir, step=step,
                                         field="model.checkpoint")
    return training.Trained(model=model, config=train_config, sde=training.make_sde(train_config),
                            dataset=dataset, step=step)


def _restore_workdir(workdir: str, step=None):
    from memjax import data as data_lib
    from memjax import training

    path = os.path.join(workdir, training.CONFIG_FILENAME)
    if not os.path.exists(path):
        raise ValueError(f"model.workdir: no {training.CONFIG_FILENAME} in {workdir!r}; is it a "
                         "memjax training workdir?")
    with open(path) as f:
        tc = training.config_from_json(f.read())
    return restore_trained(tc, os.path.join(workdir, training.CHECKPOINT_DIRNAME),
                           data_lib.load_split(workdir), step=step)


def prepare_model(config, workdir: str, *, log: Callable[[str], None] = print) -> Subject:
    """Stage ``model``: trains ``config.train`` into ``workdir/model`` (resuming from its last
    checkpoint), or restores ``config.model.workdir`` (a memjax training workdir) or
    ``config.model.checkpoint`` (an orbax checkpoint directory of a memjax train state, with the
    architecture of ``config.train.model`` and the split of ``config.train.data``)."""
    from memjax import training

    m = config.model
    if m.workdir:
        trained = _restore_workdir(m.workdir, step=m.step or None)
        return _subject_from_trained(trained, f"restored {m.workdir} (step {trained.step})")
    if m.checkpoint:
        return _restore_checkpoint(config, m.checkpoint, m.step or None)
    model_dir = os.path.join(workdir, "model")
    num_steps = int(config.train.training.num_steps)
    done = 0
    if os.path.isdir(os.path.join(model_dir, training.CHECKPOINT_DIRNAME)):
        try:
            ck = training.Checkpointer(os.path.join(model_dir, training.CHECKPOINT_DIRNAME),
                                       keep=int(config.train.training.keep_checkpoints))
            done = ck.latest_step() or 0
            ck.close()
        except Exception:  # noqa: BLE001 -- train() reports a broken checkpoint itself
            done = 0
    if done < num_steps:
        log(f"[model] training {config.train.data.source} model for {num_steps} steps "
            f"({'resuming at ' + str(done) if done else 'from scratch'}) in {model_dir}")
        training.train(config.train, model_dir)
    trained = _restore_workdir(model_dir)
    return _subject_from_trained(trained, f"trained here ({model_dir}, step {trained.step})")


def _restore_checkpoint(config, checkpoint: str, step) -> Subject:
    from memjax import data as data_lib
    from memjax import training

    training.validate_config(config.train)
    dataset = data_lib.load_dataset(config.train.data)
    trained = restore_trained(config.train, checkpoint, dataset, step=step)
    return _subject_from_trained(trained, f"restored checkpoint {checkpoint} (step {trained.step})")


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
    ``cache_dir/ease_<label>_N<N>_S<S>.npz`` under ``cache_key``). Returns
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
            path = os.path.join(cache_dir, f"ease_{label}_N{r.num_axes}_S{r.steps}.npz")
            key_r = fingerprint(cache_key, r_axes, r_steps, r, grid_steps, options)
            arrays, reused = cached_arrays(path, key_r, compute)
        timing[desc] = "cached" if reused else round(time.perf_counter() - t0, 2)
        log(f"[ease] {desc}: {timing[desc]}{'' if reused else ' s'}")
        axes_l, steps_l = list(arrays["axes"]), list(arrays["steps"])
        for s in want:
            a, k = axes_l.index(s.num_axes), steps_l.index(s.steps)
            g, st = arrays["growth"][:, a, k], arrays["stable"][:, k]
            out[s] = {"trained": g[:n], "heldout": g[n:], "stable_trained": st[:n],
                      "stable_heldout": st[n:], "run": r}
    return out, timing


# =================================================================================================
# memorization of samples
# =================================================================================================
def memorization_metrics(queries: np.ndarray, train: np.ndarray, *, n: int = 50,
                         alpha: float = 0.5, delta: float = 1.0 / 3.0,
                         ratio_threshold: float = 1.0 / 3.0, mesh=None) -> dict:
    """Per-query nearest-training-image numbers and the fraction counted as memorized.

    ``l2``: distance to the nearest training image; ``normalized_l2``: Carlini's eq. 7 with the
    ``n`` nearest (``alpha``); ``d1_d2``: nearest over second-nearest distance. A query is
    *memorized* when ``normalized_l2 < delta`` (Carlini et al.'s criterion as paper 000 eq. 7
    uses it); ``frac_d1_d2`` counts ``d1 / d2 < ratio_threshold``. ``ums`` is the number of
    distinct training images matched by a memorized query over the number of queries (paper
    001 eq. 15 with the band ``[0, delta)``).
    """
    from memjax.metrics import memorization as mem

    ntr = train.shape[0]
    k = min(max(n, 2), ntr)
    dist, idx = mem.nearest_neighbours(queries, train, k=k, metric="l2", mesh=mesh)
    dist, idx = np.asarray(dist, np.float64), np.asarray(idx)
    ratio = np.asarray(mem.normalized_l2(queries, train, n=min(n, ntr), alpha=alpha,
                                         mesh=mesh).ratio, np.float64)
    d1, d2 = dist[:, 0], dist[:, 1] if k > 1 else np.full(len(dist), np.inf)
    d1d2 = np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1.0), 0.0)
    memorized = ratio < delta
    ums = len(set(idx[memorized, 0].tolist())) / max(len(queries), 1)
    return {"l2": d1, "normalized_l2": ratio, "d1_d2": d1d2, "nearest": idx[:, 0],
            "memorized": memorized, "frac_memorized": float(memorized.mean()),
            "frac_d1_d2": float((d1d2 < ratio_threshold).mean()), "ums": float(ums)}


# =================================================================================================
# the whole audit
# =================================================================================================
def _dump(o):
    if isinstance(o, dict):
        return {str(k): _dump(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_dump(v) for v in o]
    if isinstance(o, (np.floating, float)):
        v = float(o)
        return v if np.isfinite(v) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return _dump(o.tolist())
    return o


def _features(name: str, config, images: np.ndarray, train: np.ndarray, workdir: str):
    """Features for the diverse-samples stage: ``"pixels"`` or ``"classifier"`` (memjax's
    digits classifier from :mod:`memjax.metrics.features`, trained and cached in workdir)."""
    flat = lambda a: np.asarray(a, np.float32).reshape(len(a), -1)  # noqa: E731
    if name == "pixels":
        return flat(images)
    from memjax.metrics import features as feat  # the classifier-feature extractor

    extractor = feat.digits_classifier_features(train=train,
                                                workdir=os.path.join(workdir, "classifier"),
                                                seed=int(config.seed))
    return feat.compute_features(extractor, images)


def run_audit(config, workdir: str, *, progress: bool = True,
              log: Callable[[str], None] = print) -> dict:
    """Runs (or resumes) the audit ``config`` describes, writing everything under ``workdir``.

    Returns the report (the content of ``workdir/report.json``). See the module docstring for
    the stages and ``configs/digits_audit.py`` for every config field.
    """
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    cache = os.path.join(workdir, "audit")
    fig_dir = os.path.join(workdir, "figures")
    os.makedirs(cache, exist_ok=True)
    os.makedirs(fig_dir, exist_ok=True)
    timings: dict[str, Any] = {}
    t_all = time.perf_counter()
    mesh = _parallel.data_mesh()

    # -- model ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    subject = prepare_model(config, workdir, log=log)
    timings["model"] = round(time.perf_counter() - t0, 2)
    train, heldout = subject.train, subject.heldout
    if heldout.shape[0] < 2:
        raise ValueError("train.data.num_heldout: the audit compares trained with held-out "
                         f"images and needs at least 2 held-out images, got {heldout.shape[0]}")
    shape = tuple(train.shape[1:])
    dim = int(np.prod(shape))
    data_id = fingerprint(train, heldout)
    log(f"[model] {subject.description}; {train.shape[0]} trained and {heldout.shape[0]} "
        f"held-out images of shape {shape} ({timings['model']} s)")

    # -- ease of reproduction ---------------------------------------------------------------------
    ec = config.ease
    opts = _ease_options(ec)
    key = jax.random.key(int(config.seed))
    rows = {}
    timings["ease"] = {}
    for kind in ("network", "exact"):
        kc = ec[kind]
        if not kc.enabled:
            continue
        settings = parse_settings(kc.settings, dim=dim, grid_steps=int(ec.grid_steps),
                                  name=f"ease.{kind}.settings")
        if kind == "network":
            score_fn, cache_key = subject.score_fn, fingerprint("network", subject.model_id, data_id)
        else:
            from memjax import scores

            score_fn = scores.empirical(jnp.asarray(train), subject.sde)
            cache_key = fingerprint("exact", data_id, subject.sde.__dict__)
        res, tm = ease_scores(score_fn, subject.sde, train, heldout, settings,
                              key=jax.random.fold_in(key, 0 if kind == "network" else 1),
                              grid_steps=int(ec.grid_steps), batch_size=int(kc.batch_size),
                              options=opts, cache_dir=cache, cache_key=cache_key, label=kind,
                              mesh=mesh, progress=progress, log=log)
        timings["ease"].update(tm)
        rows[kind] = res

    # -- samples -------------------------------------------------------------------------------------
    sc = config.sampling
    samples = None
    if sc.num_samples > 0:
        from memjax import sampling

        def draw():
            return {"samples": sampling.sample(
                subject.score_fn, subject.sde, jax.random.fold_in(key, 2), int(sc.num_samples),
                shape, sampler=sc.sampler, num_steps=int(sc.num_steps), eta=float(sc.eta),
                batch_size=int(sc.batch_size), progress=progress)}

        t0 = time.perf_counter()
        arrays, reused = cached_arrays(
            os.path.join(cache, "samples.npz"),
            fingerprint(subject.model_id, sc.to_dict(), int(config.seed)), draw)
        samples = arrays["samples"]
        timings["samples"] = "cached" if reused else round(time.perf_counter() - t0, 2)
        log(f"[samples] {samples.shape[0]} samples ({sc.sampler}, {sc.num_steps} steps): "
            f"{timings['samples']}")

    # -- memorization -------------------------------------------------------------------------------
    mc = config.memorization
    mem = None
    if samples is not None:
        t0 = time.perf_counter()
        margs = dict(n=int(mc.n), alpha=float(mc.alpha), delta=float(mc.delta),
                     ratio_threshold=float(mc.ratio_threshold))

        def memo():
            s = memorization_metrics(samples, train, mesh=mesh, **margs)
            h = memorization_metrics(heldout, train, mesh=mesh, **margs)
            keys = ("l2", "normalized_l2", "d1_d2", "nearest", "memorized")
            return {**{f"samples_{k}": s[k] for k in keys}, **{f"heldout_{k}": h[k] for k in keys}}

        mem, reused = cached_arrays(os.path.join(cache, "memorization.npz"),
                                    fingerprint(fingerprint(samples), data_id, margs), memo)
        timings["memorization"] = "cached" if reused else round(time.perf_counter() - t0, 2)
        log(f"[memorization] nearest training images of {len(samples)} samples and "
            f"{len(heldout)} held-out images: {timings['memorization']}")

    # -- diverse samples ------------------------------------------------------------------------------
    dc = config.diverse
    diverse = None
    if samples is not None and dc.enabled:
        t0 = time.perf_counter()

        def div():
            from memjax.metrics import diverse as dv

            real = np.concatenate([train, heldout]) if dc.reference == "all" else train
            fr = _features(dc.features, config, real, train, workdir)
            fg = _features(dc.features, config, samples, train, workdir)
            if dc.method == "tsne_hull":
                res = dv.tsne_hull(fr, fg, key=jax.random.fold_in(key, 3),
                                   perplexity=float(dc.perplexity), num_iters=int(dc.num_iters))
                emb = np.concatenate([np.asarray(res.real_embedding),
                                      np.asarray(res.generated_embedding)])
                return {"mask": np.asarray(res.diverse), "embedding": emb}
            res = dv.knn_support(fr, fg, k=int(dc.k))
            return {"mask": np.asarray(res.diverse), "embedding": np.zeros((0, 2), np.float32)}

        diverse, reused = cached_arrays(
            os.path.join(cache, "diverse.npz"),
            fingerprint(fingerprint(samples), data_id, dc.to_dict(), int(config.seed)), div)
        timings["diverse"] = "cached" if reused else round(time.perf_counter() - t0, 2)
        log(f"[diverse] {dc.method} in {dc.features} features: {timings['diverse']}")

    # -- report --------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    report = build_report(config, subject, rows, samples, mem, diverse)
    _atomic_write(os.path.join(workdir, "report.json"), json.dumps(_dump(report), indent=1))
    figures = make_figures(config, subject, rows, samples, mem, diverse, fig_dir)
    _atomic_write(os.path.join(workdir, "report.md"), report_markdown(report, figures))
    timings["report"] = round(time.perf_counter() - t0, 2)
    timings["total"] = round(time.perf_counter() - t_all, 2)
    _atomic_write(os.path.join(workdir, "timings.json"), json.dumps(timings, indent=1))
    log(summary_table(report))
    log(f"[audit] report in {workdir}/report.md ({timings['total']} s this run)")
    return json.loads(json.dumps(_dump(report)))


def build_report(config, subject: Subject, rows: dict, samples, mem, diverse) -> dict:
    """The content of ``report.json`` (deterministic: no timings, no paths)."""
    ec = config.ease
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "model": {"description": subject.description.split(" (")[0], "step": subject.step,
                  "model_id": subject.model_id},
        "data": {"num_trained": int(subject.train.shape[0]),
                 "num_heldout": int(subject.heldout.shape[0]),
                 "image_shape": list(subject.train.shape[1:]),
                 "dimension": int(np.prod(subject.train.shape[1:]))},
        "settings_used": {
            "grid_steps": int(ec.grid_steps), "method": ec.method, "accumulate": ec.accumulate,
            "solver": ec.solver, "sigma": float(ec.sigma), "seed": int(config.seed),
            **{kind: [list(s) for s in sorted(rows[kind])] for kind in rows},
            **{f"{kind}_runs": [list(r) for r in sorted({tuple(v["run"]) for v in rows[kind].values()})]
               for kind in rows}},
    }
    ease = {}
    for kind, res in rows.items():
        table = []
        for s, v in sorted(res.items()):
            row = {"num_axes": s.num_axes, "steps": s.steps, **separation(v["trained"], v["heldout"]),
                   "frac_stable_trained": float(np.mean(v["stable_trained"])),
                   "frac_stable_heldout": float(np.mean(v["stable_heldout"]))}
            table.append(row)
        ease[kind] = table
    report["ease_of_reproduction"] = ease
    report["auroc_train_vs_heldout"] = {kind: {Setting(r["num_axes"], r["steps"]).name: r["auroc"]
                                               for r in table} for kind, table in ease.items()}
    report["welch_p_values"] = {kind: {Setting(r["num_axes"], r["steps"]).name: r["p_value"]
                                       for r in table} for kind, table in ease.items()}
    best = {}
    for kind, table in ease.items():
        finite = [r for r in table if r["auroc"] is not None and np.isfinite(r["auroc"])]
        if finite:
            b = max(finite, key=lambda r: r["auroc"])
            best[kind] = {"setting": Setting(b["num_axes"], b["steps"]).name, "auroc": b["auroc"]}
    report["best_auroc"] = best
    if "network" in rows:
        s0 = _paper_setting(rows["network"])
        sc = np.r_[rows["network"][s0]["trained"]]
        order = np.argsort(-sc, kind="stable")
        report["ranking"] = {"setting": s0.name, "easiest_trained": order[:8].tolist(),
                             "hardest_trained": order[::-1][:8].tolist()}
    if samples is not None:
        mc = config.memorization
        report["sampling"] = {"num_samples": int(samples.shape[0]),
                              "sampler": config.sampling.sampler,
                              "num_steps": int(config.sampling.num_steps)}
        reproduced = len(set(mem["samples_nearest"][mem["samples_memorized"]].tolist()))
        mean = lambda a: float(np.mean(a))  # noqa: E731
        median = lambda a: float(np.median(a))  # noqa: E731
        ms = {"criterion": f"normalized_l2 < {mc.delta:g} (Carlini et al., n={mc.n}, "
                           f"alpha={mc.alpha:g})",
              "frac_memorized": mean(mem["samples_memorized"]),
              "frac_memorized_heldout_reference": mean(mem["heldout_memorized"]),
              "frac_d1_d2_below": mean(mem["samples_d1_d2"] < mc.ratio_threshold),
              "frac_d1_d2_below_heldout_reference": mean(mem["heldout_d1_d2"] < mc.ratio_threshold),
              "ratio_threshold": float(mc.ratio_threshold),
              "unique_memorized_over_samples": reproduced / max(len(samples), 1),
              "num_train_images_reproduced": reproduced,
              "median_l2_to_nearest": median(mem["samples_l2"]),
              "median_l2_to_nearest_heldout_reference": median(mem["heldout_l2"]),
              "median_normalized_l2": median(mem["samples_normalized_l2"]),
              "median_normalized_l2_heldout_reference": median(mem["heldout_normalized_l2"])}
        report["memorization"] = ms
    if diverse is not None:
        report["diverse"] = {"num_diverse": int(np.sum(diverse["mask"])),
                             "num_samples": int(len(diverse["mask"])),
                             "features": config.diverse.features, "method": config.diverse.method}
    return report


def _paper_setting(res: dict) -> Setting:
    """The paper's ranking setting (N=1, step=1) when present, else the cheapest setting."""
    if Setting(1, 1) in res:
        return Setting(1, 1)
    return min(res, key=lambda s: (s.num_axes * s.steps, s))


# =================================================================================================
# figures and text
# =================================================================================================
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _show(ax, img):
    img = np.asarray(img)
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=-1, vmax=1)
    else:
        ax.imshow(np.clip((img + 1) / 2, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])


def make_figures(config, subject: Subject, rows: dict, samples, mem, diverse, fig_dir: str) -> dict:
    """Writes the audit's figures (PNG) and returns ``{name: relative path}``."""
    plt = _plt()
    out = {}
    # Fig. 2: histograms of the growth of trained vs held-out images, per kind and setting.
    for kind, res in rows.items():
        shown = _histogram_settings(list(res))
        fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.0), squeeze=False)
        for ax, s in zip(axes[0], shown):
            v = res[s]
            lo = min(v["trained"].min(), v["heldout"].min())
            hi = max(v["trained"].max(), v["heldout"].max())
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
            ax.hist(v["trained"], bins=bins, alpha=0.6, label="trained", color="C3")
            ax.hist(v["heldout"], bins=bins, alpha=0.6, label="held out", color="C0")
            st = separation(v["trained"], v["heldout"])
            ax.set_title(f"{s.name}\nAUROC {st['auroc']:.2f}", fontsize=9)
            ax.set_xlabel("log volume growth (nats)")
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"{kind} score: trained vs held-out (paper 000 Fig. 2)", fontsize=10)
        fig.tight_layout()
        path = os.path.join(fig_dir, f"growth_histograms_{kind}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out[f"growth_histograms_{kind}"] = os.path.relpath(path, os.path.dirname(fig_dir))
    # Fig. 3: p-values against N (at the smallest and the largest steps) and against steps (N=1).
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    for kind, res in rows.items():
        settings = sorted(res)
        p = {s: separation(res[s]["trained"], res[s]["heldout"])["p_value"] for s in settings}
        steps_all = sorted({s.steps for s in settings})
        smax, smin = steps_all[-1], steps_all[0]
        for ax, st in ((axes[0], smax), (axes[2], smin)):
            xs = sorted(s.num_axes for s in settings if s.steps == st)
            ax.semilogy(xs, [max(p[Setting(x, st)], 1e-300) for x in xs], "o-",
                        label=f"{kind} (steps={st})")
        n1 = sorted(s.steps for s in settings if s.num_axes == min(x.num_axes for x in settings))
        nmin = min(x.num_axes for x in settings)
        axes[1].loglog(n1, [max(p[Setting(nmin, x)], 1e-300) for x in n1], "o-",
                       label=f"{kind} (N={nmin})")
    for ax, title, xl in ((axes[0], "p-value vs N (most steps)", "N axes"),
                          (axes[1], "p-value vs steps (fewest axes)", "steps"),
                          (axes[2], "p-value vs N (fewest steps)", "N axes")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xl)
        ax.axhline(0.05, color="gray", ls=":", lw=1)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("Welch t-test p-value")
    fig.suptitle("trained vs held-out: p-values against N and steps (paper 000 Fig. 3)",
                 fontsize=10)
    fig.tight_layout()
    path = os.path.join(fig_dir, "p_values.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out["p_values"] = os.path.relpath(path, os.path.dirname(fig_dir))
    # Fig. 7 / 8: easiest and hardest training images by the network score (paper setting).
    kind = "network" if "network" in rows else next(iter(rows), None)
    if kind is not None:
        s0 = _paper_setting(rows[kind])
        sc = rows[kind][s0]["trained"]
        k = min(int(config.report.num_show), len(sc) // 2)
        order = np.argsort(-sc, kind="stable")
        fig, axes = plt.subplots(2, k, figsize=(1.1 * k, 2.6), squeeze=False)
        for j in range(k):
            _show(axes[0][j], subject.train[order[j]])
            axes[0][j].set_title(f"{sc[order[j]]:.2f}", fontsize=6)
            _show(axes[1][j], subject.train[order[-1 - j]])
            axes[1][j].set_title(f"{sc[order[-1 - j]]:.2f}", fontsize=6)
        axes[0][0].set_ylabel("easiest", fontsize=8)
        axes[1][0].set_ylabel("hardest", fontsize=8)
        fig.suptitle(f"{kind} score, {s0.name}: easiest (top) and hardest (bottom) trained "
                     "images (paper 000 Fig. 7 / 8)", fontsize=9)
        fig.tight_layout()
        path = os.path.join(fig_dir, "easiest_hardest.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out["easiest_hardest"] = os.path.relpath(path, os.path.dirname(fig_dir))
    # Samples next to their nearest training images.
    if samples is not None:
        k = min(int(config.report.num_show), len(samples))
        order = np.argsort(mem["samples_normalized_l2"], kind="stable")
        pick = order[np.linspace(0, len(order) - 1, k).round().astype(int)]
        fig, axes = plt.subplots(2, k, figsize=(1.1 * k, 2.7), squeeze=False)
        for j, i in enumerate(pick):
            _show(axes[0][j], samples[i])
            axes[0][j].set_title(f"{mem['samples_normalized_l2'][i]:.2f}"
                                 + ("*" if mem["samples_memorized"][i] else ""), fontsize=6)
            _show(axes[1][j], subject.train[mem["samples_nearest"][i]])
        axes[0][0].set_ylabel("sample", fontsize=8)
        axes[1][0].set_ylabel("nearest\ntrained", fontsize=8)
        fig.suptitle("samples (top, normalized L2 above; * = memorized) and their nearest "
                     "training images (bottom)", fontsize=9)
        fig.tight_layout()
        path = os.path.join(fig_dir, "samples_nearest.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out["samples_nearest"] = os.path.relpath(path, os.path.dirname(fig_dir))
    if diverse is not None and diverse["embedding"].size:
        emb, mask = diverse["embedding"], diverse["mask"].astype(bool)
        nreal = emb.shape[0] - mask.shape[0]
        fig, ax = plt.subplots(figsize=(4.2, 4))
        ax.scatter(*emb[:nreal].T, s=5, c="gray", label="real")
        ax.scatter(*emb[nreal:][~mask].T, s=5, c="C0", label="generated, inside")
        ax.scatter(*emb[nreal:][mask].T, s=12, c="C3", label="generated, diverse")
        ax.legend(fontsize=7)
        ax.set_title(f"t-SNE: {int(mask.sum())} diverse samples (paper 003)", fontsize=9)
        fig.tight_layout()
        path = os.path.join(fig_dir, "diverse_tsne.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out["diverse_tsne"] = os.path.relpath(path, os.path.dirname(fig_dir))
    return out


def _histogram_settings(settings: list) -> list:
    """Up to four settings to histogram: the paper's (N=1, step=1), the largest N at the most
    steps, and the extremes in between."""
    settings = sorted(settings, key=lambda s: (s.num_axes, s.steps))
    pick = [_paper_setting({s: None for s in settings})]
    big = max(settings, key=lambda s: (s.num_axes, s.steps))
    for s in (min(settings, key=lambda s: (-s.steps, s.num_axes)),
              max(settings, key=lambda s: (s.num_axes, -s.steps)), big):
        if s not in pick:
            pick.append(s)
    return pick[:4]


def summary_table(report: dict) -> str:
    """A short plain-text table of the report's headline numbers."""
    lines = ["", "memorization audit: ease of reproduction, trained vs held-out",
             f"{'score':8s} {'N':>4s} {'steps':>5s} {'AUROC':>6s} {'p-value':>9s} "
             f"{'mean tr':>8s} {'mean ho':>8s} {'stable':>6s}"]
    for kind, table in report.get("ease_of_reproduction", {}).items():
        for r in table:
            p = r["p_value"]
            auc = r["auroc"]
            lines.append(f"{kind:8s} {r['num_axes']:4d} {r['steps']:5d} "
                         f"{auc if auc is not None else float('nan'):6.3f} "
                         f"{p if p is not None else float('nan'):9.2e} {r['mean_trained']:8.2f} "
                         f"{r['mean_heldout']:8.2f} "
                         f"{min(r['frac_stable_trained'], r['frac_stable_heldout']):6.2f}")
    if "memorization" in report:
        m = report["memorization"]
        lines.append(f"samples: {report['sampling']['num_samples']}; memorized "
                     f"({m['criterion']}): {m['frac_memorized']:.3f} (held-out reference "
                     f"{m['frac_memorized_heldout_reference']:.3f}); distinct training images "
                     f"reproduced: {m['num_train_images_reproduced']}")
    if "diverse" in report:
        d = report["diverse"]
        lines.append(f"diverse samples: {d['num_diverse']} of {d['num_samples']} "
                     f"({d['features']} features)")
    return "\n".join(lines)


def report_markdown(report: dict, figures: dict) -> str:
    """``report.md``: the summary table, the settings, and the figures."""
    su = report["settings_used"]
    md = ["# memjax memorization audit", "",
          f"Model: {report['model']['description']} (step {report['model']['step']}); "
          f"{report['data']['num_trained']} trained and {report['data']['num_heldout']} held-out "
          f"images, D = {report['data']['dimension']}.", "",
          f"Ease of reproduction: log volume growth along the probability-flow ODE (paper 000, "
          f"Algorithm 1), method `{su['method']}`, accumulation `{su['accumulate']}`, solver "
          f"`{su['solver']}`, grid of {su['grid_steps']} steps; `exact` is the exact score of the "
          "training set (a perfect memoriser, paper 000 eq. 11). AUROC: trained images positive; "
          "1 = every trained image grows more than every held-out image, 0.5 = no separation. "
          "`stable`: fraction of images whose steps all passed the explicit-Euler stability "
          "check.", "",
          "| score | N | steps | AUROC | Welch p | mean trained | mean held-out | stable |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind, table in report["ease_of_reproduction"].items():
        for r in table:
            auc = r["auroc"] if r["auroc"] is not None else float("nan")
            p = r["p_value"] if r["p_value"] is not None else float("nan")
            md.append(f"| {kind} | {r['num_axes']} | {r['steps']} | {auc:.3f} | {p:.2e} | "
                      f"{r['mean_trained']:.2f} | {r['mean_heldout']:.2f} | "
                      f"{min(r['frac_stable_trained'], r['frac_stable_heldout']):.2f} |")
    if "memorization" in report:
        m = report["memorization"]
        md += ["", "## Samples", "",
               f"{report['sampling']['num_samples']} samples ({report['sampling']['sampler']}, "
               f"{report['sampling']['num_steps']} steps).", "",
               "| measure | samples | held-out images (reference) |", "| --- | ---: | ---: |",
               f"| memorized: {m['criterion']} | {m['frac_memorized']:.3f} | "
               f"{m['frac_memorized_heldout_reference']:.3f} |",
               f"| d1/d2 < {m['ratio_threshold']:.3g} | {m['frac_d1_d2_below']:.3f} | "
               f"{m['frac_d1_d2_below_heldout_reference']:.3f} |",
               f"| median L2 to nearest trained | {m['median_l2_to_nearest']:.3f} | "
               f"{m['median_l2_to_nearest_heldout_reference']:.3f} |",
               f"| median normalized L2 | {m['median_normalized_l2']:.3f} | "
               f"{m['median_normalized_l2_heldout_reference']:.3f} |", "",
               f"Distinct training images reproduced: {m['num_train_images_reproduced']} "
               f"(UMS {m['unique_memorized_over_samples']:.3f})."]
    if "diverse" in report:
        d = report["diverse"]
        md += ["", f"Diverse samples (paper 003, {d['features']} features): "
               f"{d['num_diverse']} of {d['num_samples']}."]
    md += ["", "## Figures", ""]
    for name, path in figures.items():
        md.append(f"![{name}]({path})")
        md.append("")
    return "\n".join(md)


# =================================================================================================
# config validation
# =================================================================================================
def validate_config(config) -> None:
    """Raises ``ValueError`` naming the field of an invalid audit config."""
    for field in ("seed", "model", "ease", "sampling", "memorization", "diverse", "report"):
        if field not in config:
            raise ValueError(f"{field}: missing from the audit config (see configs/digits_audit.py)")
    if not (config.model.workdir or config.model.checkpoint) and "train" not in config:
        raise ValueError("train: the audit trains a model unless model.workdir or "
                         "model.checkpoint is set; expected a training config")
    if config.model.workdir and config.model.checkpoint:
        raise ValueError("model.workdir, model.checkpoint: set at most one")
    if not config.model.workdir:
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
    _checks.check_choice("sampling.sampler", sc.sampler, ("ode", "sde", "ddim"))
    _checks.check_positive_int("sampling.num_steps", sc.num_steps)
    _checks.check_positive_int("sampling.batch_size", sc.batch_size)
    mc = config.memorization
    _checks.check_positive_int("memorization.n", mc.n)
    _checks.check_positive("memorization.alpha", mc.alpha)
    _checks.check_positive("memorization.delta", mc.delta)
    _checks.check_positive("memorization.ratio_threshold", mc.ratio_threshold)
    _checks.check_choice("diverse.features", config.diverse.features, ("pixels", "classifier"))
    _checks.check_choice("diverse.method", config.diverse.method, ("tsne_hull", "knn_support"))
    _checks.check_choice("diverse.reference", config.diverse.reference, ("train", "all"))
    _checks.check_positive_int("report.num_show", config.report.num_show)
