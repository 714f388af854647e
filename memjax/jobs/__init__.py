"""Jobs: thin compositions of library functions with a config, a validation and a ``run``.

    audit     memjax.audit            model -> ease of reproduction -> samples -> report
              (its stages: memjax.jobs.audit_stages; report: memjax.jobs.audit_report)
    sample    memjax.jobs.sample      chunked samples of a trained model, nearest neighbours
    side      memjax.side             SIDE extraction (paper 001)
    evaluate  memjax.scripts.evaluate generated images against a training set
    train     memjax.training         the one fit loop for score networks

Every stage result lives in the workdir under the key of what it depends on
(:func:`memjax.workdir.cached`); :mod:`memjax.jobs.sources` resolves model and feature
sources, :mod:`memjax.jobs.feature_space` caches features by the weights' content and says
which similarity bands a feature space has; :func:`run_info` is what every report records
about the run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_info"]


def run_info(config: Any = None) -> dict:
    """The memjax / JAX versions, the devices and process count, the ``XLA_FLAGS`` the
    backend started with (compiler settings change float rounding) and the full config."""
    import os
    import platform

    import jax

    import memjax

    info = {"memjax": getattr(memjax, "__version__", "unknown"), "jax": jax.__version__,
            "python": platform.python_version(), "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "process_count": jax.process_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if config is not None:
        info["config"] = config.to_dict() if hasattr(config, "to_dict") else config
    return info
