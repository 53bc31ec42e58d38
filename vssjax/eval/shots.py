"""Shots: the runs of frames of one size in a video whose frames may differ in size (a frame
folder of stills, or of several cameras' frames), each predicted and scored as a video of its own
by the evaluator and by `--mode=infer` alike."""

from __future__ import annotations

from typing import Callable

import numpy as np

from vssjax.methods import contract
from vssjax.methods.base import Prediction, StreamingPredictor


class ShotPredictor(StreamingPredictor):
  """`predictor` for the first shot, one from `new_predictor` for each later one, with indices
  counted from the video's first frame; `shots` lists the frames of each.

  The clip methods relate a frame to others (DCFM fuses keyframe features, DTERN and SD-CPC stack
  past frames' states), which frames resized to another network input cannot join; the frames of
  another size are another shot anyway (a folder of stills), so a fresh predictor takes them, as
  at a new video, and what scores frames together (TC's pairs, mVC's and VEC's windows) scores no
  frames across the change. Per-frame methods predict the same either way; a video file has one
  size throughout, one shot. `where` (the mode and video) starts the note at the first change;
  None says none (the video's other predictors: DCFM's protocol passes each take it anew).
  """

  def __init__(self, predictor: StreamingPredictor,
               new_predictor: Callable[[], StreamingPredictor], where: str | None):
    self._predictor, self._new_predictor, self._where = predictor, new_predictor, where
    self._starts: list[int] = []  # each shot's first frame (its predictor's frame 0)
    self._earlier_keyframes: list[int] | None = []  # the earlier shots', shifted
    self._count = 0  # the frames pushed
    self._size: tuple[int, ...] = ()

  @property
  def name(self) -> str:
    return type(self._predictor).__name__

  def push(self, frame: np.ndarray, frame_name: str = "") -> list[Prediction]:
    """As `StreamingPredictor.push`; `frame_name` names the frame in the note (default: its
    index)."""
    ready = []
    if frame.shape != self._size:
      if self._starts:
        ready = self.flush()
        self._earlier_keyframes = self.keyframes()
        # The first change is said, not every one of a folder of stills.
        if len(self._starts) == 1 and self._where is not None:
          print(f"{self._where}: frame {frame_name or self._count} is {frame.shape[0]}x"
                f"{frame.shape[1]}, the frames before it {self._size[0]}x{self._size[1]}: each run "
                "of frames of one size is predicted as a shot of its own (frames of another size "
                "neither inform it nor are scored with it)", flush=True)
        self._predictor = self._new_predictor()
      self._starts.append(self._count)
      self._size = frame.shape
    self._count += 1
    return ready + self._shifted(self._predictor.push(frame))

  def flush(self) -> list[Prediction]:
    return self._shifted(self._predictor.flush()) if self._starts else []

  def keyframes(self) -> list[int] | None:
    """The keyframes of every shot so far, counted from the video's first frame. A predictor
    that only duck-types `StreamingPredictor` has none: without a `keyframes` method (`push` and
    `flush` alone), or with an attribute of that name (a plugin's own list of them)."""
    if not self._starts:
      return []
    keyframes = getattr(self._predictor, "keyframes", None)
    current = keyframes() if callable(keyframes) else None
    if self._earlier_keyframes is None or current is None:
      return None
    return self._earlier_keyframes + [self._starts[-1] + index for index in current]

  def shots(self) -> list[range]:
    """The frames of each shot pushed so far, in order."""
    return [range(start, end) for start, end in zip(self._starts, self._starts[1:] + [self._count])]

  def _shifted(self, predictions: list[Prediction]) -> list[Prediction]:
    contract.check_answers(self.name, predictions)
    return [(self._starts[-1] + index, labels) for index, labels in predictions]
