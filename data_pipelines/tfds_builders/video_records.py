"""One ArrayRecord record per frame, written and read without TensorFlow.

A training clip needs 1-4 frames of a video, and reading a record reads and parses all of it: with
one record per video, a 2-frame Cityscapes clip read its whole 30-frame window (~66 MB). One
record per frame reads only the frames a clip needs.

Frames and labels are stored as encoded image bytes in `Tensor(dtype=object)` features: TFDS hands
those back as raw `bytes` without decoding (an `Image` feature would decode on read, and encoding
numpy arrays into it needs TensorFlow), so a reader decodes only what it uses. Image bytes are the
source's own file bytes when it has them (no re-encoding, no loss); labels are PNGs of the
already-mapped train ids, so readers need no dataset mapping. TFDS shuffles records by key hash at
write time, so every record names its video, the video's position in the source's list of the
split, and the frame's position in the video.

Beside each split's records the builder writes its video index (`index_path`): every video's name,
length, labelled frames and the record of each of its frames, in the source's order (VSPW's
list file, as the files backend and the releases read it: DCFM's first keyframe and
`eval.max_videos` depend on a video's position). Readers need it to find a video's frames, and
epochs and evaluation ask for the rest of every video up front, so it saves reading the split
(VSPW's train records are tens of GB).
"""
from __future__ import annotations

import abc
import collections
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
from vssjax.files import write_text_whole
from vssjax.progress import Progress


def _encoded() -> tfds.features.Tensor:
  return tfds.features.Tensor(shape=(), dtype=np.object_)


def frame_features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "video": tfds.features.Text(),
      "video_position": tfds.features.Tensor(shape=(), dtype=np.int32),  # In the source's list.
      "num_frames": tfds.features.Tensor(shape=(), dtype=np.int32),  # The video's.
      "t": tfds.features.Tensor(shape=(), dtype=np.int32),  # The frame's position in its video.
      "frame_id": tfds.features.Text(),
      "image": _encoded(),
      "label": _encoded(),  # b"" where the frame has no annotation.
      "labeled": tfds.features.Tensor(shape=(), dtype=np.bool_),
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


def encode_frame(source: base.VideoSource, video: base.VideoRecord, position: int, t: int
                 ) -> dict:
  """The record of frame t of `video`, the `position`-th video of its split. Decodes the frame
  once, so bad data fails here, named."""
  frame = video.frames[t]
  image = source.decode_image(frame)
  label = b""
  if frame.label is not None:
    # uint8 holds every train id: ids are < 255 because 255 is the ignore label.
    label = encode_png(source.decode_label(frame, image.shape[:2]).astype(np.uint8))
  return dict(video=video.name, video_position=position, num_frames=len(video.frames), t=t,
              frame_id=frame.frame_id,
              image=_image_bytes(frame), label=label, labeled=frame.label is not None)


class VideoSummary(NamedTuple):
  """A video's entry in the index: what epochs and evaluation ask of it before loading any of its
  frames, and where its frames are."""
  name: str
  num_frames: int
  labeled: tuple[int, ...]  # Indices of the frames that carry a label.
  records: tuple[int, ...]  # Each frame's record (its position), in frame order.


class StaleIndexError(ValueError):
  """The video index disagrees with the records. Not a `base.DataError`, which loaders may skip
  as one bad sample: a stale index misplaces every video, so it stops the run."""

  def __init__(self, path: str, problem: str):
    super().__init__(f"video index {path}: {problem}; the index is stale or from another build: "
                     f"delete it to have it rescanned from the records")


def decode_frame(record: dict, summary: VideoSummary, t: int, index_path: str) -> base.FrameRef:
  """Frame t of the video `summary` from its record: encoded payloads, label None where it has
  none. Checked against the index (read from `index_path`), since a stale one would silently
  train on wrong frames."""
  found = (record["video"].decode(), int(record["t"]), int(record["num_frames"]),
           bool(record["labeled"]))
  expected = (summary.name, t, summary.num_frames, t in summary.labeled)
  if found != expected:
    raise StaleIndexError(index_path, f"record {summary.records[t]} holds (video, t, num_frames, "
                          f"labeled) {found}, the index says {expected}")
  return base.FrameRef(record["frame_id"].decode(), record["image"],
                       record["label"] if record["labeled"] else None)


class _FrameEntry(NamedTuple):
  record: int
  video_position: int
  num_frames: int
  labeled: bool


def _summary_of(name: str, frames: dict[int, _FrameEntry]) -> VideoSummary:
  """Video `name`'s summary from its frames' entries by position; raises where some are missing."""
  lengths = sorted({entry.num_frames for entry in frames.values()})
  if lengths != [len(frames)] or sorted(frames) != list(range(len(frames))):
    raise base.DataError(f"video {name}", f"its records hold frames {sorted(frames)} of a video "
                         f"of {lengths} frames; rebuild them")
  entries = [frames[t] for t in range(len(frames))]
  return VideoSummary(name, len(entries), tuple(t for t, e in enumerate(entries) if e.labeled),
                      tuple(entry.record for entry in entries))


def scan_index(records: Sequence[dict], label: str) -> list[VideoSummary]:
  """Every video's summary, by reading every record once, in the source's order of the videos
  (the records' key-hash order means nothing)."""
  progress = Progress(f"index {label}", len(records), "frames")
  videos = collections.defaultdict(dict)
  for position in range(len(records)):
    record = records[position]
    videos[record["video"].decode()][int(record["t"])] = _FrameEntry(
        position, int(record["video_position"]), int(record["num_frames"]),
        bool(record["labeled"]))
    progress.update(position + 1, force=position + 1 == len(records))
  order = {name: min(entry.video_position for entry in frames.values())
           for name, frames in videos.items()}
  return [_summary_of(name, videos[name]) for name in sorted(videos, key=order.__getitem__)]


