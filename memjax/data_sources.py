r"""Image sources behind :func:`memjax.data.load_dataset`: random access to the images of
scikit-learn's embedded digits, a TFDS split (``tfds.data_source``), an ``.npz`` archive or a
folder of image files.

Every source is ``len(source)`` images and ``source.get(indices) -> (images, labels | None)``
with images ``[k, H, W, C]`` float32 in ``[-1, 1]`` (:func:`to_unit_range`) and labels ``[k]``
int32; :func:`open_source` picks the one a data config (:func:`memjax.data.data_config`) names.
Only the requested images are read, so a small subset of a large dataset costs only its size.
"""

from __future__ import annotations

import os

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

__all__ = ["IMAGE_EXTENSIONS", "load_digits", "to_unit_range", "Source", "ArraySource",
           "DigitsSource", "NpzSource", "FolderSource", "TfdsSource", "open_source"]


def load_digits(*, return_labels: bool = False):
    """All 1,797 of scikit-learn's 8x8 digits as ``[1797, 8, 8, 1]`` float32 in [-1, 1].

    The raw pixels are integers 0..16; they are mapped by ``x / 8 - 1``.
    """
    from sklearn.datasets import load_digits as _load

    d = _load()
    images = (d.images.astype(np.float32) / 8.0 - 1.0)[..., None]
    if return_labels:
        return images, d.target.astype(np.int32)
    return images


def to_unit_range(images: np.ndarray, name: str = "images") -> np.ndarray:
    """uint8 / integer images (0..255) map by ``x / 127.5 - 1``; floats must already lie in [-1, 1]."""
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.integer) or images.dtype == np.bool_:
        return images.astype(np.float32) / 127.5 - 1.0
    images = images.astype(np.float32)
    if images.size and (images.min() < -1.0 - 1e-6 or images.max() > 1.0 + 1e-6):
        raise ValueError(f"{name}: float images must lie in [-1, 1] (integers are read as 0..255), "
                         f"got values in [{images.min():g}, {images.max():g}]")
    return images



class Source:
    """Random access to a source: ``len``, ``get(indices) -> (images, labels|None)``."""

    num_classes = 0

    def __len__(self):
        raise NotImplementedError

    def get(self, indices):
        raise NotImplementedError


class ArraySource(Source):
    def __init__(self, images, labels, num_classes=0):
        self.images, self.labels = images, labels
        self.num_classes = num_classes

    def __len__(self):
        return self.images.shape[0]

    def get(self, indices):
        labels = None if self.labels is None else np.asarray(self.labels)[indices].astype(np.int32)
        return to_unit_range(self.images[indices]), labels


class DigitsSource(ArraySource):
    def __init__(self, config):
        images, labels = load_digits(return_labels=True)
        super().__init__(images, labels if config.label_key else None, 10)


class NpzSource(ArraySource):
    def __init__(self, config):
        if not os.path.isfile(config.path):
            raise ValueError(f"data.path: no such .npz file: {config.path!r}")
        with np.load(config.path) as f:
            key = config.image_key or "image"
            if key not in f:
                raise ValueError(f"data.image_key: {key!r} is not in {config.path} "
                                 f"(arrays: {sorted(f.keys())})")
            images = f[key]
            labels = f[config.label_key] if config.label_key and config.label_key in f else None
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ValueError(f"data.path: expected images [n, H, W, C] or [n, H, W] in {config.path}, "
                             f"got shape {images.shape}")
        super().__init__(images, labels)


class FolderSource(Source):
    """Image files under ``path`` (sorted, recursive). Labels: the name of the first sub-folder."""

    def __init__(self, config):
        if not os.path.isdir(config.path):
            raise ValueError(f"data.path: no such folder: {config.path!r}")
        files = []
        for root, _, names in os.walk(config.path):
            files += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        self.files = sorted(files)
        if not self.files:
            raise ValueError(f"data.path: no image files ({', '.join(IMAGE_EXTENSIONS)}) under "
                             f"{config.path!r}")
        self.channels = config.channels
        self.labels = None
        if config.label_key:
            rel = [os.path.relpath(f, config.path).split(os.sep) for f in self.files]
            if all(len(r) > 1 for r in rel):
                classes = sorted({r[0] for r in rel})
                self.classes = classes
                self.labels = np.array([classes.index(r[0]) for r in rel], np.int32)
                self.num_classes = len(classes)

    def __len__(self):
        return len(self.files)

    def get(self, indices):
        from PIL import Image

        mode = {0: None, 1: "L", 3: "RGB"}[self.channels]
        arrays = []
        for i in indices:
            with Image.open(self.files[i]) as im:
                if mode is None:
                    mode = "L" if im.mode in ("L", "1", "I", "I;16") else "RGB"
                a = np.asarray(im.convert(mode))
            arrays.append(a[..., None] if a.ndim == 2 else a)
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"data.path: images of different sizes {sorted(shapes)[:3]}...; set "
                             f"data.center_crop / data.image_size so they can be stacked "
                             f"(crop and resize run per image for folders)")
        labels = None if self.labels is None else self.labels[np.asarray(indices)]
        return to_unit_range(np.stack(arrays)), labels


class TfdsSource(Source):
    def __init__(self, config):
        import tensorflow_datasets as tfds

        kwargs = dict(split=config.split, download=bool(config.download))
        if config.data_dir:
            kwargs["data_dir"] = config.data_dir
        try:
            self.ds = tfds.data_source(config.name, **kwargs)
        except Exception as e:  # noqa: BLE001 -- re-raised with the field that caused it
            hint = ("; tfds.data_source reads only ArrayRecord: prepare it with `tfds build "
                    f"{config.name} --file_format=array_record`" if "file format" in str(e)
                    else "")
            raise ValueError(f"data.name: could not open TFDS dataset {config.name!r} split "
                             f"{config.split!r} (data_dir={config.data_dir or 'default'}, "
                             f"download={bool(config.download)}): {e}{hint}") from e
        self.image_key, self.label_key = config.image_key or "image", config.label_key
        try:
            feature = self.ds.dataset_info.features[self.label_key] if self.label_key else None
            self.num_classes = int(getattr(feature, "num_classes", 0) or 0)
        except (KeyError, AttributeError, TypeError):
            self.num_classes = 0

    def __len__(self):
        return len(self.ds)

    def get(self, indices):
        records = [self.ds[int(i)] for i in indices]
        if records and self.image_key not in records[0]:
            raise ValueError(f"data.image_key: {self.image_key!r} is not a feature of this TFDS "
                             f"dataset (features: {sorted(records[0].keys())})")
        images = np.stack([np.asarray(r[self.image_key]) for r in records])
        labels = None
        if self.label_key and records and self.label_key in records[0]:
            labels = np.array([int(r[self.label_key]) for r in records], np.int32)
        if images.ndim == 3:
            images = images[..., None]
        return to_unit_range(images), labels


def open_source(config) -> Source:
    """The source ``config.source`` names (``config``: a validated data config)."""
    return {"digits": DigitsSource, "tfds": TfdsSource, "npz": NpzSource,
            "folder": FolderSource}[config.source](config)
