"""Tests for memjax.objectives: DSM / ambient / conditional / classifier / TDKD losses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from memjax import objectives as ob
from memjax.models import config as config_lib
from memjax.models import objective_config
from memjax.sde import VPSDE

SDE = VPSDE()
D = 4  # Gaussian test data: images of shape [2, 2, 1]
SHAPE = (2, 2, 1)
MU = np.array([0.5, -0.3, 0.2, 0.0], np.float32)
_Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(D, D)))
COV = (_Q * np.array([0.6, 0.3, 0.1, 0.03])) @ _Q.T


def optimal_denoiser(x, t, mu=MU, cov=COV):
    r"""E[x0 | x_t] for N(mu, cov) data: mu + a cov (a^2 cov + v I)^{-1} (x_t - a mu), x flat [b, D]."""
    a, v = np.asarray(SDE.alpha(t), np.float64), np.asarray(SDE.variance(t), np.float64)
    out = []
    for xi, ai, vi in zip(np.asarray(x, np.float64), a, v):
        st = ai**2 * cov + vi * np.eye(D)
        out.append(mu + ai * cov @ np.linalg.solve(st, xi - ai * mu))
    return np.array(out)


class GaussianDenoiser(nnx.Module):
    r"""A linear x0-predictor ``h(x_t, t) = A(t) x_t + b(t)`` with the Gaussian-posterior t-dependence

    ``A(t) = a_t C (a_t^2 C + v_t I)^{-1}``, ``b(t) = (I - a_t A(t)) m`` with learned ``m`` and
    ``C = L L^T``. With ``split_at`` set, separate ``(m, L)`` are used for ``t > split_at`` (so
    the ambient branch alone trains them).
    """

    def __init__(self, split_at=None, parameterization="x0"):
        self.split_at = split_at
        self.parameterization = parameterization
        self.m = nnx.Param(jnp.zeros((2, D)))
        self.L = nnx.Param(jnp.stack([0.5 * jnp.eye(D)] * 2))

    def x0(self, x, t):
        hi = (t > self.split_at) if self.split_at is not None else jnp.zeros(t.shape, bool)
        m = jnp.where(hi[:, None], self.m[1], self.m[0])
        L = jnp.where(hi[:, None, None], self.L[1], self.L[0])
        C = L @ jnp.swapaxes(L, -1, -2)
        a, v = SDE.alpha(t)[:, None, None], SDE.variance(t)[:, None, None]
        xf = x.reshape(x.shape[0], D)
        st = a**2 * C + v * jnp.eye(D)
        r = jnp.linalg.solve(st, (xf - a[:, :, 0] * m)[..., None])[..., 0]
        return (m + a[:, :, 0] * jnp.einsum("bij,bj->bi", C, r)).reshape(x.shape)

    def __call__(self, x, t):
        h = self.x0(x, t)
        if self.parameterization == "x0":
            return h
        a = SDE.alpha(t)[:, None, None, None]
        s = SDE.sigma(t)[:, None, None, None]
        return (x - a * h) / s


def train(model, loss_fn, data_fn, *, steps, lr, seed=0):
    """Adam (cosine-decayed learning rate) on ``loss_fn`` for ``steps`` steps in one jitted ``lax.scan``."""
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.02))
    graphdef, params = nnx.split(model)
    opt_state = opt.init(params)

    def step(carry, key):
        params, opt_state = carry
        k_data, k_loss = jax.random.split(key)

        def f(p):
            return loss_fn(nnx.merge(graphdef, p), data_fn(k_data), k_loss)

        (loss, _), g = jax.value_and_grad(f, has_aux=True)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, upd), opt_state), loss

    keys = jax.random.split(jax.random.key(seed), steps)
    (params, _), losses = jax.jit(lambda c, k: jax.lax.scan(step, c, k))((params, opt_state), keys)
    return nnx.merge(graphdef, params), np.asarray(losses)


def denoiser_rms_error(model, t_lo, t_hi, n=512, seed=1):
    """RMS of ``h(x_t, t) - E[x0 | x_t]`` over ``t ~ U(t_lo, t_hi)``, ``x_t ~ p_t`` (Gaussian data)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(t_lo, t_hi, n).astype(np.float32)
    x0 = rng.multivariate_normal(MU, COV, n)
    a, s = np.asarray(SDE.alpha(t)), np.asarray(SDE.sigma(t))
    xt = (a[:, None] * x0 + s[:, None] * rng.normal(size=(n, D))).astype(np.float32)
    h = np.asarray(model.x0(jnp.asarray(xt).reshape((n,) + SHAPE), jnp.asarray(t))).reshape(n, D)
    return float(np.sqrt(np.mean(np.sum((h - optimal_denoiser(xt, t)) ** 2, axis=-1))))


