"""DINOv2 features against Hugging Face ``Dinov2Model`` (random small configs saved with
``save_pretrained``), preprocessing included: raw uint8 images in, CLS features out; and the
checks on weight files and inputs (fast, NumPy-written files, no torch)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from memjax import features
from memjax.features import dinov2, weights
from memjax.features.vit import Dinov2, ViTConfig

TINY = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, image_size=56)


def _numpy_checkpoint(folder, **config):
    """A Dinov2Model directory written with NumPy: config.json + random model.safetensors."""
    from safetensors.numpy import save_file

    cfg = {"model_type": "dinov2", **TINY, **config}
    shapes = weights.expected_shapes(
        Dinov2, ViTConfig(**{k: v for k, v in cfg.items() if k != "model_type"}))
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    save_file({k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    return cfg


def _hf_model(tmp_path, **config):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(**{**TINY, **config}, initializer_range=0.1)
    model = transformers.Dinov2Model(cfg).eval()
    with torch.no_grad():  # layer norms, layer scales, biases away from their 1 / 0 init
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    return model


def _reference(path, images, resize=256, crop=224) -> np.ndarray:
    """HF's BitImageProcessor (facebook/dinov2 settings) on the float images, then the model."""
    from memjax.features import _torch_reference

    return _torch_reference.dinov2_reference(path, resize=resize, crop=crop)(images)


def _memjax(extractor, images):
    x = np.asarray(images, np.float32) / 255.0
    return np.asarray(jax.jit(extractor.forward)(extractor.variables, x))


@pytest.mark.interop
@pytest.mark.parametrize("image_size, shape", [
    (518, (3, 40, 48, 3)),   # published grid 37 x 37, shrunk to 16 x 16; non-square input
    (56, (2, 32, 32, 3)),    # grid 4 x 4, enlarged to 16 x 16
])
def test_dinov2_matches_transformers(tmp_path, image_size, shape):
    _hf_model(tmp_path, image_size=image_size)
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ref = _reference(tmp_path, images)
    raw = dinov2.load(tmp_path, normalized=False)
    assert (raw.name, raw.dim, raw.normalized) == ("dinov2-d48x2p14", 48, False)
    np.testing.assert_allclose(_memjax(raw, images), ref, atol=1e-4, rtol=0)
    unit = dinov2.load(tmp_path)
    np.testing.assert_allclose(_memjax(unit, images),
                               ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5, rtol=0)


def _facebook_names(sd, depth):
    """A transformers state dict in the facebookresearch/dinov2 naming (fused q|k|v, and
    gate|up for SwiGLU), as its torch hub ``.pth`` files have it."""
    import torch

    fb = {"cls_token": sd["embeddings.cls_token"], "pos_embed": sd["embeddings.position_embeddings"],
          "mask_token": sd["embeddings.mask_token"]}
    fb["patch_embed.proj.weight"] = sd["embeddings.patch_embeddings.projection.weight"]
    fb["patch_embed.proj.bias"] = sd["embeddings.patch_embeddings.projection.bias"]
    fb["norm.weight"], fb["norm.bias"] = sd["layernorm.weight"], sd["layernorm.bias"]
    for i in range(depth):
        h, f = f"encoder.layer.{i}.", f"blocks.{i}."
        for leaf in ("weight", "bias"):
            fb[f + "attn.qkv." + leaf] = torch.cat([sd[h + f"attention.{p}_proj.{leaf}"]
                                                    for p in "qkv"])
            fb[f + "attn.proj." + leaf] = sd[h + "attention.o_proj." + leaf]
            if h + "mlp.gate_proj." + leaf in sd:
                fb[f + "mlp.w12." + leaf] = torch.cat([sd[h + "mlp.gate_proj." + leaf],
                                                       sd[h + "mlp.up_proj." + leaf]])
                fb[f + "mlp.w3." + leaf] = sd[h + "mlp.down_proj." + leaf]
            else:
                fb[f + "mlp.fc1." + leaf] = sd[h + "mlp.fc1." + leaf]
                fb[f + "mlp.fc2." + leaf] = sd[h + "mlp.fc2." + leaf]
            fb[f + "norm1." + leaf], fb[f + "norm2." + leaf] = sd[h + "norm1." + leaf], sd[h + "norm2." + leaf]
        fb[f + "ls1.gamma"], fb[f + "ls2.gamma"] = (sd[h + "layer_scale1.lambda1"],
                                                    sd[h + "layer_scale2.lambda1"])
    return {k: v.contiguous() for k, v in fb.items()}


@pytest.mark.interop
def test_dinov2_convert_facebookresearch_pth(tmp_path):
    """The torch hub ``.pth`` layout through ``python -m memjax.features.convert dinov2`` (a
    published width, 384, so the bare file needs no arch), then ``features.load``."""
    torch = pytest.importorskip("torch")
    from memjax.features import convert

    model = _hf_model(tmp_path / "hf", hidden_size=384, num_attention_heads=6, num_hidden_layers=1)
    src, dst = tmp_path / "dinov2_vits14_pretrain.pth", tmp_path / "dinov2.safetensors"
    torch.save(_facebook_names(model.state_dict(), depth=1), src)
    assert convert.main(["dinov2", str(src), str(dst)]) == 0
    images = np.random.default_rng(2).integers(0, 256, (2, 30, 36, 3), dtype=np.uint8)
    ref = _reference(tmp_path / "hf", images, resize=28, crop=28)
    ex = features.load(f"dinov2:{dst}", resize=28, crop=28, normalized=False)
    assert (ex.name, ex.dim) == ("dinov2-d384x1p14", 384)
    np.testing.assert_allclose(ex(images), ref, atol=1e-4, rtol=0)


