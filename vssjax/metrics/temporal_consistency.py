"""ETC's temporal consistency (TC): the flow-warped mIoU between consecutive predictions.

As the released `tool/eval_tc.py` computes it (specs/etc.md §6), label-free:

* every pair of consecutive frames (i, i+1) of a video is scored (L-1 pairs for L frames);
* the prediction of frame i+1 is warped onto frame i's grid with the flow that brings frame i+1
  onto frame i (`vssjax.flow` convention: `FlowProvider()(frame_{i+1}, frame_i)`; FlowNet2's
  `flownet(I_i, I_{i+1})` in the release), with no occlusion masking (the author, ETC issue #4);
* per-class intersection and union between output = prediction i and target = warped prediction
  i+1 are summed over all pairs of all videos;
* TC = mean over ALL NC classes of I_c / U_c, a class with an empty union counting as 0 (plain
  `np.mean` of I / (U + 1e-10) over the 19 classes).

Warping the class-id map (``warp_mode``):

* ``'bilinear'`` (released): ids are warped as float32 with the bilinear Resample2d warp and cast
  back by truncation, so along class boundaries the warped map holds blends that are other,
  unrelated ids (between 2 and 13 one can get 7), and a blend next to a lower id is pulled down
  by one. The warp repeats the CUDA kernel's rounding (`warp(resample2d_rounding=True)`), so
  that inside a region of one id the rare sum that rounds to just below the id truncates where
  the release's does. Kept to reproduce the published numbers.
* ``'nearest'``: nearest-neighbour sampling; ids are only moved. The cleaner variant.

The warp runs in JAX (jitted, on the default device) with 64-bit types enabled for the call;
everything else is numpy. Intersection and union are the diagonal and row + column - diagonal of
a confusion matrix, so the accumulator is a `ConfusionMatrix` (rows = warped i+1, columns = i)
and `merge` across processes is exact.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vssjax.metrics.confusion import ConfusionMatrix, check_labels, miou_all_classes
from vssjax.ops.warp import warp, warp_nearest

WARP_MODES = ("bilinear", "nearest")


@functools.partial(jax.jit, static_argnames="mode")
def _warp_labels_jit(labels: jax.Array, flow: jax.Array, mode: str) -> jax.Array:
  labels, flow = labels[None, :, :, None], flow[None]
  if mode == "bilinear":
    # The release: float32 ids through Resample2d (its kernel's rounding), then a uint8 cast,
    # which truncates; blends of ids in [0, NC) stay in [0, NC - 1], where truncation is floor.
    warped = jnp.floor(warp(labels.astype(jnp.float32), flow, resample2d_rounding=True))
  else:
    warped = warp_nearest(labels, flow)
  return warped[0, :, :, 0].astype(jnp.int32)


def _warp_labels(labels: np.ndarray, flow: np.ndarray, mode: str) -> np.ndarray:
  """[H, W] int class ids warped by flow [H, W, 2] -> int32 [H, W]."""
  with jax.enable_x64(True):
    return np.asarray(_warp_labels_jit(labels.astype(np.int32), flow, mode))


class TemporalConsistency:
  """Streaming TC over frame pairs, added one pair or one video at a time.

  Attributes:
    num_classes: NC.
    warp_mode: 'bilinear' (released) or 'nearest' (module docstring).
    pairs: number of frame pairs scored.
    matrix: the intersection/union accumulator (rows = warped next prediction, cols = current).
  """

  def __init__(self, num_classes: int, warp_mode: str = "bilinear"):
    if warp_mode not in WARP_MODES:
      raise ValueError(f"unknown TC warp mode {warp_mode!r}; expected one of {WARP_MODES}")
    self.num_classes = num_classes
    self.warp_mode = warp_mode
    self.pairs = 0
    self.matrix = ConfusionMatrix(num_classes)

  def add_pair(self, current: np.ndarray, following: np.ndarray, flow: np.ndarray) -> None:
    """Scores predictions of frames i (`current`) and i+1 (`following`), int [H, W] each.

    Args:
      current: class ids of frame i, in [0, NC).
      following: class ids of frame i+1, in [0, NC).
      flow: float [H, W, 2], the flow that brings frame i+1 onto frame i (module docstring).

    Raises:
      ValueError: shapes disagree or a class id is out of range (callers add the video name).
    """
    current, following, flow = np.asarray(current), np.asarray(following), np.asarray(flow)
    if current.ndim != 2 or following.shape != current.shape or flow.shape != current.shape + (2,):
      raise ValueError(f"TC expects two [H, W] predictions and a [H, W, 2] flow, got "
                       f"{current.shape}, {following.shape} and {flow.shape}")
    # `following` must be checked before warping (blends of bad ids can land in range);
    # `current` is then checked by the matrix update, where it is the prediction side.
    check_labels(current, following, self.num_classes, self.matrix.ignore_label)
    warped = _warp_labels(following, flow.astype(np.float32), self.warp_mode)
    self.matrix.update(warped, current)
    self.pairs += 1

  def add_video(self, predictions: Sequence[np.ndarray],
                flow: Callable[[int], np.ndarray]) -> None:
    """Scores every consecutive pair of a video's L predictions (int [H, W] each).

    `flow(i)` is the flow that brings frame i+1 onto frame i; it is asked for pair by pair, so a
    caller that computes flows (the evaluator) holds one at a time.

    Raises:
      ValueError: from `add_pair` or `flow`, the message starting with the frame pair.
    """
    for i in range(len(predictions) - 1):
      try:
        self.add_pair(predictions[i], predictions[i + 1], flow(i))
      except ValueError as e:
        raise ValueError(f"frames {i}-{i + 1}: {e}") from e

  def merge(self, other: TemporalConsistency) -> TemporalConsistency:
    """Adds another accumulator's counts (e.g. from another process); returns self."""
    if (other.num_classes, other.warp_mode) != (self.num_classes, self.warp_mode):
      raise ValueError(f"cannot merge TemporalConsistency(num_classes={other.num_classes}, "
                       f"warp_mode={other.warp_mode!r}) into TemporalConsistency(num_classes="
                       f"{self.num_classes}, warp_mode={self.warp_mode!r})")
    self.pairs += other.pairs
    self.matrix.merge(other.matrix)
    return self

  def __iadd__(self, other: TemporalConsistency) -> TemporalConsistency:
    return self.merge(other)

  def summary(self) -> dict[str, float]:
    """{'TC': fraction in [0, 1]}; nan when no pair was scored."""
    return {"TC": miou_all_classes(self.matrix.matrix) if self.pairs else float("nan")}
