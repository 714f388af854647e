r"""Auditing a diffusers CIFAR-10 DDPM checkpoint (e.g. google/ddpm-cifar10-32) on a GPU.

memjax downloads nothing. Once, on a machine with network and torch + diffusers
(``pip install "memjax[interop]"``), save the checkpoint as safetensors into a local folder::

    python -c "from diffusers import DDPMPipeline; \
      DDPMPipeline.from_pretrained('google/ddpm-cifar10-32').save_pretrained('/data/ddpm-cifar10-32')"

(``/data/ddpm-cifar10-32`` then holds ``unet/`` -- config.json and
diffusion_pytorch_model.safetensors -- and ``scheduler/``; memjax reads them with safetensors and
NumPy, no torch at run time.) The images, once, as TFDS ArrayRecord (``tfds.data_source`` reads
only ArrayRecord; the default ``tfds build cifar10`` writes TFRecord shards memjax cannot open,
and the build needs TensorFlow installed once)::

    pip install tensorflow && tfds build cifar10 --file_format=array_record

Then::

    memjax-audit --config=configs/cifar10_diffusers_audit.py --workdir=/tmp/ddpm_cifar10_audit \
        --config.model.source=diffusers:/data/ddpm-cifar10-32
    # images from two folders of PNGs instead of TFDS (trained / held out):
    memjax-audit --config=configs/cifar10_diffusers_audit.py:folder \
        --config.model.source=diffusers:/data/ddpm-cifar10-32 \
        --config.data.path=/data/cifar10/train --config.heldout_data.path=/data/cifar10/test \
        --workdir=/tmp/ddpm_cifar10_audit

What is compared: google/ddpm-cifar10-32 was trained on all 50,000 CIFAR-10 training images
(with random flips), so the trained images are ``data.num_train`` of the TFDS ``train`` split
and the held-out ones the same number of the ``test`` split (``heldout_data``: a second data
section; :func:`memjax.jobs.sources.load_target`). The schedule is the checkpoint's discrete
table (``DiscreteVP`` from scheduler/scheduler_config.json: linear betas 1e-4..0.02, 1000 steps,
eps prediction), exact at the training timesteps.

Every other field is configs/digits_audit.py's. Sizes, for one 80 GB-class GPU: the full
volume is D = 3072 axes, so the network rows stop at N = 256 (257 forward-mode passes of the
35.7M-parameter U-Net per image and step, a batch of 16 images x 257 tangents per call); the
exact rows (the empirical score of the 1,000 trained images, a perfect memoriser) are cheap and
go to the full volume. Interrupted runs resume from their cached stages.
"""

import ml_collections

from memjax.data import data_config
from memjax.scripts.common import load_config


def _split(source: str, split: str, path: str, num: int, seed: int) -> ml_collections.ConfigDict:
    if source == "tfds":
        return data_config(source="tfds", name="cifar10", split=split, label_key="label",
                           num_train=num, num_heldout=0, seed=seed)
    return data_config(source="folder", path=path, channels=3, image_size=32, label_key="",
                       num_train=num, num_heldout=0, seed=seed)


def get_config(source: str = "tfds"):
    if source not in ("tfds", "folder"):
        raise ValueError(f"config argument: expected 'tfds' or 'folder', got {source!r}")
    c = load_config("digits_audit", next_to=__file__)
    del c["train"]  # nothing is trained here: the model is the checkpoint
    c.model.source = "diffusers:/data/ddpm-cifar10-32"
    n = 1000
    c.data = _split(source, "train", "/data/cifar10/train", n, seed=0)
    c.heldout_data = _split(source, "test", "/data/cifar10/test", n, seed=0)

    c.ease.network.settings = ((1, 1), (1, 10), (1, 100), (64, 10), (256, 10), (256, 100))
    c.ease.network.batch_size = 16
    c.ease.exact.settings = ((1, 1), (256, 100), (-1, 1), (-1, 10), (-1, 100))
    c.ease.exact.batch_size = 16
    c.sampling.update(num_samples=1000, sampler="ddim", num_steps=100, batch_size=250)
    c.diverse.update(features="pixels", method="tsne_hull", perplexity=30.0, num_iters=1000)
    return c
