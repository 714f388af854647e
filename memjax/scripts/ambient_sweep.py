r"""``python -m memjax.scripts.ambient_sweep``: paper 002's standard-vs-ambient comparison over
seeds and its sigma_tn sweep (:mod:`memjax.jobs.ambient_sweep`).

    python -m memjax.scripts.ambient_sweep --config=ambient_sweep --workdir=/tmp/sweep
    python -m memjax.scripts.ambient_sweep --config=ambient_sweep:tiny --workdir=/tmp/tiny
    python -m memjax.scripts.ambient_sweep --config=ambient_sweep --workdir=/tmp/sweep --shard=1/2

Trains every run (an interrupted sweep resumes from each run's checkpoints and reuses the
evaluations it finished), then prints the summary table; ``workdir`` holds ``runs.json``,
``summary.json``, ``summary.md`` and ``pareto.png``.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from memjax.scripts import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the sweep.")
_SHARD = flags.DEFINE_string("shard", "0/1", "i/k: train and evaluate only the runs i, i + k, ... "
                             "(no summary); a final 0/1 call reuses them and reports.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from memjax.jobs import ambient_sweep

    common.setup()
    i, _, k = _SHARD.value.partition("/")
    if not (i.isdigit() and k.isdigit()):
        raise app.UsageError(f"--shard: expected i/k (e.g. 1/2), got {_SHARD.value!r}")
    out = ambient_sweep.run(_CONFIG.value, _WORKDIR.value, shard=int(i), num_shards=int(k))
    if out["summary"] is not None:
        print(ambient_sweep.summary_table(out["summary"]), end="")


def run():
    common.run(main)


if __name__ == "__main__":
    run()
