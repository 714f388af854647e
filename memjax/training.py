r"""Training: config schema, optimiser, EMA, a data-parallel jitted step, checkpoints, the loop.

The train state is a plain pytree (pure dicts of arrays), so it shards, jits and checkpoints
without special cases::

    {"step": int32 (completed steps), "params": model parameters, "ema": their EMA,
     "opt_state": optax state, "other": every non-parameter variable of the model}

One step (``make_train_step``), jitted with the state replicated over the ``"data"`` mesh
axis and the batch split over it (DESIGN.md, "Parallelism"; XLA inserts the all-reduce of
the gradient)::

    key_s   = fold_in(key(seed), s)                     # s = completed steps
    (L, aux), g = value_and_grad(loss_fn)(params; batch, key_s)
    params <- params + optax_update(clip_{grad_clip}(g))  # Adam / AdamW, linear warm-up
    ema    <- d ema + (1 - d) params,   d = min(ema_decay, (1 + s) / (10 + s)) with ema_warmup

Batch ``s`` is :func:`memjax.data.batch_indices` of ``(seed, s)`` and the step's key is
``fold_in(seed, s)``, so a run resumed from a checkpoint at step ``s`` replays exactly the
losses an uninterrupted run computes. Checkpoints are orbax ``CheckpointManager`` steps
(atomic: written to a temporary directory and renamed on commit); a step directory that
was never committed, or one that fails to restore, raises :class:`CheckpointError` instead
of being skipped or overwritten.

Everything a run writes lives under its workdir::

    workdir/config.json        the full config (a resumed run must match it)
    workdir/data_split.npz     the images trained on and held out (memjax.data.save_split)
    workdir/checkpoints/<step> orbax checkpoints (keep-N)
    workdir/metrics.jsonl      one JSON object per logged step
    workdir/tensorboard/       TensorBoard events (tensorboardX)
    workdir/samples/           probability-flow sample grids of the EMA model (.png + .npz)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax import data as data_lib
from memjax import parallel
from memjax import workdir as wd
from memjax.checkpoint import Checkpointer, CheckpointError  # noqa: F401 (re-exported)
from memjax.sde import VPSDE

log = logging.getLogger(__name__)

from memjax.train_config import (CHECKPOINT_DIRNAME, CONFIG_FILENAME, METRICS_FILENAME,  # noqa: F401
                                 OPTIMIZERS, RESUMABLE_FIELDS, SCHEDULES, _fail, _is_int,
                                 check_same_run, config_from_json, config_to_json, data_image_shape,
                                 default_config, flatten_config, make_sde, validate_config)

__all__ = ["build_loss", "build_model", "cached_train_step", "ema_decay_at", "eval_graphdef",
           "global_batch", "init_state", "learning_rate_schedule", "make_optimizer",
           "make_train_step", "merge_model", "MetricWriter", "network_score", "pf_euler_sample",
           "read_metrics", "sample_grid", "split_model", "train", "TrainResult"]


# -- optimiser and state ---------------------------------------------------------------------------
def learning_rate_schedule(optim_config, num_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``learning_rate`` over ``warmup_steps``, then constant or cosine."""
    lr, w = float(optim_config.learning_rate), int(optim_config.warmup_steps)
    if optim_config.schedule == "cosine":
        if w:
            return optax.warmup_cosine_decay_schedule(0.0, lr, w, max(num_steps, w + 1))
        return optax.cosine_decay_schedule(lr, max(num_steps, 1))
    if w:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, w), optax.constant_schedule(lr)],
                                    [w])
    return optax.constant_schedule(lr)


def make_optimizer(optim_config, num_steps: int) -> optax.GradientTransformation:
    """``clip_by_global_norm(grad_clip)`` then Adam / AdamW with the warm-up schedule."""
    sched = learning_rate_schedule(optim_config, num_steps)
    kw = dict(b1=optim_config.beta1, b2=optim_config.beta2, eps=optim_config.eps)
    if optim_config.optimizer == "adamw":
        opt = optax.adamw(sched, weight_decay=optim_config.weight_decay, **kw)
    else:
        opt = optax.adam(sched, **kw)
    if optim_config.grad_clip:
        return optax.chain(optax.clip_by_global_norm(optim_config.grad_clip), opt)
    return opt


def split_model(model):
    """``(graphdef, params, other)``: the NNX graph and pure-dict states of parameters and of
    everything else (RNG streams, statistics)."""
    from flax import nnx

    graphdef, params, other = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(other)


def merge_model(graphdef, params, other):
    from flax import nnx

    return nnx.merge(graphdef, params, other)