def gaussian_batch(key, b=512):
    x = jax.random.multivariate_normal(key, jnp.asarray(MU), jnp.asarray(COV), (b,))
    return {"image": x.reshape((b,) + SHAPE).astype(jnp.float32)}


# -- convergence to the optimal denoiser -----------------------------------------------------------
@pytest.mark.parametrize("parameterization", ["x0", "eps"])
def test_standard_objective_converges_to_optimal_denoiser(parameterization):
    model = GaussianDenoiser(parameterization=parameterization)
    loss_fn = lambda m, batch, key: ob.denoising_loss(  # noqa: E731
        m, batch, key, sde=SDE, parameterization=parameterization)
    before = denoiser_rms_error(model, SDE.t_min, SDE.t_max)
    model, losses = train(model, loss_fn, gaussian_batch, steps=800, lr=2e-2)
    err = denoiser_rms_error(model, SDE.t_min, SDE.t_max)
    assert np.isfinite(losses).all()
    assert before > 0.2
    print(f"standard ({parameterization}): RMS denoiser error {before:.4f} -> {err:.4f}")
    assert err < 0.015, (before, err)


N_TRAIN = 65536
T_N = 0.3  # sigma(t_n) = 0.777


def _fixed_train_set():
    rng = np.random.default_rng(7)
    return jnp.asarray(rng.multivariate_normal(MU, COV, N_TRAIN).reshape((N_TRAIN,) + SHAPE),
                       jnp.float32)


def _indexed_batches(train_set, b=1024):
    def data_fn(key):
        idx = jax.random.randint(key, (b,), 0, train_set.shape[0])
        return {"image": train_set[idx], "index": idx}
    return data_fn


@pytest.mark.slow
def test_ambient_objective_converges_to_optimal_denoiser_above_t_n():
    """Separate parameters above t_n learn only from the fixed noisy copies (eq. 6), and still
    converge to the clean-data denoiser E[x0 | x_t]; the clean branch learns it below t_n."""
    train_set = _fixed_train_set()
    model = GaussianDenoiser(split_at=T_N)
    loss_fn = lambda m, batch, key: ob.ambient_loss(  # noqa: E731
        m, batch, key, sde=SDE, t_n=T_N, seed=3, parameterization="x0")
    model, losses = train(model, loss_fn, _indexed_batches(train_set), steps=1500, lr=2e-2)
    assert np.isfinite(losses).all()
    err_hi = denoiser_rms_error(model, T_N + 0.02, SDE.t_max)
    err_lo = denoiser_rms_error(model, SDE.t_min, T_N)
    print(f"ambient: RMS denoiser error above t_n {err_hi:.4f}, below t_n {err_lo:.4f}")
    assert err_hi < 0.03, err_hi
    assert err_lo < 0.03, err_lo

    # Negative control: the same parameters trained with the plain x0 loss on the noisy copies
    # (treating them as data) learn the denoiser of the noisy distribution, far from E[x0|x_t].
    y = ob.ambient_noisy_copy(train_set, jnp.arange(N_TRAIN), seed=3, sde=SDE, t_n=T_N)
    naive = GaussianDenoiser()
    naive_loss = lambda m, batch, key: ob.denoising_loss(m, batch, key, sde=SDE,  # noqa: E731
                                                         parameterization="x0")
    naive, _ = train(naive, naive_loss, _indexed_batches(y), steps=600, lr=2e-2)
    err_naive = denoiser_rms_error(naive, T_N + 0.02, SDE.t_max)
    print(f"naive x0 loss on the noisy copies: RMS error above t_n {err_naive:.4f}")
    assert err_naive > 4 * err_hi


