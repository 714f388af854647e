r"""Load a diffusers ``UNet2DModel`` checkpoint into memjax: NNX network, exact schedule, score.

No torch at run time: ``config.json`` is validated first (an unsupported key, block or option
raises ``ValueError`` before any weight is read), tensor names and shapes are checked against
the config from the safetensors header, then ``diffusion_pytorch_model.safetensors`` is read
with NumPy into :class:`memjax.interop.unet2d.UNet2DModel` (NCHW / OIHW -> NHWC / HWIO).

The score (paper 002 eq. 2, Tweedie) follows the scheduler's ``prediction_type`` with
``x_t = \alpha x_0 + \sigma \epsilon`` on the checkpoint's schedule:

* ``epsilon``: ``s = -\hat\epsilon / \sigma``;
* ``sample``: ``s = (\alpha \hat x_0 - x_t) / \sigma^2``;
* ``v_prediction`` (``v = \alpha \epsilon - \sigma x_0``): ``\hat x_0 = \alpha x_t - \sigma v``,
  then as ``sample``.

Two time conventions (see :mod:`memjax.schedules`): ``"discrete"`` (default, exact) uses
:class:`~memjax.schedules.DiscreteVP` and the label ``N t - 1``; ``"linear"`` is paper 000's
continuous linear SDE ``VPSDE(N \beta_{start}, N \beta_{end})`` with the label ``(N - 1) t``
(linear ``beta_schedule`` only; ~1 % off the table in ``\log\bar\alpha``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memjax import schedules, scores
from memjax.interop.unet2d import UNet2DModel, UNetConfig
from memjax.sde import VPSchedule

__all__ = ["apply_batched", "load_pretrained", "load_weights", "PREDICTION_TYPES", "Pretrained",
           "read_config", "read_scheduler_config", "schedule_from_config", "score_from_model",
           "TIME_CONVENTIONS", "WEIGHTS_NAME"]

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIME_CONVENTIONS = ("discrete", "linear")


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A loaded checkpoint: ``score_fn(x [H, W, C], t)`` on ``schedule``, and its parts.

    ``model(x [B, H, W, C], labels [B])`` is the NNX port; ``label_fn(t)`` maps memjax time to
    the network's timestep label; ``config`` / ``scheduler_config`` are the JSON dicts read.
    """

    model: UNet2DModel
    schedule: VPSchedule
    score_fn: Callable
    config: dict
    scheduler_config: dict
    prediction_type: str
    label_fn: Callable


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: {path} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected a JSON object in {path}, got {type(data).__name__}")
    return data


