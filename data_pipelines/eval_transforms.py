"""Test-time resizing of one frame with mmseg 0.13 / mmcv 1.3 semantics (numpy + cv2, uint8 in/out).

What every predictor feeds its network (`eval_resize`: SegFormer's AlignedResize, with cv2 or, as
DCFM's torchvision `Resize` on PIL images, with Pillow), and DCFM's VSPW test protocol, which
resizes a frame and its label to exactly one size (`resize_exact`, applied by the evaluator as it
reads a video). Nothing here is random and no clip is involved, unlike the train pipeline in
`data_pipelines.transforms`, whose keep-ratio fit (`rescale_size`) and Pillow resize this shares.
Frames are never normalised here: the model does that.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from data_pipelines.transforms import check_size, pillow_resize, rescale_size
from vssjax.errors import DataError, SetupError


def _align(hw: tuple[int, int], size_divisor: int) -> tuple[int, int]:
  return tuple(int(np.ceil(side / size_divisor)) * size_divisor for side in hw)


def check_eval_transform(eval_transform) -> None:
  """The sizes of `data.eval_transform` (the sliding windows are `SlidingWindows`'), checked as
  a method is built: a zero `scale` failed in cv2 at the first evaluation, after training."""
  check_size("data.eval_transform.scale", eval_transform.scale)
  check_size("data.eval_transform.exact_size", eval_transform.exact_size,
             allow_empty=True)
  if eval_transform.size_divisor < 1:
    raise SetupError(f"data.eval_transform.size_divisor={eval_transform.size_divisor}: at least 1 "
                     "(1: no rounding)")


def aligned_resize(frame: np.ndarray, scale: tuple[int, int], size_divisor: int,
                   backend: str = "cv2") -> np.ndarray:
  """SegFormer's AlignedResize at test time: keep-ratio rescale to fit `scale`, then a second
  bilinear resize of each side up to a multiple of `size_divisor` (two resizes, as mmseg does).

  `backend='pillow'` resizes as torchvision's `Resize(min(scale))` on PIL images (DCFM's test
  transform): the short side becomes min(scale) and the long side scales with it, truncated
  (`short_side_size`: 720x960 at 512 is 512x682, where mmcv's fit rounds to 683), and Pillow's
  bilinear widens its filter when it shrinks (antialiasing), where cv2's samples 2x2 pixels.
  """
  if backend not in ("cv2", "pillow"):
    raise SetupError(f"eval_transform.resize_backend must be 'cv2' or 'pillow', got {backend!r}")
  rescaled = (short_side_size(frame.shape[:2], min(scale)) if backend == "pillow"
              else rescale_size(frame.shape[:2], scale))
  if min(rescaled) < 1:  # cv2 asserted "inv_scale_x > 0", naming neither the frame nor the size
    raise DataError(f"a {frame.shape[0]}x{frame.shape[1]} frame", (
        f"fitted into data.eval_transform.scale={tuple(scale)} it is {rescaled[0]}x{rescaled[1]} "
        "pixels: a side rounds to 0, too thin a frame to predict"))
  for hw in (rescaled, _align(rescaled, size_divisor)):
    if hw != frame.shape[:2]:
      frame = (pillow_resize(frame, hw, Image.Resampling.BILINEAR) if backend == "pillow"
               else cv2.resize(frame, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR))
  return frame


def short_side_size(hw: tuple[int, int], short: int) -> tuple[int, int]:
  """torchvision's `Resize(short)` size: the short side `short`, the long side scaled with it and
  truncated; a square frame becomes short x short. No cap on the long side."""
  h, w = hw
  if h <= w:
    return short, int(short * w / h)
  return int(short * h / w), short


def eval_resize(frame: np.ndarray, eval_transform) -> np.ndarray:
  """`aligned_resize` with a config's `data.eval_transform` settings: what every predictor feeds
  its network."""
  return aligned_resize(frame, eval_transform.scale, eval_transform.size_divisor,
                        eval_transform.resize_backend)


def resize_exact(frame: np.ndarray, label: np.ndarray | None, hw: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray | None]:
  """A frame (bilinear) and its label (nearest) resized to exactly (h, w), aspect ratio ignored.

  DCFM's VSPW test protocol (specs/dcfm.md §6.2) resizes both to 480x853 and scores there, so the
  evaluator applies this as it reads a video (`data.eval_transform.exact_size`). Pillow does both
  resizes, as the release's torchvision `Resize` on PIL images does: its nearest neighbour takes
  the source pixel under each target pixel's centre (cv2.INTER_NEAREST takes the one at its
  corner, a different label map), and its bilinear antialiases when it shrinks.
  """
  if frame.shape[:2] == tuple(hw):
    return frame, label
  frame = pillow_resize(frame, hw, Image.Resampling.BILINEAR)
  if label is not None:
    label = pillow_resize(label, hw, Image.Resampling.NEAREST)
  return frame, label
