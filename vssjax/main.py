"""Command line entry point.

  python -m vssjax.main --config=configs/<method>/<dataset>_<backbone>.py[:arg] --workdir=DIR \
      --mode=train|eval|infer|bench [--config.train.steps=100] [--input=VIDEO_OR_FRAME_DIR] \
      [--compilation_cache_dir=DIR]

Kept short on purpose: every mode is a library function that tests call directly.
"""

from __future__ import annotations

import os
import re
import sys
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from vssjax.errors import SetupError, user_errors_in_one_line

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/segformer/synthetic_mitb0.py[:quick].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "infer", "bench"], "What to do.")
_INPUT = flags.DEFINE_string("input", None, "--mode=infer: a video file or a directory of frames.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Start JAX's multi-process runtime: auto = when a cluster (TPU pod, SLURM, Open MPI, "
    "JAX_COORDINATOR_ADDRESS) is detected.")
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", "~/.cache/vssjax/xla",
    "JAX's persistent compilation cache: programs compiled by one run load in the next (the README "
    "demo: 110 s cold, 81 s warm). '' turns it off; JAX_COMPILATION_CACHE_DIR, if set, wins. "
    "Not used by --mode=bench, which times the compiles.")
flags.mark_flags_as_required(["config", "workdir"])


def use_compilation_cache(directory: str) -> None:
  """Points JAX's persistent compilation cache at `directory`/jax-<version> ('' = off), unless the
  environment (JAX_COMPILATION_CACHE_DIR) already chose one. Before the first compile.

  One subdirectory per jax version: an executable is native code for the XLA that compiled it,
  and an upgrade then starts a fresh cache (the old one can be deleted) instead of mixing them.
  """
  import jax  # pylint: disable=g-import-not-at-top

  if directory and not jax.config.jax_compilation_cache_dir:
    path = os.path.join(os.path.expanduser(directory), f"jax-{jax.__version__}")
    jax.config.update("jax_compilation_cache_dir", path)


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


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run`'s default), with the --config mistakes that ml_collections
  does not report in one line said so: a config file that does not exist (it defers that error to
  the config's first use, deep into the run), a bad `:arg` (a flag error around the config's
  traceback) and an override that names no field (an AttributeError or KeyError out of the
  parser, with its traceback)."""
  spec = _config_spec(argv)
  if spec is not None and not os.path.isfile(spec.partition(":")[0]):
    _fail(f"--config={spec}: no such file (a relative path starts at {os.getcwd()})")
  if spec is not None:  # a bad `:arg`, which the flag parser would wrap with its traceback
    from vssjax import configs_lib  # pylint: disable=g-import-not-at-top  (fast --help)
    try:
      configs_lib.load_config_file(spec)
    except SetupError as error:
      _fail(f"--config={spec}: {error}")
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError):
    problem = _unknown_override(spec, argv)
    if problem is None:
      raise  # not a misspelt field: a bug, e.g. in the config file
    _fail(problem)


@user_errors_in_one_line
def main(argv):
  """Runs the mode; a `SetupError` (a wrong flag, config, workdir or environment) or a
  `DataError` (a bad file of the dataset or input) ends the run with its message alone."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if not flags.FLAGS["verbosity"].present:
    # Orbax and TFDS log every routine step at INFO; progress lines are printed instead.
    logging.set_verbosity(logging.WARNING)
  # Imported here so `--help` answers without loading JAX.
  from vssjax import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed(_DISTRIBUTED.value)  # before anything touches a device
  if _MODE.value != "bench":  # bench times the compiles themselves
    use_compilation_cache(_COMPILATION_CACHE_DIR.value)
  from vssjax.train import loop  # pylint: disable=g-import-not-at-top

  config, workdir = _CONFIG.value, _WORKDIR.value
  if _MODE.value == "train":
    loop.train_and_evaluate(config, workdir)
  elif _MODE.value == "eval":
    loop.evaluate_checkpoint(config, workdir)
  elif _MODE.value == "infer":
    if not _INPUT.value:
      raise app.UsageError("--mode=infer needs --input=VIDEO_OR_FRAME_DIR")
    from vssjax import infer  # pylint: disable=g-import-not-at-top
    infer.run(config, workdir, _INPUT.value)
  elif _MODE.value == "bench":
    from vssjax import bench  # pylint: disable=g-import-not-at-top
    bench.run(config, workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
