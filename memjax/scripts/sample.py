r"""``python -m memjax.scripts.sample``: samples of a trained diffusion model.

    python -m memjax.scripts.sample --config=configs/digits_sample.py --workdir=/tmp/samples
    python -m memjax.scripts.sample --config=configs/digits_sample.py \
        --config.target_workdir=/tmp/train_digits --config.sampler=sde --config.num_steps=1000 \
        --workdir=/tmp/samples

Restores (or trains, when ``target_workdir`` is empty) the model, draws the samples in chunks
(``workdir/samples/chunk_*.npz``; an interrupted run resumes at the first missing chunk) and
writes ``samples.npz``, ``grid.png``, ``nearest.png`` and ``stats.json``. See
:func:`memjax.sampling.run_job`.
"""

from __future__ import annotations

from memjax.scripts import common

_CONFIG, _WORKDIR = common.job_flags("Sampling config file.",
                                     "Directory for the samples and the report.")


def main(argv):
    import json

    from memjax.jobs import sources
    from memjax.jobs import sample as sample_job

    common.setup(argv)
    config, workdir = _CONFIG.value, _WORKDIR.value
    trained = sources.job_target(config, workdir)
    print(json.dumps(sample_job.run(config, workdir, trained), indent=1))


def run():
    common.run(main)


if __name__ == "__main__":
    run()
