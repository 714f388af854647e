"""Data layer: digits, TFDS (through tfds.testing.mock_data), npz, folders; subsets, flips, splits."""

from __future__ import annotations

import numpy as np
import pytest

from memjax import data


def test_load_digits_unchanged():
    x, y = data.load_digits(return_labels=True)
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert y.shape == (1797,) and set(np.unique(y)) == set(range(10))


def test_digits_subset_flips_heldout_deterministic():
    cfg = data.data_config(num_train=64, flip=True, seed=3)
    a, b = data.load_dataset(cfg), data.load_dataset(cfg)
    assert a.train.shape == (128, 8, 8, 1) and a.heldout.shape == (128, 8, 8, 1)
    for f in ("train", "heldout", "train_source", "heldout_source", "train_labels",
              "train_flipped"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    # disjoint, 64 distinct sources each
    assert len(set(a.train_source)) == 64 and len(set(a.heldout_source)) == 64
    assert not set(a.train_source) & set(a.heldout_source)
    # every even image is a source image, every odd one its mirror
    digits, labels = data.load_digits(return_labels=True)
    np.testing.assert_array_equal(a.train[0::2], digits[a.train_source[0::2]])
    np.testing.assert_array_equal(a.train[1::2], digits[a.train_source[0::2]][:, :, ::-1])
    np.testing.assert_array_equal(a.train_flipped, np.tile([False, True], 64))
    np.testing.assert_array_equal(a.train_labels, labels[a.train_source])
    # another seed gives another subset
    c = data.load_dataset(data.data_config(num_train=64, flip=True, seed=4))
    assert not np.array_equal(c.train_source, a.train_source)


def test_digits_pad_and_resize():
    pad = data.load_dataset(data.data_config(num_train=8, image_size=16, resize_method="pad"))
    assert pad.train.shape == (8, 16, 16, 1)
    raw = data.load_digits()[pad.train_source]
    np.testing.assert_array_equal(pad.train[:, 4:12, 4:12], raw)
    assert np.all(pad.train[:, :4] == -1.0) and np.all(pad.train[:, :, 12:] == -1.0)
    up = data.load_dataset(data.data_config(num_train=8, image_size=32))
    assert up.train.shape == (8, 32, 32, 1)
    assert up.train.min() >= -1 and up.train.max() <= 1
    # bilinear upsampling keeps the mean brightness close
    np.testing.assert_allclose(up.train.mean(axis=(1, 2, 3)), raw.mean(axis=(1, 2, 3)), atol=0.05)


def test_tfds_loader_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = data.data_config(source="tfds", name="cifar10", num_train=6, num_heldout=3, flip=True,
                           seed=1, image_size=16)
    with tfds.testing.mock_data(num_examples=20):
        ds = data.load_dataset(cfg)
        raw = tfds.data_source("cifar10", split="train")
        img0 = np.asarray(raw[int(ds.train_source[0])]["image"])
        label0 = int(raw[int(ds.train_source[0])]["label"])
        ds2 = data.load_dataset(cfg)
        native = data.load_dataset(data.data_config(source="tfds", name="cifar10", num_train=2,
                                                    seed=1))
        raw_native = np.asarray(raw[int(native.train_source[0])]["image"])
    assert ds.train.shape == (12, 16, 16, 3) and ds.heldout.shape == (6, 16, 16, 3)
    assert ds.num_classes == 10 and ds.train_labels[0] == label0
    np.testing.assert_array_equal(ds.train, ds2.train)
    np.testing.assert_array_equal(ds.train[1], ds.train[0][:, ::-1])
    assert not set(ds.train_source) & set(ds.heldout_source)
    # native size: exactly x / 127.5 - 1
    np.testing.assert_allclose(native.train[0], raw_native / 127.5 - 1, atol=1e-6)
    # the resized image is the antialiased resize of the source image
    import jax
    want = jax.image.resize(img0 / 127.5 - 1, (16, 16, 3), "bilinear", antialias=True)
    np.testing.assert_allclose(ds.train[0], np.clip(want, -1, 1), atol=1e-5)


def test_tfds_center_crop_celeba_and_mnist():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        celeb = data.load_dataset(data.data_config(
            source="tfds", name="celeb_a", num_train=2, num_heldout=0, center_crop=140,
            image_size=32, label_key=""))
        mnist = data.load_dataset(data.data_config(source="tfds", name="mnist", num_train=3,
                                                   num_heldout=1))
    assert celeb.train.shape == (2, 32, 32, 3) and celeb.train_labels is None
    assert celeb.heldout.shape == (0, 32, 32, 3)
    assert mnist.train.shape == (3, 28, 28, 1) and mnist.num_classes == 10


def test_npz_and_folder_sources(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(10, 12, 12, 3), dtype=np.uint8)
    labels = np.arange(10) % 3
    np.savez(tmp_path / "d.npz", image=imgs, label=labels)
    ds = data.load_dataset(data.data_config(source="npz", path=str(tmp_path / "d.npz"),
                                            num_train=4, num_heldout=2))
    np.testing.assert_allclose(ds.train, imgs[ds.train_source] / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(ds.train_labels, labels[ds.train_source])
    assert ds.num_classes == 3
    for i, im in enumerate(imgs):
        d = tmp_path / "folder" / f"class{labels[i]}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i:02d}.png")
    fd = data.load_dataset(data.data_config(source="folder", path=str(tmp_path / "folder"),
                                            num_train=10, num_heldout=0))
    # sorted listing: class0/00, class0/03, ...; each file is its source image
    order = sorted(range(10), key=lambda i: (labels[i], i))
    np.testing.assert_allclose(fd.train, imgs[np.array(order)][fd.train_source] / 127.5 - 1,
                               atol=1e-6)
    np.testing.assert_array_equal(fd.train_labels, np.sort(labels)[fd.train_source])
    grey = data.load_dataset(data.data_config(source="folder", path=str(tmp_path / "folder"),
                                              num_train=2, num_heldout=0, channels=1,
                                              image_size=8))
    assert grey.train.shape == (2, 8, 8, 1)


def test_save_and_load_split(tmp_path):
    cfg = data.data_config(num_train=16, flip=True)
    ds = data.load_dataset(cfg)
    data.save_split(ds, str(tmp_path / data.SPLIT_FILENAME), cfg)
    back = data.load_split(str(tmp_path))
    for f in ("train", "heldout", "train_labels", "heldout_labels", "train_source",
              "heldout_source", "train_flipped", "heldout_flipped"):
        np.testing.assert_array_equal(getattr(back, f), getattr(ds, f))
    assert back.num_classes == 10 and back.name == "digits"


def test_batch_indices_are_a_pure_function_of_seed_and_step():
    n, b = 10, 4
    stream = np.concatenate([data.epoch_permutation(n, 7, e) for e in range(5)])
    for step in range(10):
        np.testing.assert_array_equal(data.batch_indices(n, b, 7, step),
                                      stream[step * b:(step + 1) * b])
    # every epoch visits every example once
    assert sorted(stream[:n]) == list(range(n))
    # batch larger than the dataset
    big = data.batch_indices(3, 8, 0, 1)
    assert big.shape == (8,) and set(big) <= {0, 1, 2}
    assert not np.array_equal(data.epoch_permutation(50, 7, 0), data.epoch_permutation(50, 7, 1))


@pytest.mark.parametrize("field,value,match", [
    ("source", "web", "data.source"),
    ("resize_method", "magic", "data.resize_method"),
    ("image_size", -2, "data.image_size"),
    ("num_heldout", -3, "data.num_heldout"),
    ("channels", 2, "data.channels"),
])
def test_invalid_data_config_names_the_field(field, value, match):
    cfg = data.data_config()
    cfg[field] = value
    with pytest.raises(ValueError, match=match):
        data.load_dataset(cfg)


def test_invalid_data_config_unknown_key_and_sizes():
    cfg = data.data_config()
    with cfg.unlocked():
        cfg.bach_size = 3
    with pytest.raises(ValueError, match="data.bach_size"):
        data.validate_data_config(cfg)
    with pytest.raises(ValueError, match="data.num_train"):
        data.load_dataset(data.data_config(num_train=1500))  # 1500 + 1500 > 1797
    with pytest.raises(ValueError, match="data.image_size"):
        data.load_dataset(data.data_config(num_train=2, image_size=4, resize_method="pad"))
    with pytest.raises(ValueError, match="data.name"):
        data.load_dataset(data.data_config(source="tfds"))
