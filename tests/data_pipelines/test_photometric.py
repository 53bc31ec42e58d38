"""Tests for the photometric changes of a frame: mmseg's distortion, torchvision's ColorJitter."""
import numpy as np
import pytest
from PIL import Image

from data_pipelines import photometric
from tests.data_pipelines.helpers import ScriptedRng


def test_photometric_brightness_then_contrast_last():
  image = np.array([[[100, 200, 0]]], np.uint8)
  # brightness on (+10); mode 0 (contrast last); saturation off; hue off; contrast on (x2).
  out = photometric.photometric_distortion(image, ScriptedRng(1, 10.0, 0, 0, 0, 1, 2.0))
  np.testing.assert_array_equal(out, [[[220, 255, 20]]])


def test_photometric_contrast_first_then_brightness_is_not_commuted():
  image = np.array([[[100, 200, 0]]], np.uint8)
  # brightness on (-50) -> (50, 150, 0); mode 1: contrast on (x1.5) -> (75, 225, 0).
  out = photometric.photometric_distortion(image, ScriptedRng(1, -50.0, 1, 1, 1.5, 0, 0))
  np.testing.assert_array_equal(out, [[[75, 225, 0]]])


def test_photometric_hue_shift_of_pure_red():
  red = np.zeros((1, 1, 3), np.uint8)
  red[..., 0] = 255
  # Hue +18 of 180 = 36 degrees: (255, 153, 0).
  out = photometric.photometric_distortion(red, ScriptedRng(0, 0, 0, 1, 18, 0))
  np.testing.assert_array_equal(out, [[[255, 153, 0]]])


def test_photometric_saturation_zero_gives_gray():
  image = np.array([[[200, 100, 50]]], np.uint8)
  out = photometric.photometric_distortion(image, ScriptedRng(0, 0, 1, 0.0, 0, 0))
  np.testing.assert_array_equal(out, [[[200, 200, 200]]])  # V = max channel.


# References for torchvision ColorJitter's PIL path, from Pillow's C code: blends in float32,
# truncated; grey L = (19595 R + 38470 G + 7471 B + 2^15) >> 16; Pillow's 8-bit HSV conversions.
def _grey(image):
  rgb = image.astype(np.int64)
  return (19595 * rgb[..., 0] + 38470 * rgb[..., 1] + 7471 * rgb[..., 2] + 0x8000) >> 16


def _blend(base, image, factor):
  base, image = np.broadcast_arrays(np.float32(base), np.float32(image))
  return np.clip(base + np.float32(factor) * (image - base), 0, 255).astype(np.uint8)


def _rgb_to_hsv(image):
  rgb = image.astype(np.int64)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  top, bottom = rgb.max(-1), rgb.min(-1)
  spread = np.maximum(top - bottom, 1).astype(np.float32)
  rc, gc, bc = (((top - c).astype(np.float32) / spread).astype(np.float64) for c in (r, g, b))
  h = np.where(r == top, bc - gc, np.where(g == top, 2.0 + rc - bc, 4.0 + gc - rc))
  # C stores h and s as floats between double-precision steps.
  h = np.fmod(h.astype(np.float32).astype(np.float64) / 6.0 + 1.0, 1.0).astype(np.float32)
  s = (top - bottom).astype(np.float32) / np.maximum(top, 1).astype(np.float32)
  grey = top == bottom
  return np.stack([np.where(grey, 0, (h.astype(np.float64) * 255.0).astype(np.int64)),
                   np.where(grey, 0, (s.astype(np.float64) * 255.0).astype(np.int64)), top], -1)


def _hsv_to_rgb(hsv):
  h, s, v = (hsv[..., i].astype(np.float64) for i in range(3))
  sector = np.floor(h * 6.0 / 255.0)
  f, fs = h * 6.0 / 255.0 - sector, s / 255.0
  p, q, t = (np.clip(np.round(v * x), 0, 255) for x in (1.0 - fs, 1.0 - fs * f,
                                                         1.0 - fs * (1.0 - f)))
  table = np.stack([np.stack(c, -1) for c in
                    ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
  rgb = np.take_along_axis(table, (sector.astype(np.int64) % 6)[None, ..., None], 0)[0]
  return np.where((s == 0)[..., None], v[..., None], rgb).astype(np.uint8)


def _reference_jitter(image, op, factor):
  if op == 0:
    return _blend(0, image, factor)
  if op == 1:
    return _blend(int(_grey(image).mean() + 0.5), image, factor)
  if op == 2:
    return _blend(_grey(image)[..., None], image, factor)
  hsv = _rgb_to_hsv(image)
  hsv[..., 0] = (hsv[..., 0] + int(factor * 255)) % 256
  return _hsv_to_rgb(hsv)


@pytest.mark.parametrize("op, factors", [(0, (0.0, 0.73, 1.0, 1.3)), (1, (0.2, 0.8, 1.29)),
                                         (2, (0.0, 0.71, 1.3, 2.0)), (3, (-0.3, -0.05, 0.0, 0.2))])
def test_jitter_ops_are_torchvisions_pil_formulas(op, factors):
  image = np.random.default_rng(op).integers(0, 256, (23, 31, 3), dtype=np.uint8)
  image[0, :4] = [[0, 0, 0], [255, 255, 255], [90, 90, 90], [255, 0, 0]]  # greys, a pure hue
  for factor in factors:
    out = np.asarray(photometric.JITTER_OPS[op](Image.fromarray(image), factor))
    np.testing.assert_array_equal(out, _reference_jitter(image, op, factor))


class RecordingRng:
  """permutation() returns `order`; uniform(lo, hi) records its range and returns `pick(lo, hi)`."""

  def __init__(self, order, pick):
    self.order, self.pick, self.ranges = order, pick, []

  def permutation(self, n):
    assert n == 4
    return np.array(self.order)

  def uniform(self, lo, hi):
    self.ranges.append((lo, hi))
    return self.pick(lo, hi)


def test_color_jitter_draws_torchvisions_ranges_and_applies_the_drawn_order():
  image = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
  rng = RecordingRng([3, 1, 0, 2], lambda lo, hi: hi)
  out = photometric.color_jitter(image, (0.3, 1.5, 0.2, 0.1), rng)
  np.testing.assert_allclose(rng.ranges, [(0.7, 1.3), (0.0, 2.5), (0.8, 1.2), (-0.1, 0.1)])
  expected = image
  for op, factor in [(3, 0.1), (1, 2.5), (0, 1.3), (2, 1.2)]:
    expected = _reference_jitter(expected, op, factor)
  np.testing.assert_array_equal(out, expected)
  # A zero strength skips its op and its draw.
  rng = RecordingRng([0, 1, 2, 3], lambda lo, hi: lo)
  out = photometric.color_jitter(image, (0.0, 0.0, 0.5, 0.0), rng)
  assert rng.ranges == [(0.5, 1.5)]
  np.testing.assert_array_equal(out, _reference_jitter(image, 2, 0.5))
  with pytest.raises(ValueError, match="hue <= 0.5"):
    photometric.color_jitter(image, (0.2, 0.2, 0.2, 0.6), rng)
