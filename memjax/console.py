r"""A console a person can read: memjax's own lines, quiet libraries, progress that suits the sink.

* :func:`quiet` lowers the INFO chatter of absl, orbax, JAX (its backend probes, compilation
  notes) and TensorFlow to WARNING; ``quiet(verbosity=1)`` (the scripts' ``--verbosity=1``)
  restores INFO.
* :func:`progress` is a tqdm bar when stderr is a terminal, and one plain line per interval
  (``desc: step i/n, <metrics>, <r> steps/s, ETA <t>``) when it is a file or a pipe, so a log
  holds no carriage-return frames.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, Iterator

__all__ = ["quiet", "progress", "Progress", "is_terminal", "bars"]

NOISY_LOGGERS = ("absl", "jax", "jax._src", "jax._src.xla_bridge", "orbax", "orbax.checkpoint",
                 "tensorflow", "tensorflow_datasets", "etils", "fsspec", "matplotlib", "h5py")


def quiet(verbosity: int = 0) -> None:
    """Sets the libraries' log levels: WARNING for ``verbosity <= 0``, INFO for 1, DEBUG above.

    Call it before the JAX backend starts (the scripts do, first thing in ``main``) so that the
    backend probes ("Unable to initialize backend 'tpu'") are not printed on CPU machines.
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if verbosity > 0 else "2")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity({logging.WARNING: "warning", logging.INFO: "info",
                                    logging.DEBUG: "debug"}[level])
        absl_logging.set_stderrthreshold("warning" if verbosity <= 0 else "info")
    except ImportError:  # pragma: no cover -- absl is a core dependency
        pass


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def bars(enabled) -> bool:
    """Whether to draw tqdm bars of other libraries' loops: only when asked and on a terminal
    (a log file gets memjax's interval and stage lines instead of carriage-return frames)."""
    return bool(enabled) and is_terminal()


def _hms(seconds: float) -> str:
    s = int(max(seconds, 0) + 0.5)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:d}:{s % 60:02d}"


class Progress:
    """Progress of ``total`` steps starting at ``initial``: a tqdm bar on a terminal, else one
    line every ``every`` steps (and at the end) on ``stream``. ``enabled=False`` prints nothing."""

    def __init__(self, total: int, *, desc: str = "", initial: int = 0, every: int | None = None,
                 enabled: bool = True, stream=None, unit: str = "step"):
        self.total, self.n, self.desc, self.unit = int(total), int(initial), desc, unit
        self.stream = sys.stderr if stream is None else stream
        self.every = max(1, int(every) if every else max(1, (self.total - self.n) // 10))
        self.enabled = enabled
        self.postfix: dict = {}
        self._t0, self._n0, self._last = time.perf_counter(), self.n, self.n
        self.bar = None
        if enabled and is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit,
                            file=self.stream, dynamic_ncols=True)

    def set_postfix(self, **metrics) -> None:
        self.postfix = metrics
        if self.bar is not None:
            self.bar.set_postfix(**{k: f"{v:.4g}" if isinstance(v, float) else v
                                    for k, v in metrics.items()})

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.enabled and (self.n - self._last >= self.every or self.n >= self.total):
            self._line()

    def _line(self) -> None:
        dt = time.perf_counter() - self._t0
        rate = (self.n - self._n0) / dt if dt > 0 else float("nan")
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        parts = [f"{self.desc}: {self.unit} {self.n}/{self.total}"]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                  for k, v in self.postfix.items()]
        parts.append(f"{rate:.3g} {self.unit}s/s")
        if self.n < self.total and eta == eta:
            parts.append(f"ETA {_hms(eta)}")
        print(", ".join(parts), file=self.stream, flush=True)
        self._last = self.n

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress(iterable: Iterable, *, total: int | None = None, desc: str = "",
             enabled: bool = True, **kwargs) -> Iterator:
    """Iterates ``iterable`` while reporting :class:`Progress` (a bar or interval lines)."""
    total = len(iterable) if total is None else total  # type: ignore[arg-type]
    bar = Progress(total, desc=desc, enabled=enabled, **kwargs)
    try:
        for x in iterable:
            yield x
            bar.update(1)
    finally:
        bar.close()
