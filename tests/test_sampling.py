r"""Samplers and guidance against closed forms.

Gaussian data ``N(mu, Sigma)`` has the analytic score (memjax.scores.gaussian), so every sampler
must reproduce ``mu`` and ``Sigma`` within sampling error. Tolerances: 5 standard errors, with
``SE(mean_i) = sqrt(S_ii / n)`` and ``SE(cov_ij) = sqrt((S_ii S_jj + S_ij^2) / n)`` (Gaussian
sample covariance); steps are chosen so the discretisation bias is well inside that.

Guidance: a 1-D two-Gaussian mixture, components ``k in {-, +}`` at ``-2, +2`` with std 0.3 and
weights ``w = (0.7, 0.3)``, and *noisy* labels ``p(y | k) = L[k, y]``, ``L = [[.8, .2], [.2, .8]]``.
Both the mixture score and the time-dependent classifier are closed form:
``P_t(k | x) = softmax_k(log w_k + log N(x; alpha_t mu_k, alpha_t^2 s^2 + sigma_t^2))`` and
``p_t(y | x) = sum_k P_t(k | x) L[k, y]`` (``y`` is independent of ``x_t`` given ``k``).
The components are separated by ~13 std, so the sign of a sample tells its component.

Power-prior predictions for the fraction of component ``+`` when guiding towards ``y = 1``
(``a = L[+, 1] = .8``, ``b = L[-, 1] = .2``): the target ``p_0(x) p_0(y|x)^lambda`` puts mass
``w_k L[k, y]^lambda`` on component k (``p_0(y|x)`` is constant on each separated component), so

    f(lambda) = w_+ a^lambda / (w_+ a^lambda + w_- b^lambda):
    f(0) = 0.3,  f(1) = 0.24 / 0.38 = 0.6316,  f(3) = 0.9648,  f(8) = 0.99996.

lambda = 0 and 1 are exact for the paper's per-time rule ``s + lambda grad log p_t(y|x)`` (the
score of ``p_t(x)`` and of ``p_t(x|y)``). For other lambda the per-time tilt is not the
diffusion of one distribution; the exact tilt is the Doob h-transform
``grad log E[p_0(y|x_0)^lambda | x_t] = grad log sum_k P_t(k|x) L[k,y]^lambda``, which we feed
through the same guidance API (``output="log_prob"``) to check f(3). The paper's rule at
lambda = 8 is checked against f(8) (both ~1), and at lambda = 3 only for monotonicity, because
there it depends on the sampler (measured: SDE 0.963, ODE/DDIM 0.933 vs f(3) = 0.965).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import sampling, scores
from memjax.sde import VPSDE

SDE = VPSDE()
MU = jnp.array([0.5, -1.0])
COV = jnp.array([[1.0, 0.6], [0.6, 0.8]])


def _check_moments(x, mu, cov, k=5.0):
    n = x.shape[0]
    mu, cov = np.asarray(mu), np.asarray(cov)
    d = np.diag(cov)
    se_mean = np.sqrt(d / n)
    se_cov = np.sqrt((np.outer(d, d) + cov**2) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - mu), k * se_mean)
    np.testing.assert_array_less(np.abs(np.cov(x.T) - cov), k * se_cov)


SLOW = pytest.mark.slow


@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(sampler="sde", num_steps=1000), id="sde"),
    pytest.param(dict(sampler="ddim", num_steps=500), id="ddim0"),
    pytest.param(dict(sampler="ddim", num_steps=500, eta=1.0), id="ddim1", marks=SLOW),
    pytest.param(dict(sampler="ddim", num_steps=500, eta=0.5), id="ddim.5", marks=SLOW),
    pytest.param(dict(sampler="ode", num_steps=None), id="ode-adaptive", marks=SLOW),
    pytest.param(dict(sampler="ode", num_steps=64, solver="heun"), id="ode-heun64"),
])
def test_gaussian_moments(kwargs):
    g = scores.gaussian(MU, COV, SDE)
    x = sampling.sample(g, SDE, jax.random.key(0), 8000, (2,), **kwargs)
    assert x.shape == (8000, 2) and x.dtype == np.float32
    _check_moments(x, MU, COV)


def test_gaussian_moments_image_shape():
    """Any example shape: a [2, 2, 1] 'image' with independent pixels."""
    mean = jnp.linspace(-0.5, 0.5, 4).reshape(2, 2, 1)
    var = jnp.array([0.2, 0.5, 1.0, 0.1])
    g = scores.gaussian(mean, jnp.diag(var), SDE)
    x = sampling.sample(g, SDE, jax.random.key(3), 6000, (2, 2, 1), sampler="sde", num_steps=500)
    _check_moments(x.reshape(6000, 4), mean.reshape(-1), np.diag(var))


def test_ddim_converges_to_ode():
    """DDIM eta=0 is a first-order integrator of the probability-flow ODE: same noise, error ~ 1/N."""
    g = scores.gaussian(MU, COV, SDE)
    key = jax.random.key(1)
    ref = sampling.sample(g, SDE, key, 256, (2,), sampler="ode", num_steps=None, rtol=1e-6, atol=1e-6)
    errs = [np.sqrt(np.mean((sampling.sample(g, SDE, key, 256, (2,), sampler="ddim",
                                             num_steps=n) - ref) ** 2)) for n in (30, 300, 3000)]
    assert errs[0] > 5 * errs[1] > 25 * errs[2]
    assert errs[2] < 2e-3


def test_seeded_and_batch_independent():
    g = scores.gaussian(MU, COV, SDE)
    a = sampling.sample(g, SDE, jax.random.key(7), 50, (2,), sampler="sde", num_steps=50, batch_size=7)
    b = sampling.sample(g, SDE, jax.random.key(7), 50, (2,), sampler="sde", num_steps=50, batch_size=64)
    c = sampling.sample(g, SDE, jax.random.key(8), 50, (2,), sampler="sde", num_steps=50)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(a - c).max() > 0.1
    # a raw uint32 key gives the same samples as the typed key it wraps
    d = sampling.sample(g, SDE, jax.random.PRNGKey(7), 50, (2,), sampler="sde", num_steps=50)
    np.testing.assert_allclose(a, d, atol=1e-6)


@SLOW
def test_eight_devices_match_one(on_devices):
    code = """
    import json, jax, jax.numpy as jnp, numpy as np
    from memjax import sampling, scores
    from memjax.sde import VPSDE
    sde = VPSDE()
    g = scores.gaussian(jnp.array([0.5, -1.0]), jnp.array([[1.0, 0.6], [0.6, 0.8]]), sde)
    x = sampling.sample(g, sde, jax.random.key(5), 37, (2,), sampler="ddim", num_steps=40, eta=0.5,
                        batch_size=16)
    print(json.dumps({"n": jax.device_count(), "x": x.tolist()}))
    """
    out = on_devices(code, num_devices=8)
    g = scores.gaussian(MU, COV, SDE)
    x = sampling.sample(g, SDE, jax.random.key(5), 37, (2,), sampler="ddim", num_steps=40, eta=0.5,
                        batch_size=16)
    assert out["n"] == 8
    np.testing.assert_allclose(np.asarray(out["x"]), x, atol=1e-5)


# -- guidance on a two-Gaussian mixture with noisy labels --------------------------------------
W = jnp.array([0.7, 0.3])
MUS = jnp.array([-2.0, 2.0])
S2 = 0.3**2
L = jnp.array([[0.8, 0.2], [0.2, 0.8]])


def _component_logits(x, t):
    a = SDE.alpha(t)
    v = a**2 * S2 + SDE.variance(t)
    return jnp.log(W) - 0.5 * (x[0] - a * MUS) ** 2 / v - 0.5 * jnp.log(2 * jnp.pi * v)


def mixture_score(x, t):
    return jax.grad(lambda v: jax.nn.logsumexp(_component_logits(v, t)))(x)


def classifier_logits(x, t):
    """log p_t(y | x) for both labels (log-probabilities are valid logits)."""
    return jnp.log(jax.nn.softmax(_component_logits(x, t)) @ L)


def power_prior_fraction(lam):
    a, b = float(L[1, 1]), float(L[0, 1])
    return float(W[1] * a**lam / (W[1] * a**lam + W[0] * b**lam))


def _fraction_plus(score_fn, sampler, n=4000, y=1, key=2):
    x = sampling.sample(score_fn, SDE, jax.random.key(key), n, (1,), cond=np.full(n, y, np.int32),
                        sampler=sampler, num_steps=None if sampler == "ode" else 500)
    return float(np.mean(x[:, 0] > 0))


@pytest.mark.parametrize("sampler", ["sde", pytest.param("ddim", marks=SLOW),
                                     pytest.param("ode", marks=SLOW)])
@pytest.mark.parametrize("lam", [0.0, 1.0, 8.0])
def test_power_prior_class_proportions(sampler, lam):
    """The paper's per-time rule (eq. 12) at lambda = 0, 1 (exact) and 8 (both ~ 1)."""
    g = sampling.classifier_guidance(mixture_score, classifier_logits, scale=lam, num_classes=2)
    f = _fraction_plus(g, sampler)
    p = power_prior_fraction(lam)
    se = np.sqrt(max(p * (1 - p), 1e-3 * (1 - 1e-3)) / 4000)
    assert abs(f - p) < 5 * se, (f, p)


