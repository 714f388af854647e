r"""Workdirs: paths, atomic writes, JSON of NumPy / JAX values, and stages keyed by their inputs.

Every path goes through :mod:`etils.epath`, so a workdir may be a local folder or a URL that
its backend understands (``gs://``, ``s3://`` with fsspec / gfile installed). Writes are
atomic: a local file is written to a temporary name and renamed; an object store commits an
object when it is closed, so a reader never sees half a file on either.

One writer: on a multi-process (multi-host) job only process 0 (``jax.process_index() == 0``)
writes; every process reads, so every process can resume from the same workdir.

A **stage** is a named result (a dict of arrays) stored as ``<workdir>/<stage>.npz`` together
with the key it was computed under. :func:`cached` reuses it only when the key -- the config
fields and inputs the stage depends on -- matches; otherwise it recomputes, overwrites, and
says so in one line::

    arrays = cached(workdir / "audit/samples", {"model": model_id, "sampling": cfg.to_dict()},
                    lambda: {"samples": draw()})
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
import zipfile
from typing import Any, Callable, Mapping

import numpy as np
from etils import epath

__all__ = ["Path", "as_path", "is_local", "is_writer", "makedirs", "write_bytes", "write_text", "save_json",
           "load_json", "save_npz", "load_npz", "to_jsonable", "fingerprint", "cached",
           "stage_key_matches", "mark_stage", "lookup", "json_dumps", "json_loads"]

Path = epath.Path
KEY_FIELD = "__key__"


def as_path(path: str | os.PathLike) -> epath.Path:
    """``path`` as an :class:`etils.epath.Path` (local paths stay local; ``gs://...`` is a URL)."""
    return path if isinstance(path, epath.Path) else epath.Path(path)


def is_local(path) -> bool:
    return "://" not in os.fspath(path)


def is_writer() -> bool:
    """True on the one process that writes reports, figures, caches and logs (process 0)."""
    import jax

    return jax.process_index() == 0


def makedirs(path) -> epath.Path:
    """Creates ``path`` (and parents) on the writer; returns it as a Path."""
    p = as_path(path)
    if is_writer():
        p.mkdir(parents=True, exist_ok=True)
    return p


def write_bytes(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (process 0 only; parents are created)."""
    if not is_writer():
        return
    p = as_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not is_local(p):
        p.write_bytes(data)  # an object store commits the object on close
        return
    tmp = p.parent / f".{p.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_bytes(data)
    os.replace(os.fspath(tmp), os.fspath(p))


def write_text(path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (process 0 only)."""
    write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """NumPy / JAX scalars and arrays, tuples and ConfigDicts as plain JSON values; non-finite
    floats become ``None`` (JSON has no NaN)."""
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        obj = obj.to_dict()
    if hasattr(obj, "_asdict"):  # NamedTuples
        obj = obj._asdict()
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if hasattr(obj, "__array__") and not isinstance(obj, str):
        a = np.asarray(obj)
        return to_jsonable(a.item() if a.ndim == 0 else a.tolist())
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def save_json(path, obj: Any, *, indent: int = 1) -> None:
    """``to_jsonable(obj)`` as JSON at ``path`` (atomic, process 0 only)."""
    write_text(path, json.dumps(to_jsonable(obj), indent=indent, sort_keys=False) + "\n")


def load_json(path) -> Any:
    return json.loads(as_path(path).read_text())


def save_npz(path, **arrays) -> None:
    """``np.savez`` of ``arrays`` at ``path`` (atomic, process 0 only)."""
    if not is_writer():
        return
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    write_bytes(path, buf.getvalue())


def load_npz(path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` at ``path`` (local or URL), read eagerly."""
    with as_path(path).open("rb") as f:
        data = f.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts and arrays (what a cached stage depends on)."""
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, np.ndarray) or (hasattr(p, "__array__") and not isinstance(p, (str, dict))):
            arr = np.ascontiguousarray(np.asarray(p))
            h.update(str((arr.dtype.str, arr.shape)).encode())
            h.update(arr.tobytes())
        else:
            h.update(json.dumps(to_jsonable(p), sort_keys=True).encode())
    return h.hexdigest()[:16]


def json_dumps(obj: Any) -> str:
    """``to_jsonable(obj)`` as compact JSON text (e.g. a table row stored with a stage)."""
    return json.dumps(to_jsonable(obj), sort_keys=True)


def json_loads(text: str) -> Any:
    return json.loads(text)


def _stage_path(stage) -> epath.Path:
    p = as_path(stage)
    return p if p.name.endswith(".npz") else p.with_name(p.name + ".npz")


def lookup(stage, key: Any) -> dict[str, np.ndarray] | None:
    """The arrays of ``stage`` when they were stored under ``key``, else None (no computing).

    Like :func:`cached`, every process of a multi-process job gets process 0's answer (callers
    decide from it which stages to compute)."""
    old = _read_stage(_stage_path(stage))
    if _agreed(old is not None and str(old.get(KEY_FIELD, "")) == fingerprint(key)):
        return {n: v for n, v in old.items() if n != KEY_FIELD}
    return None


def _read_stage(path: epath.Path) -> dict | None:
    try:
        if not path.exists():
            return None
        return load_npz(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # unreadable (a truncated write by another tool): recompute


def cached(stage, key: Any, compute: Callable[[], Mapping[str, Any]], *,
           log: Callable[[str], None] | None = print) -> tuple[dict[str, np.ndarray], bool]:
    """The arrays of ``stage`` (a path without suffix: ``<stage>.npz`` holds them), recomputed
    unless they were saved under the same ``key``.

    ``key`` is anything :func:`fingerprint` takes (config fields, input arrays, a model id, a
    code version); ``compute() -> {name: array}``. When a stored result has another key the
    stage is recomputed and ``log`` gets one line saying so. Returns ``(arrays, reused)``.
    """
    p = _stage_path(stage)
    k = fingerprint(key)
    old = _read_stage(p)
    if _agreed(old is not None and str(old.get(KEY_FIELD, "")) == k):
        return {n: v for n, v in old.items() if n != KEY_FIELD}, True
    if old is not None and log is not None:
        log(f"[{p.name[:-4]}] its inputs changed since it was stored: recomputing")
    arrays = {n: np.asarray(v) for n, v in compute().items()}
    save_npz(p, **{KEY_FIELD: np.asarray(k)}, **arrays)
    return arrays, False


def _agreed(reuse: bool) -> bool:
    """Process 0's decision, on every process of a multi-process job.

    A stage's computation runs collectives, so every process must take the same branch; a
    process that read the stage file at another moment than process 0 (a write in flight, a
    file system's lag) must not skip it. Raises when this process cannot read what process 0
    reuses.
    """
    import jax

    if jax.process_count() == 1:
        return reuse
    from jax.experimental import multihost_utils

    decided = bool(multihost_utils.broadcast_one_to_all(np.asarray(reuse)))
    if decided and not reuse:
        raise RuntimeError("a stage process 0 reuses is missing or different on process "
                           f"{jax.process_index()}: every process must see the same workdir")
    return decided


def stage_key_matches(directory, key: Any) -> bool:
    """Whether the folder stage ``directory`` (e.g. an orbax checkpoint) was completed under
    ``key`` (:func:`mark_stage` writes ``<directory>/stage_key.json`` when it is done)."""
    p = as_path(directory) / "stage_key.json"
    try:
        return p.exists() and load_json(p).get("key") == fingerprint(key)
    except (OSError, ValueError):
        return False


def mark_stage(directory, key: Any) -> None:
    """Records that the folder stage ``directory`` is complete for ``key``."""
    save_json(as_path(directory) / "stage_key.json", {"key": fingerprint(key)})
