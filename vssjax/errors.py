"""The one error type the command line reports without a traceback.

A run set up wrongly (a flag, the config, the workdir, the environment) is the user's to fix, and
a 100-line traceback hides the one line that says how; any other exception is a bug and keeps its
traceback. Library callers (tests, notebooks) get an ordinary exception either way.
"""


class SetupError(ValueError):
  """The run cannot start as set up; the message names the flag, file or variable to change."""
