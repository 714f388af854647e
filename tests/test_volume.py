"""Tests of memjax.volume (paper 000): closed forms, exact discrete maps, the reference loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
from memjax import volume
from memjax.data import load_digits

SDE = mj.VPSDE()


# -- closed forms (REFERENCE.md) -----------------------------------------------------------------
def _m(t):
    return 0.5 * SDE.beta_min * t + 0.25 * (SDE.beta_max - SDE.beta_min) * t**2


def _beta(t):
    return SDE.beta_min + t * (SDE.beta_max - SDE.beta_min)


def _lam(s, t):
    """Eigenvalues of Sigma_t = alpha^2 Sigma + sigma^2 I: 1 + (s_i - 1) e^{-2m(t)}, [len(t), D]."""
    t = np.atleast_1d(np.asarray(t, np.float64))
    return 1.0 + (s[None, :] - 1.0) * np.exp(-2.0 * _m(t))[:, None]


def _grid(num_steps, steps=None):
    h = SDE.t_max / num_steps
    return h, SDE.t_min + h * np.arange((steps or num_steps) + 1)


def _euler_factors(s, num_steps):
    """log|1 + dt j_i(t_k)|, j_i = -beta/2 (1 - 1/lambda_i): [num_steps, D]."""
    h, t = _grid(num_steps)
    tk = t[:-1]
    j = -0.5 * _beta(tk)[:, None] * (1.0 - 1.0 / _lam(s, tk))
    return np.log(np.abs(1.0 + h * j))


def _gaussian(d=6, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    cov = a @ a.T / d + 0.05 * np.eye(d)
    mean = rng.normal(size=d)
    score = mj.scores.gaussian(jnp.asarray(mean, dtype), jnp.asarray(cov, dtype), SDE)
    s, u = np.linalg.eigh(cov)
    x0 = jnp.asarray(rng.normal(size=d), dtype)
    return score, s, u, x0


def _match_axes(axes, u):
    """perm[i] = the eigenvector (column of u) that final axis i lies along."""
    overlap = np.abs(np.asarray(axes).reshape(axes.shape[0], -1) @ u)
    perm = overlap.argmax(axis=1)
    np.testing.assert_allclose(overlap.max(axis=1), 1.0, atol=1e-8)
    return perm


# -- Gaussian data -------------------------------------------------------------------------------
def test_gaussian_euler_reproduces_discrete_log_det_and_per_axis_stretches(x64):
    score, s, u, x0 = _gaussian()
    d = s.size
    res = volume.volume_growth(score, SDE, x0, num_axes=d, num_steps=1000,
                               key=jax.random.key(0))
    factors = _euler_factors(s, 1000)
    expected = np.cumsum(factors.sum(axis=1))
    np.testing.assert_allclose(res.log_growth, expected, rtol=1e-5, atol=1e-9)
    assert abs(expected[-1]) > 1.0
    _, t = _grid(1000)
    np.testing.assert_allclose(res.times, t, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(res.times)[[0, 1, -2]], [1e-3, 2e-3, 1.0], rtol=1e-12)
    assert res.log_stretch.shape == (1000, d) and int(res.num_evals) == 1000
    assert bool(jnp.all(res.stable))
    # Initial axes along the eigenvectors of Sigma: each axis stretches by its own factor.
    eig = volume.volume_growth(score, SDE, x0, num_axes=d, num_steps=1000,
                               initial_axes=jnp.asarray(u.T.copy()))
    perm = _match_axes(eig.axes, u)
    np.testing.assert_allclose(eig.log_stretch, factors[:, perm], rtol=1e-9, atol=1e-12)


def test_gaussian_tsit5_reproduces_continuous_log_det(x64):
    score, s, u, x0 = _gaussian(seed=1)
    res = volume.volume_growth(score, SDE, x0, num_axes=s.size, num_steps=10, solver="tsit5",
                               rtol=1e-9, atol=1e-9, key=jax.random.key(1))
    lam = _lam(s, np.asarray(res.times))
    expected = 0.5 * (np.log(lam[1:]).sum(axis=1) - np.log(lam[0]).sum())
    np.testing.assert_allclose(res.log_growth, expected, rtol=1e-4)
    assert bool(jnp.all(res.stable))
    np.testing.assert_allclose(res.times[-1], SDE.t_min + SDE.t_max)
    # Eigenvector axes: per-axis stretch (1/2) log(lambda_i(t_{k+1}) / lambda_i(t_k)).
    eig = volume.volume_growth(score, SDE, x0, num_axes=s.size, num_steps=10, solver="tsit5",
                               rtol=1e-9, atol=1e-9, initial_axes=jnp.asarray(u.T.copy()))
    perm = _match_axes(eig.axes, u)
    per_axis = 0.5 * np.log(lam[1:] / lam[:-1])
    np.testing.assert_allclose(eig.log_stretch, per_axis[:, perm], rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_implicit_solver_tangents_converge_as_tolerances_tighten(x64):
    score, s, _, x0 = _gaussian(d=3, seed=2)
    errors = []
    for tol in (1e-3, 1e-5, 1e-7):
        res = volume.volume_growth(score, SDE, x0, num_axes=3, num_steps=2, solver="kvaerno5",
                                   rtol=tol, atol=tol, key=jax.random.key(2))
        lam = _lam(s, np.asarray(res.times))
        exact = 0.5 * (np.log(lam[-1]).sum() - np.log(lam[0]).sum())
        errors.append(abs(float(res.log_growth[-1]) - exact))
    assert errors[2] < errors[0]
    assert errors[2] < 1e-5 * abs(exact)


def test_single_training_point_gives_d_over_2_log_variance_ratio(x64):
    d = 5
    y = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, size=(1, d)))
    score = mj.scores.empirical(y, SDE)
    x0 = y[0] + 0.01
    res = volume.volume_growth(score, SDE, x0, num_axes=d, num_steps=4, solver="tsit5",
                               rtol=1e-9, atol=1e-9, key=jax.random.key(3))
    v = lambda t: -np.expm1(-2.0 * _m(np.asarray(t)))
    np.testing.assert_allclose(res.log_growth[-1],
                               0.5 * d * np.log(v(res.times[-1]) / v(res.times[0])), rtol=1e-4)
    # The paper's Euler grid: the discrete closed form (s_i = 0).
    euler = volume.volume_growth(score, SDE, x0, num_axes=d, num_steps=1000,
                                 key=jax.random.key(3))
    discrete = np.cumsum(_euler_factors(np.zeros(d), 1000).sum(1))
    np.testing.assert_allclose(euler.log_growth, discrete, rtol=1e-6)


def test_stiffness_estimate_matches_spectral_radius(x64):
    """dt |lambda| from the warm-started power iteration converges to dt max_i |j_i(t_k)|."""
    score, s, _, x0 = _gaussian(seed=4)
    res = volume.volume_growth(score, SDE, x0, num_axes=2, num_steps=1000, stop_after=300,
                               key=jax.random.key(4))
    h, t = _grid(1000, 300)
    j = -0.5 * _beta(t[:-1])[:, None] * (1.0 - 1.0 / _lam(s, t[:-1]))
    np.testing.assert_allclose(res.stiffness[50:], h * np.abs(j).max(axis=1)[50:], rtol=1e-3)
    assert np.all(np.asarray(res.stiffness) <= h * np.abs(j).max(axis=1) * (1 + 1e-9))


# -- exactness on a nonlinear score --------------------------------------------------------------
def _few_points(d=4, n=5, seed=5):
    rng = np.random.default_rng(seed)
    train = jnp.asarray(rng.uniform(-1, 1, size=(n, d)))
    return mj.scores.empirical(train, SDE), train


def test_full_volume_equals_log_det_of_jacfwd_of_the_euler_flow_map(x64):
    score, train = _few_points()
    x0 = train[1] + jnp.array([0.03, -0.02, 0.01, 0.02])
    num_steps, d = 200, 4
    h, t = _grid(num_steps)
    drift = SDE.pf_drift(score)
    times = jnp.asarray(t)

    def flow_map(x):
        def body(x, tk):
            return x + h * drift(tk, x), None
        return jax.lax.scan(body, x, times[:-1])[0]

    jac = jax.jacfwd(flow_map)(x0)
    _, logdet = np.linalg.slogdet(np.asarray(jac))
    res = volume.volume_growth(score, SDE, x0, num_axes=d, num_steps=num_steps,
                               key=jax.random.key(5), check_stability=False)
    np.testing.assert_allclose(res.log_growth[-1], logdet, rtol=1e-9)
    np.testing.assert_allclose(res.x, flow_map(x0), rtol=1e-12)


def test_finite_differences_converge_to_jvp_and_are_exact_for_gaussian(x64):
    score, train = _few_points(seed=6)
    x0 = train[0] + 0.01                 # near a training point: a well-conditioned trajectory
    opts = dict(num_axes=2, num_steps=1000, stop_after=100, key=jax.random.key(6))
    exact = volume.volume_growth(score, SDE, x0, **opts).log_growth
    errors = [float(jnp.max(jnp.abs(volume.volume_growth(
        score, SDE, x0, method="finite_difference", sigma=sig, **opts).log_growth - exact)))
        for sig in (1e-2, 1e-3, 1e-4)]
    assert errors[0] > 5 * errors[1] > 25 * errors[2]       # first order in sigma
    assert errors[2] < 1e-4
    # Linear drift (Gaussian score): finite differences are exact, to rounding, at any sigma.
    g, *_, xg = _gaussian(seed=7)
    a = volume.volume_growth(g, SDE, xg, **opts)
    b = volume.volume_growth(g, SDE, xg, method="finite_difference", sigma=0.05, **opts)
    np.testing.assert_allclose(b.log_stretch, a.log_stretch, atol=1e-9)


def test_norms_never_below_qr(x64):
    images = load_digits()[:40].astype(np.float64)
    score = mj.scores.empirical(jnp.asarray(images[:32]), SDE)
    for x0 in (images[0], images[35]):
        opts = dict(num_axes=4, num_steps=1000, stop_after=200, key=jax.random.key(8),
                    check_stability=False)
        qr = volume.volume_growth(score, SDE, jnp.asarray(x0), accumulate="qr", **opts)
        norms = volume.volume_growth(score, SDE, jnp.asarray(x0), accumulate="norms", **opts)
        per_step_qr = np.asarray(qr.log_stretch).sum(1)
        per_step_norms = np.asarray(norms.log_stretch).sum(1)
        assert np.all(per_step_norms >= per_step_qr - 1e-9)
        assert float(norms.log_growth[-1]) > float(qr.log_growth[-1])


# -- the reference code's loop, literally ---------------------------------------------------------
def _numpy_empirical_drift(train, x, t):
    m = _m(t)
    alpha, v = np.exp(-m), -np.expm1(-2 * m)
    d2 = ((x[:, None, :] - alpha * train[None]) ** 2).sum(-1)
    logits = -0.5 * d2 / v
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    score = (alpha * w @ train - x) / v
    return -0.5 * _beta(t) * (x + score)


def _gram_schmidt(vectors):
    out = []
    for v in vectors:
        for q in out:
            v = v - (q @ v) * q
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


def _reference_loop(train, x0, eps, sigma=0.05, steps=1000):
    """Paper 000 Algorithm 1 as the authors' code runs it (REFERENCE.md), in NumPy float64."""
    ts = np.linspace(1e-3, 1.0, steps)
    dt = 1.0 / steps
    order = np.argsort(-np.linalg.norm(eps, axis=1), kind="stable")
    x = x0[None]
    xs = x0[None] + _gram_schmidt(eps[order]) * sigma
    log_l, out = 0.0, []
    for t in ts:
        x_new = x + dt * _numpy_empirical_drift(train, x, t)
        xs_new = xs + dt * _numpy_empirical_drift(train, xs, t)
        disp = xs_new - x_new
        log_l += np.sum(np.log(np.linalg.norm(disp, axis=1))
                        - np.log(np.linalg.norm(xs - x, axis=1)))
        out.append(log_l)
        order = np.argsort(-np.linalg.norm(disp, axis=1), kind="stable")
        xs = _gram_schmidt(disp[order]) * sigma + x_new
        x = x_new
    return np.asarray(out)


