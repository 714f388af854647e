"""Tests for memjax.models: the score U-Net, the ResNet classifiers and their configs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memjax import scores
from memjax.models import (ResNet, UNet, create_unet, layers, resnet18, resnet34, unet_config,
                           validate_model_config)
from memjax.sde import VPSDE


def tiny_unet(image_size, channels=1, **kw):
    args = dict(image_size=image_size, channels=channels, base_channels=4, channel_mults=(1, 2),
                num_res_blocks=1, attn_resolutions=(), dropout=0.0)
    args.update(kw)
    return UNet(**args, rngs=nnx.Rngs(0))


@nnx.jit
def _apply(model, x, t, y, key):
    return model(x, t, y, key=key)


@nnx.jit
def _out_and_grads(model, x, t, y):
    def f(m):
        return jnp.mean(m(x, t, y) ** 2)
    out = model(x, t, y)
    return out, nnx.grad(f)(model)


def _leaves(state):
    return jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(state))


# -- U-Net -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,kw", [
    (8, dict(attn_resolutions=(4,), embedding="fourier", num_classes=3)),
    pytest.param(16, dict(attn_resolutions=(8,)), marks=pytest.mark.slow),
    # padded to 32 (padding itself: test_unet_padding_keeps_images_independent_... stays fast)
    pytest.param(28, dict(channel_mults=(1, 1, 1, 1), attn_resolutions=(8,), channels=1),
                 marks=pytest.mark.slow),
    pytest.param(32, dict(channels=3, attn_resolutions=(16,), parameterization="x0"),
                 marks=pytest.mark.slow),
    pytest.param(64, dict(channels=3, channel_mults=(1, 2, 2), attn_resolutions=(16,)),
                 marks=pytest.mark.slow),
])
def test_unet_shapes_and_gradients(size, kw):
    model = tiny_unet(size, **kw)
    c = model.channels
    x = jax.random.normal(jax.random.key(0), (2, size, size, c))
    t = jnp.array([0.01, 0.9])
    y = jnp.array([0, 3]) if model.num_classes else None
    out, grads = _out_and_grads(model, x, t, y)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()
    leaves = _leaves(grads)
    assert leaves
    for path, g in leaves:
        g = np.asarray(g)
        assert np.isfinite(g).all(), path
        if "class_embed" in jax.tree_util.keystr(path):
            # only the rows of the labels used (0 and the null label 3) receive gradient
            assert np.abs(g[[0, 3]]).sum() > 0 and np.abs(g[[1, 2]]).sum() == 0
        else:
            assert np.abs(g).sum() > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"
    # the fixed Fourier frequencies are state but not trainable parameters
    if kw.get("embedding") == "fourier":
        assert "W" in str(nnx.state(model, layers.Constant))
        assert "W" not in str(nnx.state(model, nnx.Param))


def test_unet_padding_keeps_images_independent_and_output_depends_on_time():
    model = tiny_unet(28, channel_mults=(1, 1, 1, 1))
    assert model.padded_hw == (32, 32)
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
    out = _apply(model, x, jnp.array([0.1, 0.1, 0.7]), None, None)
    single = _apply(model, x[:1], jnp.array([0.1]), None, None)
    np.testing.assert_allclose(np.asarray(out[:1]), np.asarray(single), atol=1e-5)
    out2 = _apply(model, x, jnp.array([0.1, 0.1, 0.1]), None, None)
    assert not np.allclose(np.asarray(out[2]), np.asarray(out2[2]))  # time enters


def test_unet_dropout_on_in_train_off_in_eval():
    model = tiny_unet(8, dropout=0.5, attn_resolutions=(4,))
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    t = jnp.array([0.3, 0.6])
    k1, k2 = jax.random.key(1), jax.random.key(2)
    model.eval()
    e1, e2 = _apply(model, x, t, None, k1), _apply(model, x, t, None, k2)
    np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))
    model.train()
    a1, a2, a1b = (_apply(model, x, t, None, k) for k in (k1, k2, k1))
    assert not np.allclose(np.asarray(a1), np.asarray(a2))
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(a1b))  # a pure function of the key
    assert not np.allclose(np.asarray(a1), np.asarray(e1))
    # without a key, the model's own dropout stream is used and advanced
    n1, n2 = _apply(model, x, t, None, None), _apply(model, x, t, None, None)
    assert not np.allclose(np.asarray(n1), np.asarray(n2))


def test_unet_class_conditioning_and_null_label():
    model = tiny_unet(8, num_classes=4)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    t = jnp.array([0.2, 0.2])
    null = _apply(model, x, t, jnp.array([4, 4]), None)
    np.testing.assert_array_equal(np.asarray(null), np.asarray(_apply(model, x, t, None, None)))
    y0 = _apply(model, x, t, jnp.array([0, 0]), None)
    y1 = _apply(model, x, t, jnp.array([1, 1]), None)
    assert not np.allclose(np.asarray(y0), np.asarray(y1))
    assert not np.allclose(np.asarray(y0), np.asarray(null))
    with pytest.raises(ValueError, match="y"):
        model(x, t, jnp.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="y"):
        tiny_unet(8)(x, t, jnp.array([0, 1]))


def test_unet_input_validation():
    model = tiny_unet(8)
    with pytest.raises(ValueError, match="x"):
        model(jnp.zeros((2, 8, 8, 3)), jnp.zeros(2))
    with pytest.raises(ValueError, match="t"):
        model(jnp.zeros((2, 8, 8, 1)), jnp.zeros(3))


def test_create_unet_from_config_and_score_fn():
    cfg = unet_config(image_size=8, channels=1, base_channels=4, channel_mults=(1, 2),
                      num_res_blocks=1, attn_resolutions=(4,), parameterization="x0", dropout=0.0)
    model = create_unet(cfg, rngs=nnx.Rngs(0))
    assert isinstance(model, UNet) and model.parameterization == "x0"
    model.eval()
    sde = VPSDE()
    score_fn = scores.from_model(model, sde, parameterization=model.parameterization)
    x = jax.random.normal(jax.random.key(0), (8, 8, 1))
    s = score_fn(x, 0.5)
    x0_hat = model(x[None], jnp.array([0.5]))[0]
    np.testing.assert_allclose(np.asarray(s), np.asarray(scores.x0_to_score(x0_hat, x, 0.5, sde)),
                               rtol=1e-5, atol=1e-5)


def test_default_config_is_valid_and_documented():
    cfg = unet_config()
    validate_model_config(cfg)
    import memjax.models.config as config_lib
    for field in cfg.keys():
        assert field in config_lib.__doc__, field


@pytest.mark.parametrize("overrides,field", [
    (dict(image_size=8, attn_resolutions=(5,), channel_mults=(1, 2)), "model.attn_resolutions"),
    (dict(channel_mults=()), "model.channel_mults"),
    (dict(channel_mults=(1, 0)), "model.channel_mults"),
    (dict(image_size=0), "model.image_size"),
    (dict(image_size=4, channel_mults=(1, 1, 1, 1)), "model.image_size"),
    (dict(image_size="32"), "model.image_size"),
    (dict(dropout=1.0), "model.dropout"),
    (dict(parameterization="v"), "model.parameterization"),
    (dict(embedding="learned"), "model.embedding"),
    (dict(num_heads=3), "model.num_heads"),
    (dict(num_classes=0), "model.num_classes"),
    (dict(num_res_blocks=0), "model.num_res_blocks"),
    (dict(base_channels=2.5), "model.base_channels"),
])
def test_invalid_model_configs_name_the_field(overrides, field):
    cfg = unet_config(**overrides)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        validate_model_config(cfg)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        create_unet(cfg, rngs=nnx.Rngs(0))


def test_unknown_and_missing_model_fields():
    with pytest.raises(ValueError, match=r"model\.widths"):
        unet_config(widths=3)
    cfg = unet_config()
    cfg["extra"] = 1
    with pytest.raises(ValueError, match=r"model\.extra"):
        validate_model_config(cfg)
    d = unet_config().to_dict()
    del d["dropout"]
    with pytest.raises(ValueError, match=r"model\.dropout"):
        validate_model_config(d)
    # resolutions refer to the padded maps: 28 px with 4 levels works at 32, 16, 8, 4
    validate_model_config(unet_config(image_size=28, channel_mults=(1, 2, 2, 2),
                                      attn_resolutions=(16,)))
    with pytest.raises(ValueError, match=r"\(32, 16, 8, 4\)"):
        validate_model_config(unet_config(image_size=28, channel_mults=(1, 2, 2, 2),
                                          attn_resolutions=(14,)))


# -- ResNet ----------------------------------------------------------------------------------------
def tiny_resnet(time_dependent=False, **kw):
    args = dict(num_classes=5, in_channels=1, stage_sizes=(1, 1), width=4,
                time_dependent=time_dependent, time_embed_dim=8)
    args.update(kw)
    return ResNet(**args, rngs=nnx.Rngs(0))


@nnx.jit
def _resnet_out_grads(model, x, t):
    def f(m):
        return jnp.mean(jax.nn.log_softmax(m(x, t))[:, 0])
    return model(x, t), model.features(x, t), nnx.grad(f)(model)


@pytest.mark.parametrize("time_dependent", [False, True])
@pytest.mark.parametrize("size,stem", [
    (8, "cifar"),
    pytest.param(32, "cifar", marks=pytest.mark.slow),
    pytest.param(64, "imagenet", marks=pytest.mark.slow),
])
def test_resnet_shapes_and_gradients(time_dependent, size, stem):
    model = tiny_resnet(time_dependent, stem=stem)
    model.train()
    x = jax.random.normal(jax.random.key(0), (4, size, size, 1))
    t = jnp.linspace(0.1, 0.9, 4) if time_dependent else None
    logits, feats, grads = _resnet_out_grads(model, x, t)
    assert logits.shape == (4, 5) and feats.shape == (4, model.feature_dim) == (4, 8)
    for path, g in _leaves(grads):
        assert np.isfinite(np.asarray(g)).all(), path
    names = {jax.tree_util.keystr(p) for p, _ in _leaves(grads)}
    assert any("time_module" in n for n in names) == time_dependent
    # the zero-initialised time modules still receive gradient
    if time_dependent:
        g = grads.blocks[0].time_module.proj.kernel[...]
        assert np.abs(np.asarray(g)).sum() > 0


def test_resnet_batchnorm_state_updates_only_in_train_mode():
    model = tiny_resnet()
    x = 3.0 + jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    mean0 = np.asarray(model.bn_stem.mean[...]).copy()
    model.eval()
    out_eval = _resnet_out_grads(model, x, None)[0]
    np.testing.assert_array_equal(np.asarray(model.bn_stem.mean[...]), mean0)
    # in eval mode each example's logits do not depend on the rest of the batch
    np.testing.assert_allclose(np.asarray(_resnet_out_grads(model, x[:1], None)[0]),
                               np.asarray(out_eval[:1]), atol=1e-5)
    model.train()
    _resnet_out_grads(model, x, None)
    assert not np.allclose(np.asarray(model.bn_stem.mean[...]), mean0)


def test_time_module_directly_after_first_batchnorm(monkeypatch):
    model = tiny_resnet(time_dependent=True)
    blocks = [m for _, m in nnx.iter_modules(model) if isinstance(m, layers.BasicBlock)]
    assert len(blocks) == 2
    for block in blocks:
        assert isinstance(block.bn1, nnx.BatchNorm)
        assert isinstance(block.time_module, layers.TimeModule)
    # Record the call sequence: each time module must consume exactly its block's bn1 output.
    calls = []
    bn_call, tm_call = nnx.BatchNorm.__call__, layers.TimeModule.__call__

    def bn_spy(self, x, *a, **k):
        out = bn_call(self, x, *a, **k)
        calls.append(("bn", self, out))
        return out

    def tm_spy(self, x, temb):
        calls.append(("tm", self, x))
        return tm_call(self, x, temb)

    monkeypatch.setattr(nnx.BatchNorm, "__call__", bn_spy)
    monkeypatch.setattr(layers.TimeModule, "__call__", tm_spy)
    model.eval()
    model(jax.random.normal(jax.random.key(0), (2, 8, 8, 1)), jnp.array([0.2, 0.8]))
    for block in blocks:
        i = next(i for i, c in enumerate(calls) if c[1] is block.bn1)
        kind, module, x_in = calls[i + 1]
        assert kind == "tm" and module is block.time_module
        np.testing.assert_array_equal(np.asarray(x_in), np.asarray(calls[i][2]))
    # a time-independent ResNet has no time modules
    assert not any(isinstance(m, layers.TimeModule) for _, m in nnx.iter_modules(tiny_resnet()))


def test_time_dependent_resnet_uses_time():
    model = tiny_resnet(time_dependent=True)
    model.eval()
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    # zero-initialised time modules: at init the output does not depend on t ...
    a = _resnet_out_grads(model, x, jnp.array([0.1, 0.1]))[0]
    b = _resnet_out_grads(model, x, jnp.array([0.9, 0.9]))[0]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    # ... and once the modules are non-zero it does
    for blk in model.blocks:
        blk.time_module.proj.kernel[...] = 0.1 * jax.random.normal(
            jax.random.key(1), blk.time_module.proj.kernel.shape)
    a = _resnet_out_grads(model, x, jnp.array([0.1, 0.1]))[0]
    b = _resnet_out_grads(model, x, jnp.array([0.9, 0.9]))[0]
    assert not np.allclose(np.asarray(a), np.asarray(b))


def test_resnet_depths_and_validation():
    # abstract construction (shapes only): no initialiser runs
    r18 = nnx.eval_shape(lambda: resnet18(num_classes=10, width=4, rngs=nnx.Rngs(0)))
    r34 = nnx.eval_shape(lambda: resnet34(num_classes=10, width=4, time_dependent=True,
                                          time_embed_dim=8, rngs=nnx.Rngs(0)))
    assert r34.blocks[-1].conv2.kernel.shape == (3, 3, 32, 32)
    count = lambda m, cls: sum(isinstance(x, cls) for _, x in nnx.iter_modules(m))  # noqa: E731
    assert count(r18, layers.BasicBlock) == 8 and count(r18, layers.TimeModule) == 0
    assert count(r34, layers.BasicBlock) == 16 and count(r34, layers.TimeModule) == 16
    # conv layers: stem + 2 per block + 3 projection shortcuts, plus the linear head = 18 / 34
    assert count(r18, nnx.Conv) - 3 + 1 == 18 and count(r34, nnx.Conv) - 3 + 1 == 34
    with pytest.raises(ValueError, match="stem"):
        tiny_resnet(stem="vit")
    with pytest.raises(ValueError, match="stage_sizes"):
        tiny_resnet(stage_sizes=())
    with pytest.raises(ValueError, match="t"):
        tiny_resnet(time_dependent=True)(jnp.zeros((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="t"):
        tiny_resnet()(jnp.zeros((2, 8, 8, 1)), jnp.zeros(2))
    with pytest.raises(ValueError, match="x"):
        tiny_resnet()(jnp.zeros((2, 8, 8, 3)))