def read_config(path: str) -> dict:
    """``config.json`` of a ``save_pretrained`` directory (ValueError when absent)."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isdir(path):
        raise ValueError(f"path: expected a diffusers save_pretrained directory, got {path!r}")
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise ValueError(f"path: no config.json in {path} (expected a diffusers UNet2DModel "
                         f"save_pretrained directory)")
    return _read_json(file, "config.json")


def read_scheduler_config(path: str, scheduler_path: str | None = None) -> dict:
    """The scheduler config: ``scheduler_path`` (a file or a directory), else
    ``path/scheduler/scheduler_config.json`` or ``path/scheduler_config.json``."""
    if scheduler_path is not None:
        candidates = [scheduler_path] if os.path.isfile(scheduler_path) else [
            os.path.join(scheduler_path, "scheduler_config.json"),
            os.path.join(scheduler_path, "scheduler", "scheduler_config.json")]
        name = "scheduler_path"
    else:
        candidates = [os.path.join(path, "scheduler", "scheduler_config.json"),
                      os.path.join(path, "scheduler_config.json")]
        name = "path"
    for file in candidates:
        if os.path.isfile(file):
            return _read_json(file, "scheduler_config.json")
    raise ValueError(f"{name}: no scheduler config found (looked for {', '.join(candidates)}); pass "
                     f"scheduler_path= to the scheduler_config.json the model was trained with")


def schedule_from_config(config: dict, time_convention: str = "discrete") -> tuple[VPSchedule, Callable]:
    """``(schedule, label_fn)`` of a scheduler config under ``time_convention`` (module docstring)."""
    if time_convention not in TIME_CONVENTIONS:
        raise ValueError(f"time_convention: expected one of {TIME_CONVENTIONS}, got {time_convention!r}")
    if config.get("rescale_betas_zero_snr", False):
        raise ValueError("scheduler_config.json: rescale_betas_zero_snr=True is not supported")
    table = schedules.DiscreteVP.from_scheduler_config(config)
    if time_convention == "discrete":
        return table, table.timestep
    if config.get("beta_schedule", "linear") != "linear" or config.get("trained_betas") is not None:
        raise ValueError("time_convention: 'linear' needs beta_schedule='linear' (the continuous linear "
                         f"VP-SDE), got {config.get('beta_schedule')!r}")
    n = table.num_timesteps
    sde = schedules.VPSDE(beta_min=n * config.get("beta_start", 1e-4), beta_max=n * config.get("beta_end", 0.02))
    return sde, lambda t: schedules.linear_timestep(t, n)


def _torch_name(path: tuple) -> str:
    *head, leaf = (str(p) for p in path)
    return ".".join([*head, {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)])


def _torch_shape(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    if leaf == "kernel" and len(shape) == 4:  # HWIO <- OIHW
        return (shape[3], shape[2], shape[0], shape[1])
    if leaf == "kernel" and len(shape) == 2:  # [in, out] <- [out, in]
        return (shape[1], shape[0])
    return tuple(shape)


def _to_jax_layout(arr: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and arr.ndim == 4:
        return arr.transpose(2, 3, 1, 0)
    if leaf == "kernel" and arr.ndim == 2:
        return arr.T
    return arr


def load_weights(abstract: UNet2DModel, file: str, dtype=jnp.float32) -> UNet2DModel:
    """Fills an (abstract) NNX model from a safetensors file, checking every name and shape first."""
    from safetensors import safe_open

    graphdef, state = nnx.split(abstract)
    flat = list(nnx.to_flat_state(state))
    with safe_open(file, framework="numpy") as f:
        names = set(f.keys())
        expected = {_torch_name(p): (p, _torch_shape(tuple(v.get_value().shape), str(p[-1]))) for p, v in flat}
        missing = sorted(set(expected) - names)
        if missing:
            raise ValueError(f"{os.path.basename(file)}: tensors the config needs are missing: {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}")
        unexpected = sorted(names - set(expected))
        if unexpected:
            raise ValueError(f"{os.path.basename(file)}: tensors the config does not describe: "
                             f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        for name, (_, shape) in expected.items():
            got = tuple(f.get_slice(name).get_shape())
            if got != shape:
                raise ValueError(f"{os.path.basename(file)}: tensor {name!r} has shape {got}, the config "
                                 f"implies {shape}")
        pure: dict[Any, Any] = {}
        for name, (path, _) in expected.items():
            node = pure
            for p in path[:-1]:
                node = node.setdefault(p, {})
            arr = np.asarray(f.get_tensor(name), np.float32)
            node[path[-1]] = jnp.asarray(_to_jax_layout(arr, str(path[-1])), dtype)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def score_from_model(model: UNet2DModel, schedule: VPSchedule, label_fn: Callable,
                     prediction_type: str = "epsilon") -> Callable:
    """``score_fn(x [H, W, C], t)`` of a network predicting ``epsilon`` / ``v_prediction`` / ``sample``."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type: expected one of {PREDICTION_TYPES}, got {prediction_type!r}")
    graphdef, state = nnx.split(model)

    def score_fn(x, t):
        t = jnp.asarray(t, x.dtype)
        net = nnx.merge(graphdef, state)
        out = net(x[None], jnp.reshape(label_fn(t), (1,)).astype(jnp.float32))[0].astype(x.dtype)
        if prediction_type == "epsilon":
            return scores.eps_to_score(out, t, schedule)
        if prediction_type == "sample":
            return scores.x0_to_score(out, x, t, schedule)
        x0 = schedule.alpha(t) * x - schedule.sigma(t) * out
        return scores.x0_to_score(x0, x, t, schedule)

    return score_fn


