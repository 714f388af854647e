r"""``python -m memjax.scripts.evaluate``: memorization and diversity of generated images.

    python -m memjax.scripts.evaluate --config=configs/evaluate_digits.py --workdir=/tmp/eval

Compares generated images (an ``.npz``, an image folder, or the config's known-answer demo set)
with a training set (any memjax dataset, or a saved split) and writes under ``--workdir``:

* ``metrics.json``: nearest-neighbour similarity summaries and fractions (paper 002) in the
  feature space ``features`` names (pixels, the digits classifier, SSCD, DINOv2, Inception,
  SqueezeNet), AMS / UMS (paper 001 eqs. 14-15) in that space's bands (paper 001's for SSCD,
  the config's user-chosen ``memorization.bands`` otherwise), the Fréchet distance (FID for
  Inception), Carlini's normalized L2 and the extracted count (paper 000 eq. 7), diverse
  samples (paper 003), and the demo's ground truth when used;
* ``figures/best_similarity.png`` (histogram with the bands), ``figures/normalized_l2.png``,
  ``figures/closest_pairs.png`` (generated above training), ``figures/tsne_hull.png`` (t-SNE
  scatter with the hull of the real points and the diverse samples circled);
* ``generated.npz`` / ``train.npz``: the exact images that were compared.

The job is :mod:`memjax.jobs.evaluate`; see ``configs/evaluate_digits.py`` for every field. The
evaluation is a single pass of pure functions (seconds to minutes); a rerun recomputes it.
"""

from __future__ import annotations

from memjax.jobs.evaluate import evaluate  # noqa: F401 (the job, re-exported)
from memjax.scripts import common

_CONFIG, _WORKDIR = common.job_flags("Evaluation config file.",
                                     "Directory for metrics.json and figures.")


def main(argv):
    common.setup(argv)
    evaluate(_CONFIG.value, _WORKDIR.value)


def run():
    common.run(main)


if __name__ == "__main__":
    run()
