"""What every command of the project does the same way (`vssjax.main`, `vssjax.convert`,
`data_pipelines.build`, ...): parse its --config flag with the user's mistakes said in one line,
report a user's error (`SetupError`, `DataError`) as one `error: ...` line instead of a traceback,
and keep libraries' routine INFO logs out of the progress lines. `vssjax.main` also says a Ctrl-C
in one line (`interrupt_in_one_line`); the other commands keep its traceback.

Light on imports on purpose: `--help` answers without loading JAX.
"""

from __future__ import annotations

import ast
import atexit
import functools
import gc
import os
import re
import shlex
import signal
import sys
import threading
import traceback as tracebacks
from typing import Any, Callable, NoReturn, TypeVar

from absl import flags, logging
from ml_collections import ConfigDict
from ml_collections.config_flags import config_path

from vssjax.errors import DataError, SetupError, TrainingDiverged

_T = TypeVar("_T")
# In the notes JAX adds to an exception raised inside a traced function (jax._src.traceback_util)
# and Grain to one raised in a data-loader worker: tracebacks the one line leaves out.
_TRACEBACK_NOTES = ("JAX has removed its internal frames", "Grain has removed its internal frames")


def user_errors_in_one_line(main: Callable[..., _T]) -> Callable[..., _T]:
  """A command's `main` that ends on a `SetupError`, `DataError` or `TrainingDiverged` with the
  message (and its notes, e.g. which file a checkpoint mismatch was read from) alone on stderr,
  `error: ...` (exit status 1), instead of the traceback. JAX's and Grain's own notes (that they
  shortened the traceback, which is not shown here) are left out. Output read only in part
  (`python -m vssjax.op_profile DIR | head`) ends the command quietly, as SIGPIPE ends other
  tools (status 141), not with a BrokenPipeError's traceback."""

  @functools.wraps(main)
  def run(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except BrokenPipeError:
      # Python flushes stdout again at exit: pointed at /dev/null, that flush cannot fail too.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
      sys.exit(128 + signal.SIGPIPE)
    except (SetupError, DataError, TrainingDiverged) as error:
      notes = [note for note in getattr(error, "__notes__", ())
               if not any(traceback in note for traceback in _TRACEBACK_NOTES)]
      message = "\n".join([f"error: {error}", *notes])
    # Exits outside the `except`, once the error's traceback and the frames it holds (a data
    # loader whose worker processes keep batches in shared memory) are freed, cycles included, so
    # that the loader shuts down before the interpreter: at a bad file read by 2 Grain workers
    # Python warned of 12 "leaked shared_memory objects" at exit, 4 since (still Grain's).
    gc.collect()
    sys.exit(message)

  return run


def interrupt_in_one_line(line: Callable[[], str]) -> None:
  """From now on, a Ctrl-C that ends the command (its KeyboardInterrupt) prints `line()` on stderr
  instead of the traceback of wherever it landed; any other uncaught error keeps its traceback.
  `line` is called then, once the interrupted work has cleaned up (a checkpoint save completed).
  The process then ends by SIGINT (`_end_by_sigint`), as Python ends it after an uncaught
  KeyboardInterrupt, so the shell says status 130 and a script or loop running the command stops
  too (after an exit(130) a shell goes on to the next command)."""
  show = sys.excepthook

  def hook(kind, error, traceback):
    if not issubclass(kind, KeyboardInterrupt):
      show(kind, error, traceback)
      return
    print(line(), file=sys.stderr, flush=True)
    tracebacks.clear_frames(traceback)  # the interrupted frames' locals: files closed, ...
    del error, traceback
    _end_by_sigint()

  sys.excepthook = hook


def _end_by_sigint() -> None:
  """Ends the process by SIGINT after what Python's own exit does first (non-daemon threads
  joined, the garbage collected, the `atexit` functions: Grain's workers, logging, JAX's backends;
  output flushed), but without the interpreter's teardown. A Ctrl-C during an XLA compilation (a
  first run, whose programs the cache does not hold yet) returns while XLA's compiler threads
  still run, and the teardown under them crashed: "Fatal Python error: Segmentation fault", status
  139 (jax 0.10.2 on CPU, a plain `jax.jit(f).lower(x).compile()` alike)."""
  for thread in threading.enumerate():
    if thread is not threading.current_thread() and not thread.daemon:
      thread.join()
  gc.collect()
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  sys.stdout.flush()
  sys.stderr.flush()
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  os.kill(os.getpid(), signal.SIGINT)


def refuse_arguments(argv: list[str]) -> None:
  """Words after the command that are no flags (`... eval` meant as `--mode=eval`): one line,
  where absl's usage error printed the help of every flag before it."""
  if len(argv) > 1:
    raise SetupError(f"unexpected arguments {argv[1:]}: every setting is a --flag=value "
                     "(--mode=eval, not eval); --help lists them")


def path_flag(name: str, value: str, what: str = "a folder") -> str:
  """Path flag `--name`'s `value` with `~` expanded: a shell expands none after `--name=`, and a
  run would make a folder named `~` in the current one. An empty value (an unset variable,
  `--workdir=$RUN`) is a `SetupError` asking for `what`: it would stand for the current folder."""
  if not value:
    raise SetupError(f"--{name} is empty (an unset shell variable?): name {what}")
  return os.path.expanduser(value)


def numbers_flag(name: str, values: list[str], kind: type[int] | type[float]) -> list:
  """List flag `--name`'s words as numbers of `kind` (absl's DEFINE_list keeps them text): a word
  that is none is a `SetupError` naming the flag, not a ValueError's traceback."""
  try:
    return [kind(value) for value in values]
  except ValueError:
    raise SetupError(f"--{name}={','.join(values)}: a comma-separated list of "
                     f"{kind.__name__} numbers") from None


def quiet_routine_logs() -> None:
  """Orbax, TFDS and JAX log routine steps at INFO (and TensorFlow's C++ side more); the commands
  print progress lines instead. OpenCV's FFmpeg logs its errors too ("moov atom not found" ahead
  of the command's own line naming the file it cannot read): fatal ones only. An explicit
  --verbosity (or either variable) is left alone."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
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


_OVERRIDE = re.compile(r"--?(?:no)?config\.([^=]+)")


def _overridden_fields(argv: list[str]) -> list[str]:
  """The fields `argv` overrides (`--config.train.steps=5`, `--noconfig.quick`), in order."""
  return [match.group(1) for match in map(_OVERRIDE.match, argv) if match]


def config_arguments(argv: list[str]) -> list[str]:
  """`--config=` and its `--config.<field>=` overrides as `argv` gives them, quoted for a shell:
  what another command of the project is given to build the same config (the evaluation a
  conversion prints)."""
  arguments = [f"--config={_config_spec(argv)}"]
  for index, arg in enumerate(argv[1:], start=1):
    if _OVERRIDE.match(arg):
      value_apart = ("=" not in arg and index + 1 < len(argv)
                     and not argv[index + 1].startswith("-"))  # `--config.x 5`
      arguments.append(f"{arg}={argv[index + 1]}" if value_apart else arg)
  return list(map(shlex.quote, arguments))


def _unknown_override(default: ConfigDict, argv: list[str]) -> str | None:
  """The first `--config.<field>=` override in `argv` that names no field of the config file's
  `default`, as the line that says so; None if there is none."""
  from vssjax import configs_lib  # pylint: disable=g-import-not-at-top  (fast --help)

  for field in _overridden_fields(argv):
    problem = configs_lib.unknown_field(default, field)
    if problem:
      return f"--config.{field}: {problem}"
  return None


def _is_numbers(value: Any) -> bool:
  return (isinstance(value, tuple) and bool(value)
          and all(isinstance(v, (int, float)) for v in value))


def _text_in_a_tuple_of_numbers(default: ConfigDict, parsed: ConfigDict,
                                argv: list[str]) -> str | None:
  """The first override that put text into a tuple of numbers, or gave a tuple Python cannot
  read, as the line that says so; None if there is none. ml_collections keeps a tuple it cannot
  parse as text (`--config.model.backbone_overrides.depths=(1,a)` became ('(1,a)',)), which then
  failed deep in the run with a TypeError traceback; a field whose default is () says no more of
  the type it holds than that text."""
  for field in _overridden_fields(argv):
    was, now = config_path.get_value(field, default), config_path.get_value(field, parsed)
    if not isinstance(now, tuple) or not any(isinstance(v, str) for v in now):
      continue
    if _is_numbers(was):
      example = ",".join(map(str, was))
      return (f"--config.{field}={now!r}: text in a tuple of numbers (the config has {was!r}); "
              f"write numbers, e.g. --config.{field}='({example})'")
    if len(now) == 1 and now[0].lstrip().startswith("("):  # the whole value, kept as text
      problem = (f"--config.{field}={now[0]}: not a tuple Python can read (the config has "
                 f"{was!r}); quote any text in it")
      quoted = _words_quoted(now[0])
      return problem + (f", e.g. --config.{field}=\"{quoted}\"" if _readable(quoted) else
                        " ('text')")
  return None


def _words_quoted(text: str) -> str:
  """`text` with its bare words quoted (`((kernel,fsdp),)` -> `(('kernel','fsdp'),)`; numbers,
  True, False and None as they are): the user's own value, as Python reads a tuple of text."""
  def quoted(word: re.Match) -> str:
    return word[0] if word[0] in ("True", "False", "None") else f"'{word[0]}'"
  return re.sub(r"(?<![\w.'\"])[A-Za-z_][^,()'\"\s]*", quoted, text)


def _readable(text: str) -> bool:
  """Whether Python reads `text` as a literal (a quoted suggestion worth showing)."""
  try:
    ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return False
  return True


def parse_config_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run`'s default), with the --config mistakes that ml_collections
  does not report in one line said so: a config file that does not exist (it defers that error to
  the config's first use, deep into the run), a bad `:arg` (a flag error around the config's
  traceback), an override that names no field (an AttributeError or KeyError out of the parser,
  with its traceback) and one that put text into a tuple of numbers. Any other flag error is one
  line too, instead of absl's two."""
  spec = _config_spec(argv)
  if spec is not None and os.path.isdir(spec.partition(":")[0]):
    _fail(f"--config={spec}: a directory; name a config file in it (configs/<method>/<dataset>_"
          "<backbone>.py)")
  if spec is not None and not os.path.isfile(spec.partition(":")[0]):
    _fail(f"--config={spec}: no such file (a relative path starts at {os.getcwd()})")
  default = None
  if spec is not None:  # a bad `:arg`, which the flag parser would wrap with its traceback
    from vssjax import configs_lib  # pylint: disable=g-import-not-at-top  (fast --help)
    try:
      default = configs_lib.load_config_file(spec)
    except SetupError as error:
      _fail(f"--config={spec}: {error}")
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as error:  # absl's "FATAL Flags parsing error: ..." and a usage line
    _fail(_flag_error_line(default, str(error)))
  except (AttributeError, KeyError):
    problem = _unknown_override(default, argv) if default is not None else None
    if not problem:
      raise  # not a misspelt field: a bug, e.g. in the config file
    _fail(problem)
  problem = (_text_in_a_tuple_of_numbers(default, flags.FLAGS["config"].value, argv)
             if default is not None else None)
  if problem:
    _fail(problem)
  return remaining


def _flag_error_line(default: ConfigDict | None, message: str) -> str:
  """absl's message for a flag given a value it cannot take (`--mode=tran`, a missing --workdir)
  on one line; an override's (`--config.train.steps=five`: "invalid literal for int() with base
  10: 'five'") also says what the field takes and holds, as the message names a Python call."""
  message = " ".join(message.split()).rstrip(".")
  override = re.match(r"flag --config\.([^=]+)=", message)
  if not override or default is None:
    return f"{message} (--helpfull lists the flags)"
  field = override.group(1)
  value = config_path.get_value(field, default)
  kind = type(value).__name__
  article = "an" if kind[0] in "aeiou" else "a"
  return f"{message}: config.{field} is {article} {kind} (the config has {value!r})"
