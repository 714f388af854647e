r"""Paper 000's overfit model: 2^6 CIFAR-10 images + their mirror images (2^7 trained), DDPM++.

    python -m memjax.scripts.train --config=configs/cifar10_2pow7_overfit.py --workdir=/path/run

Paper 000 ("The Ease of Reproduction in an Overfitted Model"): "We randomly selected 2^6
CIFAR10 images, applied horizontal flipping to create 2^7 images for training, and set the
number of epochs to 300,000 to induce overfitting. Other settings are the same as Song et al.
(2021)." With 128 images and batch 128 an epoch is one step: 300,000 steps. The 2^7
non-trained images the paper compares against are ``data.num_heldout = -1``: 64 other images
+ flips, saved with the trained ones in ``workdir/data_split.npz`` (seeded; the authors'
split was not).

Every field is as in configs/cifar10_ddpm.py (DDPM++, Adam 2e-4 with 5,000 warm-up steps,
gradient clipping 1, EMA 0.9999), except:

  data.num_train: 64 source images, chosen by a permutation seeded by data.seed.
  data.num_heldout: -1, the same number held out (disjoint).
  training.num_steps: 300,000 (300,000 epochs of 128 images at batch 128).
  training.checkpoint_every / sample_every: 25,000.
"""

from memjax.scripts.common import load_config


def get_config():
    c = load_config("cifar10_ddpm", next_to=__file__)
    c.data.num_train = 64
    c.data.num_heldout = -1
    c.data.flip = True
    c.training.num_steps = 300_000
    c.training.checkpoint_every = 25_000
    c.training.sample_every = 25_000
    return c
