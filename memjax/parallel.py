"""Device mesh and sharding of per-example work (DESIGN.md, "Parallelism").

One mesh, one axis ``"data"``. Per-example work is padded to a multiple of the device count,
placed with ``NamedSharding(mesh, P("data"))`` and run under ``jax.jit``; parameters are
replicated (``P()``). On CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` gives 8
devices, and results agree with 1 device. Multi-host jobs call :func:`initialize` first.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize() -> None:
    """``jax.distributed.initialize()`` when running multi-process (no-op on one process)."""
    import os

    if any(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS",
                                     "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS")) and \
            jax.process_count() == 1:
        try:
            jax.distributed.initialize()
        except (RuntimeError, ValueError):  # already initialised or single host
            pass


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all) with the axis ``"data"``."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over ``"data"``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def pad_to_multiple(x: Any, multiple: int) -> tuple[Any, int]:
    """Pads the leading axis of every leaf (by repeating the last row) to a multiple."""
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    pad = (-n) % multiple
    if pad == 0:
        return x, n
    return jax.tree_util.tree_map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), x), n


def shard_batch(x: Any, mesh: Mesh) -> Any:
    """Places the leading axis of every leaf over the mesh (its size must divide evenly)."""
    return jax.device_put(x, data_sharding(mesh))


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
    ``mesh`` (default: all devices). The last chunk is padded and the padding dropped, so
    shapes never change and nothing recompiles. Results are gathered to host NumPy arrays.
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    mesh = data_mesh() if mesh is None else mesh
    ndev = mesh.devices.size
    chunk = -(-batch_size // ndev) * ndev
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    chunk = min(chunk, -(-n // ndev) * ndev)
    sharding = data_sharding(mesh)
    run = _compiled(fn, mesh, len(args))
    args = tuple(jax.device_put(a, replicated(mesh)) for a in args)
    starts = range(0, n, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, total=len(starts), unit="batch")
    outs = []
    for s in starts:
        part = jax.tree_util.tree_map(lambda a: np.asarray(a[s:s + chunk]), xs)
        part, m = pad_to_multiple(part, chunk)
        out = run(jax.device_put(part, sharding), *args)
        outs.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:m], out))
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *outs)
