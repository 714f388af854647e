r"""The train step: optimiser, train state, EMA and one data-parallel jitted step.

The train state is a plain pytree (pure dicts of arrays), so it shards, jits and checkpoints
without special cases::

    {"step": int32 (completed steps), "params": model parameters, "ema": their EMA,
     "opt_state": optax state, "other": every non-parameter variable of the model}

One step (:func:`make_train_step`), jitted with the state replicated over the ``"data"`` mesh
axis and the batch split over it (DESIGN.md, "Parallelism"; XLA inserts the all-reduce of
the gradient)::

    key_s   = fold_in(key(seed), s)                     # s = completed steps
    (L, aux), g = value_and_grad(loss_fn)(params; batch, key_s)
    params <- params + optax_update(clip_{grad_clip}(g))  # Adam / AdamW, linear warm-up
    ema    <- d ema + (1 - d) params,   d = min(ema_decay, (1 + s) / (10 + s)) with ema_warmup

The loop around it (data, checkpoints, metrics, sample grids) is :func:`memjax.training.train`.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from memjax import parallel

__all__ = ["cached_train_step", "ema_decay_at", "init_state", "learning_rate_schedule",
           "make_optimizer", "make_train_step", "merge_model", "split_model"]


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
