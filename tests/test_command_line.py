"""Every command reports a user's error (`SetupError`, `DataError`, a --config mistake) in one
message, without a traceback (`vssjax.command_line`)."""
import os
import signal
import subprocess
import sys
import time

import jax
import pytest
from absl import flags, logging

from tests.conftest import REPO
from vssjax.command_line import (config_arguments, path_flag, quiet_routine_logs,
                                 user_errors_in_one_line)
from vssjax.errors import DataError, SetupError, TrainingDiverged


def _raising(error):
  @user_errors_in_one_line
  def main(argv):
    del argv
    raise error
  return main


def test_setup_and_data_errors_exit_with_their_message_and_notes():
  error = SetupError("checkpoint does not match the model:\nmissing keys (1)")
  error.add_note("while converting /w/model.pth")
  with pytest.raises(SystemExit) as info:
    _raising(error)([])
  assert info.value.code == ("error: checkpoint does not match the model:\nmissing keys (1)\n"
                             "while converting /w/model.pth")
  with pytest.raises(SystemExit, match=r"^error: /d/a\.png: corrupt image$"):
    _raising(DataError("/d/a.png", "corrupt image"))([])
  # Read by a data-loader worker, it comes with Grain's note on the traceback it shortened.
  error = DataError("/d/a.png", "corrupt image")
  error.add_note("--------------------\nFor simplicity, Grain has removed its internal frames from "
                 "the traceback of the following exception.")
  with pytest.raises(SystemExit, match=r"^error: /d/a\.png: corrupt image$"):
    _raising(error)([])
  # A diverged training is the user's to fix too (learning rate, clipping): its step, in one line.
  with pytest.raises(SystemExit, match=r"^error: non-finite loss nan at step 8; stop"):
    _raising(TrainingDiverged("non-finite loss nan at step 8; stopping"))([])


def test_an_error_raised_while_jax_traces_keeps_its_own_notes_only():
  """A setting checked at trace time (ETC's pool against its feature maps) reaches the user through
  `jax.jit`, which adds a note on the traceback it shortened; that note is not the user's."""
  @jax.jit
  def traced(x):
    error = SetupError("method.multi_frame_pool=16: leaves none")
    error.add_note("while tracing the train step")
    raise error

  @user_errors_in_one_line
  def main(argv):
    del argv
    traced(jax.numpy.zeros(2))

  with pytest.raises(SystemExit) as info:
    main([])
  assert info.value.code == ("error: method.multi_frame_pool=16: leaves none\n"
                             "while tracing the train step")


def test_a_path_flag_has_its_tilde_expanded_and_may_not_be_empty(monkeypatch):
  """`--workdir=~/run`: no shell expands a ~ after `=`, and a folder named `~` was made in the
  current one; `--workdir=$RUN` with RUN unset put a run's files in the current folder."""
  monkeypatch.setenv("HOME", "/home/me")
  assert path_flag("workdir", "~/run") == "/home/me/run"
  assert path_flag("workdir", "gs://bucket/run") == "gs://bucket/run"
  with pytest.raises(SetupError, match=r"^--workdir is empty \(an unset shell variable\?\)"):
    path_flag("workdir", "")


def test_an_explicit_verbosity_and_tf_log_level_are_left_alone(monkeypatch):
  """`--verbosity=1` (or TF_CPP_MIN_LOG_LEVEL, OPENCV_FFMPEG_LOGLEVEL) is how a user asks for the
  routine logs while debugging a run: the commands quiet them by default only."""
  monkeypatch.setattr(flags.FLAGS["verbosity"], "present", 1)
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
  monkeypatch.setenv("OPENCV_FFMPEG_LOGLEVEL", "32")  # AV_LOG_INFO
  before = logging.get_verbosity()
  try:
    logging.set_verbosity(logging.DEBUG)
    quiet_routine_logs()
    assert logging.get_verbosity() == logging.DEBUG
  finally:
    logging.set_verbosity(before)
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
  assert os.environ["OPENCV_FFMPEG_LOGLEVEL"] == "32"


