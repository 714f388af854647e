r"""Datasets: the embedded digits, TFDS, ``.npz`` files and image folders; seeded subsets,
horizontal-flip doubling, a held-out split, and a saved record of what was trained on.

Images are channel-last ``[n, H, W, C]`` float32 in ``[-1, 1]``. The embedded default is
scikit-learn's bundled 8x8 digits: real data, no download.

The sources themselves (random access to each) live in :mod:`memjax.data_sources`.
One entry point, :func:`load_dataset`, turns a data config (:func:`data_config`) into a
:class:`Dataset`::

    source images (N of them) --seeded permutation--> train sources (num_train)
                                                      held-out sources (num_heldout, disjoint)
    --> crop / resize / pad --> [-1, 1] --> optional horizontal-flip doubling of both splits

Paper 000 ("Experiments") trains on ``2^6`` randomly chosen CIFAR-10 images plus their
mirror images (``2^7`` trained images) and compares them with ``2^7`` images that were not
trained on; ``data_config(num_train=64, flip=True)`` reproduces that split, seeded (the
authors' split was not). :func:`save_split` writes the images together with their source
indices and flip flags (``workdir/data_split.npz`` in training), so later analysis knows
exactly which images the model saw; :func:`load_split` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional, Sequence

import numpy as np
from jaxtyping import Bool, Float, Int

from memjax import workdir as wd
from memjax.data_sources import (IMAGE_EXTENSIONS, FolderSource, Source,  # noqa: F401 (re-exported)
                                 load_digits, open_source, to_unit_range)

SOURCES = ("digits", "tfds", "npz", "folder")
RESIZE_METHODS = ("bilinear", "nearest", "cubic", "lanczos3", "lanczos5", "pad")
SPLIT_FILENAME = "data_split.npz"


# -- configuration -------------------------------------------------------------------------------
def data_config(**overrides):
    """The documented default data config (an ``ml_collections.ConfigDict``).

    Fields:
      source: ``"digits"`` (embedded, no download), ``"tfds"`` (``tfds.data_source``),
        ``"npz"`` (a NumPy archive) or ``"folder"`` (a directory of image files).
      name: TFDS dataset name (``"cifar10"``, ``"mnist"``, ``"celeb_a"``, ...); source tfds only.
      split: TFDS split the images are drawn from (``"train"``).
      data_dir: TFDS data directory (None: TFDS's default). Nothing is downloaded unless
        ``download`` is True.
      download: let TFDS download and prepare the dataset if it is missing.
      path: the ``.npz`` file or image folder (sources npz / folder).
      image_key: array / feature holding the images (npz default ``"image"``; TFDS ``"image"``).
      label_key: array / feature holding integer class labels; ``""`` for none.
      num_classes: number of classes (0: infer from TFDS metadata or ``max(label) + 1``).
      channels: 1 or 3 to convert folder images to grey / RGB; 0 keeps what the source has.
      center_crop: side of a central square crop applied first (0: none).
      image_size: side of the final square images (0: keep the source size).
      resize_method: ``jax.image.resize`` method (``"bilinear"``, ``"nearest"``, ``"cubic"``,
        ``"lanczos3"``, ``"lanczos5"``; antialiased when shrinking), or ``"pad"``: centre the
        image on a ``image_size`` canvas of background value -1 (digits 8x8 -> 16x16).
      num_train: number of source images trained on (0: all that are not held out).
      num_heldout: number of held-out source images, disjoint from the training ones
        (-1: the same as ``num_train``; 0: none).
      flip: horizontal-flip doubling of both splits (paper 000): every image is followed
        by its mirror image, so a split of ``k`` sources holds ``2k`` images.
      seed: seed of the permutation that picks the subsets.
    """
    import ml_collections

    c = ml_collections.ConfigDict()
    c.source = "digits"
    c.name = ""
    c.split = "train"
    c.data_dir = ""
    c.download = False
    c.path = ""
    c.image_key = "image"
    c.label_key = "label"
    c.num_classes = 0
    c.channels = 0
    c.center_crop = 0
    c.image_size = 0
    c.resize_method = "bilinear"
    c.num_train = 0
    c.num_heldout = -1
    c.flip = False
    c.seed = 0
    c.update(overrides)
    return c


def validate_data_config(config, prefix: str = "data") -> None:
    """Raises ``ValueError`` naming the field (``data.<field>``) of an invalid data config."""
    defaults = data_config()
    unknown = sorted(set(config.keys()) - set(defaults.keys()))
    if unknown:
        raise ValueError(f"{prefix}.{unknown[0]}: unknown field; known fields are "
                         f"{sorted(defaults.keys())}")
    if config.source not in SOURCES:
        raise ValueError(f"{prefix}.source: expected one of {SOURCES}, got {config.source!r}")
    if config.resize_method not in RESIZE_METHODS:
        raise ValueError(f"{prefix}.resize_method: expected one of {RESIZE_METHODS}, got "
                         f"{config.resize_method!r}")
    for field in ("image_size", "center_crop", "num_train", "num_classes", "seed"):
        v = config[field]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{prefix}.{field}: expected a non-negative integer, got {v!r}")
    if config.channels not in (0, 1, 3):
        raise ValueError(f"{prefix}.channels: expected 0 (keep), 1 or 3, got {config.channels!r}")
    if not isinstance(config.num_heldout, (int, np.integer)) or config.num_heldout < -1:
        raise ValueError(f"{prefix}.num_heldout: expected -1 (same as num_train), 0 or a positive "
                         f"integer, got {config.num_heldout!r}")
    if config.source == "tfds" and not config.name:
        raise ValueError(f"{prefix}.name: expected a TFDS dataset name for source 'tfds'")
    if config.source in ("npz", "folder") and not config.path:
        raise ValueError(f"{prefix}.path: expected a file or folder for source {config.source!r}")
    if config.resize_method == "pad" and not config.image_size:
        raise ValueError(f"{prefix}.image_size: resize_method 'pad' needs a target image_size")


# -- the dataset ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Dataset:
    """A training split and a held-out split, with the provenance of every image.

    Attributes:
      train: ``[n_train, H, W, C]`` float32 in [-1, 1]; with ``flip`` each source image is
        followed by its mirror image.
      heldout: ``[n_heldout, H, W, C]``, built the same way from disjoint sources.
      train_labels, heldout_labels: ``[n]`` int32 class labels, or None.
      train_source, heldout_source: ``[n]`` index of each image in the source dataset
        (the TFDS split, the npz array, the sorted folder listing, the 1,797 digits).
      train_flipped, heldout_flipped: ``[n]`` bool, True for mirror images.
      num_classes: number of classes (0 when unlabelled).
      name: a short description of the source.
    """

    train: Float[np.ndarray, "n h w c"]
    heldout: Float[np.ndarray, "m h w c"]
    train_labels: Optional[Int[np.ndarray, " n"]]
    heldout_labels: Optional[Int[np.ndarray, " m"]]
    train_source: Int[np.ndarray, " n"]
    heldout_source: Int[np.ndarray, " m"]
    train_flipped: Bool[np.ndarray, " n"]
    heldout_flipped: Bool[np.ndarray, " m"]
    num_classes: int = 0
    name: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])

    @property
    def num_train(self) -> int:
        return int(self.train.shape[0])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.train.shape}, heldout={self.heldout.shape}, "
                f"labelled={self.train_labels is not None}, num_classes={self.num_classes})")


def subset_indices(num_source: int, num_train: int, num_heldout: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint train / held-out source indices from a permutation seeded by ``seed``.

    ``num_train = 0`` takes every source image that is not held out; ``num_heldout = -1``
    holds out as many as are trained on. Both index arrays are sorted.
    """
    if num_heldout < 0:
        num_heldout = num_train if num_train else 0
    if num_train == 0:
        num_train = num_source - num_heldout
    if num_train < 1 or num_train + num_heldout > num_source:
        raise ValueError(f"data.num_train/num_heldout: expected num_train + num_heldout <= "
                         f"{num_source} (the source's size) and num_train >= 1, got "
                         f"{num_train} + {num_heldout}")
    perm = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).permutation(num_source)
    return np.sort(perm[:num_train]), np.sort(perm[num_train:num_train + num_heldout])


