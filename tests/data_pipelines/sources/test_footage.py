"""data_pipelines.sources.footage: video files and frame folders, their names and frame order."""
import os

import cv2
import numpy as np
import pytest

from data_pipelines import dataset
from data_pipelines.sources import base, footage, get_source
from tests.data_pipelines import helpers
from tests.data_pipelines.helpers import H, W


def test_footage_reads_video_files_and_frame_folders(tmp_path):
  path = str(tmp_path / "clip.avi")
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (W * 4, H * 4))
  for t in range(5):
    writer.write(np.full((H * 4, W * 4, 3), 40 * t, np.uint8))
  writer.release()
  folder = tmp_path / "frames"
  for t in range(3):
    helpers.write_rgb(str(folder / f"{t:03d}.png"), 7 * t)
  source = get_source("footage", paths=[path, str(folder)], stride=2)
  videos = dataset.VideoDataset.from_source(source, "test")
  assert [videos.name(i) for i in range(2)] == ["clip", "frames"]
  assert videos.num_frames(0) == 3 and videos.num_frames(1) == 2  # Frames 0, 2, 4 and 0, 2.
  clip = videos.load(0, [0, 1, 2])
  assert clip["frames"].shape == (3, H * 4, W * 4, 3) and not clip["labeled"].any()
  np.testing.assert_allclose(clip["frames"][:, 5, 5, 0], [0, 80, 160], atol=4)
  assert int(videos.load(1, [1])["frames"][0, 0, 0, 0]) == 14
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video")
  with pytest.raises(base.DataError, match="bad.mp4: OpenCV cannot open"):
    footage.FootageSource([str(bad)]).videos("test")


def test_footage_of_one_name_twice_is_refused_before_decoding(tmp_path):
  """Frame ids and TC's flow keys go by the video's name: the second `clip` would score with the
  first's flows. Folders are named whole, so `run.v1/` and `run.v2/` are two videos."""
  for folder in ("cam1/clip", "cam2/clip", "run.v1", "run.v2"):
    helpers.write_rgb(str(tmp_path / folder / "000.png"), 7)
  two = footage.FootageSource([str(tmp_path / "run.v1"), str(tmp_path / "run.v2")])
  assert [video.name for video in two.videos("test")] == ["run.v1", "run.v2"]
  clash = footage.FootageSource([str(tmp_path / "cam1/clip"), str(tmp_path / "run.v1"),
                                 str(tmp_path / "cam2/clip")])
  with pytest.raises(base.DataError, match=r"cam2/clip: its video name 'clip' is also that of "
                                           r".*cam1/clip; a split's videos need names"):
    clash.videos("test")


class _CaptureDeclaringNothing:
  """cv2.VideoCapture of a stream whose container declares no length nor rate: OpenCV answers
  -1 for the count (a raw or live stream) and may answer NaN for the rate."""

  def __init__(self, path):
    del path

  def isOpened(self):  # pylint: disable=invalid-name
    return True

  def get(self, prop):
    return {cv2.CAP_PROP_FRAME_COUNT: -1.0, cv2.CAP_PROP_FPS: float("nan")}[prop]

  def release(self):
    pass


def test_a_video_file_that_cannot_be_read_is_said_so_not_called_corrupt(tmp_path, monkeypatch):
  """OpenCV refuses a file without read permission (simulated: root reads any) as it does a
  corrupt one; the permission is checked first."""
  path = str(tmp_path / "clip.mp4")
  with open(path, "wb") as f:
    f.write(b"")
  monkeypatch.setattr(os, "access", lambda p, mode: p != path)
  with pytest.raises(base.DataError, match=r"clip\.mp4: cannot read file \(permission denied\)"):
    next(footage.read_video_frames(path))


def test_footage_says_0_for_a_frame_count_or_rate_its_container_does_not_declare(monkeypatch):
  monkeypatch.setattr(footage.cv2, "VideoCapture", _CaptureDeclaringNothing)
  assert footage.declared_frames_and_rate("stream.h264") == (0, 0.0)


def test_footage_frame_folders_skip_the_label_maps_beside_their_frames(tmp_path, caplog):
  """The project's own labelled layout (vtest_pseudo: `<frame>_label.png` beside `<frame>.jpg`)
  read as a frame folder: its label maps are not frames, and a note says they were skipped."""
  folder = tmp_path / "vtest_val_00"
  for t in range(3):
    helpers.write_rgb(str(folder / f"{t:06d}.jpg"), 7 * t)
    assert cv2.imwrite(str(folder / f"{t:06d}_label.png"), np.zeros((H, W), np.uint8))
  caplog.set_level("WARNING", logger="absl")
  videos = dataset.VideoDataset.from_source(get_source("footage", paths=[str(folder)]), "test")
  assert videos.num_frames(0) == 3
  assert f"{folder}: skipped its 3 label maps (*_label.png) beside the 3 frames" in caplog.text
  labels_only = tmp_path / "labels_only"
  labels_only.mkdir()
  (folder / "000000_label.png").rename(labels_only / "000000_label.png")
  with pytest.raises(base.DataError, match=r"labels_only: holds only label maps \(\*_label.png\)"):
    footage.frame_files(str(labels_only))


def test_footage_frames_numbered_without_padding_play_in_number_order(tmp_path):
  """ffmpeg's `%d` and many tools number frames without zero padding: frame_10 comes after
  frame_9, not between frame_1 and frame_2 as a plain string sort has it."""
  for t in (0, 1, 2, 9, 10, 11):
    cv2.imwrite(str(tmp_path / f"frame_{t}.png"), np.zeros((4, 4, 3), np.uint8))
  cv2.imwrite(str(tmp_path / "frame_02.png"), np.zeros((4, 4, 3), np.uint8))
  names = [os.path.basename(f) for f in footage.frame_files(str(tmp_path))]
  assert names == ["frame_0.png", "frame_1.png", "frame_02.png", "frame_2.png", "frame_9.png",
                   "frame_10.png", "frame_11.png"]


def test_footage_frames_in_either_case_play_in_name_order(tmp_path):
  """A folder whose names changed case midway (Frame_2.PNG, frame_10.png: a camera and a tool)
  played every capital first; TIFF and WebP frames were left out as not frames."""
  for name in ("frame_10.png", "Frame_2.PNG", "frame_3.tif", "FRAME_4.WEBP", "frame_5.tiff"):
    assert cv2.imwrite(str(tmp_path / name), np.full((4, 4, 3), 9, np.uint8))
  files = footage.frame_files(str(tmp_path))
  assert [os.path.basename(f) for f in files] == [
      "Frame_2.PNG", "frame_3.tif", "FRAME_4.WEBP", "frame_5.tiff", "frame_10.png"]
  for f in files:
    assert base.read_image(f, f).shape == (4, 4, 3)