# -- the fixed noisy copy --------------------------------------------------------------------------
def test_noisy_copy_is_fixed_per_index_across_calls_and_batches():
    x = jax.random.uniform(jax.random.key(0), (16, 4, 4, 3), minval=-1, maxval=1)
    idx = jnp.arange(100, 116)
    y1 = ob.ambient_noisy_copy(x, idx, seed=5, sde=SDE, t_n=0.4)
    perm = np.random.default_rng(0).permutation(16)
    # another "epoch": a different batch of the same images
    y2 = ob.ambient_noisy_copy(x[perm[:5]], idx[perm[:5]], seed=5, sde=SDE, t_n=0.4)
    np.testing.assert_array_equal(np.asarray(y2), np.asarray(y1)[perm[:5]])
    y3 = jax.jit(lambda a, i: ob.ambient_noisy_copy(a, i, seed=5, sde=SDE, t_n=0.4))(x, idx)
    np.testing.assert_allclose(np.asarray(y3), np.asarray(y1), atol=1e-6)
    # the noise is standard normal, differs between images and between seeds
    z = (np.asarray(y1) - float(SDE.alpha(0.4)) * np.asarray(x)) / float(SDE.sigma(0.4))
    assert abs(z.mean()) < 0.15 and abs(z.std() - 1) < 0.1
    assert not np.allclose(z[0], z[1])
    y_other = ob.ambient_noisy_copy(x, idx, seed=6, sde=SDE, t_n=0.4)
    assert not np.allclose(np.asarray(y_other), np.asarray(y1))


