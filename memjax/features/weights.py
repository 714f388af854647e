r"""Loading PyTorch-named weights (safetensors, no torch) into Flax NNX modules.

Every network of :mod:`memjax.features` names its NNX attributes as the PyTorch module it ports
(``layer1`` an ``nnx.List`` of blocks, ``features`` an ``nnx.Dict``, ...), so a variable's path
in the NNX state *is* its state-dict key once the leaf is renamed: the NNX path
``("layer1", 0, "conv1", "kernel")`` is the PyTorch key ``"layer1.0.conv1.weight"``. Leaves map as

=============  ==================  =============================================
NNX leaf       PyTorch name        layout
=============  ==================  =============================================
conv kernel    ``weight``          ``[kh, kw, in/groups, out]`` <- ``[out, in/groups, kh, kw]``
dense kernel   ``weight``          ``[in, out]`` <- ``[out, in]``
``scale``      ``weight``          same (BatchNorm, LayerNorm)
BN ``mean``    ``running_mean``    same
BN ``var``     ``running_var``     same
any other      its own name        same (``bias``, ``cls_token``, ``lambda1``, ...)
=============  ==================  =============================================

:func:`load_into` builds the module abstractly (``nnx.eval_shape``: no initialisation cost;
cached per architecture, as tracing Inception-v3's construction takes seconds),
checks the file against it -- every expected key present, every shape equal, and no key left
over except those the network declares it does not use (``ignore``: e.g. BatchNorm's
``num_batches_tracked``, Inception's classifier ``fc.*``, DINOv2's ``mask_token``) -- and only
then converts and assigns, so a wrong file raises a ``ValueError`` naming the path, the tensors
and both shapes before any weight is used.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from typing import Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["BN_COUNTERS", "read_safetensors", "torch_names", "expected_shapes", "load_into"]

_LEAF = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}
BN_COUNTERS = ("*num_batches_tracked",)
"""``ignore`` patterns for networks with BatchNorm: PyTorch's step counters are not weights."""


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
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise ValueError(f"path: {path!r} is not a readable safetensors file ({e}); convert "
                         f".pt / .pth files with `python -m memjax.features.convert`") from e


def _is_kernel(npath: tuple) -> bool:
    return str(npath[-1]) == "kernel"


def _torch_shape(npath: tuple, shape: tuple[int, ...]) -> tuple[int, ...]:
    if _is_kernel(npath) and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if _is_kernel(npath) and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _to_flax(npath: tuple, a: np.ndarray) -> np.ndarray:
    if _is_kernel(npath) and a.ndim == 4:
        return np.transpose(a, (2, 3, 1, 0))
    if _is_kernel(npath) and a.ndim == 2:
        return a.T
    return a


def torch_names(state: nnx.State) -> dict[str, tuple[tuple, tuple[int, ...]]]:
    """``{pytorch key: (nnx path, pytorch shape)}`` for every variable of an NNX state."""
    out = {}
    for npath, var in nnx.to_flat_state(state):
        leaf = str(npath[-1])
        key = ".".join(str(p) for p in npath[:-1] + (_LEAF.get(leaf, leaf),))
        out[key] = (npath, _torch_shape(npath, tuple(var.get_value().shape)))
    return out


@functools.lru_cache(maxsize=8)
def _abstract(build: Callable[..., nnx.Module], args: tuple):
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build(*args)))
    return graphdef, nnx.to_flat_state(state), torch_names(state)


def expected_shapes(build: Callable[..., nnx.Module], *args) -> dict[str, tuple[int, ...]]:
    """``{pytorch key: pytorch shape}`` of the network ``build(*args)`` (built abstractly)."""
    return {k: s for k, (_, s) in _abstract(build, args)[2].items()}


def _mismatches(expected: dict, tensors: Mapping[str, np.ndarray],
                ignore: Sequence[str]) -> list[str]:
    def used(key):
        return key in expected or not any(fnmatch.fnmatchcase(key, p) for p in ignore)

    found = {k: v for k, v in tensors.items() if used(k)}
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


def load_into(build: Callable[..., nnx.Module], path, *, what: str, args: tuple = (),
              tensors: Mapping[str, np.ndarray] | None = None,
              ignore: Sequence[str] = ()) -> nnx.Module:
    """Builds ``build(*args)`` with the weights of the safetensors file ``path``.

    Args:
      build: constructs the module (called under ``nnx.eval_shape``: shapes only); with
        ``args`` hashable, as the abstract module is cached on ``(build, args)``.
      path: a ``.safetensors`` file with PyTorch-named, PyTorch-shaped tensors.
      what: the architecture, named in error messages (e.g. ``"sscd resnet50"``).
      args: ``build``'s arguments (e.g. an architecture name or a frozen config).
      tensors: the file's tensors when already read (and renamed) by the caller.
      ignore: ``fnmatch`` patterns of the file's keys the network does not use (e.g.
        :data:`BN_COUNTERS`, ``"fc.*"``); any other key the network lacks is an error.

    Raises:
      ValueError: missing or unreadable file, missing / unexpected keys, or shape mismatches
        (the message names ``path``, the tensors and both shapes).
    """
    tensors = read_safetensors(path) if tensors is None else tensors
    graphdef, flat, expected = _abstract(build, tuple(args))
    problems = _mismatches(expected, tensors, ignore)
    if problems:
        raise ValueError(f"path: {os.fspath(path)!r} does not hold {what} weights: "
                         + "; ".join(problems))
    keys = {npath: key for key, (npath, _) in expected.items()}
    state = nnx.from_flat_state([
        (npath, var.replace(jnp.asarray(_to_flax(npath, np.asarray(tensors[keys[npath]])),
                                        jnp.float32)))
        for npath, var in flat])
    return nnx.merge(graphdef, state)
