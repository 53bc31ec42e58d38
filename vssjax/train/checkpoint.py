"""Orbax checkpoints of the train state together with the Grain data iterator.

Wrapped here so the rest of the code never touches Orbax directly (swapping to the Orbax v1 API is
local). Restores always go against an abstract target that carries the shardings, so a checkpoint
comes back laid out for the current mesh.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from vssjax import parallel
from vssjax.errors import SetupError

# How Orbax names a step's folder while it writes it (`<step>.orbax-checkpoint-tmp[-<time>]`).
_TMP_SUFFIX = ".orbax-checkpoint-tmp"
_one_writer_per_array = False  # whether _write_each_array_from_one_device has run
# The fields of the train state (`vssjax.train.state.TrainState`) that hold the model's variables.
VARIABLES = ("params", "model_state")


def _write_each_array_from_one_device() -> None:
  """Orbax's default `jax.Array` handler splits each replicated array's write over its replicas
  (replica-parallel saving). That pays in a run of several processes, where each host writes a
  part, and costs in one: every array is first sliced per device by eager ops, the run's first
  save compiling one program per array shape (MiT-B1's train state on 4 CPU devices: first save
  12.4 s instead of 2.1 s, later saves 3.1 instead of about 2 s). In a single process, the handler
  that writes replica 0 of each array whole replaces it, once per process (Orbax's handler
  registry is global). Restores read the files of either alike.
  """
  global _one_writer_per_array
  if _one_writer_per_array or jax.process_count() > 1:
    return
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # Orbax logs every override as a warning
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  finally:
    absl_logger.setLevel(level)
  _one_writer_per_array = True


class _LoopDecidesPreemption(ocp.CheckpointManager):
  """Orbax's manager, never asking JAX's preemption service itself.

  The service is asked by the train loop (`preemption.StopSignal.should_stop`) with the count of
  this run's steps; Orbax asks it three times per save with the train step. The service picks the
  stop step just past the last step it was asked, so in a resumed run a notice arriving during or
  just after a save (the periodic evaluation) set a stop at train step + 1, which the run's count
  reached as many steps later as the run had resumed from: after the scheduler's SIGKILL. The loop
  decides when to save, so Orbax has no use for the answer.
  """

  def reached_preemption(self, step: int) -> bool:  # pylint: disable=unused-argument
    return False


class Checkpointer:
  """Saves/restores {'state': TrainState, 'data_iter': grain iterator} under
  `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               create: bool = True):
    """`create=False` for reading only: a workdir that does not exist is not made (it then holds
    no checkpoint)."""
    self.directory = (epath.Path(workdir) / "checkpoints").absolute()  # Orbax reads need it
    _write_each_array_from_one_device()
    self._manager = _LoopDecidesPreemption(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=create, enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    """The newest step on disk. With several processes (each calls this) it is checked to be the
    same on every one: each lists the folder itself, and one with a stale listing (a network file
    system's cached attributes, just after the previous run finalised a step) would restore its
    shards of another checkpoint into the same global state, and run another number of steps."""
    step = self._manager.latest_step()
    if jax.process_count() > 1:
      seen = multihost_utils.process_allgather(np.array([-1 if step is None else step]))
      steps = [None if s < 0 else int(s) for s in np.ravel(seen)]
      if len(set(steps)) > 1:
        raise SetupError(
            f"the processes see different latest checkpoints in {self.directory} (by process: "
            f"{steps}): a file system whose listings lag behind across hosts; rerun once every "
            "host lists the same steps")
    return step

  def all_steps(self, *, reload: bool = False) -> list[int]:
    """`reload`: listed from the disk again, not Orbax's cache from when the manager was made (a
    training run writing the same workdir adds and deletes steps meanwhile)."""
    if reload:
      self._manager.reload()
    return sorted(self._manager.all_steps())

  def unfinished_steps(self) -> list[int]:
    """Steps whose save has not completed: being written now, or by a run that was killed (Orbax
    writes a step into a temporary folder and renames it when complete; restores ignore them)."""
    return sorted({step for step, _ in self._unfinished_folders()})

  def remove_unfinished(self) -> list[str]:
    """Removes the folders of saves a killed run left unfinished (kill -9, the OOM killer, a lost
    node) and returns those this process removed: process 0 removes them all, then the processes
    meet, so none saves such a step before its folder is gone. Orbax removes one only when that
    step is saved again (with an absl warning): one of a step the resumed run never saves stayed,
    as large as a checkpoint. (Orbax's `cleanup_tmp_directories` removes them on a thread of its
    manager's, which closing the manager soon after cuts short or makes raise.) For training only:
    an evaluation would delete the save that the run training the workdir is writing. On `gs://`
    Orbax writes a step in place and marks it complete with `commit_success.txt`: an unfinished
    step has no temporary folder there and stays (Orbax's listing skips it, as this does)."""
    folders = [path for _, path in self._unfinished_folders()] if jax.process_index() == 0 else []
    for folder in folders:
      folder.rmtree(missing_ok=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("vssjax: unfinished saves removed")
    return [str(folder) for folder in folders]

  def _unfinished_folders(self) -> list[tuple[int, epath.Path]]:
    if not self.directory.exists():
      return []
    return sorted((int(path.name.split(".")[0]), path)
                  for path in self.directory.glob(f"*{_TMP_SUFFIX}*")
                  if path.name.split(".")[0].isdigit())

  def save(self, step: int, state: Any, data_iter: Any | None = None, *, force: bool = False):
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state: Any, data_iter: Any | None = None, step: int | None = None,
              *, variables_only: bool = False):
    """Restores `step` (default latest) into the shapes/shardings of `abstract_state`.

    Returns the restored state; `data_iter`, if given, is restored in place to the saved position.
    With `variables_only`, only the model's variables are read, and returned as the dict
    `{'params': ..., 'model_state': ...}`: evaluation, inference, a teacher and `init.workdir` have
    no use for the optimizer's state, twice the parameters' size with Adam (docs/benchmarks.md,
    "Evaluation and inference": MiT-B5's restore for evaluation in a third less time and memory).
    """
    step = self.latest_step() if step is None else step
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), abstract_state)
    if variables_only:  # outside the manager: it takes one kind of restore per item
      target = {name: getattr(target, name) for name in VARIABLES}
      with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
        return reader.restore(self.directory / str(step) / "state", args=ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))
    items = {"state": ocp.args.StandardRestore(target)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    return self._manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def holds_data_iter(self, step: int) -> bool:
    """Whether `step` saved the data iterator: training saves it, `vssjax.convert` does not."""
    return (self.directory / str(step) / "data_iter").exists()

  def data_iter_process_counts(self, step: int) -> set[int]:
    """The process counts of the runs that saved `step`'s data iterator: Grain writes one state per
    process, `process_<i>-of-<n>.json`, and restores one only with the same `n`."""
    return {int(match.group(1)) for path in (self.directory / str(step) / "data_iter").glob("*")
            if (match := re.fullmatch(r"process_\d+-of-(\d+)\.json", path.name))}

  def saved_data_iter_state(self, step: int) -> dict[str, Any]:
    """This process's data-iterator state in `step` (Grain's JSON: its positions, worker count and
    the sampler's repr), read without restoring it; the run has the count of processes it was
    saved by (`data_iter_process_counts`)."""
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    return json.loads((self.directory / str(step) / "data_iter" / name).read_text())

  def mismatched_arrays(self, abstract_state: Any, step: int, *,
                        variables_only: bool = False) -> list[str]:
    """Paths ('/'-joined) of the arrays whose presence or shape differ between `abstract_state`
    and the state saved at `step`: none unless the checkpoint was written for another model or
    optimizer. With `variables_only`, of the model's variables only (those `restore` then reads)."""
    metadata = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "state")
    saved, wanted = _shapes(metadata), _shapes(abstract_state)
    names = saved.keys() | wanted.keys()
    if variables_only:
      names = {name for name in names if name.split("/")[0] in VARIABLES}
    return sorted(name for name in names if saved.get(name) != wanted.get(name))

  def wait_until_saved(self):
    """Returns once an asynchronous save in flight has completed (at once if none is)."""
    self._manager.wait_until_finished()

  def close(self):
    self.wait_until_saved()
    self._manager.close()


