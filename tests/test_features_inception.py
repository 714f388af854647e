"""FID Inception-v3 against pytorch-fid's ``InceptionV3([3], use_fid_inception=True)`` with random
weights (nothing downloaded), preprocessing included: raw uint8 images in, pool3 features out;
and the checks on weight files (fast, NumPy-written files, no torch)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from memjax import features
from memjax.features import inception, preprocess, weights


@pytest.fixture(scope="module")  # used by the interop tests only
def reference(tmp_path_factory):
    """``(pytorch-fid InceptionV3, pt_inception-named file, InceptionV3-named file)``, random
    weights built offline by pytorch-fid's own code (:mod:`memjax.features._torch_reference`);
    the pt_inception file is its native ``.pth`` through ``python -m memjax.features.convert``
    (the ``fc.*`` classifier and BatchNorm counters included: the loader ignores them)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    pytest.importorskip("pytorch_fid")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from memjax.features import _torch_reference, convert

    state = _torch_reference.random_inception_state(0)
    assert "fc.weight" in state and "Mixed_7c.branch_pool.bn.num_batches_tracked" in state
    model = _torch_reference.pytorch_fid_model(state)
    folder = tmp_path_factory.mktemp("inception")
    pt_file, blocks_file = folder / "pt_inception.safetensors", folder / "blocks.safetensors"
    torch.save(state, folder / "pt_inception-2015-12-05.pth")
    assert convert.main(["inception", str(folder / "pt_inception-2015-12-05.pth"), str(pt_file)]) == 0
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(blocks_file))
    return model, pt_file, blocks_file


@pytest.mark.interop
def test_inception_matches_pytorch_fid(reference):
    from memjax.features import _torch_reference

    _, pt_file, _ = reference
    images = np.random.default_rng(0).integers(0, 256, (2, 48, 40, 3), dtype=np.uint8)
    ref = _torch_reference.inception_reference(pt_file)(images)
    extractor = features.load(f"inception:{pt_file}")
    assert (extractor.name, extractor.dim, extractor.normalized) == ("inception-fid", 2048, False)
    got = jax.jit(extractor.forward)(extractor.variables, images.astype(np.float32) / 255.0)
    assert float(np.abs(ref).max()) > 0.1  # a non-degenerate network
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4, rtol=0)


@pytest.mark.interop
def test_inception_module_state_dict_names(reference):
    """The ``InceptionV3`` wrapper's ``blocks.i.j.*`` keys load to the same weights."""
    _, pt_file, blocks_file = reference
    a = jax.tree_util.tree_leaves(inception.load(pt_file).variables)
    b = jax.tree_util.tree_leaves(inception.load(blocks_file).variables)
    assert len(a) == len(b) == 94 * 5  # 94 BasicConv2d: kernel + BN scale, bias, mean, var
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_inception_bad_weights(tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(ValueError, match="no weight file at .*missing.safetensors"):
        inception.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors.*not a readable safetensors"):
        inception.load(tmp_path / "junk.safetensors")
    save_file({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, str(tmp_path / "resnet.safetensors"))
    with pytest.raises(ValueError, match=r"resnet.safetensors.*does not hold FID Inception-v3 "
                                         r"weights: 470 missing keys.*1 unexpected keys.*conv1"):
        inception.load(tmp_path / "resnet.safetensors")
    shapes = weights.expected_shapes(inception.FIDInceptionV3)
    assert len(shapes) == 94 * 5 and shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    small = {k: np.zeros((1,) * len(v), np.float32) for k, v in shapes.items()}
    save_file({**small, "fc.weight": np.zeros((1008, 2048), np.float32)},  # fc.*: ignored
              str(tmp_path / "small.safetensors"))
    with pytest.raises(ValueError, match=r"small.safetensors.*470 shape mismatches.*"
                                         r"Conv2d_1a_3x3.bn.bias: file \(1,\) vs model \(32,\)"):
        inception.load(tmp_path / "small.safetensors")
    with pytest.raises(ValueError, match="precision: expected one of"):
        inception.load(tmp_path / "small.safetensors", precision="float64")


@pytest.mark.interop
@pytest.mark.parametrize("method, antialias", [("bilinear", False), ("bicubic", False),
                                               ("bicubic", True), ("bilinear", True)])
@pytest.mark.parametrize("size", [(7, 9), (23, 31)])
def test_resize_matches_torch_interpolate(method, antialias, size):
    """The resize matrices reproduce ``F.interpolate(..., align_corners=False)``, shrinking and
    enlarging (the 299 x 299 input of Inception, DINOv2's shorter side and its pos-embed grid)."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).uniform(size=(2, 13, 17, 3)).astype(np.float32)
    with torch.no_grad():
        ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size,
                                              mode=method, align_corners=False, antialias=antialias)
    got = preprocess.resize(x, *size, method=method, antialias=antialias)
    np.testing.assert_allclose(np.asarray(got), ref.permute(0, 2, 3, 1).numpy(), atol=2e-6, rtol=0)