def flip_double(images: np.ndarray, *arrays):
    """Interleaves every image with its horizontal mirror: ``[x0, flip(x0), x1, flip(x1), ...]``.

    Other per-image ``arrays`` (labels, indices) are repeated to match; a flip-flag array
    is returned last.
    """
    n = images.shape[0]
    out = np.stack([images, images[:, :, ::-1]], axis=1).reshape(2 * n, *images.shape[1:])
    rest = [None if a is None else np.repeat(np.asarray(a), 2, axis=0) for a in arrays]
    flags = np.tile(np.array([False, True]), n)
    return (out, *rest, flags)


def transform_images(images: np.ndarray, *, center_crop: int = 0, image_size: int = 0,
                     resize_method: str = "bilinear", chunk: int = 512) -> np.ndarray:
    """Central square crop, then resize (``jax.image.resize``, antialiased) or pad with -1.

    ``images``: ``[n, H, W, C]`` float32 in [-1, 1]. Resizing runs in chunks of ``chunk``.
    """
    n, h, w, c = images.shape
    if center_crop:
        if center_crop > min(h, w):
            raise ValueError(f"data.center_crop: expected at most {min(h, w)} (the image size "
                             f"{h}x{w}), got {center_crop}")
        top, left = (h - center_crop) // 2, (w - center_crop) // 2
        images = images[:, top:top + center_crop, left:left + center_crop]
        h = w = center_crop
    if not image_size or (image_size == h == w):
        return np.ascontiguousarray(images, dtype=np.float32)
    if resize_method == "pad":
        if image_size < max(h, w):
            raise ValueError(f"data.image_size: padding needs image_size >= {max(h, w)} (the "
                             f"image size), got {image_size}")
        top, left = (image_size - h) // 2, (image_size - w) // 2
        out = np.full((n, image_size, image_size, c), -1.0, np.float32)
        out[:, top:top + h, left:left + w] = images
        return out
    if h != w:  # keep the aspect ratio: crop the central square before resizing
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        images = images[:, top:top + s, left:left + s]
    import jax
    import jax.numpy as jnp

    resize = jax.jit(lambda x: jnp.clip(jax.image.resize(
        x, (x.shape[0], image_size, image_size, c), method=resize_method, antialias=True), -1, 1))
    parts = [np.asarray(resize(jnp.asarray(images[i:i + chunk])))
             for i in range(0, n, chunk)]
    return np.concatenate(parts).astype(np.float32) if parts else \
        np.zeros((0, image_size, image_size, c), np.float32)