def test_noisy_copy_is_identical_in_a_fresh_process():
    x = np.linspace(-1, 1, 2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1)
    here = ob.ambient_noisy_copy(jnp.asarray(x), jnp.array([3, 11]), seed=42, sde=SDE, t_n=0.25)
    code = textwrap.dedent("""
        import json, numpy as np, jax.numpy as jnp
        from memjax import objectives as ob
        from memjax.sde import VPSDE
        x = np.linspace(-1, 1, 18, dtype=np.float32).reshape(2, 3, 3, 1)
        y = ob.ambient_noisy_copy(jnp.asarray(x), jnp.array([3, 11]), seed=42, sde=VPSDE(),
                                  t_n=0.25)
        print(json.dumps(np.asarray(y).ravel().tolist()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    there = np.array(json.loads(out.stdout.strip().splitlines()[-1]), np.float32)
    np.testing.assert_array_equal(there, np.asarray(here).ravel())


def test_ambient_coefficients_match_algorithm_1(x64):
    """In float64 (the paper's sqrt(1 - sigma^2) forms cancel badly in float32 near t = 1)."""
    t_n = 0.2
    t = jnp.linspace(0.21, 1.0, 9)
    k, r, c_h, c_x = ob.ambient_coefficients(t, t_n, SDE)
    s_t, s_n = SDE.sigma(t), SDE.sigma(t_n)
    # Algorithm 1 line 10 and eq. 6 written with sqrt(1 - sigma^2)
    np.testing.assert_allclose(k, jnp.sqrt((1 - s_t**2) / (1 - s_n**2)), rtol=1e-9)
    np.testing.assert_allclose(r, jnp.sqrt((s_t**2 - s_n**2) / (1 - s_n**2)), rtol=1e-9)
    np.testing.assert_allclose(c_h, (s_t**2 - s_n**2) / (s_t**2 * jnp.sqrt(1 - s_n**2)), rtol=1e-9)
    np.testing.assert_allclose(c_x, s_n**2 / s_t**2 * jnp.sqrt((1 - s_t**2) / (1 - s_n**2)),
                               rtol=1e-9)
    # x_t = k y + r z has the VP marginal given x0: mean a_t x0, variance s_t^2
    np.testing.assert_allclose(k * SDE.alpha(t_n), SDE.alpha(t), rtol=1e-12)
    np.testing.assert_allclose(k**2 * SDE.variance(t_n) + r**2, SDE.variance(t), rtol=1e-12)


def test_ambient_loss_split_mix_and_metrics():
    model = GaussianDenoiser()
    batch = gaussian_batch(jax.random.key(0), 64)
    batch["index"] = jnp.arange(64)
    loss, m = ob.ambient_loss(model, batch, jax.random.key(1), sde=SDE, t_n=0.3, seed=0,
                              mix="split", noisy_fraction=0.25)
    assert float(m["noisy_fraction"]) == 0.25
    np.testing.assert_allclose(float(loss), 0.25 * float(m["ambient_loss"]) +
                               0.75 * float(m["clean_loss"]), rtol=1e-5)


def test_sigma_tn_and_t_n_are_one_setting():
    model = GaussianDenoiser()
    batch = gaussian_batch(jax.random.key(0), 32)
    batch["index"] = jnp.arange(32)
    s = 0.5
    f1 = ob.make_loss(objective_config(name="ambient", sigma_tn=s, parameterization="x0"), SDE)
    f2 = ob.make_loss(objective_config(name="ambient", t_n=float(SDE.t_from_sigma(s)),
                                       parameterization="x0"), SDE)
    l1, _ = f1(model, batch, jax.random.key(2))
    l2, _ = f2(model, batch, jax.random.key(2))
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-6)


# -- conditional, classifier, TDKD -----------------------------------------------------------------
_SEEN = {}


class LabelRecorder(nnx.Module):
    """Returns zeros; records the labels it was called with (for eager inspection)."""

    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.parameterization = "eps"

    @property
    def seen(self):
        return _SEEN["y"]

    def __call__(self, x, t, y):
        _SEEN["y"] = np.asarray(y)
        return jnp.zeros_like(x)


def test_conditional_loss_label_dropout():
    b, k = 4000, 7
    labels = jnp.asarray(np.random.default_rng(0).integers(0, k, b), jnp.int32)
    batch = {"image": jnp.zeros((b, 1, 1, 1)), "label": labels}
    model = LabelRecorder(k)
    loss, m = ob.conditional_denoising_loss(model, batch, jax.random.key(0), sde=SDE,
                                            num_classes=k, label_dropout=0.3)
    dropped = model.seen == k
    assert abs(dropped.mean() - 0.3) < 0.03
    assert float(m["label_dropout_fraction"]) == pytest.approx(dropped.mean())
    np.testing.assert_array_equal(model.seen[~dropped], np.asarray(labels)[~dropped])
    # zero prediction of eps: loss = E||z||^2 / D = 1
    assert float(loss) == pytest.approx(1.0, abs=0.05)
    ob.conditional_denoising_loss(model, batch, jax.random.key(0), sde=SDE, num_classes=k,
                                  label_dropout=0.0)
    np.testing.assert_array_equal(model.seen, np.asarray(labels))
    with pytest.raises(ValueError, match="label"):
        ob.conditional_denoising_loss(model, {"image": batch["image"], "label": labels + k},
                                      jax.random.key(0), sde=SDE, num_classes=k)
    with pytest.raises(ValueError, match="num_classes"):
        ob.conditional_denoising_loss(model, batch, jax.random.key(0), sde=SDE, num_classes=k + 1)


class Logits(nnx.Module):
    def __init__(self, w):
        self.w = nnx.Param(jnp.asarray(w))

    def __call__(self, x, t=None):
        return x.reshape(x.shape[0], -1) @ self.w[...]


def test_classifier_loss_matches_optax():
    rng = np.random.default_rng(0)
    model = Logits(rng.normal(size=(4, 5)).astype(np.float32))
    batch = {"image": jnp.asarray(rng.normal(size=(32,) + SHAPE), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 5, 32), jnp.int32)}
    loss, m = ob.classifier_loss(model, batch, jax.random.key(0))
    logits = model(batch["image"])
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5)
    acc = np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(batch["label"]))
    assert float(m["accuracy"]) == pytest.approx(acc)


