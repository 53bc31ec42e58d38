"""The streaming predictor of per-frame methods (SegFormer, ETC): every frame on its own, whole or
in sliding windows."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.eval_transforms import eval_resize
from vssjax.configs_lib import ConfigDict
from vssjax.methods.base import Prediction, StreamingPredictor, Variables
from vssjax.methods.sliding_window import SlidingWindows, stitched_labels
from vssjax.methods.variables_read import ProgramOnPart
from vssjax.ops.resize import resize_bilinear


def logits_to_labels(logits: jax.Array, input_hw: tuple[int, int], frame_hw: tuple[int, int],
                     align_corners: bool = False):
  """mmseg's whole-image inference: logits -> network input size -> frame size -> argmax.

  Two resizes, as the original segmentors do, so label maps match theirs at the frame borders.
  `align_corners=True` is semseg's / ETC's upsampling (specs/etc.md §3 "Inference").
  """
  logits = resize_bilinear(logits.astype(jnp.float32), input_hw, align_corners=align_corners)
  logits = resize_bilinear(logits, frame_hw, align_corners=align_corners)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _one_frame_labels(logits: jax.Array, input_hw: tuple[int, int], frame_hw: tuple[int, int],
                      align_corners: bool = False) -> jax.Array:
  return logits_to_labels(logits, input_hw, frame_hw, align_corners)[0]


# The label map [H, W] of one frame's logits [1, h, w, C], as a predictor returns it (on the
# device; the consumer fetches it). Its own program, apart from the network's: frames of different
# sizes that resize to the same network input (VSPW's 720p and 1080p videos both become 480x864)
# share the network program and only compile this small one. Compiled once per (input size, frame
# size, align_corners).
frame_labels = jax.jit(_one_frame_labels,
                       static_argnames=("input_hw", "frame_hw", "align_corners"))


class PerFramePredictor(StreamingPredictor):
  """Resizes each frame for the network on the host, predicts it, answers at once.

  `predict_logits(variables, frames [n, h, w, 3])` is the jitted network: a `ProgramOnPart` is
  called bound to `variables` (a bfloat16 network's float32 kernels converted once, not at every
  frame: `vssjax/methods/variables_read.py`), any other function with all of them. Its logits go
  to `frame_labels`, so the network compiles once per network input size, not per frame size. With
  `windows`, the resized frame goes through as the batch of its sliding windows and their logits
  to `stitched_labels` (mmseg's 'slide' test mode).
  """

  def __init__(self, predict_logits: ProgramOnPart | Callable, variables: Variables,
               eval_transform: ConfigDict, *, windows: SlidingWindows | None = None,
               align_corners: bool = False):
    self._predict_logits = (predict_logits.bound(variables)
                            if isinstance(predict_logits, ProgramOnPart)
                            else functools.partial(predict_logits, variables))
    self._eval_transform = eval_transform
    self._windows = windows
    self._align_corners = align_corners
    self._index = 0

  def push(self, frame: np.ndarray) -> list[Prediction]:
    resized = eval_resize(frame, self._eval_transform)
    input_hw, frame_hw = resized.shape[:2], frame.shape[:2]
    if self._windows is None:
      logits = self._predict_logits(resized[None])
      labels = frame_labels(logits, input_hw=input_hw, frame_hw=frame_hw,
                            align_corners=self._align_corners)
    else:
      logits = self._predict_logits(self._windows.crops(resized))
      labels = stitched_labels(logits, windows=self._windows, input_hw=input_hw,
                               frame_hw=frame_hw, align_corners=self._align_corners)
    index, self._index = self._index, self._index + 1
    return [(index, labels)]
