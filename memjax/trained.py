"""A trained model ready for analysis: restore a memjax train state (EMA or raw weights) into
an abstract template, load a training workdir with its split, and its score function.
(:mod:`memjax.training` re-exports these names.)"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections

from memjax import data as data_lib
from memjax.checkpoint import Checkpointer
from memjax.sde import VPSDE
from memjax.train_config import CHECKPOINT_DIRNAME, CONFIG_FILENAME, config_from_json, make_sde
from memjax.training import build_model, init_state, make_optimizer, merge_model, split_model

__all__ = ["Trained", "restore_model", "load_trained", "trained_score_fn"]


class Trained(NamedTuple):
    """What :func:`load_trained` returns."""

    model: Any
    """The U-Net with the EMA (or raw) weights, in eval mode."""
    config: ml_collections.ConfigDict
    sde: VPSDE
    dataset: data_lib.Dataset
    """The exact split trained on (``workdir/data_split.npz``)."""
    step: int


def restore_model(config, checkpoint_dir: str, *, step: Optional[int] = None, ema: bool = True,
                  model_fn: Optional[Callable] = None, field: str = "checkpoint_dir"):
    """The network of a memjax train state saved under ``checkpoint_dir``: ``(model, step)``.

    The network is never initialised: its structure comes from ``nnx.eval_shape`` and the train
    state's from ``jax.eval_shape``, and orbax restores into that abstract template (eager
    initialisation compiles one small program per parameter, slower than the restore itself).
    ``step`` defaults to the latest checkpoint; ``ema=False`` gives the raw weights. Errors name
    ``field`` (the caller's argument or config field) and ``step``.
    """
    from flax import nnx

    ckpt = Checkpointer(checkpoint_dir, keep=config.training.keep_checkpoints)
    try:
        steps = ckpt.verify()
        if not steps:
            raise ValueError(f"{field}: no checkpoint under {ckpt.directory}")
        step = steps[-1] if step is None else int(step)
        if step not in steps:
            raise ValueError(f"step: expected one of the saved steps {steps}, got {step}")
        abstract = nnx.eval_shape(lambda: (model_fn or build_model)(config))
        abstract.train()
        graphdef, params, other = split_model(abstract)
        optimizer = make_optimizer(config.optim, config.training.num_steps)
        template = jax.eval_shape(lambda p, o: init_state(p, o, optimizer), params, other)
        state = ckpt.restore(step, jax.tree.map(_concrete_key, template))
    finally:
        ckpt.close()
    model = merge_model(graphdef, state["ema"] if ema else state["params"], state["other"])
    model.eval()
    return model, int(step)


def _concrete_key(a):
    """PRNG-key leaves of an abstract template become real keys (the restore reads their
    shape from ``jax.random.key_data``); every other leaf stays abstract."""
    if isinstance(a, jax.ShapeDtypeStruct) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        return jnp.broadcast_to(jax.random.key(0), a.shape)
    return a


def load_trained(workdir: str, *, step: Optional[int] = None, ema: bool = True,
                 model_fn: Optional[Callable] = None) -> Trained:
    """The model of a training workdir, ready for analysis: ``(model, config, sde, dataset, step)``.

    ``step`` defaults to the latest checkpoint; ``ema=False`` gives the raw weights.
    """
    from memjax import workdir as wd

    path = wd.as_path(workdir) / CONFIG_FILENAME
    if not path.exists():
        raise ValueError(f"workdir: no {CONFIG_FILENAME} in {workdir!r}; is it a training workdir?")
    config = config_from_json(path.read_text())
    model, step = restore_model(config, os.path.join(workdir, CHECKPOINT_DIRNAME), step=step,
                                ema=ema, model_fn=model_fn, field="workdir")
    return Trained(model=model, config=config, sde=make_sde(config),
                   dataset=data_lib.load_split(workdir), step=int(step))


def trained_score_fn(trained: Trained, *, label: Optional[int] = None):
    """``score_fn(x, t)`` (one example) of a :func:`load_trained` model, via
    :func:`memjax.scores.from_model`. ``label`` conditions a class-conditional model (None:
    the null label, i.e. the unconditional score)."""
    from memjax import scores

    model = trained.model
    if label is None:
        apply = lambda x, t: model(x, t)  # noqa: E731
    else:
        apply = lambda x, t: model(x, t, jnp.full((x.shape[0],), label, jnp.int32))  # noqa: E731
    return scores.from_model(apply, trained.sde, trained.config.model.parameterization)
