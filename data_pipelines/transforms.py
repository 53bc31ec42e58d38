"""Clip-consistent augmentation with mmseg 0.13 / mmcv 1.3 semantics (numpy + cv2, uint8 in/out).

A clip is frames uint8 [T, H, W, 3] RGB and labels [T, H, W] (255 = ignore). Geometric operations
(rescale, crop, flip) take ONE random draw per clip and apply it to every frame and label, so
frames stay aligned with each other; photometric distortion is drawn independently per frame, as
in DTERN's pipeline (specs/dtern.md §7). Frames are never normalised here: the model does that.
"""
from __future__ import annotations

import cv2
import ml_collections
import numpy as np

from data_pipelines.sources.base import IGNORE_LABEL

_CROP_TRIES = 10  # mmseg RandomCrop re-draws at most 10 times for cat_max_ratio.


def rescale_size(hw: tuple[int, int], scale: tuple[float, float]) -> tuple[int, int]:
  """mmcv.rescale_size: the largest keep-ratio (h, w) with long edge <= max(scale) and short
  edge <= min(scale), rounded half up."""
  h, w = hw
  factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
  return int(h * factor + 0.5), int(w * factor + 0.5)


def _resize_clip(frames: np.ndarray, labels: np.ndarray, hw: tuple[int, int]):
  """Bilinear frames, nearest labels (mmcv imresize; cv2 takes (w, h))."""
  size = (hw[1], hw[0])
  if frames.shape[1:3] == tuple(hw):
    return frames, labels
  frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames])
  labels = np.stack([cv2.resize(l, size, interpolation=cv2.INTER_NEAREST) for l in labels])
  return frames, labels


def random_rescale(frames: np.ndarray, labels: np.ndarray, scale: tuple[int, int],
                   ratio_range: tuple[float, float], rng: np.random.Generator):
  """mmseg Resize(img_scale=scale, ratio_range, keep_ratio=True); scale is (w, h) as in mmseg,
  though keep-ratio rescaling only uses its long and short edge."""
  ratio = rng.random() * (ratio_range[1] - ratio_range[0]) + ratio_range[0]
  target = (int(scale[0] * ratio), int(scale[1] * ratio))
  return _resize_clip(frames, labels, rescale_size(frames.shape[1:3], target))


def _crop_box(hw: tuple[int, int], crop_size: tuple[int, int], rng: np.random.Generator):
  offset_h = int(rng.integers(max(hw[0] - crop_size[0], 0) + 1))
  offset_w = int(rng.integers(max(hw[1] - crop_size[1], 0) + 1))
  return (slice(offset_h, offset_h + crop_size[0]), slice(offset_w, offset_w + crop_size[1]))


def _box_is_varied(target_label: np.ndarray, box, cat_max_ratio: float) -> bool:
  ids, counts = np.unique(target_label[box], return_counts=True)
  counts = counts[ids != IGNORE_LABEL]
  return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def random_crop(frames: np.ndarray, labels: np.ndarray, crop_size: tuple[int, int],
                cat_max_ratio: float, rng: np.random.Generator):
  """mmseg RandomCrop: one box for the clip; with cat_max_ratio < 1 the box is re-drawn (at most
  10 times, the last draw kept unchecked) until no class covers more than that share of the
  TARGET frame's (last frame's) non-ignored pixels. crop_size is (h, w)."""
  box = _crop_box(frames.shape[1:3], crop_size, rng)
  if cat_max_ratio < 1.0:
    for _ in range(_CROP_TRIES):
      if _box_is_varied(labels[-1], box, cat_max_ratio):
        break
      box = _crop_box(frames.shape[1:3], crop_size, rng)
  return frames[:, box[0], box[1]], labels[:, box[0], box[1]]


def random_hflip(frames: np.ndarray, labels: np.ndarray, flip_prob: float,
                 rng: np.random.Generator):
  if rng.random() < flip_prob:
    return frames[:, :, ::-1], labels[:, :, ::-1]
  return frames, labels


def _convert(channel: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
  return np.clip(channel.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """mmseg PhotoMetricDistortion on one uint8 RGB image: brightness +-32, contrast [0.5, 1.5],
  saturation [0.5, 1.5], hue +-18 (of 180), each with p = 0.5, contrast first or last.
  RGB<->HSV here equals mmseg's BGR<->HSV on the same pixels."""
  if rng.integers(2):
    image = _convert(image, beta=rng.uniform(-32, 32))
  contrast_first = bool(rng.integers(2))
  if contrast_first and rng.integers(2):
    image = _convert(image, alpha=rng.uniform(0.5, 1.5))
  if rng.integers(2):
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(0.5, 1.5))
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
  if rng.integers(2):
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(rng.integers(-18, 18))) % 180
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
  if not contrast_first and rng.integers(2):
    image = _convert(image, alpha=rng.uniform(0.5, 1.5))
  return image


def pad_to(frames: np.ndarray, labels: np.ndarray, size: tuple[int, int]):
  """Pads bottom/right up to size (h, w): frames with 0, labels with 255 (mmseg Pad)."""
  pad_h, pad_w = max(size[0] - frames.shape[1], 0), max(size[1] - frames.shape[2], 0)
  if not pad_h and not pad_w:
    return frames, labels
  frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
  labels = np.pad(labels, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=IGNORE_LABEL)
  return frames, labels


def train_transform(frames: np.ndarray, labels: np.ndarray, cfg: ml_collections.ConfigDict,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """The mmseg train pipeline on a clip: rescale, crop, flip, photometric, pad.

  cfg: scale (w, h), ratio_range, crop_size (h, w), cat_max_ratio, flip_prob, photometric.
  Returns frames uint8 [T, h, w, 3] and labels int32 [T, h, w] with (h, w) = crop_size.
  """
  crop_size = tuple(cfg.crop_size)
  # Labels travel as uint8 (train ids < 255 and ignore = 255), which every cv2 op accepts.
  labels = labels.astype(np.uint8)
  frames, labels = random_rescale(frames, labels, tuple(cfg.scale), tuple(cfg.ratio_range), rng)
  frames, labels = random_crop(frames, labels, crop_size, cfg.cat_max_ratio, rng)
  frames, labels = random_hflip(frames, labels, cfg.flip_prob, rng)
  if cfg.photometric:
    frames = np.stack([photometric_distortion(np.ascontiguousarray(f), rng) for f in frames])
  frames, labels = pad_to(frames, labels, crop_size)
  return np.ascontiguousarray(frames), labels.astype(np.int32)


def _align(hw: tuple[int, int], size_divisor: int) -> tuple[int, int]:
  return tuple(int(np.ceil(side / size_divisor)) * size_divisor for side in hw)


def test_resize_shape(hw: tuple[int, int], scale: tuple[int, int],
                      size_divisor: int) -> tuple[int, int]:
  """The (h, w) that `test_resize` produces for a frame of size hw."""
  return _align(rescale_size(hw, scale), size_divisor)


def test_resize(frame: np.ndarray, scale: tuple[int, int], size_divisor: int) -> np.ndarray:
  """SegFormer's AlignedResize at test time: keep-ratio rescale to fit `scale`, then a second
  bilinear resize of each side up to a multiple of `size_divisor` (two resizes, as mmseg does)."""
  rescaled = rescale_size(frame.shape[:2], scale)
  for hw in (rescaled, _align(rescaled, size_divisor)):
    if hw != frame.shape[:2]:
      frame = cv2.resize(frame, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
  return frame


# Not tests, despite their names: keeps pytest from collecting them where they are imported.
test_resize.__test__ = False
test_resize_shape.__test__ = False