@SLOW
def test_exact_power_prior_via_h_transform():
    """lambda = 3 through the exact tilt log E[p_0(y|x_0)^lam | x_t] (a log_prob classifier)."""
    lam = 3.0

    def log_h(x, t, y):
        return jnp.log(jax.nn.softmax(_component_logits(x, t)) @ L[:, y] ** lam)

    g = sampling.classifier_guidance(mixture_score, log_h, scale=1.0, output="log_prob")
    p = power_prior_fraction(lam)
    se = np.sqrt(p * (1 - p) / 4000)
    for sampler in ("sde", "ode"):
        assert abs(_fraction_plus(g, sampler) - p) < 5 * se


def test_guidance_strength_is_monotone_and_per_example_scales():
    """One compiled sampler, per-example (label, scale) pairs: the fraction grows with lambda,
    and guiding to y = 0 moves mass the other way."""
    g = sampling.classifier_guidance(mixture_score, classifier_logits, scale=0.0, num_classes=2)
    smp = sampling.make_sampler(g, SDE, (1,), sampler="sde", num_steps=300)
    lams = np.repeat(np.array([0.0, 1.0, 3.0], np.float32), 3000)
    x = smp(jax.random.key(4), lams.size, sampling.Guide(np.ones(lams.size, np.int32), lams))
    fracs = [(x[lams == v, 0] > 0).mean() for v in (0.0, 1.0, 3.0)]
    assert fracs[0] < fracs[1] < fracs[2]
    assert abs(fracs[1] - power_prior_fraction(1.0)) < 0.05
    x0 = smp(jax.random.key(4), 3000, sampling.Guide(np.zeros(3000, np.int32), np.full(3000, 1.0, np.float32)))
    # p(+ | y=0) = w_+ (1-a) / (w_+ (1-a) + w_- (1-b)) = 0.06 / 0.62
    assert abs((x0[:, 0] > 0).mean() - 0.06 / 0.62) < 0.03


