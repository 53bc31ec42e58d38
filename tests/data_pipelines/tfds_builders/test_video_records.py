"""data_pipelines.tfds_builders.video_records: one record per frame without TensorFlow, the video
index, and what every build does (original bytes, missing index, bad data, progress lines), on the
synthetic set and tiny VSPW copies."""
import concurrent.futures
import os
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines import dataset
from data_pipelines.sources import base, synthetic, vspw
from data_pipelines.tfds_builders import real_videos, synthetic_video, video_records
from tests.data_pipelines import helpers


def test_arrayrecord_round_trip_equals_the_in_memory_source(tmp_path):
  builder = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  source = synthetic.SyntheticVideoSource(**helpers.TINY)
  for split, count in (("train", 8), ("val", 2)):
    records = builder.as_data_source(split=split)
    assert len(records) == count * 6  # One record per frame.
    videos = {v.name: v for v in source.videos(split)}
    seen = set()
    for record in records:
      video, t = videos[record["video"].decode()], int(record["t"])
      seen.add((video.name, t))
      assert record["num_frames"] == 6 and record["labeled"]
      assert record["frame_id"].decode() == video.frames[t].frame_id
      np.testing.assert_array_equal(base.read_image(record["image"], "x"), video.frames[t].image)
      np.testing.assert_array_equal(base.read_label(record["label"], "x"), video.frames[t].label)
    assert seen == {(name, t) for name in videos for t in range(6)}


def test_the_video_index_maps_every_frame_to_its_record(tmp_path):
  builder = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  for split in ("val", "train"):
    records = builder.as_data_source(split=split)
    index = video_records.read_index(video_records.index_path(builder, split))
    names = [v.name for v in synthetic.SyntheticVideoSource(**helpers.TINY).videos(split)]
    assert [summary.name for summary in index] == sorted(names)
    for summary in index:
      assert summary.num_frames == len(summary.records) == 6 and summary.labeled == tuple(range(6))
      for t, position in enumerate(summary.records):
        record = records[position]
        assert (record["video"].decode(), record["t"]) == (summary.name, t)
    positions = [position for summary in index for position in summary.records]
    assert sorted(positions) == list(range(len(records)))
  # TFDS shuffles records by key hash: a video's frames are not consecutive records.
  assert any(summary.records != tuple(range(summary.records[0], summary.records[0] + 6))
             for summary in index)


def test_a_video_missing_frame_records_is_an_error():
  frame = dict(video=b"v", video_position=0, num_frames=3, labeled=True)
  records = [dict(frame, t=0), dict(frame, t=2)]
  with pytest.raises(base.DataError, match=r"video v: its records hold frames \[0, 2\] of a video "
                     r"of \[3\] frames"):
    video_records.scan_index(records, "test")


def test_a_video_missing_its_last_frame_records_is_an_error():
  """Frames 0 and 1 of a 3-frame video look complete by position alone: without the check
  against num_frames, the index would list a 2-frame video and its last frame be lost."""
  frame = dict(video=b"v", video_position=0, num_frames=3, labeled=True)
  records = [dict(frame, t=0), dict(frame, t=1)]
  with pytest.raises(base.DataError, match=r"video v: its records hold frames \[0, 1\] of a video "
                     r"of \[3\] frames"):
    video_records.scan_index(records, "test")

@pytest.mark.parametrize("field,value", [("labeled", False), ("num_frames", 4)])
def test_a_record_whose_label_flag_or_length_disagrees_with_the_index_is_stale(field, value):
  """An index from another build that still names the right video and t would otherwise train on
  an unlabelled frame as labelled (or on a video of another length) without a word."""
  summary = video_records.VideoSummary("v", 3, (0, 1, 2), (5, 6, 7))
  record = dict(video=b"v", t=1, num_frames=3, labeled=True, frame_id=b"f1", image=b"i",
                label=b"l")
  assert video_records.decode_frame(record, summary, 1, "idx.json").frame_id == "f1"
  with pytest.raises(video_records.StaleIndexError, match=r"idx\.json: record 6 holds .* stale"):
    video_records.decode_frame(dict(record, **{field: value}), summary, 1, "idx.json")

def test_racing_index_writers_each_replace_it_whole(tmp_path):
  """Hosts of a multi-host run may all write a missing index, with equal pids in containers;
  threads share one pid, so they race the same way."""
  path = epath.Path(tmp_path) / "video_index-train.json"
  index = [video_records.VideoSummary(f"v{i}", 3, (0, 2), (3 * i, 3 * i + 1, 3 * i + 2))
           for i in range(2000)]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda _: video_records.write_index(path, index), range(16)))
  assert video_records.read_index(path) == index
  assert os.listdir(tmp_path) == [path.name]  # No temporary file left behind.


def test_prepare_writes_a_missing_video_index_and_keeps_the_records(tmp_path):
  builder = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  path = video_records.index_path(builder, "train")
  written = path.read_text()
  path.unlink()  # As after a build interrupted before its index.
  stamp = os.path.getmtime(os.path.join(builder.data_path, "dataset_info.json"))
  synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  assert path.read_text() == written
  assert os.path.getmtime(os.path.join(builder.data_path, "dataset_info.json")) == stamp


