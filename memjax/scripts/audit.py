r"""``memjax-audit``: trains (or restores) a model and audits its memorization.

    python -m memjax.scripts.audit --config=configs/digits_audit.py --workdir=/tmp/audit
    memjax-audit --config=digits_audit --workdir=/tmp/audit        # a shipped config by name
    memjax-audit --config=configs/audit_custom_example.py --workdir=gs://bucket/my_audit

Writes ``report.json``, ``report.md``, ``figures/*.png`` and ``timings.json`` under
``--workdir``; every stage is cached there (``workdir/audit/*.npz``, the model under
``workdir/model``), so running the same command again reuses what is done and an interrupted
run resumes. See :mod:`memjax.audit` and ``configs/digits_audit.py`` for what is computed.
"""

from __future__ import annotations

from absl import flags

from memjax.scripts import common

_CONFIG, _WORKDIR = common.job_flags("Audit config file.",
                                     "Directory for the model, caches and report.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def main(argv):
    from memjax import audit, console

    common.setup(argv)
    config = _CONFIG.value
    if "train" in config:
        config.train.training.progress = _PROGRESS.value   # training reports like every stage
    job = config.get("job", "audit")
    if job != "audit":   # paper 000's studies built on the audit's model stage
        from memjax.jobs import paper000_jobs

        paper000_jobs.run(job, config, _WORKDIR.value)
        return
    # bars on a terminal; in a log file each stage reports in its own lines
    audit.run_audit(config, _WORKDIR.value, progress=_PROGRESS.value and console.is_terminal())


def run():
    common.run(main)


if __name__ == "__main__":
    run()
