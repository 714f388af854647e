r"""A class-conditional U-Net on the embedded digits (label dropout for classifier-free guidance).

    python -m memjax.scripts.train --config=configs/conditional_digits.py --workdir=/tmp/cond

Trains on every digit except a held-out 256 (1,541 images, 10 classes), so the model
generalises rather than memorizes; sample a class with ``memjax.training.trained_score_fn(...,
label=c)`` or combine conditional and null-label scores with
``memjax.sampling.classifier_free_guidance``.

Every field (schema: memjax.training.default_config):

  seed: initialisation, batch order, every step's key.
  data: the embedded 8x8 digits with their labels (``label_key = "label"``), ``num_train = 0``
    (all that are not held out), ``num_heldout = 256``, no flips (a mirrored digit is not the
    same class), ``data.seed`` picks the held-out digits.
  model: the digits U-Net of configs/digits_overfit.py with ``num_classes = 10`` (label 10 is
    the null label) and dropout 0.1.
  objective: "conditional" denoising score matching, eps-prediction, ``num_classes = 10``,
    ``label_dropout = 0.1`` (a label is replaced by the null label with probability 0.1).
  optim: Adam, lr 1e-3 after 200 warm-up steps, gradient clipping 1.
  training: batch 128, 4,000 steps, EMA 0.999 with warm-up, metrics every 50 steps,
    checkpoints every 1,000, a 64-sample grid (labels 0..9 in turn) at the end.
"""

from memjax import training


def get_config():
    c = training.default_config()
    c.seed = 0

    c.data.source = "digits"
    c.data.label_key = "label"
    c.data.num_train = 0
    c.data.num_heldout = 256
    c.data.flip = False
    c.data.seed = 0

    c.model.image_size = 8
    c.model.channels = 1
    c.model.base_channels = 48
    c.model.channel_mults = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (4,)
    c.model.dropout = 0.1
    c.model.num_classes = 10
    c.model.parameterization = "eps"

    c.objective.name = "conditional"
    c.objective.parameterization = "eps"
    c.objective.num_classes = 10
    c.objective.label_dropout = 0.1

    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 200
    c.optim.grad_clip = 1.0

    c.training.batch_size = 128
    c.training.num_steps = 4000
    c.training.ema_decay = 0.999
    c.training.log_every = 50
    c.training.checkpoint_every = 1000
    c.training.sample_every = 0
    c.training.num_samples = 64
    c.training.sample_steps = 160
    return c
