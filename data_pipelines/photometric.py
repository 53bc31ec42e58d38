"""Photometric changes of one frame, as mmseg and torchvision make them (uint8 RGB in/out).

mmseg 0.13's PhotoMetricDistortion (`photometric_distortion`, DTERN's pipeline, specs/dtern.md §7)
with cv2, and torchvision's ColorJitter (`color_jitter`, DCFM's, specs/dcfm.md §6.2) as its PIL
path computes it, with Pillow. Neither moves a pixel, so labels and flow need nothing: each call
takes its own random draws for one frame, and the train pipeline
(`data_pipelines.transforms.train_transform`) draws them independently per frame, where the
geometric operations take one draw per clip.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageEnhance

from vssjax.errors import SetupError


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


def _adjust_hue(image: Image.Image, factor: float) -> Image.Image:
  """torchvision's PIL adjust_hue: H (0..255 in Pillow's HSV) + uint8(factor * 255), wrapping;
  the float -> uint8 cast truncates and wraps negative shifts (-0.1 -> -25 -> 231)."""
  h, s, v = image.convert("HSV").split()
  shift = int(factor * 255) % 256
  h = h.point([(value + shift) % 256 for value in range(256)])
  return Image.merge("HSV", (h, s, v)).convert("RGB")


# torchvision ColorJitter's ops in its order (brightness, contrast, saturation, hue), as its PIL
# path computes them: Pillow blends with a black image, a grey image of the mean grey level
# (rounded) and the image's own grey version (L = ITU-R 601-2, rounded), truncating the result.
JITTER_OPS = (
    lambda image, factor: ImageEnhance.Brightness(image).enhance(factor),
    lambda image, factor: ImageEnhance.Contrast(image).enhance(factor),
    lambda image, factor: ImageEnhance.Color(image).enhance(factor),
    _adjust_hue,
)


def color_jitter(image: np.ndarray, strengths: tuple[float, float, float, float],
                 rng: np.random.Generator) -> np.ndarray:
  """torchvision ColorJitter(brightness, contrast, saturation, hue) on one uint8 RGB image.

  DCFM jitters PIL images, so this is torchvision's PIL path, with Pillow (specs/dcfm.md §6.2).
  As ColorJitter.get_params: the four ops in a random order, factors ~ U[max(0, 1 - x), 1 + x]
  for brightness, contrast and saturation and ~ U[-x, x] for hue; a zero strength skips its op
  (and its draw). Unlike mmseg's PhotoMetricDistortion every op always applies.
  """
  if len(strengths) != 4 or min(strengths) < 0 or strengths[3] > 0.5:
    raise SetupError(f"color_jitter strengths must be >= 0, hue <= 0.5; got {strengths}")
  order = rng.permutation(4)
  ranges = [(max(0.0, 1.0 - x), 1.0 + x) for x in strengths[:3]] + [(-strengths[3], strengths[3])]
  factors = [rng.uniform(*r) if x else None for x, r in zip(strengths, ranges)]
  jittered = Image.fromarray(np.ascontiguousarray(image))
  for op in order:
    if factors[op] is not None:
      jittered = JITTER_OPS[op](jittered, factors[op])
  return np.asarray(jittered)
