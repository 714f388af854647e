r"""``python -m memjax.scripts.train``: train a score model (resumes from the last checkpoint).

    python -m memjax.scripts.train --config=configs/digits_overfit.py --workdir=/tmp/digits
    python -m memjax.scripts.train --config=configs/cifar10_ddpm.py --workdir=gs://.../run \
        --config.training.batch_size=256

The config is validated before anything is read or compiled (a ``ValueError`` names the
field). Everything is written under ``--workdir`` (see :mod:`memjax.training`): the config,
the data split, checkpoints, ``metrics.jsonl``, TensorBoard events and sample grids. Run the
same command again to continue an interrupted run.
"""

from __future__ import annotations

from memjax.scripts import common

_CONFIG, _WORKDIR = common.job_flags("Training config file (configs/*.py).",
                                     "Directory for checkpoints, metrics and samples.")


def main(argv):
    from memjax import training

    common.setup(argv)
    config = _CONFIG.value
    training.validate_config(config)
    result = training.train(config, _WORKDIR.value)
    print(f"[train] finished at step {int(result.state['step'])} (resumed from "
          f"{result.start_step})")


def run():
    common.run(main)


if __name__ == "__main__":
    run()
