"""The workdir of a training run: made with a clear error where it cannot be, and held by one run
at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os

import jax
from etils import epath

from vssjax.errors import SetupError


def make_workdir(workdir: str) -> None:
  """Creates `workdir` (and its parents). A path that is a file, lies under one, or cannot be
  written was an OSError traceback (FileExistsError, NotADirectoryError, PermissionError)."""
  try:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise SetupError(f"--workdir={workdir} cannot be made a directory ({error.strerror or error}"
                     f"{': ' + error.filename if error.filename else ''}): pass a directory, or "
                     "a path where one can be made") from error


LOCK_FILE = ".train.lock"


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Held while a training run uses `workdir`: a second run started in it (a job submitted twice,
  a resume while the first still runs) silently interleaved both runs' checkpoints and log lines.
  An flock, which the OS releases however the holder ends (kill -9 included), so no stale lock
  is ever left. One process only: with several, their hosts may share the workdir's filesystem
  (each would lock the others out), and one stopping alone would leave the others waiting in a
  collective. Nor on object storage (a `gs://` workdir of a single-host TPU VM), which has no
  file locks. `--mode=eval` takes no lock: evaluating while training runs is fine."""
  if jax.process_count() > 1 or "://" in str(workdir):
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
