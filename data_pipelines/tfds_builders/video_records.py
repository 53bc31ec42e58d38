"""One ArrayRecord record per video, written and read without TensorFlow.

Frames and labels are stored as encoded image bytes in `Tensor(dtype=object)` features: TFDS hands
those back as raw `bytes` without decoding (an `Image` feature would decode every frame of the
video, and encoding numpy arrays into it needs TensorFlow). A reader therefore decodes only the
frames a clip needs. Image bytes are the source's own file bytes when it has them (no re-encoding,
no loss); labels are PNGs of the already-mapped train ids, so readers need no dataset mapping.
Records are shuffled by key hash at write time, so every record carries its video name.

Beside each split's records the builder writes its video index (`index_path`): every video's name,
length and labelled frames in record order, so that epochs and evaluation, which ask for these of
every video up front, read no record (VSPW's train records are tens of GB).
"""
from __future__ import annotations

import abc
import inspect
import json
import os
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.sources import base
from data_pipelines.tfds_builders import tf_free_shuffle
from vssjax.progress import Progress


def video_features() -> tfds.features.FeaturesDict:
  encoded = tfds.features.Tensor(shape=(), dtype=np.object_)
  return tfds.features.FeaturesDict({
      "name": tfds.features.Text(),
      "num_frames": tfds.features.Tensor(shape=(), dtype=np.int32),
      "frame_ids": tfds.features.Sequence(tfds.features.Text()),
      "images": tfds.features.Sequence(encoded),
      "labels": tfds.features.Sequence(encoded),  # b"" where a frame has no annotation.
      "labeled": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
  })


def encode_png(array: np.ndarray) -> bytes:
  """Lossless PNG bytes of an RGB image or a uint8 label map."""
  if array.ndim == 3:
    array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
  ok, buffer = cv2.imencode(".png", array)
  if not ok:
    raise ValueError(f"PNG encoding failed for an array of shape {array.shape}")
  return buffer.tobytes()


def _image_bytes(frame: base.FrameRef) -> bytes:
  if isinstance(frame.image, bytes):
    return frame.image
  if isinstance(frame.image, str):
    with open(frame.image, "rb") as f:
      return f.read()
  return encode_png(frame.image)


def encode_video(source: base.VideoSource, video: base.VideoRecord) -> dict:
  """The record of one video. Decodes every frame once, so bad data fails here, named."""
  images, labels, labeled = [], [], []
  for frame in video.frames:
    image = source.decode_image(frame)
    images.append(_image_bytes(frame))
    labeled.append(frame.label is not None)
    if frame.label is None:
      labels.append(b"")
    else:
      # uint8 holds every train id: ids are < 255 because 255 is the ignore label.
      labels.append(encode_png(source.decode_label(frame, image.shape[:2]).astype(np.uint8)))
  return dict(name=video.name, num_frames=len(video.frames),
              frame_ids=[frame.frame_id for frame in video.frames], images=images,
              labels=labels, labeled=np.array(labeled, np.bool_))


def decode_record(record: dict) -> base.VideoRecord:
  """The video of a record read back: encoded payloads, label None where a frame has none."""
  name = record["name"].decode()
  frames = tuple(
      base.FrameRef(frame_id.decode(), image, label if is_labeled else None)
      for frame_id, image, label, is_labeled in zip(
          record["frame_ids"], record["images"], record["labels"], record["labeled"]))
  if len(frames) != record["num_frames"]:
    raise base.DataError(f"record {name}", f"holds {len(frames)} frames, not "
                         f"{record['num_frames']}")
  return base.VideoRecord(name, frames)


class VideoSummary(NamedTuple):
  """What epochs and evaluation ask of a video before loading any of its frames."""
  name: str
  num_frames: int
  labeled: tuple[int, ...]  # Indices of the frames that carry a label.


def summarize(video: base.VideoRecord) -> VideoSummary:
  return VideoSummary(video.name, len(video.frames),
                      tuple(t for t, frame in enumerate(video.frames) if frame.label is not None))


def index_path(builder: tfds.core.DatasetBuilder, split: str) -> epath.Path:
  return epath.Path(builder.data_path) / f"video_index-{split}.json"


def scan_index(records: Sequence[dict], label: str) -> list[VideoSummary]:
  """The summaries of `records` in record order, by reading every record once."""
  progress = Progress(f"index {label}", len(records), "videos")
  index = []
  for i in range(len(records)):
    index.append(summarize(decode_record(records[i])))
    progress.update(i + 1, force=i + 1 == len(records))
  return index


def write_index(path: epath.Path, index: Sequence[VideoSummary]) -> None:
  """Writes through a temporary file, so that a reader never sees half an index."""
  temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
  temporary.write_text(json.dumps([summary._asdict() for summary in index]))
  temporary.replace(path)


def read_index(path: epath.Path) -> list[VideoSummary] | None:
  """The index written by `write_index`; None where there is none."""
  if not path.exists():
    return None
  return [VideoSummary(entry["name"], entry["num_frames"], tuple(entry["labeled"]))
          for entry in json.loads(path.read_text())]


class VideoSegBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes every split of the source returned by `make_source` (subclasses implement it)."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default lookup needs `importlib_resources`, which TFDS does not declare as a
    # dependency; the module file is all it needs (to look for a checksums file beside it).
    return epath.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, features=video_features(),
        description="Videos with per-frame semantic labels; one record per video.")

  @abc.abstractmethod
  def make_source(self, dl_manager: tfds.download.DownloadManager) -> base.VideoSource:
    """The source whose videos are written (real datasets read `dl_manager.manual_dir`)."""

  def download_and_prepare(self, *args, **kwargs) -> None:
    """TFDS's, then the index of every split that lacks one, records already there included.

    The index is read back from the written records, so it follows their order, whatever TFDS's
    shuffling does, at the cost of one more read of the records. Datasets built before the index
    existed get theirs by building again (the records are reused); a read-only data dir gets none,
    and readers then read a video's record to answer for it.
    """
    with tf_free_shuffle.shuffler_without_tensorflow():  # splits over 1 GB spill to disk
      super().download_and_prepare(*args, **kwargs)
    if not os.access(self.data_path, os.W_OK):
      return
    for split in self.info.splits:
      path = index_path(self, split)
      if not path.exists():
        write_index(path, scan_index(self.as_data_source(split), f"{self.name} {split}"))

  def _split_generators(self, dl_manager):
    source = self.make_source(dl_manager)
    return {split: self._generate_examples(source, split) for split in source.available_splits()}

  def _generate_examples(self, source: base.VideoSource, split: str):
    videos = source.videos(split)
    progress = Progress(f"{source.name} {split}", len(videos), "videos")
    for done, video in enumerate(videos, 1):
      yield video.name, encode_video(source, video)
      progress.update(done, force=done == len(videos))
