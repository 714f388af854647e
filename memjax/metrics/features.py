r"""Feature functions: what "similar" means for the memorization metrics.

A feature function maps a batch of images to vectors::

    feature_fn(images: [b, H, W, C] in [-1, 1]) -> features [b, d]

Every metric in :mod:`memjax.metrics.memorization` takes arrays, so the choice of feature space
is the caller's: pass ``compute_features(feature_fn, images)`` for both the generated and the
training set. Built in:

* :func:`pixels` -- the flattened pixels (paper 001 uses normalized L2 in pixel space on
  CIFAR-10; Carlini et al.'s criterion is defined there).
* :func:`classifier_features` -- the penultimate layer of a memjax classifier
  (:class:`memjax.models.ResNet`, or any object with a ``features(x[, t])`` method).
* :func:`digits_classifier_features` -- a small ResNet trained on the embedded digits (cached),
  the offline stand-in for the papers' deep features.
* :func:`l2_normalized` -- wraps a feature function so that rows have unit norm (then the
  inner product paper 002 reports *is* the cosine similarity).

Plugging in a pretrained network (DINOv2, SSCD, Inception)
----------------------------------------------------------
memjax downloads nothing; bring the weights yourself. Any JAX callable works:

1. Port or load the network in JAX (e.g. a Flax DINOv2 ViT-B/14 from the Hugging Face
   ``transformers`` Flax classes, an Inception-v3 port such as the one used by JAX FID code, or
   SSCD's ResNet-50 weights converted into :class:`memjax.models.ResNet` -- SSCD is a
   ResNet-50 trunk with GeM pooling and a 512-d projection). Keep it in eval mode.
2. Write the preprocessing the network was trained with inside the function: map ``[-1, 1]`` to
   ``[0, 1]``, resize (``jax.image.resize``; DINOv2: 224 px, multiples of 14; SSCD: 288 px;
   Inception: 299 px), normalise with the ImageNet mean/std (DINOv2, SSCD) or to ``[-1, 1]``
   (Inception), tile grey images to three channels.
3. Return the embedding the paper uses: DINOv2's CLS token (paper 002, then
   :func:`l2_normalized` so inner products are cosines), SSCD's L2-normalised 512-d descriptor
   (paper 001's SSCD score is the cosine of two descriptors), Inception's 2,048-d pool3 for
   :func:`memjax.metrics.stats.frechet_distance` (FID).

For example::

    def dino_fn(images):                                   # [b, H, W, C] in [-1, 1]
        x = (images + 1) / 2
        x = jnp.broadcast_to(x, x.shape[:-1] + (3,))
        x = jax.image.resize(x, (x.shape[0], 224, 224, 3), "bicubic")
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
        return dino_model(pixel_values=x.transpose(0, 3, 1, 2)).pooler_output
    feats = compute_features(l2_normalized(jax.jit(dino_fn)), images, batch_size=64)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from memjax import _checks

__all__ = ["FeatureFn", "classifier_features", "compute_features", "digits_classifier_features",
           "get_feature_fn", "l2_normalized", "pixels"]

FeatureFn = Callable[[Float[Array, "b h w c"]], Float[Array, "b d"]]


def pixels(images: Float[Array, "b ..."]) -> Float[Array, "b d"]:
    """The raw pixels, flattened: ``[b, H, W, C] -> [b, H W C]``."""
    x = jnp.asarray(images)
    if x.ndim < 2:
        raise ValueError(f"images: expected a batch [b, ...], got shape {x.shape}")
    return x.reshape(x.shape[0], -1).astype(jnp.promote_types(x.dtype, jnp.float32))


def l2_normalized(feature_fn: FeatureFn, eps: float = 1e-12) -> FeatureFn:
    """``feature_fn`` followed by division of each row by its Euclidean norm."""
    if not callable(feature_fn):
        raise ValueError(f"feature_fn: expected a callable, got {type(feature_fn).__name__}")

    def fn(images):
        f = feature_fn(images)
        return f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), eps)

    return fn


def classifier_features(model: Any, *, t: float | None = None,
                        eval_mode: bool = True) -> FeatureFn:
    """The penultimate layer of a classifier as a feature function.

    Args:
      model: an object with ``features(x)`` (or ``features(x, t)``) returning ``[b, d]``, such
        as :class:`memjax.models.ResNet`. A Flax NNX module is split once into graph and state
        and the returned function is ``jax.jit``-compiled; the model itself is not modified
        (eval mode is set on a copy, so BatchNorm uses its running averages).
      t: time passed to a time-dependent classifier (``model.time_dependent``); e.g.
        ``sde.t_min`` for clean images. Must be None for a time-independent one.
      eval_mode: call ``.eval()`` on the copy (NNX modules) before extracting features.
    """
    feats = getattr(model, "features", None)
    if not callable(feats):
        raise ValueError(f"model: expected an object with a callable `features(x)` method, got "
                         f"{type(model).__name__}")
    time_dependent = bool(getattr(model, "time_dependent", False))
    if time_dependent and t is None:
        raise ValueError("t: the model is time-dependent; expected a time, got None")
    if t is not None and not time_dependent and hasattr(model, "time_dependent"):
        raise ValueError(f"t: the model is not time-dependent; expected None, got {t!r}")

    def call(m, images):
        x = jnp.asarray(images, jnp.float32)
        if t is None:
            out = m.features(x)
        else:
            out = m.features(x, jnp.full((x.shape[0],), t, jnp.float32))
        return out.reshape(out.shape[0], -1)

    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a dependency
        nnx = None
    if nnx is not None and isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)

        @jax.jit
        def run(state, images):
            m = nnx.merge(graphdef, state)
            if eval_mode:
                m.eval()
            return call(m, images)

        return lambda images: run(state, images)
    return lambda images: call(model, images)


def compute_features(feature_fn: FeatureFn, images: Float[Array, "n ..."], *,
                     batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Applies ``feature_fn`` to ``images`` in batches (the last batch padded, so one compile)
    and returns ``[n, d]`` float32 host features."""
    if not callable(feature_fn):
        raise ValueError(f"feature_fn: expected a callable, got {type(feature_fn).__name__}")
    _checks.check_positive_int("batch_size", batch_size)
    x = np.asarray(images)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"images: expected a non-empty batch [n, ...], got shape {x.shape}")
    n = x.shape[0]
    bs = min(batch_size, n)
    starts = range(0, n, bs)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="features", unit="batch")
    out = []
    for s in starts:
        part = x[s:s + bs]
        m = part.shape[0]
        if m < bs:
            part = np.concatenate([part, np.repeat(part[-1:], bs - m, axis=0)])
        f = np.asarray(feature_fn(jnp.asarray(part)), np.float32)
        if f.ndim != 2 or f.shape[0] != bs:
            raise ValueError(f"feature_fn: expected features [batch, d] for a batch of {bs}, got "
                             f"shape {f.shape}")
        out.append(f[:m])
    return np.concatenate(out)


