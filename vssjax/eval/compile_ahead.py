"""Compiling the programs of the next videos' frame sizes while the device predicts the current one.

A jitted program compiles once per shape of its inputs, and an evaluation's inputs take the size of
its videos' frames after the test resize: a split of several frame sizes (VSPW's videos, resized
keeping their aspect ratio into 853x480 and rounded up to multiples of 32) compiles the
predictor's programs once per size, at the first video of that size, while the device waits (on
the H200 a SegFormer forward compiled in 17 to 28 s, docs/benchmarks_device.md). `CompileAhead`
meets each later size first in a thread of its own, ahead of the videos being predicted: a dummy
video of black frames of that size (`Method.warm_up_frames` of them) goes through `warm_up` (the
evaluator's: the method's predictors, as it pushes a real video), so every program and helper
the predictors call (the keyframe and non-key programs, the label upsampling to the frame's size)
compiles there. The evaluator waits until a video's size was met before predicting it, so no
program compiles twice, and a compile overlaps the videos before it. The first video's size
compiles as that video is predicted, as it would without this: nothing runs before it to
overlap, and a split of one size (Cityscapes, CamVid, DCFM's VSPW protocol) runs no dummy frame.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vssjax import parallel
from vssjax.configs_lib import ConfigDict


def compiles_ahead(config: ConfigDict) -> bool:
  """Whether evaluation and inference compile ahead by default: on an accelerator, where the
  host's cores are free while the device computes (on the CPU backend they would do both), unless
  `eval.compile_ahead` is off."""
  return bool(config.eval.compile_ahead) and parallel.computes_off_the_host()


def first_frame(video: Iterable[tuple[np.ndarray, Any]]) -> np.ndarray | None:
  """The first frame of `video` ((frame, label) pairs), decoding nothing after it."""
  pairs = iter(video)
  try:
    first = next(pairs, None)
  finally:
    getattr(pairs, "close", lambda: None)()
  return None if first is None else first[0]


class CompileAhead:
  """`with CompileAhead(videos, warm_up) as ahead:` ... `ahead.wait_for(i)` before predicting
  `videos[i]`. A thread reads each video's first frame (`first_frame(video)`: by default of
  (frame, label) pairs, as the evaluator's videos), in order, and calls `warm_up(video, frame)`
  for the first video of each frame shape but the first video's own (the evaluation compiles that
  one as it predicts it); `wait_for(i)` returns once it has passed video i.

  A failure in the thread (a frame it cannot decode, a program that does not fit beside the one
  being predicted) ends compiling ahead with one line, `mode` ('eval', 'infer') first, and the
  videos compile as they come: the evaluation meets a real error again, where it names the video.
  The block's end stops the thread at its next video and waits for the warm-up under way (one
  compile, which the evaluation would have waited for too): a thread left inside XLA while the
  interpreter exits aborts the process. `enabled=False`: nothing runs ahead, and `wait_for`
  returns at once.
  """

  def __init__(self, videos: Sequence, warm_up: Callable[[Any, np.ndarray], None],
               enabled: bool = True,
               first_frame: Callable[[Any], np.ndarray | None] = first_frame, mode: str = "eval"):
    self._mode = mode  # what its line starts with
    self._passed = [threading.Event() for _ in videos]
    self._stop = threading.Event()
    self.shapes: list[tuple[int, ...]] = []  # the frame shapes met (warmed but the first), in order
    self._thread = None
    if enabled and videos:
      self._thread = threading.Thread(target=self._run, args=(videos, warm_up, first_frame),
                                      daemon=True, name="eval_compile_ahead")
      self._thread.start()
    else:
      self._pass_all()

  def _run(self, videos: Sequence, warm_up: Callable[[Any, np.ndarray], None],
           first_frame: Callable[[Any], np.ndarray | None]) -> None:
    try:
      for index, (passed, video) in enumerate(zip(self._passed, videos)):
        if self._stop.is_set():
          return
        frame = first_frame(video)
        if frame is not None and frame.shape not in self.shapes:
          if index:
            warm_up(video, frame)
          self.shapes.append(frame.shape)
        passed.set()
    except Exception as error:  # pylint: disable=broad-except
      print(f"{self._mode}: compiling ahead stopped at video {getattr(video, 'name', video)} "
            f"({error}); the later videos' programs compile as they come", flush=True)
    finally:
      self._pass_all()

  def _pass_all(self) -> None:
    for passed in self._passed:
      passed.set()

  def wait_for(self, index: int) -> None:
    self._passed[index].wait()

  def __enter__(self) -> CompileAhead:
    return self

  def __exit__(self, *exc_info) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
