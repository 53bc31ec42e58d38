"""Tests for the clip transforms: hand-computed mmseg cases and clip alignment."""
import cv2
import ml_collections
import numpy as np
import pytest
from PIL import Image

from data_pipelines import transforms
from tests.data_pipelines.helpers import ScriptedRng
from vssjax.configs_lib import base_config
from vssjax.errors import SetupError
from vssjax.models import layers

C = transforms.Clip


def _cfg(**overrides):
  """`base_config`'s train transform at test size, photometric distortion off."""
  cfg = base_config().data.train_transform
  cfg.update(dict(scale=(32, 32), ratio_range=(0.5, 2.0), crop_size=(24, 24), cat_max_ratio=0.75,
                  flip_prob=0.5, photometric=False), **overrides)
  return cfg


@pytest.mark.parametrize("hw, scale, expected", [
    ((480, 640), (853, 480), (480, 640)),  # Short edge already at 480, long edge fits.
    ((100, 200), (64, 64), (32, 64)),  # factor min(64/200, 64/100) = 0.32.
    ((480, 853), (853, 480), (480, 853)),  # VSPW frames at the VSPW scale.
    ((3, 7), (10, 4), (4, 9)),  # factor min(10/7, 4/3) = 1.333: 9.33 -> 9, 4.0 -> 4.
])
def test_rescale_size(hw, scale, expected):
  assert transforms.rescale_size(hw, scale) == expected



def test_rescale_size_rounds_half_up_as_mmcv():
  """mmcv's rescale_size rounds each side as int(side * factor + 0.5): a 1080x1920 frame fitted
  into VSPW's (853, 480) is 479.8 rows, so 480x853, where truncating would give 479 rows (every
  1080p/720p frame one row short of the size the reference trains and tests at)."""
  assert transforms.rescale_size((1080, 1920), (853, 480)) == (480, 853)
  assert transforms.rescale_size((720, 1280), (853, 480)) == (480, 853)
  assert transforms.rescale_size((2, 5), (8, 3)) == (3, 8)  # factor 1.5: 7.5 columns -> 8.

def test_random_rescale_uses_ratio_times_scale_for_all_frames():
  frames = np.zeros((3, 32, 64, 3), np.uint8)
  labels = np.zeros((3, 32, 64), np.uint8)
  # ratio 0.5 -> target (16, 16) -> factor min(16/64, 16/32) = 0.25 -> (8, 16).
  out_f, out_l, _ = transforms.random_rescale(C(frames, labels), (32, 32), (0.5, 1.0),
                                              ScriptedRng(0.0))
  assert out_f.shape == (3, 8, 16, 3) and out_l.shape == (3, 8, 16)


def test_rescale_is_bilinear_for_frames_and_nearest_for_labels():
  frames = np.zeros((1, 2, 2, 3), np.uint8)
  frames[0, :, 1] = 200
  labels = np.array([[[0, 7], [0, 7]]], np.uint8)
  out_f, out_l, _ = transforms.random_rescale(C(frames, labels), (4, 4), (1.0, 1.0),
                                              ScriptedRng(0.0))
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
    _, out, _ = transforms.random_crop(C(frames, labels), (10, 10), 0.75,
                                       np.random.default_rng(seed))
    counts = np.bincount(out[-1].ravel(), minlength=2)
    passed += counts.max() / counts.sum() < 0.75
  # 11 draws: P(pass) = 1 - (26/31)^11 = 0.86; a single draw would pass 5/31 = 0.16 of the time.
  assert 0.78 < passed / 300 < 0.93


def test_random_crop_ignores_255_in_the_ratio():
  target = np.full((4, 4), 255, np.uint8)
  target[0, 0], target[0, 1] = 1, 2  # Only two labelled pixels, one each: ratio 0.5.
  frames = np.zeros((1, 4, 4, 3), np.uint8)
  # First box (0, 0) is accepted at once: the rng is asked for exactly two offsets.
  _, out, _ = transforms.random_crop(C(frames, target[None]), (4, 4), 0.75, ScriptedRng(0, 0))
  np.testing.assert_array_equal(out[0], target)



