"""`stream_predictions`: the frames of a video through a predictor, its answers back in frame
order, each frame answered exactly once, and held only until it is."""

import weakref

import numpy as np
import pytest

from vssjax.errors import SetupError
from vssjax.eval.shots import ShotPredictor
from vssjax.eval.stream import stream_predictions
from vssjax.methods.base import StreamingPredictor


class _Scripted(StreamingPredictor):
  """Answers push t with the frames `answers[t]` names, and the flush with `answers[-1]`; frame
  i's label map is all i. It keeps no frame."""

  def __init__(self, answers: list[list[int]]):
    self._answers, self._pushed = answers, 0

  def push(self, frame):
    self._pushed += 1
    return self._answer(self._pushed - 1)

  def flush(self):
    return self._answer(-1)

  def _answer(self, turn: int):
    return [(index, np.full((2, 3), index, np.int32)) for index in self._answers[turn]]


def _stream(answers: list[list[int]], frames, after_push=lambda pushed: None):
  """`stream_predictions` of `frames` (RGB, each named by its index) through `_Scripted`."""
  predictor = _Scripted(answers)
  return stream_predictions(ShotPredictor(predictor, lambda: predictor, None),
                            ((str(t), frame) for t, frame in enumerate(frames)),
                            num_classes=10, after_push=after_push)


def _frames(count: int):
  """`count` frames, frame t all t."""
  return (np.full((2, 3, 3), t, np.uint8) for t in range(count))


def test_answers_come_back_in_frame_order_after_the_next_push_and_the_flush():
  """Frame 1 answered before frame 0, frame 2 at the flush: yielded 0, 1, 2, each with its frame;
  a push's answers once the next push is dispatched, `after_push` following them."""
  events = []
  stream = _stream([[], [1, 0], [], [2]], _frames(3),
                   lambda pushed: events.append(f"pushed {pushed}"))
  for index, frame, labels in stream:
    assert isinstance(labels, np.ndarray) and np.all(labels == index)
    assert np.all(frame == index)
    events.append(f"yielded {index}")
  assert events == ["pushed 1", "pushed 2", "yielded 0", "yielded 1", "pushed 3", "yielded 2"]


def test_a_frame_is_held_only_until_it_is_yielded():
  """Of a predictor that answers each frame at once, the stream holds none but the frame it pushed
  last: a long input is never held whole."""
  read = []

  def frames():
    for frame in _frames(5):
      read.append(weakref.ref(frame))
      yield frame

  for _, frame, _ in _stream([[t] for t in range(5)] + [[]], frames()):
    del frame
    assert [ref() for ref in read[:-1]] == [None] * (len(read) - 1)


@pytest.mark.parametrize("answers, count, message", [
    ([[0], [0], []], 2,
     "_Scripted answered frame 0 twice: every frame must come back exactly once"),
    ([[], [1, 1], [0]], 2, "_Scripted answered frame 1 twice"),
    ([[], [5], [0, 1]], 2, r"_Scripted answered frame 5, which it was not given \(2 pushed\)"),
    # An answer for the frame pushed next (checked after that push) was not given yet either.
    ([[1], [0], []], 2, r"_Scripted answered frame 1, which it was not given \(1 pushed\)"),
    # A negative index (an off-by-one in the predictor's bookkeeping) was never pushed either.
    ([[], [-1], [0, 1]], 2, r"_Scripted answered frame -1, which it was not given \(2 pushed\)"),
    ([[], [], [0]], 2, r"_Scripted never answered 1 of the 2 frames pushed \(the first: frame 1\)"
                       ": every frame must come back exactly once"),
    # Frames answered but queued behind a missing one (yielded in order) are not counted as
    # never answered: they were.
    ([[0], [], [2], [3], [4], [5], []], 6,
     r"_Scripted never answered 1 of the 6 frames pushed \(the first: frame 1, which held back "
     r"the 4 answered after it\): every frame must come back exactly once"),
    ([[0], [], [2], [], [], [5], []], 6,
     r"_Scripted never answered 3 of the 6 frames pushed \(the first: frame 1, which held back "
     r"the 2 answered after it\)"),
])
def test_a_frame_answered_twice_never_given_or_never_answered_is_an_error(answers, count, message):
  with pytest.raises(SetupError, match=message):
    list(_stream(answers, _frames(count)))


class _AtNetworkSize(_Scripted):
  """Answers each frame at once, with a map of half the frame's size."""

  def _answer(self, turn: int):
    return [(t, np.zeros((1, 1), np.int32)) for t in ([self._pushed - 1] if turn >= 0 else [])]


class _BareMap(_Scripted):
  def _answer(self, turn: int):
    return np.zeros((2, 3), np.int32)


@pytest.mark.parametrize("predictor, message", [
    (_AtNetworkSize([]), r"^_AtNetworkSize's label map of frame 0 has shape \(1, 1\), the frame "
     r"\(2, 3\)"),
    (_BareMap([]), r"^_BareMap.push/flush returned array of shape \(2, 3\): they return a list"),
])
def test_answers_not_shaped_as_the_interface_says_name_the_predictor(predictor, message):
  """They surfaced as an unpacking error in the shot bookkeeping, or in --mode=infer as a crash of
  the overlay (or label PNGs of the wrong size written without a word)."""
  stream = stream_predictions(ShotPredictor(predictor, lambda: predictor, None),
                              (("0", frame) for frame in _frames(2)), num_classes=10)
  with pytest.raises(SetupError, match=message):
    list(stream)
