"""End to end: ``memjax.scripts.sample`` and ``memjax.scripts.side`` on the tiny digits configs,
interrupted and resumed. The tiny target (a 20-step U-Net) makes the numbers meaningless; the
tests check the files, the resumption (finished work is not recomputed) and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _config(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("tiny")


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """The tiny target, trained by ``side.load_target`` (empty target_workdir -> trains)."""
    from memjax import side

    wd = str(tmp_path_factory.mktemp("target_owner"))
    cfg = _config("digits_side")
    trained = side.load_target("", cfg.target, wd)
    assert trained.step == cfg.target.training.num_steps
    # a second call finds the finished training and only restores it
    mtime = os.path.getmtime(os.path.join(wd, "target", "config.json"))
    again = side.load_target("", cfg.target, wd)
    assert os.path.getmtime(os.path.join(wd, "target", "config.json")) == mtime
    assert again.step == trained.step
    return os.path.join(wd, "target"), trained


def _script(module, config, workdir, *overrides):
    cmd = [sys.executable, "-m", module, f"--config={os.path.join(ROOT, 'configs', config)}:tiny",
           f"--workdir={workdir}", *overrides]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_sample_script_resumes(target, tmp_path):
    from memjax.jobs import sample as sample_job

    tdir, trained = target
    cfg = _config("digits_sample")
    wd = str(tmp_path / "sample")
    part = sample_job.run(cfg, wd, trained, stop_after_chunks=1)  # "interrupted" after 1 chunk
    assert part == {"complete": False, "chunks_done": 1}
    first = os.path.join(wd, "samples", "chunk_00000.npz")
    mtime, before = os.path.getmtime(first), np.load(first)["images"]
    assert not os.path.exists(os.path.join(wd, "samples", "chunk_00001.npz"))
    _script("memjax.scripts.sample", "digits_sample.py", wd, f"--config.target_workdir={tdir}")
    assert os.path.getmtime(first) == mtime
    samples = np.load(os.path.join(wd, "samples.npz"))["images"]
    assert samples.shape == (cfg.num_samples, 8, 8, 1)
    np.testing.assert_array_equal(samples[:cfg.chunk_size], before)
    stats = json.load(open(os.path.join(wd, "stats.json")))
    assert stats["complete"] and stats["num_samples"] == cfg.num_samples
    for name in ("grid.png", "nearest.png"):
        assert os.path.getsize(os.path.join(wd, name)) > 0
    # the same chunk recomputed from scratch equals the cached one (seeded)
    again = sample_job.run(cfg, str(tmp_path / "again"), trained, stop_after_chunks=1)
    assert again["chunks_done"] == 1
    np.testing.assert_allclose(np.load(os.path.join(tmp_path, "again", "samples",
                                                    "chunk_00000.npz"))["images"], before, atol=1e-5)


def test_side_script_resumes(target, tmp_path):
    from memjax import side

    tdir, trained = target
    cfg = _config("digits_side")
    cfg.target_workdir = tdir
    wd = str(tmp_path / "side")
    part = side.run(cfg, wd, trained=trained, stop_after_lambdas=1)  # "interrupted"
    assert part["lambdas_done"] == [0.0] and not part["complete"]
    done = os.path.join(wd, "lambdas", side.lambda_tag(0) + ".npz")
    cached = {n: os.path.getmtime(os.path.join(wd, n)) for n in
              ("synthetic.npz", "pseudo_labels.npz", "tdkd.json", "classifier.json")}
    mtime = os.path.getmtime(done)
    out = _script("memjax.scripts.side", "digits_side.py", wd, f"--config.target_workdir={tdir}")
    assert "Random vs SIDE" in out
    assert os.path.getmtime(done) == mtime
    for n, m in cached.items():
        assert os.path.getmtime(os.path.join(wd, n)) == m, n
    summary = json.load(open(os.path.join(wd, "summary.json")))
    assert summary["complete"] and summary["lambdas_done"] == [0.0, 2.0, 5.0]
    t1 = summary["table1"]
    assert set(t1["bands"]) == set(cfg.metrics.bands) and t1["lambdas"] == [5.0]
    assert set(t1["bands"]["high"]) == {"ams", "ums", "ums_all"}
    assert "mean over lambda in [5, 9]" in out and "Post hoc" in out
    csv = open(os.path.join(wd, "results.csv")).read().strip().splitlines()
    n_g = cfg.extraction.samples_per_class * summary["num_classes"]
    assert [ln.split(",")[:2] for ln in csv[1:]] == [["0", str(n_g)], ["2", str(n_g)],
                                                     ["5", str(n_g)]]
    for name in ("results.md", "ams_ums_vs_lambda.png", "extracted.png"):
        assert os.path.getsize(os.path.join(wd, name)) > 0
    tdkd = json.load(open(os.path.join(wd, "tdkd.json")))
    assert len(tdkd["heldout_kl"]) == len(tdkd["steps"]) and np.isfinite(tdkd["heldout_kl"]).all()
    lam = np.load(os.path.join(wd, "lambdas", side.lambda_tag(2) + ".npz"))
    assert lam["images"].shape == (n_g, 8, 8, 1)
    np.testing.assert_array_equal(lam["classes"], np.repeat(np.arange(summary["num_classes"]),
                                                            cfg.extraction.samples_per_class))


def _mtimes(root):
    return {os.path.relpath(os.path.join(d, f), root): os.path.getmtime(os.path.join(d, f))
            for d, _, files in os.walk(root) for f in files}


def test_sample_changed_fields_recompute_only_their_chunks(target, tmp_path):
    """More samples: the finished chunks are reused, only the new one is drawn. Another sampler
    grid: every chunk is redrawn, and the samples equal those of a fresh workdir."""
    from memjax.jobs import sample as sample_job

    _, trained = target
    cfg = _config("digits_sample")
    wd = str(tmp_path / "s")
    sample_job.run(cfg, wd, trained)
    before = _mtimes(os.path.join(wd, "samples"))
    cfg.num_samples = cfg.num_samples + cfg.chunk_size
    lines = []
    sample_job.run(cfg, wd, trained, log=lines.append)
    after = _mtimes(os.path.join(wd, "samples"))
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 1
    assert lines == []
    cfg.num_steps = cfg.num_steps + 1
    sample_job.run(cfg, wd, trained, log=lines.append)
    assert len(lines) == len(after) and all("recomputing" in ln for ln in lines)
    sample_job.run(cfg, str(tmp_path / "fresh"), trained)
    np.testing.assert_array_equal(np.load(os.path.join(wd, "samples.npz"))["images"],
                                  np.load(os.path.join(tmp_path, "fresh", "samples.npz"))["images"])


def test_side_changed_field_recomputes_only_the_affected_stages(target, tmp_path):
    """A new tdkd.num_steps refits the student and redoes the extractions; the classifier, the
    synthetic set and the pseudo-labels are reused, and the tables equal a fresh run's."""
    from memjax import side

    _, trained = target
    cfg = _config("digits_side")
    wd = str(tmp_path / "side")
    side.run(cfg, wd, trained=trained, log=lambda s: None)
    keep = {n: os.path.getmtime(os.path.join(wd, n)) for n in
            ("synthetic.npz", "pseudo_labels.npz", "classifier.json")}
    lams = {n: os.path.getmtime(os.path.join(wd, "lambdas", n))
            for n in os.listdir(os.path.join(wd, "lambdas"))}
    cfg.tdkd.num_steps = cfg.tdkd.num_steps + 5
    lines = []
    side.run(cfg, wd, trained=trained, log=lines.append)
    assert {n: os.path.getmtime(os.path.join(wd, n)) for n in keep} == keep
    assert all(os.path.getmtime(os.path.join(wd, "lambdas", n)) > m for n, m in lams.items())
    assert lines[0] == "[tdkd] its inputs changed since it was stored: refitting"
    assert len(lines) == 1 + len(lams)
    side.run(cfg, str(tmp_path / "fresh"), trained=trained, log=lambda s: None)
    assert open(os.path.join(wd, "results.csv")).read() == \
        open(os.path.join(tmp_path, "fresh", "results.csv")).read()


