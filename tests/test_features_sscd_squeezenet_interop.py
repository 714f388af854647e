"""memjax's SSCD and SqueezeNet against the PyTorch originals (randomly initialised).

Each reference network is saved in its native format (TorchScript / ``.pth`` state dict),
converted with ``python -m memjax.features.convert`` (its ``main``), loaded by
:func:`memjax.features.load` and run on the same raw uint8 images as the reference pipeline
``ToDtype(float32, scale=True) -> Resize(antialias=True) [-> CenterCrop] -> Normalize`` in
torchvision's tensor transforms: features agree to 1e-4 (max abs, float32).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytest.importorskip("safetensors")

from torchvision.transforms import v2  # noqa: E402

from memjax import features  # noqa: E402
from memjax.features import _torch_reference, convert, preprocess  # noqa: E402

pytestmark = [pytest.mark.interop,
              pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")]
NORMALIZE = v2.Normalize(preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD)


def _images(n, h, w, seed=0):
    """Smooth-ish uint8 images (a random low-resolution pattern upsampled, plus noise)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (n, 8, 8, 3))
    x = np.kron(base, np.ones((1, h // 8 + 1, w // 8 + 1, 1)))[:, :h, :w]
    return np.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype(np.uint8)


def _reference(model, transform, images):
    return _torch_reference.torchvision_reference(model, transform)(images)


@pytest.mark.parametrize("shape", [(64, 64), (60, 44), (517, 389)])
def test_resize_matches_torchvision(shape):
    h, w = shape
    x = _images(2, h, w, seed=h)
    tx = v2.ToDtype(torch.float32, scale=True)(torch.from_numpy(x).permute(0, 3, 1, 2))
    modes = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC}
    for size in (288, 20):  # up- and downscaling
        for method, antialias in (("bilinear", True), ("bicubic", True), ("bilinear", False)):
            ref = v2.Resize(size, interpolation=modes[method], antialias=antialias)(tx)
            ours = preprocess.resize_shorter(x.astype(np.float32) / 255.0, size, method=method,
                                             antialias=antialias)
            np.testing.assert_allclose(np.asarray(ours), ref.permute(0, 2, 3, 1).numpy(),
                                       atol=1e-4, rtol=0, err_msg=f"{method} {antialias} {size}")


def test_resize_gap_to_uint8_pipeline_is_one_grey_level():
    """torchvision on uint8 tensors rounds each resize pass to integers; memjax does not."""
    x = _images(2, 64, 48)
    ref = v2.Resize(288, antialias=True)(torch.from_numpy(x).permute(0, 3, 1, 2))
    ours = np.asarray(preprocess.resize_shorter(x.astype(np.float32), 288))
    gap = np.abs(ours - ref.permute(0, 2, 3, 1).numpy().astype(np.float32))
    assert gap.max() <= 1.0 + 1e-3


def test_center_crop_matches_torchvision():
    x = _images(1, 61, 50)
    ref = v2.CenterCrop(33)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(np.asarray(preprocess.center_crop(x, 33)), ref)


@pytest.mark.parametrize("native", ["torchscript", "state_dict"])
def test_sscd_matches_reference(tmp_path, native):
    model = _torch_reference.sscd_model(seed=0)
    src = tmp_path / "sscd.pt"
    if native == "torchscript":
        torch.jit.script(model).save(str(src))
    else:
        torch.save(model.state_dict(), src)
    dst = tmp_path / "sscd.safetensors"
    assert convert.main(["sscd", str(src), str(dst)]) == 0
    images = _images(2, 48, 64)  # non-square: the shorter side goes to 288, aspect kept
    ref = _reference(model, v2.Compose([v2.Resize(288, antialias=True), NORMALIZE]), images)
    ex = features.load(f"sscd:{dst}")
    ours = ex(images, batch_size=2)
    assert ex.name == "sscd-resnet50" and ex.normalized and ours.shape == (2, 512)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert np.abs(ref[0] - ref[1]).max() > 1e-3  # the images have distinct features (10x atol)


def test_squeezenet_matches_reference(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1(weights=None).eval()
    with torch.no_grad():  # logits of order one rather than 1e-2 (final conv init std 0.01)
        model.classifier[1].weight.mul_(30.0)
        model.classifier[1].bias.normal_(0.0, 0.1)
    src, dst = tmp_path / "squeezenet.pth", tmp_path / "squeezenet.safetensors"
    torch.save(model.state_dict(), src)
    assert convert.main(["squeezenet", str(src), str(dst)]) == 0
    images = _images(3, 64, 64, seed=1)
    transform = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), NORMALIZE])
    ref = _reference(model, transform, images)
    ex = features.load("squeezenet", dst)
    ours = ex(images, batch_size=2)  # 3 images in chunks of 2: padding dropped
    assert ex.name == "squeezenet1_1" and ours.shape == (3, 1000)
    assert ref.std() > 0.05
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_convert_rejects_another_architecture(tmp_path):
    torch.manual_seed(0)
    src, dst = tmp_path / "squeezenet.pth", tmp_path / "out.safetensors"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), src)
    with pytest.raises(ValueError, match="sscd resnet50.*missing keys"):
        convert.main(["sscd", str(src), str(dst)])