def index_path(builder: tfds.core.DatasetBuilder, split: str) -> epath.Path:
  return epath.Path(builder.data_path) / f"video_index-{split}.json"


def write_index(path: epath.Path, index: Sequence[VideoSummary]) -> None:
  """Writes it whole (`files.write_text_whole`): a reader never sees half an index, and writers
  that race (hosts of a multi-host run) each replace it whole."""
  write_text_whole(path, json.dumps([summary._asdict() for summary in index]))


def read_index(path: epath.Path) -> list[VideoSummary] | None:
  """The index written by `write_index`; None where there is none."""
  if not path.exists():
    return None
  try:
    return [VideoSummary(entry["name"], entry["num_frames"], tuple(entry["labeled"]),
                         tuple(entry["records"])) for entry in json.loads(path.read_text())]
  except (ValueError, KeyError, TypeError) as e:  # json's errors are ValueErrors
    raise StaleIndexError(os.fspath(path), f"unreadable ({type(e).__name__}: {e})") from e


def scan_and_write_index(builder: tfds.core.DatasetBuilder, split: str) -> list[VideoSummary]:
  """The split's index scanned from its records, written where the data dir is writable."""
  index = scan_index(builder.as_data_source(split), f"{builder.name} {split}")
  if os.access(builder.data_path, os.W_OK):
    write_index(index_path(builder, split), index)
  return index


class _LocalDatasetInfo(tfds.core.DatasetInfo):
  """TFDS's DatasetInfo without the look for precomputed metadata in TFDS's GCS bucket.

  TFDS looks there whenever an unbuilt builder is made (the first build, the check before it), and
  leaves an empty temporary directory in /tmp each time, even though its GCS access is disabled.
  These datasets are never on the bucket.
  """

  def initialize_from_bucket(self) -> None:
    return


class VideoSegBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes every split of the source returned by `make_source` (subclasses implement it)."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default lookup needs `importlib_resources`, which TFDS does not declare as a
    # dependency; the module file is all it needs (to look for a checksums file beside it).
    return epath.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    return _LocalDatasetInfo(
        builder=self, features=frame_features(),
        description="Videos with per-frame semantic labels; one record per frame.")

  @abc.abstractmethod
  def make_source(self, dl_manager: tfds.download.DownloadManager) -> base.VideoSource:
    """The source whose videos are written (real datasets read `dl_manager.manual_dir`)."""

  # TFDS's own lines around a build say "Downloading and preparing dataset Unknown size
  # (download: Unknown size, ...)" and "downloaded": these builders read local files only.
  def _log_download_bytes(self) -> None:
    print(f"writing the {self.name} records to {self.data_dir} (from local files, nothing is "
          "downloaded)", flush=True)

  def _log_download_done(self) -> None:
    print(f"wrote the {self.name} records to {self.data_dir}; later runs reuse them", flush=True)

  def download_and_prepare(self, *args, **kwargs) -> None:
    """TFDS's, then the index of every split that lacks one, records already there included.

    The index is read back from the written records, so it follows their positions, whatever
    TFDS's shuffling does, at the cost of one more read of the records. A read-only data dir gets
    none; readers then scan the records for it (`dataset.make_dataset`).
    TFDS's own progress bars are turned off: the sources print progress lines of their own, which
    tqdm's redrawn bars garbled.
    """
    tfds.disable_progress_bar()
    with tf_free_shuffle.shuffler_without_tensorflow():  # splits over 1 GB spill to disk
      super().download_and_prepare(*args, **kwargs)
    if not os.access(self.data_path, os.W_OK):
      return
    for split in self.info.splits:
      if not index_path(self, split).exists():
        scan_and_write_index(self, split)

  def _split_generators(self, dl_manager):
    source = self.make_source(dl_manager)
    splits = source.available_splits()
    if not splits:  # else TFDS records a finished build of no split, and reuses it from then on
      expected = ([source.split_path(split) for split in source.splits]
                  if hasattr(source, "split_path") else list(source.splits))
      raise base.DataError(os.fspath(dl_manager.manual_dir or ""), f"holds none of the "
                           f"{source.name} splits (looked for {', '.join(map(str, expected))}): "
                           f"is it the dataset's extracted folder?")
    return {split: self._generate_examples(source, split) for split in splits}

  def _generate_examples(self, source: base.VideoSource, split: str):
    videos = source.videos(split)
    try:  # TFDS would stop with "No examples were yielded", naming no file
      base.check_videos_have_frames(source, split, videos)
    except base.DataError as error:
      error.add_note("Fix it, or move it away: a split that is missing is not built.")
      raise
    progress = Progress(f"{source.name} {split}", len(videos), "videos")
    for done, video in enumerate(videos, 1):
      for t in range(len(video.frames)):
        # Unique per (video, frame): names are unique within a split. Shuffled by the key's hash,
        # which spreads records over TFDS's spill buckets; unshuffled (small integer) keys would
        # all land in one bucket, which TFDS then sorts in memory (tens of GB for VSPW).
        yield f"{video.name}/{t}", encode_frame(source, video, done - 1, t)
      progress.update(done, force=done == len(videos))