def test_side_time_independent_and_classes_ablation(target, tmp_path, monkeypatch):
    """The ablation switches end to end: k-means labels guided by a time-independent classifier
    (its own stage, ti.json), and the number-of-classes sweep reusing the synthetic set."""
    from memjax import side
    from memjax.jobs import side_ablation

    _, trained = target
    cfg = _config("digits_side")
    cfg.labels, cfg.num_clusters, cfg.guidance_classifier = "kmeans", 3, "ti"
    cfg.extraction.lambdas = (0, 5)
    wd = str(tmp_path / "side")
    s = side.run(cfg, wd, trained=trained, log=lambda s: None)
    assert s["guidance_classifier"] == "ti" and s["num_classes"] == 3
    assert os.path.isdir(os.path.join(wd, "ti_classifier"))
    assert not os.path.exists(os.path.join(wd, "td_classifier"))
    assert len(json.load(open(os.path.join(wd, "ti.json")))["heldout_kl"]) >= 2
    assert "guidance classifier: ti" in open(os.path.join(wd, "results.md")).read()
    cfg.guidance_classifier = "td"
    cfg.classes_ablation.update(num_clusters=(2, 4), lambdas=(5.0,), samples_per_class=3)
    from memjax import sampling

    def no_sampling(*a, **k):
        raise AssertionError("the synthetic set was redrawn instead of reused")

    monkeypatch.setattr(sampling, "sample", no_sampling)    # the shared stage must be reused
    out = side_ablation.classes_sweep(cfg, wd, trained, log=lambda s: None)
    ks = sorted(r["num_classes"] for r in out["rows"])
    assert ks == [2, 4] and {r["num_generated"] for r in out["rows"]} == {6, 12}
    assert "5/high/ams" in out["fits"]
    for name in ("classes.md", "classes.csv", "classes.png", "classes.json"):
        assert os.path.getsize(os.path.join(wd, "classes", name)) > 0
