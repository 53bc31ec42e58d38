"""Tests for the test-time resizing of a frame: SegFormer's AlignedResize, DCFM's exact size."""
import cv2
import ml_collections
import numpy as np
import pytest
from PIL import Image

from data_pipelines import eval_transforms
from vssjax.errors import DataError, SetupError


@pytest.mark.parametrize("hw, scale, divisor, expected", [
    ((100, 150), (128, 128), 32, (96, 128)),  # Rescale to (85, 128), align up to (96, 128).
    ((480, 853), (853, 480), 32, (480, 864)),  # VSPW.
    ((64, 64), (64, 64), 32, (64, 64)),
])
def test_aligned_resize_shapes(hw, scale, divisor, expected):
  frame = np.random.default_rng(0).integers(0, 255, (*hw, 3), dtype=np.uint8)
  assert eval_transforms.aligned_resize(frame, scale, divisor).shape == (*expected, 3)



def test_a_1080p_frame_is_predicted_at_480_rows_rounded_half_up():
  """mmcv fits a frame into the scale rounding half up (int(side * factor + 0.5)): a 1080x1920
  frame at VSPW's (853, 480) is 479.8 rows, so the network sees 480x853, as the reference; with
  truncation it would see 479 rows, a shift that changes every prediction."""
  frame = np.zeros((1080, 1920, 3), np.uint8)
  assert eval_transforms.aligned_resize(frame, (853, 480), 1).shape == (480, 853, 3)

def test_aligned_resize_is_two_resizes():
  frame = np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8)
  first = cv2.resize(frame, (128, 85), interpolation=cv2.INTER_LINEAR)
  expected = cv2.resize(first, (128, 96), interpolation=cv2.INTER_LINEAR)
  np.testing.assert_array_equal(eval_transforms.aligned_resize(frame, (128, 128), 32), expected)
  same = np.ones((64, 64, 3), np.uint8)
  np.testing.assert_array_equal(eval_transforms.aligned_resize(same, (64, 64), 32), same)


def test_aligned_resize_with_pillow_antialiases_as_torchvision_on_pil_images():
  """DCFM's Cityscapes test resize (1024x2048 -> 512x1024 for MiT) is torchvision's on PIL images:
  Pillow's bilinear averages the whole footprint when it shrinks, cv2's samples 2x2 pixels."""
  frame = np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)
  settings = ml_collections.ConfigDict(dict(scale=(32, 16), size_divisor=1,
                                            resize_backend="pillow"))
  resized = eval_transforms.eval_resize(frame, settings)
  np.testing.assert_array_equal(
      resized, np.asarray(Image.fromarray(frame).resize((32, 16), Image.Resampling.BILINEAR)))
  sampled = eval_transforms.aligned_resize(frame, (32, 16), 1)  # cv2, the default
  assert resized.std() < 0.6 * sampled.std()  # averaged noise is smoother
  with pytest.raises(SetupError, match="resize_backend must be 'cv2' or 'pillow'"):
    eval_transforms.aligned_resize(frame, (32, 16), 1, "torch")


def test_the_pillow_resize_takes_torchvision_s_size_for_the_short_side():
  """torchvision's `Resize(512)` truncates the long side (720x960 -> 512x682, where mmcv's fit
  rounds to 683) and does not cap it (a 3:1 frame keeps its ratio in a (1024, 512) scale)."""
  for hw, size in (((720, 960), (512, 682)), ((960, 720), (682, 512)), ((100, 300), (512, 1536)),
                   ((1024, 2048), (512, 1024)), ((64, 64), (512, 512))):
    frame = np.zeros((*hw, 3), np.uint8)
    assert eval_transforms.aligned_resize(frame, (1024, 512), 1, "pillow").shape[:2] == size
  assert eval_transforms.aligned_resize(np.zeros((720, 960, 3), np.uint8), (1024, 512),
                                        1).shape[:2] == (512, 683)  # cv2: mmcv's fit, rounded


def test_a_frame_whose_short_side_rounds_to_zero_is_named_with_its_size():
  """A 3x500 frame fitted into (64, 64) is 0x64: cv2 asserted "inv_scale_x > 0"."""
  with pytest.raises(DataError, match=r"a 3x500 frame: fitted into data\.eval_transform\.scale="
                     r"\(64, 64\) it is 0x64 pixels"):
    eval_transforms.aligned_resize(np.zeros((3, 500, 3), np.uint8), (64, 64), 32)


def test_resize_exact_ignores_the_aspect_ratio_and_takes_the_centre_pixel_label():
  """DCFM's VSPW test resize (PIL, as the release): 5 label columns to 7 map each target pixel's
  centre, x -> floor((x + 0.5) * 5 / 7), where cv2.INTER_NEAREST would take floor(x * 5 / 7)."""
  label = np.tile(np.array([0, 1, 2, 3, 255], np.int32), (2, 1))
  frame = np.zeros((2, 5, 3), np.uint8)
  frame[:, 3:] = 200
  resized, resized_label = eval_transforms.resize_exact(frame, label, (3, 7))
  assert resized.shape == (3, 7, 3) and resized.dtype == np.uint8
  np.testing.assert_array_equal(resized[:, 0], 0)
  assert 0 < resized[0, 4, 0] < 200  # bilinear: the edge is blended
  assert resized_label.dtype == np.int32
  np.testing.assert_array_equal(resized_label, np.tile([0, 1, 1, 2, 3, 3, 255], (3, 1)))
  np.testing.assert_array_equal(
      cv2.resize(label.astype(np.uint8), (7, 3), interpolation=cv2.INTER_NEAREST)[0],
      [0, 0, 1, 2, 2, 3, 255])
  # An unlabelled frame keeps no label; a frame already at the size is returned as it is.
  assert eval_transforms.resize_exact(frame, None, (3, 7))[1] is None
  same = eval_transforms.resize_exact(frame, label, (2, 5))
  assert same[0] is frame and same[1] is label


@pytest.mark.parametrize("field, value, message", [
    ("scale", (0, 0), r"data.eval_transform.scale=\(0, 0\): two whole numbers"),
    ("exact_size", (480,), r"data.eval_transform.exact_size=\(480,\): .* or \(\) for none"),
    ("size_divisor", 0, r"data.eval_transform.size_divisor=0: at least 1"),
])
def test_eval_transform_sizes_that_cannot_resize_are_refused_naming_the_field(field, value,
                                                                              message):
  """A zero scale failed in cv2 at the first evaluation, after the whole training run."""
  settings = dict(scale=(128, 128), size_divisor=32, exact_size=(480, 853))
  eval_transforms.check_eval_transform(ml_collections.ConfigDict(settings))
  settings[field] = value
  with pytest.raises(SetupError, match=message):
    eval_transforms.check_eval_transform(ml_collections.ConfigDict(settings))