# -- loading ------------------------------------------------------------------------------------
def _load_split(source: Source, indices: np.ndarray, config) -> tuple[np.ndarray, Any]:
    if isinstance(source, FolderSource) and (config.center_crop or config.image_size):
        parts, labels = [], []
        for i in indices:  # folder images may differ in size: transform one at a time
            im, lab = source.get([i])
            parts.append(transform_images(im, center_crop=config.center_crop,
                                          image_size=config.image_size,
                                          resize_method=config.resize_method))
            labels.append(lab)
        images = np.concatenate(parts)
        labels = None if source.labels is None else np.concatenate(labels)
        return images, labels
    images, labels = source.get(indices)
    return transform_images(images, center_crop=config.center_crop, image_size=config.image_size,
                            resize_method=config.resize_method), labels


def load_dataset(config) -> Dataset:
    """Builds the :class:`Dataset` a data config describes (see :func:`data_config`).

    Deterministic for a given config: the subsets come from a permutation seeded by
    ``config.seed``; only the chosen images are read from the source. Raises ``ValueError``
    naming the ``data.<field>`` at fault.
    """
    validate_data_config(config)
    source = open_source(config)
    n_source = len(source)
    train_idx, held_idx = subset_indices(n_source, int(config.num_train), int(config.num_heldout),
                                         int(config.seed))
    train, train_labels = _load_split(source, train_idx, config)
    if held_idx.size:
        heldout, heldout_labels = _load_split(source, held_idx, config)
    else:
        heldout = np.zeros((0,) + train.shape[1:], np.float32)
        heldout_labels = None if train_labels is None else np.zeros((0,), np.int32)
    if config.flip:
        train, train_labels, train_idx, train_flip = flip_double(train, train_labels, train_idx)
        heldout, heldout_labels, held_idx, held_flip = flip_double(heldout, heldout_labels, held_idx)
    else:
        train_flip = np.zeros(train.shape[0], bool)
        held_flip = np.zeros(heldout.shape[0], bool)
    num_classes = int(config.num_classes) or source.num_classes
    if not num_classes and train_labels is not None:
        num_classes = int(max(train_labels.max(initial=0), heldout_labels.max(initial=0))) + 1
    name = config.source if config.source == "digits" else \
        f"{config.source}:{config.name or os.path.basename(str(config.path))}"
    return Dataset(train=train, heldout=heldout, train_labels=train_labels,
                   heldout_labels=heldout_labels, train_source=train_idx.astype(np.int64),
                   heldout_source=held_idx.astype(np.int64), train_flipped=train_flip,
                   heldout_flipped=held_flip, num_classes=num_classes, name=name)


