"""SIDE's target model: restore a training workdir, or train one first (re-exported by
:mod:`memjax.side`)."""

from __future__ import annotations

import os

__all__ = ["load_target"]


def load_target(target_workdir: str, train_config, workdir: str, step: int = 0):
    """The target diffusion model: ``load_trained(target_workdir)``, or (``target_workdir`` empty)
    train ``train_config`` under ``workdir/target`` first (resuming an interrupted training)."""
    from memjax import training

    step = int(step) or None
    if target_workdir:
        return training.load_trained(target_workdir, step=step)
    if train_config is None:
        raise ValueError("target_workdir: expected a training workdir, or a training config "
                         "(config.target) to train one")
    tdir = os.path.join(workdir, "target")
    if not _training_done(tdir, train_config):
        training.train(train_config, tdir)
    return training.load_trained(tdir, step=step)


def _training_done(tdir, train_config) -> bool:
    from memjax import training

    path = os.path.join(tdir, training.CHECKPOINT_DIRNAME)
    if not os.path.isdir(path):
        return False
    steps = [int(n) for n in os.listdir(path) if n.isdigit()]
    return bool(steps) and max(steps) >= int(train_config.training.num_steps)
