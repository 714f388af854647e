"""DINOv2 features against Hugging Face ``Dinov2Model`` (random small configs saved with
``save_pretrained``), preprocessing included: raw uint8 images in, CLS features out."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from memjax.features import dinov2

pytestmark = pytest.mark.interop

def _hf_model(tmp_path, **config):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                                    initializer_range=0.1, **config)
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
    return np.asarray(jax.jit(lambda f, x: f(x))(extractor.apply, x))


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


def test_dinov2_swiglu_and_key_layouts(tmp_path):
    """SwiGLU (ViT-g's MLP), the facebookresearch key layout, and no config.json (arch=...)."""
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = _hf_model(tmp_path, image_size=56, use_swiglu_ffn=True)
    images = np.random.default_rng(1).integers(0, 256, (2, 30, 30, 3), dtype=np.uint8)
    ref = _reference(tmp_path, images, resize=28, crop=28)
    got = _memjax(dinov2.load(tmp_path, normalized=False, resize=28, crop=28), images)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)

    # The same weights in the original facebookresearch naming, as a bare .safetensors file.
    sd, fb = model.state_dict(), {}
    fb["cls_token"], fb["pos_embed"] = sd["embeddings.cls_token"], sd["embeddings.position_embeddings"]
    fb["patch_embed.proj.weight"] = sd["embeddings.patch_embeddings.projection.weight"]
    fb["patch_embed.proj.bias"] = sd["embeddings.patch_embeddings.projection.bias"]
    fb["norm.weight"], fb["norm.bias"] = sd["layernorm.weight"], sd["layernorm.bias"]
    for i in range(2):
        h, f = f"encoder.layer.{i}.", f"blocks.{i}."
        for leaf in ("weight", "bias"):
            fb[f + "attn.qkv." + leaf] = torch.cat([sd[h + f"attention.{p}_proj.{leaf}"]
                                                    for p in "qkv"])
            fb[f + "attn.proj." + leaf] = sd[h + "attention.o_proj." + leaf]
            fb[f + "mlp.w12." + leaf] = torch.cat([sd[h + "mlp.gate_proj." + leaf],
                                                   sd[h + "mlp.up_proj." + leaf]])
            fb[f + "mlp.w3." + leaf] = sd[h + "mlp.down_proj." + leaf]
            fb[f + "norm1." + leaf], fb[f + "norm2." + leaf] = sd[h + "norm1." + leaf], sd[h + "norm2." + leaf]
        fb[f + "ls1.gamma"], fb[f + "ls2.gamma"] = (sd[h + "layer_scale1.lambda1"],
                                                    sd[h + "layer_scale2.lambda1"])
    file = tmp_path / "fb" / "dinov2.safetensors"
    file.parent.mkdir()
    safetensors_torch.save_file({k: v.contiguous() for k, v in fb.items()}, str(file))
    # hidden 48 is no published size: the head count comes from the closest arch given
    with pytest.raises(ValueError, match="not a published DINOv2 size"):
        dinov2.load(file)
    cfg, tensors = dinov2.read_checkpoint(file, arch="vits14")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.image_size, cfg.use_swiglu_ffn) == (48, 2, 56, True)
    hf_cfg, hf_tensors = dinov2.read_checkpoint(tmp_path)
    assert set(tensors) == set(hf_tensors) - {"embeddings.mask_token"}
    for k in tensors:
        np.testing.assert_array_equal(tensors[k], hf_tensors[k])


def test_dinov2_bad_weights(tmp_path):
    _hf_model(tmp_path, image_size=56)
    with pytest.raises(ValueError, match="no such file or directory"):
        dinov2.load(tmp_path / "missing")
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": 96, "num_attention_heads": 3}))
    with pytest.raises(ValueError, match=r"weight 'embeddings.cls_token' has shape \(1, 1, 48\)"):
        dinov2.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "vit"}))
    with pytest.raises(ValueError, match="model_type 'vit'"):
        dinov2.load(tmp_path)
