"""Checkpointer and the workdir it writes: the checks made on a saved state before restoring it."""
import contextlib
import gc
import json
import shutil

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orbax.checkpoint import type_handlers

from vssjax.errors import SetupError
from vssjax.train import checkpoint, loop
from vssjax.train.checkpoint import Checkpointer
from vssjax.train.state import TrainState


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


def test_the_variables_alone_restore_whatever_the_optimizers_state(tmp_path):
  """Evaluation, inference, a teacher and `init.workdir` read the model's variables alone: the
  optimizer's state (twice the parameters with Adam) is neither compared nor read, so one of
  another optimizer does not stop them; variables of another shape still do."""
  state = TrainState(step=jnp.array(3), params={"w": jnp.arange(6.0).reshape(2, 3)},
                     model_state={"batch_stats": {"mean": jnp.ones(3)}},
                     opt_state={"mu": jnp.zeros((2, 3))})
  other_optimizer = state.replace(opt_state=({"mu": jnp.zeros(5)},))
  other_model = state.replace(params={"w": jnp.zeros((2, 4))})
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    checkpointer.save(1, state, force=True)
    assert checkpointer.mismatched_arrays(other_optimizer, 1) == ["opt_state/0/mu", "opt_state/mu"]
    assert checkpointer.mismatched_arrays(other_optimizer, 1, variables_only=True) == []
    assert checkpointer.mismatched_arrays(other_model, 1, variables_only=True) == ["params/w"]
    restored = checkpointer.restore(other_optimizer, step=1, variables_only=True)
  assert restored.keys() == {"params", "model_state"}
  jax.tree.map(np.testing.assert_array_equal, restored,
               {"params": state.params, "model_state": state.model_state})


def test_the_variables_alone_are_compared_in_the_models_state_too(tmp_path):
  """`model_state` (BatchNorm's statistics, a teacher) is part of the model's variables: one of
  another shape or tree is a checkpoint of another model, named before the restore (Orbax's own
  error is a tree diff that names no config field), not left to fail inside it."""
  state = TrainState(step=jnp.array(3), params={"w": jnp.zeros((2, 3))},
                     model_state={"batch_stats": {"mean": jnp.ones(3)}},
                     opt_state={"mu": jnp.zeros((2, 3))})
  other_statistics = state.replace(model_state={"batch_stats": {"mean": jnp.ones(4)},
                                                "teacher": {"w": jnp.zeros(2)}})
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    checkpointer.save(1, state, force=True)
    assert checkpointer.mismatched_arrays(other_statistics, 1, variables_only=True) == [
        "model_state/batch_stats/mean", "model_state/teacher/w"]


def test_only_the_latest_keep_checkpoints_stay(tmp_path):
  """`train.keep_checkpoints` bounds the disk a long run takes: older steps are deleted."""
  state = {"w": jnp.zeros(3)}
  with contextlib.closing(Checkpointer(str(tmp_path), keep=2, async_save=False)) as checkpointer:
    for step in (1, 2, 3):
      checkpointer.save(step, state, force=True)
    assert checkpointer.latest_step() == 3
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "3"]


def test_processes_that_list_different_latest_steps_are_stopped(tmp_path, monkeypatch):
  """Each process lists the checkpoints itself; one whose listing lags (network file systems)
  restored another step's shards into the same global state. A stand-in second process sees one
  step fewer, then the same."""
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    checkpointer.save(1, {"w": jnp.zeros(3)}, force=True)
    checkpointer.save(2, {"w": jnp.zeros(3)}, force=True)
    monkeypatch.setattr(checkpoint.jax, "process_count", lambda: 2)
    monkeypatch.setattr(checkpoint.multihost_utils, "process_allgather",
                        lambda mine: np.stack([mine, mine - 1]))
    with pytest.raises(SetupError, match=r"processes see different latest checkpoints in .* "
                                         r"\(by process: \[2, 1\]\)"):
      checkpointer.latest_step()
    monkeypatch.setattr(checkpoint.multihost_utils, "process_allgather",
                        lambda mine: np.stack([mine, mine]))
    assert checkpointer.latest_step() == 2


