"""metrics.jsonl: one line per log step, written by process 0; a resume drops the lines of the steps
it trains again."""

import json
import os
import sys
import types

import jax
import pytest
from etils import epath

from vssjax.train.metric_writer import MetricWriter, drop_lines_after_step


def _steps(path):
  return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_each_write_appends_a_line_of_floats_with_its_step_and_time(tmp_path):
  writer = MetricWriter(tmp_path)
  writer.write(1, {"loss": jax.numpy.float32(2.5), "lr": 0.1})
  writer.write(2, {"loss": 1.5, "lr": 0.05})
  writer.close()
  first, second = map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
  assert first["step"] == 1 and first["loss"] == 2.5 and first["lr"] == pytest.approx(0.1)
  assert isinstance(first["loss"], float) and second["time"] >= first["time"] > 0


def test_other_processes_write_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  writer = MetricWriter(tmp_path)
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert not (tmp_path / "metrics.jsonl").exists()


def test_a_resume_drops_later_steps_and_a_line_cut_short_keeping_the_file_otherwise(tmp_path):
  path = epath.Path(tmp_path) / "metrics.jsonl"
  lines = [json.dumps({"step": step, "loss": 1.0}) for step in (1, 2, 3, 4)]
  path.write_text("\n".join(lines) + '\n{"step": 5, "lo')  # killed mid-write
  drop_lines_after_step(path, 2)
  assert _steps(path) == [1, 2]
  os.utime(path, (1, 1))
  drop_lines_after_step(path, 2)  # nothing to drop: not rewritten
  assert os.stat(path).st_mtime == 1 and _steps(path) == [1, 2]
  drop_lines_after_step(epath.Path(tmp_path) / "absent.jsonl", 2)  # no file: nothing to do
  assert not (tmp_path / "absent.jsonl").exists()


def test_a_resumed_writer_has_tensorboard_hide_only_the_steps_trained_again(tmp_path,
                                                                           monkeypatch):
  """Resumed from step 10, TensorBoard must purge steps 11 on: a purge step of 10 would hide the
  checkpoint's own logged step 10, which this run does not log again."""
  made = []

  class FakeSummaryWriter:

    def __init__(self, logdir, purge_step=None):
      made.append((logdir, purge_step))

    def add_scalar(self, name, value, step):
      pass

    def close(self):
      pass

  monkeypatch.setitem(sys.modules, "tensorboardX",
                      types.SimpleNamespace(SummaryWriter=FakeSummaryWriter))
  MetricWriter(tmp_path, starts_after_step=10).close()
  MetricWriter(tmp_path).close()
  assert made == [(str(tmp_path / "tensorboard"), 11), (str(tmp_path / "tensorboard"), None)]
