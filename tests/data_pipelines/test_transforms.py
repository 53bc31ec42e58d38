"""Tests for the clip transforms: hand-computed mmseg cases and clip alignment."""
import cv2
import ml_collections
import numpy as np
import pytest

from data_pipelines import transforms


class ScriptedRng:
  """Returns queued values from integers()/uniform()/random(), to pin every random draw."""

  def __init__(self, *values):
    self._values = list(values)

  def _next(self, *args, **kwargs):
    del args, kwargs
    return self._values.pop(0)

  integers = uniform = random = _next


def _cfg(**overrides):
  cfg = dict(scale=(32, 32), ratio_range=(0.5, 2.0), crop_size=(24, 24), cat_max_ratio=0.75,
             flip_prob=0.5, photometric=False)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


@pytest.mark.parametrize("hw, scale, expected", [
    ((480, 640), (853, 480), (480, 640)),  # Short edge already at 480, long edge fits.
    ((100, 200), (64, 64), (32, 64)),  # factor min(64/200, 64/100) = 0.32.
    ((480, 853), (853, 480), (480, 853)),  # VSPW frames at the VSPW scale.
    ((3, 7), (10, 4), (4, 9)),  # factor min(10/7, 4/3) = 1.333: 9.33 -> 9, 4.0 -> 4.
])
def test_rescale_size(hw, scale, expected):
  assert transforms.rescale_size(hw, scale) == expected


def test_random_rescale_uses_ratio_times_scale_for_all_frames():
  frames = np.zeros((3, 32, 64, 3), np.uint8)
  labels = np.zeros((3, 32, 64), np.uint8)
  # ratio 0.5 -> target (16, 16) -> factor min(16/64, 16/32) = 0.25 -> (8, 16).
  out_f, out_l = transforms.random_rescale(frames, labels, (32, 32), (0.5, 1.0), ScriptedRng(0.0))
  assert out_f.shape == (3, 8, 16, 3) and out_l.shape == (3, 8, 16)


def test_rescale_is_bilinear_for_frames_and_nearest_for_labels():
  frames = np.zeros((1, 2, 2, 3), np.uint8)
  frames[0, :, 1] = 200
  labels = np.array([[[0, 7], [0, 7]]], np.uint8)
  out_f, out_l = transforms.random_rescale(frames, labels, (4, 4), (1.0, 1.0), ScriptedRng(0.0))
  assert set(np.unique(out_l)) == {0, 7}
  assert set(np.unique(out_f)) == {0, 50, 150, 200}  # Bilinear blends at 1/4 and 3/4.


def test_random_crop_checks_the_target_frames_label():
  # Target: classes 0 | 1 split at column 30; a 10x10 crop is varied enough (< 0.75) only for
  # offsets 23-27 (5 of 31). Reference frames are one class: checking them could never pass.
  target = np.zeros((10, 40), np.uint8)
  target[:, 30:] = 1
  labels = np.stack([np.zeros_like(target), target])
  frames = np.zeros((2, 10, 40, 3), np.uint8)
  passed = 0
  for seed in range(300):
    _, out = transforms.random_crop(frames, labels, (10, 10), 0.75, np.random.default_rng(seed))
    counts = np.bincount(out[-1].ravel(), minlength=2)
    passed += counts.max() / counts.sum() < 0.75
  # 11 draws: P(pass) = 1 - (26/31)^11 = 0.86; a single draw would pass 5/31 = 0.16 of the time.
  assert 0.78 < passed / 300 < 0.93


def test_random_crop_ignores_255_in_the_ratio():
  target = np.full((4, 4), 255, np.uint8)
  target[0, 0], target[0, 1] = 1, 2  # Only two labelled pixels, one each: ratio 0.5.
  frames = np.zeros((1, 4, 4, 3), np.uint8)
  # First box (0, 0) is accepted at once: the rng is asked for exactly two offsets.
  _, out = transforms.random_crop(frames, target[None], (4, 4), 0.75, ScriptedRng(0, 0))
  np.testing.assert_array_equal(out[0], target)


