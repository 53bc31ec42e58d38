"""Tests for VideoDataset over both backends and its bad-input errors."""
import logging
import os
import re

import cv2
import numpy as np
import pytest

from data_pipelines import dataset
from data_pipelines.sources import base, synthetic
from data_pipelines.tfds_builders import real_videos, synthetic_video, video_records
from tests.data_pipelines import helpers
from vssjax.errors import SetupError


def test_backends_agree(tmp_path):
  memory = dataset.make_dataset(helpers.data_config(tmp_path), "train")
  records = dataset.make_dataset(helpers.data_config(tmp_path, backend="arrayrecord"), "train")
  assert len(memory) == len(records) == 8
  by_name = {records.name(i): i for i in range(len(records))}
  for i in range(len(memory)):
    j = by_name[memory.name(i)]
    assert memory.num_frames(i) == records.num_frames(j) == 6
    a, b = memory.load(i, [5, 0, 3]), records.load(j, [5, 0, 3])
    for key in ("frames", "labels", "labeled"):
      np.testing.assert_array_equal(a[key], b[key])
  assert a["frames"].shape == (3, 32, 32, 3) and a["frames"].dtype == np.uint8
  assert a["labels"].dtype == np.int32 and a["labeled"].tolist() == [True] * 3


def test_iter_video_matches_load(tmp_path):
  videos = dataset.make_dataset(helpers.data_config(tmp_path, backend="arrayrecord"), "val")
  clip = videos.load(1, range(6))
  pairs = list(videos.iter_video(1))
  assert len(pairs) == 6
  for t, (frame, label) in enumerate(pairs):
    np.testing.assert_array_equal(frame, clip["frames"][t])
    np.testing.assert_array_equal(label, clip["labels"][t])


def test_a_clip_reads_only_its_frames_records(tmp_path, monkeypatch):
  cfg = helpers.data_config(tmp_path, backend="arrayrecord")
  dataset.make_dataset(cfg, "train")  # Builds the records and their index.
  sources = helpers.count_record_reads(monkeypatch)
  videos = dataset.make_dataset(cfg, "train")
  assert videos.num_frames(3) == 6 and sources[-1].reads == 0
  videos.load(3, [4, 1])
  assert sources[-1].reads == 2
  list(videos.iter_video(3, [0, 5]))
  assert sources[-1].reads == 4
  list(videos.iter_video(3))
  assert sources[-1].reads == 10


def _without_index(tmp_path, monkeypatch, writable: bool):
  """The train split read back after its video index was deleted; (videos, indexed videos, the
  counting record sources, the index path)."""
  cfg = helpers.data_config(tmp_path, backend="arrayrecord")
  indexed = dataset.make_dataset(cfg, "train")
  builder = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  path = video_records.index_path(builder, "train")
  path.unlink()  # As after a build interrupted before its index.
  # Loaded as real datasets are (`real_videos.load`), without a build step that writes the index.
  monkeypatch.setattr(synthetic_video, "prepare_synthetic", lambda *args, **kwargs: builder)
  if not writable:
    monkeypatch.setattr(os, "access", lambda *args: False)
  sources = helpers.count_record_reads(monkeypatch)
  return dataset.make_dataset(cfg, "train"), indexed, sources, path


@pytest.mark.parametrize("writable", [False, True])
def test_without_a_video_index_it_is_scanned_from_the_records(tmp_path, monkeypatch, caplog,
                                                               writable):
  with caplog.at_level(logging.WARNING):
    videos, indexed, sources, path = _without_index(tmp_path, monkeypatch, writable)
  [warning] = [r.getMessage() for r in caplog.records if "No video index" in r.getMessage()]
  assert "\n" not in warning and "python -m data_pipelines.build" in warning
  assert path.exists() == writable
  assert sum(source.reads for source in sources) == 48  # Every frame's record, once.
  for i in range(len(videos)):
    assert videos.name(i) == indexed.name(i) and videos.num_frames(i) == indexed.num_frames(i)
    assert videos.labeled_indices(i) == indexed.labeled_indices(i)
    np.testing.assert_array_equal(videos.load(i, [2, 3])["frames"],
                                  indexed.load(i, [2, 3])["frames"])


def test_a_read_only_split_without_index_is_scanned_once_per_process(tmp_path, monkeypatch, caplog):
  """Each evaluation of a training run makes its dataset anew: it must not rescan the split."""
  with caplog.at_level(logging.WARNING):
    _, _, sources, _ = _without_index(tmp_path, monkeypatch, writable=False)
    again = dataset.make_dataset(helpers.data_config(tmp_path, backend="arrayrecord"), "train")
  assert sum("No video index" in r.getMessage() for r in caplog.records) == 1
  assert sum(source.reads for source in sources) == 48  # The first scan's reads only.
  assert again.num_frames(3) == 6


