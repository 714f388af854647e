"""Orbax checkpoints with integrity checks: a partial or corrupt checkpoint is reported, never
skipped or overwritten.

:class:`Checkpointer` wraps ``orbax.checkpoint.CheckpointManager`` (``StandardSave`` of a
pytree of arrays; periodic, keep-N, atomic commit by rename). Typed PRNG keys are stored as
their raw key data and re-wrapped on restore.

Where a checkpoint lives:

- a local folder, or a ``gs://`` / ``s3://`` URL (TensorStore's own drivers): orbax writes
  there directly, every process its own shards (multi-process saves);
- any other fsspec URL (``memory://``, ``hf://``, a mounted bucket's own scheme, ...):
  orbax cannot write there, so each step is written to a local staging folder and then
  copied to ``<directory>/<step>`` with the commit marker last (a copy cut short is a
  partial checkpoint, reported as such); a restore copies the step back first. One process
  only: a multi-process job needs a folder every process shares, or ``gs://`` / ``s3://``.

A restore builds every array for the devices of *this* job (the template's shardings, else
this process's first device), never from the shardings recorded at save time, so a
checkpoint written by 2 processes restores on 1 and the other way round.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Optional

import jax

__all__ = ["Checkpointer", "CheckpointError", "NATIVE_URL_PREFIXES"]

NATIVE_URL_PREFIXES = ("gs://", "s3://")
"""URL schemes orbax writes through TensorStore's own drivers (orbax's remote prefixes)."""

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint directory is partial, corrupt or belongs to another run."""


def _is_key(a) -> bool:
    return hasattr(a, "dtype") and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree):
    return jax.tree.map(lambda a: jax.random.key_data(a) if _is_key(a) else a, tree)


def _data_to_keys(tree, template):
    return jax.tree.map(lambda a, t: jax.random.wrap_key_data(a, impl=jax.random.key_impl(t))
                        if _is_key(t) else a, tree, template)


def _abstract(leaf) -> jax.ShapeDtypeStruct:
    """``leaf``'s shape, dtype and sharding; this process's first device when it has none (an
    abstract template), never the sharding recorded at save time (another job's devices)."""
    import orbax.checkpoint as ocp

    a = ocp.utils.to_shape_dtype_struct(leaf)
    if getattr(a, "sharding", None) is None:
        a = jax.ShapeDtypeStruct(a.shape, a.dtype,
                                 sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    return a


def _copy_tree(src, dst) -> None:
    """Copies the folder ``src`` to ``dst`` (epath: local or URL), commit markers last."""
    def walk(folder, rel):
        for child in folder.iterdir():
            if child.is_dir():
                yield from walk(child, f"{rel}{child.name}/")
            else:
                yield child, f"{rel}{child.name}"

    files = sorted(walk(src, ""), key=lambda f: f[0].name in Checkpointer.COMMIT_MARKERS)
    for f, rel in files:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.read_bytes())


class Checkpointer:
    """Orbax ``CheckpointManager`` over ``directory`` with integrity checks.

    Every numbered step directory must hold orbax's commit marker; one that does not (a
    write that never finished, a copied or truncated directory), or one that fails to
    restore, raises :class:`CheckpointError` naming it. Orbax's own uncommitted temporary
    directories (``*.orbax-checkpoint-tmp-*``) are never treated as checkpoints.
    """

    COMMIT_MARKERS = ("_CHECKPOINT_METADATA", "commit_success.txt")

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
        import orbax.checkpoint as ocp

        from memjax import workdir as wd

        self.directory = os.path.abspath(directory) if wd.is_local(directory) else str(directory)
        self._path = wd.as_path(self.directory)
        self._keep = keep
        self._staging = None
        if not wd.is_local(self.directory) and not self.directory.startswith(NATIVE_URL_PREFIXES):
            if jax.process_count() > 1:
                raise ValueError(f"directory: expected a folder every process shares or a "
                                 f"{' / '.join(NATIVE_URL_PREFIXES)} URL on a multi-process "
                                 f"job, got {self.directory!r} (checkpoints are staged "
                                 f"through one process's local disk for this scheme)")
            self._staging = wd.as_path(tempfile.mkdtemp(prefix="memjax-checkpoints-"))
            async_save = False
        self.verify()
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                            enable_async_checkpointing=async_save)
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(os.fspath(self._staging or self.directory),
                                             options=opts)

    def verify(self) -> list[int]:
        """Committed steps, ascending; raises :class:`CheckpointError` on a partial one."""
        if not self._path.is_dir():
            if self._path.exists():
                raise CheckpointError(f"{self.directory} exists and is not a directory; it cannot "
                                      f"hold checkpoints")
            return []
        steps = []
        for child in sorted(self._path.iterdir(), key=lambda p: p.name):
            name, path = child.name, f"{self.directory}/{child.name}"
            if ".orbax-checkpoint-tmp" in name:
                log.warning("ignoring uncommitted orbax temporary directory %s", path)
                continue
            if not name.isdigit():
                continue
            if not child.is_dir() or not any((child / m).exists() for m in self.COMMIT_MARKERS):
                raise CheckpointError(
                    f"checkpoint {path} is partial or corrupt (no orbax commit marker "
                    f"{' / '.join(self.COMMIT_MARKERS)}). It was not written by a completed "
                    f"save; delete or move it to resume from an earlier checkpoint. Nothing "
                    f"was overwritten.")
            steps.append(int(name))
        return sorted(steps)

    def latest_step(self) -> Optional[int]:
        steps = self.verify()
        return steps[-1] if steps else None

    def save(self, step: int, state: dict) -> None:
        self.manager.save(int(step), args=self._ocp.args.StandardSave(_keys_to_data(state)))
        if self._staging is not None:
            self.manager.wait_until_finished()
            _copy_tree(self._staging / str(int(step)), self._path / str(int(step)))
            for old in self.verify()[:-self._keep]:
                (self._path / str(old)).rmtree()

    def restore(self, step: int, template: dict) -> dict:
        """Restores step ``step`` into the structure, shapes and shardings of ``template``
        (leaves without a sharding, e.g. ``jax.eval_shape``'s, go to this process's first
        device)."""
        abstract = jax.tree.map(_abstract, _keys_to_data(template))
        path = f"{self.directory}/{step}"
        try:
            if self._staging is not None and not (self._staging / str(int(step))).exists():
                _copy_tree(self._path / str(int(step)), self._staging / str(int(step)))
                self.manager.reload()
            restored = self.manager.restore(int(step),
                                            args=self._ocp.args.StandardRestore(abstract))
        except Exception as e:  # noqa: BLE001 -- any failure here means a bad checkpoint
            raise CheckpointError(f"checkpoint {path} could not be restored ({type(e).__name__}: "
                                  f"{str(e)[:300]}); it is corrupt or from another model. Delete "
                                  f"or move it to resume from an earlier one. Nothing was "
                                  f"overwritten.") from e
        return _data_to_keys(restored, template)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
        if self._staging is not None:
            shutil.rmtree(os.fspath(self._staging), ignore_errors=True)
