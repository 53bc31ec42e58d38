"""`streamed_video`: what a method's `streamed_frames` returns is checked before the bench or aot
compile anything, and what it refuses names the method."""

import numpy as np
import pytest

from vssjax.methods.streamed_frames import StreamedFrame, StreamedVideo, streamed_video
from vssjax.methods.variables_read import ProgramOnPart

_FIRST, _SECOND, _ONE = (ProgramOnPart(lambda variables, x: x) for _ in range(3))
_PROGRAMS = {"first": _FIRST, "second": _SECOND, "one": _ONE}


def _frame(row: str, share: float, *names: str) -> StreamedFrame:
  return StreamedFrame(row, {name: (_PROGRAMS[name], (0,)) for name in names}, lambda: None,
                       share)


class _Method:
  """A method whose `streamed_frames` returns `video`, after asking `outputs_of` for `asks`:
  (name, program) pairs, or (name, program, argument) triples (the argument 0 otherwise, as
  `_frame` lists it)."""

  def __init__(self, video, asks=()):
    self.video, self.asks = video, asks

  def streamed_frames(self, variables, frames, outputs_of):
    for name, program, *argument in self.asks:
      outputs_of(name, program, *(argument or [frames]))
    return self.video


def _checked(video, asks=()) -> StreamedVideo:
  return streamed_video(_Method(video, asks), {}, 0, lambda name, program, *args: args[0])


def test_a_videos_programs_are_its_frames_each_once_without_the_ab():
  video = _checked(StreamedVideo([
      _frame("key", 0.5, "first", "second"), _frame("other", 0.5, "second"),
      _frame("other_one_program", 0.0, "one")]), asks=[("first", _FIRST)])
  assert [frame.row for frame in video.in_video] == ["key", "other"]
  assert {name: program for name, (program, _) in video.programs().items()} == {
      "first": _FIRST, "second": _SECOND}
  assert _checked(StreamedVideo([])).programs() == {}  # a per-frame method's


@pytest.mark.parametrize("video, asks, error, said", [
    ({"key": 1}, (), TypeError, r"_Method.streamed_frames returned a dict, not a StreamedVideo"),
    (StreamedVideo([_frame("key", 0.25, "first"), _frame("other", 0.5, "second")]), (),
     ValueError, r"_Method.streamed_frames: the frames \['key', 'other'\] make up 0.75 of a "
     r"video's frames"),
    (StreamedVideo([_frame("key", 0.5, "first"), _frame("key", 0.5, "second")]), (),
     ValueError, r"the rows \['key', 'key', 'video_avg'\] .* must differ"),
    (StreamedVideo([_frame("forward", 1.0, "first")]), (), ValueError,
     r"from the bench's own \('forward'"),
    (StreamedVideo([_frame("torch_frame", 1.0, "first")]), (), ValueError, r"and from PyTorch's"),
    (StreamedVideo([_frame("key", 1.0, "first"), _frame("ab", -0.5, "second")]), (), ValueError,
     r"frame 'ab''s share is -0.5"),
    (StreamedVideo([_frame("key", 0.5, "first"), StreamedFrame(
        "other", {"first": (_SECOND, (0,))}, lambda: None, 0.5)]), (), ValueError,
     r"two frames list a program 'first', with other programs or arguments"),
    (StreamedVideo([_frame("key", 0.5, "first"), StreamedFrame(
        "other", {"first": (_FIRST, (np.zeros(3),))}, lambda: None, 0.5)]), (), ValueError,
     r"two frames list a program 'first'"),
    (StreamedVideo([StreamedFrame("key", {"first": (lambda v, x: x, (0,))}, lambda: None, 1.0)]),
     (), TypeError, r"frame 'key''s program 'first' is .*, not a \(ProgramOnPart, tuple"),
    (StreamedVideo([StreamedFrame("key", {"first": (_FIRST, 0)}, lambda: None, 1.0)]), (),
     TypeError, r"not a \(ProgramOnPart, tuple of its arguments"),
    (StreamedVideo([_frame("key", 1.0, "first")]), [("frist", _FIRST)], ValueError,
     r"asked outputs_of for 'frist' with a program or arguments that its frames do not list so "
     r"\(they run \['first'\]\)"),
    (StreamedVideo([_frame("key", 1.0, "first")]), [("first", _SECOND)], ValueError,
     r"asked outputs_of for 'first' with a program or arguments"),
    (StreamedVideo([_frame("key", 1.0, "first")]), [("first", _FIRST, np.zeros((1, 4)))],
     ValueError, r"asked outputs_of for 'first' with a program or arguments"),
])
def test_what_the_tools_cannot_take_is_refused_naming_the_method(video, asks, error, said):
  with pytest.raises(error, match=said):
    _checked(video, asks)
