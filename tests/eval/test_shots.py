"""`ShotPredictor`: a video whose frames change size is predicted as shots, each by a fresh
predictor, with frame indices counted from the video's first frame."""

import numpy as np

from vssjax.eval.shots import ShotPredictor
from vssjax.methods.base import StreamingPredictor


class _Delayed(StreamingPredictor):
  """Answers each frame one push late (as a clip method that waits for a later frame does), with
  the frame's own index in this predictor and its id (the frame's constant value)."""

  def __init__(self, log: list[str]):
    self._held: list[tuple[int, np.ndarray]] = []
    self._count = 0
    log.append("new")

  def push(self, frame):
    self._held.append((self._count, np.full(frame.shape[:2], frame[0, 0, 0], np.int32)))
    self._count += 1
    return [self._held.pop(0)] if len(self._held) > 1 else []

  def flush(self):
    held, self._held = self._held, []
    return held


def _frame(value, height=4, width=6):
  return np.full((height, width, 3), value, np.uint8)


def _push_all(predictor, frames):
  ready = []
  for frame in frames:
    ready += predictor.push(frame)
  return ready + predictor.flush()


def test_a_video_of_one_size_is_one_shot_and_its_predictor_unchanged(capsys):
  log = []
  shots = ShotPredictor(_Delayed(log), lambda: _Delayed(log), where="eval video a")
  ready = _push_all(shots, [_frame(i) for i in range(4)])
  assert [index for index, _ in ready] == [0, 1, 2, 3]
  assert [int(labels[0, 0]) for _, labels in ready] == [0, 1, 2, 3]
  assert shots.shots() == [range(0, 4)] and log == ["new"]
  assert capsys.readouterr().out == ""


def test_a_size_change_flushes_the_shot_and_counts_indices_from_the_videos_first_frame(capsys):
  log = []
  shots = ShotPredictor(_Delayed(log), lambda: _Delayed(log), where="eval video a")
  frames = [_frame(0), _frame(1), _frame(2, 6, 4), _frame(3, 6, 4), _frame(4, 6, 4), _frame(5)]
  ready = _push_all(shots, frames)
  # Every frame answered once, at its own index and with its own frame's prediction and size.
  assert [index for index, _ in ready] == list(range(6))
  assert [int(labels[0, 0]) for _, labels in ready] == list(range(6))
  assert [labels.shape for _, labels in ready] == [f.shape[:2] for f in frames]
  assert shots.shots() == [range(0, 2), range(2, 5), range(5, 6)]
  assert log == ["new"] * 3  # a fresh predictor per later shot
  out = capsys.readouterr().out
  # Only the first change is said, naming the frame and both sizes.
  assert out.count("\n") == 1 and out.startswith("eval video a: frame 2 is 6x4, the frames "
                                                 "before it 4x6")


def test_the_note_names_the_frame_and_none_is_said_without_a_where(capsys):
  log = []
  named = ShotPredictor(_Delayed(log), lambda: _Delayed(log), where="infer x")
  named.push(_frame(0))
  named.push(_frame(1, 8, 8), frame_name="f1.png")
  assert "infer x: frame f1.png is 8x8" in capsys.readouterr().out
  silent = ShotPredictor(_Delayed(log), lambda: _Delayed(log), where=None)
  _push_all(silent, [_frame(0), _frame(1, 8, 8)])
  assert capsys.readouterr().out == "" and silent.shots() == [range(0, 1), range(1, 2)]


def test_flush_before_any_frame_answers_nothing():
  assert ShotPredictor(_Delayed([]), lambda: _Delayed([]), where=None).flush() == []


class _HoldsOdd(StreamingPredictor):
  """Answers its even frames as they are pushed and holds its odd ones until flush (as a method
  that waits for a later frame only at some frames does)."""

  def __init__(self):
    self._held: list[tuple[int, np.ndarray]] = []
    self._count = 0

  def push(self, frame):
    answer = (self._count, np.full(frame.shape[:2], frame[0, 0, 0], np.int32))
    self._count += 1
    if answer[0] % 2:
      self._held.append(answer)
      return []
    return [answer]

  def flush(self):
    held, self._held = self._held, []
    return held


def test_at_a_size_change_the_old_shots_tail_is_answered_before_the_new_shots_first_frame():
  """The evaluator and `--mode=infer` take answers in frame order: the new shot's frame answered
  ahead of the tail the old shot held until its flush would put frames out of order."""
  shots = ShotPredictor(_HoldsOdd(), _HoldsOdd, where=None)
  assert [index for index, _ in shots.push(_frame(0))] == [0]
  assert shots.push(_frame(1)) == []  # held until the shot ends
  ready = shots.push(_frame(2, 6, 4))
  assert [index for index, _ in ready] == [1, 2]
  ready += shots.push(_frame(3, 6, 4)) + shots.flush()
  assert [int(labels[0, 0]) for _, labels in ready] == [1, 2, 3]


class _EveryOtherKeyframe(_Delayed):
  """`_Delayed` with keyframes: its frames 0, 2, 4, ... (of this predictor)."""

  def keyframes(self):
    return list(range(0, self._count, 2))


def test_keyframes_of_every_shot_count_from_the_videos_first_frame():
  """A keyframe method's keyframes (`StreamingPredictor.keyframes`), shot after shot: each
  shot's own, shifted by the frames before it; a predictor without the method says None."""
  frames = [_frame(v) for v in range(3)] + [_frame(v, height=8) for v in range(3, 8)]
  predictor = ShotPredictor(_EveryOtherKeyframe([]), lambda: _EveryOtherKeyframe([]), None)
  assert predictor.keyframes() == []
  _push_all(predictor, frames)
  assert predictor.keyframes() == [0, 2, 3, 5, 7]
  plain = ShotPredictor(_Delayed([]), lambda: _Delayed([]), None)
  _push_all(plain, frames)
  assert plain.keyframes() is None

  class _OwnList(_Delayed):  # a plugin's attribute of that name, not the method
    keyframes = [0]

  own = ShotPredictor(_OwnList([]), lambda: _OwnList([]), None)
  _push_all(own, frames)
  assert own.keyframes() is None