def test_random_crop_redraws_a_box_whose_largest_class_is_exactly_cat_max_ratio():
  """mmseg's RandomCrop keeps a box only while its largest class covers strictly less than
  cat_max_ratio of the non-ignored pixels: a box at exactly 0.75 is drawn again. Accepting it
  would train on more near-one-class crops than the reference does."""
  target = np.zeros((4, 8), np.uint8)
  target[0] = 255  # ignored, not counted
  target[1:, 3] = 1  # left box: 9 pixels of class 0, 3 of class 1 -> exactly 0.75
  target[1:, 6:] = 1  # right box: 6 and 6 -> 0.5
  frames = np.broadcast_to(np.arange(8, dtype=np.uint8)[None, None, :, None], (1, 4, 8, 3))
  clip = C(frames, target[None])
  out = transforms.random_crop(clip, (4, 4), 0.75, ScriptedRng(0, 0, 0, 4))
  np.testing.assert_array_equal(out.labels[0], target[:, 4:])  # the left box was redrawn
  np.testing.assert_array_equal(out.frames[0, 0, :, 0], [4, 5, 6, 7])
  kept = transforms.random_crop(clip, (4, 4), 0.76, ScriptedRng(0, 0))  # under 0.76: kept
  np.testing.assert_array_equal(kept.labels[0], target[:, :4])

def test_random_crop_uses_one_box_for_the_clip():
  frames = np.arange(3 * 8 * 8 * 3, dtype=np.int64).reshape(3, 8, 8, 3) % 251
  frames = frames.astype(np.uint8)
  labels = np.zeros((3, 8, 8), np.uint8)
  out_f, _, _ = transforms.random_crop(C(frames, labels), (4, 5), 1.0, ScriptedRng(2, 3))
  np.testing.assert_array_equal(out_f, frames[:, 2:6, 3:8])


@pytest.mark.parametrize("axis", [0, 1])
def test_random_crop_draws_every_offset_up_to_the_margin(axis):
  """mmseg draws each offset with np.random.randint(0, margin + 1): with a margin of 2 the box
  starts at 0, 1 and 2, the last one included, along that axis, and only at 0 along the other."""
  crop = (4, 5)
  hw = tuple(c + 2 * (i == axis) for i, c in enumerate(crop))
  rows, cols = np.indices(hw)
  frames = np.stack([rows, cols, cols], -1)[None].astype(np.uint8)  # pixel = its own (row, col)
  labels = np.zeros((1,) + hw, np.uint8)
  starts = set()
  for seed in range(100):
    out_f, _, _ = transforms.random_crop(C(frames, labels), crop, 1.0, np.random.default_rng(seed))
    starts.add(tuple(int(v) for v in out_f[0, 0, 0, :2]))
  assert starts == {tuple(o * (i == axis) for i in range(2)) for o in (0, 1, 2)}


def test_hflip_all_or_nothing():
  frames = np.arange(2 * 1 * 3 * 3, dtype=np.uint8).reshape(2, 1, 3, 3)
  labels = np.array([[[0, 1, 2]], [[3, 4, 5]]], np.uint8)
  f, l, _ = transforms.random_hflip(C(frames, labels), 0.5, ScriptedRng(0.2))
  np.testing.assert_array_equal(l, [[[2, 1, 0]], [[5, 4, 3]]])
  np.testing.assert_array_equal(f, frames[:, :, ::-1])
  f, l, _ = transforms.random_hflip(C(frames, labels), 0.5, ScriptedRng(0.7))
  np.testing.assert_array_equal(l, labels)


@pytest.mark.parametrize("which, changed", [("all", [True, True, True]),
                                            ("target", [False, False, True])])
def test_color_jitter_frames_all_or_target_only(which, changed):
  frame = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  frames = np.stack([frame] * 3)
  cfg = _cfg(scale=(8, 8), ratio_range=(1.0, 1.0), crop_size=(8, 8), flip_prob=0.0,
             color_jitter=(0.4, 0.4, 0.4, 0.1), color_jitter_frames=which)
  out = transforms.train_transform(C(frames, np.zeros((3, 8, 8), np.uint8)), cfg,
                                   np.random.default_rng(2))
  assert [not np.array_equal(out.frames[t], frame) for t in range(3)] == changed
  # One draw per jittered frame: equal frames come out different.
  assert len({out.frames[t].tobytes() for t in range(3)}) == (3 if which == "all" else 2)


