"""SIDE pieces: k-means against scikit-learn, TDKD on real digits, scores and validation.

The time-module placement of the time-dependent classifier (after the first BatchNorm of every
residual block, paper 001 appendix C) is tested on the module tree in
tests/test_models.py::test_time_module_directly_after_first_batchnorm.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memjax import data, fit, objectives, side
from memjax.metrics import memorization as mem
from memjax.models import ResNet
from memjax.sde import VPSDE


# -- k-means -----------------------------------------------------------------------------------
def test_kmeans_matches_sklearn_on_digits():
    from sklearn.cluster import KMeans as SkKMeans

    x = data.load_digits().reshape(1797, -1)
    ours = side.kmeans(jax.random.key(0), jnp.asarray(x), 10, num_iters=100, num_init=4)
    sk = SkKMeans(n_clusters=10, n_init=4, random_state=0).fit(x)
    # Lloyd's from k-means++ seeds: a local optimum as good as scikit-learn's (within 2%)
    assert float(ours.inertia) < 1.02 * sk.inertia_
    # inertia and labels are consistent with the centroids
    d = ((x[:, None, :] - np.asarray(ours.centroids)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(ours.labels), d.argmin(1))
    np.testing.assert_allclose(float(ours.inertia), d.min(1).sum(), rtol=1e-4)
    # each centroid is the mean of its cluster (a fixed point of Lloyd's step)
    for k in range(10):
        members = x[np.asarray(ours.labels) == k]
        np.testing.assert_allclose(np.asarray(ours.centroids[k]), members.mean(0), atol=1e-4)
    np.testing.assert_array_equal(side.kmeans_assign(x, ours.centroids), ours.labels)


def test_kmeans_recovers_separated_blobs():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(7, 5)) * 20
    truth = rng.integers(0, 7, 700)
    x = centers[truth] + rng.normal(size=(700, 5))
    km = side.kmeans(jax.random.key(1), jnp.asarray(x, jnp.float32), 7)
    assert adjusted_rand_score(truth, np.asarray(km.labels)) == 1.0
    # jittable end to end
    km2 = jax.jit(lambda k, v: side.kmeans(k, v, 7, num_iters=50, num_init=2))(
        jax.random.key(1), jnp.asarray(x, jnp.float32))
    assert adjusted_rand_score(truth, np.asarray(km2.labels)) == 1.0


def test_kmeans_plusplus_spreads_seeds():
    """With k equal to the number of tight, far-apart clusters, k-means++ seeds one in each
    (up to ~1e-6 probability)."""
    x = jnp.concatenate([jnp.full((50, 2), c) + 0.01 * jax.random.normal(jax.random.key(i), (50, 2))
                         for i, c in enumerate((0.0, 100.0, 200.0))])
    for s in range(5):
        c = side.kmeans_plusplus(jax.random.key(s), x, 3)
        assert sorted(np.round(np.asarray(c[:, 0]) / 100).astype(int).tolist()) == [0, 1, 2]


def test_kmeans_bad_inputs():
    x = jnp.ones((5, 2))
    with pytest.raises(ValueError, match="k: expected at most"):
        side.kmeans(jax.random.key(0), x, 6)
    with pytest.raises(ValueError, match="x: expected 2 dimensions"):
        side.kmeans(jax.random.key(0), jnp.ones((5, 2, 1)), 2)
    with pytest.raises(ValueError, match="num_iters"):
        side.kmeans(jax.random.key(0), x, 2, num_iters=0)


# -- classifiers and TDKD on real digits ---------------------------------------------------------
@pytest.mark.slow
def test_tdkd_reduces_heldout_kl():
    """A normal classifier on digits (original labels), then TDKD onto a time-dependent one:
    the KL of eq. 13 on held-out images at fixed noisy draws drops during training."""
    images, labels = data.load_digits(return_labels=True)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(images))
    tr, ho = perm[:1200], perm[1200:1456]
    clf = ResNet(num_classes=10, in_channels=1, stage_sizes=(1, 1), width=8, rngs=nnx.Rngs(0))
    side.fit_classifier(clf, objectives.classifier_loss, {"image": images[tr], "label": labels[tr]},
                        key=jax.random.key(1), num_steps=150, batch_size=128, learning_rate=3e-3)
    acc = np.mean(np.argmax(side.batched_logits(clf, images[ho]), -1) == labels[ho])
    assert acc > 0.8
    teacher = side.batched_logits(clf, images)
    sde = VPSDE()
    td = ResNet(num_classes=10, in_channels=1, stage_sizes=(1, 1), width=8, time_dependent=True,
                rngs=nnx.Rngs(1))
    kl_key = jax.random.key(2)

    def eval_fn(m):
        return {"kl": side.heldout_kl(m, images[ho], teacher[ho], sde, key=kl_key, num_draws=2)}

    kl0 = eval_fn(td)["kl"]

    def loss(model, batch, k):
        return objectives.tdkd_loss(model, batch["teacher"], {"image": batch["image"]}, k, sde=sde)

    hist = side.fit_classifier(td, loss, {"image": images[tr], "teacher": teacher[tr]},
                               key=jax.random.key(3), num_steps=200, batch_size=128,
                               learning_rate=3e-3, log_every=100, eval_fn=eval_fn)
    kls = [kl0] + [e["kl"] for e in hist.evals]
    assert kls[-1] < 0.8 * kls[0], kls
    assert hist.train[-1]["loss"] < hist.train[0]["loss"]


def test_onehot_logits_kl_is_cross_entropy():
    labels = np.array([0, 2, 1])
    t = side.onehot_logits(labels, 3)
    p = jax.nn.softmax(jnp.asarray(t), -1)
    np.testing.assert_allclose(np.asarray(p)[np.arange(3), labels], 1.0, atol=1e-12)
    q = jax.nn.log_softmax(jnp.array([[0.1, 0.2, 0.3], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]), -1)
    kl = jnp.sum(p * (jnp.log(p) - q), -1)
    np.testing.assert_allclose(np.asarray(kl), -np.asarray(q)[np.arange(3), labels], atol=1e-5)


# -- scores and report ---------------------------------------------------------------------------
def test_score_extraction_counts_copies():
    train = data.load_digits()[:200]
    rng = np.random.default_rng(0)
    copies = train[[3, 3, 7, 11]] + 0.001 * rng.normal(size=(4, 8, 8, 1)).astype(np.float32)
    novel = rng.uniform(-1, 1, size=(6, 8, 8, 1)).astype(np.float32)
    gen = np.concatenate([copies, novel])
    bands = {"copy": mem.Band(0.0, 0.1, "left"), "far": mem.Band(0.1, 100.0, "left")}
    sc = side.score_extraction(gen, train, measure="l2", bands=bands)
    assert sc.ams["copy"] == pytest.approx(0.4) and sc.ums["copy"] == pytest.approx(0.3)
    assert sc.ams["far"] == pytest.approx(0.6)
    np.testing.assert_array_equal(sc.index[:4], [3, 3, 7, 11])
    np.testing.assert_allclose(sc.l2, sc.best, rtol=1e-5)


def test_results_table_and_best_lambda():
    rows = [{"lambda": 0.0, "num_generated": 10, "ams": {"a": 0.1}, "ums": {"a": 0.1},
             "mean_best": 1.0, "mean_nn_l2": 2.0},
            {"lambda": 4.0, "num_generated": 10, "ams": {"a": 0.3}, "ums": {"a": 0.2},
             "mean_best": 1.0, "mean_nn_l2": 2.0},
            {"lambda": 2.0, "num_generated": 10, "ams": {"a": 0.3}, "ums": {"a": 0.1},
             "mean_best": 1.0, "mean_nn_l2": 2.0}]
    assert side.best_lambda(rows, "a")["lambda"] == 2.0
    assert side.best_lambda(rows, "a", key="ums")["lambda"] == 4.0
    csv, md = side.results_table(rows, ["a"])
    lines = csv.strip().splitlines()
    assert lines[0].startswith("lambda,N_G,AMS_a(%),UMS_a(%)")
    assert [ln.split(",")[0] for ln in lines[1:]] == ["0", "2", "4"]
    assert lines[2].split(",")[2] == "30.00"
    assert md.count("\n") == 5


def test_lambda_tag_sorts_numerically():
    tags = [side.lambda_tag(v) for v in (0, 2, 10, 2.5, 50)]
    assert sorted(tags) == [side.lambda_tag(v) for v in (0, 2, 2.5, 10, 50)]


def test_config_validation():
    c = side.default_config()
    side.validate_config(c)
    for field, value, match in [("labels", "random", "labels"),
                                ("extraction.lambdas", (0, -1), "lambdas"),
                                ("extraction.lambdas", (0, 1, 1), "distinct"),
                                ("extraction.sampler", "euler", "sampler"),
                                ("synthetic.heldout", 5000, "heldout"),
                                ("metrics.measure", "ssim", "measure")]:
        c = side.default_config()
        sec, _, name = field.rpartition(".")
        (c[sec] if sec else c)[name] = value
        with pytest.raises(ValueError, match=match):
            side.validate_config(c)


def test_classifier_checkpoint_roundtrip(tmp_path):
    """The cached classifiers restore exactly (parameters and BatchNorm statistics)."""
    m = ResNet(num_classes=3, in_channels=1, stage_sizes=(1,), width=4, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    m.train()
    m(x)  # moves the BatchNorm running statistics away from their initial values
    fit.save_model(m, str(tmp_path / "clf"))
    m2 = ResNet(num_classes=3, in_channels=1, stage_sizes=(1,), width=4, rngs=nnx.Rngs(1))
    assert not fit.restore_model(m2, str(tmp_path / "missing"))
    assert fit.restore_model(m2, str(tmp_path / "clf"))
    m.eval()
    m2.eval()
    np.testing.assert_array_equal(np.asarray(m(x)), np.asarray(m2(x)))