def test_finite_difference_norms_matches_literal_reference_loop(x64):
    rng = np.random.default_rng(9)
    train = rng.uniform(-1, 1, size=(6, 8))
    x0 = train[2] + 0.02 * rng.normal(size=8)
    eps = rng.normal(size=(3, 8))
    expected = _reference_loop(train, x0, eps)
    score = mj.scores.empirical(jnp.asarray(train), SDE)
    res = volume.volume_growth(score, SDE, jnp.asarray(x0), num_axes=3, num_steps=1000,
                               method="finite_difference", accumulate="norms", sigma=0.05,
                               initial_axes=jnp.asarray(eps))
    np.testing.assert_allclose(res.log_growth, expected, rtol=1e-4, atol=1e-4)
    assert abs(expected[-1]) > 1.0


# -- real data: precision and stiffness ----------------------------------------------------------
@pytest.fixture(scope="module")
def digits_split():
    images = load_digits()
    rng = np.random.default_rng(0)
    idx = rng.permutation(images.shape[0])
    base = images[idx[:64]]
    train = np.concatenate([base, base[:, :, ::-1]])          # 64 digits + flips (paper 000)
    held_out = images[idx[64:68]]
    return train, held_out


@pytest.mark.slow
def test_float32_matches_float64_on_trained_digits_and_flags_held_out(digits_split):
    """Full volume (N = D = 64), 1000 Euler steps, exact score of 64 digits + flips.

    Trained images: every step stable, float32 == float64 to 1e-3 (measured ~2e-6), and they
    grow far more than held-out ones (paper 000 Fig. 2). Held-out images: the stiff posterior
    covariance term makes the paper's Euler grid unstable, and the flag says so.
    """
    train, held_out = digits_split
    images = np.concatenate([train[[0, 70]], held_out[:2]])
    opts = dict(num_axes=64, steps=1000, grid_steps=1000, batch_size=4, key=jax.random.key(10))
    score32 = mj.scores.empirical(jnp.asarray(train, jnp.float32), SDE)
    with pytest.warns(RuntimeWarning, match="unstable"):
        s32, ok32 = volume.ease_of_reproduction(score32, SDE, images.astype(np.float32),
                                                return_stable=True, **opts)
    with jax.enable_x64(True):
        score64 = mj.scores.empirical(jnp.asarray(train, jnp.float64), SDE)
        with pytest.warns(RuntimeWarning, match="unstable"):
            s64, ok64 = volume.ease_of_reproduction(score64, SDE, images.astype(np.float64),
                                                    return_stable=True, **opts)
    assert s32.dtype == np.float32 and s64.dtype == np.float64
    np.testing.assert_allclose(s32[:2], s64[:2], rtol=1e-3)
    assert ok64[:2].all() and ok32[:2].all()                  # trained: every Euler step stable
    assert not ok64[2:].any() and not ok32[2:].any()          # held out: flagged
    assert s64[:2].min() > s64[2:].max() + 100.0              # trained grow far more