@pytest.mark.parametrize("fill, colour", [(0, (0, 0, 0)), ((123.675, 116.28, 103.53),
                                                            transforms.MEAN_COLOUR)])
def test_pad_bottom_right_with_the_fill_and_label_ignore(fill, colour):
  frames = np.full((2, 3, 2, 3), 9, np.uint8)
  labels = np.ones((2, 3, 2), np.uint8)
  f, l, _ = transforms.pad_to(C(frames, labels), (4, 4), fill)
  assert f.shape == (2, 4, 4, 3) and l.shape == (2, 4, 4)
  assert (f[:, 3:] == colour).all() and (f[:, :, 2:] == colour).all()
  assert (f[:, :3, :2] == 9).all()
  assert (l[:, 3:] == 255).all() and (l[:, :, 2:] == 255).all() and (l[:, :3, :2] == 1).all()


def test_mean_colour_normalises_to_about_zero():
  """Padding with MEAN_COLOUR stands for mmseg's pad of the normalised image with 0."""
  normalised = ((np.float32(transforms.MEAN_COLOUR) - np.float32(layers.IMAGENET_MEAN))
                / np.float32(layers.IMAGENET_STD))
  assert np.abs(normalised).max() < 0.01
  assert transforms.MEAN_COLOUR == tuple(int(v) for v in np.rint(layers.IMAGENET_MEAN))


def test_train_transform_pads_with_the_mean_colour_unless_told():
  frames = np.full((1, 8, 8, 3), 7, np.uint8)
  labels = np.zeros((1, 8, 8), np.uint8)
  cfg = _cfg(scale=(8, 8), ratio_range=(1.0, 1.0), crop_size=(10, 10), flip_prob=0.0)
  out = transforms.train_transform(C(frames, labels), cfg, np.random.default_rng(0))
  np.testing.assert_array_equal(out.frames[0, 9, 9], transforms.MEAN_COLOUR)
  cfg.pad_fill = (0, 0, 0)  # DCFM pads the image before normalising it.
  out = transforms.train_transform(C(frames, labels), cfg, np.random.default_rng(0))
  np.testing.assert_array_equal(out.frames[0, 9, 9], (0, 0, 0))


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
    out_f, out_l, _ = transforms.train_transform(C(frames, labels), cfg,
                                                 np.random.default_rng(seed))
    assert out_f.shape == (4, 20, 24, 3) and out_l.dtype == np.int32
    np.testing.assert_array_equal(out_f, palette[out_l])


def test_clip_alignment_with_rescale_crop_flip_and_pad():
  palette, frames, labels = _moving_block_clip()
  cfg = _cfg(crop_size=(40, 40))  # Larger than some rescaled clips: padding happens too.
  padded = 0
  for seed in range(20):
    out_f, out_l, _ = transforms.train_transform(C(frames, labels), cfg,
                                                 np.random.default_rng(seed))
    padded += (out_l == 255).any()
    for t in range(4):
      inside = _interior(out_l[t].astype(np.uint8))
      np.testing.assert_array_equal(out_f[t][inside], palette[out_l[t][inside]])
      assert (out_f[t][out_l[t] == 255] == transforms.MEAN_COLOUR).all()
    # Frames are not interchangeable: the block moves, so frame 0 disagrees with label 3.
    inside = _interior(out_l[3].astype(np.uint8))
    assert (out_f[0][inside] != palette[out_l[3][inside]]).any(axis=-1).sum() > 0
  assert padded > 0


