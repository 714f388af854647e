"""memjax.interop.torch: a PyTorch network as a memjax score_fn (issue 13 item 3).

Checks the bridge against (a) a pure-JAX reimplementation of a small torch network with the
same weights, (b) torch's own ``torch.func.jvp`` and float64 finite differences, (c) closed
forms on Gaussian data (an EDM-form optimal denoiser, and eps / x0 / v predictors, written in
torch), (d) a randomly initialised diffusers ``UNet2DModel`` called directly, and counts the
host calls that ``jax.vmap(jax.jvp)`` makes. The helpers ``assert_same_score`` and
``assert_same_volume_growth`` compare any two score functions (e.g. an NNX port against the
bridge of the same weights).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax

torch = pytest.importorskip("torch")
from memjax.interop import torch as mt  # noqa: E402

pytestmark = pytest.mark.interop

SHAPE = (8, 8, 3)
SDE = memjax.VPSDE()
TIMES = (1e-3, 0.05, 0.5, 1.0)


# -- helpers (also for the NNX-port comparison) ----------------------------------------------------
def rel_err(a, b) -> float:
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def assert_same_score(score_a, score_b, x, times=TIMES, *, num_tangents=3, rtol=1e-4, seed=0):
    """``score_a`` and ``score_b`` agree on ``x`` at ``times``: values, and ``jax.vmap`` of
    ``jax.jvp`` over ``num_tangents`` random tangents (the path volume growth takes)."""
    tangents = jax.random.normal(jax.random.key(seed), (num_tangents,) + x.shape, x.dtype)
    for t in times:
        t = jnp.asarray(t, x.dtype)

        def tangent_map(score):
            jvp = lambda u: jax.jvp(lambda z: score(z, t), (x,), (u,))
            return jax.jit(jax.vmap(jvp, out_axes=(None, 0)))(tangents)

        (ya, ja), (yb, jb) = tangent_map(score_a), tangent_map(score_b)
        assert rel_err(ya, yb) < rtol, (float(t), "score", rel_err(ya, yb))
        assert rel_err(ja, jb) < rtol, (float(t), "jvp", rel_err(ja, jb))


def assert_same_volume_growth(score_a, score_b, sde, x, *, num_axes=8, num_steps=20, rtol=1e-4):
    """``volume_growth(method="jvp")`` of the two score functions agrees to ``rtol``."""
    runs = [memjax.volume_growth(s, sde, x, num_axes=num_axes, num_steps=num_steps, method="jvp",
                                 key=jax.random.key(1)) for s in (score_a, score_b)]
    (a, b) = runs
    assert rel_err(a.log_growth, b.log_growth) < rtol, (a.log_growth, b.log_growth)
    assert rel_err(a.log_stretch, b.log_stretch) < rtol
    return runs


def count_calls(module) -> list:
    """A list that grows by one each time ``module``'s forward runs (torch.func.vmap included)."""
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def to_torch(x, dtype=None):
    """Channel-last JAX / NumPy ``[..., H, W, C]`` -> channel-first torch ``[..., C, H, W]``."""
    t = torch.tensor(np.asarray(x), dtype=dtype)
    return t.movedim(-1, -3)


# -- a small conv net in torch, and the same network written in JAX ---------------------------------
class SmallNet(torch.nn.Module):
    """conv 3x3 -> GroupNorm -> + time embedding -> SiLU -> conv 3x3: a miniature U-Net block."""

    def __init__(self, channels=3, hidden=8):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, hidden, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, hidden)
        self.time = torch.nn.Linear(2, hidden)
        self.conv2 = torch.nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x, c):
        emb = torch.stack([torch.sin(c / 1000), torch.cos(c / 1000)], -1)
        h = self.norm(self.conv1(x)) + self.time(emb)[:, :, None, None]
        return self.conv2(torch.nn.functional.silu(h))


