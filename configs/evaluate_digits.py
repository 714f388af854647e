"""Memorization and diversity metrics of generated images against a training set.

    python -m memjax.scripts.evaluate --config=configs/evaluate_digits.py --workdir=/tmp/eval
    python -m memjax.scripts.evaluate --config=configs/evaluate_digits.py --workdir=/tmp/eval \
        --config.generated.source=npz --config.generated.path=/tmp/run/samples.npz \
        --config.train_split=/tmp/run/data_split.npz

The default runs offline in about a minute on 2 CPU cores: the training set is 500 of the
embedded digits and, with ``generated.source="demo"``, the "generated" set is built from known
parts (exact copies, near copies, held-out digits, noise images) so every metric has a known
answer to check against (written to metrics.json under "demo").

Fields:
  seed: seeds the demo set and the t-SNE.
  train_split: a saved split (``memjax.data.save_split``, e.g. a training workdir's
    ``data_split.npz``); its ``train`` images are the training set. Empty: use ``data``.
  data: a memjax data config (``memjax.data.data_config``: digits, tfds, npz, folder; subsets,
    flips, resizing); the training set is its ``train`` split, the demo's novel images come
    from its held-out split.
  generated.source: "demo", "npz" (an array in an ``.npz``; ``generated.key``, default
    "image", else the only array, else "samples") or "folder" (image files; resized to the
    training images' size). uint8 images are read as 0..255, floats must lie in [-1, 1].
  generated.path: the ``.npz`` file or folder.
  generated.limit: use at most this many generated images (0: all).
  generated.demo_copies / demo_near / demo_novel / demo_noise: sizes of the demo's parts;
    demo_near_sigma: the noise added to the near copies.
  features: "pixels", "classifier" (memjax's digits classifier, trained and cached under
    workdir/classifier; digits-shaped data only) or a feature network "sscd:PATH",
    "dinov2:PATH", "inception:PATH", "squeezenet:PATH" (memjax.features; README "Feature
    spaces"). The cosine similarity, the similarity fractions, the diverse samples and the
    Fréchet distance (FID with "inception:PATH") use these features, cached in the workdir
    (features_*.npz); L2 and Carlini's normalized L2 are always computed on pixels.
  memorization.bands: named cosine-similarity bands name -> (lo, hi) for AMS / UMS, reported
    as user-chosen. Empty: paper 001's bands, which only SSCD features ("sscd:PATH") have;
    any other feature space then raises a ValueError. The digits default below is chosen for
    pixel cosines (not a paper's).
  memorization.n, memorization.alpha: normalized L2 (paper 000 eq. 7). memorization.delta:
    extracted when normalized L2 < delta.
  memorization.match: "best" or "all" (UMS reading, see memjax.metrics.memorization.ams_ums).
  memorization.thresholds: similarity thresholds for the fractions (paper 002 Table 1).
  memorization.block_size: references per block in nearest-neighbour search (0: automatic).
  diverse.enabled, diverse.method ("tsne_hull" | "knn_support"), diverse.joint,
    diverse.perplexity, diverse.num_iters, diverse.k; diverse.max_real: at most this many
    training images enter the t-SNE (a random subset; 0: all).
  report.num_pairs: closest generated / training pairs shown.
"""

import ml_collections

from memjax.data import data_config


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.train_split = ""
    c.data = data_config(source="digits", num_train=500, num_heldout=200, seed=0)

    c.generated = ml_collections.ConfigDict()
    c.generated.source = "demo"
    c.generated.path = ""
    c.generated.key = "image"
    c.generated.limit = 0
    c.generated.demo_copies = 12
    c.generated.demo_near = 12
    c.generated.demo_near_sigma = 0.05
    c.generated.demo_novel = 100
    c.generated.demo_noise = 6

    c.features = "pixels"

    c.memorization = ml_collections.ConfigDict()
    c.memorization.n = 50
    c.memorization.alpha = 0.5
    c.memorization.delta = 1.0 / 3.0
    c.memorization.match = "best"
    c.memorization.thresholds = (0.9, 0.95, 0.99)
    c.memorization.block_size = 0
    c.memorization.bands = ml_collections.ConfigDict(dict(
        low=(0.8, 0.9), mid=(0.9, 0.95), high=(0.95, 1.0)))

    c.diverse = ml_collections.ConfigDict()
    c.diverse.enabled = True
    c.diverse.method = "tsne_hull"
    c.diverse.joint = True
    c.diverse.perplexity = 30.0
    c.diverse.num_iters = 1000        # paper 003's t-SNE: perplexity 30, 1000 iterations
    c.diverse.k = 5
    c.diverse.max_real = 500

    c.report = ml_collections.ConfigDict()
    c.report.num_pairs = 8
    return c
