"""Tests for the TF-free ArrayRecord builders: round trip, reuse, original bytes, bad data."""
import os

import numpy as np
import pytest

from data_pipelines.sources import base, synthetic
from data_pipelines.tfds_builders import synthetic_video, video_records
from tests.data_pipelines import helpers


def test_arrayrecord_round_trip_equals_the_in_memory_source(tmp_path):
  builder = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  source = synthetic.SyntheticVideoSource(**helpers.TINY)
  for split, count in (("train", 8), ("val", 2)):
    records = builder.as_data_source(split=split)
    assert len(records) == count
    videos = {v.name: v for v in source.videos(split)}
    seen = set()
    for record in records:
      video = videos[record["name"].decode()]
      seen.add(video.name)
      assert record["num_frames"] == 6
      assert [f.decode() for f in record["frame_ids"]] == [f.frame_id for f in video.frames]
      assert record["labeled"].tolist() == [True] * 6
      for frame, image, label in zip(video.frames, record["images"], record["labels"]):
        np.testing.assert_array_equal(base.read_image(image, "x"), frame.image)
        np.testing.assert_array_equal(base.read_label(label, "x"), frame.label)
    assert seen == set(videos)


def test_the_video_index_lists_every_record_in_record_order(tmp_path):
  builder = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  indexes = {}
  for split in ("train", "val"):
    records = builder.as_data_source(split=split)
    indexes[split] = video_records.read_index(video_records.index_path(builder, split))
    assert len(indexes[split]) == len(records)
    for summary, record in zip(indexes[split], records):
      assert summary == (record["name"].decode(), record["num_frames"],
                         tuple(np.flatnonzero(record["labeled"])))
  # TFDS shuffles records by key hash: an index in generation order would be wrong.
  generated = [v.name for v in synthetic.SyntheticVideoSource(**helpers.TINY).videos("train")]
  assert [summary.name for summary in indexes["train"]] != generated


def test_prepare_writes_a_missing_video_index_and_keeps_the_records(tmp_path):
  builder = synthetic_video.prepare_synthetic(str(tmp_path), **helpers.TINY)
  path = video_records.index_path(builder, "train")
  written = path.read_text()
  path.unlink()  # As records built before the index existed.
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


def test_encode_video_keeps_original_file_bytes_and_marks_unlabeled(tmp_path):
  source = helpers.FolderSource(helpers.write_folder(tmp_path / "v", num_videos=1))
  video = source.videos("train")[0]
  frames = (video.frames[0], base.FrameRef("x/1", video.frames[1].image, None))
  example = video_records.encode_video(source, base.VideoRecord(video.name, frames))
  with open(video.frames[0].image, "rb") as f:
    assert example["images"][0] == f.read()
  assert example["labels"][1] == b"" and example["labeled"].tolist() == [True, False]


def test_building_bad_data_fails_naming_the_file(tmp_path):
  root = helpers.write_folder(tmp_path / "v", num_videos=1)
  source = helpers.FolderSource(root)
  video = source.videos("train")[0]
  bad = video.frames[2].label
  with open(bad, "wb") as f:
    f.write(b"garbage")
  with pytest.raises(base.DataError, match=f"{bad}: cannot decode label"):
    video_records.encode_video(source, video)
