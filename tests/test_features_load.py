"""features.load: spec parsing, bad files and shapes (ValueError naming the path), pixels,
the batching (padding, devices), max-pooling -- no torch needed."""

from __future__ import annotations


import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from memjax import features
from memjax.features import resnet, squeezenet, weights


def _random_state(build, seed=0):
    """A random PyTorch-named, PyTorch-shaped state dict for the NNX network ``build()``."""
    rng = np.random.default_rng(seed)
    names = weights.torch_names(nnx.state(nnx.eval_shape(build)))
    return {k: rng.normal(0, 0.1, shape).astype(np.float32) for k, (_, shape) in names.items()}


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
