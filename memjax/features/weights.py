r"""Loading PyTorch-named weights (safetensors, no torch) into Flax NNX modules.

A network whose NNX attribute tree mirrors its PyTorch module tree (``layer1`` an
``nnx.List`` of blocks, ``downsample`` an ``nnx.List`` ``[conv, bn]``, ...) gets its PyTorch
state-dict names for free: the NNX path ``("layer1", 0, "conv1", "kernel")`` is the PyTorch key
``"layer1.0.conv1.weight"``. Leaves map as

=============  ==================  =============================================
NNX leaf       PyTorch name        layout
=============  ==================  =============================================
conv kernel    ``weight``          ``[kh, kw, in/groups, out]`` <- ``[out, in/groups, kh, kw]``
dense kernel   ``weight``          ``[in, out]`` <- ``[out, in]``
``bias``       ``bias``            same
BN ``scale``   ``weight``          same
BN ``mean``    ``running_mean``    same
BN ``var``     ``running_var``     same
=============  ==================  =============================================

:func:`load_into` builds the module abstractly (``nnx.eval_shape``: no initialisation cost),
checks the file against it -- every expected key present, no unexpected key, every shape equal
-- and only then converts and assigns, so a wrong file raises a ``ValueError`` naming the path
and the mismatches before any weight is used.
"""

from __future__ import annotations

import os
from typing import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["read_safetensors", "torch_names", "torch_state", "load_into"]

_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
         "var": "running_var"}
_IGNORED = ("num_batches_tracked",)


def read_safetensors(path) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as NumPy arrays; ``ValueError`` naming ``path``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path: no weight file at {path!r} (expected a .safetensors file; "
                         f"convert .pt / .pth files with `python -m memjax.features.convert`)")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"path: {path!r} is not a readable safetensors file ({e}); convert "
                         f".pt / .pth files with `python -m memjax.features.convert`") from e


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _to_flax(a: np.ndarray) -> np.ndarray:
    if a.ndim == 4:
        return np.transpose(a, (2, 3, 1, 0))
    if a.ndim == 2:
        return a.T
    return a


def torch_names(state: nnx.State) -> dict[str, tuple[tuple, tuple[int, ...]]]:
    """``{pytorch key: (nnx path, pytorch shape)}`` for every variable of an NNX state."""
    out = {}
    for path, var in nnx.to_flat_state(state):
        key = ".".join(str(p) for p in path[:-1] + (_LEAF[path[-1]],))
        out[key] = (path, _torch_shape(tuple(var.get_value().shape)))
    return out


def torch_state(module: nnx.Module) -> dict[str, np.ndarray]:
    """The PyTorch state dict of an NNX module (inverse of :func:`load_into`'s conversion);
    ``safetensors.numpy.save_file(torch_state(m), path)`` writes a file :func:`load_into` reads."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(module)):
        a = np.asarray(var.get_value(), np.float32)
        a = np.transpose(a, (3, 2, 0, 1)) if a.ndim == 4 else (a.T if a.ndim == 2 else a)
        out[".".join(str(p) for p in path[:-1] + (_LEAF[path[-1]],))] = np.ascontiguousarray(a)
    return out


def _mismatches(expected: dict, tensors: dict[str, np.ndarray]) -> list[str]:
    found = {k: v for k, v in tensors.items() if k.rsplit(".", 1)[-1] not in _IGNORED}
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    bad = [f"{k}: file {tuple(found[k].shape)} vs model {expected[k][1]}"
           for k in sorted(set(expected) & set(found))
           if tuple(found[k].shape) != expected[k][1]]
    if bad:
        problems.append(f"{len(bad)} shape mismatches (e.g. {bad[:3]})")
    return problems


def load_into(build: Callable[[], nnx.Module], path, *, what: str,
              tensors: dict[str, np.ndarray] | None = None) -> nnx.Module:
    """Builds ``build()`` with the weights of the safetensors file ``path``.

    Args:
      build: constructs the module (called under ``nnx.eval_shape``: shapes only).
      path: a ``.safetensors`` file with PyTorch-named, PyTorch-shaped tensors.
      what: the architecture, named in error messages (e.g. ``"sscd resnet50"``).
      tensors: the file's tensors when already read (:func:`read_safetensors`).

    Raises:
      ValueError: missing or unreadable file, missing / unexpected keys, or shape mismatches
        (the message names ``path`` and the mismatches).
    """
    tensors = read_safetensors(path) if tensors is None else tensors
    abstract = nnx.eval_shape(build)
    graphdef, state = nnx.split(abstract)
    expected = torch_names(state)
    problems = _mismatches(expected, tensors)
    if problems:
        raise ValueError(f"path: {os.fspath(path)!r} does not hold {what} weights: "
                         + "; ".join(problems))
    variables = dict(nnx.to_flat_state(state))
    for key, (npath, _) in expected.items():
        variables[npath].set_value(jnp.asarray(_to_flax(tensors[key]), jnp.float32))
    return nnx.merge(graphdef, state)
