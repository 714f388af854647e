"""Feature functions: pixels, normalisation, a memjax classifier's penultimate layer."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memjax.data import load_digits
from memjax.metrics.features import (classifier_features, compute_features, get_feature_fn,
                                     l2_normalized, pixels)
from memjax.metrics.memorization import nearest_neighbours
from memjax.models import ResNet


def small_resnet(**kw):
    return ResNet(num_classes=10, in_channels=1, stage_sizes=(1, 1), width=8,
                  rngs=nnx.Rngs(0), **kw)


def test_pixels_and_l2_normalized():
    x = load_digits()[:10]
    f = np.asarray(pixels(x))
    np.testing.assert_array_equal(f, x.reshape(10, 64))
    g = np.asarray(l2_normalized(pixels)(x))
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(g * np.linalg.norm(f, axis=1, keepdims=True), f, rtol=1e-5,
                               atol=1e-6)


def test_classifier_features_equal_eval_mode_forward_and_leave_model_alone():
    x = load_digits()[:37]
    model = small_resnet()
    model.train()
    fn = classifier_features(model)
    got = np.asarray(fn(x))
    assert got.shape == (37, 16)                 # width * 2 ** (stages - 1)
    ref_model = nnx.merge(*nnx.split(model))
    ref_model.eval()
    ref = np.asarray(ref_model.features(jnp.asarray(x)))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert model.bn_stem.use_running_average is False       # the user's model is untouched
    # batched with a padded last batch: identical to one call
    np.testing.assert_allclose(compute_features(fn, x, batch_size=5), got, rtol=1e-5, atol=1e-6)
    # features only depend on the image: eval mode does not mix examples
    np.testing.assert_allclose(np.asarray(fn(x[:5])), got[:5], rtol=1e-5, atol=1e-6)


def test_classifier_features_time_dependent_and_generic_objects():
    x = load_digits()[:6]
    model = small_resnet(time_dependent=True, time_embed_dim=16)
    f0 = np.asarray(classifier_features(model, t=0.001)(x))
    ref_model = nnx.merge(*nnx.split(model))
    ref_model.eval()
    ref = ref_model.features(jnp.asarray(x), jnp.full((6,), 0.001))
    np.testing.assert_allclose(f0, np.asarray(ref), rtol=1e-5, atol=1e-6)

    class TimedProjector:                          # records the times it is given
        time_dependent = True

        def features(self, images, t):
            return jnp.asarray(images).reshape(images.shape[0], -1)[:, :3] * 0 + t[:, None]

    np.testing.assert_allclose(np.asarray(classifier_features(TimedProjector(), t=0.25)(x)),
                               np.full((6, 3), 0.25))
    with pytest.raises(ValueError, match="^t"):
        classifier_features(model)
    with pytest.raises(ValueError, match="^t"):
        classifier_features(small_resnet(), t=0.5)

    class Projector:                               # any object with .features works
        def features(self, images):
            return jnp.asarray(images).reshape(images.shape[0], -1)[:, :5] * 2.0

    np.testing.assert_allclose(np.asarray(classifier_features(Projector())(x)),
                               x.reshape(6, 64)[:, :5] * 2)
    with pytest.raises(ValueError, match="model"):
        classifier_features(object())
    with pytest.raises(ValueError, match="model"):
        get_feature_fn("classifier")
    with pytest.raises(ValueError, match="name"):
        get_feature_fn("dino")
    with pytest.raises(ValueError, match="feature_fn"):
        compute_features(lambda im: im[:, 0, 0, 0], x)    # not [b, d]


def test_copies_are_nearest_in_classifier_feature_space():
    x = load_digits()
    train, gen = x[:300], np.concatenate([x[[4, 100, 250]], x[1500:1505]])
    fn = get_feature_fn("classifier", small_resnet())
    ft, fg = compute_features(fn, train, batch_size=128), compute_features(fn, gen)
    d, i = nearest_neighbours(fg, ft, k=1)
    np.testing.assert_array_equal(np.asarray(i)[:3, 0], [4, 100, 250])
    np.testing.assert_allclose(np.asarray(d)[:3, 0], 0.0, atol=1e-6)
    assert np.all(np.asarray(d)[3:, 0] > 0)


@pytest.mark.slow
def test_digits_classifier_features_train_cache_and_shapes(tmp_path):
    from memjax.metrics.features import digits_classifier_features

    x = load_digits()[:40]
    fn = digits_classifier_features(workdir=str(tmp_path), num_steps=30, width=8)
    assert fn.accuracy > 0.3                                   # well above chance (0.1)
    again = digits_classifier_features(workdir=str(tmp_path), num_steps=30, width=8)
    assert again.accuracy == fn.accuracy                       # loaded from the cache
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(fn(x)))
    assert np.asarray(fn(x)).shape == (40, 16)
    # images padded to 16x16 RGB: a classifier of that shape
    big = np.zeros((3, 16, 16, 3), np.float32)
    fn16 = digits_classifier_features(train=big, num_steps=2, width=8)
    assert np.asarray(fn16(big)).shape == (3, 16)
