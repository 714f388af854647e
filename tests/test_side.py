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
    assert sc.ums_all["copy"] == pytest.approx(0.3)   # copies lie 0.001 from one image only
    np.testing.assert_array_equal(sc.index[:4], [3, 3, 7, 11])
    np.testing.assert_allclose(sc.l2, sc.best, rtol=1e-5)


def test_eq15_ums_counts_every_training_image_in_the_band():
    """Eq. 15 read literally (``ums_all``) against the best-match variant (``ums``), on points
    whose distances are known: g0 lies 0.1 from t0 and 0.7 from t1 and t2, g1 lies 0.7 from t3
    only, g2 is far from everything. In the band [0.5, 1.0): g0's best match (0.1) is outside,
    so AMS and best-match UMS count only g1 (1/3), while eq. 15 counts t1, t2 and t3 (3/3)."""
    train = np.zeros((5, 2, 1, 1), np.float32)
    train[:, 0, 0, 0] = [0.0, 0.0, 0.0, 10.0, 30.0]
    train[:, 1, 0, 0] = [0.0, 0.7, -0.7, 0.0, 0.0]
    train[1:3, 0, 0, 0] = 0.1                             # t1, t2 = (0.1, +-0.7)
    gen = np.zeros((3, 2, 1, 1), np.float32)
    gen[:, 0, 0, 0] = [0.1, 10.7, 50.0]                   # g0 = (0.1, 0), g1 = (10.7, 0)
    bands = {"b": mem.Band(0.5, 1.0, "left"), "near": mem.Band(0.0, 0.5, "left")}
    sc = side.score_extraction(gen, train, measure="l2", bands=bands)
    assert sc.ams["b"] == pytest.approx(1 / 3) and sc.ums["b"] == pytest.approx(1 / 3)
    assert sc.ums_all["b"] == pytest.approx(3 / 3)
    assert sc.ams["near"] == sc.ums["near"] == sc.ums_all["near"] == pytest.approx(1 / 3)
    np.testing.assert_array_equal(sc.index[:2], [0, 3])


def _row(lam, ams, ums=None, ums_all=None):
    ums = ams if ums is None else ums
    return {"lambda": float(lam), "num_generated": 10, "ams": {"a": ams}, "ums": {"a": ums},
            "ums_all": {"a": ums if ums_all is None else ums_all}, "mean_best": 1.0,
            "mean_nn_l2": 2.0}


def test_results_table_and_post_hoc_best_lambda():
    rows = [_row(0, 0.1), _row(4, 0.3, 0.2, 0.5), _row(2, 0.3, 0.1)]
    assert side.best_lambda(rows, "a")["lambda"] == 2.0
    assert side.best_lambda(rows, "a", key="ums")["lambda"] == 4.0
    csv, md = side.results_table(rows, ["a"])
    lines = csv.strip().splitlines()
    assert lines[0].startswith("lambda,N_G,AMS_a(%),UMS_a(%),UMSall_a(%)")
    assert [ln.split(",")[0] for ln in lines[1:]] == ["0", "2", "4"]
    assert lines[2].split(",")[2] == "30.00" and lines[3].split(",")[4] == "50.00"
    assert md.count("\n") == 5


def test_lambda_band_summary_is_predeclared():
    """The SIDE number is the mean over the declared band, whatever lambda scores best: a huge
    score outside the band leaves it unchanged, and it is not the maximum inside the band."""
    rows = [_row(0, 0.10), _row(4, 0.90), _row(5, 0.20), _row(7, 0.40, 0.30, 0.60),
            _row(9, 0.30), _row(20, 0.95)]
    s = side.lambda_band_summary(rows, ["a"], (5, 9))
    assert s["lambdas"] == [5.0, 7.0, 9.0]
    assert s["a"]["ams"] == pytest.approx(0.3) and s["a"]["ums"] == pytest.approx(0.8 / 3)
    assert s["a"]["ums_all"] == pytest.approx(1.1 / 3)
    rows[-1]["ams"]["a"] = rows[1]["ams"]["a"] = 0.0  # outside the band: no effect
    assert side.lambda_band_summary(rows, ["a"], (5, 9))["a"]["ams"] == pytest.approx(0.3)
    assert side.lambda_band_summary(rows, ["a"], (11, 19)) == {"lambdas": []}
    from memjax.jobs import side_report

    t1, lines = side_report.table1(rows, ["a"], (5, 9))
    assert t1["bands"]["a"]["ams"] == {"random": 0.1, "side": pytest.approx(0.3)}
    assert t1["post_hoc_best"]["a"]["lambda"] == 7.0          # reported, but labelled post hoc
    text = "\n".join(lines)
    assert "mean over lambda in [5, 9]" in text and "Post hoc" in text
    assert "| a | AMS | 10.00 | 30.00 | 3.00 |" in text


