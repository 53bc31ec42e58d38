r"""Command line entry point.

  python -m vssjax.main --config=configs/<method>/<dataset>_<backbone>.py[:arg] --workdir=DIR \
      --mode=train|eval|infer|bench [--config.train.steps=100] [--input=VIDEO_OR_FRAME_DIR] \
      [--step=N] [--compilation_cache_dir=DIR]

Kept short on purpose: every mode is a library function that tests call directly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from absl import app, flags
from ml_collections import config_flags

from vssjax.command_line import (interrupt_in_one_line, parse_config_flags, path_flag,
                                 quiet_routine_logs, refuse_arguments, user_errors_in_one_line)
from vssjax.errors import SetupError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/segformer/synthetic_mitb0.py[:quick].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "infer", "bench"], "What to do.")
_INPUT = flags.DEFINE_string(
    "input", None, "--mode=infer: a video file, a folder of frames (or of videos, each predicted "
    "on its own), or one image.")
_STEP = flags.DEFINE_integer(
    "step", None, "--mode=eval|infer: the checkpoint of this training step (default: the latest; "
    "the workdir keeps the last train.keep_checkpoints).")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Start JAX's multi-process runtime: auto = when a cluster (TPU pod, SLURM, Open MPI, "
    "JAX_COORDINATOR_ADDRESS) is detected.")
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", "~/.cache/vssjax/xla",
    "JAX's persistent compilation cache: programs compiled by one run load in the next (the README "
    "demo's training and evaluation: 110 s cold, 81 s warm). '' turns it off; "
    "JAX_COMPILATION_CACHE_DIR, if set, wins. Not used by --mode=bench, which times the compiles.")
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


def _interrupted(mode: str, workdir: str) -> str:
  """The line a Ctrl-C that ends the run prints: one while it loads JAX or the data, initializes
  or restores the state, evaluates or infers, or a second one in the training steps (the first
  checkpoints and stops there, `StopSignal`, the training step's compilation included: it is part
  of the first step). Training names the step a re-run resumes from, read once the checkpointer
  has closed: a second Ctrl-C during a save has Orbax log that the save failed, though it
  completed."""
  if mode != "train":
    return f"interrupted during --mode={mode}"
  from vssjax.train.checkpoint import complete_steps  # pylint: disable=g-import-not-at-top
  steps = complete_steps(workdir)
  resumes = (f"resumes from its last complete checkpoint, step {steps[-1]}" if steps else
             "starts afresh: it holds no complete checkpoint")
  return f"interrupted during --mode=train; re-running it in {workdir} {resumes}"


# What lowers a mode's need for device memory, said when a program does not fit.
_MEMORY_SETTINGS = {
    "train": ("--config.data.batch_size (clips a step, over all devices), the crop "
              "(--config.data.train_transform.crop_size) or the compute dtype "
              "(--config.model.dtype=bfloat16), recompute the backbone's activations in the "
              "backward pass (--config.model.remat=nothing_saveable), or keep the batch per "
              "update with fewer clips a step (--config.optim.accumulate_steps, docs/scaling.md)"),
    "eval": ("the frames' size (--config.data.eval_transform.scale), or predict them in windows "
             "(--config.data.eval_transform.slide_crop and slide_stride)"),
    "bench": ("--config.bench.batch_sizes, --config.bench.input_size or the train step's "
              "--config.data.batch_size, or leave the train step out "
              "(--config.bench.train_step=False); any rows measured before it are in the workdir's "
              "bench.md"),
}
_MEMORY_SETTINGS["infer"] = _MEMORY_SETTINGS["eval"]


@contextlib.contextmanager
def out_of_memory_in_one_line(mode: str):
  """XLA running out of device memory, compiling or running a program of `mode`, as a
  `SetupError` that keeps XLA's line (how much it asked for) and names the settings that lower
  the need: the traceback through the step or the bench says nothing a user can change."""
  import jax  # pylint: disable=g-import-not-at-top

  try:
    yield
  except jax.errors.JaxRuntimeError as error:
    first_line = str(error).split("\n", 1)[0]
    if "RESOURCE_EXHAUSTED" not in first_line or "memory" not in first_line.lower():
      raise
    raise SetupError(f"--mode={mode} ran out of device memory ({first_line}); lower "
                     f"{_MEMORY_SETTINGS[mode]}") from error


def end_as_stopped(signum: int | None) -> None:
  """After training stopped on request, checkpointed and cleaned up: ends the run as `signum`
  would have, not with status 0, which says it completed. Ctrl-C: its KeyboardInterrupt (the
  line `_interrupted` says; Python then ends by SIGINT, a shell reports 130 and a loop running
  the command stops); SIGTERM: status 143 (a scheduler sees the job unfinished, and one that runs
  it again resumes it). No signal: nothing."""
  if signum == signal.SIGINT:
    raise KeyboardInterrupt
  if signum is not None:
    sys.exit(128 + signum)


def _check_mode_flags() -> None:
  """The flags that only some modes read, given to another (ignored without a word, e.g. an
  evaluation of the split instead of the --input a user meant to infer), or missing."""
  mode = _MODE.value
  if _STEP.value is not None and mode not in ("eval", "infer"):
    raise SetupError(f"--step picks the checkpoint of --mode=eval or infer, not --mode={mode}")
  if _INPUT.value and mode != "infer":
    raise SetupError(f"--input is read by --mode=infer only, not --mode={mode}")
  if mode == "infer" and not _INPUT.value:
    raise SetupError("--mode=infer needs --input=VIDEO_OR_FRAME_DIR")


@user_errors_in_one_line
def main(argv):
  """Runs the mode; a `SetupError` (a wrong flag, config, workdir or environment) or a
  `DataError` (a bad file of the dataset or input) ends the run with its message alone, and so
  does a Ctrl-C, with the line `_interrupted` says."""
  refuse_arguments(argv)
  _check_mode_flags()
  workdir = path_flag("workdir", _WORKDIR.value)
  interrupt_in_one_line(lambda: _interrupted(_MODE.value, workdir))
  quiet_routine_logs()
  # Imported here so `--help` answers without loading JAX.
  from vssjax import parallel  # pylint: disable=g-import-not-at-top
  if _MODE.value == "bench":
    # Before JAX takes the device: the PyTorch reference (bench.torch) runs on it in this process,
    # and JAX would otherwise reserve 75% of its memory up front (bench_suite's runs set it too).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  # Before anything touches a device; only training stops at an agreed step on SIGTERM.
  parallel.initialize_distributed(_DISTRIBUTED.value, preemption_service=_MODE.value == "train")
  if _MODE.value != "bench":  # bench times the compiles themselves
    use_compilation_cache(_COMPILATION_CACHE_DIR.value)
  from vssjax.train import loop  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  with out_of_memory_in_one_line(_MODE.value):
    if _MODE.value == "train":
      if loop.train_and_evaluate(config, workdir) is None:  # stopped early, checkpointed
        from vssjax.train import preemption  # pylint: disable=g-import-not-at-top
        end_as_stopped(preemption.stop_request_signal())
    elif _MODE.value == "eval":
      loop.evaluate_checkpoint(config, workdir, _STEP.value)
    elif _MODE.value == "infer":
      from vssjax import infer  # pylint: disable=g-import-not-at-top
      infer.run(config, workdir, _INPUT.value, step=_STEP.value)
    elif _MODE.value == "bench":
      from vssjax import bench  # pylint: disable=g-import-not-at-top
      bench.run(config, workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_config_flags)
