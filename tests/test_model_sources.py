"""Model sources for the jobs (memjax.jobs.sources) and the array-level audit entry point."""

import importlib.util
import os
import sys
import textwrap

import jax
import numpy as np
import pytest

import memjax as mj
from memjax import audit
from memjax.data import data_config, load_dataset
from memjax.jobs import sources

SOURCE_MODULE = '''
import memjax as mj
from memjax.data import data_config, load_dataset


def exact_digits():
    """The exact empirical score of the audit's trained split: a perfect memoriser."""
    ds = load_dataset(data_config(num_train={n}, num_heldout={n}, seed=0))
    sde = mj.VPSDE()
    return mj.scores.empirical(ds.train, sde), sde
'''


def test_audit_arrays_exact_score_full_volume_separates_trained_from_heldout():
    """REFERENCE.md: the exact score of the training set separates trained from held-out
    images completely in the full volume (N = D); one axis over one step does not."""
    ds = load_dataset(data_config(num_train=12, num_heldout=12, seed=0))
    sde = mj.VPSDE()
    res = audit.audit_arrays(mj.scores.empirical(ds.train, sde), sde, ds.train, ds.heldout,
                             key=jax.random.key(0), settings=((-1, 100), (1, 1)), batch_size=24)
    full, one = res["N=64,steps=100"], res["N=1,steps=1"]
    assert full["auroc"] == 1.0 and full["p_value"] < 1e-6
    assert full["mean_trained"] > full["mean_heldout"] + 50
    assert full["trained"].shape == (12,) and full["heldout"].shape == (12,)
    assert np.all(np.isfinite(full["trained"])) and full["num_axes"] == 64
    assert one["auroc"] < 0.9  # the paper's N = 1, 1 step is not a membership test here


def test_audit_arrays_rejects_bad_input_naming_it():
    sde = mj.VPSDE()
    x = np.zeros((4, 8, 8, 1), np.float32)
    score = mj.scores.empirical(x, sde)
    with pytest.raises(ValueError, match="heldout: expected images of shape"):
        audit.audit_arrays(score, sde, x, np.zeros((4, 4, 4, 1)), key=jax.random.key(0))
    with pytest.raises(ValueError, match="trained: expected 4 dimensions"):
        audit.audit_arrays(score, sde, x[0], x, key=jax.random.key(0))
    with pytest.raises(ValueError, match="sde: expected"):
        audit.audit_arrays(score, "vp", x, x, key=jax.random.key(0))
    with pytest.raises(ValueError, match="settings"):
        audit.audit_arrays(score, sde, x, x, key=jax.random.key(0), settings=((0, 1),))


