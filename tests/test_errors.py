"""A user's errors (`SetupError`, `DataError`) end every command with one message, no traceback."""
import subprocess
import sys

import pytest

from tests.conftest import REPO
from vssjax.errors import DataError, SetupError, user_errors_in_one_line


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


def test_other_exceptions_keep_their_traceback():
  """Anything else is a bug: it propagates as it is."""
  with pytest.raises(KeyError):
    _raising(KeyError("x"))([])


@pytest.mark.parametrize("command, expected", [
    (["data_pipelines.build", "--source=cityscapes", "--manual_dir=/nonexistent/cityscapes"],
     "error: --manual_dir /nonexistent/cityscapes is not a folder; it is the dataset's copy: "
     "manual_dir = a folder holding gtFine/"),
    (["data_pipelines.make_vtest_pseudo", "--video=/nonexistent/vtest.avi", "--out_dir=OUT"],
     "error: /nonexistent/vtest.avi: cannot read file (no such file)"),
    (["data_pipelines.bench", "--config=configs/segformer/vtest_pseudo_mitb0.py:root=OUT",
      "--config.data.backend=files"],
     "error: OUT/train: missing; build vtest-pseudo first"),
    (["vssjax.convert", "--config=configs/segformer/synthetic_mitb0.py:quick",
      "--checkpoint=/nonexistent/model.pth", "--workdir=OUT"],
     "error: /nonexistent/model.pth: no such file or directory"),
])
def test_commands_report_a_users_error_in_one_line(command, expected, tmp_path):
  """(`vssjax.main`'s own cases are in test_main.py.)"""
  command = [arg.replace("OUT", str(tmp_path / "out")) for arg in command]
  result = subprocess.run([sys.executable, "-m", *command], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 1, result.stdout + result.stderr
  lines = result.stderr.splitlines()
  expected = expected.replace("OUT", str(tmp_path / "out"))
  assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
  assert not (tmp_path / "out").exists()  # a failed run leaves no half-made output behind