def init_state(params, other, optimizer: optax.GradientTransformation) -> dict:
    """The train state at step 0 (the EMA starts at the initial parameters). The EMA copy and
    the optimiser's zeros take no compile per parameter shape (a runtime copy, one jitted init)."""
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "ema": jax.device_put(params, may_alias=False),
            "opt_state": jax.jit(optimizer.init)(params), "other": other}


def ema_decay_at(step, decay: float, warmup: bool):
    """``decay``, or ``min(decay, (1 + s) / (10 + s))`` with warm-up."""
    if not warmup:
        return jnp.asarray(decay, jnp.float32)
    s = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + s) / (10.0 + s))


def _train_step_fn(graphdef, loss_fn: Callable, optimizer: optax.GradientTransformation, *,
                   seed: int, ema_decay: float, ema_warmup: bool = True,
                   lr_schedule: Optional[optax.Schedule] = None) -> Callable:
    """The (unjitted) ``step(state, batch) -> (state, metrics)`` of :func:`make_train_step`."""
    base_key = jax.random.key(seed)
    if lr_schedule is None and hasattr(optimizer, "schedule"):
        lr_schedule = optimizer.schedule

    def step(state, batch):
        key = jax.random.fold_in(base_key, state["step"])

        def objective(params):
            model = merge_model(graphdef, params, state["other"])
            loss, metrics = loss_fn(model, batch, key)
            _, _, other = split_model(model)
            return loss, (metrics, other)

        (loss, (metrics, other)), grads = jax.value_and_grad(objective, has_aux=True)(
            state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        d = ema_decay_at(state["step"], ema_decay, ema_warmup)
        ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, state["ema"], params)
        out = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        if lr_schedule is not None:
            out["learning_rate"] = lr_schedule(state["step"])
        out.update({k: jnp.mean(v) for k, v in dict(metrics).items() if k not in out})
        new = {"step": state["step"] + 1, "params": params, "ema": ema, "opt_state": opt_state,
               "other": other}
        return new, out

    return step


def make_train_step(graphdef, loss_fn: Callable, optimizer: optax.GradientTransformation, *,
                    seed: int, ema_decay: float, ema_warmup: bool = True,
                    lr_schedule: Optional[optax.Schedule] = None, mesh=None,
                    steps_per_dispatch: int = 1) -> Callable:
    """A jitted ``step(state, batch) -> (state, metrics)``, data-parallel over ``mesh``.

    ``loss_fn(model, batch, key) -> (loss, metrics)`` is the objective (e.g.
    :func:`memjax.objectives.make_loss`); the model is rebuilt from ``graphdef`` and the
    state inside the trace. The state is replicated, the batch sharded on ``"data"``
    (its leading size must divide by the device count). Every step's key is
    ``fold_in(key(seed), state["step"])``.

    ``steps_per_dispatch = k > 1``: one call runs ``k`` optimiser steps with ``lax.scan`` on
    batches stacked on a leading axis ``[k, B, ...]`` (sharded on ``"data"`` along ``B``) and
    returns metrics stacked ``[k]``: the same steps, one dispatch and no host work between them.
    """
    mesh = parallel.data_mesh() if mesh is None else mesh
    repl = parallel.replicated(mesh)
    step = _train_step_fn(graphdef, loss_fn, optimizer, seed=seed, ema_decay=ema_decay,
                          ema_warmup=ema_warmup, lr_schedule=lr_schedule)
    if steps_per_dispatch == 1:
        return jax.jit(step, in_shardings=(repl, parallel.data_sharding(mesh)),
                       out_shardings=(repl, repl), donate_argnums=(0,))
    stacked = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.DATA_AXIS))
    multi = lambda state, batches: jax.lax.scan(step, state, batches)  # noqa: E731
    return jax.jit(multi, in_shardings=(repl, stacked), out_shardings=(repl, repl),
                   donate_argnums=(0,))


_STEP_CACHE: dict = {}


def cached_train_step(graphdef, loss_fn: Callable, config, mesh, steps_per_dispatch: int = 1
                      ) -> Callable:
    """:func:`make_train_step` for a training config, memoised on (graph, loss_fn, config,
    mesh, steps per dispatch): resuming in the same process reuses the compiled step."""
    tr = config.training
    horizon = tr.num_steps if config.optim.schedule == "cosine" else None  # only cosine uses it
    key = (graphdef, loss_fn, config.optim.to_json(), horizon, config.seed, tr.ema_decay,
           tr.ema_warmup, mesh, steps_per_dispatch)
    if key not in _STEP_CACHE:
        if len(_STEP_CACHE) > 8:
            _STEP_CACHE.clear()
        _STEP_CACHE[key] = make_train_step(
            graphdef, loss_fn, make_optimizer(config.optim, tr.num_steps), seed=config.seed,
            ema_decay=tr.ema_decay, ema_warmup=tr.ema_warmup,
            lr_schedule=learning_rate_schedule(config.optim, tr.num_steps), mesh=mesh,
            steps_per_dispatch=steps_per_dispatch)
    return _STEP_CACHE[key]