def test_other_exceptions_keep_their_traceback():
  """Anything else is a bug: it propagates as it is."""
  with pytest.raises(KeyError):
    _raising(KeyError("x"))([])


_PRINTING_MORE_THAN_READ = """
from vssjax.command_line import user_errors_in_one_line

@user_errors_in_one_line
def main():
  for i in range(100_000):
    print("line", i)

main()
"""


def test_output_read_in_part_ends_the_command_quietly():
  """`python -m vssjax.op_profile DIR | head` ended in a BrokenPipeError's traceback."""
  command = subprocess.Popen([sys.executable, "-c", _PRINTING_MORE_THAN_READ], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert command.stdout.readline() == "line 0\n"
  command.stdout.close()  # as `head -1` does
  assert command.stderr.read() == "" and command.wait(timeout=60) == 141


_COMPILING_UNTIL_INTERRUPTED = """
import jax, jax.numpy as jnp
from vssjax.command_line import interrupt_in_one_line

interrupt_in_one_line(lambda: "interrupted")
jax.config.update("jax_enable_compilation_cache", False)  # each program compiled, never loaded

def deep(x, w):
  for i in range(200):
    x = jnp.sin(x @ w) + i
  return x

print("compiling", flush=True)
for rows in range(1, 1000):  # a new shape, a new compilation
  jax.jit(deep).lower(jnp.ones((rows, 64)), jnp.ones((64, 64))).compile()
"""


@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_a_ctrl_c_during_an_xla_compilation_ends_by_sigint_in_one_line():
  """It returns while XLA's compiler threads still run, and the interpreter's teardown under them
  crashed: "Fatal Python error: Segmentation fault", status 139 instead of 130 (a first run, with
  nothing in the compilation cache, interrupted as it compiles). Compiled as a user's run
  compiles: the suite's faster settings (conftest.py) did not crash."""
  users = {name: value for name, value in os.environ.items()
           if name not in ("XLA_FLAGS", "JAX_DISABLE_MOST_OPTIMIZATIONS")}
  process = subprocess.Popen([sys.executable, "-c", _COMPILING_UNTIL_INTERRUPTED], cwd=REPO,
                             env=users, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert process.stdout.readline() == "compiling\n"
  time.sleep(2.0)  # into a compilation: they take nearly all of the loop's time
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == -signal.SIGINT, stderr
  assert stderr == "interrupted\n"


@pytest.mark.parametrize("command, expected", [
    (["data_pipelines.build", "--source=cityscapes", "--manual_dir=/nonexistent/cityscapes"],
     "error: --manual_dir /nonexistent/cityscapes is not a folder holding the dataset's copy: "
     "manual_dir = a folder holding gtFine/"),
    (["data_pipelines.build", "--source=camvid", "--manual_dir=OUT_EMPTY"],
     "error: --manual_dir OUT_EMPTY is not a folder holding the dataset's copy"),
    (["data_pipelines.make_vtest_pseudo", "--video=/nonexistent/vtest.avi", "--out_dir=OUT_EMPTY",
      "--scale=0"], "error: --scale must be > 0 and --chunk >= 1, got 0.0 and 60"),
    (["data_pipelines.make_vtest_pseudo", "--video=/nonexistent/vtest.avi", "--out_dir=OUT_FULL"],
     "error: --out_dir OUT_FULL is not empty (an earlier build?)"),
    (["data_pipelines.make_vtest_pseudo", "--video=/nonexistent/vtest.avi", "--out_dir=OUT"],
     "error: /nonexistent/vtest.avi: cannot read file (no such file)"),
    (["data_pipelines.bench", "--config=configs/segformer/vtest_pseudo_mitb0.py:root=OUT",
      "--config.data.backend=files"],
     "error: OUT/train: missing; build vtest-pseudo first"),
    (["vssjax.convert", "--config=configs/segformer/synthetic_mitb0.py:quick",
      "--checkpoint=/nonexistent/model.pth", "--workdir=OUT"],
     "error: /nonexistent/model.pth: no such file or directory"),
    (["vssjax.convert", "--config=configs/segformer/synthetic_mitb0.py:quick",
      "--config.model.backbon=b1", "--checkpoint=/nonexistent/model.pth", "--workdir=OUT"],
     "error: --config.model.backbon: the config has no field model.backbon; did you mean "
     "model.backbone?"),
    (["vssjax.convert", "--config=configs/segformer/synthetic_mitb0.py:quick",
      "--checkpoint=/nonexistent/model.pth", "--workdir="],
     "error: --workdir is empty (an unset shell variable?): name a folder"),
    (["vssjax.convert", "--config=configs/segformer/synthetic_mitb0.py:quick", "--checkpoint=",
      "--workdir=OUT"],
     "error: --checkpoint is empty (an unset shell variable?): name a checkpoint file or folder"),
    (["vssjax.tradeoff_plot", "--out=OUT/plot.pgn", "A=OUT_EMPTY/../results.json"],
     "error: OUT/plot.pgn: cannot write the plot: unknown file extension: .pgn"),
    (["vssjax.eval.compare", "SegFormer=OUT/results.json"],
     "error: SegFormer: cannot read OUT/results.json as a results.json"),
    (["vssjax.eval.compare", "A=OUT_EMPTY/../results.json", "--out=OUT/missing/table.md"],
     "error: --out=OUT/missing/table.md: cannot write it: No such file or directory"),
    (["vssjax.eval.host_bench", "--config=configs/segformer/synthetic_mitb0.py:quik"],
     "error: --config=configs/segformer/synthetic_mitb0.py:quik: unknown config argument"),
    (["vssjax.eval.host_bench", "--config=configs/segformer/synthetic_mitb0.py:quick",
      "--device_ms=0,fast"],
     "error: --device_ms=0,fast: a comma-separated list of float numbers"),
    (["data_pipelines.bench", "--config=configs/segformer/synthetic_mitb0.py:quick", "workers=2"],
     "error: unexpected arguments ['workers=2']: every setting is a --flag=value"),
    (["vssjax.bench_suite", "--workdir=OUT", "--out=OUT/report.md", "--only=segformer_b1"],
     "error: --only: unknown entries ['segformer_b1']; known: ["),
    (["vssjax.bench_suite", "--workdir=OUT"],
     "error: --workdir and --out are required"),
])
def test_commands_report_a_users_error_in_one_line(command, expected, tmp_path):
  """(`vssjax.main`'s own cases are in test_main.py.)"""
  (tmp_path / "empty").mkdir()
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "train").mkdir()
  (tmp_path / "results.json").write_text('{"frames_per_s": 1.0, "mIoU": 0.5}')
  places = {"OUT_EMPTY": tmp_path / "empty", "OUT_FULL": tmp_path / "full", "OUT": tmp_path / "out"}

  def placed(text):
    for name, path in places.items():
      text = text.replace(name, str(path))
    return text

  command = [placed(arg) for arg in command]
  result = subprocess.run([sys.executable, "-m", *command], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 1, result.stdout + result.stderr
  lines = result.stderr.splitlines()
  expected = placed(expected)
  assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
  assert not (tmp_path / "out").exists()  # a failed run leaves no half-made output behind


def test_config_arguments_repeat_the_config_and_its_overrides_for_another_command():
  """What `vssjax.convert` prints for the evaluation: an override given with its value apart
  (`--config.model.backbone b0`) kept its flag and lost its value."""
  argv = ["convert", "--config=configs/x.py:quick", "--checkpoint=w.pth", "--config.model.backbone",
          "b0", "--config.seed=3", "--noconfig.eval.overlay_video", "--workdir=a b"]
  assert config_arguments(argv) == ["--config=configs/x.py:quick", "--config.model.backbone=b0",
                                    "--config.seed=3", "--noconfig.eval.overlay_video"]
  assert config_arguments(["m", "--config", "c.py", "--config.data.vspw.root=/my data"]) == [
      "--config=c.py", "'--config.data.vspw.root=/my data'"]
