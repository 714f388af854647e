"""Paper 000's protocol as memjax runs it: the ``:paper`` preset (Algorithm 1 as written), its
row family and labels in the audit, the sigma / N sweep, and the reproduced-vs-not split.

The preset test pins the choices on the config object; the end-to-end tests run the audit and
the sweep on a few digits with a closed-form score (a Gaussian fitted to the digits) and check
their numbers against direct :func:`memjax.volume_growth` calls with the paper's options.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap

import jax
import numpy as np
import pytest

from memjax import audit
from memjax.jobs import ease_rows, ease_sweep
from memjax.jobs import reproduced_contrast as rc
from memjax.metrics.groups import memorization_metrics
from memjax.volume import volume_growth
from memjax.volume_settings import nested_axes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_module(name):
    path = os.path.join(REPO, "configs", name)
    spec = importlib.util.spec_from_file_location(f"cfg_{name[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_preset_is_algorithm1_as_written():
    mod = _config_module("digits_audit.py")
    cfg = mod.get_config("paper")
    audit.validate_config(cfg)
    ec = cfg.ease
    assert ec.grid_steps == 1000 and ec.algorithm1.enabled
    opts = ease_rows.row_options(ec, "algorithm1")
    assert (opts["method"], opts["accumulate"], opts["sigma"]) == ("finite_difference", "norms",
                                                                   0.05)
    assert tuple(map(tuple, ec.algorithm1.settings)) == ((64, 1000),)   # N = min(100, D = 64)
    # memjax's own rows stay exact tangents and the true volume, beside it
    for kind in ("network", "exact"):
        o = ease_rows.row_options(ec, kind)
        assert (o["method"], o["accumulate"]) == ("jvp", "qr")
    assert (-1, 1000) in tuple(map(tuple, ec.exact.settings))
    assert ease_rows.labels(ec, ease_rows.row_kinds(ec)) == {
        "network": "network: memjax exact (jvp, qr)",
        "algorithm1": "network: Algorithm 1 (paper 000, FD sigma=0.05, norms)",
        "exact": "exact score: memjax exact (jvp, qr)"}
    # N = 100 when D >= 100 (CIFAR-10: D = 3072); the default audit leaves Algorithm 1 off
    cfg.train.model.update(image_size=32, channels=3)
    assert mod._paper_axes(cfg.train) == 100 == ease_rows.paper_num_axes(3072)
    assert not mod.get_config().ease.algorithm1.enabled
    with pytest.raises(ValueError, match="ease.algorithm1.accumulate"):
        bad = mod.get_config("paper")
        bad.ease.algorithm1.accumulate = "sum"
        audit.validate_config(bad)


SOURCE = '''
import numpy as np
import jax.numpy as jnp
from sklearn.datasets import load_digits
import memjax as mj


def gaussian_digits():
    """(score_fn, sde): the exact score of a Gaussian fitted to the 8x8 digits in [-1, 1]."""
    x = load_digits().images.reshape(-1, 64) / 8.0 - 1.0
    cov = np.cov(x.T) + 1e-2 * np.eye(64)
    sde = mj.VPSDE()
    g = mj.scores.gaussian(jnp.asarray(x.mean(0), jnp.float32), jnp.asarray(cov, jnp.float32),
                           sde)
    return (lambda y, t: g(y.reshape(64), t).reshape(y.shape)), sde
'''


@pytest.fixture
def gaussian_source(tmp_path, monkeypatch):
    (tmp_path / "p000_source.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "p000_source:gaussian_digits"
    sys.modules.pop("p000_source", None)


def _tiny_paper_config(source):
    cfg = _config_module("digits_audit.py").get_config("paper")
    cfg.model.source = source
    cfg.train.data.update(num_train=2, num_heldout=2)       # + flips: 4 trained, 4 held out
    cfg.ease.check_stability = False
    cfg.ease.algorithm1.settings = ((3, 2),)
    cfg.ease.network.settings = ((1, 1),)
    cfg.ease.exact.settings = ((2, 1),)
    cfg.sampling.num_samples = 0
    return cfg


def _direct(score_fn, sde, images, key, n, steps, **opts):
    out = []
    for i, x in enumerate(images):
        k = jax.random.fold_in(key, i)
        r = volume_growth(score_fn, sde, x, num_axes=n, num_steps=1000, stop_after=steps,
                          initial_axes=nested_axes(k, n, x.shape), key=k,
                          check_stability=False, **opts)
        out.append(float(r.log_growth[-1]))
    return np.asarray(out)


@pytest.mark.slow
def test_audit_reports_algorithm1_rows_labelled_beside_memjax_rows(gaussian_source, tmp_path):
    cfg = _tiny_paper_config(gaussian_source)
    report = audit.run_audit(cfg, str(tmp_path / "a"), progress=False, log=lambda s: None)
    table = {r["label"]: r for rows in report["ease_of_reproduction"].values() for r in rows}
    a1 = table["network: Algorithm 1 (paper 000, FD sigma=0.05, norms)"]
    assert (a1["num_axes"], a1["steps"]) == (3, 2)
    assert "network: memjax exact (jvp, qr)" in table and "exact score: memjax exact (jvp, qr)" in table
    assert report["settings_used"]["row_options"]["algorithm1"]["method"] == "finite_difference"
    md = open(tmp_path / "a" / "report.md").read()
    assert "| network: Algorithm 1 (paper 000, FD sigma=0.05, norms) | 3 | 2 |" in md
    # the numbers are Algorithm 1's: direct calls with the paper's options, same axes
    score_fn, sde = sys.modules["p000_source"].gaussian_digits()
    subject = audit.prepare_model(cfg, str(tmp_path / "a"), log=lambda s: None)
    images = np.concatenate([subject.train, subject.heldout])
    g = _direct(score_fn, sde, images, jax.random.fold_in(jax.random.key(0), 0), 3, 2,
                method="finite_difference", accumulate="norms", sigma=0.05)
    # float32: the audit runs the images as one vmapped batch, the direct calls one at a time,
    # so XLA fuses the finite differences differently (measured 1.1e-5 relative apart in CI)
    np.testing.assert_allclose([a1["mean_trained"], a1["mean_heldout"]],
                               [g[:4].mean(), g[4:].mean()], rtol=1e-4)


@pytest.mark.slow
def test_sweep_rows_are_algorithm1_at_each_sigma_and_n(gaussian_source, tmp_path):
    cfg = _config_module("digits_audit_sweep.py").get_config()
    tiny = _tiny_paper_config(gaussian_source)
    cfg.model, cfg.train = tiny.model, tiny.train
    cfg.sweep.update(images_per_group=2, num_axes=(2,), sigmas=(0.01,), sigma_axes=2,
                     report_steps=(1, 2))
    assert ease_sweep.sweep_settings(cfg.sweep, 64) == ((2, 0.05), (2, 0.01))
    out = ease_sweep.run_ease_sweep(cfg, str(tmp_path / "s"), log=lambda s: None)
    assert json.load(open(tmp_path / "s" / "sweep.json"))["rows"] == out["rows"]
    assert os.path.exists(tmp_path / "s" / "sweep.png")
    score_fn, sde = sys.modules["p000_source"].gaussian_digits()
    subject = audit.prepare_model(cfg, str(tmp_path / "s"), log=lambda s: None)
    images = np.concatenate([subject.train[:2], subject.heldout[:2]])
    for sigma in (0.05, 0.01):
        g = _direct(score_fn, sde, images, jax.random.fold_in(jax.random.key(0), 0), 2, 2,
                    method="finite_difference", accumulate="norms", sigma=sigma)
        row = next(r for r in out["rows"] if r["sigma"] == sigma and r["steps"] == 2)
        np.testing.assert_allclose([row["mean_trained"], row["mean_heldout"]],
                                   [g[:2].mean(), g[2:].mean()], rtol=1e-5)
    with pytest.raises(ValueError, match="sweep.num_axes"):
        cfg.sweep.num_axes = (65,)
        ease_sweep.sweep_settings(cfg.sweep, 64)


def test_reproduced_split_on_a_constructed_case():
    rng = np.random.default_rng(0)
    train = rng.uniform(-1, 1, (6, 4, 4, 1)).astype(np.float32)
    samples = np.stack([train[2] + 1e-3 * rng.standard_normal((4, 4, 1)),     # copy of 2
                        train[5],                                               # exact copy of 5
                        0.5 * (train[0] + train[1]),                            # between 0 and 1
                        rng.uniform(-1, 1, (4, 4, 1))]).astype(np.float32)     # a new image
    m = memorization_metrics(samples, train, n=5, alpha=0.5)
    mask = rc.reproduced_mask(m["nearest"], m["normalized_l2"], 6, 1.0 / 3.0)
    assert np.flatnonzero(mask).tolist() == [2, 5]
    assert m["normalized_l2"][2] > 1.0 / 3.0 and m["normalized_l2"][3] > 1.0 / 3.0
    pos, neg = rc.contrast_groups(mask, 8, seed=0)
    assert pos.tolist() == [2, 5] and sorted(neg.tolist()) == [0, 1, 3, 4]
    pos1, neg1 = rc.contrast_groups(mask, 1, seed=0)
    assert pos1.tolist() == [2] and len(neg1) == 1 and neg1[0] in (0, 1, 3, 4)
    st = rc.contrast_stats(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    assert st["auroc"] == 1.0 and st["mean_reproduced"] == 4.0
    assert st["mann_whitney_p"] == pytest.approx(0.1, abs=1e-12)   # exact: 2 / C(6, 3)
    with pytest.raises(ValueError, match="nearest"):
        rc.reproduced_mask(np.array([6]), np.array([0.1]), 6, 0.3)
