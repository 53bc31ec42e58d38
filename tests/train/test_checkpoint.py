"""Checkpointer: the checks made on a saved state before restoring it."""
import contextlib

import jax
import jax.numpy as jnp

from vssjax.train.checkpoint import Checkpointer


def test_mismatched_arrays_of_a_relative_workdir(tmp_path, monkeypatch):
  """Workdirs are often relative (the README's `workdirs/demo`), and Orbax reads metadata only from
  absolute paths."""
  monkeypatch.chdir(tmp_path)
  state = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
  with contextlib.closing(Checkpointer("workdirs/run", async_save=False)) as checkpointer:
    checkpointer.save(1, state, force=True)
    assert checkpointer.mismatched_arrays(state, 1) == []
    other = {"w": jax.ShapeDtypeStruct((2, 4), jnp.float32), "c": jnp.zeros(3)}
    assert checkpointer.mismatched_arrays(other, 1) == ["b", "c", "w"]


def test_only_the_latest_keep_checkpoints_stay(tmp_path):
  """`train.keep_checkpoints` bounds the disk a long run takes: older steps are deleted."""
  state = {"w": jnp.zeros(3)}
  with contextlib.closing(Checkpointer(str(tmp_path), keep=2, async_save=False)) as checkpointer:
    for step in (1, 2, 3):
      checkpointer.save(step, state, force=True)
    assert checkpointer.latest_step() == 3
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "3"]
