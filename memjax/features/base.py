r"""The contract every feature network in :mod:`memjax.features` satisfies.

A :class:`FeatureExtractor` maps a batch of images to feature vectors, preprocessing included::

    extractor(images) -> features [n, dim]        # NumPy, gathered to the host

``images`` is ``[n, H, W, C]`` (C = 1 or 3): either ``uint8`` in ``[0, 255]`` (what users have
on disk) or floating point in memjax's convention ``[-1, 1]``. :func:`to_unit_interval` maps
both to float32 in ``[0, 1]``, grey images are tiled to three channels, and then each network
applies the preprocessing of its reference implementation (resize method and size, crop,
normalisation) inside its jitted ``apply``, so the features equal the reference's on the same
raw images.

Networks with weights set ``forward(variables, images)`` and ``variables`` (a pytree of
arrays) as well: the batching then passes the weights to the compiled function as replicated
arguments instead of baking them into it as constants (which costs seconds of compilation per
100 MB and defeats the compilation cache). :func:`from_nnx` builds such an extractor from an
NNX module.

``name`` names the feature space (``"sscd-resnet50"``, ``"dinov2-vits14"``,
``"inception-fid"``, ``"squeezenet1_1"``, ``"pixels"``, ...): every similarity memjax reports
carries it. ``normalized`` says whether rows have unit L2 norm (then an inner product is the
cosine similarity).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["FeatureExtractor", "PRECISIONS", "check_precision", "from_nnx", "to_unit_interval",
           "to_rgb"]


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureExtractor:
    """A batched feature network with its preprocessing.

    Attributes:
      name: the feature space, e.g. ``"dinov2-vits14"``.
      dim: feature dimension.
      apply: ``apply(images [b, H, W, C] float32 in [0, 1], RGB) -> [b, dim]``, pure and
        jittable; includes the network's own preprocessing after :func:`to_unit_interval`.
      normalized: rows have unit L2 norm.
      batch_size: default number of images per device step.
      forward: optional ``forward(variables, images) -> [b, dim]`` with
        ``apply(x) == forward(variables, x)``; used by the batching when set.
      variables: the weights ``forward`` takes (a pytree of arrays).
      rgb: the batching tiles grey images to three channels first (``False`` for pixels).
    """

    name: str
    dim: int
    apply: Callable[[Float[Array, "b h w 3"]], Float[Array, "b d"]]
    normalized: bool = False
    batch_size: int = 64
    forward: Callable[[Any, Float[Array, "b h w 3"]], Float[Array, "b d"]] | None = None
    variables: Any = None
    rgb: bool = True

    def __call__(self, images, *, batch_size: int | None = None, mesh=None,
                 progress: bool = False) -> np.ndarray:
        from memjax.features import _batched  # one batching path for every network

        return _batched.extract(self, images, batch_size=batch_size or self.batch_size,
                                mesh=mesh, progress=progress)


def to_unit_interval(images) -> Float[Array, "b h w c"]:
    """``uint8`` in ``[0, 255]`` or float in ``[-1, 1]`` -> float32 in ``[0, 1]``."""
    x = jnp.asarray(images)
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return (x.astype(jnp.float32) + 1.0) / 2.0


def to_rgb(x: Float[Array, "b h w c"]) -> Float[Array, "b h w 3"]:
    """Tiles a grey channel to three; RGB passes through."""
    if x.shape[-1] == 1:
        return jnp.broadcast_to(x, x.shape[:-1] + (3,))
    return x


PRECISIONS = ("highest", "high", "default", "float32", "tensorfloat32", "bfloat16")


def check_precision(precision: str) -> None:
    """``ValueError`` unless ``precision`` is a ``jax.default_matmul_precision`` name."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")


def from_nnx(name: str, module, fn: Callable, *, dim: int, normalized: bool = False,
             batch_size: int = 64, precision: str = "highest") -> FeatureExtractor:
    """A :class:`FeatureExtractor` from an NNX module and ``fn(module, images01) -> [b, dim]``.

    ``fn`` receives the module rebuilt from its (replicated) weights inside the compiled
    function and the ``[0, 1]`` RGB batch; it does the preprocessing and the forward pass.
    Matrix products and convolutions run at ``precision`` (``jax.default_matmul_precision``):
    ``"highest"`` keeps float32 on GPUs (no TF32) and TPUs (no single bfloat16 pass), so the
    features match the float32 reference there too; ``"default"`` trades that for speed.
    """
    import jax
    from flax import nnx

    check_precision(precision)
    graphdef, variables = nnx.split(module)

    def forward(variables, images):
        with jax.default_matmul_precision(precision):
            return fn(nnx.merge(graphdef, variables), images)

    return FeatureExtractor(name=name, dim=dim, apply=lambda x: forward(variables, x),
                            normalized=normalized, batch_size=batch_size, forward=forward,
                            variables=variables)
