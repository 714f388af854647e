"""Workdirs: atomic writes, JSON of NumPy values, keyed stages, one writer, and URL workdirs
(gs:// and az:// fakes backed by fsspec's in-memory file system), including training and an
audit run on a URL workdir and their resumes."""

from __future__ import annotations

import json
import os

import fsspec
import jax
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from memjax import workdir as wd


class FakeGCS(MemoryFileSystem):
    """``gs://`` in memory: what etils.epath's fsspec backend talks to when gcsfs is installed."""

    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]


def _fake_filesystem(monkeypatch, cls, root: str):
    """Registers ``cls`` for its protocols (etils.epath through fsspec), yields ``root``."""
    from etils.epath import gpath

    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    for name in cls.protocol:
        fsspec.register_implementation(name, cls, clobber=True)
    cls.store.clear()
    yield root
    cls.store.clear()


@pytest.fixture
def fake_gs(monkeypatch):
    yield from _fake_filesystem(monkeypatch, FakeGCS, "gs://bucket")


class FakeAzure(MemoryFileSystem):
    """``az://`` in memory (adlfs's protocol): a URL orbax cannot write natively, so training
    checkpoints go through memjax's local staging (memjax.checkpoint)."""

    protocol = ("az", "abfs")
    store: dict = {}
    pseudo_dirs = [""]


@pytest.fixture
def fake_az(monkeypatch):
    yield from _fake_filesystem(monkeypatch, FakeAzure, "az://container")


def test_json_of_numpy_and_jax_values(tmp_path):
    obj = {"a": np.float32(1.5), "b": np.arange(3), "c": jax.numpy.ones(2), "d": float("nan"),
           "e": (np.int64(2), np.bool_(True)), "f": {1: "x"}}
    wd.save_json(tmp_path / "o.json", obj)
    assert wd.load_json(tmp_path / "o.json") == {"a": 1.5, "b": [0, 1, 2], "c": [1.0, 1.0],
                                                 "d": None, "e": [2, True], "f": {"1": "x"}}
    assert os.listdir(tmp_path) == ["o.json"]                   # no temporary file left


def test_cached_reuses_only_under_the_same_key_and_lookup_does_not_compute(tmp_path):
    calls, lines = [], []

    def compute():
        calls.append(1)
        return {"x": np.arange(4) * len(calls)}

    stage = tmp_path / "s" / "stage"
    a, r1 = wd.cached(stage, {"field": 1}, compute, log=lines.append)
    b, r2 = wd.cached(stage, {"field": 1}, compute, log=lines.append)
    assert (r1, r2, len(calls), lines) == (False, True, 1, [])
    np.testing.assert_array_equal(a["x"], b["x"])
    assert wd.lookup(stage, {"field": 2}) is None
    c, r3 = wd.cached(stage, {"field": 2}, compute, log=lines.append)
    assert not r3 and lines == ["[stage] its inputs changed since it was stored: recomputing"]
    np.testing.assert_array_equal(wd.lookup(stage, {"field": 2})["x"], np.arange(4) * 2)


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    wd.save_json(tmp_path / "r.json", {"a": 1})
    wd.save_npz(tmp_path / "r.npz", a=np.ones(2))
    arrays, reused = wd.cached(tmp_path / "st", "k", lambda: {"a": np.ones(2)})
    assert not reused and arrays["a"].shape == (2,)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("process0_has_it", [False, True])
def test_lookup_gives_process_zeros_answer_on_every_process(tmp_path, monkeypatch, process0_has_it):
    """``lookup`` decides which stages a job computes: each process follows process 0's answer
    (here process 1's view: it has the stage exactly when process 0 does not)."""
    from jax.experimental import multihost_utils

    if not process0_has_it:
        wd.save_npz(tmp_path / "st.npz", **{wd.KEY_FIELD: np.asarray(wd.fingerprint("k"))},
                    x=np.ones(2))
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "broadcast_one_to_all",
                        lambda x: np.asarray(process0_has_it))
    if process0_has_it:
        with pytest.raises(RuntimeError, match="every process must see the same workdir"):
            wd.lookup(tmp_path / "st", "k")
    else:
        assert wd.lookup(tmp_path / "st", "k") is None


