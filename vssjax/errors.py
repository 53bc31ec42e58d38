"""The error types the command line reports without a traceback.

A run set up wrongly (a flag, the config, the workdir, the environment) or fed bad data is the
user's to fix, and a 100-line traceback hides the one line that says how; any other exception is a
bug and keeps its traceback. Library callers (tests, notebooks) get an ordinary exception either
way. Kept free of heavy imports: `vssjax.main` reads it before JAX loads.
"""

import functools
import sys
from typing import Callable, TypeVar

_T = TypeVar("_T")


class SetupError(ValueError):
  """The run cannot start as set up; the message names the flag, file or variable to change."""


class DataError(Exception):
  """Bad input data. The message always starts with the file (or video/frame id) concerned."""

  def __init__(self, where: str, problem: str):
    super().__init__(f"{where}: {problem}")
    self.where = where


def user_errors_in_one_line(main: Callable[..., _T]) -> Callable[..., _T]:
  """A command's `main` that ends on a `SetupError` or `DataError` with the message (and its
  notes, e.g. which file a checkpoint mismatch was read from) alone on stderr, `error: ...` (exit
  status 1), instead of the traceback."""

  @functools.wraps(main)
  def run(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except (SetupError, DataError) as error:
      sys.exit("\n".join([f"error: {error}", *getattr(error, "__notes__", ())]))

  return run
