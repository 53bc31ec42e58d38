"""What a video dataset is: ordered frames per video, their labels, and the label mapping.

Sources know dataset layouts and label conventions and nothing about training. Every later stage
(TFDS records, random-access datasets, Grain loaders, the evaluator) consumes this one interface, so
a new dataset is one new `VideoSource` subclass.

Frames and labels may be file paths, encoded bytes or in-memory arrays; the module-level readers
turn any of them into arrays and raise `DataError` naming the file (or frame id) on bad input, so a
corrupt file can never silently corrupt a metric.
"""
from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from vssjax import plugins
from vssjax.errors import DataError, SetupError

IGNORE_LABEL = 255
Payload = str | bytes | np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class FrameRef:
  """One frame: its id, its image and, where annotated, its raw (unmapped) label."""
  frame_id: str
  image: Payload
  label: Payload | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class VideoRecord:
  """One video: a name unique within its split and its frames in temporal order."""
  name: str
  frames: tuple[FrameRef, ...]


def frames_around(annotated: int, window: tuple[int, int], labelled: FrameRef,
                  frame_at: Callable[[int], FrameRef]) -> tuple[FrameRef, ...]:
  """The frames [a - before, a + after] (`window` = (before, after)) around the labelled frame
  a = `annotated` that exist on disk without a gap, in order.

  Datasets that label one frame per stretch of video (Cityscapes snippets, CamVid with its video
  frames) become one video per labelled frame with only that frame labelled, so a clip sampler told
  which frames are labelled makes it the target. `labelled` (frame a) is always kept, so a missing
  file fails when read, named; `frame_at(n)` is unlabelled frame n, kept when n >= 0 and its image
  path exists. Each side stops at its first missing frame (a partly extracted copy): the frames
  beyond it would sit next to the ones before it, as if consecutive, and DCFM's [a-1, a, a+1]
  or a clip's t-3 would silently take a frame from further away in time.
  """
  before, after = window

  def run(numbers: range) -> list[FrameRef]:
    frames = []
    for number in numbers:
      frame = frame_at(number) if number >= 0 else None
      if frame is None or not os.path.exists(frame.image):
        break
      frames.append(frame)
    return frames

  earlier = run(range(annotated - 1, annotated - before - 1, -1))
  later = run(range(annotated + 1, annotated + after + 1))
  return (*reversed(earlier), labelled, *later)


def visible_entries(folder: str) -> list[str]:
  """The names in `folder`, sorted, without hidden ones: copies made on macOS carry `.DS_Store`
  and an AppleDouble `._<name>` beside every file, which matches a dataset's file pattern but is
  no image (nor a city or video folder). A folder that cannot be listed (its permissions) is a
  `DataError` naming it."""
  try:
    names = os.listdir(folder)
  except OSError as error:
    raise DataError(folder, f"cannot read folder ({error.strerror or error})") from error
  return sorted(name for name in names if not name.startswith("."))


def describe(frame: FrameRef, field: str) -> str:
  """Where a payload comes from, for error messages: the file path, else the frame id."""
  payload = getattr(frame, field)
  return payload if isinstance(payload, str) else f"{frame.frame_id} ({field})"


def read_bytes(payload: str | bytes, where: str) -> np.ndarray:
  """The bytes of a file path or of encoded bytes, as uint8; missing or empty files raise."""
  if isinstance(payload, str):
    try:
      with open(payload, "rb") as f:
        payload = f.read()
    except OSError as e:
      raise DataError(where, f"cannot read file ({e.strerror or e})") from e
  if not payload:
    raise DataError(where, "empty file")
  return np.frombuffer(payload, np.uint8)


def read_image(payload: Payload, where: str) -> np.ndarray:
  """Decodes an image path, encoded bytes or array into uint8 [H, W, 3] RGB."""
  if isinstance(payload, np.ndarray):
    image = payload
  else:
    bgr = cv2.imdecode(read_bytes(payload, where), cv2.IMREAD_COLOR)
    if bgr is None:
      raise DataError(where, "cannot decode image (corrupt or unsupported format)")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise DataError(where, f"expected a uint8 [H,W,3] image, got {image.dtype} {image.shape}")
  return image


