"""The evaluate script: known-answer demo, .npz and image-folder inputs, the CLI, bad configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from memjax.data import load_digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(**generated):
    from configs.evaluate_digits import get_config

    c = get_config()
    c.data.num_train = 200
    c.data.num_heldout = 60
    c.generated.update(dict(demo_copies=5, demo_near=4, demo_novel=30, demo_noise=3))
    c.generated.update(generated)
    c.memorization.n = 20
    c.diverse.method = "knn_support"
    return c


@pytest.fixture(autouse=True)
def _import_configs(monkeypatch):
    monkeypatch.syspath_prepend(ROOT)


def test_demo_gives_known_answers_and_writes_everything(tmp_path):
    from memjax.scripts.evaluate import evaluate

    out = evaluate(small_config(), str(tmp_path), log=lambda s: None)
    demo = out["demo"]
    assert demo["extracted_are_copies"] and demo["copies_extracted"] == 9
    assert demo["copies_matched_to_source_l2"] == 9 and demo["copies_matched_to_source_cosine"] == 9
    n_g = 5 + 4 + 30 + 3
    assert out["num_generated"] == n_g
    assert out["normalized_l2"]["num_extracted"] == 9
    assert out["normalized_l2"]["ams_ums"]["extracted"]["ams"] == pytest.approx(9 / n_g)
    assert out["normalized_l2"]["ams_ums"]["extracted"]["ums"] == pytest.approx(9 / n_g)
    # the 3 uniform-noise images lie outside the k-NN support of the digits
    noise = set(range(n_g - 3, n_g))
    assert noise <= set(out["diverse"]["diverse_indices"])
    with open(tmp_path / "metrics.json") as f:
        saved = json.load(f)
    assert saved["normalized_l2"]["num_extracted"] == 9 and saved["config"]["features"] == "pixels"
    for name in ("best_similarity", "normalized_l2", "closest_pairs"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000
    with np.load(tmp_path / "generated.npz") as f:
        assert f["image"].shape == (n_g, 8, 8, 1)


def test_npz_and_folder_inputs(tmp_path):
    from PIL import Image

    from memjax.data import load_dataset
    from memjax.scripts.evaluate import evaluate

    c = small_config()
    train = load_dataset(c.data).train
    held = load_digits()[np.setdiff1d(np.arange(1797), load_dataset(c.data).train_source)[:10]]
    images = np.concatenate([train[[3, 50, 199]], held])
    np.savez(tmp_path / "samples.npz", samples=images)
    out = evaluate(small_config(source="npz", path=str(tmp_path / "samples.npz")),
                   str(tmp_path / "npz"), log=lambda s: None)
    assert out["num_generated"] == 13 and "demo" not in out
    assert out["normalized_l2"]["num_extracted"] == 3
    # closest pairs: the copies (ratio 0), in generated order, matched to their sources
    assert [p["train"] for p in out["closest"][:3]] == [3, 50, 199]

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, im in enumerate(images):
        u8 = np.round((im[..., 0] + 1) * 127.5).astype(np.uint8)
        Image.fromarray(u8, mode="L").save(folder / f"{i:03d}.png")
    out = evaluate(small_config(source="folder", path=str(folder)), str(tmp_path / "folder"),
                   log=lambda s: None)
    assert out["num_generated"] == 13
    assert out["normalized_l2"]["num_extracted"] == 3      # 8-bit rounding keeps copies close


def test_bad_configs_raise_naming_the_field(tmp_path):
    from memjax.scripts.evaluate import evaluate

    for field, value, match in (("features", "dino", "features"),
                                ("generated.source", "npz", "generated.path"),
                                ("memorization.match", "any", "memorization.match"),
                                ("memorization.block_size", -1, "memorization.block_size")):
        c = small_config()
        head, _, tail = field.partition(".")
        if tail:
            c[head][tail] = value
        else:
            c[head] = value
        with pytest.raises(ValueError, match=match):
            evaluate(c, str(tmp_path), log=lambda s: None)
    c = small_config(source="npz", path=str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="generated.path"):
        evaluate(c, str(tmp_path), log=lambda s: None)
    np.savez(tmp_path / "wrong.npz", image=np.zeros((4, 16, 16, 1), np.float32))
    with pytest.raises(ValueError, match="generated images"):
        evaluate(small_config(source="npz", path=str(tmp_path / "wrong.npz")), str(tmp_path),
                 log=lambda s: None)


@pytest.mark.slow
def test_cli_runs_the_default_config_with_tsne_hull(tmp_path):
    cmd = [sys.executable, "-m", "memjax.scripts.evaluate",
           f"--config={ROOT}/configs/evaluate_digits.py", f"--workdir={tmp_path}",
           "--config.data.num_train=300", "--config.generated.demo_novel=60",
           "--config.diverse.num_iters=300"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    with open(tmp_path / "metrics.json") as f:
        out = json.load(f)
    assert out["demo"]["extracted_are_copies"]
    assert out["diverse"]["method"] == "tsne_hull" and out["diverse"]["num_real"] == 300
    assert (tmp_path / "figures" / "tsne_hull.png").stat().st_size > 1000
