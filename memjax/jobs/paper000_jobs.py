"""The jobs ``memjax-audit`` runs for a config with a ``job`` field: paper 000's studies.

    ease_sweep           memjax.jobs.ease_sweep           Algorithm 1 over sigma and N (App. A)
    reproduced_contrast  memjax.jobs.reproduced_contrast  reproduced vs not (Fig. 2 right, 3)
"""

from __future__ import annotations

from typing import Callable

__all__ = ["JOBS", "run"]

JOBS = ("ease_sweep", "reproduced_contrast")


def run(job: str, config, workdir: str, *, log: Callable[[str], None] = print) -> dict:
    """Runs the job named ``job`` (``config.job``) into ``workdir``."""
    if job == "ease_sweep":
        from memjax.jobs import ease_sweep

        return ease_sweep.run_ease_sweep(config, workdir, log=log)
    if job == "reproduced_contrast":
        from memjax.jobs import reproduced_contrast

        return reproduced_contrast.run_contrast(config, workdir, log=log)
    raise ValueError(f"job: expected 'audit' or one of {JOBS}, got {job!r}")
