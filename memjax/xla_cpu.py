r"""XLA:CPU compiler settings for memjax's small convolutional networks, set before JAX starts.

On CPU, XLA compiles memjax's U-Nets slowly and, at their sizes (8x8 to 32x32 images, 16 to 128
channels), runs their convolutions faster without its YNNPACK fusions. Two ``XLA_FLAGS`` fix
both; measured on the 2-core dev VM (jax 0.10.2, benchmarks/results/train.md, 2026-11-30):

* ``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK fusions; XLA's own Eigen
  convolutions and dots): the digits U-Net's training step 27-31 steps/s instead of 20-22, the
  same losses to float32 rounding. It only concerns the CPU backend.
* ``--xla_backend_optimization_level=1`` (LLVM -O1 instead of -O3 for XLA's generated kernels):
  the training step compiles in 11 s instead of 13-16 s at the same speed, and a fresh U-Net
  initialises in 6 s instead of 16 s (each of its initialisers is a small compilation),
  identical parameters. It also concerns the GPU backend's code generation, so it is added only
  where JAX can run on the CPU alone (``JAX_PLATFORMS=cpu``, or no accelerator plugin or
  ``libtpu`` installed).

Together they took the README's first command from 183-190 s to 130 s. The memjax scripts call
:func:`set_cpu_defaults` first thing (``--nocpu_xla_defaults`` turns it off); in a notebook,
call it before the first JAX computation. A flag the user already put in ``XLA_FLAGS`` is never
overridden, and nothing changes once a JAX backend is running (flags are read when it starts).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from typing import MutableMapping, Optional

__all__ = ["CPU_FLAGS", "CPU_ONLY_FLAGS", "set_cpu_defaults", "cpu_only"]

CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": ""}
"""Flags that concern XLA's CPU backend only: always added (unless the user set them)."""
CPU_ONLY_FLAGS = {"xla_backend_optimization_level": "1"}
"""Flags that also change accelerator code generation: added only when JAX runs on CPU alone."""

_ACCELERATOR_MODULES = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin")


def cpu_only(environ: Optional[MutableMapping[str, str]] = None) -> bool:
    """Whether JAX can only run on the CPU here: ``JAX_PLATFORMS`` is ``cpu``, or no PJRT
    accelerator plugin (entry point group ``jax_plugins``) and no ``libtpu`` is installed."""
    env = os.environ if environ is None else environ
    platforms = env.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms == "cpu"
    if any(importlib.util.find_spec(m) is not None for m in _ACCELERATOR_MODULES):
        return False
    return not list(importlib.metadata.entry_points(group="jax_plugins"))


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover -- jax is a core dependency
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started and started())


def set_cpu_defaults(environ: Optional[MutableMapping[str, str]] = None) -> list[str]:
    """Adds to ``XLA_FLAGS`` each flag of :data:`CPU_FLAGS` (and, when :func:`cpu_only`, of
    :data:`CPU_ONLY_FLAGS`) that it does not already name. Returns the flags added: none when a
    JAX backend has already started (too late: XLA reads its flags when the backend starts)."""
    env = os.environ if environ is None else environ
    if environ is None and _backend_started():
        return []
    existing = env.get("XLA_FLAGS", "")
    named = {tok.lstrip("-").split("=", 1)[0] for tok in existing.split()}
    wanted = dict(CPU_FLAGS)
    if cpu_only(env):
        wanted.update(CPU_ONLY_FLAGS)
    added = [f"--{k}={v}" for k, v in wanted.items() if k not in named]
    if added:
        env["XLA_FLAGS"] = " ".join([existing.strip(), *added]).strip()
    return added
