"""How the bench times a program: until its results are ready, and until its call returned."""

import time

import numpy as np

from vssjax import bench_rows
from vssjax.bench_rows import Row, median_timing, report


class _Running:
  """A result still being computed, as a JAX array whose device work is queued: waiting for it
  takes `seconds`."""

  def __init__(self, seconds: float):
    self.seconds = seconds

  def block_until_ready(self):
    time.sleep(self.seconds)
    return self


def test_dispatch_is_the_time_until_the_call_returned():
  calls = []

  def device_bound():
    calls.append(1)
    return _Running(0.2)

  timing = median_timing(device_bound, warmup=1, repeats=3)
  assert len(calls) == 4  # the warm-up call is not timed
  assert timing.seconds >= 0.2 and timing.dispatch_seconds < 0.1

  def host_bound():
    time.sleep(0.2)
    return np.zeros(3)  # ready when returned

  timing = median_timing(host_bound, warmup=0, repeats=2)
  assert timing.dispatch_seconds >= 0.2 and timing.seconds >= timing.dispatch_seconds


def test_a_row_reports_its_dispatch_when_it_has_one(capsys):
  report(Row("forward", "float32", 1, 1, 2.5, 3.0, 333.3, 1.0, 10.0, 0.25))
  report(Row("torch_forward", "float32", 1, 1, None, 4.0, 250.0, None, None))
  assert capsys.readouterr().out.splitlines() == [
      "bench: forward float32 batch 1: compiled in 2.5 s, 3.00 ms/call (dispatch 0.25 ms)",
      "bench: torch_forward float32 batch 1: 4.00 ms/call"]


def test_markdown_table_and_missing_figures():
  assert bench_rows.figure(None, ".1f") == "n/a"
  assert bench_rows.figure(0.125, ".0%") == "12%"
  assert bench_rows.markdown_table(["a", "b"], [["1", "n/a"], ["2", "3"]]) == (
      "| a | b |\n|---|---|\n| 1 | n/a |\n| 2 | 3 |")
