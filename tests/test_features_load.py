"""features.load: spec parsing, bad files and shapes (ValueError naming the path), the weight
loader's ignore lists, pixels, the batching (padding, devices), max-pooling, center-crop
rounding, the package's exports and its similarity bands per feature space -- no torch needed."""

from __future__ import annotations


import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from memjax import features
from memjax.features import preprocess, resnet, squeezenet, weights


def _random_state(build, seed=0):
    """A random PyTorch-named, PyTorch-shaped state dict for the NNX network ``build()``."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, 0.1, shape).astype(np.float32)
            for k, shape in weights.expected_shapes(build).items()}


@pytest.fixture(scope="module")
def squeezenet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "squeezenet.safetensors"
    save_file(_random_state(squeezenet.SqueezeNet), str(path))
    return path


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown feature network 'vgg'.*'pixels', 'sscd'"):
        features.load("vgg:/tmp/x")
    with pytest.raises(ValueError, match="spec"):
        features.load(3)


def test_missing_file_and_missing_path(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ValueError, match=f"path: no such file.*{missing.name}"):
        features.load(f"sscd:{missing}")
    with pytest.raises(ValueError, match="needs its weights"):
        features.load("squeezenet")
    with pytest.raises(ValueError, match="no weight file.*nope"):
        squeezenet.load(missing)


def test_unreadable_file_names_the_path(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x80\x02not a safetensors file")
    with pytest.raises(ValueError, match=r"model\.pt.*not a readable safetensors.*convert"):
        features.load("squeezenet", bad)


def test_file_for_another_architecture(squeezenet_file):
    with pytest.raises(ValueError, match=rf"{squeezenet_file.name}.*sscd resnet50.*missing keys"
                                         r".*unexpected keys.*classifier\.1"):
        features.load(f"sscd:{squeezenet_file}")


def test_mismatched_shapes_are_named(tmp_path):
    state = _random_state(squeezenet.SqueezeNet)
    state["classifier.1.weight"] = state["classifier.1.weight"][:10]  # a 10-class head
    path = tmp_path / "sq10.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"sq10\.safetensors.*1 shape mismatches.*"
                                         r"classifier\.1\.weight: file \(10, 512, 1, 1\) vs "
                                         r"model \(1000, 512, 1, 1\)"):
        features.load(("squeezenet", path))


def test_spec_forms_and_weights_layout(squeezenet_file):
    a = features.load(f"squeezenet:{squeezenet_file}")
    b = features.load(("squeezenet", squeezenet_file))
    c = features.load("squeezenet", path=squeezenet_file, batch_size=8)
    assert a.name == b.name == c.name == "squeezenet1_1" and c.batch_size == 8 and a.dim == 1000
    kernel = a.variables["features"]["3"]["expand3x3"]["kernel"].get_value()
    from safetensors.numpy import load_file

    torch_w = load_file(str(squeezenet_file))["features.3.expand3x3.weight"]  # [out, in, kh, kw]
    np.testing.assert_array_equal(np.asarray(kernel), np.transpose(torch_w, (2, 3, 1, 0)))


def test_pixels():
    ex = features.load("pixels")
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 3, 1)).astype(np.uint8)
    np.testing.assert_allclose(ex(x, batch_size=2), x.reshape(5, -1) / 127.5 - 1.0, atol=1e-6)
    y = np.random.default_rng(1).uniform(-1, 1, (3, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(ex(y), y.reshape(3, -1), atol=1e-6)  # [-1, 1] passes through
    assert ex.name == "pixels" and not ex.normalized
    with pytest.raises(ValueError, match="pixels"):
        features.load("pixels:/tmp/x")


def test_bad_images_rejected_before_compiling():
    ex = features.load("pixels")
    for bad in (np.zeros((2, 4, 4, 2), np.uint8), np.zeros((4, 4, 3)), np.zeros((2, 4, 4, 3), bool)):
        with pytest.raises(ValueError, match="images"):
            ex(bad)


def test_max_pool_ceil_mode_matches_loops():
    x = np.random.default_rng(0).normal(size=(1, 10, 7, 2)).astype(np.float32)
    out = np.asarray(resnet.max_pool(x, 3, 2, ceil_mode=True))
    # torch's ceil mode: ceil((10 - 3) / 2) + 1 = 5 rows, ceil((7 - 3) / 2) + 1 = 3 columns
    ref = np.array([[[x[0, i:i + 3, j:j + 3, c].max() for c in range(2)]
                     for j in range(0, 5, 2)] for i in range(0, 9, 2)])
    np.testing.assert_array_equal(out[0], ref)
    padded = np.asarray(resnet.max_pool(x, 3, 2, padding=1))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    assert padded.shape == (1, 5, 4, 2) and padded[0, 0, 0, 0] == xp[0, :3, :3, 0].max()


def test_extract_shards_and_pads_like_one_device(on_devices):
    """A weighted extractor on 4 devices, batch 3 (-> chunks of 4), 7 images: equals apply."""
    out = on_devices("""
        import json, numpy as np, jax.numpy as jnp
        from memjax.features.base import FeatureExtractor
        w = np.random.default_rng(0).normal(size=(48, 5)).astype(np.float32)
        fwd = lambda v, x: jnp.tanh(x.reshape(x.shape[0], -1) @ v["w"])
        ex = FeatureExtractor("toy", 5, lambda x: fwd({"w": w}, x), forward=fwd,
                              variables={"w": jnp.asarray(w)})
        x = np.random.default_rng(1).integers(0, 256, (7, 4, 4, 1)).astype(np.uint8)
        got = ex(x, batch_size=3)
        ref = np.tanh(np.repeat(x / 255.0, 3, -1).reshape(7, -1) @ w)  # grey tiled to RGB
        print(json.dumps({"err": float(np.abs(got - ref).max()), "shape": list(got.shape)}))
    """, num_devices=4)
    assert out["shape"] == [7, 5] and out["err"] < 1e-5


class _ConvBN(nnx.Module):
    """A PyTorch-named ``conv`` + ``bn`` pair: the smallest network with every leaf kind."""

    def __init__(self):
        self.conv = resnet.conv(3, 4, 3, bias=True, rngs=nnx.Rngs(0))
        self.bn = resnet.batch_norm(4, rngs=nnx.Rngs(0))


def test_loader_names_layouts_and_ignore_lists(tmp_path):
    shapes = weights.expected_shapes(_ConvBN)
    assert shapes == {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "bn.weight": (4,),
                      "bn.bias": (4,), "bn.running_mean": (4,), "bn.running_var": (4,)}
    state = _random_state(_ConvBN)
    state["bn.num_batches_tracked"] = np.zeros((), np.int64)
    path = tmp_path / "convbn.safetensors"
    save_file(state, str(path))
    # BatchNorm's counter is ignored only when the network declares it
    with pytest.raises(ValueError, match=r"convbn.*1 unexpected keys.*bn\.num_batches_tracked"):
        weights.load_into(_ConvBN, path, what="convbn")
    m = weights.load_into(_ConvBN, path, what="convbn", ignore=weights.BN_COUNTERS)
    np.testing.assert_array_equal(np.asarray(m.conv.kernel.get_value()),
                                  np.transpose(state["conv.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(np.asarray(m.bn.var.get_value()), state["bn.running_var"])
    # an ignore pattern never hides a key the network needs
    del state["bn.bias"]
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"1 missing keys.*bn\.bias"):
        weights.load_into(_ConvBN, path, what="convbn", ignore=("bn.*",))


def test_center_crop_rounding_closed_form():
    x = np.arange(7 * 6, dtype=np.float32).reshape(1, 7, 6, 1)
    # H - size = 3: torchvision rounds 1.5 to 2 (round half to even), Hugging Face floors to 1
    np.testing.assert_array_equal(np.asarray(preprocess.center_crop(x, 4)), x[:, 2:6, 1:5])
    np.testing.assert_array_equal(np.asarray(preprocess.center_crop(x, 4, rounding="floor")),
                                  x[:, 1:5, 1:5])
    with pytest.raises(ValueError, match="rounding"):
        preprocess.center_crop(x, 4, rounding="ceil")
    with pytest.raises(ValueError, match="images: expected at least 8 x 8"):
        preprocess.center_crop(x, 8)


def test_resize_matrices_closed_forms():
    """Rows sum to one; bicubic (a = -3/4) upsampling by 2 has Keys' weights at 1/4, 3/4."""
    for method in preprocess.METHODS:
        for antialias in (True, False):
            for n, m in ((13, 5), (5, 13)):
                w = preprocess.resize_matrix(n, m, method, antialias)
                np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    w = preprocess.resize_matrix(8, 16, "bicubic", False)
    a, t = -0.75, np.array([1.25, 0.25, 0.75, 1.75])  # output 5 samples input 5.5 / 2 - 1/2 = 2.25
    keys = np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    ((a * t - 5 * a) * t + 8 * a) * t - 4 * a)
    np.testing.assert_allclose(w[5, 1:5], keys, atol=1e-12)  # taps 1, 2, 3, 4
    with pytest.raises(ValueError, match="method"):
        preprocess.resize(np.zeros((1, 4, 4, 3)), 2, 2, method="nearest")


