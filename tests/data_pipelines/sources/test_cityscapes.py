"""data_pipelines.sources.cityscapes on a tiny copy in its on-disk layout: snippets, the
annotated-frames-only package, label ids."""
import logging
import os
import shutil

import cv2
import numpy as np
import pytest

from data_pipelines import dataset
from data_pipelines.sources import base, cityscapes, get_source
from tests.data_pipelines import helpers
from tests.data_pipelines.helpers import H, W
from vssjax.errors import SetupError


def test_cityscapes_snippets_mark_the_annotated_frame(tmp_path):
  source = get_source("cityscapes", root=helpers.write_cityscapes(tmp_path / "cs"))
  assert source.available_splits() == ("train",)  # only gtFine/train exists
  assert source.palette[0].tolist() == [128, 64, 128]  # the official road colour
  videos = dataset.VideoDataset.from_source(source, "train")
  assert [videos.name(i) for i in range(2)] == ["frankfurt_000000_000019",
                                                  "frankfurt_000001_000029"]
  assert videos.num_frames(0) == videos.num_frames(1) == 30
  assert videos.labeled_indices(0) == videos.labeled_indices(1) == [19]
  clip = videos.load(1, [18, 19])
  assert clip["labeled"].tolist() == [False, True]
  assert int(clip["frames"][0, 0, 0, 0]) == 28  # Frame number 28 sits one before the label.
  np.testing.assert_array_equal(clip["labels"][1, 0, :6], [0, 1, 18, 255, 255, 11])


def test_cityscapes_test_split_is_neither_built_nor_read(tmp_path):
  """gtFine/test holds no labels (withheld for the benchmark server): a build copied its ~100 GB
  of sequence frames for nothing, and scoring it would score nothing."""
  root = helpers.write_cityscapes(tmp_path / "cs")
  shutil.copytree(os.path.join(root, "gtFine", "train"), os.path.join(root, "gtFine", "test"))
  shutil.copytree(os.path.join(root, "leftImg8bit_sequence", "train"),
                  os.path.join(root, "leftImg8bit_sequence", "test"))
  source = get_source("cityscapes", root=root)
  assert source.available_splits() == ("train",)
  with pytest.raises(SetupError, match="cityscapes has no test split here: its annotations are "
                                       "withheld"):
    source.videos("test")


def test_cityscapes_without_sequences_reads_the_annotated_frames_alone(tmp_path, caplog):
  """With leftImg8bit/ (the 11 GB package) in place of leftImg8bit_sequence/, each annotated
  frame is a one-frame video: what a per-frame model trains and evaluates on."""
  root = helpers.write_cityscapes_without_sequences(tmp_path / "cs")
  with caplog.at_level(logging.WARNING):
    videos = dataset.VideoDataset.from_source(cityscapes.CityscapesSource(root), "train")
    cityscapes.CityscapesSource(root).videos("train")  # a run lists a split several times
  assert "leftImg8bit/train" in caplog.text
  assert caplog.text.count("one-frame video") == 1  # said once
  assert [videos.num_frames(i) for i in range(2)] == [1, 1]
  assert videos.labeled_indices(1) == [0]
  clip = videos.load(1, [0])
  assert int(clip["frames"][0, 0, 0, 0]) == 29  # the annotated frame, number 29
  np.testing.assert_array_equal(clip["labels"][0, 0, :6], [0, 1, 18, 255, 255, 11])


def test_cityscapes_unknown_label_id_is_an_error(tmp_path):
  root = helpers.write_cityscapes(tmp_path / "cs")
  path = os.path.join(root, "gtFine", "train", "frankfurt",
                      "frankfurt_000000_000019_gtFine_labelIds.png")
  cv2.imwrite(path, np.full((H, W), 40, np.uint8))
  videos = dataset.VideoDataset.from_source(cityscapes.CityscapesSource(root), "train")
  with pytest.raises(base.DataError, match=rf"{path}: class ids \[40\] out of range \[0, 19\)"):
    videos.load(0, [19])


