r"""``python -m memjax.scripts.side``: SIDE data extraction from an unconditional model (paper 001).

    python -m memjax.scripts.side --config=configs/digits_side.py --workdir=/tmp/side
    python -m memjax.scripts.side --config=configs/digits_side.py \
        --config.target_workdir=/tmp/train_digits --workdir=/tmp/side

Trains (or restores) the target model, the normal classifier / k-means pseudo-labels and the
time-dependent classifier, then runs the guided lambda sweep; writes ``results.csv``,
``results.md``, ``ams_ums_vs_lambda.png`` and ``extracted.png`` under ``--workdir``. With
``classes_ablation.num_clusters`` set (``configs/digits_side.py:classes``) it then runs paper
001's Table 2 ablation under ``--workdir/classes`` (:mod:`memjax.jobs.side_ablation`). Every
stage and every finished lambda is cached there, so running the same command again resumes.
See :mod:`memjax.side`.
"""

from __future__ import annotations

from memjax.scripts import common

_CONFIG, _WORKDIR = common.job_flags("SIDE config file.",
                                     "Directory for every stage and the report.")


def main(argv):
    from memjax import side
    from memjax.jobs import sources

    common.setup(argv)
    config, workdir = _CONFIG.value, _WORKDIR.value
    side.validate_config(config)
    trained = sources.job_target(config, workdir)
    summary = side.run(config, workdir, trained=trained)
    print(open(f"{workdir}/results.md").read() if summary.get("lambdas_done") else summary)
    if config.classes_ablation.num_clusters:
        from memjax.jobs import side_ablation

        side_ablation.classes_sweep(config, workdir, trained)
        print(open(f"{workdir}/classes/classes.md").read())


def run():
    common.run(main)


if __name__ == "__main__":
    run()
