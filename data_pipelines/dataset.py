"""Random-access view of one split's videos, over a VideoSource or its ArrayRecord records.

Loaders ask for a clip (a few frame indices of one video) and the evaluator walks whole videos in
order; both go through `VideoDataset`, which decodes only the frames asked for. The two backends
differ only in where a video's frames come from: the source itself ('files'), or the TFDS
ArrayRecord records written from it ('arrayrecord', one record per frame, found through the split's
video index), whose labels are already mapped.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np
from absl import logging
from etils import epath

from data_pipelines.sources import base, synthetic
from data_pipelines.tfds_builders import real_videos, synthetic_video, video_records
from vssjax.errors import SetupError
from vssjax.files import check_folder_path

_DEFAULT_DATA_DIR = "~/tensorflow_datasets"


class _RecordFrames(Sequence):
  """A video's frames as FrameRefs with encoded payloads, each read from its own record when
  asked for, so that a clip reads only its frames' records."""

  def __init__(self, records, summary: video_records.VideoSummary, index_path: str):
    self._records = records
    self._summary = summary
    self._index_path = index_path

  def __len__(self) -> int:
    return self._summary.num_frames

  def __getitem__(self, t: int) -> base.FrameRef:
    return video_records.decode_frame(self._records[self._summary.records[t]], self._summary, t,
                                      self._index_path)


class _RecordVideos(Sequence):
  """ArrayRecord frame records as VideoRecords, through the split's video index."""

  def __init__(self, records, index: Sequence[video_records.VideoSummary], index_path: str):
    listed = sum(summary.num_frames for summary in index)
    if listed != len(records):
      raise video_records.StaleIndexError(
          index_path, f"it lists {listed} frames but there are {len(records)} records")
    self._records = records
    self._index = index
    self._index_path = index_path

  def __len__(self) -> int:
    return len(self._index)

  def __getitem__(self, i: int) -> base.VideoRecord:
    return base.VideoRecord(self._index[i].name,
                            _RecordFrames(self._records, self._index[i], self._index_path))