def test_random_crop_uses_one_box_for_the_clip():
  frames = np.arange(3 * 8 * 8 * 3, dtype=np.int64).reshape(3, 8, 8, 3) % 251
  frames = frames.astype(np.uint8)
  labels = np.zeros((3, 8, 8), np.uint8)
  out_f, _ = transforms.random_crop(frames, labels, (4, 5), 1.0, ScriptedRng(2, 3))
  np.testing.assert_array_equal(out_f, frames[:, 2:6, 3:8])


def test_hflip_all_or_nothing():
  frames = np.arange(2 * 1 * 3 * 3, dtype=np.uint8).reshape(2, 1, 3, 3)
  labels = np.array([[[0, 1, 2]], [[3, 4, 5]]], np.uint8)
  f, l = transforms.random_hflip(frames, labels, 0.5, ScriptedRng(0.2))
  np.testing.assert_array_equal(l, [[[2, 1, 0]], [[5, 4, 3]]])
  np.testing.assert_array_equal(f, frames[:, :, ::-1])
  f, l = transforms.random_hflip(frames, labels, 0.5, ScriptedRng(0.7))
  np.testing.assert_array_equal(l, labels)


def test_photometric_brightness_then_contrast_last():
  image = np.array([[[100, 200, 0]]], np.uint8)
  # brightness on (+10); mode 0 (contrast last); saturation off; hue off; contrast on (x2).
  out = transforms.photometric_distortion(image, ScriptedRng(1, 10.0, 0, 0, 0, 1, 2.0))
  np.testing.assert_array_equal(out, [[[220, 255, 20]]])


def test_photometric_contrast_first_then_brightness_is_not_commuted():
  image = np.array([[[100, 200, 0]]], np.uint8)
  # brightness on (-50) -> (50, 150, 0); mode 1: contrast on (x1.5) -> (75, 225, 0).
  out = transforms.photometric_distortion(image, ScriptedRng(1, -50.0, 1, 1, 1.5, 0, 0))
  np.testing.assert_array_equal(out, [[[75, 225, 0]]])


def test_photometric_hue_shift_of_pure_red():
  red = np.zeros((1, 1, 3), np.uint8)
  red[..., 0] = 255
  # Hue +18 of 180 = 36 degrees: (255, 153, 0).
  out = transforms.photometric_distortion(red, ScriptedRng(0, 0, 0, 1, 18, 0))
  np.testing.assert_array_equal(out, [[[255, 153, 0]]])


def test_photometric_saturation_zero_gives_gray():
  image = np.array([[[200, 100, 50]]], np.uint8)
  out = transforms.photometric_distortion(image, ScriptedRng(0, 0, 1, 0.0, 0, 0))
  np.testing.assert_array_equal(out, [[[200, 200, 200]]])  # V = max channel.


def test_pad_image_zero_label_ignore():
  frames = np.full((2, 3, 2, 3), 9, np.uint8)
  labels = np.ones((2, 3, 2), np.uint8)
  f, l = transforms.pad_to(frames, labels, (4, 4))
  assert f.shape == (2, 4, 4, 3) and l.shape == (2, 4, 4)
  assert (f[:, 3:] == 0).all() and (f[:, :, 2:] == 0).all() and (f[:, :3, :2] == 9).all()
  assert (l[:, 3:] == 255).all() and (l[:, :, 2:] == 255).all() and (l[:, :3, :2] == 1).all()


