"""Paper 000 Appendix A (Figs. 4-5) on the digits: Algorithm 1 as written, swept over sigma and N.

    memjax-audit --config=configs/digits_audit_sweep.py --workdir=/tmp/sweep \
        --config.model.workdir=/tmp/audit/model      # the audit's model; empty: train it here

Runs memjax.jobs.ease_sweep (``job = "ease_sweep"``): every field of
``configs/digits_audit.py:paper`` (model, train, seed, ease.grid_steps, and Algorithm 1's
``ease.algorithm1.method`` / ``accumulate``) plus

  sweep.images_per_group: the first k trained and the first k held-out images (by index).
  sweep.num_axes: the N sweep (-1: D), at sweep.sigma (the paper's 0.05).
  sweep.sigmas: the sigma sweep (the paper's 0.001, 0.01, 0.05, 0.1), at sweep.sigma_axes.
  sweep.report_steps: growth read after these steps of the one run per (N, sigma).
  sweep.batch_size: images per vmapped batch.

Cost: (N + 1) x max(report_steps) network evaluations per image and (N, sigma), about
0.4 CPU-ms each for the digits U-Net; the defaults (8 + 8 images, N in {1, 10, 64} at
sigma 0.05, sigma in {0.001, 0.01, 0.1} at N = 10, 1000 steps) about 11 CPU-minutes. The
N = 64, sigma = 0.05 run is the ``:paper`` preset's Algorithm 1 row on these 16 images.
"""

import importlib.util
import os

import ml_collections


def get_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_audit.py")
    spec = importlib.util.spec_from_file_location("digits_audit_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("paper")
    c.job = "ease_sweep"
    c.sweep = ml_collections.ConfigDict()
    c.sweep.images_per_group = 8
    c.sweep.num_axes = (-1, 1, 10)
    c.sweep.sigma = 0.05
    c.sweep.sigmas = (0.001, 0.01, 0.1)
    c.sweep.sigma_axes = 10
    c.sweep.report_steps = (1, 10, 100, 1000)
    c.sweep.batch_size = 16
    return c