class VideoDataset:
  """The videos of one split: lengths, names, clips and whole videos, decoded on demand.

  Names and lengths come from the video records, which ArrayRecord builds from the split's video
  index without reading a record; its labelled frames come from the index too (asking each frame
  would read its record). Only `load` and `iter_video` read frames, just those asked for.
  """

  def __init__(self, videos: Sequence[base.VideoRecord], source: base.VideoSource,
               labels_mapped: bool, labeled: Sequence[tuple[int, ...]] | None = None):
    self._videos = videos
    self.source = source  # Class names, palette, label mapping.
    self._labels_mapped = labels_mapped
    self._labeled = labeled  # Per video, its labelled frames, where known without reading them.

  @classmethod
  def from_source(cls, source: base.VideoSource, split: str) -> VideoDataset:
    """Over the source's own videos, checked to have frames (listed already: a cheap check).
    A file or folder missing as the source lists them (a source of one's own whose root is wrong)
    is a DataError naming it and the config section of the source's knobs; so is one it cannot
    read (a file where it expects a folder, such as the dataset's archive given as its root, or a
    folder without read permission)."""
    source.check_listable()
    try:
      videos = list(source.videos(split))  # a source of one's own may yield them
    except FileNotFoundError as e:
      raise base.DataError(e.filename or str(e), f"not found, listing split {split!r} of source "
                           f"{source.name!r} (is data.{source.name}.root right?)") from e
    except OSError as e:
      raise base.DataError(e.filename or str(e), f"cannot be read ({e.strerror or e}), listing "
                           f"split {split!r} of source {source.name!r} (is data.{source.name}.root "
                           f"right?)") from e
    base.check_videos_have_frames(source, split, videos)
    return cls(videos, source, labels_mapped=False)

  @classmethod
  def from_records(cls, records, source: base.VideoSource,
                   index: Sequence[video_records.VideoSummary], index_path: str) -> VideoDataset:
    """Over a TFDS ArrayRecord data source written by `tfds_builders.video_records`, and its
    video index (read from `index_path`), which says where each video's frames are."""
    return cls(_RecordVideos(records, index, index_path), source, labels_mapped=True,
               labeled=[summary.labeled for summary in index])

  def __len__(self) -> int:
    return len(self._videos)

  def name(self, i: int) -> str:
    return self._videos[i].name

  def num_frames(self, i: int) -> int:
    return len(self._videos[i].frames)

  def labeled_indices(self, i: int) -> list[int]:
    """Indices of the frames of video i that carry a label (no decoding)."""
    if self._labeled is not None:
      return list(self._labeled[i])
    return [t for t, frame in enumerate(self._videos[i].frames) if frame.label is not None]

  def _decode(self, frame: base.FrameRef) -> tuple[np.ndarray, np.ndarray | None]:
    image = self.source.decode_image(frame)
    if frame.label is None:
      return image, None
    if not self._labels_mapped:
      return image, self.source.decode_label(frame, image.shape[:2])
    where = base.describe(frame, "label")
    return image, base.check_label(base.read_label(frame.label, where), image.shape[:2],
                                   self.source.num_classes, where)

  def load(self, i: int, frame_indices: Sequence[int]) -> dict[str, np.ndarray]:
    """frames uint8 [T,H,W,3], labels int32 [T,H,W] (all 255 where unlabeled), labeled [T]."""
    video = self._videos[i]
    frames, labels, labeled = [], [], []
    for j in frame_indices:
      image, label = self._decode(video.frames[j])
      if frames and image.shape != frames[0].shape:
        raise base.DataError(base.describe(video.frames[j], "image"), f"size {image.shape[:2]} "
                             f"differs from the clip's first frame's {frames[0].shape[:2]}")
      frames.append(image)
      labeled.append(label is not None)
      labels.append(np.full(image.shape[:2], base.IGNORE_LABEL, np.int32) if label is None
                    else label)
    return dict(frames=np.stack(frames), labels=np.stack(labels),
                labeled=np.array(labeled, np.bool_))

  def iter_video(self, i: int, frame_indices: Sequence[int] | None = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(frame uint8 [H,W,3], label int32 [H,W] or None) for every frame (or those given), in
    order."""
    frames = self._videos[i].frames
    for t in range(len(frames)) if frame_indices is None else frame_indices:
      yield self._decode(frames[t])


def resolve_data_dir(data_cfg: ml_collections.ConfigDict) -> str:
  """`data.data_dir` (the default when empty), `~` expanded; a file there is refused."""
  data_dir = os.path.expanduser(data_cfg.data_dir or _DEFAULT_DATA_DIR)
  check_folder_path(data_dir, "data.data_dir")
  return data_dir


def make_source(data_cfg: ml_collections.ConfigDict) -> base.VideoSource:
  """The source `data.source` names (a registered name or "package.module:ClassName"), built with
  the knobs under `data.<its name>`: under the class's `name`, so that a source of one's own keeps
  its knobs under a plain field however long its import path.

  Raises if the config's `data.num_classes` disagrees with the source.
  """
  source_class = base.source_class(data_cfg.source)
  if not source_class.name:
    raise SetupError(f"data.source={data_cfg.source!r}: {source_class.__qualname__} sets no name, "
                     "the config section its settings go under (data.<name>): set the class "
                     "attribute name (docs/extending.md)")
  knobs = data_cfg.get(source_class.name, None)
  settings = knobs.to_dict() if knobs is not None else {}
  _check_source_settings(source_class, settings, data_cfg.source)
  source = source_class(**settings)
  expected = data_cfg.num_classes
  if expected and expected != source.num_classes:  # the model would predict phantom classes
    raise SetupError(f"data.num_classes={expected} but source {data_cfg.source!r} has "
                     f"{source.num_classes} classes")
  return source


def _check_source_settings(source_class: type[base.VideoSource], settings: dict,
                           source: str) -> None:
  """A missing or misspelt setting under `data.<name>` (a config switched to a dataset it has no
  settings for, a plug-in source's config without its section) is one line naming the section
  and what the source takes, not the constructor's TypeError traceback."""
  signature = inspect.signature(source_class)
  try:
    signature.bind(**settings)
  except TypeError as error:
    takes = ", ".join(signature.parameters) or "no settings"
    guide = "docs/extending.md" if ":" in source else "docs/data.md"  # an import path: one's own
    raise SetupError(
        f"data.{source_class.name}={settings}: source {source!r} takes {takes} there ({error}); "
        f"a config of that dataset sets them ({guide})") from None


def _arrayrecord_builder(source: base.VideoSource, root: str):
  """The builder of the records of a built-in source. A plug-in source, a subclass of a built-in
  one included, is refused: the built-in records would silently stand in for its own videos."""
  if not base.is_registered(source):
    kind = type(source)
    raise SetupError(
        f"no ArrayRecord records for source class {kind.__module__}:{kind.__qualname__} (name "
        f"{source.name!r}): records are built from the built-in sources only; read it with "
        f"data.backend='files'")
  if isinstance(source, synthetic.SyntheticVideoSource):
    return synthetic_video.prepare_synthetic(root, **source.knobs)  # Generated: safe to build.
  return real_videos.load(source.name, root)


# Indices scanned where the data dir is read-only, by index path: without them every evaluation of
# a training run (each makes its dataset anew) would read the whole split again and warn again.
_SCANNED_INDICES: dict[str, list[video_records.VideoSummary]] = {}


def _record_index(builder, split: str, path: str) -> list[video_records.VideoSummary]:
  """The split's video index, read from `path`; where there is none, scanned from the records
  with a warning, once per process."""
  index = video_records.read_index(epath.Path(path))
  if index is not None:
    return index
  if path not in _SCANNED_INDICES:
    logging.warning(
        "No video index %s (read-only data dir or interrupted build): reading every record of the "
        "split to find its videos' frames, once per process until it is written (by any run with "
        "write access to the data dir; for a real dataset, python -m data_pipelines.build also "
        "writes it).", path)
    _SCANNED_INDICES[path] = video_records.scan_and_write_index(builder, split)
  return _SCANNED_INDICES[path]


def _check_split_built(builder, source: base.VideoSource, split: str) -> None:
  """Raises, naming what the copy lacked, where the records hold no `split`: a build skips the
  splits missing from the copy (VSPW's test.txt, CamVid's test/), and TFDS's own answer
  is a bare ValueError from deep inside the reader."""
  built = sorted(builder.info.splits)
  if split not in built:
    raise SetupError(
        f"the {source.name} records in {builder.data_path} hold the splits {built}, not "
        f"{split!r}: {source.describe_split(split)} was not in the copy they were built from. Add "
        f"it and build again into a fresh data.data_dir, or read the copy with "
        f"data.backend='files'")


def make_dataset(data_cfg: ml_collections.ConfigDict, split: str) -> VideoDataset:
  """The dataset for `split` with data.source and data.backend ('arrayrecord'|'files')."""
  source = make_source(data_cfg)
  if data_cfg.backend == "files":
    return VideoDataset.from_source(source, split)
  if data_cfg.backend == "arrayrecord":
    source.check_split(split)
    builder = _arrayrecord_builder(source, resolve_data_dir(data_cfg))
    _check_split_built(builder, source, split)
    path = os.fspath(video_records.index_path(builder, split))
    return VideoDataset.from_records(builder.as_data_source(split=split), source,
                                     _record_index(builder, split, path), path)
  raise SetupError(f"unknown data.backend {data_cfg.backend!r}; expected 'arrayrecord' or "
                   "'files'")