def get_feature_fn(name: str, model: Any = None, *, t: float | None = None) -> FeatureFn:
    """Feature function by name: ``"pixels"`` or ``"classifier"`` (needs ``model``)."""
    _checks.check_choice("name", name, ("pixels", "classifier"))
    if name == "pixels":
        return pixels
    if model is None:
        raise ValueError("model: expected a classifier for features 'classifier', got None")
    return classifier_features(model, t=t)


# -- a small classifier of the embedded digits -----------------------------------------------------
def _digits_like(shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 labelled digits, brought to ``shape = (H, W, C)`` (padding with background -1
    when larger than 8x8, bilinear resizing when smaller, grey tiled to RGB)."""
    from memjax.data import load_digits, transform_images

    x, y = load_digits(return_labels=True)
    h, w, c = shape
    if h != w or c not in (1, 3):
        raise ValueError(f"train: expected square images with 1 or 3 channels, got {shape}")
    if h != 8:
        x = transform_images(x, image_size=h, resize_method="pad" if h > 8 else "bilinear")
    if c == 3:
        x = np.repeat(x, 3, axis=-1)
    return np.asarray(x, np.float32), y


def digits_classifier_features(*, train: Any = None, workdir: str | None = None, seed: int = 0,
                               num_steps: int = 150, batch_size: int = 128, width: int = 16,
                               learning_rate: float = 2e-3) -> FeatureFn:
    """Penultimate features of a small :class:`memjax.models.ResNet` trained on the labelled
    digits (all 1,797, shaped like ``train``'s images), cached under ``workdir``.

    A stand-in for the deep features of the papers (paper 003: SqueezeNet class scores) on the
    embedded data: it runs offline on a CPU in well under a minute. The classifier sees every
    digit with its label (it is a feature extractor, not the model under audit). With
    ``workdir`` the trained classifier is an orbax checkpoint ``workdir/digits_classifier`` (the
    one fit loop and format of :mod:`memjax.fit`), reused by later calls with the same
    settings instead of training again.

    Returns:
      ``feature_fn(images [b, H, W, C]) -> [b, 2 * width]``; its ``.accuracy`` attribute holds
      the training accuracy.
    """
    from flax import nnx

    from memjax import fit, objectives
    from memjax import workdir as wd
    from memjax.models import ResNet

    _checks.check_positive_int("num_steps", num_steps)
    _checks.check_positive_int("batch_size", batch_size)
    _checks.check_positive_int("width", width)
    shape = (8, 8, 1) if train is None else tuple(np.shape(train)[1:])
    if len(shape) != 3:
        raise ValueError(f"train: expected images [n, H, W, C], got shape {np.shape(train)}")
    x, y = _digits_like(shape)
    model = ResNet(num_classes=10, in_channels=shape[-1], stage_sizes=(1, 1), width=width,
                   rngs=nnx.Rngs(seed))
    key = ("digits_classifier", seed, width, shape, num_steps, batch_size, learning_rate, 2)

    def train_it():
        fit.fit_classifier(model, objectives.classifier_loss,
                           {"image": x, "label": y.astype(np.int32)}, key=jax.random.key(seed),
                           num_steps=num_steps, batch_size=batch_size,
                           learning_rate=learning_rate, weight_decay=0.0, log_every=num_steps)

    if workdir is None:
        train_it()
    else:
        fit.fit_or_restore(model, f"{workdir}/digits_classifier", key, train_it, log=None)
    model.eval()
    pred = np.argmax(fit.batched_logits(model, x), -1)
    accuracy = float(np.mean(pred == y))
    if workdir is not None:
        wd.save_json(f"{workdir}/digits_classifier.json", {"train_accuracy": accuracy})
    fn = classifier_features(model)
    fn.accuracy = accuracy
    return fn
