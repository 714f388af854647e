r"""A class-conditional DDPM++ on CIFAR-10 (classifier-free label dropout).

    python -m memjax.scripts.train --config=configs/conditional_cifar10.py --workdir=/path/run

configs/cifar10_ddpm.py (score_sde DDPM++ settings: Adam 2e-4, 5,000 warm-up steps, gradient
clipping 1, EMA 0.9999, batch 128; all 50,000 training images + mirror images) with:

  model.num_classes: 10 (label 10 is the null label of classifier-free guidance).
  objective.name: "conditional"; objective.num_classes: 10; objective.label_dropout: 0.1
    (Ho & Salimans use 0.1-0.2).
  data.label_key: "label" (CIFAR-10's class).
  training.num_steps: 800,000.
"""

from memjax.scripts.common import load_config


def get_config():
    c = load_config("cifar10_ddpm", next_to=__file__)
    c.data.label_key = "label"
    c.model.num_classes = 10
    c.objective.name = "conditional"
    c.objective.num_classes = 10
    c.objective.label_dropout = 0.1
    c.training.num_steps = 800_000
    return c