def _moving_block_clip(num_frames=4, size=32):
  """Labels: a block moving right over a 4-class background; frames = palette[label]."""
  palette = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40],
                      [90, 90, 90]], np.uint8)
  labels = np.zeros((num_frames, size, size), np.uint8)
  labels[:, size // 2:, :] = 1
  labels[:, :, size // 2:] += 2
  for t in range(num_frames):
    labels[t, 8:20, 4 + 6 * t:14 + 6 * t] = 4
  return palette, palette[labels], labels


def _interior(label, radius=2):
  """Pixels whose (2r+1)^2 neighbourhood has one class, away from padding and the crop's edge
  (bilinear resizing blended there with pixels the crop cut away)."""
  kernel = np.ones((2 * radius + 1,) * 2, np.uint8)
  lo = cv2.erode(label, kernel, borderType=cv2.BORDER_REPLICATE)
  hi = cv2.dilate(label, kernel, borderType=cv2.BORDER_REPLICATE)
  inside = (lo == hi) & (label != 255)
  inside[:radius], inside[-radius:], inside[:, :radius], inside[:, -radius:] = (False,) * 4
  return inside


def test_clip_alignment_exact_without_rescale():
  palette, frames, labels = _moving_block_clip()
  cfg = _cfg(ratio_range=(1.0, 1.0), flip_prob=0.5, crop_size=(20, 24))
  for seed in range(10):
    out_f, out_l = transforms.train_transform(frames, labels, cfg, np.random.default_rng(seed))
    assert out_f.shape == (4, 20, 24, 3) and out_l.dtype == np.int32
    np.testing.assert_array_equal(out_f, palette[out_l])


def test_clip_alignment_with_rescale_crop_flip_and_pad():
  palette, frames, labels = _moving_block_clip()
  cfg = _cfg(crop_size=(40, 40))  # Larger than some rescaled clips: padding happens too.
  padded = 0
  for seed in range(20):
    out_f, out_l = transforms.train_transform(frames, labels, cfg, np.random.default_rng(seed))
    padded += (out_l == 255).any()
    for t in range(4):
      inside = _interior(out_l[t].astype(np.uint8))
      np.testing.assert_array_equal(out_f[t][inside], palette[out_l[t][inside]])
      assert (out_f[t][out_l[t] == 255] == 0).all()
    # Frames are not interchangeable: the block moves, so frame 0 disagrees with label 3.
    inside = _interior(out_l[3].astype(np.uint8))
    assert (out_f[0][inside] != palette[out_l[3][inside]]).any(axis=-1).sum() > 0
  assert padded > 0


def test_photometric_is_drawn_per_frame():
  frames = np.full((4, 8, 8, 3), 120, np.uint8)
  labels = np.zeros((4, 8, 8), np.uint8)
  cfg = _cfg(ratio_range=(1.0, 1.0), scale=(8, 8), crop_size=(8, 8), photometric=True)
  out_f, _ = transforms.train_transform(frames, labels, cfg, np.random.default_rng(3))
  assert len({out_f[t].tobytes() for t in range(4)}) > 1


@pytest.mark.parametrize("hw, scale, divisor, expected", [
    ((100, 150), (128, 128), 32, (96, 128)),  # Rescale to (85, 128), align up to (96, 128).
    ((480, 853), (853, 480), 32, (480, 864)),  # VSPW.
    ((64, 64), (64, 64), 32, (64, 64)),
])
def test_test_resize_shapes(hw, scale, divisor, expected):
  assert transforms.test_resize_shape(hw, scale, divisor) == expected
  frame = np.random.default_rng(0).integers(0, 255, (*hw, 3), dtype=np.uint8)
  assert transforms.test_resize(frame, scale, divisor).shape == (*expected, 3)


def test_test_resize_is_two_resizes():
  frame = np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8)
  first = cv2.resize(frame, (128, 85), interpolation=cv2.INTER_LINEAR)
  expected = cv2.resize(first, (128, 96), interpolation=cv2.INTER_LINEAR)
  np.testing.assert_array_equal(transforms.test_resize(frame, (128, 128), 32), expected)
  same = np.ones((64, 64, 3), np.uint8)
  np.testing.assert_array_equal(transforms.test_resize(same, (64, 64), 32), same)
