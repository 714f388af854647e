"""Wall-clock timing shared by the benchmarks: median of repeats after a warm-up call."""

from __future__ import annotations

import statistics
import time

import jax


def block(x):
    """Waits for every array in ``x`` (other leaves pass through)."""
    return jax.tree_util.tree_map(
        lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def median_seconds(fn, *args, repeats: int = 3, warm_up: bool = True) -> float:
    """Median wall time of ``fn(*args)`` over ``repeats`` calls, after one untimed call
    (compilation and warm-up) unless ``warm_up`` is False."""
    if warm_up:
        block(fn(*args))
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        block(fn(*args))
        out.append(time.perf_counter() - t)
    return statistics.median(out)
