"""The embedded default audit: the overfit digits U-Net, audited end to end on 2 CPU cores.

    python -m memjax.scripts.audit --config=configs/digits_audit.py --workdir=/tmp/audit
    memjax-audit --config=configs/digits_audit.py --workdir=/tmp/audit \
        --config.ease.network.settings="((1, 1), (64, 10))"

Every field (``memjax.audit.run_audit`` reads them):

  seed: seeds the initial axes of every image (``fold_in(seed, image index)``), the sampler's
    noise and the diverse-samples t-SNE. The training seed is ``train.seed``.
  train: the training config: configs/digits_overfit.py with 32 digits + their mirror images =
    64 trained, 64 held out (the split is saved as workdir/model/data_split.npz), the whole set in
    each batch of 64, 1,500 steps, no sample grid (``_train_config`` below). Used when neither
    ``model.workdir`` nor ``model.checkpoint`` is set: the audit then trains into
    ``workdir/model`` (resuming from its last checkpoint when interrupted).
  model.workdir: a memjax training workdir (``memjax-train --workdir=...``) to restore instead
    of training; its saved split says which images were trained on.
  model.checkpoint: an orbax checkpoint directory of a memjax train state; the architecture is
    ``train.model`` and the trained / held-out split ``train.data`` (see
    configs/audit_custom_example.py).
  model.step: checkpoint step to restore (0: the latest).
  model.source: any other model (memjax.jobs.sources.load_model_source): "package.module:fn"
    returning (score_fn, sde), or "diffusers:PATH"; the split is ``train.data``.
  ease.grid_steps: T, the Euler grid of paper 000 (dt = 1 / T; "step = 1" is the growth over
    the first dt = 1e-3).
  ease.method: "jvp" (exact tangents) or "finite_difference" (the paper's neighbours at sigma).
  ease.accumulate: "qr" (true volume; one run per Pareto-maximal setting covers all smaller
    ones) or "norms" (the reference code's raw stretches; every setting run separately).
  ease.solver: "euler" (the paper's one evaluation per step) or an adaptive diffrax solver.
  ease.sigma: the ball radius of the finite-difference method (0.05, image units).
  ease.check_stability: estimate dt |lambda_max| per step and report the fraction of images
    whose every step was inside explicit Euler's stability interval.
  ease.network.settings / ease.exact.settings: (N axes, steps) pairs; N = -1 means D (the
    full volume, 64 for the digits). The network rows answer "does the trained model grow
    trained images more than held-out ones?"; the exact rows are the same question for the
    exact score of the training set (a perfect memoriser), the reference.
  ease.network.batch_size / ease.exact.batch_size: images per vmapped, device-sharded batch
    (memory ~ batch x (N + 2) activations).
  ease.network.enabled / ease.exact.enabled: switch a row family off.
  ease.algorithm1: paper 000's Algorithm 1 as written, on the network, reported next to
    memjax's rows and labelled "Algorithm 1 (paper 000, FD sigma=0.05, norms)" (off by
    default; on in ``:paper``). Its algorithm1.method ("finite_difference"),
    algorithm1.accumulate ("norms") and algorithm1.sigma (0.05) override the global ones;
    algorithm1.settings ((min(100, D), 1000): N = 100, or D when D < 100, over the full grid),
    algorithm1.batch_size, algorithm1.enabled as for the other families.

Variants (``--config=configs/digits_audit.py:VARIANT``): ``tiny`` (seconds, for tests) and
``paper``: the default rows plus Algorithm 1 as written (above) and the exact score's full
volume over the whole grid, for paper 000's Fig. 2 left. Algorithm 1 costs (D + 1) x 1000
network evaluations per image: 20 CPU-seconds per image for the digits U-Net (measured on 16
images, docs/reproductions.md), so about 43 CPU-minutes for the default recipe's 128 images
(85 for a 128 + 128 model): far over the 5-minute default budget; run it on an accelerator or
overnight. configs/digits_audit_sweep.py runs the same row on a subset.
  sampling.num_samples: samples drawn from the network (0: skip sampling, memorization and
    diverse samples). sampling.sampler: "ddim", "sde", "dpm++2m" or "ode"; sampling.num_steps its grid;
    sampling.eta: DDIM stochasticity; sampling.batch_size: samples per batch.
  memorization.n, memorization.alpha: Carlini et al.'s normalized L2 (paper 000 eq. 7) with
    the n nearest training images and alpha. memorization.delta: a sample is memorized when
    its normalized L2 < delta. memorization.ratio_threshold: also report d1/d2 < this.
  memorization.features: also measure the cosine similarity of every sample (and held-out
    image) to its nearest training image in a feature space: "pixels", "classifier" or a
    feature network "sscd:PATH", "dinov2:PATH", "inception:PATH", "squeezenet:PATH"
    (memjax.features; README "Feature spaces"); "" (default): pixel L2 criteria only.
  memorization.bands: named bands name -> (lo, hi) of that cosine similarity for AMS / UMS,
    reported as user-chosen; empty: paper 001's bands, declared for SSCD features only (any
    other feature space then raises a ValueError before any work).
  diverse.enabled: count paper 003's diverse samples. diverse.features: "pixels",
    "classifier" (memjax's digits classifier features) or "NAME:PATH" (memjax.features, e.g.
    "squeezenet:PATH" as paper 003).
    diverse.reference: the real points are the "train" images or "all" (train + held out).
    diverse.method: "tsne_hull" (paper 003: one t-SNE of [real; generated], convex hull of the
    real points; diverse.perplexity, diverse.num_iters) or "knn_support" (k-NN balls in feature space; diverse.k).
  report.num_show: images per row in the figures.

Budget (2 CPU cores): the network row costs about (N + 2) x steps forward passes per image,
the exact row (N + 2) x steps evaluations of a 64-image mixture; the defaults cover the
paper's N = 1 over one step, N = 1 over up to 100 steps and N = 8 over up to 10 steps (network;
two integrations cover the five rows) and the full volume over 100 steps (exact score, where
the separation is complete; REFERENCE.md). The network's full volume (N = -1) over 10 steps
adds about a CPU-minute: --config.ease.network.settings="((1, 100), (8, 10), (-1, 10))".
"""

