r"""Paper 002 at digits scale: standard vs ambient training over seeds, and a sigma_tn sweep.

    python -m memjax.scripts.ambient_sweep --config=ambient_sweep --workdir=/tmp/sweep
    python -m memjax.scripts.ambient_sweep --config=ambient_sweep:tiny --workdir=/tmp/tiny

Job: memjax.jobs.ambient_sweep (runs, metrics, outputs). Results: docs/reproductions.md.

Fields:

  train: the training config every run shares (schema: memjax.training.default_config); a run
    sets only ``seed``, ``objective.name``, ``objective.sigma_tn`` and ``objective.noise_seed``.
    data: NUM_TRAIN = 32 embedded 8x8 digits (no flips; ``data.seed`` fixes which, for every
      run), NUM_HELDOUT = 512 other digits held out (the Fréchet reference and the memorization
      baseline). 32 rather than the paper's 300: at 2 shared CPU cores a run must cost about a
      minute of CPU; digits_overfit's own recipe (batch 128, 2,000 steps) copies 60 % of its 128
      images, but under this sweep's recipe (1,500 steps, batch min(64, n)) the standard model
      copies 66 % of samples at 16 digits, 13 % at 32, 0.4 % at 64 and 0 at 128 (the session-5
      training-set size pilot in docs/reproductions.md, seed 0): 32 is the largest size tested
      inside the copying regime.
    model: configs/digits_overfit.py's U-Net (16 base channels, 2 levels, no attention, no
      dropout) with x0-prediction (Algorithm 1's h_theta predicts the clean image).
    objective: x0 loss, unweighted; ambient: ``noisy_fraction`` 0.5, "bernoulli" mix
      (Algorithm 1's uniform draw from S u S_tn).
    optim / training: digits_overfit's recipe, the one that makes this network copy: Adam, peak
      lr 1e-2 after 100 warm-up steps, cosine decay to 0, clip 1, batch min(64, NUM_TRAIN),
      NUM_STEPS = 1,500 steps, EMA 0.99 with warm-up; checkpoints every 250 steps (resume).
  seeds: the seeds of the headline pair (standard and ambient at ``sigma_tn``); () runs only the
    sweep points (``--config.seeds='()' --config.sweep_seeds='(1, 2)'``: seeds 1 and 2 of them).
  objectives: the arms of the headline pair, ("standard", "ambient"); ("standard",) runs the
    standard arm alone (``--config.objectives='("standard",)'``).
  sigma_tn: 0.447, the VP scale of the authors' EDM sigma_n = 0.5 (s / sqrt(1 + s^2)).
  sweep_sigma_tn / sweep_seeds: the other ambient points of the Fig. 2 plane: EDM s = 0.2, 1 and
    2 (VP 0.196, 0.707, 0.894); paper 002 finds s in [0.4, 4] Pareto-optimal on FFHQ-300.
  num_samples, sampler, num_steps: 256 samples per run, DDIM (eta 0) with 50 steps; the sample
    key is the run's seed, so the twins of a seed start from the same noise.
  radius: "memorized" means the nearest training image lies within this L2 distance in pixels
    (configs/digits_overfit.py's criterion: RMS 1/8 per pixel, one grey level of the raw digits).

``:tiny``: 16 digits, 1 seed, 2 sweep points, 30 steps, 16 samples (the end-to-end test).
"""

import ml_collections

from memjax import training

NUM_TRAIN = 32
NUM_HELDOUT = 512
NUM_STEPS = 1500


def edm_to_vp(s: float) -> float:
    return s / (1.0 + s * s) ** 0.5


def train_config(num_train: int, num_heldout: int, num_steps: int):
    c = training.default_config()
    c.data.source = "digits"
    c.data.num_train, c.data.num_heldout, c.data.flip, c.data.seed = num_train, num_heldout, False, 0
    c.model.image_size, c.model.channels = 8, 1
    c.model.base_channels, c.model.channel_mults, c.model.num_res_blocks = 16, (1, 2), 1
    c.model.attn_resolutions, c.model.dropout, c.model.embedding = (), 0.0, "sinusoidal"
    c.model.parameterization = c.objective.parameterization = "x0"
    c.objective.weighting = "none"
    c.objective.noisy_fraction, c.objective.mix = 0.5, "bernoulli"
    c.optim.optimizer, c.optim.learning_rate, c.optim.warmup_steps = "adam", 1e-2, 100
    c.optim.schedule, c.optim.grad_clip = "cosine", 1.0
    c.training.batch_size, c.training.num_steps = min(64, num_train), num_steps
    c.training.ema_decay, c.training.ema_warmup = 0.99, True
    c.training.log_every = min(100, num_steps)
    c.training.checkpoint_every, c.training.keep_checkpoints = min(250, num_steps), 2
    c.training.sample_every, c.training.progress, c.training.tensorboard = -1, False, False
    return c


def get_config(variant: str = ""):
    if variant not in ("", "tiny"):
        raise ValueError(f"config argument: expected '' or 'tiny', got {variant!r}")
    tiny = variant == "tiny"
    c = ml_collections.ConfigDict()
    c.train = train_config(16, 16, 30) if tiny else train_config(NUM_TRAIN, NUM_HELDOUT, NUM_STEPS)
    c.seeds = (0,) if tiny else (0, 1, 2)
    c.objectives = ("standard", "ambient")
    c.sigma_tn = edm_to_vp(0.5)
    c.sweep_sigma_tn = (edm_to_vp(1.0),) if tiny else tuple(edm_to_vp(s) for s in (0.2, 1.0, 2.0))
    c.sweep_seeds = (0,)
    c.num_samples = 16 if tiny else 256
    c.sampler = "ddim"
    c.num_steps = 10 if tiny else 50
    c.radius = 1.0
    return c
