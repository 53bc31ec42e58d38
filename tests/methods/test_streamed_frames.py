"""`StreamedVideo`: the frames a predictor runs make up a whole video, each program compiled once."""

import pytest

from vssjax.methods.streamed_frames import StreamedFrame, StreamedVideo
from vssjax.methods.variables_read import ProgramOnPart

_FIRST, _SECOND, _ONE = (ProgramOnPart(lambda variables, x: x) for _ in range(3))


def _frame(row: str, share: float, *names: str) -> StreamedFrame:
  programs = {"first": _FIRST, "second": _SECOND, "one": _ONE}
  return StreamedFrame(row, {name: (programs[name], ({}, 0)) for name in names}, lambda: None,
                       share)


def test_a_videos_programs_are_its_frames_each_once_without_the_ab():
  video = StreamedVideo([_frame("key", 0.5, "first", "second"), _frame("other", 0.5, "second"),
                         _frame("other_one_program", 0.0, "one")])
  assert [frame.row for frame in video.in_video] == ["key", "other"]
  assert {name: program for name, (program, _) in video.programs().items()} == {
      "first": _FIRST, "second": _SECOND}


@pytest.mark.parametrize("shares", [(0.25, 0.5), (0.75, 0.5)])
def test_frames_that_are_not_the_whole_video_are_refused_naming_them(shares):
  with pytest.raises(ValueError, match=r"\['key', 'other'\] make up .* not all of it"):
    StreamedVideo([_frame("key", shares[0], "first"), _frame("other", shares[1], "second")])


def test_two_frames_of_one_row_are_refused():
  with pytest.raises(ValueError, match=r"\['key', 'key'\] repeat a name"):
    StreamedVideo([_frame("key", 0.5, "first"), _frame("key", 0.5, "second")])


def test_a_per_frame_method_streams_no_frames():
  assert StreamedVideo([]).programs() == {}