def complete_steps(workdir: str) -> list[int]:
  """The steps whose checkpoints in `workdir` are complete, listed from the folder names without
  Orbax (Orbax renames a step's folder from its temporary name once the save completes)."""
  directory = epath.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    return []
  return sorted(int(path.name) for path in directory.iterdir() if path.name.isdigit())


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Each array's shape by its '/'-joined path (arrays or their Orbax metadata)."""
  return {parallel.path_name(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


# How TensorStore's errors (ValueErrors) begin when a file it reads is missing or cut short.
_TENSORSTORE_READ_ERRORS = re.compile(r"(DATA_LOSS|OUT_OF_RANGE|NOT_FOUND): ")


def unreadable_file_error(error: BaseException) -> BaseException | None:
  """The error in `error`'s chain of causes that is a file missing or that cannot be parsed; None
  for anything else (which stays as it is, not disguised as a damaged checkpoint). Orbax raises an
  array's read error as a bare Exception ("Encountered error while reading array index") whose
  cause is TensorStore's."""
  while error is not None:
    if (isinstance(error, (OSError, json.JSONDecodeError))
        or _TENSORSTORE_READ_ERRORS.match(str(error))):
      return error
    error = error.__cause__
  return None


def damaged_checkpoint_error(checkpointer: Checkpointer, step: int,
                             error: Exception) -> SetupError:
  """The error for checkpoint `step` whose files cannot be read (emptied, truncated or removed by
  hand, a disk that failed; a killed save leaves only a temporary folder, which is never read):
  Orbax's own is a traceback, or thousands of lines, that names no fix. It names the folder, what
  failed, and the checkpoint that deleting it leaves to resume from or evaluate; one that is gone
  was deleted meanwhile by a training run in the same workdir (an evaluation of an older step)."""
  folder = checkpointer.directory / str(step)
  if not folder.exists():  # deleted by a training run writing the same workdir (keep_checkpoints)
    now = ", ".join(map(str, checkpointer.all_steps(reload=True)))
    return SetupError(f"checkpoint of step {step} in {folder} was deleted while it was read (a "
                      "training run in this workdir keeps only the last train.keep_checkpoints); "
                      f"rerun: it holds steps {now}")
  earlier = [s for s in checkpointer.all_steps() if s < step]
  reason = (str(error).splitlines() or [""])[0][:300]
  then = (f"training then resumes from step {earlier[-1]}, and --mode=eval --step={earlier[-1]} "
          "evaluates that one" if earlier else "it is the earliest checkpoint, so training then "
          "starts from scratch")
  return SetupError(f"checkpoint of step {step} in {folder} cannot be read, it is incomplete or "
                    f"damaged ({type(error).__name__}: {reason}): delete that folder ({then})")