@pytest.mark.interop
def test_dinov2_swiglu_and_key_layouts(tmp_path):
    """SwiGLU (ViT-g's MLP), the facebookresearch key layout, and no config.json (arch=...)."""
    pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = _hf_model(tmp_path, image_size=56, use_swiglu_ffn=True)
    images = np.random.default_rng(1).integers(0, 256, (2, 30, 30, 3), dtype=np.uint8)
    ref = _reference(tmp_path, images, resize=28, crop=28)
    got = _memjax(dinov2.load(tmp_path, normalized=False, resize=28, crop=28), images)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)

    # The same weights in the original facebookresearch naming, as a bare .safetensors file.
    fb = _facebook_names(model.state_dict(), depth=2)
    file = tmp_path / "fb" / "dinov2.safetensors"
    file.parent.mkdir()
    safetensors_torch.save_file({k: v.contiguous() for k, v in fb.items()}, str(file))
    # hidden 48 is no published size: the head count comes from the closest arch given
    with pytest.raises(ValueError, match="not a published DINOv2 size"):
        dinov2.load(file)
    cfg, tensors = dinov2.read_checkpoint(file, arch="vits14")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.image_size, cfg.use_swiglu_ffn) == (48, 2, 56, True)
    hf_cfg, hf_tensors = dinov2.read_checkpoint(tmp_path)
    assert set(tensors) == set(hf_tensors)  # mask_token included (the loader ignores it)
    for k in tensors:
        np.testing.assert_array_equal(tensors[k], hf_tensors[k])


def test_dinov2_bad_weights(tmp_path):
    cfg = _numpy_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="path: no such file or directory .*missing"):
        dinov2.load(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": 96}))
    with pytest.raises(ValueError, match=r"does not hold DINOv2 weights: .*shape mismatches.*"
                                         r"embeddings.cls_token: file \(1, 1, 48\) vs model "
                                         r"\(1, 1, 96\)"):
        dinov2.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(ValueError, match=r"DINOv2 weights: \d+ missing keys .*encoder.layer.2"):
        dinov2.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1}))
    with pytest.raises(ValueError, match=r"DINOv2 weights: \d+ unexpected keys .*encoder.layer.1"):
        dinov2.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "vit"}))
    with pytest.raises(ValueError, match="model_type 'vit'"):
        dinov2.load(tmp_path)
    (tmp_path / "config.json").unlink()  # shapes from the weights; 48 is no published width
    with pytest.raises(ValueError, match="hidden size 48 is not a published DINOv2 size"):
        dinov2.load(tmp_path)
    with pytest.raises(ValueError, match="precision: expected one of"):
        dinov2.load(tmp_path, precision="float64")
    with pytest.raises(ValueError, match="arch: expected one of"):
        dinov2.load(tmp_path, arch="vit-tiny")
    with pytest.raises(ValueError, match="junk.safetensors.*not a readable safetensors"):
        (tmp_path / "junk.safetensors").write_bytes(b"junk")
        dinov2.load(tmp_path / "junk.safetensors")


def test_dinov2_loads_and_checks_images(tmp_path):
    _numpy_checkpoint(tmp_path)
    extractor = dinov2.load(tmp_path, resize=None, crop=None)
    assert (extractor.name, extractor.dim, extractor.normalized) == ("dinov2-d48x2p14", 48, True)
    x = np.random.default_rng(0).uniform(size=(2, 28, 42, 3)).astype(np.float32)
    f = _memjax(extractor, x * 255.0)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="images: expected at least 14 pixels per side"):
        extractor.apply(x[:, :10])
    with pytest.raises(ValueError, match="images: expected at least 224 x 224 pixels before the"):
        dinov2.load(tmp_path, resize=None).apply(x)


def test_dinov2_key_layouts_closed_form():
    """save_pretrained's and facebookresearch's names map to the current transformers layout;
    fused q|k|v and gate|up tensors split along rows."""
    w = np.arange(18.0).reshape(6, 3)
    old = dinov2.convert_keys({"dinov2.encoder.layer.1.attention.attention.query.weight": w,
                                 "encoder.layer.1.attention.output.dense.bias": w[0],
                                 "encoder.layer.1.mlp.weights_in.weight": w,
                                 "encoder.layer.1.mlp.weights_out.bias": w[0]})
    assert sorted(old) == ["encoder.layer.1.attention.o_proj.bias",
                           "encoder.layer.1.attention.q_proj.weight",
                           "encoder.layer.1.mlp.down_proj.bias",
                           "encoder.layer.1.mlp.gate_proj.weight", "encoder.layer.1.mlp.up_proj.weight"]
    np.testing.assert_array_equal(old["encoder.layer.1.mlp.up_proj.weight"], w[3:])
    fb = dinov2.convert_keys({"cls_token": w[:1], "blocks.0.attn.qkv.weight": w,
                                "blocks.0.ls2.gamma": w[0], "norm.bias": w[0]})
    assert sorted(fb) == ["embeddings.cls_token", "encoder.layer.0.attention.k_proj.weight",
                          "encoder.layer.0.attention.q_proj.weight",
                          "encoder.layer.0.attention.v_proj.weight",
                          "encoder.layer.0.layer_scale2.lambda1", "layernorm.bias"]
    np.testing.assert_array_equal(fb["encoder.layer.0.attention.k_proj.weight"], w[2:4])
