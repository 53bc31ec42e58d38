"""Unlabelled real footage: video files (anything OpenCV decodes: mp4, avi, ...) or frame folders.

For label-free temporal consistency and for running a trained model on real video. Every path in
`paths` is one video of the single split 'test'; a directory stands for its frames, all of its
image files in name order (numbers as numbers, `frame_order`) but the label maps named as the
project writes them beside their frames (`<frame>_label.png`, see `frame_files`), anything else
for a video file. Video files are decoded once, sequentially (seeking is unreliable in many
codecs), into lossless PNG bytes kept in memory, so keep `max_frames` and `stride` in proportion
to the memory at hand; frame folders stay on disk and are read on demand.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
from absl import logging

from data_pipelines.sources import base

# In any case (FRAME.JPG); formats OpenCV decodes (`base.read_image`), 16-bit TIFFs as 8-bit.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# A frame's label map beside it, as the project's datasets store them (vtest_pseudo).
LABEL_MAP_SUFFIX = "_label.png"


def image_names(folder: str) -> list[str]:
  """The names of a folder's images: an image suffix, hidden files left out
  (`base.visible_entries`: macOS's `._<name>` beside each copied file is no image)."""
  return [name for name in base.visible_entries(folder)
          if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES]


def image_files(folder: str) -> list[str]:
  """The image files of a folder, in name order (`frame_order`); raises if there are none."""
  files = [os.path.join(folder, f) for f in sorted(image_names(folder), key=frame_order)]
  if not files:
    raise base.DataError(folder, f"holds no {'/'.join(IMAGE_SUFFIXES)} frames")
  return files


def frame_order(name: str) -> tuple[list[int | str], str]:
  """The sort key of a frame's file name: its runs of digits compared as numbers, so unpadded
  numbering (frame_2.png, frame_10.png, as ffmpeg's `%d` and many tools write) plays in order,
  where a plain string sort would put frame_10 before frame_2; letters in either case as one
  (Frame_2.PNG before frame_10.png: cameras and tools differ in case, a sort by code point puts
  every capital first). Zero-padded names of one pattern (frame_0001.png, ...) sort as strings
  do."""
  parts = re.split(r"(\d+)", name)  # text, number, text, ...: the types line up between names
  return [int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)], name


def frame_files(folder: str) -> list[str]:
  """The frames of a frame folder: its image files in name order, less the label maps beside them
  (`*_label.png`, the layout `python -m data_pipelines.make_vtest_pseudo` writes), skipped with a
  logged note; each would otherwise be predicted as one more frame. Raises if no frame is left."""
  files = image_files(folder)
  frames = [f for f in files if not f.lower().endswith(LABEL_MAP_SUFFIX)]
  if not frames:
    raise base.DataError(folder, f"holds only label maps (*{LABEL_MAP_SUFFIX}), no frames")
  if len(frames) < len(files):
    logging.warning("%s: skipped its %d label maps (*%s) beside the %d frames", folder,
                    len(files) - len(frames), LABEL_MAP_SUFFIX, len(frames))
  return frames


def declared_frames_and_rate(path: str) -> tuple[int, float]:
  """(frame count, frames per second) as the container declares them (the count may be
  approximate for some codecs, and wrong for a truncated file); 0 for what it does not declare
  (OpenCV answers -1 or less for an unknown count)."""
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      return 0, 0.0
    count, rate = (float(capture.get(prop)) for prop in (cv2.CAP_PROP_FRAME_COUNT,
                                                          cv2.CAP_PROP_FPS))
    return int(_declared(count)), _declared(rate)
  finally:
    capture.release()


def _declared(value: float) -> float:
  return value if math.isfinite(value) and value > 0 else 0.0


def read_video_frames(path: str) -> Iterator[np.ndarray]:
  """Decodes a video file frame by frame as uint8 [H, W, 3] RGB, without holding it in memory."""
  if not os.path.isfile(path):
    raise base.DataError(path, "cannot read file (no such file)")
  if not os.access(path, os.R_OK):  # else OpenCV's refusal below blames the file
    raise base.DataError(path, "cannot read file (permission denied)")
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    raise base.DataError(path, "OpenCV cannot open this video (corrupt or unsupported codec)")
  try:
    while True:
      ok, bgr = capture.read()
      if not ok:
        return
      yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
  finally:
    capture.release()


def _png(rgb: np.ndarray) -> bytes:
  return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def video_name(path: str) -> str:
  """The name of the video at `path`: a file's stem, a folder's whole name (`clip.v1/` and
  `clip.v2/` are two videos; `.` is the current folder's name), but a VSPW video's `origin/`
  frames folder is named after its video (`data/2001_c/origin` is 2001_c: every VSPW video
  given so wrote infer/origin/, over the one before)."""
  if os.path.isdir(path):
    folder = os.path.abspath(path)
    video = os.path.basename(os.path.dirname(folder))
    return video if os.path.basename(folder) == "origin" and video else os.path.basename(folder)
  return os.path.splitext(os.path.basename(path))[0]


@base.register_source
class FootageSource(base.VideoSource):
  """Real footage without labels; classes come from the model's dataset, not from here."""
  name = "footage"
  splits = ("test",)

  def __init__(self, paths: Sequence[str] = (), stride: int = 1, max_frames: int = 0,
               class_names: Sequence[str] = ()):
    if stride < 1:
      raise ValueError(f"stride must be >= 1, got {stride}")
    self._paths = tuple(os.path.expanduser(p) for p in paths)
    self._stride, self._max_frames = stride, max_frames
    self.class_names = tuple(class_names)
    self._decoded: dict[str, base.VideoRecord] = {}

  def videos(self, split: str) -> list[base.VideoRecord]:
    self.check_split(split)
    names = [video_name(path) for path in self._paths]
    for i, name in enumerate(names):
      if name in names[:i]:  # frame ids and flow keys are per name: one would score as the other
        raise base.DataError(self._paths[i], f"its video name {name!r} is also that of "
                             f"{self._paths[names.index(name)]}; a split's videos need names of "
                             "their own: rename one, or evaluate them one at a time")
    return [self._video(path) for path in self._paths]

  def _keep(self, items: list) -> list:
    items = items[::self._stride]
    return items[:self._max_frames] if self._max_frames else items

  def _video(self, path: str) -> base.VideoRecord:
    name = video_name(path)
    if os.path.isdir(path):
      files = self._keep(frame_files(path))
      return base.VideoRecord(name, tuple(
          base.FrameRef(f"{name}/{os.path.splitext(os.path.basename(f))[0]}", f) for f in files))
    if path not in self._decoded:
      frames = []
      for index, rgb in enumerate(read_video_frames(path)):
        if index % self._stride == 0:
          frames.append(base.FrameRef(f"{name}/{index:06d}", _png(rgb)))
          if self._max_frames and len(frames) == self._max_frames:
            break
      if not frames:
        raise base.DataError(path, "no frame could be decoded")
      self._decoded[path] = base.VideoRecord(name, tuple(frames))
    return self._decoded[path]
