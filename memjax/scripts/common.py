"""What every memjax script does first: configs by name, a quiet console, multi-host start-up.

* ``--config=digits_audit`` (or ``digits_audit:tiny``) names a config shipped with memjax
  (``memjax.configs``, the repository's ``configs/`` folder); a path works as before.
* Library logging (absl, orbax, JAX) is lowered to WARNING unless ``--verbosity`` is given
  (absl's flag: ``--verbosity=0`` restores INFO, ``1`` DEBUG).
* :func:`memjax.xla_cpu.set_cpu_defaults` adds memjax's XLA:CPU flags (faster compilation and
  convolutions of its small U-Nets on CPU; ``--nocpu_xla_defaults`` to skip) to ``XLA_FLAGS``.
* :func:`memjax.parallel.initialize` runs before anything touches the JAX backend, from the
  flags of :mod:`memjax.scripts.distributed` (``--coordinator_address``, ``--num_processes``,
  ``--process_id``, ...), the ``JAX_COORDINATOR_ADDRESS`` environment or the cluster (TPU pod,
  SLURM) that JAX detects.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from absl import flags as _flags

from memjax import xla_cpu
from memjax.scripts import distributed  # defines the multi-host flags of every script

__all__ = ["config_dirs", "resolve_config", "resolve_argv", "load_config", "job_flags", "setup",
           "run"]


_CPU_XLA_DEFAULTS = _flags.DEFINE_boolean(
    "cpu_xla_defaults", True, "Add memjax's XLA:CPU flags (memjax.xla_cpu: no YNNPACK fusions; "
    "LLVM -O1 when JAX runs on CPU alone) to XLA_FLAGS, except those already set there.")


def config_dirs() -> list[str]:
    """Where shipped configs live: the installed ``memjax.configs`` package, then the
    repository's ``configs/`` next to the ``memjax`` package (a source checkout)."""
    dirs = []
    try:
        import memjax.configs as shipped

        dirs.append(os.path.dirname(os.path.abspath(shipped.__file__)))
    except ImportError:
        pass
    import memjax

    repo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(memjax.__file__))),
                        "configs")
    if os.path.isdir(repo) and repo not in dirs:
        dirs.append(repo)
    return dirs


def resolve_config(value: str) -> str:
    """``NAME[:variant]`` of a shipped config -> ``/path/NAME.py[:variant]``; paths unchanged."""
    path, sep, variant = value.partition(":")
    if os.path.exists(path) or os.sep in path or path.endswith(".py"):
        return value
    for d in config_dirs():
        candidate = os.path.join(d, path + ".py")
        if os.path.isfile(candidate):
            return candidate + sep + variant
    names = sorted({f[:-3] for d in config_dirs() for f in os.listdir(d)
                    if f.endswith(".py") and not f.startswith("_")})
    raise SystemExit(f"--config: no file {path!r} and no shipped config of that name; shipped "
                     f"configs: {', '.join(names)}")


def load_config(name: str, *args, next_to: str | None = None):
    """``get_config(*args)`` of the config ``name`` (``digits_audit``): the file ``name.py`` in
    the folder of ``next_to`` (a config's ``__file__``) when it exists, else the shipped config
    of that name (:func:`resolve_config`). How one config builds on another."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(next_to)), name + ".py") if next_to else ""
    if not os.path.isfile(path):
        path = resolve_config(name).partition(":")[0]
    spec = importlib.util.spec_from_file_location(f"memjax_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


def resolve_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--config=NAME`` (or ``--config NAME``) resolved by :func:`resolve_config`."""
    out, it = [], iter(argv)
    for a in it:
        if a.startswith("--config="):
            a = "--config=" + resolve_config(a.split("=", 1)[1])
        elif a == "--config":
            out.append(a)
            a = resolve_config(next(it, ""))
        out.append(a)
    return out


def job_flags(config_help: str, workdir_help: str):
    """The two flags of every job script, both required: ``--config`` (an
    ``ml_collections`` config file, locked) and ``--workdir``. Returns their holders."""
    from absl import flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, workdir_help)
    flags.mark_flags_as_required(["config", "workdir"])
    return config, workdir


def setup(argv: Sequence[str] | None = None) -> None:
    """Rejects positional arguments (``argv`` past the program name), then memjax's XLA:CPU
    flags (unless ``--nocpu_xla_defaults``), quiet logging (unless ``--verbosity`` was given)
    and the multi-host start-up."""
    from absl import app, flags

    from memjax import console

    if argv is not None and len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    fl = flags.FLAGS
    if _CPU_XLA_DEFAULTS.value:
        xla_cpu.set_cpu_defaults()
    console.quiet(fl.verbosity + 1 if fl["verbosity"].present else 0)
    distributed.initialize_from_flags()


def run(main: Callable, argv: Sequence[str] | None = None) -> None:
    """``absl.app.run(main)`` with configs resolved by name."""
    from absl import app

    app.run(main, argv=resolve_argv(sys.argv if argv is None else argv))
