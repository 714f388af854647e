"""The README's first command separates what it trained on from what it held out.

``configs/digits_audit.py`` trains its own model (32 digits + mirrors = 64 trained images, 64
held out, 1,500 full-batch steps); the acceptance of its recipe is the audit's own headline row:
the trained network's ease of reproduction with one axis over 100 steps ranks trained above
held-out images with AUROC >= 0.99 (README "What the audit shows"). Slow: it trains the default
model (about a CPU-minute and a half on 2 idle cores; timings in benchmarks/results/train.md).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from memjax import audit

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "digits_audit.py")


def _default_config():
    spec = importlib.util.spec_from_file_location("digits_audit_default_recipe", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.slow
def test_default_audit_recipe_separates_trained_from_heldout(tmp_path):
    cfg = _default_config()
    cfg.train.training.update(progress=False, tensorboard=False)
    cfg.ease.network.settings = ((1, 100),)     # the headline row only
    cfg.ease.exact.enabled = False
    cfg.sampling.num_samples = 0
    report = audit.run_audit(cfg, str(tmp_path), progress=False, log=lambda line: None)
    assert (report["data"]["num_trained"], report["data"]["num_heldout"]) == (64, 64)
    (row,) = report["ease_of_reproduction"]["network"]
    assert (row["num_axes"], row["steps"]) == (1, 100)
    assert row["auroc"] >= 0.99, row
    assert row["mean_trained"] > row["mean_heldout"]
