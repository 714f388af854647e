"""The memorization audit (memjax.audit, memjax.scripts.audit, configs/digits_audit.py).

Fast tests check the pieces against closed forms and established implementations: the nested
volume-growth curves against the exact Euler log-determinant of Gaussian data (REFERENCE.md)
and against separate runs, the statistics against scikit-learn / SciPy, the memorization
numbers against a NumPy brute force. Slow tests run the whole audit on a tiny config, check
that a second run reuses every stage, and that a run killed mid-way resumes to the same report.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
from memjax import audit, workdir
from memjax.lyapunov import orthonormal_axes
from memjax.volume import volume_growth

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "digits_audit.py")


def _load_config(path=CONFIG):
    spec = importlib.util.spec_from_file_location("audit_config_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


# -- settings ------------------------------------------------------------------------------------
def test_parse_settings_full_volume_sorts_and_dedups():
    s = audit.parse_settings([(1, 1), (-1, 10), (1, 1), (8, 100)], dim=64, grid_steps=1000)
    assert s == (audit.Setting(1, 1), audit.Setting(8, 100), audit.Setting(64, 10))


@pytest.mark.parametrize("bad, match", [
    ([], "at least one"), ([(0, 1)], "positive"), ([(1, 0)], "positive"),
    ([(65, 1)], "exceeds the image dimension"), ([(1, 1001)], "exceeds grid_steps"),
    ([(1, 2, 3)], "pairs"), ([(1.5, 2)], "integers"), (3, "list of")])
def test_parse_settings_rejects(bad, match):
    with pytest.raises(ValueError, match=f"ease.network.settings: .*{match}"):
        audit.parse_settings(bad, dim=64, grid_steps=1000, name="ease.network.settings")


def test_plan_runs_is_the_pareto_front_and_covers_every_setting():
    settings = audit.parse_settings([(1, 1), (1, 10), (1, 100), (8, 1), (8, 10), (64, 1),
                                     (64, 10)])
    runs = audit.plan_runs(settings, "qr")
    assert runs == (audit.Setting(1, 100), audit.Setting(64, 10))
    for s in settings:
        r = audit.covering_run(s, runs)
        assert r.num_axes >= s.num_axes and r.steps >= s.steps
    assert audit.covering_run(audit.Setting(1, 10), runs) == audit.Setting(1, 100)
    assert audit.covering_run(audit.Setting(8, 1), runs) == audit.Setting(64, 10)
    # "norms" accumulation does not nest: every setting is its own run.
    assert audit.plan_runs(settings, "norms") == settings


# -- nested axes and curves ----------------------------------------------------------------------
def test_nested_axes_are_orthonormal_prefixes_and_survive_the_reference_initialisation():
    key = jax.random.key(3)
    ax = audit.nested_axes(key, 6, (2, 3, 1))
    flat = np.asarray(ax).reshape(6, -1)
    norms = np.linalg.norm(flat, axis=1)
    np.testing.assert_allclose(norms, 1 - 1e-3 * np.arange(6), rtol=1e-6)
    unit = flat / norms[:, None]
    np.testing.assert_allclose(unit @ unit.T, np.eye(6), atol=1e-6)
    # the reference code's "sort by norm, Gram-Schmidt" keeps the order and the directions
    np.testing.assert_allclose(np.asarray(orthonormal_axes(ax)).reshape(6, -1), unit, atol=1e-6)
    # with JAX's partitionable threefry the Gaussian rows of an N-frame start with those of a
    # k-frame from the same key, so runs with different N share their first axes
    if jax.config.jax_threefry_partitionable:
        np.testing.assert_allclose(np.asarray(audit.nested_axes(key, 3, (2, 3, 1))),
                                   np.asarray(ax[:3]), atol=1e-6)


def _gaussian(d=4):
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.array([0.02, 0.3, 1.0, 2.5])[:d]
    return s, (u * s) @ u.T


def test_full_volume_curves_equal_the_exact_euler_log_determinant(x64):
    """Gaussian data: the Euler map on the grid is linear, diagonal in the eigenbasis, so
    log|det| after s steps is sum_{k<s} sum_i log|1 + dt j_i(t_k)| (REFERENCE.md)."""
    sde = mj.VPSDE()
    s, cov = _gaussian()
    score = mj.scores.gaussian(jnp.zeros(4), jnp.asarray(cov), sde)
    images = jax.random.normal(jax.random.key(1), (3, 4), jnp.float64)
    T, steps = 20, 7
    curves = audit.volume_curves(score, sde, images, num_axes=4, steps=steps,
                                 report_axes=(4,), report_steps=(1, 4, 7), grid_steps=T,
                                 key=jax.random.key(0), batch_size=2, check_stability=False)
    dt = sde.t_max / T
    t = sde.t_min + dt * np.arange(steps)
    m = 0.5 * sde.beta_min * t + 0.25 * (sde.beta_max - sde.beta_min) * t**2
    lam = 1 + (s[None, :] - 1) * np.exp(-2 * m)[:, None]
    beta = sde.beta_min + t * (sde.beta_max - sde.beta_min)
    j = -0.5 * beta[:, None] * (1 - 1 / lam)
    expected = np.cumsum(np.log(np.abs(1 + dt * j)).sum(1))[[0, 3, 6]]
    assert curves.growth.shape == (3, 1, 3)
    for i in range(3):  # basis-independent: the same for every image and every start
        np.testing.assert_allclose(curves.growth[i, 0], expected, rtol=1e-10, atol=1e-10)
    assert curves.stable.shape == (3, 3)


def test_curve_prefixes_equal_separate_runs_with_the_first_axes(x64):
    sde = mj.VPSDE()
    from memjax.data import load_digits

    digits = load_digits()[:6].astype(np.float64)
    score = mj.scores.empirical(jnp.asarray(digits[:4]), sde)
    key = jax.random.key(7)
    curves = audit.volume_curves(score, sde, digits, num_axes=5, steps=6, report_axes=(1, 3, 5),
                                 report_steps=(1, 2, 6), key=key, batch_size=4)
    for i in (5,):  # a held-out image
        ax = audit.nested_axes(jax.random.fold_in(key, i), 5, digits.shape[1:], jnp.float64)
        for a_idx, k in ((1, 3),):  # the prefix k = 3 of the 5-axis run
            res = volume_growth(score, sde, jnp.asarray(digits[i]), num_axes=k, num_steps=1000,
                                stop_after=6, initial_axes=ax[:k], key=key)
            np.testing.assert_allclose(curves.growth[i, a_idx], np.asarray(res.log_growth)[[0, 1, 5]],
                                       rtol=1e-9, atol=1e-9)


def test_volume_curves_rejects_bad_input_before_compiling():
    sde = mj.VPSDE()
    score = mj.scores.empirical(jnp.zeros((2, 2, 2, 1)), sde)
    x = jnp.zeros((3, 2, 2, 1))
    kw = dict(key=jax.random.key(0), report_axes=(1,), report_steps=(1,))
    with pytest.raises(ValueError, match="num_axes: expected at most D = 4"):
        audit.volume_curves(score, sde, x, num_axes=5, steps=1, **kw)
    with pytest.raises(ValueError, match="report_steps"):
        audit.volume_curves(score, sde, x, num_axes=1, steps=2, key=jax.random.key(0),
                            report_axes=(1,), report_steps=(3,))
    with pytest.raises(ValueError, match="report_axes: prefixes of the axes need"):
        audit.volume_curves(score, sde, x, num_axes=2, steps=1, key=jax.random.key(0),
                            report_axes=(1, 2), report_steps=(1,), accumulate="norms")
    with pytest.raises(ValueError, match="initial_axes: set by volume_curves"):
        audit.volume_curves(score, sde, x, num_axes=1, steps=1, initial_axes=x[:1], **kw)


# -- statistics and memorization numbers ---------------------------------------------------------
def test_separation_matches_scikit_learn_and_scipy():
    from scipy.stats import ttest_ind
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 1.0, 40)
    b = np.r_[rng.normal(0.0, 2.0, 50), a[:3]]  # ties across the classes
    out = audit.separation(a, b)
    assert out["auroc"] == pytest.approx(roc_auc_score(np.r_[np.ones(40), np.zeros(53)],
                                                       np.r_[a, b]), abs=1e-12)
    ref = ttest_ind(a, b, equal_var=False)
    assert out["t_statistic"] == pytest.approx(ref.statistic, rel=1e-10)
    assert out["p_value"] == pytest.approx(ref.pvalue, rel=1e-8)
    assert out["mean_trained"] == pytest.approx(a.mean())
    assert out["std_heldout"] == pytest.approx(b.std(ddof=1))
    assert audit.separation(a + 100, b)["auroc"] == 1.0


def test_memorization_metrics_against_a_brute_force():
    from memjax.data import load_digits

    x = load_digits()
    train, other = x[:60], x[60:80]
    rng = np.random.default_rng(1)
    queries = np.concatenate([train[:5] + 0.01 * rng.standard_normal(train[:5].shape),
                              other]).astype(np.float32)
    out = audit.memorization_metrics(queries, train, n=10, alpha=0.5, delta=1 / 3)
    d = np.linalg.norm(queries.reshape(25, 1, -1).astype(np.float64)
                       - train.reshape(1, 60, -1), axis=-1)
    ds = np.sort(d, axis=1)
    np.testing.assert_allclose(out["l2"], ds[:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["normalized_l2"], ds[:, 0] / (0.5 * ds[:, :10].mean(1)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["d1_d2"], ds[:, 0] / ds[:, 1], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["nearest"], d.argmin(1))
    assert out["memorized"][:5].all() and out["frac_memorized"] == pytest.approx(
        np.mean(ds[:, 0] / (0.5 * ds[:, :10].mean(1)) < 1 / 3))
    assert out["ums"] == pytest.approx(5 / 25)


# -- config --------------------------------------------------------------------------------------
def test_default_config_documents_every_field_and_validates():
    cfg = _load_config()
    audit.validate_config(cfg)
    text = open(CONFIG).read()
    for group in ("model", "ease", "sampling", "memorization", "diverse", "report"):
        for field in cfg[group].keys():
            if isinstance(cfg[group][field], type(cfg.ease)):
                for sub in cfg[group][field].keys():
                    assert f"{group}.{field}.{sub}" in text or f"{field}.{sub}" in text, (group, field, sub)
            else:
                assert f"{group}.{field}" in text, (group, field)
    # the paper's setting (N = 1 over one step of the 1000-step grid) and larger N and steps
    net = audit.parse_settings(cfg.ease.network.settings, dim=64, grid_steps=cfg.ease.grid_steps)
    ex = audit.parse_settings(cfg.ease.exact.settings, dim=64, grid_steps=cfg.ease.grid_steps)
    assert cfg.ease.grid_steps == 1000
    for s in (net, ex):
        assert {audit.Setting(1, 1), audit.Setting(1, 100), audit.Setting(8, 10)} <= set(s)
    assert {audit.Setting(64, 10), audit.Setting(64, 100)} <= set(ex)


@pytest.mark.parametrize("field, value, match", [
    ("ease.method", "fd", "ease.method"), ("ease.accumulate", "x", "ease.accumulate"),
    ("ease.network.settings", ((0, 1),), "ease.network.settings"),
    ("sampling.sampler", "euler", "sampling.sampler"), ("sampling.num_samples", -1,
                                                          "sampling.num_samples"),
    ("memorization.delta", 0.0, "memorization.delta"),
    ("diverse.features", "sscd", "diverse.features"), ("report.num_show", 0, "report.num_show")])
def test_validate_config_names_the_field(field, value, match):
    cfg = _load_config()
    group, *rest = field.split(".")
    node = cfg[group]
    for r in rest[:-1]:
        node = node[r]
    node[rest[-1]] = value
    with pytest.raises(ValueError, match=match):
        audit.validate_config(cfg)


def test_cached_arrays_recomputes_only_when_the_key_changes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3)}

    path = str(tmp_path / "c.npz")
    lines = []
    a, reused = workdir.cached(path, "k1", compute, log=lines.append)
    b, reused2 = workdir.cached(path, "k1", compute, log=lines.append)
    c, reused3 = workdir.cached(path, "k2", compute, log=lines.append)
    assert lines == ["[c] its inputs changed since it was stored: recomputing"]
    assert (reused, reused2, reused3) == (False, True, False) and len(calls) == 2
    np.testing.assert_array_equal(b["a"], np.arange(3))
    with open(path, "wb") as f:  # a truncated cache file is recomputed, not trusted
        f.write(b"PK\x03\x04broken")
    _, reused4 = workdir.cached(path, "k2", compute)
    assert not reused4 and len(calls) == 3


# -- the exact score separates trained from held-out digits in the full volume -------------------
@pytest.mark.slow
def test_exact_score_full_volume_separates_trained_from_heldout_digits():
    """REFERENCE.md "Measured here": complete separation with N = D by step 100; the paper's
    N = 1 over one step does not separate for the exact score."""
    from memjax.data import data_config, load_dataset

    ds = load_dataset(data_config(num_train=64, flip=True))
    sde = mj.VPSDE()
    score = mj.scores.empirical(ds.train, sde)
    res, _ = audit.ease_scores(score, sde, ds.train, ds.heldout,
                               [audit.Setting(64, 100), audit.Setting(1, 1)],
                               key=jax.random.key(0), grid_steps=1000, batch_size=64,
                               options=dict(method="jvp", accumulate="qr", sigma=0.05,
                                            solver="euler", check_stability=True),
                               progress=False, log=lambda s: None)
    full = audit.separation(res[audit.Setting(64, 100)]["trained"],
                            res[audit.Setting(64, 100)]["heldout"])
    one = audit.separation(res[audit.Setting(1, 1)]["trained"], res[audit.Setting(1, 1)]["heldout"])
    assert full["auroc"] >= 0.99 and full["mean_trained"] > full["mean_heldout"] + 100
    assert 0.3 < one["auroc"] < 0.7


# -- end to end ----------------------------------------------------------------------------------
TINY = """
import importlib.util, os
spec = importlib.util.spec_from_file_location("digits_audit", {config!r})
base = importlib.util.module_from_spec(spec); spec.loader.exec_module(base)