def _classy_names(state):
    """SSCD's classy-vision layout (its TorchScript / ``.classy.pt`` files) of a torchvision
    state dict: ``backbone.initial_block._module.{0,1}``, ``backbone.blocks.I.J._module.
    convolutional_block.{0,1,3,4,6}`` / ``.bn`` / ``.downsample``, projection ``embeddings.1``."""
    conv_block = {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4", "conv3": "6"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")[1:]  # drop "backbone."
        if parts[0] in ("conv1", "bn1"):
            new = ["initial_block", "_module", "0" if parts[0] == "conv1" else "1"] + parts[1:]
        elif parts[0] == "fc":
            new = ["embeddings", "1"] + parts[1:]
        else:
            i, j, layer = int(parts[0][5:]) - 1, parts[1], parts[2]
            head = ["blocks", str(i), j, "_module"]
            if layer in conv_block:
                new = head + ["convolutional_block", conv_block[layer]] + parts[3:]
            else:
                new = head + (["bn"] if layer == "bn3" else [layer]) + parts[3:]
        out[("" if new[0] == "embeddings" else "backbone.") + ".".join(new)] = value
    return out


def test_sscd_classy_layout_and_resnext(tmp_path):
    """The classy-vision names convert to the same network; ResNeXt-101 32x4d (disc_large)
    is read from the file (grouped 3x3 convolutions). Small resize (96) to keep CPU cost low."""
    model = _torch_reference.sscd_model(seed=1)
    src, dst = tmp_path / "sscd.classy.pt", tmp_path / "classy.safetensors"
    torch.save(_classy_names(model.state_dict()), src)
    convert.main(["sscd", str(src), str(dst)])
    images = _images(2, 64, 64, seed=2)
    transform = v2.Compose([v2.Resize(96, antialias=True), NORMALIZE])
    np.testing.assert_allclose(features.load(f"sscd:{dst}", size=96)(images),
                               _reference(model, transform, images), atol=1e-4, rtol=0)

    model = _torch_reference.sscd_model((3, 4, 23, 3), groups=32, width_per_group=4, dim=1024,
                                        seed=1)
    src, dst = tmp_path / "large.pth", tmp_path / "large.safetensors"
    torch.save(model.state_dict(), src)
    convert.main(["sscd", str(src), str(dst)])
    ex = features.load(f"sscd:{dst}", size=96)
    assert ex.name == "sscd-resnext101" and ex.dim == 1024
    np.testing.assert_allclose(ex(images), _reference(model, transform, images), atol=1e-4,
                               rtol=0)
