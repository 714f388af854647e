"""Training configs: the schema with its defaults, validation naming the field, JSON round trip,
and the check that a resumed run is the same run (:mod:`memjax.training` re-exports all of it).
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

import ml_collections
import numpy as np

from memjax import data as data_lib
from memjax.checkpoint import CheckpointError
from memjax.sde import VPSDE

__all__ = ["OPTIMIZERS", "SCHEDULES", "CONFIG_FILENAME", "METRICS_FILENAME", "CHECKPOINT_DIRNAME",
           "RESUMABLE_FIELDS", "default_config", "make_sde", "data_image_shape", "validate_config",
           "config_to_json", "config_from_json", "check_same_run", "flatten_config"]

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
CONFIG_FILENAME = "config.json"
METRICS_FILENAME = "metrics.jsonl"
CHECKPOINT_DIRNAME = "checkpoints"
# fields that may change when a run is resumed (they do not change what is computed)
RESUMABLE_FIELDS = ("training.num_steps", "training.log_every", "training.checkpoint_every",
                    "training.keep_checkpoints", "training.sample_every",
                    "training.num_samples", "training.sample_steps", "training.progress",
                    "training.tensorboard", "training.steps_per_dispatch")


# -- configuration -------------------------------------------------------------------------------
def default_config() -> ml_collections.ConfigDict:
    """The full training config with its defaults; every config in ``configs/`` starts here.

    Fields:
      seed: int. Seeds the model initialisation, the batch order and every step's key.
      data: the data config (:func:`memjax.data.data_config`; embedded digits by default).
      model: the U-Net config (:func:`memjax.models.config.unet_config`).
      objective: the loss (:func:`memjax.models.config.objective_config`).
      sde: the VP-SDE: ``beta_min``, ``beta_max``, ``t_min``, ``t_max`` (score_sde: 0.1, 20,
        1e-3, 1).
      optim.optimizer: ``"adam"`` or ``"adamw"`` (decoupled weight decay).
      optim.learning_rate: peak learning rate (score_sde DDPM++: 2e-4).
      optim.beta1, optim.beta2, optim.eps: Adam moments and epsilon (0.9, 0.999, 1e-8).
      optim.weight_decay: AdamW decay (ignored by adam).
      optim.warmup_steps: linear warm-up from 0 to the peak (score_sde: 5000; 0: none).
      optim.schedule: ``"constant"`` after warm-up or ``"cosine"`` decay to 0 at ``num_steps``.
      optim.grad_clip: clip the global gradient norm to this (score_sde: 1; 0: no clipping).
      training.batch_size: global batch (split over devices; must divide evenly).
      training.num_steps: total optimiser steps.
      training.ema_decay: EMA decay of the weights (score_sde: 0.9999).
      training.ema_warmup: use ``min(ema_decay, (1 + s) / (10 + s))`` early on, so short runs
        have a useful EMA.
      training.log_every: steps between metric records (the loss is averaged over them).
      training.checkpoint_every: steps between checkpoints (the last step is always saved).
      training.keep_checkpoints: how many checkpoints to keep.
      training.sample_every: steps between sample grids (0: only at the end; -1: never).
      training.num_samples: images per sample grid.
      training.sample_steps: Euler steps of the probability-flow sampler for the grids.
      training.progress: show a tqdm progress bar.
      training.tensorboard: write TensorBoard events.
      training.steps_per_dispatch: optimiser steps per device call (``lax.scan``); the same
        numbers as 1, less dispatch overhead on accelerators (slower on XLA:CPU, see
        benchmarks/results/train.md).
    """
    from memjax.models import config as model_config

    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = data_lib.data_config()
    c.model = model_config.unet_config()
    c.objective = model_config.objective_config()
    c.sde = ml_collections.ConfigDict(dict(beta_min=0.1, beta_max=20.0, t_min=1e-3, t_max=1.0))
    c.optim = ml_collections.ConfigDict(dict(
        optimizer="adam", learning_rate=2e-4, beta1=0.9, beta2=0.999, eps=1e-8,
        weight_decay=0.0, warmup_steps=0, schedule="constant", grad_clip=1.0))
    c.training = ml_collections.ConfigDict(dict(
        batch_size=128, num_steps=1000, ema_decay=0.9999, ema_warmup=True, log_every=50,
        checkpoint_every=500, keep_checkpoints=3, sample_every=0, num_samples=64,
        sample_steps=200, progress=True, tensorboard=True, steps_per_dispatch=1))
    return c


def _fail(field: str, expected: str, got: Any):
    raise ValueError(f"{field}: expected {expected}, got {got!r}")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and math.isfinite(v)


def _check_keys(cfg, schema, prefix: str) -> None:
    for k in cfg.keys():
        if k not in schema:
            raise ValueError(f"{prefix}{k}: unknown field; expected one of {sorted(schema.keys())}")
    for k in schema.keys():
        if k not in cfg:
            raise ValueError(f"{prefix}{k}: missing field")


def make_sde(config) -> VPSDE:
    """The :class:`memjax.VPSDE` of ``config.sde``; errors name ``sde.<field>``."""
    try:
        return VPSDE(**{k: config.sde[k] for k in ("beta_min", "beta_max", "t_min", "t_max")})
    except ValueError as e:
        raise ValueError(str(e).replace("VPSDE.", "sde.")) from e


def data_image_shape(data_config) -> Optional[tuple[int, int, Optional[int]]]:
    """``(H, W, C)`` a data config produces when it is known without reading data (else None)."""
    if data_config.image_size:
        c = data_config.channels or (1 if data_config.source == "digits" else None)
        return (data_config.image_size, data_config.image_size, c)
    if data_config.source == "digits":
        s = data_config.center_crop or 8
        return (s, s, 1)
    return None


def validate_config(config) -> None:
    """Raises ``ValueError`` naming the field (``training.batch_size``, ``model.image_size``,
    ``objective.t_n``, ...) of the first problem in a training config. Runs before any data is
    read or anything is compiled."""
    from memjax.models import config as model_config

    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"config: expected an ml_collections.ConfigDict, got {type(config).__name__}")
    schema = default_config()
    _check_keys(config, schema, "")
    for sub in ("sde", "optim", "training"):
        _check_keys(config[sub], schema[sub], f"{sub}.")
    if not _is_int(config.seed) or config.seed < 0:
        _fail("seed", "a non-negative int", config.seed)
    data_lib.validate_data_config(config.data)
    model_config.validate_model_config(config.model)
    sde = make_sde(config)
    model_config.validate_objective_config(config.objective, sde)
    m, o = config.model, config.objective
    if o.parameterization != m.parameterization:
        _fail("objective.parameterization", f"the model's parameterization {m.parameterization!r}",
              o.parameterization)
    if o.name == "conditional":
        if m.num_classes is None:
            _fail("model.num_classes", "the number of classes for the conditional objective",
                  m.num_classes)
        if o.num_classes != m.num_classes:
            _fail("objective.num_classes", f"model.num_classes = {m.num_classes}", o.num_classes)
        if not config.data.label_key:
            _fail("data.label_key", "a label feature for the conditional objective",
                  config.data.label_key)
    shape = data_image_shape(config.data)
    if shape is not None:
        hw = model_config.image_hw(m.image_size)
        if hw != shape[:2]:
            _fail("model.image_size", f"the data's image size {shape[:2]} (data.image_size / "
                  f"source)", m.image_size)
        if shape[2] is not None and shape[2] != m.channels:
            _fail("model.channels", f"the data's {shape[2]} channels", m.channels)
    op, tr = config.optim, config.training
    if op.optimizer not in OPTIMIZERS:
        _fail("optim.optimizer", f"one of {OPTIMIZERS}", op.optimizer)
    if op.schedule not in SCHEDULES:
        _fail("optim.schedule", f"one of {SCHEDULES}", op.schedule)
    for f in ("learning_rate", "eps"):
        if not _is_num(op[f]) or op[f] <= 0:
            _fail(f"optim.{f}", "a positive number", op[f])
    for f in ("beta1", "beta2"):
        if not _is_num(op[f]) or not 0 <= op[f] < 1:
            _fail(f"optim.{f}", "a number in [0, 1)", op[f])
    for f in ("weight_decay", "grad_clip"):
        if not _is_num(op[f]) or op[f] < 0:
            _fail(f"optim.{f}", "a non-negative number", op[f])
    if not _is_int(op.warmup_steps) or op.warmup_steps < 0:
        _fail("optim.warmup_steps", "a non-negative int", op.warmup_steps)
    for f in ("batch_size", "num_steps", "log_every", "checkpoint_every", "keep_checkpoints",
              "num_samples", "sample_steps", "steps_per_dispatch"):
        if not _is_int(tr[f]) or tr[f] < 1:
            _fail(f"training.{f}", "a positive int", tr[f])
    if not _is_int(tr.sample_every) or tr.sample_every < -1:
        _fail("training.sample_every", "-1 (never), 0 (at the end) or a positive int",
              tr.sample_every)
    if not _is_num(tr.ema_decay) or not 0 <= tr.ema_decay < 1:
        _fail("training.ema_decay", "a number in [0, 1)", tr.ema_decay)


def flatten_config(cfg, prefix="") -> dict:
    """``{"a.b.c": value}`` of a nested config (tuples as lists)."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, (ml_collections.ConfigDict, dict)):
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def config_to_json(config) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of :func:`config_to_json` (lists in model fields come back as tuples)."""
    d = json.loads(text)
    for k, v in d.get("model", {}).items():
        if isinstance(v, list):
            d["model"][k] = tuple(v)
    return ml_collections.ConfigDict(d)


def check_same_run(config, saved) -> None:
    """Raises :class:`CheckpointError` naming the first field where ``config`` differs from the
    config saved in the workdir (fields in ``RESUMABLE_FIELDS`` may change)."""
    a, b = flatten_config(config.to_dict()), flatten_config(saved.to_dict())
    for k in sorted(set(a) | set(b)):
        if k in RESUMABLE_FIELDS:
            continue
        if a.get(k, "<missing>") != b.get(k, "<missing>"):
            raise CheckpointError(
                f"{k}: this workdir was written by a run with {k} = {b.get(k, '<missing>')!r}, "
                f"but the config says {a.get(k, '<missing>')!r}; use another --workdir (or the "
                f"original config) rather than mixing runs")