def small_net_in_jax(net: SmallNet):
    """The same function in JAX, channel-last, one example: ``f(x [H, W, C], c) -> [H, W, C]``."""
    p = {k: jnp.asarray(v.detach().numpy()) for k, v in net.state_dict().items()}

    def conv(x, w, b):
        w = jnp.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO
        y = jax.lax.conv_general_dilated(x[None], w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y[0] + b

    def group_norm(h, groups, w, b, eps=1e-5):
        hg = h.reshape(h.shape[:2] + (groups, -1))
        mean = hg.mean((0, 1, 3), keepdims=True)
        var = hg.var((0, 1, 3), keepdims=True)
        return ((hg - mean) / jnp.sqrt(var + eps)).reshape(h.shape) * w + b

    def f(x, c):
        emb = jnp.stack([jnp.sin(c / 1000), jnp.cos(c / 1000)])
        h = group_norm(conv(x, p["conv1.weight"], p["conv1.bias"]), 2, p["norm.weight"],
                       p["norm.bias"])
        h = h + p["time.weight"] @ emb + p["time.bias"]
        return conv(jax.nn.silu(h), p["conv2.weight"], p["conv2.bias"])

    return f


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    net = SmallNet()
    f = small_net_in_jax(net)
    reference = lambda x, t: memjax.scores.eps_to_score(f(x, 999.0 * t), t, SDE)
    return net, reference


def _images(n, seed=0, shape=SHAPE, dtype=jnp.float32):
    return jax.random.uniform(jax.random.key(seed), (n,) + shape, dtype, -1.0, 1.0)


def test_score_and_jvp_match_jax_reimplementation(small):
    net, reference = small
    score = mt.from_torch(net, SDE, SHAPE)
    x = _images(1)[0]
    assert_same_score(score, reference, x)
    xs = _images(3, seed=1)
    calls = count_calls(net)
    batched = jax.jit(jax.vmap(score, (0, None)))(xs, 0.3)
    assert len(calls) == 1  # a vmapped call is one batched torch call
    assert rel_err(batched, jax.vmap(reference, (0, None))(xs, 0.3)) < 1e-4


def test_volume_growth_one_host_call_per_step(small):
    net, reference = small
    score = mt.from_torch(net, SDE, SHAPE)
    calls = count_calls(net)
    (bridged, _) = assert_same_volume_growth(score, reference, SDE, _images(1, seed=2)[0])
    # N = 8 axes plus the stiffness tangent: one torch call per Euler step
    assert len(calls) == 20 and int(bridged.num_evals) == 20


def test_ease_of_reproduction_vmapped_equals_per_image(small):
    net, reference = small
    score = mt.from_torch(net, SDE, SHAPE)
    images = _images(4, seed=3)
    opts = dict(num_axes=2, steps=3, grid_steps=50, key=jax.random.key(2), progress=False)
    calls = count_calls(net)
    batched = memjax.ease_of_reproduction(score, SDE, images, batch_size=4, **opts)
    assert len(calls) == 3  # 4 images x 3 tangents in each of the 3 steps' one call
    single = memjax.ease_of_reproduction(score, SDE, images, batch_size=1, **opts)
    expected = memjax.ease_of_reproduction(reference, SDE, images, batch_size=4, **opts)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)
    assert rel_err(batched, expected) < 1e-4


def test_ddim_sampler_through_bridge(small):
    net, reference = small
    score = mt.from_torch(net, SDE, SHAPE)
    opts = dict(sampler="ddim", num_steps=10, batch_size=3)
    got = memjax.sampling.sample(score, SDE, jax.random.key(4), 3, SHAPE, **opts)
    want = memjax.sampling.sample(reference, SDE, jax.random.key(4), 3, SHAPE, **opts)
    assert rel_err(got, want) < 1e-4


def test_ease_of_reproduction_on_four_devices(on_devices):
    """Sharded over 4 simulated devices (the callback runs once on gathered batches) or on a
    one-device mesh, the scores equal the JAX reimplementation's."""
    out = on_devices(f"""
        import json, sys
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import jax, numpy as np, memjax
        from test_interop_torch import SmallNet, small_net_in_jax, SDE, SHAPE, mt, _images
        net = SmallNet()
        f = small_net_in_jax(net)
        reference = lambda x, t: memjax.scores.eps_to_score(f(x, 999.0 * t), t, SDE)
        score = mt.from_torch(net, SDE, SHAPE)
        opts = dict(num_axes=2, steps=2, grid_steps=50, key=jax.random.key(2), progress=False,
                    batch_size=8)
        images = _images(8, seed=3)
        runs = [memjax.ease_of_reproduction(score, SDE, images, **opts),
                memjax.ease_of_reproduction(score, SDE, images, **opts,
                                            mesh=memjax.parallel.data_mesh(jax.devices()[:1])),
                memjax.ease_of_reproduction(reference, SDE, images, **opts)]
        print(json.dumps({{"devices": jax.device_count(), "runs": [r.tolist() for r in runs]}}))
        """, num_devices=4)
    assert out["devices"] == 4
    sharded, single, expected = out["runs"]
    assert rel_err(sharded, expected) < 1e-4 and rel_err(single, expected) < 1e-4