def test_cityscapes_label_ids_map_to_the_official_train_ids():
  """All 34 labelIds of cityscapesScripts' table (ids 0..33; 255: not evaluated): a wrong entry
  would silently merge, move or drop one of the 19 classes (the fixture uses only a few ids)."""
  official = [255] * 7 + [0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12,
                          13, 14, 15, 255, 255, 16, 17, 18]
  source = cityscapes.CityscapesSource("unused")
  np.testing.assert_array_equal(source.map_label(np.arange(34)[None]), [official])


def test_a_snippet_stops_at_a_missing_frame(tmp_path):
  """Frames 17 and 22 of a Cityscapes snippet annotated at 19 missing from the copy: its video is
  18..21, whose neighbours are consecutive frames; 0..16 beside 18 would make a clip's or DCFM's
  window's 'previous frame' one from further back, silently."""
  root = helpers.write_cityscapes(tmp_path / "cs")
  folder = os.path.join(root, "leftImg8bit_sequence", "train", "frankfurt")
  for number in (17, 22):
    os.remove(os.path.join(folder, f"frankfurt_000000_{number:06d}_leftImg8bit.png"))
  source = cityscapes.CityscapesSource(root)
  assert [f.frame_id[-2:] for f in source.videos("train")[0].frames] == ["18", "19", "20", "21"]
  videos = dataset.VideoDataset.from_source(source, "train")
  assert videos.labeled_indices(0) == [1]
  assert int(videos.load(0, [0])["frames"][0, 0, 0, 0]) == 18


def test_cityscapes_files_with_capital_suffixes_are_read(tmp_path):
  """A copy that passed through a tool writing `.PNG` lost a city's labels (and a snippet its
  frames, as a missing frame ends it) without a word; VSPW and CamVid read any case."""
  root = helpers.write_cityscapes(tmp_path / "cs")
  labels = os.path.join(root, "gtFine", "train", "frankfurt")
  name = "frankfurt_000001_000029_gtFine_labelIds"
  os.rename(os.path.join(labels, name + ".png"), os.path.join(labels, name + ".PNG"))
  frames = os.path.join(root, "leftImg8bit_sequence", "train", "frankfurt")
  for stem in ("frankfurt_000000_000017", "frankfurt_000001_000029"):  # a neighbour, a label's
    stem = os.path.join(frames, stem)
    os.rename(stem + "_leftImg8bit.png", stem + "_leftImg8bit.PNG")
  videos = dataset.VideoDataset.from_source(cityscapes.CityscapesSource(root), "train")
  assert [videos.num_frames(i) for i in range(2)] == [30, 30]
  assert int(videos.load(0, [17])["frames"][0, 0, 0, 0]) == 17
  clip = videos.load(1, [19])
  assert int(clip["frames"][0, 0, 0, 0]) == 29 and clip["labeled"].tolist() == [True]


def test_cityscapes_class_names_and_palette_are_the_official_train_ids():
  """cityscapesScripts' labels.py, trainIds 0..18 in order: a swapped name mislabels two rows of
  the per-class IoU table, a swapped colour paints (say) cars as trucks in every overlay."""
  official = [  # (name, colour) of trainId 0..18, from cityscapesScripts' helpers/labels.py.
      ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)), ("building", (70, 70, 70)),
      ("wall", (102, 102, 156)), ("fence", (190, 153, 153)), ("pole", (153, 153, 153)),
      ("traffic light", (250, 170, 30)), ("traffic sign", (220, 220, 0)),
      ("vegetation", (107, 142, 35)), ("terrain", (152, 251, 152)), ("sky", (70, 130, 180)),
      ("person", (220, 20, 60)), ("rider", (255, 0, 0)), ("car", (0, 0, 142)),
      ("truck", (0, 0, 70)), ("bus", (0, 60, 100)), ("train", (0, 80, 100)),
      ("motorcycle", (0, 0, 230)), ("bicycle", (119, 11, 32))]
  assert cityscapes.CLASS_NAMES == tuple(name for name, _ in official)
  assert cityscapes.PALETTE.dtype == np.uint8
  np.testing.assert_array_equal(cityscapes.PALETTE, [colour for _, colour in official])
  source = cityscapes.CityscapesSource("unused")
  assert source.class_names == cityscapes.CLASS_NAMES and source.palette is cityscapes.PALETTE