class _FirstVideoOnly(synthetic.SyntheticVideoSource):
  """A plug-in that keeps the built-in's name but not its videos."""

  def videos(self, split):
    return [super().videos(split)[0]]


def test_a_plugin_subclass_of_a_builtin_source_has_no_arrayrecord_records(tmp_path):
  """The built-in's records would silently stand in for the plug-in's own videos."""
  cfg = helpers.data_config(tmp_path, backend="arrayrecord",
                            source=f"{__name__}:_FirstVideoOnly")
  assert len(dataset.make_dataset(helpers.data_config(tmp_path, backend="arrayrecord"), "train"))
  with pytest.raises(SetupError, match=r"no ArrayRecord records for source class "
                     r".*:_FirstVideoOnly \(name 'synthetic'\).*data\.backend='files'"):
    dataset.make_dataset(cfg, "train")
  cfg.backend = "files"
  assert len(dataset.make_dataset(cfg, "train")) == 1


def test_a_stale_video_index_is_refused(tmp_path):
  builder = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  records = builder.as_data_source(split="train")
  source = dataset.make_source(helpers.data_config(tmp_path))
  path = video_records.index_path(builder, "train")
  index = video_records.read_index(path)
  with pytest.raises(video_records.StaleIndexError,
                     match=f"{path}: it lists 42 frames but there are 48 records"):
    dataset.VideoDataset.from_records(records, source, index[1:], str(path))
  first, second = index[:2]  # Each listing the other's frame records.
  swapped = [first._replace(records=second.records), second._replace(records=first.records)]
  videos = dataset.VideoDataset.from_records(records, source, swapped + index[2:], str(path))
  # Not a DataError, which the loader may skip as one bad sample.
  with pytest.raises(video_records.StaleIndexError, match=rf"{path}: record \d+ holds .* stale"):
    videos.load(0, [0])
  path.write_text(path.read_text()[:-10])  # As if cut short by hand (writes are atomic).
  with pytest.raises(video_records.StaleIndexError, match=f"{path}: unreadable"):
    dataset.make_dataset(helpers.data_config(tmp_path, backend="arrayrecord"), "train")


def test_unlabeled_frames_are_ignore_and_flagged():
  source = helpers.ConstantSource(num_videos=1, num_frames=2, size=4)
  video = source.videos("train")[0]
  frames = (video.frames[0], base.FrameRef("c/1", video.frames[1].image, None))
  videos = dataset.VideoDataset([base.VideoRecord("c", frames)], source, labels_mapped=False)
  clip = videos.load(0, [0, 1])
  assert clip["labeled"].tolist() == [True, False]
  assert (clip["labels"][1] == 255).all() and (clip["labels"][0] == 0).all()
  assert list(videos.iter_video(0))[1][1] is None


def _folder_dataset(tmp_path):
  cfg = helpers.data_config(tmp_path, source="test_folder", backend="files")
  cfg.test_folder = dict(root=helpers.write_folder(tmp_path / "videos", num_videos=2))
  return dataset.make_dataset(cfg, "train"), str(tmp_path / "videos" / "synthetic_train_00001")


def test_files_backend_reads_what_was_written(tmp_path):
  videos, _ = _folder_dataset(tmp_path)
  memory = dataset.make_dataset(helpers.data_config(tmp_path), "train")
  np.testing.assert_array_equal(videos.load(1, [2])["frames"], memory.load(1, [2])["frames"])
  np.testing.assert_array_equal(videos.load(1, [2])["labels"], memory.load(1, [2])["labels"])


def test_missing_frame_file(tmp_path):
  videos, video_dir = _folder_dataset(tmp_path)
  (tmp_path / "videos" / "synthetic_train_00001" / "0003.png").unlink()
  with pytest.raises(base.DataError, match=f"{video_dir}/0003.png: cannot read file"):
    videos.load(1, [3])


def test_corrupt_image(tmp_path):
  videos, video_dir = _folder_dataset(tmp_path)
  (tmp_path / "videos" / "synthetic_train_00001" / "0002.png").write_bytes(b"\x89PNG broken")
  with pytest.raises(base.DataError, match=f"{video_dir}/0002.png: cannot decode image"):
    videos.load(1, [0, 2])


def test_label_of_wrong_size(tmp_path):
  videos, video_dir = _folder_dataset(tmp_path)
  cv2.imwrite(f"{video_dir}/0001_label.png", np.zeros((30, 32), np.uint8))
  with pytest.raises(base.DataError, match=f"{video_dir}/0001_label.png: label size 30x32"):
    videos.load(1, [1])


