"""mmseg's sliding-window ('slide') inference: the window layout, the stitching of the windows'
logits against torch doing what mmseg's `slide_inference` does, and the settings' checks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import load_config
from tests.parity.torch_reference import torch_slide
from vssjax import configs_lib
from vssjax.errors import SetupError
from vssjax.methods import get_method
from vssjax.methods.sliding_window import SlidingWindows, stitched_labels


def mmseg_offsets(hw, crop, stride):
  """mmseg's loop: grids from the stride, each window's end clipped to the image, its start moved
  back to keep the crop size."""
  grids = [max(side - c + s - 1, 0) // s + 1 for side, c, s in zip(hw, crop, stride)]
  offsets = []
  for h_idx in range(grids[0]):
    for w_idx in range(grids[1]):
      y2, x2 = min(h_idx * stride[0] + crop[0], hw[0]), min(w_idx * stride[1] + crop[1], hw[1])
      offsets.append((max(y2 - crop[0], 0), max(x2 - crop[1], 0)))
  return tuple(offsets)


def test_cityscapes_frames_take_three_windows_across():
  windows = SlidingWindows(crop=(1024, 1024), stride=(768, 768))
  assert windows.offsets((1024, 2048)) == ((0, 0), (0, 768), (0, 1024))
  assert windows.window_hw((1024, 2048)) == (1024, 1024)


@pytest.mark.parametrize("hw, crop, stride", [
    ((64, 64), (48, 48), (32, 32)), ((100, 37), (48, 48), (32, 16)),
    ((30, 200), (48, 64), (48, 48)),
    ((512, 1024), (512, 512), (341, 341)), ((1024, 2048), (769, 769), (512, 512))])
def test_window_offsets_are_mmseg_s(hw, crop, stride):
  windows = SlidingWindows(crop, stride)
  assert windows.offsets(hw) == mmseg_offsets(hw, crop, stride)
  image = np.arange(hw[0] * hw[1]).reshape(hw + (1,))
  crops = windows.crops(image)
  assert crops.shape == (len(windows.offsets(hw)),) + windows.window_hw(hw) + (1,)
  covered = np.zeros(hw, bool)
  for (y, x), window in zip(windows.offsets(hw), crops):
    covered[y:y + window.shape[0], x:x + window.shape[1]] = True
    np.testing.assert_array_equal(window, image[y:y + window.shape[0], x:x + window.shape[1]])
  assert covered.all()


@pytest.mark.parametrize("input_hw, frame_hw", [((64, 96), (64, 96)), ((64, 96), (75, 113)),
                                                ((40, 96), (30, 72))])
def test_stitched_labels_match_mmseg_slide_inference(input_hw, frame_hw):
  windows = SlidingWindows(crop=(48, 48), stride=(32, 32))
  offsets = windows.offsets(input_hw)
  assert len(offsets) >= 3  # windows overlap: the averaging matters
  logits = np.random.default_rng(0).standard_normal(
      (len(offsets), 12, 12, 7)).astype(np.float32)
  labels = np.asarray(stitched_labels(logits, windows=windows, input_hw=input_hw,
                                      frame_hw=frame_hw))
  np.testing.assert_array_equal(labels, torch_slide(logits, (48, 48), offsets, input_hw, frame_hw))


@pytest.mark.parametrize("logits_hw, frame_hw", [
    ((13, 11), (48, 40)),  # logits resized to the window; the frame is the input: no 2nd resize
    ((48, 40), (75, 61)),  # logits at the window's size; only the resize to the frame
])
def test_stitched_labels_resize_with_the_align_corners_asked_for(logits_hw, frame_hw):
  """A predictor asking for align_corners=True (semseg's / ETC's upsampling) gets it in both
  resizes, the windows' logits to the window and the stitched canvas to the frame; ignoring the
  argument in either moves the label boundaries (the align_corners=False labels differ)."""
  windows = SlidingWindows(crop=(48, 40), stride=(32, 32))  # one window: the whole input
  logits = np.random.default_rng(1).standard_normal((1, *logits_hw, 7)).astype(np.float32)

  def torch_labels(align_corners):
    nchw = torch.from_numpy(logits).permute(0, 3, 1, 2)
    resized = F.interpolate(nchw, frame_hw, mode="bilinear", align_corners=align_corners)
    return resized.argmax(1)[0].numpy()

  labels = np.asarray(stitched_labels(logits, windows=windows, input_hw=(48, 40),
                                      frame_hw=frame_hw, align_corners=True))
  np.testing.assert_array_equal(labels, torch_labels(True))
  assert (torch_labels(True) != torch_labels(False)).mean() > 0.01


def test_logits_of_the_wrong_number_of_windows_are_refused():
  windows = SlidingWindows(crop=(48, 48), stride=(32, 32))
  with pytest.raises(ValueError, match="logits of 3 windows for the 4 windows"):
    stitched_labels(np.zeros((3, 12, 12, 2), np.float32), windows=windows, input_hw=(64, 64),
                    frame_hw=(64, 64))


@pytest.mark.parametrize("crop, stride, message", [
    ((), (), None),
    ((48, 48), (), "slide_stride must be two positive ints"),
    ((48,), (32, 32), "slide_crop must be two positive ints"),
    ((48, 0), (32, 32), "slide_crop must be two positive ints"),
    ((48, 48.0), (32, 32), "slide_crop must be two positive ints"),
    ((48, 48), (32, 64), r"slide_stride \(32, 64\) is larger than slide_crop"),
])
def test_settings_are_checked(crop, stride, message):
  eval_transform = configs_lib.base_config().data.eval_transform
  eval_transform.update(slide_crop=crop, slide_stride=stride)
  if message is None:
    assert SlidingWindows.from_config(eval_transform) is None
  else:
    with pytest.raises(SetupError, match=message):
      SlidingWindows.from_config(eval_transform)


def test_a_method_without_sliding_windows_refuses_them():
  config = load_config("configs/dtern/synthetic_mitb0.py", "quick")
  config.data.eval_transform.update(slide_crop=(48, 48), slide_stride=(32, 32))
  with pytest.raises(SetupError, match="dtern has no sliding-window inference"):
    get_method(config)
