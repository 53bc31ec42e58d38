"""What every command of the project does the same way (`vssjax.main`, `vssjax.convert`,
`data_pipelines.build`, ...): parse its --config flag with the user's mistakes said in one line,
report a user's error (`SetupError`, `DataError`) as one `error: ...` line instead of a traceback,
and keep libraries' routine INFO logs out of the progress lines. `vssjax.main` also says a Ctrl-C
in one line (`interrupt_in_one_line`); the other commands keep its traceback.

Light on imports on purpose: `--help` answers without loading JAX.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import Callable, NoReturn, TypeVar

from absl import flags, logging

from vssjax.errors import DataError, SetupError, TrainingDiverged

_T = TypeVar("_T")
# In the note JAX adds to an exception raised inside a traced function (jax._src.traceback_util).
_JAX_TRACEBACK_NOTE = "JAX has removed its internal frames"


def user_errors_in_one_line(main: Callable[..., _T]) -> Callable[..., _T]:
  """A command's `main` that ends on a `SetupError`, `DataError` or `TrainingDiverged` with the
  message (and its notes, e.g. which file a checkpoint mismatch was read from) alone on stderr,
  `error: ...` (exit status 1), instead of the traceback. JAX's own note on an error raised while
  it traces a program (that it shortened the traceback, which is not shown here) is left out."""

  @functools.wraps(main)
  def run(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except (SetupError, DataError, TrainingDiverged) as error:
      notes = [note for note in getattr(error, "__notes__", ()) if _JAX_TRACEBACK_NOTE not in note]
      sys.exit("\n".join([f"error: {error}", *notes]))

  return run


def interrupt_in_one_line(line: str) -> None:
  """From now on, a Ctrl-C that ends the command (its KeyboardInterrupt) prints `line` on stderr
  instead of the traceback of wherever it landed; any other uncaught error keeps its traceback.
  Only the display changes (`sys.excepthook`): Python still ends the process by SIGINT once it
  has cleaned up, so the shell says status 130 and a script or loop running the command stops too
  (after an exit(130) a shell goes on to the next command)."""
  show = sys.excepthook

  def hook(kind, error, traceback):
    if issubclass(kind, KeyboardInterrupt):
      print(line, file=sys.stderr, flush=True)
    else:
      show(kind, error, traceback)

  sys.excepthook = hook


def quiet_routine_logs() -> None:
  """Orbax, TFDS and JAX log routine steps at INFO (and TensorFlow's C++ side more); the commands
  print progress lines instead. An explicit --verbosity is left alone."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def _fail(message: str) -> NoReturn:
  """Ends the run with `message` as the one line on stderr (exit status 1): the command is wrong,
  and a traceback would only hide the line that says how."""
  sys.exit(f"error: {message}")


def _config_spec(argv: list[str]) -> str | None:
  """The value of --config in `argv` (`path[:arg]`), read by absl's own parser (either spelling,
  flag files) before the config flag itself is parsed."""
  probe = flags.FlagValues()
  flags.DEFINE_string("config", None, "", flag_values=probe)
  probe(argv, known_only=True)
  return probe["config"].value


def _unknown_override(spec: str | None, argv: list[str]) -> str | None:
  """The first `--config.<field>=` override in `argv` that names no field of the config `spec`,
  as the line that says so; None if there is none."""
  from vssjax import configs_lib  # pylint: disable=g-import-not-at-top  (fast --help)

  if not spec:
    return None
  config = configs_lib.load_config_file(spec)
  for match in filter(None, (re.match(r"--?(?:no)?config\.([^=]+)", arg) for arg in argv)):
    problem = configs_lib.unknown_field(config, match.group(1))
    if problem:
      return f"--config.{match.group(1)}: {problem}"
  return None


def parse_config_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run`'s default), with the --config mistakes that ml_collections
  does not report in one line said so: a config file that does not exist (it defers that error to
  the config's first use, deep into the run), a bad `:arg` (a flag error around the config's
  traceback) and an override that names no field (an AttributeError or KeyError out of the
  parser, with its traceback). Any other flag error is one line too, instead of absl's two."""
  spec = _config_spec(argv)
  if spec is not None and os.path.isdir(spec.partition(":")[0]):
    _fail(f"--config={spec}: a directory; name a config file in it (configs/<method>/<dataset>_"
          "<backbone>.py)")
  if spec is not None and not os.path.isfile(spec.partition(":")[0]):
    _fail(f"--config={spec}: no such file (a relative path starts at {os.getcwd()})")
  if spec is not None:  # a bad `:arg`, which the flag parser would wrap with its traceback
    from vssjax import configs_lib  # pylint: disable=g-import-not-at-top  (fast --help)
    try:
      configs_lib.load_config_file(spec)
    except SetupError as error:
      _fail(f"--config={spec}: {error}")
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:  # absl's "FATAL Flags parsing error: ..." and a usage line
    _fail(_flag_error_line(spec, str(error)))
  except (AttributeError, KeyError):
    problem = _unknown_override(spec, argv)
    if problem is None:
      raise  # not a misspelt field: a bug, e.g. in the config file
    _fail(problem)


def _flag_error_line(spec: str | None, message: str) -> str:
  """absl's message for a flag given a value it cannot take (`--mode=tran`, a missing --workdir)
  on one line; an override's (`--config.train.steps=five`: "invalid literal for int() with base
  10: 'five'") also says what the field takes and holds, as the message names a Python call."""
  message = " ".join(message.split()).rstrip(".")
  override = re.match(r"flag --config\.([^=]+)=", message)
  if not (override and spec):
    return f"{message} (--helpfull lists the flags)"
  from vssjax import configs_lib  # pylint: disable=g-import-not-at-top  (fast --help)
  field = override.group(1)
  value = configs_lib.load_config_file(spec)
  for key in field.split("."):
    value = value[key]
  kind = type(value).__name__
  article = "an" if kind[0] in "aeiou" else "a"
  return f"{message}: config.{field} is {article} {kind} (the config has {value!r})"