def _source_module(tmp_path, monkeypatch, n=8):
    (tmp_path / "my_exact_model.py").write_text(textwrap.dedent(SOURCE_MODULE.format(n=n)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_exact_model", raising=False)  # another test's copy
    return "my_exact_model:exact_digits"


def test_callable_source_and_its_data(tmp_path, monkeypatch):
    spec = _source_module(tmp_path, monkeypatch)
    t = sources.load_target(spec, data_config(num_train=8, num_heldout=8, seed=0))
    assert t.source.trained is None and "VPSDE schedule" in t.source.description
    assert t.dataset.train.shape == (8, 8, 8, 1) and t.dataset.heldout.shape == (8, 8, 8, 1)
    x = t.dataset.train[0]
    np.testing.assert_allclose(t.source.score_fn(x, 0.5),
                               mj.scores.empirical(t.dataset.train, mj.VPSDE())(x, 0.5), rtol=1e-6)
    # held-out images from a second data section (e.g. a test split)
    t2 = sources.load_target(spec, data_config(num_train=8, num_heldout=0, seed=0),
                             heldout_config=data_config(num_train=5, num_heldout=0, seed=7))
    np.testing.assert_array_equal(t2.dataset.train, t.dataset.train)
    np.testing.assert_array_equal(
        t2.dataset.heldout, load_dataset(data_config(num_train=5, num_heldout=0, seed=7)).train)
    assert t2.dataset.heldout_source.shape == (5,) and "held out" in t2.dataset.name
    with pytest.raises(ValueError, match="heldout_data.source"):
        sources.load_target(spec, data_config(), heldout_config=data_config(source="hdf5"))
    with pytest.raises(ValueError, match="data: model.source 'my_exact_model:exact_digits' is not"):
        sources.load_target(spec, None)
    with pytest.raises(ValueError, match="model.source: cannot import 'no_such_mod:f'"):
        sources.load_target("no_such_mod:f", None)
    (tmp_path / "bad_model.py").write_text("def f():\n    return 3\n")
    with pytest.raises(ValueError, match=r"model.source: bad_model:f must return a \(score_fn"):
        sources.load_target("bad_model:f", None)


def test_callable_source_model_id_follows_the_module_source(tmp_path, monkeypatch):
    spec = _source_module(tmp_path, monkeypatch)
    a = sources.load_model_source(spec).model_id
    assert sources.load_model_source(spec).model_id == a
    (tmp_path / "my_exact_model.py").write_text(
        (tmp_path / "my_exact_model.py").read_text() + "\n# retrained\n")
    assert sources.load_model_source(spec).model_id != a


def _config_module(name):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                        f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _audit_config(spec, n=8):
    c = _config_module("digits_audit").get_config("tiny")
    c.model.source = spec
    c.data = data_config(num_train=n, num_heldout=n, seed=0)
    c.ease.network.settings, c.ease.exact.settings = ((1, 1), (-1, 100)), ((-1, 100),)
    c.sampling.num_samples = 0
    return c


def test_audit_end_to_end_from_a_callable_source(tmp_path, monkeypatch):
    """The audit of ``module:function`` returning the exact score of the config's trained split:
    its network rows are a perfect memoriser's,
    and the full volume separates trained from held out."""
    spec = _source_module(tmp_path, monkeypatch)
    lines = []
    report = audit.run_audit(_audit_config(spec), str(tmp_path / "audit"), progress=False,
                             log=lines.append)
    assert report["model"]["description"] == "my_exact_model:exact_digits, VPSDE schedule"
    net = report["auroc_train_vs_heldout"]["network"]
    assert net["N=64,steps=100"] == 1.0, net
    assert report["auroc_train_vs_heldout"]["exact"]["N=64,steps=100"] == 1.0
    assert any("my_exact_model:exact_digits" in line for line in lines)


def test_sample_job_from_a_callable_source(tmp_path, monkeypatch):
    """The sample job on ``module:function`` (the exact score, a perfect memoriser): the
    samples land on training images, and the stage key is the source's model id."""
    from memjax.jobs import sample as sample_job

    spec = _source_module(tmp_path, monkeypatch, n=4)
    c = _config_module("digits_sample").get_config("tiny")
    c.model.source = spec
    c.data = data_config(num_train=4, num_heldout=4, seed=0)
    c.update(num_samples=4, chunk_size=4, num_steps=50)
    target = sources.job_target(c, str(tmp_path / "s"))
    assert target.source.trained is None and target.dataset.train.shape == (4, 8, 8, 1)
    stats = sample_job.run(c, str(tmp_path / "s"), target, log=lambda s: None)
    assert stats["complete"] and stats["median_normalized_l2"] < 1 / 3, stats
    c.label = 3
    with pytest.raises(ValueError, match="label: my_exact_model:exact_digits"):
        sample_job.run(c, str(tmp_path / "s"), target)
    c.label, c.target_workdir = -1, "/some/workdir"
    with pytest.raises(ValueError, match="model.source, target_workdir: set at most one"):
        sources.job_target(c, str(tmp_path / "s"))


@pytest.mark.parametrize("variant", ["tfds", "folder"])
def test_cifar10_diffusers_config_validates(variant):
    module = _config_module("cifar10_diffusers_audit")
    c = module.get_config(variant)
    audit.validate_config(c)
    assert "train" not in c and c.model.source.startswith("diffusers:")
    assert c.data.source == c.heldout_data.source == variant
    if variant == "tfds":
        assert (c.data.split, c.heldout_data.split) == ("train", "test")
    c.heldout_data.num_heldout = -2
    with pytest.raises(ValueError, match="heldout_data.num_heldout"):
        audit.validate_config(c)
    with pytest.raises(ValueError, match="config argument"):
        module.get_config("hdf5")
