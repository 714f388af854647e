"""Orbax checkpoints with integrity checks: a partial or corrupt checkpoint is reported, never
skipped or overwritten.

:class:`Checkpointer` wraps ``orbax.checkpoint.CheckpointManager`` (``StandardSave`` of a
pytree of arrays; periodic, keep-N, atomic commit by rename). Typed PRNG keys are stored as
their raw key data and re-wrapped on restore.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import jax

__all__ = ["Checkpointer", "CheckpointError"]

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
        self.verify()
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                            enable_async_checkpointing=async_save)
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(self.directory, options=opts)

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

    def restore(self, step: int, template: dict) -> dict:
        """Restores step ``step`` into the structure, shapes and shardings of ``template``."""
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, _keys_to_data(template))
        path = f"{self.directory}/{step}"
        try:
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