import ml_collections

from memjax.scripts.common import load_config


def _train_config():
    """configs/digits_overfit.py at half the size: 32 digits + mirrors = 64 trained images, 64
    held out, the whole set in every batch of 64, 1,500 steps (the same peak lr, cosine decay to 0
    and EMA). Half the images memorize in fewer, half-price steps and halve every later stage;
    benchmarks/results/train.md has the measurements."""
    c = load_config("digits_overfit", next_to=__file__)
    c.data.num_train = 32
    c.training.update(batch_size=64, num_steps=1500, checkpoint_every=500, sample_every=-1)
    return c


def get_config(variant: str = ""):
    """The audit config; ``variant="tiny"`` (``--config=digits_audit:tiny``) is a seconds-scale
    smoke run (8 + 8 digits, 20 training steps) for tests and for trying the console."""
    if variant not in ("", "tiny", "paper"):
        raise ValueError(f"config argument: expected '', 'tiny' or 'paper', got {variant!r}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.train = _train_config()

    c.model = ml_collections.ConfigDict()
    c.model.workdir = ""
    c.model.checkpoint = ""
    c.model.step = 0
    c.model.source = ""

    c.ease = ml_collections.ConfigDict()
    c.ease.grid_steps = 1000
    c.ease.method = "jvp"
    c.ease.accumulate = "qr"
    c.ease.solver = "euler"
    c.ease.sigma = 0.05
    c.ease.check_stability = True
    c.ease.network = ml_collections.ConfigDict()
    c.ease.network.enabled = True
    c.ease.network.settings = ((1, 1), (1, 10), (1, 100), (8, 1), (8, 10))
    c.ease.network.batch_size = 32
    c.ease.exact = ml_collections.ConfigDict()
    c.ease.exact.enabled = True
    c.ease.exact.settings = ((1, 1), (1, 10), (1, 100), (8, 1), (8, 10), (8, 100),
                             (-1, 1), (-1, 10), (-1, 100))
    c.ease.exact.batch_size = 64
    c.ease.algorithm1 = ml_collections.ConfigDict()
    c.ease.algorithm1.enabled = False
    c.ease.algorithm1.method = "finite_difference"
    c.ease.algorithm1.accumulate = "norms"
    c.ease.algorithm1.sigma = 0.05
    c.ease.algorithm1.settings = ((_paper_axes(c.train), 1000),)
    c.ease.algorithm1.batch_size = 16

    c.sampling = ml_collections.ConfigDict()
    c.sampling.num_samples = 256
    c.sampling.sampler = "ddim"
    c.sampling.num_steps = 100
    c.sampling.eta = 0.0
    c.sampling.batch_size = 256

    c.memorization = ml_collections.ConfigDict()
    c.memorization.n = 50
    c.memorization.alpha = 0.5
    c.memorization.delta = 1.0 / 3.0
    c.memorization.ratio_threshold = 1.0 / 3.0
    c.memorization.features = ""
    c.memorization.bands = ml_collections.ConfigDict()

    c.diverse = ml_collections.ConfigDict()
    c.diverse.enabled = True
    c.diverse.features = "pixels"
    c.diverse.reference = "train"
    c.diverse.method = "tsne_hull"
    c.diverse.perplexity = 30.0
    c.diverse.num_iters = 1000        # paper 003's t-SNE: perplexity 30, 1000 iterations
    c.diverse.k = 5

    c.report = ml_collections.ConfigDict()
    c.report.num_show = 12
    if variant == "paper":
        c.ease.algorithm1.enabled = True
        c.ease.exact.settings = tuple(c.ease.exact.settings) + ((-1, 1000),)
    return _tiny(c) if variant == "tiny" else c


def _paper_axes(train) -> int:
    """Paper 000's N: 100 axes, or D when the image dimension D is below 100 (64 for 8x8)."""
    from memjax.jobs.ease_rows import paper_num_axes

    size = train.model.image_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return paper_num_axes(h * w * train.model.channels)


def _tiny(c):
    t = c.train
    t.data.num_train, t.data.num_heldout = 8, 8
    t.model.base_channels, t.model.attn_resolutions = 8, ()
    t.optim.warmup_steps = 0
    t.training.update(batch_size=16, num_steps=20, log_every=10, checkpoint_every=10,
                      tensorboard=False, sample_every=-1)
    c.ease.network.settings, c.ease.network.batch_size = ((1, 1), (1, 3), (-1, 2)), 16
    c.ease.exact.settings, c.ease.exact.batch_size = ((1, 1), (4, 2), (-1, 3)), 16
    c.sampling.update(num_samples=24, num_steps=10, batch_size=24)
    c.memorization.n = 10
    c.diverse.update(perplexity=5.0, num_iters=250)
    c.report.num_show = 4
    return c