# paper 001 Table 4 (CelebA-HQ-FI, 50,000 images per lambda): AMS(%) and UMS(%), lambda 0..12
_TABLE4 = {0: (0.596, 0.328), 1: (0.588, 0.312), 2: (0.640, 0.350), 3: (0.764, 0.386),
           4: (0.850, 0.390), 5: (0.952, 0.436), 6: (1.092, 0.414), 7: (1.110, 0.446),
           8: (1.148, 0.444), 9: (1.274, 0.478), 10: (1.338, 0.444), 11: (1.292, 0.454),
           12: (1.262, 0.406)}


def test_lambda_band_summary_reproduces_paper_table1_from_table4():
    """Paper 001's Table 1 is this summary: the mean of Table 4 over lambda 5..9 gives the
    mid-band AMS 1.115 % and UMS 0.444 % that section 5.3 quotes, +87 % and +37 % over
    Random (lambda 0)."""
    from memjax.jobs import side_report

    rows = [{"lambda": float(k), "num_generated": 50000, "ams": {"mid": a / 100},
             "ums": {"mid": u / 100}, "mean_best": 0.0, "mean_nn_l2": 0.0}
            for k, (a, u) in _TABLE4.items()]
    t1, _ = side_report.table1(rows, ["mid"], side.default_config().lambda_band)
    ams, ums = t1["bands"]["mid"]["ams"], t1["bands"]["mid"]["ums"]
    assert round(100 * ams["side"], 3) == 1.115 and round(100 * ums["side"], 3) == 0.444
    assert round(ams["side"] / ams["random"] - 1, 2) == 0.87
    assert round(ums["side"] / ums["random"] - 1, 2) == 0.35  # the paper prints 37 %


def test_paper_protocol_defaults():
    """Paper 001's settings: lambda band 5..9 (Table 1), sweep 0..50 (Fig. 4), TDKD with AdamW
    at lr 1e-4 (section 5.1), normalized-L2 bands of section 5.2."""
    from configs.digits_side import get_config

    c = side.default_config()
    assert tuple(c.lambda_band) == (5.0, 9.0) and c.guidance_classifier == "td"
    assert tuple(c.extraction.lambdas) == tuple(range(51))
    assert c.tdkd.learning_rate == 1e-4
    assert {k: tuple(v) for k, v in c.metrics.bands.items()} == \
        {"low": (1.5, 10.0), "mid": (1.4, 1.5), "high": (1.35, 1.4)}
    d = get_config()
    assert d.tdkd.learning_rate == 1e-4 and tuple(d.lambda_band) == (5.0, 9.0)
    assert min(d.extraction.lambdas) == 0 and max(d.extraction.lambdas) == 50
    assert set(range(5, 10)) <= set(d.extraction.lambdas)
    assert tuple(d.metrics.bands.high) == (1.35, 1.4)        # the paper's bands, verbatim
    assert side.band_order(d.metrics.bands) == ["low", "mid", "high", "digits_low", "digits_mid",
                                                 "digits_high"]
    assert get_config("ti").guidance_classifier == "ti"
    cl = get_config("classes")
    assert tuple(cl.classes_ablation.num_clusters) == (4, 8, 16, 32, 64)
    assert tuple(cl.classes_ablation.lambdas) == (5.0,)        # Table 2 is at lambda = 5
    # the ablation variants change nothing the main run's stages depend on
    for v in ("classes",):
        other = get_config(v)
        other.classes_ablation = d.classes_ablation
        assert other.to_dict() == d.to_dict()
    with pytest.raises(ValueError, match="variant"):
        get_config("bogus")


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
                                ("guidance_classifier", "both", "guidance_classifier"),
                                ("lambda_band", (9, 5), "lambda_band"),
                                ("lambda_band", (5,), "lambda_band"),
                                ("metrics.measure", "ssim", "measure")]:
        c = side.default_config()
        sec, _, name = field.rpartition(".")
        (c[sec] if sec else c)[name] = value
        with pytest.raises(ValueError, match=match):
            side.validate_config(c)
    c = side.default_config()
    c.classes_ablation.num_clusters = (4, 8)
    with pytest.raises(ValueError, match="labels='kmeans'"):
        side.validate_config(c)
    c.labels = "kmeans"
    side.validate_config(c)
    c.classes_ablation.num_clusters = (4, 0)
    with pytest.raises(ValueError, match="classes_ablation.num_clusters"):
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


