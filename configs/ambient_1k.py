r"""Ambient diffusion (paper 002 Algorithm 1) on 1000 CIFAR-10 images; ``:standard`` is the DDPM twin.

    python -m memjax.scripts.train --config=configs/ambient_1k.py --workdir=/path/amb1k
    python -m memjax.scripts.train --config=configs/ambient_1k.py:standard --workdir=/path/ddpm1k

Every field is documented in configs/_ambient.py (the shared builder); this file sets only the
number of training images.
"""

import os
import runpy

NUM_TRAIN = 1000


def get_config(objective: str = "ambient"):
    builder = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ambient.py"))
    return builder["ambient_config"](NUM_TRAIN, objective or "ambient")
