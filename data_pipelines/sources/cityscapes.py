"""Cityscapes video snippets (Cordts et al., CVPR 2016) with their one fine-labelled frame.

Layout (`root` = the user's copy): `leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_
leftImg8bit.png` (30-frame snippets) and `gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_
labelIds.png` (only frame 19 of each snippet, the 20th, is annotated). One video per annotated
frame: the snippet frames [a-19, a+10] that exist on disk, with only frame a labelled, so a clip
sampler told which frames are labelled makes frame a the target. labelIds map to the 19 train ids.

Without `leftImg8bit_sequence/<split>` (the 324 GB package), the annotated frames are read from
`leftImg8bit/<split>/<city>/` (the 11 GB one), each as a video of one frame: all that per-frame
methods (SegFormer, ETC without its temporal loss) need; a note says so, since a method that
needs the neighbouring frames should not run on it.
"""
from __future__ import annotations

import functools
import os
import re

import numpy as np
from absl import logging

from data_pipelines.sources import base
from vssjax.errors import SetupError

CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
               "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
               "bus", "train", "motorcycle", "bicycle")
# labelIds of the 19 evaluated classes, in train-id order; every other id is ignored.
_EVAL_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
_MAX_LABEL_ID = 33  # The official table's ids are 0..33 (and -1, never stored in a PNG).
LABEL_TO_TRAIN = np.full(_MAX_LABEL_ID + 1, base.IGNORE_LABEL, np.int32)
LABEL_TO_TRAIN[list(_EVAL_LABEL_IDS)] = np.arange(len(_EVAL_LABEL_IDS))
PALETTE = np.array([
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32]], np.uint8)
SNIPPET = (19, 10)  # Frames before and after the annotated one in a 30-frame snippet.
# Suffixes in any case (`_gtFine_labelIds.PNG`), as VSPW's and CamVid's sources read theirs: a
# copy that passed through a tool writing capitals lost a city's labels without a word.
_GT_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})(?i:_gtFine_labelIds\.png)$")
_IMAGE_SUFFIX = "_leftImg8bit.png"


@functools.cache
def _warn_no_sequences(sequences: str, split: str) -> None:
  """Once per folder and process: a run lists a split's videos several times."""
  logging.warning("cityscapes: no %s, so each annotated frame of %s is a one-frame video read "
                  "from leftImg8bit/%s (enough for per-frame methods only)", sequences, split,
                  split)


@base.register_source
class CityscapesSource(base.FolderSource):
  name = "cityscapes"
  class_names = CLASS_NAMES
  # Not "test": its annotations are withheld for the benchmark server (gtFine/test marks only the
  # ego vehicle and the image border, ids that all map to ignore), so nothing can train on or score
  # it, and building it would copy ~100 GB of leftImg8bit_sequence/test frames for nothing.
  splits = ("train", "val")
  official_palette = PALETTE

  def check_split(self, split: str) -> None:
    if split == "test":
      raise SetupError(
          "cityscapes has no test split here: its annotations are withheld for the Cityscapes "
          "benchmark server (gtFine/test holds no labels), so it can be neither trained on nor "
          "scored; use train or val")
    super().check_split(split)

  def split_path(self, split: str) -> str:
    return os.path.join(self._root, "gtFine", split)

  def videos_looked_for(self, split: str) -> str:
    return f"looked for gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png;"

  def videos(self, split: str) -> list[base.VideoRecord]:
    self.check_split(split)
    gt_root = self.split_path(split)
    if not os.path.isdir(gt_root):
      raise base.DataError(gt_root, "missing annotation folder")
    sequences = os.path.join(self._root, "leftImg8bit_sequence", split)
    has_sequences = os.path.isdir(sequences)
    if not has_sequences:
      _warn_no_sequences(sequences, split)
    images, snippet = (("leftImg8bit_sequence", SNIPPET) if has_sequences
                       else ("leftImg8bit", (0, 0)))
    videos = []
    for city in base.visible_entries(gt_root):
      city_dir = os.path.join(gt_root, city)
      if not os.path.isdir(city_dir):  # a README or licence file beside the cities
        continue
      folder = os.path.join(self._root, images, split, city)
      # Each frame's file by its name in lower case: a `.PNG` frame is found as a `.png` one.
      files = ({name.lower(): name for name in base.visible_entries(folder)}
               if os.path.isdir(folder) else {})
      for name in base.visible_entries(city_dir):
        match = _GT_NAME.match(name)
        if match:
          videos.append(self._snippet(match, os.path.join(city_dir, name), folder, files,
                                      snippet))
    return videos

  @staticmethod
  def _snippet(match: re.Match, label_path: str, folder: str, files: dict[str, str],
               snippet: tuple[int, int]) -> base.VideoRecord:
    city, seq, annotated = match["city"], match["seq"], int(match["frame"])

    def frame_at(number: int, label: str | None = None) -> base.FrameRef:
      stem = f"{city}_{seq}_{number:06d}"
      name = stem + _IMAGE_SUFFIX
      return base.FrameRef(stem, os.path.join(folder, files.get(name.lower(), name)), label)

    frames = base.frames_around(annotated, snippet, frame_at(annotated, label_path), frame_at)
    return base.VideoRecord(f"{city}_{seq}_{annotated:06d}", frames)

  def map_label(self, raw: np.ndarray) -> np.ndarray:
    """labelIds -> train ids. Ids outside the official table (other than 255) are kept as they
    are, so the range check reports them as bad data instead of hiding them as ignore."""
    raw = raw.astype(np.int32)
    known = (raw >= 0) & (raw <= _MAX_LABEL_ID)
    return np.where(known, LABEL_TO_TRAIN[np.where(known, raw, 0)], raw)
