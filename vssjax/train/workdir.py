"""The workdir of a training run: made with a clear error where it cannot be, held by one run at a
time, and left as it was found by a run that fails before it wrote anything of its own."""

from __future__ import annotations

import contextlib
import fcntl
import os

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from vssjax.errors import SetupError
from vssjax.files import file_in_the_way, nearest_existing


def make_workdir(workdir: str) -> None:
  """Creates `workdir` (and its parents). A path that is a file, lies under one, or cannot be
  written is a `SetupError` saying so, rather than the OSError behind it (FileExistsError,
  NotADirectoryError, PermissionError) with its traceback."""
  try:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise SetupError(f"--workdir={workdir} cannot be made a directory ({error.strerror or error}"
                     f"{': ' + error.filename if error.filename else ''}): pass a directory, or "
                     "a path where one can be made") from error


def check_trained_workdir(workdir: str) -> None:
  """The workdir that eval, infer or a teacher reads from: one that does not exist (a typo,
  likely) or is a file is a `SetupError` saying so, checked before anything else about it."""
  problem = _trained_workdir_problem(workdir)
  if problem is not None:
    raise SetupError(problem)


def check_workdir_to_evaluate(workdir: str, outputs: str, *, folder: str | None = None,
                              every_process_writes: bool = True) -> None:
  """Before eval or infer restores a checkpoint of `workdir` and writes `outputs` into `folder`
  (default: the workdir): a `SetupError` where the workdir does not exist or is a file
  (`check_trained_workdir`), or where a process writing the outputs cannot write the folder (the
  nearest existing folder above it, where it would be made; a remote `gs://...` is left to its
  store): raised before any work, instead of a PermissionError traceback at the first output,
  after the restore and a video's predictions (a workdir shared read-only). With
  `every_process_writes` False only process 0 writes (evaluation's results). Every process of a
  multi-process run refuses together: one alone would leave the others waiting in the restore's
  collectives until the cluster's timeout."""
  problem = _trained_workdir_problem(workdir)
  if problem is None and (every_process_writes or jax.process_index() == 0):
    problem = _write_problem(folder or workdir, outputs)
  if jax.process_count() > 1:
    failed = multihost_utils.process_allgather(np.array([problem is not None]))
    if problem is None and failed.any():
      problem = (f"process {int(np.argmax(failed))} cannot use the workdir {workdir} for "
                 f"{outputs} (its error says why)")
  if problem is not None:
    raise SetupError(problem)


def _trained_workdir_problem(workdir: str) -> str | None:
  path = epath.Path(workdir)
  if path.is_dir():
    return None
  return (f"the workdir {workdir} {'is a file' if path.exists() else 'does not exist'}: name the "
          "workdir of a training run or of `python -m vssjax.convert` (docs/reproducing.md)")


def _write_problem(folder: str, outputs: str) -> str | None:
  """Why this process cannot write `outputs` to local `folder`, or None."""
  if "://" in str(folder):
    return None
  file = file_in_the_way(folder)
  if file is not None:
    return f"{file} is a file, not a folder, and {outputs} are written there"
  existing = nearest_existing(folder)
  if not os.access(existing, os.W_OK | os.X_OK):
    return (f"{existing} is not writable, and {outputs} are written there: use a workdir of your "
            "own (a copy of this one's checkpoints/ and config.json)")
  return None


LOCK_FILE = ".train.lock"
# What a training run writes before its first log line or checkpoint: its lock, the checkpoint
# manager's (still empty) directory and the record of its config.
_START_FILES = frozenset({LOCK_FILE, "checkpoints", "config.json"})


def one_local_process(workdir: str) -> bool:
  """Whether this run is one process with `workdir` on a local filesystem: the only case where it
  may lock the workdir or remove what it wrote there (`workdir_lock`, `workdir_for_this_run`,
  and `--mode=infer`'s staging folders)."""
  return jax.process_count() == 1 and "://" not in str(workdir)


@contextlib.contextmanager
def workdir_for_this_run(workdir: str):
  """`make_workdir`, undone if the run then fails (an error, a Ctrl-C) having written only its
  start files: after a missing `init.torch_checkpoint` or an initialisation out of memory, a
  workdir holding a lock and an empty `checkpoints/` would look like a run and take the name.
  What was there before stays, and so does anything the run wrote past its start (a log line,
  a checkpoint: a run that diverged keeps its metrics). One process on a local filesystem only,
  as `workdir_lock`: several processes may share the directory."""
  path = epath.Path(workdir)
  local = one_local_process(workdir)
  before = set(os.listdir(path)) if local and path.is_dir() else None
  make_workdir(workdir)
  try:
    yield
  except BaseException:
    if local:
      _remove_start_files(path, before)
    raise


def _remove_start_files(path: epath.Path, before: set[str] | None) -> None:
  """Removes the start files a failed run added to `path` (and `path`, if the run made it),
  provided it added nothing else: any other new file, or a checkpoint, keeps them all."""
  added = set(os.listdir(path)) - (before or set())
  checkpoints = path / "checkpoints"
  if added - _START_FILES or (checkpoints.is_dir() and any(checkpoints.iterdir())):
    return
  for name in added:
    if (path / name).is_dir():
      (path / name).rmdir()
    else:
      (path / name).unlink()
  if before is None:
    path.rmdir()


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Held while a training run uses `workdir`: a second run started in it (a job submitted twice,
  a resume while the first still runs) would silently interleave both runs' checkpoints and log
  lines. An flock, which the OS releases however the holder ends (kill -9 included), so no stale
  lock is ever left. One process only: with several, their hosts may share the workdir's
  filesystem (each would lock the others out), and one stopping alone would leave the others
  waiting in a collective. Nor on object storage (a `gs://` workdir of a single-host TPU VM),
  which has no file locks. `--mode=eval` takes no lock: evaluating while training runs is fine."""
  if not one_local_process(workdir):
    yield
    return
  path = epath.Path(workdir) / LOCK_FILE
  try:
    lock = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
  except OSError as error:  # a read-only workdir, at the first thing training writes there
    raise SetupError(f"--workdir={workdir} cannot be written ({error.strerror or error}: "
                     f"{path}): training writes its checkpoints and logs there") from error
  with lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
      lock.seek(0)
      holder = lock.read().strip() or "unknown"
      raise SetupError(f"another training run (pid {holder}) is using --workdir={workdir} "
                       f"({path} is locked): wait for it to end, or train in another "
                       "--workdir") from error
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    yield