# -- ablation switches ---------------------------------------------------------------------------
def test_time_independent_guidance_ignores_t():
    """The "TI" ablation: a time-independent classifier guides with the same logits at every t;
    a time-dependent one (TDKD) is called with t."""
    x = jnp.asarray(data.load_digits()[:1][0])
    ti = ResNet(num_classes=3, in_channels=1, stage_sizes=(1,), width=4, rngs=nnx.Rngs(0))
    fn = side.classifier_logits_fn(ti)
    np.testing.assert_array_equal(np.asarray(fn(x, 0.01)), np.asarray(fn(x, 0.9)))
    np.testing.assert_allclose(np.asarray(fn(x, 0.5)), np.asarray(ti(x[None]))[0], rtol=1e-6)
    td = ResNet(num_classes=3, in_channels=1, stage_sizes=(1,), width=4, time_dependent=True,
                rngs=nnx.Rngs(0))
    fn = side.classifier_logits_fn(td)
    np.testing.assert_allclose(np.asarray(fn(x, 0.3)), np.asarray(td(x[None], jnp.full((1,), 0.3)))[0],
                               rtol=1e-6)
    # the held-out KL of a TI model is measured on the same noisy draws, without t
    imgs = data.load_digits()[:8]
    kl = side.heldout_kl(ti, imgs, np.zeros((8, 3), np.float32), VPSDE(), key=jax.random.key(0),
                         num_draws=1)
    assert np.isfinite(kl) and kl >= 0


def test_linear_fit_is_table2s_regression():
    from scipy import stats

    from memjax.jobs import side_ablation

    k = np.array([4, 8, 16, 32, 64])
    y = np.array([0.10, 0.12, 0.11, 0.16, 0.20])
    f = side_ablation.linear_fit(k, y)
    ref = stats.linregress(k, y)
    assert f["slope"] == pytest.approx(ref.slope) and f["intercept"] == pytest.approx(ref.intercept)
    assert f["r"] == pytest.approx(ref.rvalue) and f["r2"] == pytest.approx(ref.rvalue ** 2)
    assert side_ablation.linear_fit(k, np.full(5, 0.3))["r"] == 0.0
    with pytest.raises(ValueError, match="x, y"):
        side_ablation.linear_fit([4, 4], [0.1, 0.2])


def test_classes_ablation_sub_configs_and_table():
    from configs.digits_side import get_config

    from memjax.jobs import side_ablation

    c = get_config("classes")
    sub = side_ablation._sub_config(c, 8)
    assert sub.num_clusters == 8 and tuple(sub.extraction.lambdas) == (5.0,)
    assert sub.extraction.samples_per_class == 16 and tuple(sub.classes_ablation.num_clusters) == ()
    assert c.num_clusters == 32 and len(c.extraction.lambdas) == 17       # the original is intact
    rows = [dict(_row(5, 0.01 * k), num_classes=k) for k in (4, 8, 16)]
    out = side_ablation.classes_table(rows, ["a"])
    assert out["fits"]["5/a/ams"]["slope"] == pytest.approx(0.01)
    assert out["fits"]["5/a/ams"]["r"] == pytest.approx(1.0)
    assert out["csv"].splitlines()[1] == "5,4,10,0.04000,0.04000,0.04000"
