"""ease_of_reproduction gives the same numbers on 1 and on 8 (simulated CPU) devices."""

import numpy as np
import pytest

_CODE = """
import json
import jax, jax.numpy as jnp, numpy as np
import memjax as mj
from memjax import volume
from memjax.data import load_digits

sde = mj.VPSDE()
digits = load_digits()
score = mj.scores.empirical(jnp.asarray(digits[200:248]), sde)
images = digits[:13]                       # not a multiple of 8: exercises the padding
out = {"devices": jax.device_count()}
for method in ("jvp", "finite_difference"):
    s, ok = volume.ease_of_reproduction(score, sde, images, num_axes=3, steps=4, grid_steps=1000,
                                        batch_size=5, key=jax.random.key(7), method=method,
                                        return_stable=True)
    out[method] = np.asarray(s, np.float64).tolist()
    out[method + "_stable"] = np.asarray(ok).tolist()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_ease_of_reproduction_same_on_1_and_8_devices(on_devices):
    one = on_devices(_CODE, num_devices=1)
    eight = on_devices(_CODE, num_devices=8)
    assert one["devices"] == 1 and eight["devices"] == 8
    for method in ("jvp", "finite_difference"):
        a, b = np.asarray(one[method]), np.asarray(eight[method])
        assert a.shape == (13,) and np.all(np.isfinite(a))
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        assert one[method + "_stable"] == eight[method + "_stable"]


_FULL_VOLUME = """
import faulthandler, json
faulthandler.dump_traceback_later(240, exit=True)   # a deadlock fails with every stack
import jax, jax.numpy as jnp, numpy as np
import memjax as mj
from memjax import volume, volume_settings
from memjax.data import load_digits

sde = mj.VPSDE()
kernel = jnp.asarray(np.random.default_rng(0).standard_normal((3, 3, 1, 1)) / 9, jnp.float32)

def score(x, t):       # a convolution (XLA runs it on its intra-op pool), like a U-Net's
    y = jax.lax.conv_general_dilated(x[None], kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
    return (y - x) / sde.sigma(t) ** 2

images = load_digits()[:8]       # D = 64 axes: batched QRs that jaxlib splits over the pool
s = volume.ease_of_reproduction(score, sde, images, num_axes=64, steps=2, batch_size=8,
                                key=jax.random.key(0))
c = volume_settings.volume_curves(score, sde, images, num_axes=64, steps=2, report_axes=(1, 64),
                                  report_steps=(2,), key=jax.random.key(1), batch_size=8)
out = {"devices": jax.device_count(), "ease": np.asarray(s, np.float64).tolist(),
       "curves": np.asarray(c.growth, np.float64).ravel().tolist()}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_full_volume_on_several_cpu_devices_does_not_hang(on_devices):
    """All D axes on 2 CPU devices: jaxlib's batched QR deadlocked XLA's intra-op pool there
    (memjax.lyapunov.qr_reduced); ease scores and volume curves agree with 1 device."""
    two = on_devices(_FULL_VOLUME, num_devices=2)
    one = on_devices(_FULL_VOLUME, num_devices=1)
    assert two["devices"] == 2 and one["devices"] == 1
    for key in ("ease", "curves"):      # the audit's stage: per-image Haar frames (QR) too
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-5, err_msg=key)
