"""SIDE (paper 001) on the overfit digits U-Net, end to end on 2 CPU cores.

    python -m memjax.scripts.side --config=configs/digits_side.py --workdir=/tmp/side
    python -m memjax.scripts.side --config=configs/digits_side.py \
        --config.target_workdir=/tmp/train_digits --workdir=/tmp/side
    python -m memjax.scripts.side --config=configs/digits_side.py:tiny --workdir=/tmp/side_tiny

Fields are documented in ``memjax.side.default_config``; in addition ``target`` is the training
config of the target model (configs/digits_overfit.py when present: 64 digits + mirror images),
trained under ``workdir/target`` when ``target_workdir`` is empty. ``:tiny`` is a seconds-scale
variant for tests (a 20-step target; numbers meaningless).

Similarity: Carlini et al.'s normalized L2 (``n = 50``, ``alpha = 0.5``; paper 001 uses it for
low-resolution data). Paper 001's bands for it are ``[1.5, 10]``, ``[1.4, 1.5)``, ``[1.35, 1.4)``;
on 8x8 digits a generated image that copies a training image has a ratio far below 1.35, so
the bands here extend the paper's downwards to capture copies: ``high = [0, 0.5)`` (near copy),
``mid = [0.5, 1.0)``, ``low = [1.0, 1.5)`` (smaller is more similar; the ranges are half-open).
"""

import importlib.util
import os

import ml_collections


def _train_config(tiny: bool):
    from memjax import training
    from memjax.models import config as model_config

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_overfit.py")
    if os.path.exists(path) and not tiny:
        spec = importlib.util.spec_from_file_location("digits_overfit_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config()
    c = training.default_config()
    c.data.num_train = 64
    c.data.num_heldout = 64
    c.data.flip = True
    c.model = model_config.unet_config(image_size=8, channels=1, base_channels=32,
                                       channel_mults=(1, 2), num_res_blocks=1,
                                       attn_resolutions=(), dropout=0.0)
    c.optim.learning_rate = 1e-3
    c.training.batch_size = 128
    c.training.num_steps = 20 if tiny else 3000
    c.training.checkpoint_every = 500
    c.training.sample_every = -1
    c.training.tensorboard = False
    if tiny:
        c.model.base_channels = 8
    return c


def get_config(variant: str = ""):
    from memjax import side

    tiny = variant == "tiny"
    c = side.default_config()
    c.target = _train_config(tiny)
    # Implicit labels (paper 001 sec. 4.1): K = 32 k-means clusters of 2,048 unguided samples,
    # a time-dependent classifier distilled onto them (TDKD, eq. 13), and guided reverse-SDE
    # sampling (eq. 12, 200 steps): N_G = 8 x 32 = 256 per lambda. docs/side_results.md
    # compares this with original labels and with DDIM.
    c.labels = "kmeans"
    c.num_clusters = 32
    c.classifier.num_steps = 400
    c.synthetic.num_samples = 2048
    c.synthetic.heldout = 256
    c.synthetic.num_steps = 50
    c.tdkd.num_steps = 1000
    c.extraction.lambdas = (0, 1, 2, 4, 8, 16)
    c.extraction.samples_per_class = 8
    c.extraction.sampler = "sde"
    c.extraction.num_steps = 200
    c.metrics.measure = "normalized_l2"
    c.metrics.bands = ml_collections.ConfigDict(dict(high=(0.0, 0.5), mid=(0.5, 1.0),
                                                     low=(1.0, 1.5)))
    if tiny:
        c.labels = "original"
        c.extraction.sampler = "ddim"
        c.classifier.num_steps = 20
        c.classifier.width = 8
        c.synthetic.num_samples = 96
        c.synthetic.heldout = 32
        c.synthetic.num_steps = 5
        c.tdkd.num_steps = 20
        c.tdkd.width = 8
        c.tdkd.log_every = 10
        c.extraction.lambdas = (0, 2)
        c.extraction.samples_per_class = 2
        c.extraction.num_steps = 5
        c.metrics.n = 10
        c.progress = False
    return c
