"""mmseg's sliding-window ('slide') inference: overlapping crops of the frame, logits averaged.

SegFormer's Cityscapes 1024x1024 models are scored so: the full-resolution frame (1024x2048) in
1024x1024 windows every 768 pixels (three windows across, one down), each window's logits resized
to the window, summed into the frame's canvas and divided by how many windows cover each pixel,
then resized to the frame and argmaxed. `data.eval_transform.slide_crop` / `slide_stride` turn it
on for SegFormer (`Method.sliding_window_inference`, `PerFramePredictor`); empty, the whole frame
goes through at once.

The windows of one frame run through the network as one batch (mmseg runs them one by one: the
same logits, as nothing in inference mixes the samples of a batch).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.ops.resize import resize_bilinear


@dataclasses.dataclass(frozen=True)
class SlidingWindows:
  """Window size (h, w) and stride (h, w) of `slide` inference."""
  crop: tuple[int, int]
  stride: tuple[int, int]

  @classmethod
  def from_config(cls, eval_transform: ConfigDict) -> SlidingWindows | None:
    """The windows of `eval_transform.slide_crop` / `slide_stride`; None when both are () (whole
    frames). A `SetupError` names the field that is off."""
    crop, stride = tuple(eval_transform.slide_crop), tuple(eval_transform.slide_stride)
    if not crop and not stride:
      return None
    for name, value in (("slide_crop", crop), ("slide_stride", stride)):
      if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise SetupError(f"data.eval_transform.{name} must be two positive ints (h, w) for "
                         f"sliding-window inference (or both it and the other () for whole "
                         f"frames), got {value!r}")
    if stride[0] > crop[0] or stride[1] > crop[1]:
      raise SetupError(f"data.eval_transform.slide_stride {stride} is larger than slide_crop "
                       f"{crop}: the windows would leave pixels no window covers")
    return cls(crop, stride)

  def offsets(self, hw: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """Top-left corners (y, x) of the windows over an image of size `hw`, in mmseg's order (rows
    outer): every `stride` from 0, the last one moved back to end at the border. A side shorter
    than the crop is covered by one window of that side's length."""
    starts = [_starts(side, crop, stride) for side, crop, stride in zip(hw, self.crop, self.stride)]
    return tuple((y, x) for y in starts[0] for x in starts[1])

  def window_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
    """Each window's size over an image of size `hw` (the crop, cut to a shorter side)."""
    return min(hw[0], self.crop[0]), min(hw[1], self.crop[1])

  def crops(self, image: np.ndarray) -> np.ndarray:
    """The windows of an [H, W, C] image, stacked as the network's batch [n, h, w, C]."""
    h, w = self.window_hw(image.shape[:2])
    return np.stack([image[y:y + h, x:x + w] for y, x in self.offsets(image.shape[:2])])


def _starts(side: int, crop: int, stride: int) -> list[int]:
  count = max(side - crop + stride - 1, 0) // stride + 1
  return [max(min(i * stride + crop, side) - crop, 0) for i in range(count)]


@functools.partial(jax.jit, static_argnames=("windows", "input_hw", "frame_hw", "align_corners"))
def stitched_labels(window_logits: jax.Array, windows: SlidingWindows, input_hw: tuple[int, int],
                    frame_hw: tuple[int, int], align_corners: bool = False) -> jax.Array:
  """The label map [H, W] of a frame from the logits [n, h', w', C] of its `windows` over the
  network input of size `input_hw` (`windows.crops`): each resized to its window, averaged where
  windows overlap, resized to `frame_hw`, argmaxed. Compiled once per (input size, frame size)."""
  offsets, (h, w) = windows.offsets(input_hw), windows.window_hw(input_hw)
  if window_logits.shape[0] != len(offsets):
    raise ValueError(f"logits of {window_logits.shape[0]} windows for the {len(offsets)} windows "
                     f"over {input_hw}")
  logits = resize_bilinear(window_logits.astype(jnp.float32), (h, w), align_corners=align_corners)
  canvas = jnp.zeros(input_hw + logits.shape[-1:], jnp.float32)
  count = np.zeros(input_hw + (1,), np.float32)  # static: the layout is known at trace time
  for (y, x), window in zip(offsets, logits):
    canvas = canvas.at[y:y + h, x:x + w].add(window)
    count[y:y + h, x:x + w] += 1
  averaged = resize_bilinear((canvas / count)[None], frame_hw, align_corners=align_corners)
  return jnp.argmax(averaged[0], axis=-1).astype(jnp.int32)