def test_scaled_crop_crops_int_of_scaled_size_then_resizes():
  """DCFM's Cityscapes crop: a box of (int(4 * 1.5), int(8 * 1.5)) = (6, 12) at the drawn offset,
  resized to crop_size (bilinear frames, nearest labels; cv2's, under geometry 'semseg')."""
  frames = np.random.default_rng(0).integers(0, 255, (2, 10, 20, 3), dtype=np.uint8)
  labels = np.arange(200, dtype=np.uint8).reshape(1, 10, 20).repeat(2, 0)
  out = transforms.random_scaled_crop(C(frames, labels), (4, 8), (0.5, 2.0), 1.0, 0,
                                      ScriptedRng(1.5, 2, 3), "semseg")
  box = (slice(2, 8), slice(3, 15))
  for t in range(2):
    np.testing.assert_array_equal(out.frames[t], cv2.resize(frames[t][box], (8, 4),
                                                            interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(out.labels[t], cv2.resize(labels[t][box], (8, 4),
                                                            interpolation=cv2.INTER_NEAREST))


def test_scaled_crop_pads_every_side_like_torchvision_pad_if_needed():
  """A 6x6 box on a 4x4 frame: the frame is padded by 2 on each side (8x8), so offsets 0..2 put
  it anywhere in the box; here rows 2-5 and columns 0-3."""
  frames = np.full((1, 4, 4, 3), 9, np.uint8)
  out = transforms.random_scaled_crop(C(frames, np.ones((1, 4, 4), np.uint8)), (6, 6),
                                      (1.0, 1.0), 1.0, (1, 2, 3), ScriptedRng(1.0, 0, 2))
  inside = np.zeros((6, 6), bool)
  inside[2:, :4] = True
  assert (out.frames[0][inside] == 9).all() and (out.frames[0][~inside] == (1, 2, 3)).all()
  assert (out.labels[0][inside] == 1).all() and (out.labels[0][~inside] == 255).all()


def test_scaled_crop_mode_replaces_rescale_and_keeps_the_clip_aligned():
  palette, frames, labels = _moving_block_clip()
  cfg = _cfg(crop_size=(16, 24), crop_scale_range=(0.5, 2.0), cat_max_ratio=1.0,
             geometry="torchvision")
  boxes = set()
  for seed in range(12):
    out_f, out_l, _ = transforms.train_transform(C(frames, labels), cfg,
                                                 np.random.default_rng(seed))
    assert out_f.shape == (4, 16, 24, 3) and out_l.shape == (4, 16, 24)
    for t in range(4):
      inside = _interior(out_l[t].astype(np.uint8))
      np.testing.assert_array_equal(out_f[t][inside], palette[out_l[t][inside]])
    boxes.add(int((out_l[0] == 255).any()))  # s > 4/3 boxes stick out of the 32x32 frame.
  assert boxes == {0, 1}


def test_the_scaled_crop_pads_as_its_geometry_and_mmseg_s_is_refused():
  """A 2x2 frame in a 4x4 box: semseg's pad centres it (one box position), torchvision's adds the
  shortfall at both ends (the frame anywhere). The padding was torchvision's whatever the
  geometry; mmseg's crop pads after its flip, which a crop-then-resize cannot."""
  clip = C(np.full((1, 2, 2, 3), 9, np.uint8), np.ones((1, 2, 2), np.uint8))
  centred = np.zeros((4, 4), bool)
  centred[1:3, 1:3] = True
  placements = {geometry: set() for geometry in ("semseg", "torchvision")}
  for geometry, seen in placements.items():
    for seed in range(8):
      out = transforms.random_scaled_crop(clip, (4, 4), (1.0, 1.0), 1.0, 0, np.random.default_rng(
          seed), geometry)
      seen.add((out.labels[0] == 1).tobytes())
  assert placements["semseg"] == {centred.tobytes()} and len(placements["torchvision"]) > 1
  with pytest.raises(SetupError, match=r"crop_scale_range .* geometry='mmseg' pads after"):
    transforms.check_train_transform(_cfg(crop_scale_range=(0.5, 2.0)))
  transforms.check_train_transform(_cfg(crop_scale_range=(0.5, 2.0), geometry="semseg"))


def test_photometric_is_drawn_per_frame():
  frames = np.full((4, 8, 8, 3), 120, np.uint8)
  labels = np.zeros((4, 8, 8), np.uint8)
  cfg = _cfg(ratio_range=(1.0, 1.0), scale=(8, 8), crop_size=(8, 8), photometric=True)
  out_f, _, _ = transforms.train_transform(C(frames, labels), cfg, np.random.default_rng(3))
  assert len({out_f[t].tobytes() for t in range(4)}) > 1


def _flow_clip(hw=(4, 6), vector=(1.0, 2.0)):
  frames = np.zeros((2, *hw, 3), np.uint8)
  labels = np.zeros((2, *hw), np.uint8)
  flow = np.broadcast_to(np.float32(vector), (1, *hw, 2)).copy()
  return C(frames, labels, flow)


def test_flow_vectors_scale_with_resize():
  out = transforms._resize_clip(_flow_clip((4, 6)), (8, 18))  # x3 in width, x2 in height.
  assert out.flow.shape == (1, 8, 18, 2) and out.flow.dtype == np.float32
  np.testing.assert_allclose(out.flow, np.broadcast_to([3.0, 4.0], (1, 8, 18, 2)))


def test_flow_flip_mirrors_the_field_and_negates_x():
  clip = _flow_clip((2, 3))
  clip.flow[0, :, :, 0] = [[1, 2, 3], [4, 5, 6]]
  out = transforms.random_hflip(clip, 0.5, ScriptedRng(0.2))
  np.testing.assert_array_equal(out.flow[0, :, :, 0], [[-3, -2, -1], [-6, -5, -4]])
  np.testing.assert_array_equal(out.flow[0, :, :, 1], 2)


def test_rotation_by_90_rotates_frames_labels_and_flow_vectors():
  clip = _flow_clip((5, 5), vector=(1.0, 0.0))
  labels = np.arange(25, dtype=np.uint8).reshape(5, 5)
  clip = clip._replace(labels=np.stack([labels, labels]))
  out = transforms.rotate(clip, 90.0, 0)
  np.testing.assert_array_equal(out.labels[0], np.rot90(labels))  # Counter-clockwise.
  # A rightward motion turns upward (y points down): (1, 0) -> (0, -1).
  np.testing.assert_allclose(out.flow[0, 1:4, 1:4], np.broadcast_to([0.0, -1.0], (3, 3, 2)),
                             atol=1e-5)


@pytest.mark.parametrize("geometry, centre", [("mmseg", (2.5, 1.5)), ("semseg", (3.0, 2.0))])
def test_rotation_turns_about_its_librarys_centre(geometry, centre):
  """mmcv's imrotate turns about ((w-1)/2, (h-1)/2), semseg's RandRotate (ETC) about (w/2, h/2):
  by 180 degrees a pixel at x lands at 2 c_x - x, so semseg's shifts the image by one pixel."""
  labels = np.arange(24, dtype=np.uint8).reshape(1, 4, 6)
  out = transforms.rotate(C(np.zeros((1, 4, 6, 3), np.uint8), labels), 180.0, 0, geometry)
  expected = np.full((4, 6), 255, np.uint8)
  for y, x in np.ndindex(4, 6):
    ty, tx = int(2 * centre[1]) - y, int(2 * centre[0]) - x
    if 0 <= ty < 4 and 0 <= tx < 6:
      expected[ty, tx] = labels[0, y, x]
  np.testing.assert_array_equal(out.labels[0], expected)


def test_rotation_fills_image_and_label():
  clip = C(np.full((1, 6, 6, 3), 50, np.uint8), np.ones((1, 6, 6), np.uint8))
  out = transforms.rotate(clip, 45.0, (1, 2, 3))
  np.testing.assert_array_equal(out.frames[0, 0, 0], [1, 2, 3])
  assert out.labels[0, 0, 0] == 255 and out.labels[0, 3, 3] == 1



def test_random_rotate_always_turns_at_prob_one_and_never_at_prob_zero():
  """DCFM's configs set rotate_prob=1.0: every clip must be turned by the drawn angle. With the
  draw's test reversed, those runs would train without rotation and a prob 0 run with it."""
  frames = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
  labels = np.stack([np.arange(64, dtype=np.uint8).reshape(8, 8)] * 2)
  clip = C(frames, labels)
  out = transforms.random_rotate(clip, 20.0, 1.0, 0, ScriptedRng(0.999, 15.0))
  expected = transforms.rotate(clip, 15.0, 0)
  assert not np.array_equal(out.labels, labels)
  np.testing.assert_array_equal(out.frames, expected.frames)
  np.testing.assert_array_equal(out.labels, expected.labels)
  assert transforms.random_rotate(clip, 20.0, 0.0, 0, ScriptedRng(0.0, 15.0)) is clip
  for seed in range(5):  # numpy's draws: random() < 1 always, never < 0
    rng = np.random.default_rng(seed)
    rng.random()
    angle = rng.uniform(-20.0, 20.0)
    out = transforms.random_rotate(clip, 20.0, 1.0, 0, np.random.default_rng(seed))
    np.testing.assert_array_equal(out.frames, transforms.rotate(clip, angle, 0).frames)
    assert transforms.random_rotate(clip, 20.0, 0.0, 0, np.random.default_rng(seed)) is clip

def test_blur_is_all_or_nothing_and_is_cv2_5x5():
  frames = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
  clip = C(frames, np.zeros((2, 8, 8), np.uint8))
  out = transforms.random_blur(clip, 0.5, ScriptedRng(0.3))
  # sigma 0 with a 5x5 kernel: OpenCV's fixed binomial kernel [1, 4, 6, 4, 1] / 16, reflect-101.
  kernel = np.float32([1, 4, 6, 4, 1]) / 16
  expected = cv2.sepFilter2D(frames[1].astype(np.float32), -1, kernel, kernel,
                             borderType=cv2.BORDER_REFLECT_101)
  np.testing.assert_allclose(out.frames[1], np.round(expected), atol=1)
  assert transforms.random_blur(clip, 0.5, ScriptedRng(0.7)).frames is frames


def test_flow_crop_and_pad_follow_the_frames():
  clip = _flow_clip((6, 6))
  clip.flow[0, :, :, 0] = np.arange(36).reshape(6, 6)
  out = transforms.random_crop(clip, (3, 4), 1.0, ScriptedRng(2, 1))
  np.testing.assert_array_equal(out.flow[0, :, :, 0], np.arange(36).reshape(6, 6)[2:5, 1:5])
  padded = transforms.pad_to(out, (4, 5), transforms.MEAN_COLOUR)
  assert padded.flow.shape == (1, 4, 5, 2) and (padded.flow[0, 3] == 0).all()


@pytest.mark.parametrize("geometry", ["mmseg", "semseg"])
def test_transformed_flow_still_warps_frame_to_frame(geometry):
  """Frame 1 is frame 0 moved by (4, -3), i.e. flow (-4, 3); after rescale, rotation, crop and flip
  the carried flow must still bring frame 0 onto frame 1 (backward warping, vssjax.flow convention).
  'semseg' (ETC) rescales by cv2's fx/fy and flips before its crop: the vectors scale by fx and
  fy."""
  rng = np.random.default_rng(0)
  big = cv2.GaussianBlur(cv2.resize(rng.integers(0, 255, (20, 20), dtype=np.uint8), (100, 100),
                                    interpolation=cv2.INTER_CUBIC), (7, 7), 0)
  f0, f1 = big[20:80, 20:80], big[23:83, 16:76]  # f1(p) = f0(p + (-4, 3)).
  frames = np.repeat(np.stack([f0, f1])[..., None], 3, -1)
  flow = np.broadcast_to(np.float32([-4, 3]), (1, 60, 60, 2)).copy()
  cfg = _cfg(scale=(60, 60), ratio_range=(0.8, 1.5), crop_size=(40, 40), cat_max_ratio=1.0,
             photometric=False, rotate_degrees=30.0, rotate_prob=1.0, geometry=geometry)
  for seed in range(4):
    out = transforms.train_transform(C(frames, np.zeros((2, 60, 60), np.uint8), flow), cfg,
                                     np.random.default_rng(seed))
    ys, xs = np.mgrid[:40, :40].astype(np.float32)
    warped = cv2.remap(out.frames[0, ..., 0], xs + out.flow[0, ..., 0], ys + out.flow[0, ..., 1],
                       cv2.INTER_LINEAR)
    # |flow| <= 5 * 1.5 px: keep pixels whose source lies inside the crop and off the fill.
    valid = cv2.erode((out.labels[0] != 255).astype(np.uint8), np.ones((17, 17), np.uint8),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    assert valid.sum() > 100
    error = np.abs(warped.astype(float) - out.frames[1, ..., 0])[valid]
    assert error.mean() < 2, (seed, error.mean())
    wrong = cv2.remap(out.frames[0, ..., 0], xs - out.flow[0, ..., 0], ys - out.flow[0, ..., 1],
                      cv2.INTER_LINEAR)  # Sanity: the negated flow must not fit.
    assert np.abs(wrong.astype(float) - out.frames[1, ..., 0])[valid].mean() > 10


def test_rescale_without_keep_ratio_gives_exactly_ratio_times_scale():
  """DCFM's VSPW resize (specs/dcfm.md §6.2): (int(480 s), int(853 s)) whatever the frame's
  aspect ratio; keep-ratio would fit a 4:3 frame to (240, 320) at s = 0.5."""
  clip = C(np.zeros((2, 480, 640, 3), np.uint8), np.zeros((2, 480, 640), np.uint8))
  out = transforms.random_rescale(clip, (853, 480), (0.5, 2.0), ScriptedRng(0.0),
                                  keep_ratio=False)
  assert out.frames.shape == (2, 240, 426, 3) and out.labels.shape == (2, 240, 426)
  assert transforms.random_rescale(clip, (853, 480), (0.5, 2.0), ScriptedRng(0.0)
                                   ).frames.shape == (2, 240, 320, 3)


def test_torchvision_geometry_resizes_as_pillow_does():
  """torchvision's Resize on a PIL image is Pillow's resize: an antialiased bilinear when it
  shrinks and a nearest that takes the pixel under each target centre, both unlike cv2's."""
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (2, 30, 40, 3), dtype=np.uint8)
  labels = rng.integers(0, 5, (2, 30, 40), dtype=np.uint8)
  out = transforms._resize_clip(C(frames, labels), (11, 17), "torchvision")
  for t in range(2):
    np.testing.assert_array_equal(
        out.frames[t], np.asarray(Image.fromarray(frames[t]).resize((17, 11), Image.BILINEAR)))
    np.testing.assert_array_equal(
        out.labels[t], np.asarray(Image.fromarray(labels[t]).resize((17, 11), Image.NEAREST)))
  cv2_out = transforms._resize_clip(C(frames, labels), (11, 17))
  assert (out.frames != cv2_out.frames).any() and (out.labels != cv2_out.labels).any()


def test_torchvision_geometry_rotates_with_nearest_and_the_fills():
  """RandomRotation's default on PIL images: Image.rotate(angle, NEAREST, fillcolor), so every
  output pixel is an input pixel or the fill, never a blend; labels filled with 255."""
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (1, 20, 30, 3), dtype=np.uint8)
  labels = rng.integers(0, 5, (1, 20, 30), dtype=np.uint8)
  out = transforms.rotate(C(frames, labels), 17.0, (0, 0, 0), "torchvision")
  expected = Image.fromarray(frames[0]).rotate(17.0, Image.NEAREST, fillcolor=(0, 0, 0))
  np.testing.assert_array_equal(out.frames[0], np.asarray(expected))
  np.testing.assert_array_equal(
      out.labels[0], np.asarray(Image.fromarray(labels[0]).rotate(17.0, Image.NEAREST,
                                                                  fillcolor=255)))
  assert out.labels[0, 0, 0] == 255 and (out.frames[0, 0, 0] == 0).all()
  inside = out.labels[0] != 255
  assert set(map(tuple, out.frames[0][inside])) <= set(map(tuple, frames[0].reshape(-1, 3)))
  bilinear = transforms.rotate(C(frames, labels), 17.0, (0, 0, 0))
  assert (bilinear.frames != out.frames).any()


def test_semseg_and_torchvision_geometries_pad_before_the_crop():
  """A 5x6 frame in a 10x10 crop: torchvision's RandomCrop(pad_if_needed) lets it land anywhere
  inside; semseg's Crop centres it (shortfalls 5 and 4 split as 2 + 3 and 2 + 2); mmseg's
  crop-then-pad always leaves it at the top-left."""
  clip = C(np.full((1, 5, 6, 3), 9, np.uint8), np.ones((1, 5, 6), np.uint8))
  cfg = _cfg(crop_size=(10, 10), scale=(6, 5), ratio_range=(1.0, 1.0), cat_max_ratio=1.0,
             flip_prob=0.0, keep_ratio=False)
  top_left = {"mmseg": set(), "semseg": set(), "torchvision": set()}
  for geometry in top_left:
    for seed in range(20):
      out = transforms.train_transform(clip,
                                       ml_collections.ConfigDict(dict(cfg, geometry=geometry)),
                                       np.random.default_rng(seed))
      rows, cols = np.nonzero(out.labels[0] == 1)
      assert out.labels.shape == (1, 10, 10) and len(rows) == 30
      top_left[geometry].add((rows.min(), cols.min()))
  assert top_left["mmseg"] == {(0, 0)} and top_left["semseg"] == {(2, 2)}
  assert len(top_left["torchvision"]) > 5


def test_torchvision_geometry_refuses_flow_and_unknown_geometries():
  with pytest.raises(SetupError, match="cannot resize optical flow"):
    transforms._resize_clip(_flow_clip((4, 6)), (8, 12), "torchvision")
  with pytest.raises(SetupError, match="cannot rotate optical flow"):
    transforms.rotate(_flow_clip((4, 6)), 5.0, 0, "torchvision")
  with pytest.raises(SetupError, match="geometry must be one of"):
    transforms.train_transform(_flow_clip((4, 6)), _cfg(geometry="opencv"),
                               np.random.default_rng(0))


def test_semseg_rescale_is_randscales_cv2_resize_by_the_factor():
  """semseg's RandScale (ETC): cv2.resize(image, None, fx=s, fy=s), so the size is the frame's
  times s rounded (cv2 rounds: 10 x 20 at 0.75 -> 7.5, 15 -> 8 x 15) and the pixels are sampled
  at exactly 1/s; mmseg's keep-ratio fit of int(scale * s) would give 7 x 14."""
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (2, 10, 20, 3), dtype=np.uint8)
  labels = rng.integers(0, 5, (2, 10, 20), dtype=np.uint8)
  out = transforms.random_rescale(C(frames, labels), (20, 10), (0.5, 1.0), ScriptedRng(0.5),
                                  geometry="semseg")
  assert out.frames.shape == (2, 8, 15, 3) and out.labels.shape == (2, 8, 15)
  for t in range(2):
    np.testing.assert_array_equal(out.frames[t], cv2.resize(
        frames[t], None, fx=0.75, fy=0.75, interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(out.labels[t], cv2.resize(
        labels[t], None, fx=0.75, fy=0.75, interpolation=cv2.INTER_NEAREST))
  assert transforms.random_rescale(C(frames, labels), (20, 10), (0.5, 1.0), ScriptedRng(0.5)
                                   ).frames.shape == (2, 7, 14, 3)  # mmseg's, unchanged


def test_semseg_flips_before_its_centring_crop():
  """ETC's pipeline flips, then crops (semseg's Crop pads the smaller half first): a 5-wide frame
  in a 10-wide crop keeps 2 columns of padding on its left, mirrored or not. Flipping after the
  crop would move a mirrored frame to column 3."""
  labels = np.broadcast_to(np.arange(1, 6, dtype=np.uint8), (1, 5, 5)).copy()
  clip = C(np.full((1, 5, 5, 3), 9, np.uint8), labels)
  cfg = _cfg(crop_size=(10, 10), scale=(5, 5), ratio_range=(1.0, 1.0), cat_max_ratio=1.0,
             flip_prob=1.0, geometry="semseg")
  for seed in range(5):
    out = transforms.train_transform(clip, cfg, np.random.default_rng(seed))
    rows, cols = np.nonzero(out.labels[0] != 255)
    assert (rows.min(), cols.min(), cols.max()) == (2, 2, 6)
    np.testing.assert_array_equal(out.labels[0, 2, 2:7], [5, 4, 3, 2, 1])


@pytest.mark.parametrize("size", [(0, 24), (24,), (24, 24, 3), (24.0, 24), (True, 24), ()])
def test_a_size_that_is_not_two_whole_numbers_of_pixels_is_refused_naming_the_field(size):
  with pytest.raises(SetupError, match=r"^data.train_transform.crop_size=.*: two whole numbers"):
    transforms.check_train_transform(_cfg(crop_size=size))
  assert transforms.check_size("f", [24, 32]) == (24, 32)
  assert transforms.check_size("f", (), allow_empty=True) == ()
  with pytest.raises(SetupError, match=r"^data.train_transform.scale=\(0, 32\)"):
    transforms.check_train_transform(_cfg(scale=(0, 32)))
