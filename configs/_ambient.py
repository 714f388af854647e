r"""Shared builder of the ambient-diffusion configs (paper 002); not a config file itself.

See configs/ambient_300.py for the documentation of every field.
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