def test_prepare_with_every_index_present_does_not_rescan_the_records(tmp_path, monkeypatch):
  """Each run prepares its data: rescanning every record for an index already there would add a
  full read of the dataset to every start."""
  synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)

  def refuse(builder, split):
    raise AssertionError(f"rescanned the {split} index, which was there")

  monkeypatch.setattr(video_records, "scan_and_write_index", refuse)
  synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)

def test_building_leaves_no_temporary_directory(tmp_path, monkeypatch):
  """TFDS's look for metadata on its bucket, at each unbuilt builder, left one per build."""
  temp = tmp_path / "temp"
  temp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temp))
  synthetic_video.prepare_synthetic(str(tmp_path / "data"), **helpers.TINY)
  assert not list(temp.iterdir())


def test_building_prints_the_sources_progress_lines_without_tfdss_bars(tmp_path, capfd):
  """TFDS's tqdm bars (examples/s, shuffling) were redrawn over the source's own progress lines,
  garbling the first run's output; a build turns them off."""
  tfds.enable_progress_bar()  # as a fresh process has it
  synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  out, err = capfd.readouterr()
  assert "synthetic train" in out + err  # the source's lines
  assert "examples/s" not in out + err and "Shuffling" not in out + err
  # Nor does it speak of downloads ("Downloading and preparing dataset Unknown size ..."): the
  # builders read local files.
  assert "download" not in (out + err).replace("nothing is downloaded", "").lower()
  assert f"writing the vssjax_synthetic_video records to {tmp_path}" in out


def test_encode_frame_keeps_original_file_bytes_and_marks_unlabeled(tmp_path):
  source = helpers.FolderSource(helpers.write_folder(tmp_path / "v", num_videos=1))
  video = source.videos("train")[0]
  frames = (video.frames[0], base.FrameRef("x/1", video.frames[1].image, None))
  video = base.VideoRecord(video.name, frames)
  labeled, unlabeled = (video_records.encode_frame(source, video, 0, t) for t in range(2))
  with open(video.frames[0].image, "rb") as f:
    assert labeled["image"] == f.read()
  assert labeled["labeled"] and labeled["label"]
  assert (unlabeled["video"], unlabeled["t"], unlabeled["num_frames"]) == (video.name, 1, 2)
  assert unlabeled["label"] == b"" and not unlabeled["labeled"]


def test_building_bad_data_fails_naming_the_file(tmp_path):
  root = helpers.write_folder(tmp_path / "v", num_videos=1)
  source = helpers.FolderSource(root)
  video = source.videos("train")[0]
  bad = video.frames[2].label
  with open(bad, "wb") as f:
    f.write(b"garbage")
  with pytest.raises(base.DataError, match=f"{bad}: cannot decode label"):
    video_records.encode_frame(source, video, 0, 2)


# The records' video positions and index, on a VSPW copy (built by real_videos).
def test_arrayrecord_keeps_the_list_files_video_order(tmp_path):
  """As the files backend and the releases read them: DCFM's first keyframe of a video and
  `eval.max_videos` depend on its position. Scanned anew (no index), too."""
  root = helpers.write_vspw(tmp_path / "vspw")
  with open(os.path.join(root, "train.txt"), "w") as f:
    f.write("vid_b\nvid_a\n")
  builder = real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  cfg = helpers.data_config(tmp_path / "tfds", source="vspw", backend="arrayrecord")
  cfg.vspw = dict(root=root)
  files = dataset.VideoDataset.from_source(vspw.VspwSource(root), "train")
  assert [files.name(i) for i in range(2)] == ["vid_b", "vid_a"]
  records = dataset.make_dataset(cfg, "train")
  assert [records.name(i) for i in range(2)] == ["vid_b", "vid_a"]
  os.remove(os.fspath(builder.data_path / "video_index-train.json"))
  rescanned = dataset.make_dataset(cfg, "train")
  assert [rescanned.name(i) for i in range(2)] == ["vid_b", "vid_a"]


# VideoSegBuilder's check of the copy's splits, met building VSPW.
def test_building_from_a_wrong_folder_fails_and_leaves_no_build(tmp_path):
  """A folder without any split must not pass for a finished build of nothing, which TFDS would
  then reuse instead of building from the right folder."""
  wrong = tmp_path / "wrong"
  wrong.mkdir()
  (wrong / "readme.txt").write_text("not VSPW")
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(base.DataError, match=rf"{wrong}: holds none of the vspw splits "
                     rf"\(looked for {wrong}/train\.txt, .*extracted folder"):
    real_videos.prepare("vspw", str(wrong), data_dir)
  builder = real_videos.prepare("vspw", helpers.write_vspw(tmp_path / "vspw"), data_dir)
  assert builder.info.splits["train"].num_examples == 6


# VideoSegBuilder's check of a split's videos, met building VSPW.
def test_building_a_split_whose_list_is_empty_names_the_list(tmp_path):
  root = helpers.write_vspw(tmp_path / "vspw")
  open(os.path.join(root, "val.txt"), "w").close()
  with pytest.raises(base.DataError, match=r"vspw .*val\.txt: holds no videos \(val\.txt names "
                     r"the folders of data/, one a line; docs/data\.md\)") as error:
    real_videos.prepare("vspw", root, str(tmp_path / "tfds"))
  assert error.value.__notes__ == ["Fix it, or move it away: a split that is missing is not built."]
