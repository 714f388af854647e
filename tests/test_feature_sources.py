"""Feature networks given by path in the jobs (issue 14): ``scripts.evaluate``, the audit and
SIDE run end to end on a tiny random DINOv2 written with NumPy (no torch), their reports name the
feature space, and paper 001's SSCD bands are refused on it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from memjax.jobs import feature_space as fs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_DINO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14,
                 image_size=224)


@pytest.fixture(scope="module")
def dino(tmp_path_factory):
    """A Hugging Face-style Dinov2Model directory: config.json + random model.safetensors."""
    from safetensors.numpy import save_file

    from memjax.features import weights
    from memjax.features.vit import Dinov2, ViTConfig

    folder = tmp_path_factory.mktemp("dinov2_tiny")
    rng = np.random.default_rng(0)
    shapes = weights.expected_shapes(Dinov2, ViTConfig(**TINY_DINO))
    save_file({k: (0.2 * rng.normal(size=s)).astype(np.float32) for k, s in shapes.items()},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", **TINY_DINO}))
    return f"dinov2:{folder}"


@pytest.fixture(autouse=True)
def _import_configs(monkeypatch):
    monkeypatch.syspath_prepend(ROOT)


def _evaluate_config(features, **bands):
    from configs.evaluate_digits import get_config

    c = get_config()
    c.data.update(num_train=24, num_heldout=12)
    c.generated.update(dict(demo_copies=3, demo_near=2, demo_novel=4, demo_noise=2))
    c.features = features
    c.memorization.n = 8
    c.memorization.bands = bands
    c.diverse.method = "knn_support"
    return c


def test_spec_checks_bands_and_content_ids(dino, tmp_path):
    for bad in ("dino", "dinov2:", "resnet:/x", 3):
        with pytest.raises(ValueError, match="features: expected"):
            fs.check_spec(bad)
    fs.check_spec(dino)
    with pytest.raises(ValueError, match="memorization.bands: no similarity bands.*dinov2"):
        fs.similarity_bands(dino, {}, field="memorization.bands")
    bands, origin = fs.similarity_bands("sscd:/w.safetensors", {}, field="b")
    assert origin == "paper 001 (SSCD)" and bands["high"].lo == 0.6
    bands, origin = fs.similarity_bands(dino, {"high": (0.9, 1.0), "mid": (0.8, 0.9)}, field="b")
    assert origin == "user-chosen (b)" and bands["high"].closed == "both"
    assert bands["mid"].closed == "left"
    with pytest.raises(ValueError, match="b.mid: expected"):
        fs.similarity_bands(dino, {"mid": (0.9, 0.8)}, field="b")
    # the content id follows the bytes of the weights, not the path
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"one")
    b.write_bytes(b"one")
    assert fs.spec_id(f"squeezenet:{a}") == fs.spec_id(f"squeezenet:{b}")
    b.write_bytes(b"two")
    assert fs.spec_id(f"squeezenet:{a}") != fs.spec_id(f"squeezenet:{b}")
    assert fs.frechet_label("inception:/x", "inception-fid") == "FID"
    assert fs.frechet_label(dino, "dinov2-d32x2p14") == "Fréchet distance in dinov2-d32x2p14"


def test_evaluate_with_a_feature_network_by_path(dino, tmp_path):
    from memjax import features
    from memjax.scripts.evaluate import evaluate

    with pytest.raises(ValueError, match="memorization.bands"):   # no SSCD bands on DINOv2
        evaluate(_evaluate_config(dino), str(tmp_path / "refused"), log=lambda s: None)
    with pytest.raises(ValueError, match="no similarity bands"):
        features.bands_for(features.load(dino))
    lines = []
    out = evaluate(_evaluate_config(dino, high=(0.99, 1.0)), str(tmp_path / "e"),
                   log=lines.append)
    space = "dinov2-d32x2p14"
    assert out["feature_space"] == space and out["cosine"]["feature_space"] == space
    assert out["cosine"]["bands_origin"] == "user-chosen (memorization.bands)"
    assert out["frechet"]["name"] == f"Fréchet distance in {space}"
    assert np.isfinite(out["frechet"]["value"]) and out["frechet"]["value"] >= 0
    assert all(np.all(np.isfinite(v)) for v in out["cosine"]["summary"].values())
    assert 0 <= out["cosine"]["ams_ums"]["high"]["ams"] <= 1
    # exact copies are at cosine 1 in any feature space
    assert out["demo"]["copies_matched_to_source_cosine"] >= 3
    assert out["diverse"]["feature_space"] == space
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["cosine"]["feature_space"] == space
    # the features are a cached stage: a second run reuses them
    f1 = np.load(tmp_path / "e" / "features_train.npz")["features"]
    assert f1.shape == (24, 32)
    again = evaluate(_evaluate_config(dino, high=(0.99, 1.0)), str(tmp_path / "e"),
                     log=lines.append)
    assert again["cosine"]["summary"] == out["cosine"]["summary"]
    assert not any("features_" in ln and "recomputing" in ln for ln in lines)


def _side_config(dino):
    from configs.digits_side import get_config

    c = get_config("tiny")
    c.labels, c.kmeans_features, c.num_clusters = "kmeans", dino, 3
    c.target.training.update(num_steps=2, checkpoint_every=2)   # numbers meaningless: a smoke run
    c.synthetic.update(num_samples=24, heldout=6)
    c.extraction.update(lambdas=(0,), samples_per_class=2)
    c.metrics.update(measure="cosine", features=dino, n=4)
    c.metrics.bands = {"high": (0.99, 1.0), "mid": (0.9, 0.99)}
    return c


@pytest.mark.slow
def test_side_with_a_feature_network_by_path(dino, tmp_path):
    from memjax import side

    c = _side_config(dino)
    c.metrics.bands = {}
    with pytest.raises(ValueError, match="metrics.bands: no similarity bands"):
        side.validate_config(c)
    c = _side_config(dino)
    c.metrics.measure = "normalized_l2"
    with pytest.raises(ValueError, match="metrics.features"):
        side.validate_config(c)
    c = _side_config(dino)
    trained = side.load_target("", c.target, str(tmp_path / "owner"))
    summary = side.run(c, str(tmp_path / "side"), trained=trained, log=lambda s: None)
    space = "dinov2-d32x2p14"
    assert summary["feature_space"] == space and summary["kmeans_feature_space"] == space
    assert summary["similarity"] == f"cosine in {space}"
    assert summary["bands_origin"] == "user-chosen (metrics.bands)"
    stage = tmp_path / "side" / "lambdas" / f"{side.lambda_tag(0)}.npz"
    row = json.loads(np.load(stage)["row"].item())
    assert np.isfinite(row["mean_best"]) and -1.0 <= row["mean_best"] <= 1.0 + 1e-6
    assert all(0.0 <= v <= 1.0 for v in row["ams"].values())
    assert f"cosine in {space} space; bands: user-chosen" in (
        tmp_path / "side" / "results.md").read_text()
    assert np.load(tmp_path / "side" / "features_synthetic.npz")["features"].shape == (24, 32)


def _audit_config(dino, **bands):
    from configs.digits_audit import get_config

    c = get_config("tiny")
    c.train.training.update(num_steps=2, checkpoint_every=2)   # a smoke run: numbers meaningless
    c.ease.network.enabled = False
    c.ease.exact.settings = ((1, 1),)
    c.sampling.update(num_samples=6, num_steps=2, batch_size=6)
    c.memorization.features = dino
    c.memorization.bands = bands
    c.diverse.update(features=dino, method="knn_support", k=2)
    return c


@pytest.mark.slow
def test_audit_with_a_feature_network_by_path(dino, tmp_path):
    from memjax import audit

    with pytest.raises(ValueError, match="memorization.bands: no similarity bands"):
        audit.validate_config(_audit_config(dino))
    report = audit.run_audit(_audit_config(dino, high=(0.99, 1.0), mid=(0.9, 0.99)),
                             str(tmp_path / "a"), progress=False, log=lambda s: None)
    space = "dinov2-d32x2p14"
    fsim = report["memorization"]["feature_similarity"]
    assert fsim["feature_space"] == space
    assert fsim["bands_origin"] == "user-chosen (memorization.bands)"
    assert all(np.isfinite(fsim[k]) for k in ("samples_mean", "heldout_mean"))
    assert all(0.0 <= v <= 1.0 for r in fsim["ams_ums"].values() for k, v in r.items()
               if k != "band")
    assert report["diverse"]["feature_space"] == space
    md = (tmp_path / "a" / "report.md").read_text()
    assert f"in **{space}** (bands: user-chosen" in md and f"in {space})" in md
