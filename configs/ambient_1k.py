r"""Ambient diffusion (paper 002 Algorithm 1) on 1000 CIFAR-10 images; ``:standard`` is the DDPM twin.

    python -m memjax.scripts.train --config=configs/ambient_1k.py --workdir=/path/amb1k
    python -m memjax.scripts.train --config=configs/ambient_1k.py:standard --workdir=/path/ddpm1k

Paper 002 section 5.1 / appendix E: 300, 1k and 3k random CIFAR-10 training images; Adam with
lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01; 30,000 iterations at batch 256; EDM's
default CIFAR-10 network. The twin (``:standard``) differs only in ``objective.name``, so the
two runs see the same images, batches and initialisation and differ only in the loss.

Every field (schema: memjax.training.default_config):

  seed: initialisation, batch order, every step's key.
  data: TFDS ``cifar10`` train split, 1000 images chosen by a permutation seeded by
    ``data.seed``, as many held out (``num_heldout = -1``, for memorization baselines), no flips.
  model: EDM's CIFAR-10 DDPM++ in memjax's U-Net: 128 base channels, channel_mults (2, 2, 2),
    4 residual blocks per level, attention at 16x16, dropout 0.13, x0-prediction (Algorithm 1's
    h_theta predicts the clean image).
  objective.name: "ambient" (Algorithm 1) or "standard" (the DDPM x0 objective, eq. 3).
  objective.sigma_tn: 0.447, the VP noise scale of the authors' EDM sigma_n = 0.5
    (s / sqrt(1 + s^2)); t_n = sde.t_from_sigma(sigma_tn). Paper 002 sweeps it (Fig. 2).
  objective.noise_seed: seeds the fixed noisy copy of each image (fold_in(seed, index)).
  objective.noisy_fraction 0.5, mix "bernoulli": each example takes the noisy branch with
    probability 1/2, Algorithm 1's uniform draw from S u S_tn.
  sde: score_sde's VP-SDE (beta 0.1..20, t in [1e-3, 1]).
  optim: AdamW, lr 1e-4, (0.9, 0.999), eps 1e-8, weight decay 0.01; 1,000 warm-up steps
    (EDM ramps its lr up too); gradient clipping at 1.
  training.batch_size 256, num_steps 30,000; ema_decay 0.9999 with warm-up; metrics every 100
    steps, checkpoints every 2,500 (3 kept), sample grids every 5,000.
"""

import importlib.util
import os

NUM_TRAIN = 1000


def get_config(objective: str = "ambient"):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ambient.py")
    spec = importlib.util.spec_from_file_location("memjax_configs_ambient", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ambient_config(NUM_TRAIN, objective or "ambient")