def test_evaluating_takes_the_latest_step_every_process_agrees_on(tmp_path, monkeypatch):
  """Eval and infer take the latest step as training does, through `latest_step`, which every
  process checks against the others' (each took its own listing's last, and a lagging one
  restored another step's shards). A stand-in for the processes' disagreement."""
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    checkpointer.save(1, {"w": jnp.zeros(3)}, force=True)

  def disagreeing(self):
    raise SetupError(f"the processes see different latest checkpoints in {self.directory}")

  monkeypatch.setattr(Checkpointer, "latest_step", disagreeing)
  with pytest.raises(SetupError, match="the processes see different latest checkpoints"):
    loop.restore_for_eval(None, str(tmp_path))


def _empty_folder(step_dir):
  for path in step_dir.iterdir():
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _truncate_metadata(step_dir):
  (step_dir / "state" / "_METADATA").write_text("")


def _truncate_an_array_file(step_dir):
  next(p for p in (step_dir / "state" / "d").iterdir() if p.is_file()).write_bytes(b"")


def _truncate_a_large_arrays_file(step_dir):
  """The chunks of arrays over Orbax's 1 KiB inline limit lie in data files of their own, which
  only the restore reads (the metadata does not)."""
  data = (step_dir / "state").glob("ocdbt.process_*/d/*")
  max(data, key=lambda path: path.stat().st_size).write_bytes(b"")


# Orbax's failed restore leaves the other arrays' reads in flight; their errors surface at garbage
# collection as unretrieved task exceptions (the README's "Event loop is closed" note).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", [_empty_folder, _truncate_metadata, _truncate_an_array_file,
                                    _truncate_a_large_arrays_file])
@pytest.mark.parametrize("variables_only", [False, True])
def test_a_damaged_checkpoint_is_one_error_naming_its_folder_and_the_one_before(tmp_path, damage,
                                                                               variables_only):
  """A step folder emptied or truncated by hand (or a failing disk) was an Orbax traceback (a
  FileNotFoundError, a JSONDecodeError, a TensorStore ValueError, or a bare Exception around one
  for a large array's chunk), and an emptied one read as converted weights: the error names the
  folder, what failed (TensorStore's error, not Orbax's wrapper), says to delete it, and which step
  then serves. The same for training's whole restore and for the variables alone that evaluation
  and inference read (an Orbax partial restore beside the manager; the one large array is a
  parameter, so that restore reads its file)."""
  state = TrainState(step=jnp.array(2), params={"w": jnp.arange(6.0).reshape(2, 3),
                                                "k": jnp.arange(512.0)},
                     model_state={"batch_stats": {"b": jnp.zeros(3)}},
                     opt_state={"mu": jnp.zeros(3)})
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    for step in (1, 2):
      checkpointer.save(step, state, force=True)
    damage(tmp_path / "checkpoints" / "2")
    with pytest.raises(SetupError, match=r"checkpoint of step 2 in .*checkpoints/2 cannot be read"
                       r", it is incomplete or damaged \((?!Exception: Encountered)"
                       r".*delete that folder \(training then resumes from step 1, and "
                       r"--mode=eval --step=1"):
      loop.restore_checkpoint(checkpointer, state, None, str(tmp_path), data_iter=None, step=2,
                              variables_only=variables_only)
    restored = loop.restore_checkpoint(checkpointer, state, None, str(tmp_path), step=1,
                                       variables_only=variables_only)
  params = restored["params"] if variables_only else restored.params
  np.testing.assert_array_equal(params["w"], state.params["w"])
  np.testing.assert_array_equal(params["k"], state.params["k"])
  gc.collect()  # the failed restore's leftover reads are reported here, not in a later test


@pytest.mark.parametrize("error", [
    json.JSONDecodeError("Expecting value", "", 0),  # the data iterator's file, truncated
    ValueError("DATA_LOSS: Error reading local file .../state/d/0a1b"),  # an array's chunk
])
def test_a_file_that_fails_only_in_the_restore_is_a_damaged_checkpoint(tmp_path, monkeypatch,
                                                                       error):
  """Files the metadata does not read (the data iterator's, arrays' chunks) fail in the restore
  itself; other restore errors stay as they are (test_loop's ..._another_config_...)."""
  state = {"w": jnp.zeros(3)}
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    checkpointer.save(1, state, force=True)

    def fail(*args, **kwargs):  # pylint: disable=unused-argument
      raise error

    monkeypatch.setattr(Checkpointer, "restore", fail)
    with pytest.raises(SetupError,
                       match=r"step 1 .* cannot be read.*it is the earliest checkpoint"):
      loop.restore_checkpoint(checkpointer, state, None, str(tmp_path), step=1)