def test_url_workdir_round_trip(fake_gs):
    root = f"{fake_gs}/run"
    wd.save_json(f"{root}/a.json", {"x": 1})
    wd.save_npz(f"{root}/b.npz", y=np.arange(3))
    assert wd.load_json(f"{root}/a.json") == {"x": 1}
    np.testing.assert_array_equal(wd.load_npz(f"{root}/b.npz")["y"], np.arange(3))
    _, reused = wd.cached(f"{root}/stage", "k", lambda: {"z": np.zeros(1)})
    assert not reused and wd.cached(f"{root}/stage", "k", lambda: {})[1]
    assert not os.path.exists("gs:")                           # no local folder named "gs:"


@pytest.mark.slow
def test_audit_with_a_url_workdir_trains_runs_and_resumes(fake_az):
    """The audit on a (fake) az:// workdir: it trains its model there (checkpoints staged
    locally and copied), then writes its stages, report and figures there; a second run
    restores the model from the URL, reuses every stage and writes the same report."""
    from memjax import audit

    import importlib.util

    spec = importlib.util.spec_from_file_location(   # this tree's config, not an installed one
        "cfg", os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs",
                            "digits_audit.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config("tiny")
    cfg.ease.network.settings, cfg.ease.exact.settings = ((1, 2),), ((2, 2),)
    cfg.sampling.update(num_samples=8, num_steps=4, batch_size=8)
    cfg.diverse.method = "knn_support"
    url = f"{fake_az}/audit"
    first = audit.run_audit(cfg, url, progress=False, log=lambda s: None)
    assert [p.name for p in wd.as_path(f"{url}/model/checkpoints").iterdir()][-1] == "20"
    lines = []
    again = audit.run_audit(cfg, url, progress=False, log=lines.append)
    assert again == first
    assert not any("[model] training" in ln for ln in lines), lines
    assert sum(": cached" in ln for ln in lines) == 5, lines
    assert json.loads(wd.as_path(f"{url}/report.json").read_text())["version"] == 1
    assert wd.as_path(f"{url}/figures/p_values.png").exists()
    assert not os.path.exists("az:")

@pytest.mark.slow
def test_training_on_a_url_workdir_resumes_exactly(fake_az, tmp_path, monkeypatch):
    """Training on an az:// workdir (checkpoints staged locally, copied there), stopped after 4
    steps (checkpoint at 3) and resumed from the URL, logs the losses of an uninterrupted local
    run and ends with the same parameters; the staging folders are removed."""
    import tempfile

    from memjax import training
    from test_training import run_tiny, tiny_config, tiny_model

    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    cfg = tiny_config(keep_checkpoints=1)
    full = run_tiny(cfg, tmp_path / "full")
    url = f"{fake_az}/run"
    run_tiny(cfg, url, stop_after=4)
    assert [p.name for p in wd.as_path(f"{url}/checkpoints").iterdir()] == ["3"]
    resumed = run_tiny(cfg, url)
    assert resumed.start_step == 3
    assert [p.name for p in wd.as_path(f"{url}/checkpoints").iterdir()] == ["6"]  # keep=1
    ref = [r["loss"] for r in training.read_metrics(str(tmp_path / "full"))]
    recs = training.read_metrics(url)
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal([r["loss"] for r in recs], ref)
    jax.tree.map(np.testing.assert_array_equal, full.state["params"], resumed.state["params"])
    back = training.load_trained(url, model_fn=tiny_model)
    assert back.step == 6 and back.dataset.num_train == full.dataset.num_train
    assert os.listdir(staging) == [] and not os.path.exists("az:")
