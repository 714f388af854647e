"""memjax: measuring, exploiting and reducing memorization in diffusion models (JAX/Flax).

One protocol joins models to analysis: ``score_fn(x, t) -> grad_x log p_t(x)`` for a single
example. See ``docs/design.md`` for the architecture and the paper-to-code map.
"""

from memjax import flow, lyapunov, metrics, models, objectives, parallel, scores, volume
from memjax.sde import VPSDE
from memjax.volume import VolumeGrowth, ease_of_reproduction, rank_images, volume_growth

__all__ = [
    "VPSDE", "VolumeGrowth", "ease_of_reproduction", "flow", "lyapunov", "metrics", "models",
    "objectives", "parallel", "rank_images", "scores", "volume", "volume_growth",
]
__version__ = "0.1.0"
