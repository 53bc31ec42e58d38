"""data_pipelines.sources.vtest_pseudo: the pseudo-labels and splits of vtest.avi, its reader."""
import cv2
import numpy as np
import pytest

from data_pipelines.sources import base, vtest_pseudo


def test_vtest_pseudo_labels_and_split():
  labels = vtest_pseudo.scene_labels((288, 384))
  assert labels[250, 100] == vtest_pseudo.GRASS and labels[5, 5] == vtest_pseudo.BUILDING
  assert labels[100, 200] == vtest_pseudo.ROAD
  splits = vtest_pseudo.split_videos(795, 60)
  assert splits["train"][0] == range(0, 60) and splits["train"][-1] == range(540, 556)
  assert splits["val"][0].start == 556 and splits["val"][-1].stop == 795
  # A moving square over a static textured background becomes 'person'; the rest stays scene.
  rng = np.random.default_rng(0)
  background = rng.integers(0, 80, (48, 64, 3), dtype=np.uint8)
  frames = np.repeat(background[None], 9, axis=0)
  for t in range(9):
    frames[t, 10:30, 5 * t:5 * t + 12] = 250
  out = vtest_pseudo.pseudo_labels(frames)
  scene = vtest_pseudo.scene_labels((48, 64))
  person = out[4] == vtest_pseudo.PERSON
  assert person[12:28, 22:30].all() and not person[:, 40:].any()
  np.testing.assert_array_equal(out[4][~person], scene[~person])


def test_vtest_pseudo_build_fails_loudly_when_it_cannot_write(tmp_path):
  with pytest.raises(OSError, match="could not write"):
    vtest_pseudo._write_image(str(tmp_path / "missing_dir" / "0.png"), np.zeros((4, 4), np.uint8))


def test_a_video_other_than_vtest_is_refused_before_anything_is_written(tmp_path):
  """Its frames were labelled with vtest.avi's scene polygons, stretched, without a word."""
  clip = tmp_path / "clip.avi"
  writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 48))
  for _ in range(3):
    writer.write(np.zeros((48, 80, 3), np.uint8))
  writer.release()
  with pytest.raises(base.DataError, match=r"clip.avi: is 80x48, not vtest.avi's 768x576"):
    vtest_pseudo.build(str(clip), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_vtest_pseudo_lists_its_video_folders_only(tmp_path):
  """A `.DS_Store` (a copy made on macOS) or a stray file in a split was read as a video folder
  and failed as an unreadable dataset."""
  video = tmp_path / "val" / "clip_a"
  video.mkdir(parents=True)
  cv2.imwrite(str(video / "000000.jpg"), np.zeros((4, 6, 3), np.uint8))
  (tmp_path / "val" / ".DS_Store").write_bytes(b"\0")
  (tmp_path / "val" / "notes.txt").write_text("built on Monday")
  [record] = vtest_pseudo.VtestPseudoSource(str(tmp_path)).videos("val")
  assert record.name == "clip_a" and [f.frame_id for f in record.frames] == ["clip_a/000000"]
