"""Helpers for the data pipeline tests: tiny configs, two test-only sources and a scripted rng.

`test_constant` makes videos whose pixels all equal the video index (so a batch tells which videos
it came from); `test_folder` reads PNG files from disk (so bad files can be planted).
"""
import os

import cv2
import ml_collections
import numpy as np

from data_pipelines.sources import base
from data_pipelines.sources import synthetic
from data_pipelines.tfds_builders import video_records
from vssjax.configs_lib import base_config

TINY = dict(num_train_videos=8, num_val_videos=2, num_frames=6, height=32, width=32, seed=0)


@base.register_source
class ConstantSource(base.VideoSource):
  name = "test_constant"
  class_names = synthetic.CLASS_NAMES
  splits = ("train", "val")

  def __init__(self, num_videos: int = 8, num_frames: int = 12, size: int = 16):
    self._shape = (num_videos, num_frames, size)

  def videos(self, split):
    num_videos, num_frames, size = self._shape
    return [base.VideoRecord(f"const_{i}", tuple(
        base.FrameRef(f"const_{i}/{t}", np.full((size, size, 3), i, np.uint8),
                      np.full((size, size), i % self.num_classes, np.uint8))
        for t in range(num_frames))) for i in range(num_videos)]


@base.register_source
class FolderSource(base.VideoSource):
  """root/<video>/<frame>.png images and root/<video>/<frame>_label.png labels (split 'train')."""
  name = "test_folder"
  class_names = synthetic.CLASS_NAMES
  splits = ("train",)

  def __init__(self, root: str):
    self._root = root

  def videos(self, split):
    self.check_split(split)
    records = []
    for video in sorted(os.listdir(self._root)):
      frames = sorted(f[:-4] for f in os.listdir(os.path.join(self._root, video))
                      if not f.endswith("_label.png"))
      records.append(base.VideoRecord(video, tuple(
          base.FrameRef(f"{video}/{f}", os.path.join(self._root, video, f + ".png"),
                        os.path.join(self._root, video, f + "_label.png")) for f in frames)))
    return records


def write_folder(root, num_videos: int = 3) -> str:
  """Writes the first tiny synthetic train videos as PNG files for `FolderSource`."""
  root = str(root)
  videos = synthetic.SyntheticVideoSource(**TINY).videos("train")
  for i in range(num_videos):
    os.makedirs(os.path.join(root, videos[i].name))
    for t, frame in enumerate(videos[i].frames):
      stem = os.path.join(root, videos[i].name, f"{t:04d}")
      cv2.imwrite(stem + ".png", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
      cv2.imwrite(stem + "_label.png", frame.label)
  return root


def data_config(data_dir, **overrides) -> ml_collections.ConfigDict:
  """`base_config`'s data config at test size: the tiny synthetic set read from its files."""
  cfg = base_config().data
  cfg.update(dict(
      source="synthetic", backend="files", data_dir=str(data_dir), synthetic=dict(TINY),
      batch_size=4, num_workers=0, skip_bad_samples=False,
      train_transform=dict(scale=(32, 32), crop_size=(24, 24)),
      eval_transform=dict(scale=(32, 32), size_divisor=32)))
  cfg.update(overrides)
  return cfg


class CountingRecords:
  """An ArrayRecord data source that counts the records read through it."""

  def __init__(self, records):
    self._records = records
    self.reads = 0

  def __len__(self):
    return len(self._records)

  def __getitem__(self, index):
    self.reads += 1
    return self._records[index]


def count_record_reads(monkeypatch) -> list[CountingRecords]:
  """From now on every data source the builders hand out counts its reads; returns them all."""
  sources = []
  as_data_source = video_records.VideoSegBuilder.as_data_source

  def counting(builder, *args, **kwargs):
    sources.append(CountingRecords(as_data_source(builder, *args, **kwargs)))
    return sources[-1]

  monkeypatch.setattr(video_records.VideoSegBuilder, "as_data_source", counting)
  return sources


class ScriptedRng:
  """Returns queued values from integers()/uniform()/random(), to pin every random draw."""

  def __init__(self, *values):
    self._values = list(values)

  def _next(self, *args, **kwargs):
    del args, kwargs
    return self._values.pop(0)

  integers = uniform = random = _next
