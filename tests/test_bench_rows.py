"""How the bench times a program: until its results are ready, and until its call returned."""

import time

import numpy as np
import pytest

from tests.conftest import FakeClock
from vssjax import bench_rows
from vssjax.bench_rows import Row, median_timing, report, streamed_seconds


@pytest.fixture(name="clock")
def fixture_clock(monkeypatch) -> FakeClock:
  clock = FakeClock()
  monkeypatch.setattr(time, "perf_counter", clock.perf_counter)
  return clock


class _Running:
  """A result still being computed, as a JAX array whose device work is queued: it is ready
  `seconds` after it was returned."""

  def __init__(self, clock: FakeClock, seconds: float):
    self.clock, self.done_at = clock, clock.now + seconds

  def block_until_ready(self):
    self.clock.sleep(max(0.0, self.done_at - self.clock.now))
    return self


def test_dispatch_is_the_time_until_the_call_returned(clock):
  calls = []

  def device_bound():
    calls.append(1)
    return _Running(clock, 0.2)

  timing = median_timing(device_bound, warmup=1, repeats=3)
  assert len(calls) == 4  # the warm-up call is not timed
  assert timing.seconds == 0.2 and timing.dispatch_seconds == 0

  def host_bound():
    clock.sleep(0.2)
    return np.zeros(3)  # ready when returned

  timing = median_timing(host_bound, warmup=0, repeats=2)
  assert timing.dispatch_seconds == pytest.approx(0.2) == timing.seconds


class _Device:
  """A simulated device that runs the work it is given one program after the other, as a GPU
  stream does: a call takes `host_s` of the host's time to dispatch `device_s` of work, which
  starts when the device is done with the work before."""

  def __init__(self, clock: FakeClock, host_s: float, device_s: float):
    self.clock, self.host_s, self.device_s = clock, host_s, device_s
    self.free_at = 0.0

  def call(self) -> _Running:
    self.clock.sleep(self.host_s)
    self.free_at = max(self.free_at, self.clock.now) + self.device_s
    return _Running(self.clock, self.free_at - self.clock.now)


def test_a_streamed_frame_overlaps_its_dispatch_with_the_frame_before(clock):
  device = _Device(clock, host_s=0.03, device_s=0.06)
  waited = median_timing(device.call, warmup=0, repeats=3)
  streamed = streamed_seconds(device.call, frames=5)
  # Each waited call dispatches on an idle device, then waits for it: 0.03 + 0.06 s. Streamed, the
  # device runs the frames back to back: 5 x 0.06 s after the first dispatch, 0.066 s a frame.
  assert waited.seconds == pytest.approx(0.09)
  assert streamed == pytest.approx(0.066)
  host_bound = _Device(clock, host_s=0.05, device_s=0.01)  # the device waits for the host instead
  assert streamed_seconds(host_bound.call, frames=4, streams=1) == pytest.approx(0.0525)


def test_a_row_reports_its_dispatch_when_it_has_one(capsys):
  report(Row("forward", "float32", 1, 1, 2.5, 3.0, 333.3, 1.0, 10.0, 0.25))
  report(Row("torch_forward", "float32", 1, 1, None, 4.0, 250.0, None, None))
  report(Row("keyframe", "float32", 1, 1, 2.5, 3.0, 333.3, 1.0, 10.0, 0.25, streamed_ms=2.75))
  assert capsys.readouterr().out.splitlines() == [
      "bench: forward float32 batch 1: compiled in 2.5 s, 3.00 ms/call (dispatch 0.25 ms)",
      "bench: torch_forward float32 batch 1: 4.00 ms/call",
      "bench: keyframe float32 batch 1: compiled in 2.5 s, 3.00 ms/call (dispatch 0.25 ms), "
      "2.75 ms/frame streamed"]


def test_markdown_table_and_missing_figures():
  assert bench_rows.figure(None, ".1f") == "n/a"
  assert bench_rows.figure(0.125, ".0%") == "12%"
  assert bench_rows.markdown_table(["a", "b"], [["1", "n/a"], ["2", "3"]]) == (
      "| a | b |\n|---|---|\n| 1 | n/a |\n| 2 | 3 |")


def test_figures_of_digits_keep_four_significant_digits_without_an_exponent():
  """A quick config's 0.0012 GFLOPs read 0.001 at three decimals; '.4g' wrote a GPU's 11351 MiB
  as 1.135e+04."""
  assert [bench_rows.figure(v, "digits") for v in (0.0012345, 13.9734, 9999.4, 11351.2, None)] == [
      "0.001234", "13.97", "9999", "11351", "n/a"]
