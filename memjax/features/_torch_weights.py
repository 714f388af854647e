r"""Filling a Flax NNX network from a PyTorch state dict read with safetensors (no torch).

The NNX modules of :mod:`memjax.features` name their attributes as the PyTorch modules they
port, so a variable's path in the NNX state *is* the state-dict key after renaming the leaf:

* ``Linear.kernel [i, o]`` <- ``weight [o, i]`` (transposed);
* ``Conv.kernel [h, w, i, o]`` <- ``weight [o, i, h, w]`` (``transpose(2, 3, 1, 0)``);
* ``LayerNorm.scale``, ``BatchNorm.scale`` <- ``weight``; ``BatchNorm.mean / var`` <-
  ``running_mean / running_var``;
* any other leaf keeps its name and layout.

Every tensor is checked before use: a missing file, missing keys (a file for another
architecture) or a shape that does not match the configuration raise ``ValueError`` naming the
path and the mismatch. Keys the network does not use (a classifier head, ``num_batches_tracked``)
are ignored.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
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


def shape_only(key, shape, dtype=jnp.float32) -> jax.ShapeDtypeStruct:
    """An NNX initialiser that allocates nothing: the value is filled from a state dict."""
    del key
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


class Skeleton(NamedTuple):
    """A network's structure without weights: NNX graph, state tree and, per variable, its
    (state-dict key, NNX leaf name, expected shape in the PyTorch layout)."""
    graphdef: Any
    treedef: Any
    specs: list[tuple[str, str, tuple]]


def skeleton(build: Callable[[], nnx.Module]) -> Skeleton:
    """The :class:`Skeleton` of ``build()`` (layers built with :func:`shape_only` initialisers;
    cache it: NNX construction costs seconds for Inception-v3)."""
    graphdef, abstract = nnx.split(build())
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    specs = [(_key(p), str(getattr(p[-2], "key", "")), tuple(v.shape)) for p, v in leaves]
    return Skeleton(graphdef, treedef, [(k, leaf, _torch_shape(s, leaf)) for k, leaf, s in specs])


def expected_shapes(skel: Skeleton) -> dict[str, tuple]:
    """``{state-dict key: shape in the PyTorch layout}`` of a network."""
    return {key: shape for key, _, shape in skel.specs}


def fill(skel: Skeleton, tensors: Mapping[str, np.ndarray], path: str, what: str) -> nnx.Module:
    """The network of ``skel`` with every variable set from ``tensors``.

    Raises ``ValueError`` (naming ``path``) listing missing keys, or the first shape mismatch.
    """
    missing = [key for key, _, _ in skel.specs if key not in tensors]
    if missing:
        shown = ", ".join(missing[:4]) + (f", ... ({len(missing)} in all)" if len(missing) > 4 else "")
        raise ValueError(f"{path}: not a {what} state dict: missing {shown}")
    values = []
    for key, leaf, shape in skel.specs:
        w = np.asarray(tensors[key])
        if tuple(w.shape) != shape:
            raise ValueError(f"{path}: weight {key!r} has shape {tuple(w.shape)}, the {what} "
                             f"configuration expects {shape}")
        values.append(jnp.asarray(_to_flax(w, leaf), dtype=jnp.float32))
    return nnx.merge(skel.graphdef, jax.tree_util.tree_unflatten(skel.treedef, values))


def _to_flax(w: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and w.ndim == 2:
        return w.T
    if leaf == "kernel" and w.ndim == 4:
        return w.transpose(2, 3, 1, 0)
    return w


def _torch_shape(shape: tuple, leaf: str) -> tuple:
    if leaf == "kernel" and len(shape) == 2:
        return tuple(shape[::-1])
    if leaf == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(shape)


PRECISIONS = ("highest", "high", "default", "float32", "tensorfloat32", "bfloat16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")


def extractor(name: str, module: nnx.Module, fn: Callable, *, dim: int, normalized: bool,
              batch_size: int, precision: str = "highest"):
    """A :class:`~memjax.features.base.FeatureExtractor` running ``fn(module, images01)``.

    Matrix products and convolutions run at ``precision`` (``jax.default_matmul_precision``):
    ``"highest"`` keeps float32 on GPUs (no TF32) and TPUs (no single bfloat16 pass), so the
    features match the float32 reference there too; ``"default"`` trades that for speed.
    With ``base.from_nnx`` (the batching contract that passes the weights to the compiled
    function as arguments) the extractor is built by it; otherwise ``apply`` is a
    :class:`jax.tree_util.Partial` whose leaves are the weights (pass it to ``jax.jit`` as an
    argument so that they are not baked in as constants).
    """
    from memjax.features import base

    check_precision(precision)

    def precise(m, images):
        with jax.default_matmul_precision(precision):
            return fn(m, images)

    if hasattr(base, "from_nnx"):
        return base.from_nnx(name, module, precise, dim=dim, normalized=normalized,
                             batch_size=batch_size)
    graphdef, state = nnx.split(module)
    apply = jax.tree_util.Partial(lambda s, x: precise(nnx.merge(graphdef, s), x), state)
    return base.FeatureExtractor(name, dim, apply, normalized=normalized, batch_size=batch_size)


def weights_and_forward(ext) -> tuple[Any, Callable]:
    """``(weights, forward)`` with ``forward(weights, images01) == ext.apply(images01)``, for
    ``jax.jit(forward)(weights, x)`` (tests and benchmarks) under either contract."""
    if getattr(ext, "forward", None) is not None:
        return ext.variables, ext.forward
    return ext.apply, lambda apply, x: apply(x)