def test_tdkd_loss_is_the_kl_of_eq_13():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    teacher, student = Logits(w), Logits(w)
    batch = {"image": jnp.asarray(rng.normal(size=(16,) + SHAPE), jnp.float32)}
    # A student equal to the teacher on clean inputs is not a perfect student on noisy ones;
    # with teacher logits passed explicitly, the KL is computed against those logits.
    t_logits = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
    temp = 2.0
    loss, m = ob.tdkd_loss(student, t_logits, batch, jax.random.key(0), sde=SDE, temperature=temp)
    # recompute with the same randomness
    k_t, k_z = jax.random.split(jax.random.key(0))
    t = ob.sample_times(k_t, 16, SDE.t_min, SDE.t_max)
    z = jax.random.normal(k_z, batch["image"].shape)
    xt = SDE.alpha(t)[:, None, None, None] * batch["image"] + SDE.sigma(t)[:, None, None, None] * z
    p = np.asarray(jax.nn.softmax(t_logits / temp))
    q = np.asarray(jax.nn.softmax(student(xt) / temp))
    kl = np.mean(np.sum(p * np.log(p / q), -1))
    np.testing.assert_allclose(float(m["kl"]), kl, rtol=1e-4)
    np.testing.assert_allclose(float(loss), temp**2 * kl, rtol=1e-4)
    # zero when the student reproduces the teacher's distribution
    class Copy(nnx.Module):
        def __call__(self, x, t):
            return t_logits + 3.0  # softmax is shift-invariant
    loss0, m0 = ob.tdkd_loss(Copy(), t_logits, batch, jax.random.key(0), sde=SDE)
    assert abs(float(loss0)) < 1e-6 and float(m0["agreement"]) == 1.0
    # a teacher module: gradients flow into the student only
    grads = nnx.grad(lambda s, te: ob.tdkd_loss(s, te, batch, jax.random.key(3), sde=SDE)[0],
                     argnums=(0, 1))(student, teacher)
    assert np.abs(np.asarray(grads[0].w[...])).sum() > 0
    assert np.abs(np.asarray(grads[1].w[...])).sum() == 0


# -- configuration and input validation ------------------------------------------------------------
@pytest.mark.parametrize("overrides,field", [
    (dict(name="ambient", t_n=1.5), "objective.t_n"),
    (dict(name="ambient", t_n=0.0), "objective.t_n"),
    (dict(name="ambient", sigma_tn=1.2), "objective.sigma_tn"),
    (dict(name="ambient"), "objective.t_n"),
    (dict(name="ambient", t_n=0.3, sigma_tn=0.5), "objective.t_n"),
    (dict(name="ambient", t_n=0.3, weighting="likelihood"), "objective.weighting"),
    (dict(name="ambient", t_n=0.3, noisy_fraction=1.0), "objective.noisy_fraction"),
    (dict(name="conditional"), "objective.num_classes"),
    (dict(name="conditional", num_classes=10, label_dropout=1.0), "objective.label_dropout"),
    (dict(name="fancy"), "objective.name"),
    (dict(parameterization="v"), "objective.parameterization"),
    (dict(t_sampling="sobol"), "objective.t_sampling"),
])
def test_invalid_objective_configs_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        ob.make_loss(objective_config(**overrides), SDE)


def test_unknown_objective_fields_are_rejected():
    with pytest.raises(ValueError, match=r"objective\.tn"):
        objective_config(tn=0.3)
    cfg = objective_config()
    cfg.unlock() if hasattr(cfg, "unlock") else None
    cfg["extra"] = 1
    with pytest.raises(ValueError, match=r"objective\.extra"):
        config_lib.validate_objective_config(cfg)


