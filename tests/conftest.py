"""Shared test fixtures: float64 mode, and running code on 8 simulated CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# A persistent compilation cache shared by the xdist workers, the subprocess tests and CI's
# second step: model initialisers and solvers then compile once per run, not once per process.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The fast suite's CPU time is mostly XLA compiling hundreds of tiny programs (a cold cache on CI),
# not running them: LLVM at -O0 compiles them ~10x faster (a small ResNet's initialiser: 17 s ->
# 1.7 s of CPU), and XLA:CPU's older elemental emitters (no fusion emitters) another ~2x (a tiny
# U-Net's forward and backward: 6.1 s -> 2.8 s; its eager initialisation: 7.7 s -> 3.4 s); both
# run the digits-sized workloads about as fast. Inherited by every subprocess.
for _flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Runs the test with float64 enabled (``jax.enable_x64``), restoring float32 after."""
    with jax.enable_x64(True):
        yield


def run_on_devices(code: str, num_devices: int = 8, timeout: int = 600) -> dict:
    """Runs ``code`` in a fresh Python with ``num_devices`` simulated CPU devices.

    The snippet must print one JSON object as its last line of stdout; it is returned.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={num_devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"subprocess failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def on_devices():
    """``on_devices(code, num_devices=8) -> dict``: see :func:`run_on_devices`."""
    return run_on_devices
