"""Colourised label maps, overlays, side-by-side panels and the MP4 writer."""
import cv2
import numpy as np
import pytest

from vssjax import visualize
from vssjax.errors import SetupError

PALETTE = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)


def test_colorize_uses_the_palette_and_blacks_out_ignored_pixels():
  labels = np.array([[0, 1], [255, 1]])
  np.testing.assert_array_equal(visualize.colorize(labels, PALETTE),
                                [[[255, 0, 0], [0, 255, 0]], [[0, 0, 0], [0, 255, 0]]])


def test_overlay_blends_half_and_half_and_side_by_side_stacks_panels():
  frame = np.full((2, 2, 3), 100, np.uint8)
  labels = np.zeros((2, 2), np.int32)
  np.testing.assert_array_equal(visualize.overlay(frame, labels, PALETTE)[0, 0], [178, 50, 50])
  assert visualize.side_by_side(frame, labels, PALETTE).shape == (2, 4, 3)
  panels = visualize.side_by_side(frame, labels, PALETTE, labels)
  assert panels.shape == (2, 6, 3)
  # The ground truth is shown in its own colours, not blended with the frame as the prediction.
  np.testing.assert_array_equal(panels[:, 4:], visualize.colorize(labels, PALETTE))


def test_write_video_streams_frames_and_refuses_none(tmp_path):
  frames = (np.full((32, 48, 3), 40 * i, np.uint8) for i in range(5))  # a generator: streamed
  path = visualize.write_video(tmp_path / "out" / "v.mp4", frames, fps=4)
  capture = cv2.VideoCapture(str(path))
  assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
  size = (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
  assert size == (48, 32)
  capture.release()
  with pytest.raises(ValueError, match="no frames to write"):
    visualize.write_video(tmp_path / "empty.mp4", [], fps=4)


def test_a_video_opencv_cannot_write_is_one_error_with_the_way_out(tmp_path, monkeypatch):
  """An OpenCV without the mp4v encoder (or a folder it cannot write) was an OSError traceback
  after a video's predictions."""
  class Refusing:
    def __init__(self, *args):
      pass

    def isOpened(self):  # pylint: disable=invalid-name
      return False

    def release(self):
      pass

  monkeypatch.setattr(cv2, "VideoWriter", Refusing)
  with pytest.raises(SetupError, match=r"OpenCV cannot open .*v\.mp4 for writing \(mp4v\); "
                     r"--config\.eval\.overlay_video=False writes no overlay video"):
    visualize.write_video(tmp_path / "v.mp4", [np.zeros((4, 4, 3), np.uint8)], fps=4)


def test_frames_of_another_size_are_resized_into_the_video_not_dropped(tmp_path):
  sizes = [(32, 48), (64, 48), (32, 48)]  # a frame folder of mixed sizes
  frames = [np.full(hw + (3,), 200, np.uint8) for hw in sizes]
  capture = cv2.VideoCapture(str(visualize.write_video(tmp_path / "v.mp4", frames, fps=4)))
  assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
  capture.release()
  with pytest.raises(ValueError, match=r"eval.overlay_fps=0: a video needs a frame rate > 0"):
    visualize.write_video(tmp_path / "w.mp4", frames, fps=0)


@pytest.mark.parametrize("hw", [(1, 1), (1, 40)])
def test_frames_one_pixel_high_or_wide_still_make_a_video(tmp_path, hw):
  """mp4v does not open for a side of 1 pixel (`infer` on a 1x1 frame folder failed there)."""
  frames = [np.full(hw + (3,), 200, np.uint8)] * 3
  capture = cv2.VideoCapture(str(visualize.write_video(tmp_path / "v.mp4", frames, fps=4)))
  assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
  capture.release()


@pytest.mark.parametrize("hw", [(25, 33), (24, 33), (25, 32)])
def test_an_odd_side_is_padded_not_cropped(tmp_path, hw):
  """mp4v encodes even sides only and OpenCV cropped an odd side's last row or column (a 25x33
  overlay played as 24x32): a black row or column is added instead, so every pixel is shown."""
  frames = [np.full(hw + (3,), 200, np.uint8)] * 2
  capture = cv2.VideoCapture(str(visualize.write_video(tmp_path / "v.mp4", frames, fps=4)))
  ok, decoded = capture.read()
  capture.release()
  assert ok and decoded.shape[:2] == (hw[0] + hw[0] % 2, hw[1] + hw[1] % 2)
  h, w = hw
  assert np.abs(decoded[:h, :w].astype(int) - 200).mean() < 10
  assert decoded[h - 1, :w].mean() > 150 and decoded[:h, w - 1].mean() > 150  # the last ones kept
  assert all(pad.mean() < 100 for pad in (decoded[h:], decoded[:, w:]) if pad.size)  # black


def test_a_frame_rate_that_is_not_a_number_is_refused():
  """`--config.eval.overlay_fps=nan` parses as a float and passes a `fps <= 0` check: it is
  refused before the long work as 0 is, not handed to OpenCV's writer after it."""
  with pytest.raises(SetupError, match=r"^eval.overlay_fps=nan: a video needs a frame rate > 0"):
    visualize.check_frame_rate(float("nan"))