def test_jvp_matches_torch_jvp_and_finite_differences_float64(x64, small):
    net = SmallNet().double()
    net.load_state_dict(small[0].state_dict())
    fn = mt.network(net, SHAPE)
    x = _images(2, seed=4, dtype=jnp.float64)
    v = jax.random.normal(jax.random.key(5), x.shape, jnp.float64)
    c = jnp.asarray(250.0, jnp.float64)
    y, jv = jax.jit(jax.vmap(lambda a, b: jax.jvp(lambda z: fn(z, c), (a,), (b,))))(x, v)
    assert y.dtype == jnp.float64 and jv.dtype == jnp.float64
    labels = torch.full((2,), 250.0, dtype=torch.float64)
    with torch.no_grad():
        ty, tjv = torch.func.jvp(lambda z: net(z, labels), (to_torch(x),), (to_torch(v),))
    np.testing.assert_allclose(jv, np.asarray(tjv.movedim(1, -1)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, np.asarray(ty.movedim(1, -1)), rtol=1e-12, atol=1e-12)
    h = 1e-6
    fd = (jax.vmap(fn, (0, None))(x + h * v, c) - jax.vmap(fn, (0, None))(x - h * v, c)) / (2 * h)
    assert rel_err(jv, fd) < 1e-7


def test_float64_input_to_float32_module(x64, small):
    net, _ = small
    score = mt.from_torch(net, SDE, SHAPE)
    x = _images(1, seed=6, dtype=jnp.float64)[0]
    s64 = score(x, 0.2)
    assert s64.dtype == jnp.float64
    assert rel_err(s64, score(x.astype(jnp.float32), jnp.float32(0.2))) < 1e-6


# -- closed forms on Gaussian data -----------------------------------------------------------------
class GaussianModel(torch.nn.Module):
    r"""The exact predictor for data ``N(mean, cov)`` (flattened channel-last), in torch.

    ``output="edm"``: the VE denoiser ``D(x; s) = mu + Sigma (Sigma + s^2 I)^{-1} (x - mu)``,
    called with ``s``. Otherwise called with a label ``c``, ``t = c / scale`` on the linear
    VP-SDE, returning the posterior-mean ``"x0"``, its ``"eps"`` or ``"v"``.
    """

    def __init__(self, mean, cov, output="edm", scale=999.0, sde=SDE):
        super().__init__()
        lam, u = np.linalg.eigh(np.asarray(cov, np.float64))
        self.register_buffer("lam", torch.tensor(lam))
        self.register_buffer("u", torch.tensor(u))
        self.register_buffer("mu", torch.tensor(np.asarray(mean, np.float64).reshape(-1)))
        self.shape, self.output, self.scale, self.sde = tuple(mean.shape), output, scale, sde

    def denoise(self, x, s):
        r = (x - self.mu) @ self.u
        return self.mu + (r * self.lam / (self.lam + s[:, None] ** 2)) @ self.u.T

    def forward(self, x, c):
        b = x.shape[0]
        xf = x.movedim(1, -1).reshape(b, -1)
        if self.output == "edm":
            out = self.denoise(xf, c)
        else:
            t = (c / self.scale)[:, None]
            m = 0.5 * self.sde.beta_min * t + 0.25 * (self.sde.beta_max - self.sde.beta_min) * t**2
            alpha, sigma = torch.exp(-m), torch.sqrt(-torch.expm1(-2 * m))
            x0 = self.denoise(xf / alpha, (sigma / alpha)[:, 0])
            eps = (xf - alpha * x0) / sigma
            out = {"x0": x0, "eps": eps, "v": alpha * eps - sigma * x0}[self.output]
        return out.reshape((b,) + self.shape).movedim(-1, 1)


def _gaussian(shape=(4, 4, 2), seed=0):
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    cov = a @ a.T * 0.3 + np.diag(np.geomspace(1e-4, 0.5, d))
    mean = 0.5 * np.tanh(rng.standard_normal(shape))
    return mean, cov


def test_edm_gaussian_denoiser_gives_exact_vp_score(x64):
    mean, cov = _gaussian()
    exact = memjax.scores.gaussian(jnp.asarray(mean), jnp.asarray(cov), SDE)
    score = mt.from_torch(GaussianModel(mean, cov), SDE, mean.shape, prediction="edm")
    x = SDE.marginal(jnp.asarray(mean), 0.3, jax.random.normal(jax.random.key(0), mean.shape))
    assert_same_score(score, exact, x, times=(1e-3, 0.01, 0.1, 0.5, 1.0), rtol=1e-5)
    a, b = assert_same_volume_growth(score, exact, SDE, x, rtol=1e-5)
    assert a.log_growth.dtype == jnp.float64


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_eps_x0_v_predictors_give_exact_vp_score(x64, prediction):
    mean, cov = _gaussian(seed=1)
    exact = memjax.scores.gaussian(jnp.asarray(mean), jnp.asarray(cov), SDE)
    model = GaussianModel(mean, cov, output=prediction, scale=1000.0)
    score = mt.from_torch(model, SDE, mean.shape, prediction=prediction, label=lambda t: 1000.0 * t)
    x = jnp.asarray(np.random.default_rng(2).standard_normal(mean.shape))
    assert_same_score(score, exact, x, times=(1e-3, 0.1, 0.7), rtol=1e-5)


# -- diffusers UNet2DModel -------------------------------------------------------------------------
def tiny_unet(sample_size=8, seed=0):
    """A randomly initialised diffusers ``UNet2DModel`` with down, attention and mid blocks."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=sample_size, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D")).eval()


def diffusers_direct(unet, sde, x, timestep, t, tangent=None):
    """Score ``-eps / sigma(t)`` (and its jvp) by calling ``unet(x, timestep).sample`` in torch."""
    ts = torch.full((1,), float(timestep))
    f = lambda z: unet(z, ts).sample
    sigma = float(sde.sigma(t))
    xt = to_torch(x[None])
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        if tangent is None:
            return -np.asarray(f(xt).movedim(1, -1))[0] / sigma
        _, jv = torch.func.jvp(f, (xt,), (to_torch(tangent[None]),))
    return -np.asarray(jv.movedim(1, -1))[0] / sigma


def test_diffusers_unet_eps_convention_matches_direct_call():
    unet = tiny_unet()
    label = lambda t: jnp.round(999.0 * t)  # integer diffusers timesteps on the 999 t grid
    score = mt.from_torch(unet, SDE, SHAPE, label=label)
    x = _images(1, seed=7)[0]
    v = jax.random.normal(jax.random.key(8), SHAPE)
    for step in (1, 250, 999):
        t = jnp.float32(step / 999)
        assert rel_err(score(x, t), diffusers_direct(unet, SDE, x, step, t)) < 1e-5
        jv = jax.jvp(lambda z: score(z, t), (x,), (v,))[1]
        assert rel_err(jv, diffusers_direct(unet, SDE, x, step, t, v)) < 1e-5


# -- bad input -------------------------------------------------------------------------------------
class Halves(torch.nn.Module):
    def forward(self, x, c):
        return x[:, :1]


def test_output_shape_mismatch_names_module():
    with pytest.raises(ValueError, match=r"module: expected an output of the input's shape"):
        mt.from_torch(Halves(), SDE, SHAPE)


def test_bad_arguments():
    net = SmallNet()
    with pytest.raises(ValueError, match="module: expected a torch.nn.Module"):
        mt.from_torch(lambda x, c: x, SDE, SHAPE)
    with pytest.raises(ValueError, match="prediction: expected one of"):
        mt.from_torch(net, SDE, SHAPE, prediction="score")
    with pytest.raises(ValueError, match="example_shape"):
        mt.from_torch(net, SDE, (8, 0, 3))
    with pytest.raises(ValueError, match="module: calling it"):
        mt.from_torch(net, SDE, (8, 8, 4))  # 4 channels into a 3-channel conv
    with pytest.raises(ValueError, match="label: expected a callable"):
        mt.from_torch(net, SDE, SHAPE, label=999.0)
    with pytest.raises(ValueError, match="sde: expected a VP schedule"):
        mt.from_torch(net, object(), SHAPE)
    score = mt.from_torch(net, SDE, SHAPE)
    with pytest.raises(ValueError, match="x: expected one example of shape"):
        score(jnp.zeros((2,) + SHAPE), 0.5)


def test_reverse_mode_and_time_derivatives_raise(small):
    score = mt.from_torch(small[0], SDE, SHAPE)
    x = _images(1)[0]
    with pytest.raises(ValueError, match="forward-mode differentiation only"):
        jax.grad(lambda z: jnp.sum(score(z, 0.5)))(x)
    with pytest.raises(ValueError, match="forward-mode differentiation only"):
        jax.jit(jax.vmap(jax.grad(lambda z: jnp.sum(score(z, 0.5)))))(x[None])
    with pytest.raises(ValueError, match="forward-mode differentiation only"):
        jax.jvp(lambda z: jax.jvp(lambda w: score(w, 0.5), (z,), (x,))[1], (x,), (x,))
    with pytest.raises(ValueError, match="t: the torch bridge differentiates with respect to x"):
        jax.jvp(lambda t: score(x, t), (jnp.float32(0.5),), (jnp.float32(1.0),))