def test_exports():
    assert set(features.__all__) >= {"load", "NAMES", "FeatureExtractor", "fid", "statistics",
                                     "save_statistics", "load_statistics", "bands_for"}
    assert all(hasattr(features, n) for n in features.__all__)
    assert features.NAMES == ("pixels", "sscd", "dinov2", "inception", "squeezenet")


def test_bands_belong_to_sscd_features_only(squeezenet_file):
    from memjax.metrics.memorization import BANDS

    for name in ("sscd-resnet50", "sscd-resnext101"):
        assert features.bands_for(name) == BANDS["sscd"]
    high = features.bands_for("sscd-resnet50")["high"]
    assert (high.lo, high.hi, high.closed) == (0.6, 1.0, "both")
    assert features.bands_for("sscd-resnet50")["low"][:2] == (0.4, 0.5)
    for name in ("dinov2-vits14", "inception-fid", "squeezenet1_1", "pixels", "sscd"):
        with pytest.raises(ValueError, match=f"no similarity bands.*{name!r}"):
            features.bands_for(name)
    with pytest.raises(ValueError, match="'squeezenet1_1'"):  # an extractor: its name is used
        features.bands_for(features.load("squeezenet", squeezenet_file))
    with pytest.raises(ValueError, match="feature_name"):
        features.bands_for(None)