def test_bad_inputs_fail_before_tracing():
    model = GaussianDenoiser()
    batch = gaussian_batch(jax.random.key(0), 8)
    with pytest.raises(ValueError, match="index"):
        ob.ambient_loss(model, batch, jax.random.key(0), sde=SDE, t_n=0.3, seed=0)
    with pytest.raises(ValueError, match="t_n"):
        ob.ambient_loss(model, {**batch, "index": jnp.arange(8)}, jax.random.key(0), sde=SDE,
                        t_n=1.0, seed=0)
    with pytest.raises(ValueError, match="parameterization"):
        ob.denoising_loss(model, batch, jax.random.key(0), sde=SDE, parameterization="eps")
    with pytest.raises(ValueError, match=r"batch\['image'\]"):
        ob.denoising_loss(model, {"image": jnp.zeros((8, 4))}, jax.random.key(0), sde=SDE,
                          parameterization="x0")
    with pytest.raises(ValueError, match="sde"):
        ob.denoising_loss(model, batch, jax.random.key(0), sde=None, parameterization="x0")


@pytest.mark.parametrize("method", ["uniform", "antithetic", "stratified"])
def test_sample_times(method):
    t = np.asarray(ob.sample_times(jax.random.key(0), 1000, 0.2, 0.7, method))
    assert t.min() >= 0.2 and t.max() <= 0.7
    assert abs(t.mean() - 0.45) < 0.02
    if method == "antithetic":
        np.testing.assert_allclose(t[:500] + t[500:], 0.9, atol=1e-5)
    if method == "stratified":
        counts = np.histogram(t, bins=1000, range=(0.2, 0.7))[0]
        assert (counts == 1).all()


def test_weightings_relate_through_the_score_error():
    """For any prediction, the 'likelihood' loss is beta(t) ||s_hat - s||^2 / D in both parameterizations."""
    t = jnp.array([0.05, 0.3, 0.9])
    a, v, beta = SDE.alpha(t), SDE.variance(t), SDE.beta(t)
    w_eps = ob._weights("likelihood", "eps", t, SDE, 5.0)
    w_x0 = ob._weights("likelihood", "x0", t, SDE, 5.0)
    # eps-err e relates to x0-err by e = snr * x0-err
    snr = a**2 / v
    np.testing.assert_allclose(w_eps * snr, w_x0, rtol=1e-5)
    np.testing.assert_allclose(w_eps, beta / v, rtol=1e-6)
    m_eps = ob._weights("min_snr", "eps", t, SDE, 5.0)
    m_x0 = ob._weights("min_snr", "x0", t, SDE, 5.0)
    np.testing.assert_allclose(m_eps * snr, m_x0, rtol=1e-5)
    np.testing.assert_allclose(m_x0, np.minimum(snr, 5.0), rtol=1e-6)


def test_ambient_loss_maps_eps_predictions_through_tweedie():
    """An eps network and the x0 network it is equivalent to (Tweedie) get the same ambient loss."""
    batch = gaussian_batch(jax.random.key(0), 64)
    batch["index"] = jnp.arange(64)
    m_x0, m_eps = GaussianDenoiser(), GaussianDenoiser(parameterization="eps")
    for m in (m_x0, m_eps):  # a non-trivial, shared state
        m.m[...] = jnp.asarray(np.stack([MU, MU]))
    l_x0, met_x0 = ob.ambient_loss(m_x0, batch, jax.random.key(4), sde=SDE, t_n=0.3, seed=1,
                                   parameterization="x0")
    l_eps, met_eps = ob.ambient_loss(m_eps, batch, jax.random.key(4), sde=SDE, t_n=0.3, seed=1,
                                     parameterization="eps")
    np.testing.assert_allclose(float(l_eps), float(l_x0), rtol=1e-3)
    np.testing.assert_allclose(float(met_eps["ambient_loss"]), float(met_x0["ambient_loss"]),
                               rtol=1e-3)