def read_label(payload: Payload, where: str) -> np.ndarray:
  """Decodes a label path, encoded bytes or array into a 2-D integer array of raw ids."""
  if isinstance(payload, np.ndarray):
    label = payload
  else:
    label = cv2.imdecode(read_bytes(payload, where), cv2.IMREAD_UNCHANGED)
    if label is None:
      raise DataError(where, "cannot decode label image (corrupt or unsupported format)")
  if label.ndim == 3 and np.issubdtype(label.dtype, np.integer):
    # OpenCV expands palette PNGs to colour; sources with palette labels override
    # `VideoSource.read_raw_label` (VSPW's).
    raise DataError(where, f"a colour label image ({label.shape[2]} channels: colour-coded "
                    "classes, or a palette PNG, which reads as colour); this dataset's labels are "
                    "single-channel class ids (e.g. CamVid's *annot/ PNGs, Cityscapes' "
                    "*_labelIds.png, not *_color.png)")
  if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
    raise DataError(where, f"expected a single-channel integer label, got {label.dtype} "
                    f"{label.shape}")
  return label


def check_label(label: np.ndarray, image_hw: tuple[int, int], num_classes: int,
                where: str) -> np.ndarray:
  """Returns `label` as int32 after checking its size and that ids are in [0, NC) or 255."""
  if tuple(label.shape) != tuple(image_hw):
    raise DataError(where, f"label size {label.shape[0]}x{label.shape[1]} differs from image size "
                    f"{image_hw[0]}x{image_hw[1]}")
  label = label.astype(np.int32)
  valid = ((label >= 0) & (label < num_classes)) | (label == IGNORE_LABEL)
  if not valid.all():
    bad = np.unique(label[~valid])[:8].tolist()
    raise DataError(where, f"class ids {bad} out of range [0, {num_classes}) and not the ignore "
                    f"label {IGNORE_LABEL}")
  return label