def _weights_file(path: str, variant: str | None) -> str:
    """``path/diffusion_pytorch_model[.variant].safetensors``; a ``ValueError`` that names the
    variants present when it is missing."""
    name = WEIGHTS_NAME if variant is None else WEIGHTS_NAME.replace(".safetensors",
                                                                      f".{variant}.safetensors")
    file = os.path.join(path, name)
    if os.path.isfile(file):
        return file
    stem = WEIGHTS_NAME[:-len(".safetensors")]
    found = sorted(f[len(stem) + 1:-len(".safetensors")] for f in os.listdir(path)
                   if f.startswith(stem + ".") and f.endswith(".safetensors")
                   and f != WEIGHTS_NAME and "-of-" not in f)
    hint = (f"; variants here: {found} (pass variant=..., or the file's path)" if found else
            " (sharded or .bin checkpoints: re-save once with save_pretrained(..., "
            "safe_serialization=True))")
    raise ValueError(f"{'path' if variant is None else 'variant'}: no {name} in {path}{hint}")


def load_pretrained(path: str, *, scheduler_path: str | None = None, dtype=jnp.float32,
                    time_convention: str = "discrete", variant: str | None = None) -> Pretrained:
    """Loads a diffusers ``UNet2DModel`` ``save_pretrained`` directory (no torch needed).

    Weights stored in float16 or bfloat16 (``save_pretrained(..., variant="fp16")``, or a
    ``torch_dtype`` checkpoint) are widened exactly to ``dtype``.

    Args:
      path: the directory with ``config.json`` and ``diffusion_pytorch_model.safetensors``
        (a pipeline's ``unet/`` folder, or a pipeline folder whose ``unet/`` holds them), or
        the path of that weights file itself (any ``.safetensors`` name, e.g. a variant's).
      scheduler_path: the ``scheduler_config.json`` (or its directory); default
        ``path/scheduler/scheduler_config.json`` or ``path/scheduler_config.json`` (also looked
        up one level above a pipeline's ``unet/``).
      dtype: parameter and compute dtype of the port.
      time_convention: ``"discrete"`` (exact table) or ``"linear"`` (paper 000's continuous SDE
        with label ``999 t``); see :mod:`memjax.schedules`.
      variant: the weights of ``save_pretrained(..., variant=VARIANT)``:
        ``diffusion_pytorch_model.VARIANT.safetensors`` (e.g. ``"fp16"``).

    Returns:
      :class:`Pretrained`; ``score_fn`` takes one ``[H, W, C]`` example.
    """
    file = None
    if isinstance(path, (str, os.PathLike)) and str(path).endswith(".safetensors"):
        if variant is not None:
            raise ValueError(f"variant: give either a weights file or a variant, got {path!r} "
                             f"and {variant!r}")
        if not os.path.isfile(path):
            raise ValueError(f"path: no weights file at {path!r}")
        file, path = os.fspath(path), os.path.dirname(os.path.abspath(path))
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(os.path.join(path, "unet", "config.json")):
        scheduler_path = scheduler_path or path
        path = os.path.join(path, "unet")
    config = read_config(path)
    cfg = UNetConfig.from_dict(config)
    if scheduler_path is None and not any(os.path.isfile(os.path.join(path, *p)) for p in
                                          (("scheduler", "scheduler_config.json"), ("scheduler_config.json",))):
        parent = os.path.dirname(os.path.abspath(path))
        scheduler_path = parent if os.path.isfile(os.path.join(parent, "scheduler", "scheduler_config.json")) \
            else None
    sched_config = read_scheduler_config(path, scheduler_path)
    prediction_type = sched_config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"scheduler_config.json: prediction_type: expected one of {PREDICTION_TYPES}, got "
                         f"{prediction_type!r}")
    schedule, label_fn = schedule_from_config(sched_config, time_convention)
    file = file or _weights_file(path, variant)
    abstract = nnx.eval_shape(lambda: UNet2DModel(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
    model = load_weights(abstract, file, dtype)
    score_fn = score_from_model(model, schedule, label_fn, prediction_type)
    return Pretrained(model, schedule, score_fn, config, sched_config, prediction_type, label_fn)


def apply_batched(model: UNet2DModel) -> Callable:
    """``fn(x [B, H, W, C], labels [B])``: the port as a pure jitted function (weights closed over)."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda x, t: nnx.merge(graphdef, state)(x, t))
