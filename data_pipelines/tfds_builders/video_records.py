"""One ArrayRecord record per video, written and read without TensorFlow.

Frames and labels are stored as encoded image bytes in `Tensor(dtype=object)` features: TFDS hands
those back as raw `bytes` without decoding (an `Image` feature would decode every frame of the
video, and encoding numpy arrays into it needs TensorFlow). A reader therefore decodes only the
frames a clip needs. Image bytes are the source's own file bytes when it has them (no re-encoding,
no loss); labels are PNGs of the already-mapped train ids, so readers need no dataset mapping.
Records are shuffled by key hash at write time, so every record carries its video name.
"""
from __future__ import annotations

import abc
import inspect

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.sources import base
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

  def _split_generators(self, dl_manager):
    source = self.make_source(dl_manager)
    return {split: self._generate_examples(source, split) for split in source.available_splits()}

  def _generate_examples(self, source: base.VideoSource, split: str):
    videos = source.videos(split)
    progress = Progress(f"{source.name} {split}", len(videos), "videos")
    for done, video in enumerate(videos, 1):
      yield video.name, encode_video(source, video)
      progress.update(done, force=done == len(videos))
