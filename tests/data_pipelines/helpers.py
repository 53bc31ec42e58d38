"""Helpers for the data pipeline tests: tiny configs, two test-only sources, a scripted rng, and
tiny copies of the real datasets written in their on-disk layouts.

`test_constant` makes videos whose pixels all equal the video index (so a batch tells which videos
it came from); `test_folder` reads PNG files from disk (so bad files can be planted).
"""
import os
import shutil

import cv2
import ml_collections
import numpy as np
from PIL import Image

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


# Tiny copies of the real datasets, each in its exact on-disk layout, of H x W frames: the
# sources', the builders' and the loader's tests read them.
H, W = 6, 8


def _rgb(value: int) -> np.ndarray:
  return np.full((H, W, 3), value, np.uint8)


def write_rgb(path, value: int, ext: str = ".png") -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  assert cv2.imwrite(str(path), _rgb(value))


def write_palette_png(path, raw: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(raw.astype(np.uint8), mode="P")
  image.putpalette([255, 0, 0] * 256)  # Every index red: only the indices carry the label.
  image.save(path)


def write_vspw(root, frames: int = 3) -> str:
  """VSPW_480p layout: 2 train videos, 1 val video, 1 test video without masks."""
  root = str(root)
  lists = {"train": ["vid_a", "vid_b"], "val": ["vid_c"], "test": ["vid_d"]}
  os.makedirs(root)
  for split, names in lists.items():
    with open(os.path.join(root, f"{split}.txt"), "w") as f:
      f.write("\n".join(names) + "\n")
    for v, name in enumerate(names):
      for t in range(frames):
        write_rgb(os.path.join(root, "data", name, "origin", f"{t:08d}.jpg"), 10 * t + v)
        if split != "test":
          raw = np.zeros((H, W), np.uint8)
          raw[:, 2:] = [0, 1, 124, 255, 7, 3][t % 6]
          raw[:, 1] = [125, 130, 254][t % 3]  # Beyond the 124 classes: ignored, as DCFM does.
          raw[0, 0] = 1
          write_palette_png(os.path.join(root, "data", name, "mask", f"{t:08d}.png"), raw)
  return root


def write_cityscapes(root) -> str:
  """Two snippets in train (frankfurt seq 0 at frame 19, seq 1 at frame 29 with frames 10..39)."""
  root = str(root)
  for seq, annotated in ((0, 19), (1, 29)):
    for number in range(annotated - 19, annotated + 11):
      stem = f"frankfurt_{seq:06d}_{number:06d}"
      write_rgb(os.path.join(root, "leftImg8bit_sequence", "train", "frankfurt",
                             f"{stem}_leftImg8bit.png"), number)
    raw = np.zeros((H, W), np.uint8)
    raw[0, :6] = [7, 8, 33, 0, 1, 24]
    path = os.path.join(root, "gtFine", "train", "frankfurt",
                        f"frankfurt_{seq:06d}_{annotated:06d}_gtFine_labelIds.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, raw)
  return root


def write_cityscapes_without_sequences(root) -> str:
  """`write_cityscapes` as the 11 GB package has it: the annotated frames in leftImg8bit/ only."""
  root = write_cityscapes(root)
  sequence = os.path.join(root, "leftImg8bit_sequence", "train", "frankfurt")
  single = os.path.join(root, "leftImg8bit", "train", "frankfurt")
  os.makedirs(single)
  for stem in ("frankfurt_000000_000019", "frankfurt_000001_000029"):
    os.rename(os.path.join(sequence, f"{stem}_leftImg8bit.png"),
              os.path.join(single, f"{stem}_leftImg8bit.png"))
  shutil.rmtree(os.path.join(root, "leftImg8bit_sequence"))
  return root


def write_camvid(root, with_frames: bool) -> str:
  root = str(root)
  for split, names in (("train", ["0001TP_006690", "0001TP_006720", "Seq05VD_f00030"]),
                       ("test", ["0001TP_006750"])):
    for name in names:
      write_rgb(os.path.join(root, split, name + ".png"), 1)
      raw = np.full((H, W), 3, np.uint8)
      raw[0, :2] = [11, 10]
      os.makedirs(os.path.join(root, split + "annot"), exist_ok=True)
      cv2.imwrite(os.path.join(root, split + "annot", name + ".png"), raw)
  if with_frames:
    for number in range(6670, 6701):
      write_rgb(os.path.join(root, "frames", f"0001TP_{number:06d}.png"), number % 200)
  return root
