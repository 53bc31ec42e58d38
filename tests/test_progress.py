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



def _lines_of(capsys, monkeypatch, total: int, done: int, estimated: bool) -> list[str]:
  """The lines of a bar that counts to `done` at one unit a second, then finishes."""
  clock = [100.0]
  monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
  bar = progress.Progress("f", total, "frames", min_interval_s=0.0, estimated=estimated)
  for n in range(1, done + 1):
    clock[0] += 1.0
    bar.update(n)
  bar.finish(done)
  return capsys.readouterr().out.splitlines()


def test_an_estimated_total_is_marked_and_finish_prints_the_count_done(capsys, monkeypatch):
  """A video's declared frame count is an estimate: shown as `~N`, as `?` once passed (no ETA
  then), and the last line counts the frames done; a line already printed is not repeated."""
  assert _lines_of(capsys, monkeypatch, 2, 4, estimated=True) == [
      "f 1/~2  ? frames/s  ETA ?  ", "f 2/~2  1.00 frames/s  ETA 0m00s  ",
      "f 3/?  1.00 frames/s  ETA ?  ", "f 4/?  1.00 frames/s  ETA ?  ",
      "f 4/4  1.00 frames/s  ETA 0m00s  "]
  assert _lines_of(capsys, monkeypatch, 9, 2, estimated=True)[-2:] == [
      "f 2/~9  1.00 frames/s  ETA 0m07s  ", "f 2/2  1.00 frames/s  ETA 0m00s  "]
  assert _lines_of(capsys, monkeypatch, 2, 2, estimated=False) == [
      "f 1/2  ? frames/s  ETA ?  ", "f 2/2  1.00 frames/s  ETA 0m00s  "]


def test_only_process_0_prints(capsys, monkeypatch):
  """Every process of a multi-host run runs the same loops: one progress line per update, not
  one per host interleaved in the job's log."""
  monkeypatch.setattr(progress.jax, "process_index", lambda: 1)
  bar = progress.Progress("train step", 4, "steps", min_interval_s=0.0)
  bar.update(1)
  bar.update(2, force=True)
  bar.finish(4)
  assert capsys.readouterr().out == ""
