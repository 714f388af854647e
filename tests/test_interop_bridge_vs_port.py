"""The two halves of issue 13 on the same weights: the NNX port against the torch bridge.

A random tiny diffusers ``UNet2DModel`` (down, attention and mid blocks; biases and norms
perturbed off their init) is saved with ``save_pretrained`` and loaded by
:func:`memjax.interop.load_pretrained` (Flax NNX, discrete schedule, label ``N t - 1``); the
same torch module is wrapped by :func:`memjax.interop.torch.from_torch` on the loaded schedule
and label map. Scores, their jvps, exact volume growth and the ease-of-reproduction ranking must
agree (float32, 1e-4 relative): the port and the bridge compute one function two ways.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import memjax

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from test_interop_diffusers import _save  # noqa: E402
from test_interop_torch import (  # noqa: E402
    assert_same_score,
    assert_same_volume_growth,
    rel_err,
    tiny_unet,
)

from memjax.interop import load_pretrained  # noqa: E402
from memjax.interop import torch as mt  # noqa: E402

pytestmark = pytest.mark.interop

SHAPE = (8, 8, 3)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """``(port, bridge, schedule)``: one set of weights, two score functions."""
    unet = tiny_unet(sample_size=SHAPE[0], seed=1)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pre = load_pretrained(_save(tmp_path_factory.mktemp("unet"), unet))
    assert isinstance(pre.schedule, memjax.DiscreteVP)
    bridge = mt.from_torch(unet, pre.schedule, SHAPE, label=pre.label_fn)
    return pre.score_fn, bridge, pre.schedule


def _images(n, seed):
    return jax.random.uniform(jax.random.key(seed), (n,) + SHAPE, minval=-1.0, maxval=1.0)


def test_score_and_jvp_agree(pair):
    port, bridge, schedule = pair
    # training timesteps 0, 49, 499, 999 and one between two knots (label 422.5)
    times = tuple(float(schedule.t_from_timestep(i)) for i in (0, 49, 499, 999)) + (0.4235,)
    assert_same_score(bridge, port, _images(1, seed=0)[0], times, num_tangents=3)


def test_volume_growth_agrees(pair):
    port, bridge, schedule = pair
    a, b = assert_same_volume_growth(bridge, port, schedule, _images(1, seed=1)[0], num_axes=8,
                                     num_steps=20)
    assert np.all(np.isfinite(np.asarray(a.log_growth)))


def test_ease_of_reproduction_agrees(pair):
    port, bridge, schedule = pair
    images = _images(3, seed=2)
    opts = dict(num_axes=2, steps=3, grid_steps=50, batch_size=3, key=jax.random.key(3),
                progress=False)
    got = memjax.ease_of_reproduction(bridge, schedule, images, **opts)
    want = memjax.ease_of_reproduction(port, schedule, images, **opts)
    assert rel_err(got, want) < 1e-4, (got, want)
    assert np.array_equal(np.argsort(got), np.argsort(want))
