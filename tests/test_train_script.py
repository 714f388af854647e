"""``python -m memjax.scripts.train``: SIGKILL + resume, start-up validation, the shipped configs."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import ml_collections
import numpy as np
import pytest

from memjax import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
TRAINING_CONFIGS = ["digits_overfit.py", "cifar10_2pow7_overfit.py", "cifar10_ddpm.py",
                    "ambient_300.py", "ambient_1k.py", "ambient_3k.py", "conditional_digits.py",
                    "conditional_cifar10.py"]

TINY = """
from memjax import training

def get_config():
    c = training.default_config()
    c.data.num_train = 8
    c.data.flip = True
    c.model.image_size = 8
    c.model.channels = 1
    c.model.base_channels = 8
    c.model.channel_mults = (1,)
    c.model.attn_resolutions = ()
    c.model.num_res_blocks = 1
    c.model.dropout = 0.1
    c.training.batch_size = 8
    c.training.num_steps = {num_steps}
    c.training.log_every = 1
    c.training.checkpoint_every = {checkpoint_every}
    c.training.sample_every = -1
    c.training.tensorboard = False
    c.training.progress = False
    return c
"""


def load_config(name, arg=None):
    spec = importlib.util.spec_from_file_location(f"cfg_{name[:-3]}", os.path.join(CONFIGS, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


def script(config_path, workdir, *flags):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return [sys.executable, "-m", "memjax.scripts.train", f"--config={config_path}",
            f"--workdir={workdir}", *flags], env


def _committed(ckpt_dir):
    if not ckpt_dir.exists():
        return []
    return sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit() and any(
        (ckpt_dir / d / m).exists() for m in training.Checkpointer.COMMIT_MARKERS))


@pytest.mark.slow
def test_sigkill_between_checkpoints_then_resume_reproduces_losses(tmp_path):
    cfg = tmp_path / "tiny.py"
    cfg.write_text(textwrap.dedent(TINY.format(num_steps=300, checkpoint_every=25)))
    # the uninterrupted run
    cmd, env = script(cfg, tmp_path / "full")
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1200)
    ref = training.read_metrics(str(tmp_path / "full"))
    assert [r["step"] for r in ref] == list(range(1, 301))
    # the same run, killed with SIGKILL as soon as it has committed a checkpoint and logged a
    # later step
    wd = tmp_path / "killed"
    cmd, env = script(cfg, wd)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = wd / training.METRICS_FILENAME
    deadline = time.time() + 1200
    while time.time() < deadline and proc.poll() is None:
        saved = _committed(wd / "checkpoints")
        if saved and metrics.exists() and len(metrics.read_text().splitlines()) > saved[-1]:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    logged = len(metrics.read_text().splitlines())
    saved = _committed(wd / "checkpoints")
    assert saved and saved[-1] < logged < 300, (saved, logged)   # killed between checkpoints
    # resume: same command
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resumed from {saved[-1]}" in out.stdout + out.stderr   # memjax's own line (stdout)
    got = training.read_metrics(str(wd))
    assert [r["step"] for r in got] == list(range(1, 301))
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in ref], rtol=1e-6)
    np.testing.assert_allclose([r["grad_norm"] for r in got], [r["grad_norm"] for r in ref],
                               rtol=1e-5)


@pytest.mark.slow  # 4 script start-ups; the same fields: validate_config tests in test_training.py
def test_script_rejects_invalid_configs_at_start_up(tmp_path):
    cfg = tmp_path / "tiny.py"
    cfg.write_text(textwrap.dedent(TINY.format(num_steps=2, checkpoint_every=1)))
    for flags, field in [(["--config.training.batch_size=0"], "training.batch_size"),
                         (["--config.model.attn_resolutions=(3,)"], "model.attn_resolutions"),
                         (["--config.objective.name=ambient", "--config.objective.t_n=1.5"],
                          "objective.t_n"),
                         (["--config.training.bach_size=3"], "bach_size")]:
        cmd, env = script(cfg, tmp_path / "wd", *flags)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode != 0 and field in out.stderr, (flags, out.stderr[-2000:])
        assert not (tmp_path / "wd" / "checkpoints").exists()


@functools.lru_cache(maxsize=None)
def _num_params(model_json: str) -> int:
    """Parameters of the model a config builds (abstractly); configs sharing a model trace it once."""
    from flax import nnx

    cfg = ml_collections.ConfigDict({"model": json.loads(model_json), "seed": 0})
    model = nnx.eval_shape(lambda: training.build_model(cfg))
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.slow  # tracing a 35-62M-parameter U-Net costs ~10 CPU-s per distinct model
@pytest.mark.parametrize("name", ["cifar10_ddpm.py", "conditional_cifar10.py", "ambient_300.py"])
def test_shipped_cifar_configs_build_their_models(name):
    n = _num_params(load_config(name).model.to_json())
    if name != "ambient_300.py":
        assert 30e6 < n < 80e6, n                 # DDPM++ cont. CIFAR-10 is ~62M parameters
    assert n > 1e6, n


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
def test_shipped_configs_validate_and_build(name):
    """Every shipped training config validates; the digits-scale ones build (the CIFAR-scale
    builds: test_shipped_cifar_configs_build_their_models, slow)."""
    cfg = load_config(name)
    training.validate_config(cfg)
    if cfg.model.image_size <= 8:
        assert _num_params(cfg.model.to_json()) > 0
    if name.startswith("cifar10") or name == "conditional_cifar10.py":
        # score_sde DDPM++ settings (paper 000: "other settings are the same as Song et al.")
        assert (cfg.optim.optimizer, cfg.optim.learning_rate, cfg.optim.grad_clip,
                cfg.optim.warmup_steps, cfg.training.ema_decay, cfg.training.batch_size) == \
            ("adam", 2e-4, 1.0, 5000, 0.9999, 128)
        assert (cfg.model.base_channels, tuple(cfg.model.channel_mults), cfg.model.num_res_blocks,
                tuple(cfg.model.attn_resolutions), cfg.model.dropout) == (128, (1, 2, 2, 2), 4,
                                                                          (16,), 0.1)
    if name == "cifar10_2pow7_overfit.py":
        assert (cfg.data.num_train, cfg.data.flip, cfg.training.num_steps) == (64, True, 300_000)
    if name.startswith("ambient"):
        assert cfg.objective.name == "ambient" and cfg.optim.optimizer == "adamw"
        assert (cfg.optim.learning_rate, cfg.optim.weight_decay, cfg.training.batch_size,
                cfg.training.num_steps) == (1e-4, 0.01, 256, 30_000)
        assert cfg.data.num_train == {"ambient_300.py": 300, "ambient_1k.py": 1000,
                                      "ambient_3k.py": 3000}[name]
        twin = load_config(name, "standard")
        training.validate_config(twin)
        diff = {k for k, v in training.flatten_config(cfg.to_dict()).items()
                if training.flatten_config(twin.to_dict()).get(k) != v}
        assert diff <= {"objective.name", "objective.sigma_tn"}, diff
        sde = training.make_sde(cfg)
        from memjax.models.config import resolve_t_n
        assert 0 < resolve_t_n(cfg.objective, sde) < 1
    if name.startswith("conditional"):
        assert cfg.model.num_classes == cfg.objective.num_classes == 10


@pytest.mark.slow  # a CIFAR-10 config end to end through TFDS (CI's second step)
def test_tfds_config_trains_on_mock_data(tmp_path):
    """A CIFAR-10 config, shrunk, runs end to end on tfds.testing.mock_data (no download)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = load_config("ambient_300.py")
    cfg.data.num_train = 6
    cfg.data.image_size = 8
    cfg.model.image_size = 8
    cfg.model.base_channels = 8
    cfg.model.channel_mults = (1,)
    cfg.model.num_res_blocks = 1
    cfg.model.attn_resolutions = ()
    cfg.training.batch_size = 4
    cfg.training.num_steps = 2
    cfg.training.checkpoint_every = 1
    cfg.training.sample_every = -1
    cfg.training.progress = False
    cfg.training.tensorboard = False
    with tfds.testing.mock_data(num_examples=20):
        res = training.train(cfg, str(tmp_path))
    assert int(res.state["step"]) == 2 and res.dataset.train.shape == (6, 8, 8, 3)
    assert res.dataset.heldout.shape == (6, 8, 8, 3)
    assert all(np.isfinite(r["loss"]) for r in training.read_metrics(str(tmp_path)))


