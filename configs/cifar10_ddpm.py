r"""CIFAR-10 with score_sde's DDPM++ (VP, continuous) settings: paper 000's "memorized vs
unmemorized" model, trained on all 50,000 training images + their mirror images.

    python -m memjax.scripts.train --config=configs/cifar10_ddpm.py --workdir=/path/run

Needs TFDS ``cifar10`` prepared once in the ArrayRecord format, the only one
``tfds.data_source`` reads: ``tfds build cifar10 --file_format=array_record`` (plain
``tfds build cifar10`` writes TFRecord shards, which memjax cannot open; the build needs
TensorFlow installed once), or set ``--config.data.download=True`` (``tfds.data_source`` then
prepares ArrayRecord itself). Nothing is downloaded otherwise.

Paper 000 ("The Ease of Reproducing Memorized Images"): "The 50,000 CIFAR10 images were
horizontally flipped and doubled to 100,000. We trained the model on them for 1,500 epochs,
keeping other settings the same as [Song et al. 2021]". 1,500 epochs of 100,000 images at
batch 128 are 1,171,875 steps.

Every field (the schema is memjax.training.default_config):

  seed: model initialisation, batch order and every step's key.
  data.source / name / split: TFDS ``cifar10``, split ``train`` (50,000 images, 32x32x3,
    10 labelled classes; the labels are kept for class-conditional variants).
  data.num_train: 0 = every training image; data.num_heldout: 0 (CIFAR-10's ``test`` split is
    the natural held-out set; load it with another data config when analysing).
  data.flip: True, the explicit mirror doubling of paper 000 (not a random-flip augmentation).
  data.image_size: 0 keeps 32x32.
  model: DDPM++ (score_sde ``configs/vp/cifar10_ddpmpp_continuous.py``): 128 base channels,
    channel_mults (1, 2, 2, 2), 4 residual blocks per level, attention at 16x16, 1 head,
    dropout 0.1, positional (sinusoidal) time embedding, eps-prediction.
  objective: standard denoising score matching, unweighted (score_sde's
    ``reduce_mean=False, likelihood_weighting=False`` up to a constant factor).
  sde: beta_min 0.1, beta_max 20, t_min 1e-3, t_max 1 (score_sde's VP-SDE).
  optim: Adam, lr 2e-4, beta1 0.9, beta2 0.999, eps 1e-8, no weight decay, 5,000 warm-up
    steps, gradient clipping at 1 (score_sde ``optim``).
  training.batch_size: 128 (score_sde). training.num_steps: 1,171,875 (1,500 epochs).
  training.ema_decay: 0.9999 (score_sde ``model.ema_rate``), no warm-up.
  training.log_every 100, checkpoint_every 50,000 (score_sde ``snapshot_freq``), keep 5.
  training.sample_every 50,000: 64-image probability-flow grids (200 Euler steps).
"""

from memjax import training


def get_config():
    c = training.default_config()
    c.seed = 0

    c.data.source = "tfds"
    c.data.name = "cifar10"
    c.data.split = "train"
    c.data.num_train = 0
    c.data.num_heldout = 0
    c.data.flip = True
    c.data.seed = 0

    c.model.image_size = 32
    c.model.channels = 3
    c.model.base_channels = 128
    c.model.channel_mults = (1, 2, 2, 2)
    c.model.num_res_blocks = 4
    c.model.attn_resolutions = (16,)
    c.model.num_heads = 1
    c.model.dropout = 0.1
    c.model.parameterization = "eps"
    c.model.embedding = "sinusoidal"

    c.objective.name = "standard"
    c.objective.parameterization = "eps"
    c.objective.weighting = "none"

    c.optim.optimizer = "adam"
    c.optim.learning_rate = 2e-4
    c.optim.beta1 = 0.9
    c.optim.beta2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.warmup_steps = 5000
    c.optim.grad_clip = 1.0

    c.training.batch_size = 128
    c.training.num_steps = 1_171_875
    c.training.ema_decay = 0.9999
    c.training.ema_warmup = False
    c.training.log_every = 100
    c.training.checkpoint_every = 50_000
    c.training.keep_checkpoints = 5
    c.training.sample_every = 50_000
    c.training.num_samples = 64
    c.training.sample_steps = 200
    return c