def get_config():
    c = base.get_config()
    t = c.train
    t.data.num_train = 8; t.data.num_heldout = 8
    t.model.base_channels = 8; t.model.attn_resolutions = ()
    t.optim.warmup_steps = 0
    t.training.batch_size = 16; t.training.num_steps = 20; t.training.log_every = 10
    t.training.checkpoint_every = 10; t.training.progress = False
    t.training.tensorboard = False; t.training.sample_every = -1
    c.ease.network.settings = ((1, 1), (1, 3), (-1, 2))
    c.ease.network.batch_size = 16
    c.ease.exact.settings = ((1, 1), (4, 2), (-1, 3))
    c.ease.exact.batch_size = 16
    c.sampling.num_samples = 24; c.sampling.num_steps = 10; c.sampling.batch_size = 24
    c.memorization.n = 10
    c.diverse.num_iters = 250; c.diverse.perplexity = 5.0
    c.report.num_show = 4
    return c
"""


def _tiny_config_file(tmp_path):
    path = tmp_path / "tiny_audit.py"
    path.write_text(textwrap.dedent(TINY.format(config=CONFIG)))
    return str(path)


def _run_script(config_file, workdir, *flags, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, "-m", "memjax.scripts.audit", f"--config={config_file}",
                             f"--workdir={workdir}", "--noprogress", *flags], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_tiny_audit_end_to_end_then_reuse_then_resume_after_kill(tmp_path):
    cfg_file = _tiny_config_file(tmp_path)
    wd = tmp_path / "a"
    proc = _run_script(cfg_file, wd)
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out[-3000:]
    report = json.loads((wd / "report.json").read_text())
    # what the issue asks report.json to hold
    for kind in ("network", "exact"):
        assert set(report["auroc_train_vs_heldout"][kind]) == {
            audit.Setting(*s).name for s in report["settings_used"][kind]}
        assert all(0.0 <= v <= 1.0 for v in report["auroc_train_vs_heldout"][kind].values())
        assert all(0.0 <= v <= 1.0 for v in report["welch_p_values"][kind].values())
    assert report["settings_used"]["network"] == [[1, 1], [1, 3], [64, 2]]
    assert report["settings_used"]["network_runs"] == [[1, 3], [64, 2]]
    assert 0.0 <= report["memorization"]["frac_memorized"] <= 1.0
    assert 0 <= report["diverse"]["num_diverse"] <= 24
    assert report["data"] == {"num_trained": 16, "num_heldout": 16, "image_shape": [8, 8, 1],
                              "dimension": 64}
    for fig in ("growth_histograms_network", "growth_histograms_exact", "p_values",
                "easiest_hardest", "samples_nearest"):
        assert (wd / "figures" / f"{fig}.png").stat().st_size > 1000
    md = (wd / "report.md").read_text()
    assert "| exact score: memjax exact (jvp, qr) | 64 | 3 |" in md and "AUROC" in out

    # a second run reuses every stage and writes the same report
    proc = _run_script(cfg_file, wd)
    out2, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out2[-3000:]
    assert sum(": cached" in line for line in out2.splitlines()) == 6
    assert "[model] training" not in out2
    assert json.loads((wd / "report.json").read_text()) == report

    # one field changed: only the stage that reads it (memorization) is recomputed, and its
    # numbers are those of a fresh computation
    proc = _run_script(cfg_file, wd, "--config.memorization.delta=0.9")
    out3, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out3[-3000:]
    assert [ln for ln in out3.splitlines() if "inputs changed" in ln] == [
        "[memorization] its inputs changed since it was stored: recomputing"]
    assert sum(": cached" in line for line in out3.splitlines()) == 5
    changed = json.loads((wd / "report.json").read_text())
    samples = np.load(wd / "audit" / "samples.npz")["samples"]
    from memjax.data import load_split

    split = load_split(str(wd / "model"))
    fresh = audit.memorization_metrics(samples, split.train, delta=0.9)
    assert changed["memorization"]["frac_memorized"] == fresh["frac_memorized"]
    assert changed["ease_of_reproduction"] == report["ease_of_reproduction"]

    # killed mid-way (after the first volume-growth run), it resumes to the same report. The
    # trained model is copied over (resuming training itself is tests/test_training.py's job).
    wd2 = tmp_path / "b"
    shutil.copytree(wd / "model", wd2 / "model")
    proc = _run_script(cfg_file, wd2)
    deadline = time.time() + 1200
    while time.time() < deadline and proc.poll() is None:
        if (wd2 / "audit").is_dir() and list((wd2 / "audit").glob("ease_network_*.npz")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the audit finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (wd2 / "report.json").exists()
    proc = _run_script(cfg_file, wd2)
    out4, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out4[-3000:]
    assert sum(": cached" in line for line in out4.splitlines()) >= 1
    r2 = json.loads((wd2 / "report.json").read_text())
    assert r2 == report


@pytest.mark.parametrize("source", ["tfds", "npz", "folder"])
def test_custom_example_config_validates_for_every_source(source):
    path = os.path.join(REPO, "configs", "audit_custom_example.py")
    spec = importlib.util.spec_from_file_location("audit_custom_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config(source)
    audit.validate_config(cfg)
    assert cfg.train.data.source == source and cfg.train.model.image_size == 32
    with pytest.raises(ValueError, match="config argument"):
        module.get_config("hdf5")
    cfg.model.workdir, cfg.model.checkpoint = "/a", "/b"
    with pytest.raises(ValueError, match="model.workdir, model.checkpoint"):
        audit.validate_config(cfg)
