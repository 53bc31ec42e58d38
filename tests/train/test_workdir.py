"""The training workdir: made with a one-line error where it cannot be, held by one run at a
time, left as it was by a run that fails at its start."""
import os
import subprocess
import sys

import pytest

from vssjax.errors import SetupError
from vssjax.train import workdir


@pytest.mark.parametrize("under", ["", "sub"])
def test_a_workdir_that_is_a_file_is_one_error_naming_it(tmp_path, under):
  """`--workdir` given a file (or a path under one) was an OSError traceback from mkdir."""
  (tmp_path / "run").write_text("")
  with pytest.raises(SetupError, match=r"--workdir=.*run.* cannot be made a directory \("):
    workdir.make_workdir(str(tmp_path / "run" / under))


def test_a_second_training_run_in_a_locked_workdir_is_one_error(tmp_path):
  """Two runs in one workdir (a job submitted twice) interleaved their checkpoints and log lines
  silently. The lock is the OS's: it goes with its holder, and a later run takes it."""
  with workdir.workdir_lock(str(tmp_path)):
    held = (tmp_path / workdir.LOCK_FILE).read_text()
    other = subprocess.run(
        [sys.executable, "-c", "import sys; from vssjax.train import workdir\n"
         "with workdir.workdir_lock(sys.argv[1]): pass", str(tmp_path)],
        capture_output=True, text=True, check=False)
    assert other.returncode == 1
    assert (f"SetupError: another training run (pid {held}) is using --workdir={tmp_path}"
            in other.stderr)
  with workdir.workdir_lock(str(tmp_path)):  # released
    pass


def test_the_lock_file_holds_only_the_current_runs_pid(tmp_path):
  """The lock file outlives its runs (the OS lock goes, the file stays): each run that takes it
  replaces the pid there, else the error a second run prints would name a pid that ended long
  ago, or several run together."""
  (tmp_path / workdir.LOCK_FILE).write_text("4194999")  # an earlier run's
  for _ in range(2):  # a run, then the next one in the same workdir
    with workdir.workdir_lock(str(tmp_path)):
      assert (tmp_path / workdir.LOCK_FILE).read_text() == str(os.getpid())


def test_a_workdir_that_cannot_be_written_is_one_error_naming_it(tmp_path):
  """A read-only workdir (here: the lock file's name taken by a folder, which fails as root too)
  was a traceback from the first file training writes."""
  (tmp_path / workdir.LOCK_FILE).mkdir()
  with pytest.raises(SetupError, match=r"--workdir=.* cannot be written \(.*\.train\.lock\): "
                     "training writes"):
    with workdir.workdir_lock(str(tmp_path)):
      pass


def test_an_output_folder_that_cannot_be_written_is_one_error_naming_the_folder(tmp_path,
                                                                               monkeypatch):
  """Eval and infer write into a workdir that may be someone else's, read-only: checked before
  their work (as root every folder is writable, so the permission is simulated)."""
  readable_only = str(tmp_path / "shared")
  (tmp_path / "shared").mkdir()
  monkeypatch.setattr(os, "access", lambda path, mode: path != readable_only)
  for folder in (readable_only, f"{readable_only}/infer/sub"):  # the folder, or where it is made
    with pytest.raises(SetupError, match=rf"^{readable_only} is not writable, and the outputs "
                       "are written there: use a workdir of your own"):
      workdir.check_workdir_to_evaluate(readable_only, "the outputs", folder=folder)
  mine = tmp_path / "mine"
  mine.mkdir()
  workdir.check_workdir_to_evaluate(str(mine), "the outputs", folder=str(mine / "infer"))
  (mine / "infer").write_text("")  # writable, but no folder
  with pytest.raises(SetupError, match=r"infer is a file, not a folder, and the outputs are "):
    workdir.check_workdir_to_evaluate(str(mine), "the outputs", folder=str(mine / "infer"))
  assert workdir._write_problem("gs://bucket/run", "the outputs") is None  # the store's to refuse


def test_a_workdir_to_evaluate_that_is_missing_or_a_file_is_said_first(tmp_path, monkeypatch):
  """A typo under a folder of runs this user cannot write was told to copy the workdir it named
  (the permission simulated: root writes everywhere)."""
  monkeypatch.setattr(os, "access", lambda path, mode: False)
  with pytest.raises(SetupError, match=r"^the workdir .*typo does not exist: name the workdir"):
    workdir.check_workdir_to_evaluate(str(tmp_path / "typo"), "the outputs")
  (tmp_path / "a_file").write_text("")
  with pytest.raises(SetupError, match=r"^the workdir .*a_file is a file: name the workdir"):
    workdir.check_workdir_to_evaluate(str(tmp_path / "a_file"), "the outputs")


def test_a_workdir_on_object_storage_takes_no_lock(monkeypatch):
  """A single-host TPU VM trains into gs://...: no file lock exists there, and opening the lock
  file with the OS's open() would fail as an unwritable workdir."""
  def no_local_open(*args, **kwargs):
    raise AssertionError("the lock file was opened")

  monkeypatch.setattr("builtins.open", no_local_open)
  with workdir.workdir_lock("gs://bucket/run"):
    pass


def _fail_after_writing(run: str, *files: str) -> None:
  """A training run's workdir through a start that writes `files` (relative paths), then fails."""
  with pytest.raises(KeyboardInterrupt):
    with workdir.workdir_for_this_run(run), workdir.workdir_lock(run):
      for name in ("checkpoints/", *files):
        if name.endswith("/"):
          os.makedirs(os.path.join(run, name), exist_ok=True)
        else:
          with open(os.path.join(run, name), "w", encoding="utf-8") as f:
            f.write("{}")
      raise KeyboardInterrupt  # any error, a Ctrl-C included


def test_a_run_that_fails_at_its_start_leaves_no_workdir(tmp_path):
  """A missing torch checkpoint, or an initialisation out of memory, left a workdir holding a
  lock and an empty checkpoints/ (and config.json, from a failure at the first step)."""
  _fail_after_writing(str(tmp_path / "runs" / "a"), "config.json")
  assert not (tmp_path / "runs" / "a").exists()
  assert (tmp_path / "runs").is_dir()  # a parent it made is not the run's


def test_a_workdir_that_existed_keeps_what_it_held(tmp_path):
  (tmp_path / "notes.txt").write_text("mine")
  (tmp_path / "config.json").write_text("an earlier run's")
  _fail_after_writing(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["config.json", "notes.txt"]
  assert (tmp_path / "config.json").read_text() == "an earlier run's"


@pytest.mark.parametrize("written", ["metrics.jsonl", "checkpoints/2/"])
def test_a_run_that_wrote_a_log_line_or_a_checkpoint_keeps_its_workdir(tmp_path, written):
  """A run that failed later (one that diverged, say) keeps what it wrote."""
  _fail_after_writing(str(tmp_path / "run"), "config.json", written)
  assert (tmp_path / "run" / written).exists()
  assert (tmp_path / "run" / "config.json").exists()
