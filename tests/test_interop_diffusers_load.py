"""memjax.interop.diffusers without torch: validation order and bad inputs (fast, core install only).

The comparison with diffusers itself is tests/test_interop_diffusers.py (extra ``interop``).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from memjax.interop import diffusers as mjd
from memjax.interop.unet2d import UNet2DModel, UNetConfig

CONFIG = {
    "_class_name": "UNet2DModel", "_diffusers_version": "0.42.1", "sample_size": 8,
    "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "attention_head_dim": 4,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
}
SCHEDULER = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear",
             "beta_start": 1e-4, "beta_end": 0.02, "prediction_type": "epsilon", "clip_sample": True}


def _write_checkpoint(path, config=CONFIG, scheduler=SCHEDULER, seed=0, dtype=np.float32,
                      variant=None):
    """A save_pretrained-style directory from a random NNX port, in diffusers' names and layouts
    (tensors stored as ``dtype``; ``variant``: ``diffusion_pytorch_model.VARIANT.safetensors``)."""
    model = UNet2DModel(UNetConfig.from_dict(config), rngs=nnx.Rngs(seed))
    tensors = {}
    for p, v in nnx.to_flat_state(nnx.state(model)):
        arr = np.asarray(v.get_value())
        leaf = str(p[-1])
        if leaf == "kernel":
            arr = arr.transpose(3, 2, 0, 1) if arr.ndim == 4 else arr.T
        tensors[mjd._torch_name(p)] = np.ascontiguousarray(arr.astype(dtype))
    path.mkdir(parents=True, exist_ok=True)
    name = mjd.WEIGHTS_NAME if variant is None else mjd.WEIGHTS_NAME.replace(
        ".safetensors", f".{variant}.safetensors")
    save_file(tensors, str(path / name))
    (path / "config.json").write_text(json.dumps(config))
    if scheduler is not None:
        (path / "scheduler").mkdir(exist_ok=True)
        (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return model


def test_loads_a_checkpoint_and_its_score(tmp_path):
    model = _write_checkpoint(tmp_path)
    pre = mjd.load_pretrained(str(tmp_path))
    x = jnp.linspace(-1, 1, 8 * 8 * 3).reshape(8, 8, 3)
    t = pre.schedule.t_from_timestep(499)
    eps = nnx.jit(lambda m: m(x[None], jnp.array([499.0]))[0])(model)   # jitted: no op-by-op
    np.testing.assert_allclose(np.asarray(jax.jit(pre.score_fn)(x, t)),
                               np.asarray(-eps / pre.schedule.sigma(t)), rtol=1e-5, atol=1e-5)
    assert pre.prediction_type == "epsilon" and pre.config["block_out_channels"] == [8, 16]


def test_half_precision_variants_load_exactly(tmp_path):
    """``save_pretrained(variant="fp16")`` files and bfloat16 tensors: every parameter is the
    stored half-precision value widened exactly; chosen by variant or by the file's path."""
    import ml_dtypes

    model = _write_checkpoint(tmp_path, dtype=np.float16, variant="fp16")
    _write_checkpoint(tmp_path, dtype=ml_dtypes.bfloat16, variant="bf16")
    with pytest.raises(ValueError, match=r"variants here: \['bf16', 'fp16'\]"):
        mjd.load_pretrained(str(tmp_path))                   # no full-precision file
    with pytest.raises(ValueError, match="variant: no diffusion_pytorch_model.int8"):
        mjd.load_pretrained(str(tmp_path), variant="int8")
    by_variant = mjd.load_pretrained(str(tmp_path), variant="fp16")
    by_file = mjd.load_pretrained(str(tmp_path / "diffusion_pytorch_model.bf16.safetensors"))
    want = nnx.to_flat_state(nnx.state(model))
    for loaded, half in ((by_variant, np.float16), (by_file, ml_dtypes.bfloat16)):
        got = dict(nnx.to_flat_state(nnx.state(loaded.model)))
        for p, v in want:
            w = np.asarray(v.get_value())
            np.testing.assert_array_equal(np.asarray(got[p].get_value()),
                                          w.astype(half).astype(np.float32), err_msg=str(p))
    assert by_variant.config == by_file.config == CONFIG


def test_scheduler_locations(tmp_path):
    _write_checkpoint(tmp_path / "pipe" / "unet", scheduler=None)
    (tmp_path / "pipe" / "scheduler").mkdir()
    (tmp_path / "pipe" / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({**SCHEDULER, "prediction_type": "v_prediction"}))
    assert mjd.load_pretrained(str(tmp_path / "pipe")).prediction_type == "v_prediction"
    assert mjd.load_pretrained(str(tmp_path / "pipe" / "unet")).prediction_type == "v_prediction"
    (tmp_path / "other.json").write_text(json.dumps({**SCHEDULER, "prediction_type": "sample"}))
    pre = mjd.load_pretrained(str(tmp_path / "pipe" / "unet"), scheduler_path=str(tmp_path / "other.json"))
    assert pre.prediction_type == "sample"


def test_missing_config_or_scheduler(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        mjd.load_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="path: expected a diffusers save_pretrained directory"):
        mjd.load_pretrained(str(tmp_path / "absent"))
    _write_checkpoint(tmp_path / "m", scheduler=None)
    with pytest.raises(ValueError, match="no scheduler config"):
        mjd.load_pretrained(str(tmp_path / "m"))


@pytest.mark.parametrize("change, match", [
    ({"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}, "CrossAttnDownBlock2D"),
    ({"up_block_types": ["AttnUpBlock2D", "SkipUpBlock2D"]}, "SkipUpBlock2D"),
    ({"mid_block_type": "UNetMidBlock2DCrossAttn"}, "mid_block_type"),
    ({"time_embedding_type": "fourier"}, "time_embedding_type"),
    ({"class_embed_type": "timestep"}, "class_embed_type"),
    ({"downsample_type": "resnet"}, "downsample_type"),
    ({"resnet_time_scale_shift": "spatial"}, "resnet_time_scale_shift"),
    ({"cross_attention_dim": 512}, "cross_attention_dim"),
    ({"_class_name": "UNet2DConditionModel"}, "_class_name"),
    ({"block_out_channels": [8, 18]}, "norm_num_groups"),
])
def test_unsupported_config_fails_before_any_weight_is_read(tmp_path, change, match):
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, **change}))
    (tmp_path / mjd.WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=match):
        mjd.load_pretrained(str(tmp_path))


def test_weights_that_do_not_match_the_config(tmp_path):
    _write_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "out_channels": 4}))
    with pytest.raises(ValueError, match="'conv_out.(weight|bias)' has shape"):
        mjd.load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "layers_per_block": 2}))
    with pytest.raises(ValueError, match="missing.*down_blocks.0.resnets.1"):
        mjd.load_pretrained(str(tmp_path))


def test_bad_scheduler_and_options(tmp_path):
    _write_checkpoint(tmp_path, scheduler={**SCHEDULER, "prediction_type": "flow"})
    with pytest.raises(ValueError, match="prediction_type"):
        mjd.load_pretrained(str(tmp_path))
    _write_checkpoint(tmp_path, scheduler={**SCHEDULER, "beta_schedule": "scaled_linear"})
    with pytest.raises(ValueError, match="time_convention"):
        mjd.load_pretrained(str(tmp_path), time_convention="linear")
    with pytest.raises(ValueError, match="time_convention"):
        mjd.load_pretrained(str(tmp_path), time_convention="999t")
