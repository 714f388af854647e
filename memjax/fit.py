r"""Fitting NNX classifiers (normal, time-dependent, TDKD students, feature classifiers) and
storing them as orbax checkpoints: one loop, one format.

:func:`fit_classifier` trains in place with AdamW on shuffled epochs of a dict of arrays
(``loss_fn(model, batch, key) -> (loss, metrics)``, e.g.
:func:`memjax.objectives.classifier_loss` or :func:`memjax.objectives.tdkd_loss`). Batch ``s``
and its key are pure functions of ``(key, s)`` (:func:`memjax.data.batch_indices` of a seed
drawn from ``key``, ``fold_in(key, s)``), the same discipline as the score-network loop of
:mod:`memjax.training`. :func:`save_model` / :func:`restore_model` write and read the model's
parameters and other variables with :class:`memjax.checkpoint.Checkpointer` (orbax), and
:func:`fit_or_restore` makes a fitted model a workdir stage keyed by what it depends on.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import PRNGKeyArray

from memjax import _checks
from memjax import workdir as wd

__all__ = ["FitHistory", "fit_classifier", "batched_logits", "save_model", "restore_model",
           "fit_or_restore"]

log = logging.getLogger(__name__)


class FitHistory(NamedTuple):
    steps: list
    train: list           # metrics dicts, averaged over each log interval
    evals: list           # eval_fn results at the logged steps (or [])


def fit_classifier(model, loss_fn: Callable, data: dict, *, key: PRNGKeyArray, num_steps: int,
                   batch_size: int, learning_rate: float = 1e-4, weight_decay: float = 1e-4,
                   log_every: int = 50, eval_fn: Optional[Callable] = None,
                   progress: bool = False, desc: str = "classifier") -> FitHistory:
    """Trains an NNX classifier in place with AdamW (paper 001: lr 1e-4).

    ``data`` is a dict of arrays with a common leading axis, sampled in shuffled epochs seeded
    from ``key``. ``eval_fn(model) -> dict`` runs (in eval mode) every ``log_every`` steps and
    at the end. ``progress``: a bar on a terminal, interval lines in a log file.
    """
    from flax import nnx

    from memjax import console
    from memjax.data import batch_indices

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
    hist = FitHistory([], [], [])
    pending = []
    bar = console.Progress(num_steps, desc=desc, every=log_every, enabled=progress)
    for s in range(num_steps):
        idx = batch_indices(n, batch_size, seed, s)
        batch = {k: jnp.asarray(v[idx]) for k, v in data.items()}
        pending.append(step(model, opt, batch, jax.random.fold_in(key, s)))
        if (s + 1) % log_every == 0 or s + 1 == num_steps:
            vals = jax.device_get(pending)
            hist.steps.append(s + 1)
            hist.train.append({k: float(np.mean([v[k] for v in vals])) for k in vals[0]})
            bar.set_postfix(**hist.train[-1])
            pending = []
            if eval_fn is not None:
                model.eval()
                hist.evals.append(eval_fn(model))
                model.train()
        bar.update(1)
    bar.close()
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


def save_model(model, directory: str) -> None:
    """Writes the model's parameters and other variables as one orbax checkpoint."""
    from memjax import training

    _, params, other = training.split_model(model)
    ck = training.Checkpointer(directory, keep=1, async_save=False)
    ck.save(1, {"params": params, "other": other})
    ck.close()


def restore_model(model, directory: str) -> bool:
    """Restores :func:`save_model`'s checkpoint into ``model`` in place; False when there is none."""
    from flax import nnx

    from memjax import training

    ck = training.Checkpointer(directory, keep=1, async_save=False)
    try:
        step = ck.latest_step()
        if step is None:
            return False
        graphdef, params, other = training.split_model(model)
        state = ck.restore(step, {"params": params, "other": other})
    finally:
        ck.close()
    nnx.update(model, nnx.state(nnx.merge(graphdef, state["params"], state["other"])))
    return True


def fit_or_restore(model, directory: str, key: Any, fit: Callable[[], Any], *,
                   log: Callable[[str], None] | None = print, name: str = "") -> bool:
    """A fitted model as a workdir stage: restores ``directory`` into ``model`` when it was
    saved under ``key`` (:func:`memjax.workdir.stage_key_matches`), else runs ``fit()`` (which
    trains ``model`` in place), saves it and records ``key``. Returns whether it was reused."""
    path = wd.as_path(directory)
    if wd.stage_key_matches(path, key) and restore_model(model, directory):
        return True
    if path.exists():
        if log is not None:
            log(f"[{name or path.name}] its inputs changed since it was stored: refitting")
        if wd.is_writer():
            path.rmtree()
    fit()
    save_model(model, directory)
    wd.mark_stage(path, key)
    return False
