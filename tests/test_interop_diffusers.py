"""memjax.interop.diffusers against diffusers itself: random UNet2DModels saved with save_pretrained.

The loader reads only config.json + safetensors (no torch); torch and diffusers here are the
reference the port is checked against (extra ``interop``).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import sampling
from memjax.interop import diffusers as mjd
from memjax.schedules import DiscreteVP

pytestmark = pytest.mark.interop
torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# google/ddpm-cifar10-32's config.json, written out (35.7M parameters; paper 001's CIFAR-10 model).
DDPM_CIFAR10 = {
    "_class_name": "UNet2DModel",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}

# Every supported block and option, small enough for many calls.
TINY = {
    "sample_size": 16, "in_channels": 3, "out_channels": 3, "block_out_channels": [16, 32, 32],
    "layers_per_block": 2, "norm_num_groups": 8, "attention_head_dim": 8,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
TINY_VARIANTS = {
    "default": dict(resnet_time_scale_shift="default", downsample_padding=1, flip_sin_to_cos=True,
                    freq_shift=0, norm_eps=1e-5, mid_block_scale_factor=1.5),
    "scale_shift": dict(resnet_time_scale_shift="scale_shift", downsample_padding=0, flip_sin_to_cos=False,
                        freq_shift=1, norm_eps=1e-6, center_input_sample=True, act_fn="silu"),
    "no_mid_attention": dict(add_attention=False, attention_head_dim=None, time_embedding_dim=48),
}


def _random_unet(config: dict, seed: int = 0, jitter: float = 0.05):
    """A diffusers UNet2DModel with random weights (biases and norms perturbed off their init)."""
    torch.manual_seed(seed)
    model = diffusers.UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(jitter * torch.randn_like(p))
    return model


def _save(tmp_path, model, **scheduler_kwargs):
    model.save_pretrained(tmp_path)
    diffusers.DDPMScheduler(**scheduler_kwargs).save_pretrained(tmp_path / "scheduler")
    return str(tmp_path)


def _nhwc(x):
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def _compare(model, pretrained, x, t):
    with torch.no_grad():
        ref = model(x, t).sample.numpy().transpose(0, 2, 3, 1)
    out = np.asarray(jax.jit(lambda a, b: pretrained.model(a, b))(_nhwc(x), jnp.asarray(t.numpy())))
    return float(np.abs(out - ref).max()), float(np.abs(ref).max())


@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
def test_tiny_unet_matches_diffusers(tmp_path, variant):
    config = {**TINY, **TINY_VARIANTS[variant]}
    model = _random_unet(config)
    pre = mjd.load_pretrained(_save(tmp_path, model))
    x = torch.randn(3, 3, 16, 16)
    t = torch.tensor([0.0, 417.5, 999.0])  # fractional labels are embedded as floats by both
    err, scale = _compare(model, pre, x, t)
    assert scale > 0.1 and err < 1e-4, (err, scale)


def test_ddpm_cifar10_architecture_matches_diffusers(tmp_path):
    model = diffusers.UNet2DModel(**{k: v for k, v in DDPM_CIFAR10.items() if not k.startswith("_")}).eval()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(35.7e6, rel=0.01)
    pre = mjd.load_pretrained(_save(tmp_path, model))
    assert pre.prediction_type == "epsilon" and isinstance(pre.schedule, DiscreteVP)
    torch.manual_seed(1)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3.0, 871.0])
    err, scale = _compare(model, pre, x, t)
    assert scale > 0.1 and err < 1e-4, (err, scale)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_discrete_schedule_matches_ddpm_scheduler(kind):
    ref = diffusers.DDPMScheduler(beta_schedule=kind, beta_start=1e-4 if kind == "linear" else 8.5e-4,
                                  beta_end=0.02 if kind == "linear" else 0.012)
    table = DiscreteVP.from_scheduler_config(dict(ref.config))
    abar = ref.alphas_cumprod.numpy()
    assert np.abs(table.alphas_cumprod() - abar).max() < 1e-6
    ts = table.t_from_timestep(jnp.arange(table.num_timesteps))
    assert np.abs(np.asarray(table.alpha(ts)) ** 2 - abar).max() < 1e-6
    assert np.abs(np.asarray(table.variance(ts)) - (1 - abar)).max() < 1e-6


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_50_steps_matches_diffusers(tmp_path, prediction_type):
    """Deterministic DDIM (eta = 0) from the same noise, memjax.sampling.ddim vs DDIMScheduler."""
    config = {**TINY, **TINY_VARIANTS["scale_shift"], "center_input_sample": False, "layers_per_block": 1,
              "sample_size": 8}
    model = _random_unet(config, seed=3)
    pre = mjd.load_pretrained(_save(tmp_path, model, prediction_type=prediction_type))
    assert pre.prediction_type == prediction_type
    sched = diffusers.DDIMScheduler.from_config(pre.scheduler_config, clip_sample=False)
    sched.set_timesteps(50)
    torch.manual_seed(7)
    z = torch.randn(2, 3, 8, 8)
    x = z.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model(x, t).sample, t, x, eta=0.0).prev_sample
    ours = jax.jit(jax.vmap(lambda z0: sampling.ddim(pre.score_fn, pre.schedule, z0, num_steps=50)))(_nhwc(z))
    ref = x.numpy().transpose(0, 2, 3, 1)
    # 1e-3 max abs on O(1) samples. A random eps-network is no denoiser: its x0 estimates
    # (x - sigma eps) / alpha reach |x| ~ 400 (measured 445, error 6.7e-4), so there the bound
    # scales with the sample (1e-5 relative).
    scale = float(np.abs(ref).max())
    err = float(np.abs(np.asarray(ours) - ref).max())
    assert scale > 0.1 and err < 1e-3 * max(1.0, scale / 100), (err, scale)


def test_linear_time_convention_is_paper000s(tmp_path):
    """``time_convention="linear"``: VPSDE(0.1, 20) and the label 999 t, eps -> -eps / sigma."""
    model = _random_unet({**TINY, **TINY_VARIANTS["default"]})
    pre = mjd.load_pretrained(_save(tmp_path, model), time_convention="linear")
    assert (pre.schedule.beta_min, pre.schedule.beta_max) == pytest.approx((0.1, 20.0))
    x, t = torch.randn(1, 3, 16, 16), 0.5
    with torch.no_grad():
        eps = model(x, torch.tensor([999 * t])).sample.numpy().transpose(0, 2, 3, 1)[0]
    score = np.asarray(pre.score_fn(_nhwc(x)[0], t))
    np.testing.assert_allclose(score, -eps / float(pre.schedule.sigma(t)), atol=1e-4)


def test_shape_mismatch_names_the_tensor(tmp_path):
    model = _random_unet({**TINY, **TINY_VARIANTS["default"]})
    path = _save(tmp_path, model)
    config = json.loads((tmp_path / "config.json").read_text())
    config["in_channels"] = 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="conv_in.weight"):
        mjd.load_pretrained(path)
