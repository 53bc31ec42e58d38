"""vssjax.train.profiling: a profiler trace of chosen training steps and the step's op table."""

import types

import jax
import jax.numpy as jnp
import pytest

from vssjax import op_profile
from vssjax.errors import SetupError
from vssjax.train import profiling


@pytest.mark.parametrize("steps", [(), (1, 1), (11, 15)])
def test_profile_steps_off_or_a_range_are_accepted(steps):
  profiling.check_profile_steps(steps)


@pytest.mark.parametrize("steps", [(0, 2), (3, 2), (5,), (1, 2, 3)])
def test_other_profile_steps_are_refused_naming_the_field(steps):
  with pytest.raises(SetupError, match=r"train\.profile_steps="):
    profiling.check_profile_steps(steps)


def _train(profiler, start, end, compiled=None):
  """A stand-in for the train loop: `profiler` around each of steps start+1..end."""
  step_fn = jax.jit(lambda x: jnp.tanh(x @ x.T))
  x = jnp.ones((128, 128))
  for step in range(start, end):
    with profiler.step(step + 1):
      y = step_fn(x)
    profiler.after_step(step + 1, y, compiled=compiled or (lambda: step_fn.lower(x).compile()))
  profiler.close()


def test_the_chosen_steps_are_traced_and_the_step_program_tabled(tmp_path, capsys):
  _train(profiling.StepProfiler(str(tmp_path), (2, 3), start=0, end=5), 0, 5)
  out = capsys.readouterr().out
  assert "profiling steps 2..3" in out and "trace of 2 steps" in out
  trace_dir = tmp_path / "profile" / "train" / "process_0"
  assert list(trace_dir.rglob("*.xplane.pb")) and list(trace_dir.rglob("*.trace.json.gz"))
  table = (tmp_path / "profile" / "train_step.md").read_text()
  assert table.startswith("# train step, steps 2..3")
  rows = [line for line in table.splitlines() if line.startswith("| ") and "ms/call" not in line]
  assert rows and all("jit(<lambda>)" in row for row in rows), table
  # The step's program is saved beside the trace: the table can be made again from the folder.
  assert table.split("\n", 1)[1] == op_profile.format_op_table(
      "", op_profile.ops_of_saved_trace(trace_dir)).split("\n", 1)[1]


def test_a_trace_the_reader_cannot_table_keeps_the_step_program(tmp_path, capsys, monkeypatch):
  """A GPU trace whose layout the reader does not know yet keeps the step's program beside it:
  the table can be made from the folder after a fix of the reader, without training again."""
  monkeypatch.setattr(jax.profiler.ProfileData, "from_file",
                      lambda path: types.SimpleNamespace(planes=[]))
  _train(profiling.StepProfiler(str(tmp_path), (1, 2), start=0, end=3), 0, 3)
  assert "no per-op table (LookupError" in capsys.readouterr().out
  monkeypatch.undo()  # the reader fixed
  ops = op_profile.ops_of_saved_trace(tmp_path / "profile" / "train" / "process_0")
  assert ops and all(op.source.startswith("jit(<lambda>)") for op in ops if op.source)


def test_a_range_is_clipped_to_the_run_and_one_outside_it_traces_nothing(tmp_path, capsys):
  _train(profiling.StepProfiler(str(tmp_path / "a"), (1, 9), start=3, end=5), 3, 5)
  assert "profiling steps 4..5" in capsys.readouterr().out  # a resumed run at step 3
  _train(profiling.StepProfiler(str(tmp_path / "b"), (1, 3), start=3, end=5), 3, 5)
  assert "none of them is among this run's steps 4..5; no trace" in capsys.readouterr().out
  assert not (tmp_path / "b" / "profile").exists()


def test_a_trace_cut_short_is_stopped_without_a_table(tmp_path, capsys):
  profiler = profiling.StepProfiler(str(tmp_path), (2, 4), start=0, end=4)
  _train(profiler, 0, 3)  # stopped (a signal, an error) after step 3 of 2..4
  assert "trace of 2 steps" in capsys.readouterr().out
  assert not (tmp_path / "profile" / "train_step.md").exists()
  jax.profiler.start_trace(str(tmp_path / "again"))  # the profiler is free again
  jax.profiler.stop_trace()


def test_a_table_that_cannot_be_made_is_said_and_training_goes_on(tmp_path, capsys):
  def unreadable():
    raise OSError("gs://bucket/run/profile: cannot list")

  _train(profiling.StepProfiler(str(tmp_path), (1, 2), start=0, end=3), 0, 3, unreadable)
  out = capsys.readouterr().out
  assert "trace of 2 steps" in out and "no per-op table (OSError" in out
  assert not (tmp_path / "profile" / "train_step.md").exists()