def _nearest_l2(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return np.sqrt(np.maximum(((a[:, None] - b[None]) ** 2).sum(-1), 0)).min(1)


@pytest.mark.slow
def test_digits_overfit_memorizes(tmp_path):
    """configs/digits_overfit.py: most probability-flow samples are near-copies of training
    images (nearest training image within L2 1.0), while no held-out image is that close."""
    cmd, env = script(os.path.join(CONFIGS, "digits_overfit.py"), tmp_path,
                      "--config.training.progress=False")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    tr = training.load_trained(str(tmp_path))
    res = near_copy_report(tr, num_samples=256)
    print(json.dumps(res))
    assert res["heldout_within"] < 0.05
    assert res["samples_within"] > 0.5
    assert res["samples_within_heldout"] < 0.1


def near_copy_report(trained, *, num_samples=256, num_steps=160, radius=1.0, seed=1):
    """Fractions within ``radius`` (L2) of the nearest training image: of PF samples, of the
    held-out images (baseline); and of samples within ``radius`` of a held-out image."""
    cfg = trained.config
    g, params, other = training.split_model(trained.model)
    c = cfg.copy_and_resolve_references()
    c.training.num_samples = num_samples
    c.training.sample_steps = num_steps
    smp = np.asarray(training.sample_grid(g, params, other, c, trained.sde, jax.random.key(seed)))
    d_train = _nearest_l2(smp, trained.dataset.train)
    return {"radius": radius, "num_samples": num_samples, "sample_steps": num_steps,
            "samples_within": float(np.mean(d_train < radius)),
            "samples_median_l2": float(np.median(d_train)),
            "heldout_within": float(np.mean(_nearest_l2(trained.dataset.heldout,
                                                        trained.dataset.train) < radius)),
            "samples_within_heldout": float(np.mean(_nearest_l2(smp, trained.dataset.heldout)
                                                    < radius))}
