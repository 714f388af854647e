"""Device mesh, multi-process start-up and sharding of per-example work (DESIGN.md,
"Parallelism").

One mesh, one axis ``"data"``. Per-example work is padded to a multiple of the device count,
placed with ``NamedSharding(mesh, P("data"))`` and run under ``jax.jit``; parameters are
replicated (``P()``). On CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` gives 8
devices, and results agree with 1 device.

Multi-process jobs (TPU pod slices, multi-node GPU jobs) call :func:`initialize` first thing,
before anything touches the backend. The mesh then spans the devices of every process, and
each process holds only its own devices' part of a global array. Every function here keeps the
single-process contract across processes: host inputs are the same NumPy arrays on every
process, each process feeds only the rows of its own devices
(:func:`jax.make_array_from_callback` / :func:`jax.make_array_from_process_local_data`), and
results come back gathered (:func:`jax.experimental.multihost_utils.process_allgather`), so
the numbers are the same on 1 process and on N.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P, Sharding

DATA_AXIS = "data"
log = logging.getLogger(__name__)

_HOW_TO = ("set coordinator_address (HOST:PORT of process 0, reachable from every process), "
           "num_processes and process_id -- the flags --coordinator_address, --num_processes, "
           "--process_id of the memjax scripts, or the environment variables "
           "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; TPU pod slices and "
           "SLURM jobs (srun) are detected without them")


# -- start-up ---------------------------------------------------------------------------------------
def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: list[int] | None = None, *,
               initialization_timeout: int = 300) -> bool:
    """Joins this process to a multi-process JAX job (``jax.distributed.initialize``).

    Call it first thing in ``main``, before anything touches the backend (``jax.devices()``,
    ``jax.process_count()``, any computation). The job is described by the arguments, else
    by ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, else by JAX's
    cluster detection (Cloud TPU pod slices, SLURM ``srun``, Open MPI, Kubernetes). With none
    of these, or a detected job of one process, this is a no-op: a plain single-process run.
    Calling it again after a successful start is a no-op too.

    Errors are never swallowed: bad arguments raise ``ValueError`` naming the argument; an
    unreachable coordinator raises ``RuntimeError`` after ``initialization_timeout`` seconds,
    saying what to set (JAX itself would abort the process).

    Returns:
      Whether this process is now part of a multi-process job.
    """
    if jax.distributed.is_initialized():
        return True
    _check_int("initialization_timeout", initialization_timeout, 1)
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = _env_int("JAX_PROCESS_ID")
    explicit = (coordinator_address, num_processes, process_id)
    if all(v is None for v in explicit):
        count = _detected_process_count()
        if count is None or count <= 1:
            return False                                  # a plain single-process run
    else:
        if coordinator_address is not None:
            _split_address(coordinator_address)           # HOST:PORT, before anything else
        if None in explicit and _detected_process_count() is None:
            missing = [n for n, v in zip(("coordinator_address", "num_processes", "process_id"),
                                         explicit) if v is None]
            raise ValueError(f"{', '.join(missing)}: expected a value for a multi-process run "
                             f"(no TPU / SLURM / MPI job detected to fill it in); {_HOW_TO}")
        _check_int("num_processes", num_processes, 1)
        _check_int("process_id", process_id, 0, None if num_processes is None else
                   num_processes - 1)
        if num_processes == 1:
            return False
        num_processes, process_id = (None if v is None else int(v)
                                     for v in (num_processes, process_id))
        if coordinator_address is not None and process_id is not None:
            _preflight(coordinator_address, process_id, initialization_timeout)
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   local_device_ids=local_device_ids,
                                   initialization_timeout=initialization_timeout)
    except RuntimeError as e:
        raise RuntimeError(f"{e}\nmemjax.parallel.initialize() must run first thing in main, "
                           "before any JAX computation or jax.devices()") from e
    except ValueError as e:
        raise ValueError(f"{e}; {_HOW_TO}") from e
    return jax.process_count() > 1


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if value is None:
        return
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low
            or (high is not None and value > high)):
        want = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{name}: expected {want}, got {value!r}")


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {os.environ[name]!r}") from None


def _detected_process_count() -> int | None:
    """The process count of the cluster JAX's auto-detection would use, or None."""
    try:
        from jax._src import clusters
    except ImportError:  # pragma: no cover - JAX moved its detection; defer to it
        return None
    for env in getattr(clusters.ClusterEnv, "_cluster_types", []):
        if not getattr(env, "opt_in_only_method", False) and env.is_env_present():
            return int(env.get_process_count())
    return None


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator_address: expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def _preflight(address: str, process_id: int, timeout: float) -> None:
    """Checks ``address`` before ``jax.distributed.initialize`` (which aborts the process).

    Process 0 runs the coordinator, so the port must be free there (and the host should be
    process 0's); the others wait (up to ``timeout`` s) until the coordinator accepts
    connections.
    """
    host, port = _split_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise RuntimeError(f"coordinator_address {address!r}: cannot resolve {host!r} ({e}); "
                           f"{_HOW_TO}") from None
    if process_id == 0:
        _check_coordinator_host(address, infos, port)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=2.0).close()
            return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"coordinator_address {address!r}: no coordinator answered within "
                    f"{timeout} s ({e.strerror or e}); is process 0 running with the same "
                    f"address? {_HOW_TO}") from None
            time.sleep(0.25)


