"""Paper 000 Fig. 2 right / Fig. 3 on the digits: reproduced vs not-reproduced training images.

    memjax-audit --config=configs/digits_contrast.py --workdir=/tmp/contrast
    memjax-audit --config=configs/digits_contrast.py --workdir=/tmp/contrast \
        --config.model.workdir=/tmp/target_g          # a model trained elsewhere

Runs memjax.jobs.reproduced_contrast (``job = "reproduced_contrast"``) on a model that
GENERALIZES: configs/digits_overfit.py with 256 source digits (+ mirror images = 512 trained
images; docs/side_results.md's target G), trained here into workdir/model unless
``model.workdir`` is set. Fields: those of configs/digits_audit.py (model, train, seed,
sampling.*, memorization.n / alpha, ease.*), plus

  contrast.num_samples: samples drawn to find the reproduced training images.
  contrast.deltas: normalized-L2 thresholds (paper 000 eq. 7); the first (1/3, the audit's
    memorization.delta) is the primary criterion, 0.5 a looser one reported beside it. "Not
    reproduced" means no sample within the loosest.
  contrast.max_per_group: at most this many images per group (reproduced: the first by
    index; not reproduced: a seeded draw), fixed before any growth is computed.
  ease.network.settings: the (N, steps) of Fig. 3 (p-values against N at the first and last
    step, against steps at N = 1), memjax's exact tangents and true volume (``qr``: two
    nested runs cover every setting). ease.check_stability is off (the network passed the
    check at every step in the audit; it costs one more tangent).

Cost: about 5 CPU-minutes after training (2,048 DDIM samples; the two runs (8, 1000) and
(64, 10) on 2 x 24 images); training the model about 6 CPU-minutes more.
"""

import importlib.util
import os

import ml_collections


def get_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_audit.py")
    spec = importlib.util.spec_from_file_location("digits_audit_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.job = "reproduced_contrast"
    c.train.data.num_train = 256
    c.ease.check_stability = False
    c.ease.network.settings = tuple((n, s) for n in (1, 2, 4, 8) for s in (1, 10, 100, 1000)) \
        + ((-1, 1), (-1, 10))
    c.ease.network.batch_size = 32
    c.sampling.batch_size = 512
    c.contrast = ml_collections.ConfigDict()
    c.contrast.num_samples = 2048
    c.contrast.deltas = (1.0 / 3.0, 0.5)
    c.contrast.max_per_group = 24
    return c
