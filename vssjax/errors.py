"""The error types the command line reports without a traceback.

A run set up wrongly (a flag, the config, the workdir, the environment), fed bad data, or whose
training diverged is the user's to fix, and a 100-line traceback hides the one line that says how;
any other exception is a bug and keeps its traceback (`vssjax.command_line`). Library callers
(tests, notebooks) get an ordinary exception either way. Kept free of heavy imports: the commands
read it before JAX loads.
"""


class SetupError(ValueError):
  """The run cannot start as set up; the message names the flag, file or variable to change."""


class DataError(Exception):
  """Bad input data. The message always starts with the file (or video/frame id) concerned."""

  def __init__(self, where: str, problem: str):
    super().__init__(f"{where}: {problem}")
    self.where, self.problem = where, problem

  def __reduce__(self):
    """Pickled with its two arguments: a data-loader worker process sends it to the trainer so
    (Python's default passes the message alone, and unpickling it there failed with a TypeError
    traceback in place of the one-line error)."""
    return type(self), (self.where, self.problem)


class TrainingDiverged(FloatingPointError):
  """A training step's loss, gradient or parameters stopped being finite; the message names the
  step and what to change, and no checkpoint holds that step."""
