"""memjax.xla_cpu: which XLA flags the scripts add, and that they never override the user's."""

import os
import subprocess
import sys

from memjax import xla_cpu

YNN = "--xla_cpu_experimental_ynn_fusion_type="
O1 = "--xla_backend_optimization_level=1"


def test_cpu_only_run_gets_both_flags_after_the_users_own():
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_dump_to=/tmp/d"}
    assert xla_cpu.set_cpu_defaults(env) == [YNN, O1]
    assert env["XLA_FLAGS"] == f"--xla_dump_to=/tmp/d {YNN} {O1}"
    assert xla_cpu.set_cpu_defaults(env) == []          # idempotent


def test_a_flag_the_user_set_is_kept():
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    assert xla_cpu.set_cpu_defaults(env) == [YNN]
    assert env["XLA_FLAGS"] == f"--xla_backend_optimization_level=0 {YNN}"


def test_accelerator_platform_gets_only_the_cpu_backend_flag():
    env = {"JAX_PLATFORMS": "cuda,cpu"}
    assert not xla_cpu.cpu_only(env)
    assert xla_cpu.set_cpu_defaults(env) == [YNN]
    assert env["XLA_FLAGS"] == YNN


def test_too_late_once_the_backend_runs():
    # in a fresh interpreter: before the backend starts the flags go in; after, nothing changes
    code = ("import os, jax; os.environ.pop('XLA_FLAGS', None); os.environ['JAX_PLATFORMS'] = 'cpu';"
            "from memjax import xla_cpu; a = xla_cpu.set_cpu_defaults(); jax.numpy.zeros(1);"
            "os.environ.pop('XLA_FLAGS'); b = xla_cpu.set_cpu_defaults(); print(len(a), len(b))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ), check=True).stdout.split()
    assert out == ["2", "0"]
