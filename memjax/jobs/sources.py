r"""Where a job's model and features come from: one resolution function for each.

Model sources (:func:`load_model_source`)::

    "/path/to/training_workdir"      a memjax training workdir (config.json + checkpoints)
    "package.module:function"        ``function() -> (score_fn, sde)`` (any JAX model)
    "diffusers:PATH"                 a pretrained diffusers UNet through
                                     ``memjax.interop.diffusers.load_pretrained(PATH)``

Feature sources (:func:`load_features`)::

    "pixels"                         flattened images
    "classifier"                     memjax's digits classifier (trained once, cached)
    "NAME:PATH"                      ``memjax.features.load(spec)``, e.g. a copy-detection net

Every feature function is batched, ``f(images [n, H, W, C] in [-1, 1]) -> [n, d]``, and has a
``name`` naming its feature space (reports name the space of every similarity number).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable, NamedTuple

import numpy as np

from memjax import workdir as wd

__all__ = ["ModelSource", "load_model_source", "from_trained", "model_id", "load_features", "named"]


class ModelSource(NamedTuple):
    """A resolved model: its single-example ``score_fn(x, t)``, its SDE, a content id (for
    stage keys), a description, the memjax training result when there is one (``trained``:
    a :class:`memjax.training.Trained`, else None)."""

    score_fn: Callable
    sde: Any
    model_id: str
    description: str
    trained: Any = None


def model_id(model) -> str:
    """A content hash of an NNX model's parameters (what stages computed from it depend on)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    return wd.fingerprint(*[np.asarray(x) for x in leaves
                            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.number)])


def from_trained(trained, description: str) -> ModelSource:
    """The :class:`ModelSource` of a :class:`memjax.training.Trained`."""
    from memjax import training

    return ModelSource(training.trained_score_fn(trained), trained.sde, model_id(trained.model),
                       description, trained)


def load_model_source(spec: str, *, step: int | None = None, field: str = "model") -> ModelSource:
    """Resolves ``spec`` (see the module docstring) to a :class:`ModelSource`; errors name
    ``field``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"{field}: expected a training workdir, 'module:function' or "
                         f"'diffusers:PATH', got {spec!r}")
    if spec.startswith("diffusers:"):
        from memjax.interop import diffusers as hf  # available with the interop bridges

        m = hf.load_pretrained(spec.split(":", 1)[1])
        return ModelSource(m.score_fn, m.schedule, wd.fingerprint(spec), f"diffusers {spec[10:]}")
    if ":" in spec and "://" not in spec and not os.path.exists(spec):
        mod, fn = spec.split(":", 1)
        try:
            score_fn, sde = getattr(importlib.import_module(mod), fn)()
        except (ImportError, AttributeError) as e:
            raise ValueError(f"{field}: cannot import {spec!r} ({e})") from e
        return ModelSource(score_fn, sde, wd.fingerprint(spec), f"{spec}")
    from memjax import training

    if not (wd.as_path(spec) / training.CONFIG_FILENAME).exists():
        raise ValueError(f"{field}: no {training.CONFIG_FILENAME} in {spec!r}; is it a memjax "
                         "training workdir?")
    trained = training.load_trained(spec, step=step)
    return from_trained(trained, f"restored {spec} (step {trained.step})")


def named(fn: Callable, name: str) -> Callable:
    """``fn`` with a ``name`` attribute (the feature space it maps to)."""
    def f(images):
        return fn(images)

    f.name = name
    return f


def load_features(spec: str, *, train: np.ndarray | None = None, workdir: str | None = None,
                  seed: int = 0, field: str = "features") -> Callable:
    """The batched feature function of ``spec`` (see the module docstring), with ``.name``.

    ``"classifier"`` trains memjax's digits classifier on ``train`` once and caches it in
    ``workdir``. Errors name ``field``.
    """
    from memjax.metrics import features as feat

    if spec == "pixels":
        return named(lambda x: np.asarray(x, np.float32).reshape(len(x), -1), "pixels")
    if spec == "classifier":
        ext = feat.digits_classifier_features(train=train, workdir=workdir, seed=int(seed))
        return named(lambda x: np.asarray(feat.compute_features(ext, x)), "digits classifier")
    if isinstance(spec, str) and ":" in spec:
        import memjax.features as features_lib  # the pretrained feature networks

        return features_lib.load(spec)
    raise ValueError(f"{field}: expected 'pixels', 'classifier' or 'NAME:PATH', got {spec!r}")