# -- API: jit / vmap, chunks, batching, options ---------------------------------------------------
def test_vmap_jit_and_tangent_chunk_match_single_calls():
    score, train = _few_points(d=6, n=8, seed=11)
    score = mj.scores.empirical(jnp.asarray(train, jnp.float32), SDE)
    xs = jnp.asarray(train[:3], jnp.float32) + 0.05
    key = jax.random.key(11)
    opts = dict(num_axes=5, num_steps=1000, stop_after=20, key=key)

    @jax.jit
    def batched(xs):
        return jax.vmap(lambda x: volume.volume_growth(score, SDE, x, **opts).log_growth)(xs)

    single = np.stack([volume.volume_growth(score, SDE, x, **opts).log_growth for x in xs])
    np.testing.assert_allclose(batched(xs), single, rtol=1e-5, atol=1e-5)
    for method in ("jvp", "finite_difference"):
        a = volume.volume_growth(score, SDE, xs[0], method=method, **opts)
        b = volume.volume_growth(score, SDE, xs[0], method=method, tangent_chunk=2, **opts)
        np.testing.assert_allclose(b.log_stretch, a.log_stretch, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:volume_growth")
def test_stop_after_is_a_prefix_of_the_full_grid():
    score, train = _few_points(seed=12)
    score = mj.scores.empirical(jnp.asarray(train, jnp.float32), SDE)
    x0 = jnp.asarray(train[0], jnp.float32) + 0.1
    full = volume.volume_growth(score, SDE, x0, num_axes=2, num_steps=50, key=jax.random.key(0))
    part = volume.volume_growth(score, SDE, x0, num_axes=2, num_steps=50, stop_after=7,
                                key=jax.random.key(0))
    np.testing.assert_allclose(part.log_growth, full.log_growth[:7], rtol=1e-6)
    assert part.times.shape == (8,) and int(part.num_evals) == 7


def test_ease_of_reproduction_per_image_keys_and_batch_independence():
    images = load_digits()[:11]
    score = mj.scores.empirical(jnp.asarray(load_digits()[100:140]), SDE)
    key = jax.random.key(13)
    a = volume.ease_of_reproduction(score, SDE, images, num_axes=2, steps=3, key=key,
                                    batch_size=4)
    b = volume.ease_of_reproduction(score, SDE, images, num_axes=2, num_steps=3, key=key,
                                    batch_size=64)
    assert a.shape == (11,)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for i in (0, 7):
        one = volume.volume_growth(score, SDE, jnp.asarray(images[i]), num_axes=2,
                                   num_steps=1000, stop_after=3,
                                   key=jax.random.fold_in(key, i))
        np.testing.assert_allclose(a[i], one.log_growth[-1], rtol=1e-5, atol=1e-6)
    easiest, hardest = volume.rank_images(a, 3)
    np.testing.assert_array_equal(easiest, np.argsort(-a, kind="stable")[:3])
    np.testing.assert_array_equal(hardest, np.argsort(a, kind="stable")[:3])
    assert a[easiest[0]] == a.max() and a[hardest[0]] == a.min()


def test_rank_images_handles_nan_and_validates():
    easiest, hardest = volume.rank_images(np.array([0.5, np.nan, 2.0, -1.0]), 2)
    np.testing.assert_array_equal(easiest, [2, 0])
    np.testing.assert_array_equal(hardest, [3, 0])
    with pytest.raises(ValueError, match="k:"):
        volume.rank_images(np.ones(3), 4)
    with pytest.raises(ValueError, match="scores"):
        volume.rank_images(np.ones((2, 2)), 1)


_X = jnp.zeros((2, 2, 1))
_SCORE = lambda x, t: -x


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_axes=5), "num_axes"),
    (dict(num_axes=0), "num_axes"),
    (dict(num_steps=0), "num_steps"),
    (dict(method="adjoint"), "method"),
    (dict(accumulate="sum"), "accumulate"),
    (dict(solver="rk4"), "solver"),
    (dict(sigma=-1.0), "sigma"),
    (dict(initial_axes=jnp.ones((2, 4))), "initial_axes"),
    (dict(key=None), "key"),
    (dict(stop_after=2000), "stop_after"),
    (dict(tangent_chunk=0), "tangent_chunk"),
])
def test_volume_growth_rejects_bad_input(kwargs, match):
    opts = dict(num_axes=2, key=jax.random.key(0))
    opts.update(kwargs)
    with pytest.raises(ValueError, match=match):
        volume.volume_growth(_SCORE, SDE, _X, **opts)


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=5, grid_steps=4), "steps"),
    (dict(steps=2, num_steps=3), "alias"),
    (dict(steps=0), "steps"),
    (dict(key=None), "key"),
    (dict(batch_size=0), "batch_size"),
    (dict(num_axes=9), "num_axes"),
    (dict(method="fd"), "method"),
])
def test_ease_of_reproduction_rejects_bad_input(kwargs, match):
    opts = dict(key=jax.random.key(0))
    opts.update(kwargs)
    with pytest.raises(ValueError, match=match):
        volume.ease_of_reproduction(_SCORE, SDE, jnp.zeros((3, 2, 2, 2)), **opts)


def test_bad_score_and_sde_rejected():
    with pytest.raises(ValueError, match="score_fn"):
        volume.volume_growth(None, SDE, _X, num_axes=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="sde"):
        volume.volume_growth(_SCORE, "vp", _X, num_axes=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="images"):
        volume.ease_of_reproduction(_SCORE, SDE, jnp.zeros((0, 2)), key=jax.random.key(0))
