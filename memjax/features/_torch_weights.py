r"""Filling a Flax NNX network from a PyTorch state dict read with safetensors (no torch).

The NNX modules of :mod:`memjax.features` name their attributes as the PyTorch modules they
port, so a variable's path in the NNX state *is* the state-dict key after renaming the leaf:

=========================  ==================  ==============================================
NNX leaf                   state-dict leaf     layout change
=========================  ==================  ==============================================
``Linear.kernel [i, o]``   ``weight [o, i]``   transpose
``Conv.kernel [h,w,i,o]``  ``weight [o,i,h,w]`` ``transpose(2, 3, 1, 0)``
``LayerNorm.scale``        ``weight``
``BatchNorm.scale/mean/var``  ``weight / running_mean / running_var``
anything else              same name
=========================  ==================  ==============================================

Every tensor is checked before use: a missing file, missing keys (a file for another
architecture) or a shape that does not match the configuration raise ``ValueError`` naming the
path and the mismatch. Keys the network does not use (a classifier head, ``num_batches_tracked``)
are ignored.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping

import jax
import numpy as np
from flax import nnx

_LEAF = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}


def read_safetensors(path: str, what: str) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as NumPy arrays; ``what`` names the expected network."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file (expected {what} weights as .safetensors)")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(path))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a readable .safetensors file of {what} weights ({e})") from e


def _key(path: tuple) -> str:
    names = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
    if names and names[-1] == "value":
        names = names[:-1]
    names[-1] = _LEAF.get(names[-1], names[-1])
    return ".".join(names)


def _to_flax(w: np.ndarray, ndim: int, leaf: str) -> np.ndarray:
    if leaf == "kernel" and w.ndim == 2 == ndim:
        return w.T
    if leaf == "kernel" and w.ndim == 4 == ndim:
        return w.transpose(2, 3, 1, 0)
    return w


def fill(build: Callable[[], nnx.Module], tensors: Mapping[str, np.ndarray], path: str,
         what: str) -> nnx.Module:
    """Builds ``build()`` abstractly (no initialisation) and sets every variable from ``tensors``.

    Raises ``ValueError`` (naming ``path``) listing missing keys, or the first shape mismatch.
    """
    graphdef, abstract = nnx.split(nnx.eval_shape(build))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    missing = [_key(p) for p, _ in leaves if _key(p) not in tensors]
    if missing:
        shown = ", ".join(missing[:4]) + (f", ... ({len(missing)} in all)" if len(missing) > 4 else "")
        raise ValueError(f"{path}: not a {what} state dict: missing {shown}")
    values = []
    for p, spec in leaves:
        key, leaf = _key(p), str(getattr(p[-2], "key", "")) if len(p) > 1 else ""
        w = _to_flax(np.asarray(tensors[key]), len(spec.shape), leaf)
        if tuple(w.shape) != tuple(spec.shape):
            raise ValueError(f"{path}: weight {key!r} has shape {tuple(np.shape(tensors[key]))}, "
                             f"the {what} configuration expects {_torch_shape(spec.shape, leaf)}")
        values.append(np.asarray(w, dtype=np.float32))
    state = jax.tree_util.tree_unflatten(treedef, values)
    return nnx.merge(graphdef, state)


def _torch_shape(shape: tuple, leaf: str) -> tuple:
    if leaf == "kernel" and len(shape) == 2:
        return tuple(shape[::-1])
    if leaf == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(shape)


def pure_apply(module: nnx.Module, forward: Callable) -> jax.tree_util.Partial:
    """``apply(images)`` as a :class:`jax.tree_util.Partial` whose leaves are the weights.

    Passed as an argument to ``jax.jit`` the weights are traced inputs (not constants baked into
    the program); called directly it is ``forward(module, images)``.
    """
    graphdef, state = nnx.split(module)

    def apply(state, images):
        return forward(nnx.merge(graphdef, state), images)

    return jax.tree_util.Partial(apply, state)