def default_palette(num_classes: int) -> np.ndarray:
  """A fixed, well-spread uint8 [NC, 3] palette for sources without an official one."""
  ids = np.arange(num_classes)
  palette = np.zeros((num_classes, 3), np.int64)
  for bit in range(8):  # The PASCAL VOC bit-interleaving scheme.
    for channel in range(3):
      palette[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
  return palette.astype(np.uint8)


class VideoSource(abc.ABC):
  """A video segmentation dataset: splits of videos plus class metadata and label mapping.

  Subclasses set `name`, `class_names`, `splits` and, where the dataset has its own colours,
  `official_palette`; implement `videos`, and override `map_label` (raw file ids -> train ids) or
  `read_raw_label` (unusual label encodings) where needed.
  """
  name: str = ""
  class_names: tuple[str, ...] = ()
  splits: tuple[str, ...] = ()
  ignore_label: int = IGNORE_LABEL
  official_palette: np.ndarray | None = None  # uint8 [NC, 3]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def palette(self) -> np.ndarray:
    if self.official_palette is not None:
      return self.official_palette
    return default_palette(self.num_classes)

  @abc.abstractmethod
  def videos(self, split: str) -> Sequence[VideoRecord]:
    """The videos of `split`, in a fixed order."""

  def available_splits(self) -> tuple[str, ...]:
    """The splits present in this copy of the dataset (users often lack the test split)."""
    return self.splits

  def map_label(self, raw: np.ndarray) -> np.ndarray:
    """The dataset's label mapping from raw file ids to train ids (identity by default)."""
    return raw

  def read_raw_label(self, frame: FrameRef) -> np.ndarray:
    return read_label(frame.label, describe(frame, "label"))

  def decode_image(self, frame: FrameRef) -> np.ndarray:
    """uint8 [H, W, 3] RGB."""
    return read_image(frame.image, describe(frame, "image"))

  def decode_label(self, frame: FrameRef, image_hw: tuple[int, int]) -> np.ndarray:
    """int32 [H, W] train ids (255 = ignore), checked against the image size and class range."""
    if frame.label is None:
      raise ValueError(f"{frame.frame_id} has no label; check `frame.label` first")
    where = describe(frame, "label")
    return check_label(self.map_label(self.read_raw_label(frame)), image_hw, self.num_classes,
                       where)

  def check_split(self, split: str) -> None:
    if split not in self.splits:
      raise SetupError(f"source {self.name!r} has splits {self.splits}, not {split!r}")

  def describe_split(self, split: str) -> str:
    """Where `split`'s videos are listed, for messages: the source's name and the split."""
    return f"{self.name} split {split!r}"

  def videos_looked_for(self, split: str) -> str:
    """What the files of `split`'s videos are named, for the message of a split that holds none
    (a source that finds its videos by name says how)."""
    return "are its files named as the source expects?"

  def check_listable(self) -> None:
    """Raises a `SetupError` when the source is not set up to list its videos itself, as
    `data.backend='files'` has it do (nothing to check by default)."""


class FolderSource(VideoSource):
  """A user's copy of a dataset under one root folder; a split is present when the file or
  folder `split_path(split)` exists."""

  def __init__(self, root: str):
    self._root = os.path.expanduser(root)

  def split_path(self, split: str) -> str:
    return os.path.join(self._root, split)

  def check_listable(self) -> None:
    """A root left unset (the configs' default ''; the records of `data.backend='arrayrecord'`
    need none) would read the split from the current folder and fail there naming a relative
    path and no setting."""
    if not self._root:
      raise SetupError(f"data.{self.name}.root is not set: pass --config.data.{self.name}.root="
                       "<the dataset's folder> (docs/data.md)")

  def describe_split(self, split: str) -> str:
    """The source's name and the split's folder (or list file): the place to fix."""
    return f"{self.name} {self.split_path(split)}"

  def available_splits(self) -> tuple[str, ...]:
    return tuple(split for split in self.splits if os.path.exists(self.split_path(split)))


def check_videos_have_frames(source: VideoSource, split: str,
                             videos: Sequence[VideoRecord]) -> None:
  """Raises a DataError naming the first of `videos` (`split` of `source`) without frames, an
  empty video folder of a source of one's own say (the built-in ones refuse those): sampling a
  clip of it would fail with numpy's bare 'high <= 0'. A split of no video at all (a CamVid
  folder of .jpg images, none named as the source expects) is refused too: training on it failed
  with a bare ZeroDivisionError, and evaluating it wrote results of nothing."""
  if not len(videos):
    raise DataError(source.describe_split(split),
                    f"holds no videos ({source.videos_looked_for(split)} docs/data.md)")
  for video in videos:
    if not len(video.frames):
      raise DataError(f"video {video.name} of {source.describe_split(split)}",
                      "has no frames (an empty video folder?): add its frames or remove it")


_SOURCES: dict[str, type[VideoSource]] = {}


def register_source(cls: type[VideoSource]) -> type[VideoSource]:
  """Class decorator: makes `cls` constructible by `get_source(cls.name, ...)`."""
  if cls.name in _SOURCES and _SOURCES[cls.name] is not cls:
    raise ValueError(f"source name {cls.name!r} is already registered")
  _SOURCES[cls.name] = cls
  return cls


def is_registered(source: VideoSource) -> bool:
  """Whether `source` is an instance of the class registered under its name itself (not of a
  subclass that keeps the name: its videos or labels may differ from the registered class's)."""
  return _SOURCES.get(source.name) is type(source)


def source_class(name: str) -> type[VideoSource]:
  """The class of a registered source `name`, or of the import path "package.module:ClassName"
  of a `VideoSource` subclass of one's own (docs/extending.md)."""
  return plugins.resolve_class(name, _SOURCES, VideoSource, "source")


def get_source(name: str, **kwargs) -> VideoSource:
  return source_class(name)(**kwargs)
