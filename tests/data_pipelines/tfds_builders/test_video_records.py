"""Tests for the TF-free ArrayRecord builders: round trip, reuse, original bytes, bad data."""
import concurrent.futures
import logging
import os
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from etils import epath

from data_pipelines.sources import base, synthetic
from data_pipelines.tfds_builders import synthetic_video, video_records
from tests.conftest import REPO, load_config
from tests.data_pipelines import helpers
from vssjax import configs_lib


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


def test_prepare_reuses_existing_data_and_keys_on_knobs(tmp_path):
  first = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  marker = os.path.join(first.data_path, "dataset_info.json")
  stamp = os.path.getmtime(marker)
  again = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  assert again.data_path == first.data_path and os.path.getmtime(marker) == stamp
  other = synthetic_video.synthetic_config(**{**helpers.TINY, "seed": 3})
  assert other.name == "v8-2_f6_32x32_s3" and other.name not in str(first.data_path)


def test_the_predefined_synthetic_set_is_the_one_the_configs_build():
  """The set's defaults were written three times and disagreed (16 frames in the source and in
  the TFDS config, 24 in the configs): TFDS's predefined config was a set no config built, and a
  source made without knobs was not the configs' set."""
  knobs = configs_lib.base_config().data.synthetic.to_dict()
  for path in sorted((REPO / "configs").glob("*/synthetic_*.py")):
    assert load_config(str(path.relative_to(REPO))).data.synthetic.to_dict() == knobs, path
  assert synthetic.SyntheticVideoSource().knobs == knobs
  predefined, = synthetic_video.VssjaxSyntheticVideo.BUILDER_CONFIGS
  assert {k: getattr(predefined, k) for k in knobs} == knobs
  assert predefined.name == synthetic_video.synthetic_config(**knobs).name == (
      "v200-16_f24_128x128_s0")


@pytest.mark.parametrize("moved_in_after_the_check", [False, True])
def test_a_build_another_process_finished_first_is_read(tmp_path, monkeypatch,
                                                        moved_in_after_the_check):
  """The processes of a multi-process run on a fresh data dir all build the set; the one whose
  build finishes second finds the folder taken and reads the first's: TFDS's FileExistsError
  (epath's rename checks that the destination is free), or, where the first's build moved in
  after that check, os.rename's ENOTEMPTY, a plain OSError."""
  build = synthetic_video.VssjaxSyntheticVideo._download_and_prepare
  raced = []

  def build_while_another_process_finishes(self, *args, **kwargs):
    if not raced:
      raced.append(True)
      synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)  # the other process
    return build(self, *args, **kwargs)

  monkeypatch.setattr(synthetic_video.VssjaxSyntheticVideo, "_download_and_prepare",
                      build_while_another_process_finishes)
  if moved_in_after_the_check:
    monkeypatch.setattr(type(epath.Path(tmp_path)._backend), "rename",
                        lambda self, path, dst: os.rename(path, dst))
  builder = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  assert raced
  index = video_records.read_index(video_records.index_path(builder, "val"))
  assert [summary.name for summary in index] == [video.name for video in
                                                synthetic.SyntheticVideoSource(
                                                    **helpers.TINY).videos("val")]
  assert sorted(os.listdir(os.path.dirname(builder.data_path))) == ["2.1.0"]  # no temporary left


def test_building_leaves_no_temporary_directory(tmp_path, monkeypatch):
  """TFDS's look for metadata on its bucket, at each unbuilt builder, left one per build."""
  temp = tmp_path / "temp"
  temp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temp))
  synthetic_video.prepare_synthetic(str(tmp_path / "data"), **helpers.TINY)
  assert not list(temp.iterdir())


def test_custom_knobs_make_no_custom_configuration_warning(tmp_path, caplog):
  """Every knob set but the default is a TFDS custom config by design: TFDS's warning about it at
  each run (and in each Grain worker) is dropped, and only that one."""
  caplog.set_level(logging.WARNING, logger="absl")
  synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  assert "Using custom data configuration" not in caplog.text
  absl_logging.warning("Using custom data configuration: %s", "another builder's")
  assert "Using custom data configuration: another builder's" in caplog.text


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


def test_a_bumped_version_is_built_beside_the_old_one(tmp_path, monkeypatch):
  """Records of another layout are never read: a new VERSION builds a new directory."""
  old = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  assert str(synthetic_video.VssjaxSyntheticVideo.VERSION) == "2.1.0"  # Video positions.
  monkeypatch.setattr(synthetic_video.VssjaxSyntheticVideo, "VERSION",
                      tfds.core.Version("2.1.1"))
  stamp = os.path.getmtime(os.path.join(old.data_path, "dataset_info.json"))
  new = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  assert os.fspath(new.data_path).endswith("2.1.1") and new.data_path != old.data_path
  assert os.path.exists(os.path.join(new.data_path, "dataset_info.json"))
  assert video_records.index_path(new, "train").exists()
  assert os.path.getmtime(os.path.join(old.data_path, "dataset_info.json")) == stamp
