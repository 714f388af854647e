"""memjax: measuring, exploiting and reducing memorization in diffusion models (JAX/Flax).

One protocol joins models to analysis: ``score_fn(x, t) -> grad_x log p_t(x)`` for a single
example. See ``docs/design.md`` for the architecture and the paper-to-code map.

The mathematical core is imported eagerly; the modules with heavier dependencies
(``training`` (orbax), ``data`` (TFDS), ``side``, ``audit``, ``report`` (matplotlib), the jobs,
the feature networks and the bridges (``interop``: torch only where a user wraps a torch module))
load on first attribute access, so ``import memjax`` stays fast and pulls in no TFDS,
matplotlib or torch.
"""

import importlib

from memjax import (flow, lyapunov, metrics, models, objectives, parallel, sampling, schedules, scores,
                    volume)
from memjax.schedules import CosineVP, DiscreteVP
from memjax.sde import VPSDE, VPSchedule
from memjax.volume import VolumeGrowth, ease_of_reproduction, rank_images, volume_growth

_LAZY = ("audit", "checkpoint", "console", "data", "data_sources", "features", "fit", "interop", "jobs",
         "report", "side", "trained", "train_config", "train_step", "training", "volume_settings", "workdir")

__all__ = [
    "CosineVP", "DiscreteVP", "VPSDE", "VPSchedule", "VolumeGrowth", "ease_of_reproduction", "flow",
    "lyapunov", "metrics", "models", "objectives", "parallel", "rank_images", "sampling", "schedules",
    "scores", "volume", "volume_growth",
    *_LAZY,
]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"memjax.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'memjax' has no attribute {name!r}")
