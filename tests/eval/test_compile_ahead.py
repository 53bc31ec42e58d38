"""`CompileAhead`: each new frame shape met once, in a thread, ahead of the videos being predicted;
the evaluator's wait for a video returns only once the thread has passed it."""
import threading

import numpy as np

from vssjax.eval.compile_ahead import CompileAhead, first_frame


class _Video:
  """A video of `num_frames` black frames of shape `hw` + (3,); logs each frame decoded."""

  def __init__(self, name: str, hw: tuple[int, int], num_frames: int = 3, log: list | None = None):
    self.name, self.hw, self.num_frames = name, hw, num_frames
    self.log = [] if log is None else log

  def __iter__(self):
    for t in range(self.num_frames):
      self.log.append((self.name, t))
      yield np.zeros(self.hw + (3,), np.uint8), None


def test_each_new_shape_is_warmed_once_in_order_on_a_thread_of_its_own():
  videos = [_Video("a", (4, 6)), _Video("b", (4, 6)), _Video("c", (6, 4)), _Video("d", (4, 6)),
            _Video("e", (2, 2)), _Video("f", (6, 4))]
  warmed = []

  def warm_up(video, frame):
    warmed.append((video.name, frame.shape, threading.current_thread().name))

  with CompileAhead(videos, warm_up) as ahead:
    for index in range(len(videos)):
      ahead.wait_for(index)
  # a's shape compiles as a is predicted: nothing would run beside its warm-up.
  assert warmed == [("c", (6, 4, 3), "eval_compile_ahead"), ("e", (2, 2, 3), "eval_compile_ahead")]
  assert ahead.shapes == [(4, 6, 3), (6, 4, 3), (2, 2, 3)]


def test_the_wait_for_a_video_lasts_until_its_shape_is_warmed():
  """Video 1's new shape is being warmed: the wait for video 0 (passed) returns, video 1's only
  once its warm-up has returned, so its programs never compile twice at once."""
  release, started = threading.Event(), threading.Event()

  def warm_up(video, frame):
    if video.name == "b":
      started.set()
      release.wait()

  with CompileAhead([_Video("a", (4, 6)), _Video("b", (6, 4))], warm_up) as ahead:
    started.wait()
    waiters = [threading.Thread(target=ahead.wait_for, args=(i,), daemon=True) for i in (0, 1)]
    for waiter in waiters:
      waiter.start()
    waiters[0].join(5)
    waiters[1].join(0.2)
    assert not waiters[0].is_alive() and waiters[1].is_alive()
    release.set()
    waiters[1].join(5)
    assert not waiters[1].is_alive()


def test_a_failed_warm_up_ends_compiling_ahead_with_one_line_and_every_wait_returns(capsys):
  def warm_up(video, frame):
    if video.name == "b":
      raise MemoryError("RESOURCE_EXHAUSTED: out of memory allocating 1.2 GiB")

  videos = [_Video("a", (4, 6)), _Video("b", (6, 4)), _Video("c", (2, 2))]
  with CompileAhead(videos, warm_up) as ahead:
    for index in range(len(videos)):
      ahead.wait_for(index)
  assert ahead.shapes == [(4, 6, 3)]  # c's never met: the thread stopped at b
  assert capsys.readouterr().out == (
      "eval: compiling ahead stopped at video b (RESOURCE_EXHAUSTED: out of memory allocating "
      "1.2 GiB); the later videos' programs compile as they come\n")


def test_disabled_it_warms_nothing_and_never_waits():
  warmed = []
  with CompileAhead([_Video("a", (4, 6))], lambda video, frame: warmed.append(video),
                    enabled=False) as ahead:
    ahead.wait_for(0)
  assert not warmed and ahead.shapes == []


def test_the_block_ending_stops_the_thread_after_the_warm_up_under_way():
  """An evaluation cut short (a stop request, an error) waits for the warm-up under way, no
  later one: a thread left inside XLA at the interpreter's exit would abort the process."""
  release, started = threading.Event(), threading.Event()
  warmed = []

  def warm_up(video, frame):
    warmed.append(video.name)
    started.set()
    release.wait()

  videos = [_Video("a", (4, 6)), _Video("b", (6, 4)), _Video("c", (2, 2)), _Video("d", (3, 3))]
  with CompileAhead(videos, warm_up) as ahead:
    started.wait()
    threading.Timer(0.3, release.set).start()
  assert release.is_set()  # the block's end waited for it
  assert not [t for t in threading.enumerate() if t.name == "eval_compile_ahead"]
  assert warmed == ["b"] and ahead.shapes == [(4, 6, 3), (6, 4, 3)]


def test_the_first_frame_is_read_without_decoding_the_rest():
  log = []
  frame = first_frame(_Video("a", (4, 6), num_frames=5, log=log))
  assert frame.shape == (4, 6, 3) and log == [("a", 0)]
  assert first_frame([]) is None