def _check_coordinator_host(address: str, infos: list, port: int) -> None:
    """Process 0 runs the coordinator (bound to ``[::]:PORT``): the port must be free here,
    and the host should be this machine (a warning: a proxy or service address may be right)."""
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("::" if socket.has_ipv6 else "", port))
        except OSError as e:
            raise RuntimeError(f"coordinator_address {address!r}: process 0 runs the coordinator "
                               f"and cannot listen on port {port} ({e.strerror}); pick a free "
                               f"port. {_HOW_TO}") from None
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((sockaddr[0], 0))
        except OSError:
            log.warning("coordinator_address %r does not name this machine, but process 0 "
                            "(this one) runs the coordinator; the others will not reach it "
                            "unless the address forwards here", address)


# -- meshes and placement ---------------------------------------------------------------------------
def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all, of every process) with the axis ``"data"``."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over ``"data"``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def put(x: Any, sharding: Sharding) -> Any:
    """Places every leaf of ``x`` (the same host value on every process) with ``sharding``.

    On one process this is ``jax.device_put``. When the sharding spans other processes, each
    process copies in only the slices its own devices hold (``make_array_from_callback``: no
    cross-process traffic); leaves that already are global arrays are resharded by JAX.
    """
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    return jax.tree_util.tree_map(lambda a: _put_leaf(a, sharding), x)


def _put_leaf(a: Any, sharding: Sharding) -> jax.Array:
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        return jax.device_put(a, sharding)
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        data = _put_leaf(jax.random.key_data(a), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(x: Any, mesh: Mesh) -> Any:
    """Every leaf of ``x`` on every device of ``mesh`` (e.g. parameters, a train state)."""
    return put(x, replicated(mesh))


def shard_batch(x: Any, mesh: Mesh) -> Any:
    """Splits the leading axis of every leaf (the whole batch, the same on every process)
    over the mesh; its size must divide evenly by the device count."""
    return put(x, data_sharding(mesh))


def local_rows(size: int, mesh: Mesh) -> slice:
    """The rows of a ``[size, ...]`` batch sharded on ``"data"`` that this process's devices
    hold: a contiguous slice (all of them on one process)."""
    index_map = data_sharding(mesh).addressable_devices_indices_map((size,))
    starts = sorted({ix[0].indices(size)[:2] for ix in index_map.values()})
    lo, hi = starts[0][0], starts[-1][1]
    if sum(b - a for a, b in starts) != hi - lo:
        raise ValueError("mesh: expected this process's devices to be adjacent on the 'data' "
                         "axis (build the mesh with memjax.parallel.data_mesh())")
    return slice(lo, hi)


def global_batch_from_local(local: Any, mesh: Mesh, size: int) -> Any:
    """The global ``[size, ...]`` batch sharded on ``"data"`` from this process's rows.

    ``local`` holds rows ``local_rows(size, mesh)`` of the batch (leading axis
    ``size / process_count`` on a mesh of all devices); no process ever sees the others' rows.
    """
    sharding = data_sharding(mesh)
    return jax.tree_util.tree_map(
        lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v),
                                                         (size,) + np.shape(v)[1:]), local)


def fetch(x: Any) -> Any:
    """Every leaf of ``x`` as a host NumPy array of its full global value, on every process
    (``process_allgather`` for arrays spread over processes)."""
    def one(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
            return np.asarray(a)
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree_util.tree_map(one, x)


# -- per-example maps -------------------------------------------------------------------------------
def pad_to_multiple(x: Any, multiple: int) -> tuple[Any, int]:
    """Pads the leading axis of every leaf (by repeating the last row) to a multiple."""
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    pad = (-n) % multiple
    if pad == 0:
        return x, n
    return jax.tree_util.tree_map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), x), n


@functools.lru_cache(maxsize=32)
def _compiled(fn: Callable, mesh: Mesh, num_args: int) -> Callable:
    """``jit(vmap(fn))`` with the batch sharded and ``num_args`` broadcast (replicated) args.

    Cached on the function object, so a module-level or cached per-example function compiles
    once per shape, however many times :func:`batched_map` is called with it.
    """
    in_axes = (0,) + (None,) * num_args
    shard, rep = data_sharding(mesh), replicated(mesh)
    return jax.jit(jax.vmap(fn, in_axes=in_axes),
                   in_shardings=(shard,) + (rep,) * num_args, out_shardings=shard)


def batched_map(fn: Callable, xs: Any, *, batch_size: int, mesh: Mesh | None = None,
                args: tuple = (), progress: bool = False, desc: str | None = None) -> Any:
    """Applies a per-example ``fn(x, *args)`` to every example of ``xs`` (pytree, leading axis n).

    ``fn`` is vmapped over ``xs`` (``args`` are broadcast to every example and replicated on
    every device) and jitted once per function object (pass the same ``fn`` -- e.g. a
    module-level or cached function -- to reuse the compilation across calls); chunks of
    ``batch_size`` examples (rounded up to a multiple of the device count) are sharded over
    ``mesh`` (default: all devices, of every process). The last chunk is padded and the padding
    dropped, so shapes never change and nothing recompiles. Results are gathered to host NumPy
    arrays, the same on every process. In a multi-process job every process calls it with the
    same ``xs`` and ``args``; each copies in only its own devices' rows.
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    mesh = data_mesh() if mesh is None else mesh
    ndev = mesh.devices.size
    chunk = -(-batch_size // ndev) * ndev
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    chunk = min(chunk, -(-n // ndev) * ndev)
    run = _compiled(fn, mesh, len(args))
    args = replicate(tuple(args), mesh)
    starts = range(0, n, chunk)
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, total=len(starts), unit="batch")
    outs = []
    for s in starts:
        part = jax.tree_util.tree_map(lambda a: np.asarray(a[s:s + chunk]), xs)
        part, m = pad_to_multiple(part, chunk)
        out = fetch(run(shard_batch(part, mesh), *args))
        outs.append(jax.tree_util.tree_map(lambda a: a[:m], out))
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *outs)
