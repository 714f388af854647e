"""Input checks that run before any tracing or compilation.

Every public entry point validates what it is given with these helpers, so that a
user sees ``ValueError: <argument>: expected ..., got ...`` instead of an XLA
shape error. The checks only look at shapes, dtypes and (for concrete arrays)
values; under ``jax.jit`` tracers pass the value checks untouched.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values we can inspect (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def as_array(name: str, x: Any, *, min_ndim: int = 0, ndim: int | None = None,
             finite: bool = True) -> jax.Array:
    """Converts ``x`` to a floating JAX array, checking rank and finiteness."""
    if x is None:
        raise ValueError(f"{name}: expected an array, got None")
    try:
        arr = jnp.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected an array of numbers, got {type(x).__name__}") from e
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == jnp.bool_:
            arr = arr.astype(jnp.result_type(float))
        else:
            raise ValueError(f"{name}: expected a real floating array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    if arr.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions, got shape {arr.shape}")
    if finite:
        check_finite(name, arr)
    return arr


def check_finite(name: str, x: Any) -> None:
    """Raises when a concrete array holds NaN or infinity."""
    if is_concrete(x) and not bool(np.all(np.isfinite(np.asarray(x)))):
        raise ValueError(f"{name}: expected finite values, found NaN or infinity")


def check_time(name: str, t: Any, lo: float, hi: float) -> None:
    """Raises when concrete times lie outside ``[lo, hi]`` (a tiny relative slack allowed)."""
    if t is None or not is_concrete(t):
        return
    arr = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite times, got {arr}")
    tol = 1e-6 * max(1.0, abs(hi))
    if np.any(arr < lo - tol) or np.any(arr > hi + tol):
        raise ValueError(f"{name}: expected times in [t_min, t_max] = [{lo:g}, {hi:g}], got "
                         f"{arr.min():g}..{arr.max():g}" if arr.ndim else
                         f"{name}: expected a time in [t_min, t_max] = [{lo:g}, {hi:g}], got {float(arr):g}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raises when ``value`` is not one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    if not np.isscalar(value) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")


def check_same_trailing_shape(name: str, x: Any, expected: Sequence[int], what: str) -> None:
    """Raises unless ``x.shape`` ends with ``expected`` (the shape of ``what``)."""
    shape = tuple(np.shape(x))
    expected = tuple(expected)
    if shape[len(shape) - len(expected):] != expected or len(shape) < len(expected):
        raise ValueError(f"{name}: expected shape ending in {expected} (the shape of {what}), "
                         f"got {shape}")


SCHEDULE_EXPECTED = ("a memjax VP schedule (memjax.VPSDE, memjax.schedules.CosineVP / "
                     "DiscreteVP)")


def check_schedule(name: str, sde: Any) -> None:
    """Raises unless ``sde`` is one of the VP family (:class:`memjax.sde.VPSchedule`)."""
    from memjax.sde import VPSchedule  # memjax.sde imports this module

    if not isinstance(sde, VPSchedule):
        raise ValueError(f"{name}: expected {SCHEDULE_EXPECTED}, got {type(sde).__name__}")