def test_a_checkpoint_deleted_while_it_is_read_says_so(tmp_path, monkeypatch):
  """An evaluation of an older step while a training run writes the same workdir: its
  `keep_checkpoints` may delete the step mid-restore. Not 'damaged, delete it'."""
  state = {"w": jnp.zeros(3)}
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    for step in (1, 2):
      checkpointer.save(step, state, force=True)

    def deleted_meanwhile(*args, **kwargs):  # pylint: disable=unused-argument
      shutil.rmtree(tmp_path / "checkpoints" / "1")
      raise FileNotFoundError("state/d/0a1b")

    monkeypatch.setattr(Checkpointer, "restore", deleted_meanwhile)
    with pytest.raises(SetupError, match=r"step 1 in .* was deleted while it was read .* rerun: it "
                       r"holds steps 2$"):
      loop.restore_checkpoint(checkpointer, state, None, str(tmp_path), step=1)


@pytest.mark.parametrize("folder", ["2.orbax-checkpoint-tmp", "2.orbax-checkpoint-tmp-1712345678"])
def test_evaluating_a_workdir_whose_only_save_did_not_complete_says_so(tmp_path, folder):
  """A run killed during its first (asynchronous) save leaves only Orbax's temporary folder, with
  or without the timestamp Orbax adds to its name: the error said 'train first', about a workdir
  that has trained."""
  (tmp_path / "checkpoints" / folder / "state.orbax-checkpoint-tmp").mkdir(parents=True)
  with pytest.raises(SetupError, match=r"no complete checkpoint in .*: the save of step 2 is "
                     r"still being written, or its run was killed"):
    loop.restore_for_eval(None, str(tmp_path))


def _data_iterator():
  return iter(grain.DataLoader(
      data_source=grain.sources.RangeDataSource(0, 8, 1),
      sampler=grain.samplers.IndexSampler(8, shard_options=grain.sharding.NoSharding(),
                                          num_epochs=1),
      worker_count=0))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_resuming_with_another_process_count_says_which_one_wrote_the_data_iterator(tmp_path):
  """Grain keeps one iterator state per process (`process_<i>-of-<n>.json`) and restores only
  with the same count: a job resized between runs was Grain's bare "File ... does not exist."
  ValueError as a traceback. The error names the count to resume with; the train state alone
  (evaluation) restores with any."""
  state = {"w": jnp.arange(3.0)}
  data_iter = _data_iterator()
  next(data_iter)
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    checkpointer.save(1, state, data_iter, force=True)
    saved = tmp_path / "checkpoints" / "1" / "data_iter"
    text = (saved / "process_0-of-1.json").read_text()
    (saved / "process_0-of-1.json").unlink()
    for rank in range(2):  # as two processes of one run write it
      (saved / f"process_{rank}-of-2.json").write_text(text)
    with pytest.raises(SetupError, match=r"data iterator of step 1 in .*checkpoints/1 was saved "
                       r"by 2 processes, and this run has 1: resume training with 2 processes"):
      loop.restore_checkpoint(checkpointer, state, None, str(tmp_path), _data_iterator())
    np.testing.assert_array_equal(
        loop.restore_checkpoint(checkpointer, state, None, str(tmp_path))["w"], state["w"])
  gc.collect()  # as in test_a_damaged_checkpoint_...


def _replicated_state(*shapes):
  """Arrays replicated over the 4 test devices (data-parallel parameters), of `shapes` whose
  leading axis splits in 4, as Orbax's replica-parallel save splits them."""
  mesh = jax.make_mesh((4,), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return {f"w{i}": jax.device_put(np.arange(np.prod(shape), dtype=np.float32).reshape(shape),
                                  replicated) for i, shape in enumerate(shapes)}


_LOWERED: list[str] = []  # the programs lowered (to be compiled) since the last clear
jax.monitoring.register_event_duration_secs_listener(
    lambda event, _, **__: _LOWERED.append(event)
    if event == "/jax/core/compile/jaxpr_to_mlir_module_duration" else None)


def _programs_lowered_by(fn) -> int:
  _LOWERED.clear()
  fn()
  return len(_LOWERED)


def _restored(checkpointer, state):
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        state)
  return checkpointer.restore(target, step=1)