# -- sampling for the grids ------------------------------------------------------------------------
def network_score(out, x, t, sde: VPSDE, parameterization: str):
    """Score from a batched network output (``t``: ``[b]``): eps -> ``-eps/sigma``, x0 -> Tweedie."""
    from memjax import scores

    tb = t.reshape((-1,) + (1,) * (x.ndim - 1))
    if parameterization == "eps":
        return scores.eps_to_score(out, tb, sde)
    return scores.x0_to_score(out, x, tb, sde)


def pf_euler_sample(apply_fn: Callable, sde: VPSDE, z, *, num_steps: int,
                    parameterization: str = "eps", y=None):
    r"""Euler on the probability-flow ODE (paper 000 eq. 8) from ``t_max`` down to ``t_min``.

    ``x_{k+1} = x_k - \Delta t\, f(t_k, x_k)``, ``f = -\beta/2 (x + s)``, on a uniform grid of
    ``num_steps`` steps; ``apply_fn(x [b, ...], t [b], y) -> eps or x0``. A small sampler
    for monitoring; :mod:`memjax.sampling` has the full set.
    """
    ts = jnp.linspace(sde.t_max, sde.t_min, num_steps + 1)

    def body(x, i):
        t, t_next = ts[i], ts[i + 1]
        tb = jnp.full((x.shape[0],), t, x.dtype)
        s = network_score(apply_fn(x, tb, y), x, tb, sde, parameterization)
        drift = -0.5 * sde.beta(t) * (x + s)
        return x + (t_next - t) * drift, None

    x, _ = jax.lax.scan(body, z, jnp.arange(num_steps))
    return x


def eval_graphdef(graphdef, params, other):
    """The graph of the same model in eval mode (dropout off)."""
    model = merge_model(graphdef, params, other)
    model.eval()
    return split_model(model)[0]