# -- the saved split -----------------------------------------------------------------------------
def save_split(dataset: Dataset, path: str, config=None) -> None:
    """Writes ``dataset`` (images, labels, source indices, flip flags) to an ``.npz`` atomically.

    ``config`` (the data config), when given, is stored as JSON under ``"config"``.
    """
    arrays = {f.name: getattr(dataset, f.name) for f in dataclasses.fields(dataset)
              if isinstance(getattr(dataset, f.name), np.ndarray)}
    arrays["num_classes"] = np.asarray(dataset.num_classes)
    arrays["name"] = np.asarray(dataset.name)
    if config is not None:
        arrays["config"] = np.asarray(config.to_json() if hasattr(config, "to_json")
                                      else json.dumps(dict(config)))
    wd.save_npz(path, **arrays)  # atomic, on process 0 only; ``path`` may be a URL


def load_split(path: str) -> Dataset:
    """Reads a :class:`Dataset` written by :func:`save_split` (e.g. ``workdir/data_split.npz``)."""
    p = wd.as_path(path)
    if p.is_dir():
        p = p / SPLIT_FILENAME
    if not p.is_file():
        raise ValueError(f"path: no saved data split at {os.fspath(p)!r}")
    f = wd.load_npz(p)
    get = f.get
    return Dataset(train=f["train"], heldout=f["heldout"], train_labels=get("train_labels"),
                   heldout_labels=get("heldout_labels"), train_source=f["train_source"],
                   heldout_source=f["heldout_source"], train_flipped=f["train_flipped"],
                   heldout_flipped=f["heldout_flipped"], num_classes=int(f["num_classes"]),
                   name=str(f["name"]))


# -- batches ------------------------------------------------------------------------------------
def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The order of epoch ``epoch``: a permutation seeded by ``(seed, epoch)``."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, 0xBA7C])).permutation(
        num_examples)


def batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the examples in batch ``step``: a pure function of ``(seed, step)``.

    The index stream is the concatenation of epoch permutations (:func:`epoch_permutation`);
    batch ``k`` is ``stream[k B : (k + 1) B]``, so batches may straddle epochs and a batch
    larger than the dataset is allowed. Resuming at any step reproduces the same batches.
    """
    start = step * batch_size
    first, last = start // num_examples, (start + batch_size - 1) // num_examples
    stream = np.concatenate([epoch_permutation(num_examples, seed, e)
                             for e in range(first, last + 1)])
    offset = start - first * num_examples
    return stream[offset:offset + batch_size]


def make_batch(dataset: Dataset, indices: Sequence[int]) -> dict:
    """``{"image": [b, H, W, C], "index": [b] int32, "label": [b] int32 (when labelled)}``.

    ``index`` is the position in ``dataset.train`` (the ambient objective seeds each image's
    fixed noisy copy with it).
    """
    idx = np.asarray(indices)
    batch = {"image": dataset.train[idx], "index": idx.astype(np.int32)}
    if dataset.train_labels is not None:
        batch["label"] = dataset.train_labels[idx]
    return batch
