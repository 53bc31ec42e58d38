"""Progress lines: throttled, rate measured after the first (compiling) unit, readable ETA."""
import types

from vssjax import progress


def test_format_seconds():
  assert progress.format_seconds(0) == "0m00s"
  assert progress.format_seconds(125.9) == "2m05s"
  assert progress.format_seconds(3 * 3600 + 61) == "3h01m01s"
  assert progress.format_seconds(-4) == "0m00s"


def test_first_update_prints_unknown_rate_then_throttles_unless_forced(capsys, monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
  bar = progress.Progress("eval video", 10, "videos", min_interval_s=2.0)
  bar.update(1)  # the first unit (compiling) starts the clock
  clock[0] += 1.0
  bar.update(3)  # within 2 s of the last line: not printed
  clock[0] += 1.0
  bar.update(5, force=True, loss=0.123456)
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "eval video 1/10  ? videos/s  ETA ?  "
  # 4 videos in the 2 s since the first update: 2 videos/s, 5 left: 2.5 s.
  assert lines[1] == "eval video 5/10  2.00 videos/s  ETA 0m02s  loss 0.1235"
  assert len(lines) == 2
