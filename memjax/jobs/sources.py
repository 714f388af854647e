r"""Where a job's model and features come from: one resolution function for each.

Model sources (:func:`load_model_source`)::

    "/path/to/training_workdir"      a memjax training workdir (config.json + checkpoints)
    "package.module:function"        ``function() -> (score_fn, sde)`` (any JAX model)
    "diffusers:PATH"                 a pretrained diffusers UNet through
                                     ``memjax.interop.diffusers.load_pretrained(PATH)``
                                     (a folder, or its weights file: e.g. a variant's
                                     ``diffusion_pytorch_model.fp16.safetensors``)

A memjax workdir brings the split it was trained on (``data_split.npz``); any other model
takes its trained / held-out images from the job's data section ``data`` (:func:`load_target`:
``memjax.data.load_dataset``; TFDS, ``.npz`` or an image folder), its held-out images from
``heldout_data`` when the config has one (e.g. a test split). Stage keys hold the
source's ``model_id``: a content hash of the weights (workdir, diffusers) or of the
``module:function`` spec and its module's source file, so a changed model recomputes.

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

__all__ = ["ModelSource", "Target", "load_model_source", "load_target", "as_target", "job_target",
           "from_trained", "model_id", "load_features", "named"]


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
        return ModelSource(m.score_fn, m.schedule, wd.fingerprint(model_id(m.model),
                                                                  m.scheduler_config),
                           f"diffusers {spec[10:]}, {type(m.schedule).__name__} schedule, "
                           f"{m.prediction_type} prediction")
    if ":" in spec and "://" not in spec and not os.path.exists(spec):
        return _from_callable(spec, field)
    from memjax import training

    if not (wd.as_path(spec) / training.CONFIG_FILENAME).exists():
        raise ValueError(f"{field}: no {training.CONFIG_FILENAME} in {spec!r}; is it a memjax "
                         "training workdir?")
    trained = training.load_trained(spec, step=step)
    return from_trained(trained, f"restored {spec} (step {trained.step})")


def _from_callable(spec: str, field: str) -> ModelSource:
    """``"package.module:function"``: ``function() -> (score_fn, sde)``."""
    mod, fn = spec.split(":", 1)
    try:
        module = importlib.import_module(mod)
        out = getattr(module, fn)()
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{field}: cannot import {spec!r} ({e})") from e
    if not (isinstance(out, tuple) and len(out) == 2 and callable(out[0])):
        raise ValueError(f"{field}: {spec} must return a (score_fn, sde) pair, got "
                         f"{type(out).__name__}")
    file = getattr(module, "__file__", None)
    code = open(file, "rb").read().hex() if file and os.path.isfile(file) else ""
    return ModelSource(out[0], out[1], wd.fingerprint(spec, code),
                       f"{spec}, {type(out[1]).__name__} schedule")


class Target(NamedTuple):
    """A job's model and the images it was trained on / held out from
    (:class:`memjax.data.Dataset`)."""

    source: ModelSource
    dataset: Any


def load_target(spec: str, data_config=None, *, heldout_config=None, step: int | None = None,
                field: str = "model.source", data_field: str = "data") -> Target:
    """The model of ``spec`` (:func:`load_model_source`) and its data: a memjax workdir's own
    split, else ``memjax.data.load_dataset(data_config)`` (``ValueError`` naming
    ``data_field`` when there is none).

    ``heldout_config`` (optional, a second data config): the held-out images come from it
    instead (its ``num_train`` images), e.g. the CIFAR-10 test split for a checkpoint trained
    on the whole training split; ``data_config`` then gives only the trained images.
    """
    src = load_model_source(spec, step=step, field=field)
    if src.trained is not None:
        return Target(src, src.trained.dataset)
    if data_config is None:
        raise ValueError(f"{data_field}: {field} {spec!r} is not a memjax training workdir, so "
                         "the job needs a data section naming its trained / held-out images")
    import dataclasses

    from memjax import data as data_lib

    data_lib.validate_data_config(data_config, prefix=data_field)
    dataset = data_lib.load_dataset(data_config)
    if heldout_config is not None:
        data_lib.validate_data_config(heldout_config, prefix=f"heldout_{data_field}")
        h = data_lib.load_dataset(heldout_config)
        if h.train.shape[1:] != dataset.train.shape[1:]:
            raise ValueError(f"heldout_{data_field}: images of shape {h.train.shape[1:]}, but "
                             f"the trained images are {dataset.train.shape[1:]}")
        dataset = dataclasses.replace(
            dataset, heldout=h.train, heldout_labels=h.train_labels, heldout_source=h.train_source,
            heldout_flipped=h.train_flipped, name=f"{dataset.name} / held out: {h.name}")
    return Target(src, dataset)


def as_target(target) -> Target:
    """``target`` as a :class:`Target`: a Target, or a :class:`memjax.training.Trained`."""
    if isinstance(target, Target):
        return target
    return Target(from_trained(target, f"memjax model (step {target.step})"), target.dataset)


def job_target(config, workdir: str) -> Target:
    """The model of a sample / SIDE config: ``model.source`` (its data from ``config.data``
    unless it is a memjax workdir), else ``target_workdir``, else ``target`` (a training
    config) trained under ``workdir/target`` (:func:`memjax.side.load_target`)."""
    spec = config.get("model", {}).get("source", "")
    step = int(config.get("target_step", 0)) or None
    if spec:
        if config.get("target_workdir", ""):
            raise ValueError("model.source, target_workdir: set at most one")
        return load_target(spec, config.get("data"), heldout_config=config.get("heldout_data"),
                           step=step, field="model.source")
    from memjax import side

    return as_target(side.load_target(config.target_workdir, config.get("target"), workdir,
                                      step or 0))


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
