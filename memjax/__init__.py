"""memjax: measuring, exploiting and reducing memorization in diffusion models (JAX/Flax)."""

from memjax import flow, parallel, scores
from memjax.sde import VPSDE

__all__ = ["VPSDE", "flow", "parallel", "scores"]
__version__ = "0.1.0"
