r"""Shared builder of the ambient-diffusion configs (paper 002); not a config file itself.

configs/ambient_300.py, ambient_1k.py and ambient_3k.py differ only in the number of training
images ``num_train``. Paper 002 section 5.1 / appendix E: 300, 1k and 3k random CIFAR-10
training images; Adam with lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01; 30,000
iterations at batch 256; EDM's default CIFAR-10 network. The twin (``:standard``) differs only
in ``objective.name``, so the two runs see the same images, batches and initialisation and
differ only in the loss.

Every field (schema: memjax.training.default_config):

  seed: initialisation, batch order, every step's key.
  data: TFDS ``cifar10`` train split, ``num_train`` images chosen by a permutation seeded by
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

from memjax import training

# EDM noise level sigma_n = 0.5 of the authors' code (images x0 + s z), as a VP noise scale:
# sigma_tn = s / sqrt(1 + s^2) (memjax.models.config, objective.sigma_tn).
EDM_SIGMA_N = 0.5
SIGMA_TN = EDM_SIGMA_N / (1.0 + EDM_SIGMA_N**2) ** 0.5


def ambient_config(num_train: int, objective: str = "ambient"):
    if objective not in ("ambient", "standard"):
        raise ValueError(f"config argument: expected 'ambient' or 'standard' (the DDPM twin), got "
                         f"{objective!r}")
    c = training.default_config()
    c.seed = 0

    c.data.source = "tfds"
    c.data.name = "cifar10"
    c.data.split = "train"
    c.data.num_train = num_train
    c.data.num_heldout = -1
    c.data.flip = False
    c.data.seed = 0

    c.model.image_size = 32
    c.model.channels = 3
    c.model.base_channels = 128
    c.model.channel_mults = (2, 2, 2)
    c.model.num_res_blocks = 4
    c.model.attn_resolutions = (16,)
    c.model.num_heads = 1
    c.model.dropout = 0.13
    c.model.parameterization = "x0"
    c.model.embedding = "sinusoidal"

    c.objective.name = objective
    c.objective.parameterization = "x0"
    c.objective.weighting = "none"
    if objective == "ambient":
        c.objective.sigma_tn = SIGMA_TN
        c.objective.noise_seed = 0
        c.objective.noisy_fraction = 0.5
        c.objective.mix = "bernoulli"

    c.optim.optimizer = "adamw"
    c.optim.learning_rate = 1e-4
    c.optim.beta1 = 0.9
    c.optim.beta2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.01
    c.optim.warmup_steps = 1000
    c.optim.grad_clip = 1.0

    c.training.batch_size = 256
    c.training.num_steps = 30_000
    c.training.ema_decay = 0.9999
    c.training.ema_warmup = True
    c.training.log_every = 100
    c.training.checkpoint_every = 2_500
    c.training.keep_checkpoints = 3
    c.training.sample_every = 5_000
    c.training.num_samples = 64
    c.training.sample_steps = 200
    return c
