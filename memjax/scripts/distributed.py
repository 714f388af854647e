r"""Multi-process flags shared by the memjax scripts (docs/multihost.md).

A script imports this module (which defines the flags) and calls :func:`initialize_from_flags`
first thing in ``main``::

    from memjax.scripts import distributed

    def main(argv):
        distributed.initialize_from_flags()
        ...

On a TPU pod slice, or under SLURM's ``srun``, no flag is needed (JAX detects the job); on
other clusters pass, on every process::

    --coordinator_address=HOST0:1234 --num_processes=2 --process_id=0   # on host 0
    --coordinator_address=HOST0:1234 --num_processes=2 --process_id=1   # on host 1

Without flags, environment variables or a detected cluster the script runs as one process.
"""

from __future__ import annotations

from absl import flags, logging

__all__ = ["initialize_from_flags"]

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "HOST:PORT of process 0 for a multi-process job (jax.distributed); default: "
    "$JAX_COORDINATOR_ADDRESS, or detected on TPU pods / SLURM.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in the job (default: $JAX_NUM_PROCESSES or detected).",
    lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in [0, num_processes) (default: $JAX_PROCESS_ID "
    "or detected).", lower_bound=0)
_LOCAL_DEVICE_IDS = flags.DEFINE_list(
    "local_device_ids", None, "Devices this process uses, e.g. '0,1' (GPU jobs with several "
    "processes per node; default: all visible, or $JAX_LOCAL_DEVICE_IDS).")
_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout", 300, "Seconds to wait for every process to join the job.",
    lower_bound=1)


def initialize_from_flags() -> bool:
    """:func:`memjax.parallel.initialize` with the flags above; returns whether the job has
    several processes. Call it before anything touches the JAX backend."""
    from memjax import parallel

    ids = _LOCAL_DEVICE_IDS.value
    try:
        ids = None if ids is None else [int(i) for i in ids]
    except ValueError:
        raise ValueError(f"--local_device_ids: expected comma-separated integers, got "
                         f"{','.join(ids)!r}") from None
    multi = parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                local_device_ids=ids,
                                initialization_timeout=_TIMEOUT.value)
    if multi:
        import jax

        logging.info("process %d of %d: %d local of %d devices", jax.process_index(),
                     jax.process_count(), jax.local_device_count(), jax.device_count())
    return multi