def test_classifier_free_guidance_matches_classifier_guidance():
    """With the exact conditional score s(x,t,y) = s + grad log p_t(y|x) and null = unconditional,
    CFG and classifier guidance are the same score for every lambda."""
    null = 2

    def cond_score(x, t, y):
        grad = jax.grad(lambda v: jax.nn.log_softmax(classifier_logits(v, t))[jnp.minimum(y, 1)])(x)
        return mixture_score(x, t) + jnp.where(y == null, 0.0, 1.0) * grad

    cfg = sampling.classifier_free_guidance(cond_score, scale=3.0, null_label=null)
    cg = sampling.classifier_guidance(mixture_score, classifier_logits, scale=3.0, num_classes=2)
    xs = jnp.linspace(-3, 3, 7)[:, None]
    for t in (0.01, 0.3, 0.9):
        for y in (0, 1):
            a = jax.vmap(lambda v: cfg(v, t, y))(xs)
            b = jax.vmap(lambda v: cg(v, t, y))(xs)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# -- validation ------------------------------------------------------------------------------------
def test_bad_inputs_raise_before_compiling():
    g = scores.gaussian(MU, COV, SDE)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="sampler"):
        sampling.sample(g, SDE, key, 4, (2,), sampler="heun")
    with pytest.raises(ValueError, match="num_steps"):
        sampling.sample(g, SDE, key, 4, (2,), sampler="sde", num_steps=0)
    with pytest.raises(ValueError, match="eta"):
        sampling.sample(g, SDE, key, 4, (2,), sampler="sde", eta=0.5)
    with pytest.raises(ValueError, match="eta"):
        sampling.sample(g, SDE, key, 4, (2,), sampler="ddim", eta=-1.0)
    with pytest.raises(ValueError, match="scale"):
        sampling.classifier_guidance(mixture_score, classifier_logits, scale=-1.0)
    with pytest.raises(ValueError, match="scale"):
        sampling.classifier_free_guidance(lambda x, t, y: x, scale=-0.5, null_label=0)
    with pytest.raises(ValueError, match="num_samples"):
        sampling.sample(g, SDE, key, 0, (2,))
    with pytest.raises(ValueError, match="shape"):
        sampling.sample(g, SDE, key, 4, (2, -1))


def test_guided_bad_inputs_raise_before_compiling(monkeypatch):
    compiled = []

    g3 = sampling.classifier_guidance(mixture_score, lambda x, t: jnp.zeros(3), num_classes=2)
    smp = sampling.make_sampler(g3, SDE, (1,), sampler="sde", num_steps=10)
    monkeypatch.setattr(smp, "_run", lambda *a: compiled.append(1))
    with pytest.raises(ValueError, match="classifier_fn: expected logits of shape \\(2,\\)"):
        smp(jax.random.key(0), 4, np.ones(4, np.int32))
    g = sampling.classifier_guidance(mixture_score, classifier_logits, num_classes=2)
    smp = sampling.make_sampler(g, SDE, (1,), sampler="sde", num_steps=10)
    monkeypatch.setattr(smp, "_run", lambda *a: compiled.append(1))
    with pytest.raises(ValueError, match="labels in \\[0, 2\\)"):
        smp(jax.random.key(0), 4, np.array([0, 1, 2, 1], np.int32))
    with pytest.raises(ValueError, match="scale"):
        smp(jax.random.key(0), 2, sampling.Guide(np.ones(2, np.int32), np.array([1.0, -2.0])))
    with pytest.raises(ValueError, match="leading axis"):
        smp(jax.random.key(0), 4, np.ones(3, np.int32))
    assert not compiled