def test_a_single_process_save_slices_and_compiles_nothing(tmp_path):
  """Orbax's replica-parallel save sliced each replicated array per device with eager ops, one
  compiled program per shape at a run's first save (shapes unique to this test, so none is
  compiled yet)."""
  state = _replicated_state((4, 21, 3), (8, 13))
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    assert _programs_lowered_by(lambda: checkpointer.save(1, state, force=True)) == 0
    jax.tree.map(np.testing.assert_array_equal, _restored(checkpointer, state), state)


def test_checkpoints_saved_replica_parallel_restore_alike(tmp_path, monkeypatch):
  """Workdirs written before the single-process handler, with Orbax's replica-parallel default."""
  state = _replicated_state((4, 22, 3), (8, 14))
  monkeypatch.setattr(checkpoint, "_one_writer_per_array", True)  # keeps the handler below
  type_handlers.register_type_handler(
      jax.Array, type_handlers.ArrayHandler(use_replica_parallel=True), override=True)
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    assert _programs_lowered_by(lambda: checkpointer.save(1, state, force=True)) > 0  # sliced
  monkeypatch.setattr(checkpoint, "_one_writer_per_array", False)  # registered again
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    jax.tree.map(np.testing.assert_array_equal, _restored(checkpointer, state), state)


def test_complete_steps_are_the_saved_ones_not_those_being_written(tmp_path):
  """What the Ctrl-C line names as the step a re-run resumes from, read without Orbax: the steps
  Orbax's manager lists, and not one still in its temporary folder."""
  assert checkpoint.complete_steps(str(tmp_path / "none")) == []
  state = {"w": jnp.zeros((2, 3))}
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    for step in (3, 10):
      checkpointer.save(step, state)
    (checkpointer.directory / "12.orbax-checkpoint-tmp-1234").mkdir()
    assert checkpoint.complete_steps(str(tmp_path)) == checkpointer.all_steps() == [3, 10]


def test_unfinished_steps_include_orbaxs_timestamped_temporary_folders(tmp_path):
  """Orbax names a step's folder `<step>.orbax-checkpoint-tmp-<time>` while it writes it; a step
  so named missed, evaluating a run killed in its first save would say 'train first'."""
  state = {"w": jnp.zeros((2, 3))}
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    assert checkpointer.unfinished_steps() == []
    checkpointer.save(3, state)
    (checkpointer.directory / "12.orbax-checkpoint-tmp-1712345678").mkdir()
    (checkpointer.directory / "5.orbax-checkpoint-tmp").mkdir()
    assert checkpointer.unfinished_steps() == [5, 12]


@pytest.mark.parametrize("process", [0, 1])
def test_process_0_removes_and_names_the_folders_of_unfinished_saves(
    tmp_path, monkeypatch, process):
  """A training run removes what a killed run's saves left (Orbax only when it saves that step
  again): process 0, which names them."""
  state = {"w": jnp.zeros((2, 3))}
  with contextlib.closing(Checkpointer(str(tmp_path), async_save=False)) as checkpointer:
    checkpointer.save(1, state)
    unfinished = [checkpointer.directory / name
                  for name in ("12.orbax-checkpoint-tmp-1712345678", "5.orbax-checkpoint-tmp")]
    for folder in unfinished:
      (folder / "state").mkdir(parents=True)
    monkeypatch.setattr(jax, "process_index", lambda: process)
    assert checkpointer.remove_unfinished() == (
        [str(unfinished[1]), str(unfinished[0])] if process == 0 else [])
    assert checkpointer.unfinished_steps() == ([] if process == 0 else [5, 12])
    assert checkpointer.all_steps(reload=True) == [1]
    jax.tree.map(np.testing.assert_array_equal, _restored(checkpointer, state), state)


def test_saving_never_asks_the_preemption_service(tmp_path, monkeypatch):
  """The train loop asks JAX's preemption service with the count of this run's steps; Orbax asked
  it with the train step on every save, so that a resumed run, notified around a save, agreed to
  stop as many steps late as it had resumed from (`checkpoint._LoopDecidesPreemption`)."""
  asked = []
  monkeypatch.setattr(checkpoint.multihost_utils, "reached_preemption_sync_point",
                      lambda step: asked.append(step) or True)
  checkpointer = Checkpointer(str(tmp_path), async_save=False)
  checkpointer.save(100_000, {"w": jnp.zeros(3)})
  checkpointer.close()
  assert asked == [] and checkpointer.all_steps() == [100_000]
