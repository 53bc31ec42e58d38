"""data_pipelines.sources.vspw on a tiny copy in VSPW_480p's layout: palette labels and their
mapping, class names, list files, frames and masks missing or misnamed."""
import json
import os
import shutil

import numpy as np
import pytest

from data_pipelines import dataset
from data_pipelines.sources import base, get_source, vspw
from tests.data_pipelines import helpers
from tests.data_pipelines.helpers import H, W


def test_vspw_layout_palette_labels_and_mapping(tmp_path):
  source = get_source("vspw", root=helpers.write_vspw(tmp_path / "VSPW_480p"))
  assert source.num_classes == 124 and source.class_names[0] == "class_001"
  assert source.available_splits() == ("train", "val", "test")
  assert source.palette.shape == (124, 3)  # no official colours: the generated palette
  train = source.videos("train")
  assert [v.name for v in train] == ["vid_a", "vid_b"]
  assert [f.frame_id for f in train[0].frames] == ["vid_a/00000000", "vid_a/00000001",
                                                    "vid_a/00000002"]
  videos = dataset.VideoDataset.from_source(source, "train")
  clip = videos.load(0, [0, 1, 2])
  # Raw 0 -> 255, 1 -> 0, 124 -> 123, 125..254 -> 255; the palette (all red) is never looked at.
  np.testing.assert_array_equal(clip["labels"][:, 0, :3], [[0, 255, 255], [0, 255, 0],
                                                             [0, 255, 123]])
  test = dataset.VideoDataset.from_source(source, "test")
  assert test.labeled_indices(0) == [] and test.load(0, [1])["labeled"].tolist() == [False]


def test_vspw_class_names_from_its_json(tmp_path):
  root = helpers.write_vspw(tmp_path / "v")
  names = {"others": 0, **{f"name{i}": i for i in range(1, 125)}}
  names["wall"] = names.pop("name1")
  with open(os.path.join(root, vspw.CLASS_FILE), "w") as f:
    json.dump(names, f)
  source = vspw.VspwSource(root)
  assert source.class_names[0] == "wall" and source.class_names[-1] == "name124"


def test_vspw_bad_data_names_the_file(tmp_path):
  root = helpers.write_vspw(tmp_path / "v")
  source = vspw.VspwSource(root)
  videos = dataset.VideoDataset.from_source(source, "train")
  mask = os.path.join(root, "data", "vid_a", "mask", "00000001.png")
  os.remove(mask)
  with pytest.raises(base.DataError, match=f"{mask}: cannot read file"):
    videos.load(0, [1])
  helpers.write_palette_png(mask, np.zeros((H + 1, W), np.uint8))
  with pytest.raises(base.DataError, match=f"{mask}: label size 7x8 differs from image size 6x8"):
    videos.load(0, [1])
  with open(mask, "wb") as f:
    f.write(b"not a png")
  with pytest.raises(base.DataError) as error:  # not Pillow's <_io.BytesIO object at 0x...>
    videos.load(0, [1])
  assert str(error.value) == f"{mask}: cannot decode label image (corrupt or unsupported format)"
  jpeg = os.path.join(root, "data", "vid_b", "origin", "00000002.jpg")
  with open(jpeg, "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 truncated")
  with pytest.raises(base.DataError, match=f"{jpeg}: cannot decode image"):
    videos.load(1, [2])
  assert set(os.listdir(os.path.dirname(jpeg))) >= {"00000002.jpg"}


def test_vspw_frames_are_in_file_name_order_whatever_the_folder_listing_order(tmp_path,
                                                                             monkeypatch):
  """os.listdir's order is the file system's: a video's frames must be sorted, or clips and the
  streaming predictors would see time scrambled."""
  source = vspw.VspwSource(helpers.write_vspw(tmp_path / "v"))
  listdir = os.listdir
  monkeypatch.setattr(os, "listdir", lambda path: sorted(listdir(path), reverse=True))
  assert [f.frame_id for f in source.videos("train")[0].frames] == [
      "vid_a/00000000", "vid_a/00000001", "vid_a/00000002"]