def test_a_frame_of_another_size_than_its_clip_names_the_file(tmp_path):
  """Not numpy's bare stacking error: the file to fix, and both sizes."""
  videos, video_dir = _folder_dataset(tmp_path)
  cv2.imwrite(f"{video_dir}/0002.png", np.zeros((30, 32, 3), np.uint8))
  cv2.imwrite(f"{video_dir}/0002_label.png", np.zeros((30, 32), np.uint8))
  with pytest.raises(base.DataError, match=re.escape(
      f"{video_dir}/0002.png: size (30, 32) differs from the clip's first frame's (32, 32)")):
    videos.load(1, [1, 2])


def test_class_id_out_of_range(tmp_path):
  videos, video_dir = _folder_dataset(tmp_path)
  cv2.imwrite(f"{video_dir}/0004_label.png", np.full((32, 32), 40, np.uint8))
  with pytest.raises(base.DataError, match=rf"{video_dir}/0004_label.png: class ids \[40\]"):
    videos.load(1, [4])


class _ListedFolders(base.FolderSource):
  """A source of one's own that lists its split's folder without checking that it exists, as
  docs/extending.md's example does."""
  name = "listed_folders"
  class_names = ("a", "b")
  splits = ("train", "val")

  def videos(self, split):
    return [base.VideoRecord(n, ()) for n in sorted(os.listdir(self.split_path(split)))]


def test_a_missing_folder_of_a_source_of_ones_own_is_named(tmp_path):
  """A DataError naming it and the knobs to fix, not a FileNotFoundError traceback."""
  source = _ListedFolders(str(tmp_path / "nowhere"))
  with pytest.raises(base.DataError, match=re.escape(
      f"{tmp_path}/nowhere/val: not found, listing split 'val' of source 'listed_folders' (is "
      "data.listed_folders.root right?)")):
    dataset.VideoDataset.from_source(source, "val")
  archive = tmp_path / "dataset.tar"  # the archive given as the root, not its extracted folder
  archive.write_bytes(b"ustar")
  with pytest.raises(base.DataError, match=re.escape(
      f"{archive}/val: cannot be read (Not a directory), listing split 'val' of source "
      "'listed_folders' (is data.listed_folders.root right?)")):
    dataset.VideoDataset.from_source(_ListedFolders(str(archive)), "val")


def test_config_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown data.backend 'tfrecord'"):
    dataset.make_dataset(helpers.data_config(tmp_path, backend="tfrecord"), "train")
  cfg = helpers.data_config(tmp_path, source="vspw", backend="arrayrecord")
  cfg.vspw = dict(root=str(tmp_path / "VSPW_480p"))
  with pytest.raises(SetupError, match="never built implicitly.*--source=vspw"):
    dataset.make_dataset(cfg, "train")
  cfg = helpers.data_config(tmp_path, source="test_constant", backend="arrayrecord")
  with pytest.raises(ValueError, match="no ArrayRecord builder for source 'test_constant'"):
    dataset.make_dataset(cfg, "train")
  with pytest.raises(SetupError, match="has splits"):
    dataset.make_dataset(helpers.data_config(tmp_path, backend="arrayrecord"), "test")


def test_num_classes_must_match_the_source(tmp_path):
  """A config mistake: a SetupError, which the commands print as one line."""
  cfg = helpers.data_config(tmp_path)
  cfg.num_classes = 10
  with pytest.raises(SetupError, match="data.num_classes=10 but source 'synthetic' has 9 classes"):
    dataset.make_source(cfg)


def test_a_source_setting_missing_or_misspelt_is_one_line_naming_the_section(tmp_path):
  """A config switched to a dataset it has no settings for (`--config.data.source=vspw` on the
  synthetic config) raised the constructor's TypeError."""
  cfg = helpers.data_config(tmp_path, source="vspw")
  with pytest.raises(SetupError, match=r"data\.vspw=\{\}: source 'vspw' takes root there "
                     r"\(missing a required argument: 'root'\)"):
    dataset.make_source(cfg)
  cfg.vspw = dict(root="/data", rooot="/data")
  with pytest.raises(SetupError, match=r"data\.vspw=\{.*\}: source 'vspw' .*unexpected keyword "
                     r"argument 'rooot'"):
    dataset.make_source(cfg)


# make_dataset's check of the built splits, on a VSPW copy built without its test list.
def test_a_split_missing_from_the_built_copy_is_named(tmp_path):
  """A build skips a split the copy lacks (here VSPW's test.txt); asking the records for it ended
  in TFDS's bare ValueError ("Unknown split"), a traceback naming neither the list file nor the
  way out."""
  root = helpers.write_vspw(tmp_path / "v")
  os.remove(os.path.join(root, "test.txt"))
  real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  cfg = helpers.data_config(tmp_path / "tfds", source="vspw", backend="arrayrecord")
  cfg.vspw = dict(root=root)
  assert len(dataset.make_dataset(cfg, "val")) == 1
  with pytest.raises(SetupError, match=r"hold the splits \['train', 'val'\], not 'test': vspw "
                                       r".*test.txt was not in the copy"):
    dataset.make_dataset(cfg, "test")