# -- metric writing ------------------------------------------------------------------------------
class MetricWriter:
    """JSON lines (``metrics.jsonl``) and TensorBoard, both resumable; process 0 writes.

    On a resume from step ``s`` the records after ``s`` (written before the interruption,
    now to be recomputed) are dropped from the JSON file, and TensorBoard purges them. The
    JSON file is rewritten whole on each record (atomic, and object stores cannot append).
    """

    def __init__(self, workdir: str, *, start_step: int, tensorboard: bool = True,
                 enabled: bool = True):
        self.enabled = enabled and wd.is_writer()
        self.path = wd.as_path(workdir) / METRICS_FILENAME
        self.tb = None
        self.lines: list[str] = []
        if not self.enabled:
            return
        if self.path.exists():
            self.lines = [ln + "\n" for ln in self.path.read_text().splitlines()
                          if ln.strip() and json.loads(ln)["step"] <= start_step]
            wd.write_text(self.path, "".join(self.lines))
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(os.fspath(wd.as_path(workdir) / "tensorboard"),
                                    purge_step=start_step + 1 if start_step else None)

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        rec = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self.lines.append(json.dumps(rec) + "\n")
        wd.write_text(self.path, "".join(self.lines))
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, float(v), int(step))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``workdir/metrics.jsonl``."""
    text = (wd.as_path(workdir) / METRICS_FILENAME).read_text()
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


# -- the loop ------------------------------------------------------------------------------------
class TrainResult(NamedTuple):
    state: dict
    graphdef: Any
    dataset: data_lib.Dataset
    sde: VPSDE
    start_step: int
    """The step this invocation resumed from (0 for a fresh run)."""


def build_model(config):
    """The U-Net of ``config.model``, initialised from ``config.seed``."""
    from flax import nnx

    from memjax.models import create_unet

    return create_unet(config.model, rngs=nnx.Rngs(config.seed))


_LOSS_CACHE: dict = {}


def build_loss(config, sde):
    """``memjax.objectives.make_loss(config.objective, sde)``, memoised so that the compiled
    step is reused when training resumes in the same process."""
    from memjax.objectives import make_loss

    key = (config.objective.to_json(), sde)
    if key not in _LOSS_CACHE:
        _LOSS_CACHE[key] = make_loss(config.objective, sde)
    return _LOSS_CACHE[key]


def _prepare_workdir(config, workdir: str) -> None:
    path = wd.makedirs(workdir) / CONFIG_FILENAME
    if path.exists():
        check_same_run(config, config_from_json(path.read_text()))
    wd.write_text(path, config_to_json(config))


def _dataset_for(config, workdir: str) -> data_lib.Dataset:
    path = wd.as_path(workdir) / data_lib.SPLIT_FILENAME
    if path.exists():
        return data_lib.load_split(path)
    dataset = data_lib.load_dataset(config.data)
    if wd.is_writer():
        data_lib.save_split(dataset, path, config.data)
    return dataset


def global_batch(dataset: data_lib.Dataset, batch_size: int, seed: int, step: int, mesh, *,
                 num_steps: Optional[int] = None) -> dict:
    """Batch ``step`` as global arrays sharded on ``"data"``; each process supplies its rows.

    With ``num_steps`` the batches of steps ``step .. step + num_steps - 1`` come stacked on a
    leading axis ``[num_steps, batch_size, ...]`` (for a multi-step dispatch). This is the one
    place where training data meets devices.
    """
    rows = parallel.local_rows(batch_size, mesh)
    idx = np.stack([data_lib.batch_indices(dataset.num_train, batch_size, seed, s)[rows]
                    for s in range(step, step + (num_steps or 1))])
    flat = data_lib.make_batch(dataset, idx.reshape(-1))
    batch = {k: v.reshape(idx.shape + v.shape[1:]) for k, v in flat.items()}
    if num_steps is None:
        return parallel.global_batch_from_local({k: v[0] for k, v in batch.items()}, mesh,
                                                batch_size)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.DATA_AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, v, (num_steps, batch_size) + v.shape[2:])
            for k, v in batch.items()}


def sample_grid(graphdef_eval, params, other, config, sde: VPSDE, key):
    """``num_samples`` probability-flow samples of the model with ``params`` (e.g. the EMA)."""
    tr, m = config.training, config.model
    hw = (m.image_size, m.image_size) if _is_int(m.image_size) else tuple(m.image_size)
    z = jax.random.normal(key, (tr.num_samples, *hw, m.channels), jnp.float32)
    y = None
    if m.num_classes is not None:
        y = jnp.arange(tr.num_samples, dtype=jnp.int32) % m.num_classes

    return _grid_sampler(graphdef_eval, sde, tr.sample_steps, m.parameterization)(
        params, other, z, y)


_SAMPLER_CACHE: dict = {}


def _grid_sampler(graphdef_eval, sde, num_steps, parameterization):
    key = (graphdef_eval, sde, num_steps, parameterization)
    if key not in _SAMPLER_CACHE:
        @jax.jit
        def run(params, other, z, y):
            model = merge_model(graphdef_eval, params, other)
            apply = lambda x, t, yy: model(x, t) if yy is None else model(x, t, yy)  # noqa: E731
            return pf_euler_sample(apply, sde, z, num_steps=num_steps,
                                   parameterization=parameterization, y=y)

        if len(_SAMPLER_CACHE) > 8:
            _SAMPLER_CACHE.clear()
        _SAMPLER_CACHE[key] = run
    return _SAMPLER_CACHE[key]


def _next_boundary(s: int, end: int, tr) -> int:
    """The first step after ``s`` at which the loop must be on the host (log, checkpoint,
    sample grid or the end)."""
    every = [tr.log_every, tr.checkpoint_every] + ([tr.sample_every] if tr.sample_every > 0 else [])
    return min([end, tr.num_steps] + [(s // e + 1) * e for e in every])


def _write_samples(workdir, state, graphdef, config, sde, done: int) -> None:
    from memjax import report

    geval = eval_graphdef(graphdef, state["ema"], state["other"])
    key = jax.random.fold_in(jax.random.key(config.seed + 1), done)
    imgs = np.asarray(sample_grid(geval, state["ema"], state["other"], config, sde, key))
    sample_dir = wd.as_path(workdir) / "samples"
    wd.save_npz(sample_dir / f"step_{done:08d}.npz", samples=imgs)
    if wd.is_writer():
        report.image_grid(imgs, os.fspath(sample_dir / f"step_{done:08d}.png"),
                          ncols=int(math.ceil(math.sqrt(len(imgs)))), scale=0.5)


def _initial_state(config, workdir, ckpt, model_fn, mesh):
    model = (model_fn or build_model)(config)
    model.train()
    graphdef, params, other = split_model(model)
    state = init_state(params, other, make_optimizer(config.optim, config.training.num_steps))
    try:
        start = ckpt.latest_step() or 0
        if start:
            state = ckpt.restore(start, state)
            log.info("resumed from %s at step %d", ckpt.directory, start)
    except CheckpointError:
        ckpt.close()
        raise
    return graphdef, parallel.replicate(state, mesh), start


def train(config, workdir: str, *, loss_fn: Optional[Callable] = None,
          model_fn: Optional[Callable] = None, mesh=None,
          stop_after: Optional[int] = None) -> TrainResult:
    """Trains (or resumes training) as ``config`` says, writing everything under ``workdir``.

    ``config.training.steps_per_dispatch = k`` runs ``k`` steps per device call (``lax.scan``;
    the loop returns to the host only at log / checkpoint / sample steps), with the same
    batches, keys and so the same numbers as ``k = 1``.

    Args:
      config: a training config (:func:`default_config`); validated first.
      workdir: output folder. If it holds checkpoints, training resumes from the latest.
      loss_fn: overrides ``memjax.objectives.make_loss(config.objective, sde)``.
      model_fn: ``model_fn(config) -> nnx.Module``, overrides :func:`build_model`.
      mesh: device mesh (default: all devices on the ``"data"`` axis).
      stop_after: stop after this many steps of this invocation (for tests / preemption).
    """
    from memjax import console
    from memjax.models import config as model_config

    validate_config(config)
    tr = config.training
    mesh = parallel.data_mesh() if mesh is None else mesh
    if tr.batch_size % mesh.devices.size or tr.batch_size % jax.process_count():
        _fail("training.batch_size", f"a multiple of the device count {mesh.devices.size}",
              tr.batch_size)
    _prepare_workdir(config, workdir)
    sde, dataset = make_sde(config), _dataset_for(config, workdir)
    if dataset.image_shape != (*model_config.image_hw(config.model.image_size), config.model.channels):
        _fail("model.image_size/model.channels", f"the data's image shape {dataset.image_shape}",
              (config.model.image_size, config.model.channels))
    ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIRNAME), keep=tr.keep_checkpoints)
    graphdef, state, start = _initial_state(config, workdir, ckpt, model_fn, mesh)
    loss_fn = loss_fn or build_loss(config, sde)
    writer = MetricWriter(workdir, start_step=start, tensorboard=tr.tensorboard)
    end = tr.num_steps if stop_after is None else min(tr.num_steps, start + stop_after)
    every = tr.log_every * max(1, -(-(tr.num_steps - start) // (10 * tr.log_every)))  # ~10 lines
    bar = console.Progress(tr.num_steps, initial=start, desc="train", every=every,
                           enabled=bool(tr.progress) and wd.is_writer())
    pending, t0, s0, s = [], time.perf_counter(), start, start
    while s < end:
        k = min(int(tr.steps_per_dispatch), _next_boundary(s, end, tr) - s)
        step_fn = cached_train_step(graphdef, loss_fn, config, mesh, k)
        state, metrics = step_fn(state, global_batch(dataset, tr.batch_size, config.seed, s, mesh,
                                                     num_steps=None if k == 1 else k))
        pending.append(metrics)
        s += k
        if s % tr.log_every == 0 or s == end:
            vals = jax.device_get(pending)
            rec = {m: float(np.mean(np.concatenate([np.ravel(v[m]) for v in vals])))
                   for m in vals[0]}
            rec["steps_per_sec"] = (s - s0) / (time.perf_counter() - t0)
            rec["images_per_sec"] = rec["steps_per_sec"] * tr.batch_size
            writer.write(s, rec)
            bar.set_postfix(loss=rec["loss"])
            pending, t0, s0 = [], time.perf_counter(), s
        bar.update(k)
        if s % tr.checkpoint_every == 0 or s == tr.num_steps:
            ckpt.save(s, state)
        if tr.sample_every >= 0 and ((tr.sample_every and s % tr.sample_every == 0)
                                     or s == tr.num_steps):
            _write_samples(workdir, state, graphdef, config, sde, s)
    bar.close()
    ckpt.close()
    writer.close()
    return TrainResult(state=state, graphdef=graphdef, dataset=dataset, sde=sde, start_step=start)


# -- loading a trained model (memjax.trained; resolved lazily: no import cycle) ---------------------
_TRAINED = ("Trained", "restore_model", "load_trained", "trained_score_fn")


def __getattr__(name):
    if name in _TRAINED:
        from memjax import trained

        return getattr(trained, name)
    raise AttributeError(f"module 'memjax.training' has no attribute {name!r}")
