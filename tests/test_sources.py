"""Model and feature sources of the jobs (memjax.jobs.sources)."""

from __future__ import annotations

import numpy as np
import pytest

from memjax.jobs import sources


def test_module_function_model_source(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "import jax.numpy as jnp\nimport memjax as mj\n\n"
        "def gaussian():\n    sde = mj.VPSDE()\n"
        "    return mj.scores.gaussian(jnp.zeros(4), jnp.eye(4), sde), sde\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    src = sources.load_model_source("my_models:gaussian")
    x = np.ones(4, np.float32)
    # N(0, I) data stays N(0, I) under the VP-SDE: the score is -x at every t
    np.testing.assert_allclose(np.asarray(src.score_fn(x, 0.5)), -x, rtol=1e-5)
    assert src.model_id == sources.load_model_source("my_models:gaussian").model_id
    assert src.trained is None


@pytest.mark.parametrize("spec, match", [("", "model: expected"),
                                         ("no_such_module_xyz:f", "cannot import"),
                                         ("/no/such/workdir", "no config.json")])
def test_bad_model_sources_name_the_field(spec, match):
    with pytest.raises(ValueError, match=match):
        sources.load_model_source(spec)


def test_feature_sources():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 8, 8, 1)).astype(np.float32)
    f = sources.load_features("pixels")
    assert f.name == "pixels" and f(x).shape == (3, 64)
    with pytest.raises(ValueError, match="features: expected 'pixels'"):
        sources.load_features("sscd")