def test_vspw_frames_in_upper_case_are_kept_in_their_place(tmp_path):
  """A frame saved as `.JPG` dropped out of the middle of its video, its neighbours then looking
  consecutive; all of a video's frames so left it 'holding no .jpg frames'."""
  root = helpers.write_vspw(tmp_path / "v")
  origin = os.path.join(root, "data", "vid_a", "origin")
  os.rename(os.path.join(origin, "00000001.jpg"), os.path.join(origin, "00000001.JPG"))
  videos = dataset.VideoDataset.from_source(vspw.VspwSource(root), "train")
  assert videos.num_frames(0) == 3 and int(videos.load(0, [1])["frames"][0, 0, 0, 0]) == 10
  shutil.copy(os.path.join(origin, "00000001.JPG"), os.path.join(origin, "00000001.jpg"))
  with pytest.raises(base.DataError, match=r"00000001.(jpg|JPG): a second frame 00000001"):
    vspw.VspwSource(root).videos("train")


def test_vspw_masks_in_upper_case_are_read(tmp_path):
  """A mask saved as `.PNG` was looked up as `.png`: on a case-sensitive disk its frame failed to
  load; two masks of one frame are refused like two frames."""
  root = helpers.write_vspw(tmp_path / "v")
  mask = os.path.join(root, "data", "vid_a", "mask")
  expected = dataset.VideoDataset.from_source(vspw.VspwSource(root), "train").load(0, [1])
  os.rename(os.path.join(mask, "00000001.png"), os.path.join(mask, "00000001.PNG"))
  loaded = dataset.VideoDataset.from_source(vspw.VspwSource(root), "train").load(0, [1])
  np.testing.assert_array_equal(loaded["labels"], expected["labels"])
  shutil.copy(os.path.join(mask, "00000001.PNG"), os.path.join(mask, "00000001.png"))
  with pytest.raises(base.DataError, match=r"00000001.(png|PNG): a second mask 00000001"):
    vspw.VspwSource(root).videos("train")


def test_vspw_frames_or_masks_missing_from_a_copy_are_named(tmp_path):
  """A frame gone from the middle of a video (its mask still there) made its neighbours look
  consecutive; a train or val video without its mask folder was unlabelled, so evaluation scored
  none of it, without a word."""
  root = helpers.write_vspw(tmp_path / "v")
  frame = os.path.join(root, "data", "vid_a", "origin", "00000001.jpg")
  os.rename(frame, frame[:-4] + ".jpeg")  # beside the others' .jpg: not read
  with pytest.raises(base.DataError, match=rf"{frame}: missing, though its mask .*00000001.png "
                     r"is there: .*; 00000001\.jpeg beside it is not read: VSPW's frames are "
                     r"read as \.jpg \(any case\)$"):
    vspw.VspwSource(root).videos("train")
  os.remove(frame[:-4] + ".jpeg")
  with pytest.raises(base.DataError, match=rf"{frame}: missing, though its mask .*00000001.png "
                                           r"is there: .*on purpose\)$"):
    vspw.VspwSource(root).videos("train")
  masks = os.path.join(root, "data", "vid_c", "mask")
  shutil.rmtree(masks)
  with pytest.raises(base.DataError, match=rf"{masks}: missing mask folder of a val video .*"
                                           rf"remove vid_c from val.txt"):
    vspw.VspwSource(root).videos("val")


def test_vspw_list_files_as_editors_leave_them(tmp_path):
  """A list saved on Windows (byte-order mark, CRLF), with stray spaces, blank lines and a folder's
  trailing slash reads as the plain list; a video listed twice, which would be scored twice, is
  refused, naming the list."""
  root = helpers.write_vspw(tmp_path / "v")
  with open(os.path.join(root, "train.txt"), "w", encoding="utf-8-sig", newline="") as f:
    f.write("vid_b \r\n\r\n  vid_a/\r\n")
  assert [v.name for v in vspw.VspwSource(root).videos("train")] == ["vid_b", "vid_a"]
  with open(os.path.join(root, "train.txt"), "w") as f:
    f.write("vid_a\nvid_b\nvid_a\n")
  with pytest.raises(base.DataError, match=r"train.txt: lists video vid_a twice"):
    vspw.VspwSource(root).videos("train")
