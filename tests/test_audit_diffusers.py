"""The audit job end to end on a randomly initialised diffusers UNet2DModel (no download)."""

import importlib.util
import os

import pytest

pytestmark = pytest.mark.interop
torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_UNET = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                 layers_per_block=1, norm_num_groups=4, attention_head_dim=8,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def _digits_audit_config():
    spec = importlib.util.spec_from_file_location(
        "digits_audit_for_diffusers", os.path.join(REPO, "configs", "digits_audit.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("tiny")


def test_audit_end_to_end_from_a_diffusers_directory(tmp_path):
    from memjax import audit
    from memjax.data import data_config

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**TINY_UNET).eval()
    unet.save_pretrained(tmp_path / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(
        tmp_path / "unet" / "scheduler")
    c = _digits_audit_config()
    c.model.source = f"diffusers:{tmp_path / 'unet'}"
    c.data = data_config(num_train=6, num_heldout=6, seed=0)  # digits: 8x8x1
    c.ease.network.settings, c.ease.network.batch_size = ((1, 1), (2, 2)), 12
    c.ease.exact.settings = ((-1, 2),)
    c.sampling.update(num_samples=6, num_steps=4, batch_size=6, sampler="ddim")
    c.memorization.n = 4
    c.diverse.method = "knn_support"
    lines = []
    report = audit.run_audit(c, str(tmp_path / "audit"), progress=False, log=lines.append)
    desc = report["model"]["description"]
    assert desc.startswith(f"diffusers {tmp_path / 'unet'}") and "DiscreteVP schedule" in desc
    aur = report["auroc_train_vs_heldout"]
    assert set(aur["network"]) == {"N=1,steps=1", "N=2,steps=2"}
    assert all(0.0 <= v <= 1.0 for v in aur["network"].values())
    md = (tmp_path / "audit" / "report.md").read_text()
    assert "DiscreteVP schedule" in md and "diffusers" in md
    # a second run reuses every stage: the model id is the weights' content hash
    again = []
    audit.run_audit(c, str(tmp_path / "audit"), progress=False, log=again.append)
    ease = [line for line in again if line.startswith("[ease]")]
    assert len(ease) == 2 and all(line.endswith(": cached") for line in ease), again
    assert not any("recomputing" in line for line in again), again


def _png_folder(path, n, seed):
    import numpy as np
    from PIL import Image

    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path / f"{i:03d}.png")
    return str(path)


def test_cifar10_diffusers_config_runs_on_image_folders(tmp_path):
    """configs/cifar10_diffusers_audit.py:folder as documented, shrunk: a random 32x32x3
    UNet2DModel directory (pipeline layout: unet/ + scheduler/) and two folders of PNGs."""
    from memjax import audit

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**dict(TINY_UNET, sample_size=32, in_channels=3,
                                        out_channels=3)).eval()
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "pipe" / "scheduler")
    spec = importlib.util.spec_from_file_location(
        "cifar10_diffusers_audit_under_test", os.path.join(REPO, "configs", "cifar10_diffusers_audit.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("folder")
    c.model.source = f"diffusers:{tmp_path / 'pipe'}"
    c.data.update(path=_png_folder(tmp_path / "train", 4, 0), num_train=4)
    c.heldout_data.update(path=_png_folder(tmp_path / "test", 3, 1), num_train=3)
    c.ease.network.settings, c.ease.exact.settings = ((1, 1),), ((2, 1),)
    c.sampling.num_samples = 0
    report = audit.run_audit(c, str(tmp_path / "audit"), progress=False, log=lambda s: None)
    assert report["data"]["num_trained"] == 4 and report["data"]["num_heldout"] == 3
    assert report["data"]["image_shape"] == [32, 32, 3]
    assert "DiscreteVP schedule" in report["model"]["description"]
