"""VSPW 480p (Miao et al., CVPR 2021): 124-class dense video labels on every frame.

Layout (`root` = the user's `VSPW_480p` copy; specs/dtern.md §8): `train.txt`, `val.txt`,
`test.txt` (one video name per line), `data/<video>/origin/<frame>.jpg` and
`data/<video>/mask/<frame>.png` (palette PNGs whose palette indices are the raw class ids).
Frames (`.jpg` in any case) are sorted by file name. Test videos have no masks, so their frames
carry no label; a train or val video without its mask folder, or a mask without its frame, is a
`DataError` naming what is missing.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image

from data_pipelines.lists import video_names
from data_pipelines.sources import base

NUM_CLASSES = 124
# VSPW ships its class list as `label_num_dic_final.json` ({name: raw id}, "others" = 0). The
# specs do not list the 124 names, so they are read from the user's copy when it has that file.
CLASS_FILE = "label_num_dic_final.json"


def _class_names(root: str) -> tuple[str, ...]:
  path = os.path.join(root, CLASS_FILE)
  if not os.path.exists(path):
    return tuple(f"class_{i:03d}" for i in range(1, NUM_CLASSES + 1))
  with open(path) as f:
    ids = {int(raw): name for name, raw in json.load(f).items()}
  missing = sorted(set(range(1, NUM_CLASSES + 1)) - set(ids))
  if missing:
    raise base.DataError(path, f"has no class for raw ids {missing[:8]}")
  return tuple(ids[i] for i in range(1, NUM_CLASSES + 1))


def read_palette_label(payload: base.Payload, where: str) -> np.ndarray:
  """Palette (or greyscale) PNG -> its indices, with Pillow: OpenCV would expand the palette."""
  if isinstance(payload, np.ndarray):
    return base.read_label(payload, where)
  data = base.read_bytes(payload, where)
  try:
    image = Image.open(io.BytesIO(data.tobytes()))
    image.load()
  except (OSError, ValueError) as e:
    # Not Pillow's own words: "cannot identify image file <_io.BytesIO object at 0x...>".
    raise base.DataError(where, "cannot decode label image (corrupt or unsupported format)") from e
  if image.mode not in ("P", "L"):
    raise base.DataError(where, f"expected a palette or greyscale label PNG, got mode {image.mode}")
  return np.asarray(image)


def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
  """Raw 1..124 -> train ids 0..123; 0 ("others") and every raw value > 124 -> 255 (ignore).

  DCFM's loader ignores all of 125..255 (specs/dcfm.md §6.2). mmseg's reduce_zero_label (DTERN,
  SegFormer) maps only 255 there, but VSPW's masks hold no 125..254, so both agree on the data.
  """
  raw = raw.astype(np.int32)
  return np.where((raw == 0) | (raw > NUM_CLASSES), base.IGNORE_LABEL, raw - 1)


def read_video_list(path: str) -> list[str]:
  """The video names of a list file (`lists.video_names`), read past a UTF-8 byte-order mark
  (which Windows editors add, and which would make the first name an invisible-prefixed folder
  that does not exist)."""
  try:
    with open(path, encoding="utf-8-sig") as f:
      text = f.read()
  except OSError as e:
    raise base.DataError(path, f"cannot read the video list ({e.strerror or e})") from e
  except UnicodeDecodeError as e:
    raise base.DataError(path, f"not a text file of video names ({e})") from e
  return list(video_names(text, path))


def frame_files(origin: str) -> dict[str, str]:
  """A video's frame files by stem, in name order: `.jpg` in any case (a copy that passed through
  a tool writing `.JPG` must not lose those frames from the middle of its videos)."""
  files = {}
  for file in base.visible_entries(origin):
    stem, extension = os.path.splitext(file)
    if extension.lower() != ".jpg":
      continue
    if stem in files:
      raise base.DataError(os.path.join(origin, file), f"a second frame {stem} (beside "
                           f"{files[stem]}): keep one")
    files[stem] = file
  if not files:
    raise base.DataError(origin, "holds no .jpg frames")
  return files


def mask_files(mask: str, files: dict[str, str], origin: str) -> dict[str, str]:
  """A video's mask files by frame stem: `.png` in any case, like the frames' `.jpg`. Raises where
  a mask has no frame: the frame is missing from the copy (VSPW ships a mask for every frame and
  no other), and without it its neighbours would look consecutive to a clip."""
  masks = {}
  for file in base.visible_entries(mask):
    stem, extension = os.path.splitext(file)
    if extension.lower() != ".png":
      continue
    if stem not in files:
      others = sorted(name for name in base.visible_entries(origin)
                      if os.path.splitext(name)[0] == stem)  # 00000004.jpeg, .png: not read
      raise base.DataError(os.path.join(origin, stem + ".jpg"), f"missing, though its mask "
                           f"{os.path.join(mask, file)} is there: restore the frame (or remove "
                           f"the mask if the frame was dropped on purpose)" + (
                               f"; {', '.join(others)} beside it is not read: VSPW's frames are "
                               f"read as .jpg (any case)" if others else ""))
    if stem in masks:
      raise base.DataError(os.path.join(mask, file), f"a second mask {stem} (beside "
                           f"{masks[stem]}): keep one")
    masks[stem] = file
  return masks


@base.register_source
class VspwSource(base.FolderSource):
  name = "vspw"
  splits = ("train", "val", "test")

  def __init__(self, root: str):
    super().__init__(root)
    self.class_names = _class_names(self._root)

  def split_path(self, split: str) -> str:
    return os.path.join(self._root, f"{split}.txt")

  def videos_looked_for(self, split: str) -> str:
    return f"{split}.txt names the folders of data/, one a line;"

  def videos(self, split: str) -> list[base.VideoRecord]:
    self.check_split(split)
    return [self._video(name, split) for name in read_video_list(self.split_path(split))]

  def _video(self, name: str, split: str) -> base.VideoRecord:
    folder = os.path.join(self._root, "data", name)
    origin, mask = os.path.join(folder, "origin"), os.path.join(folder, "mask")
    if not os.path.isdir(origin):
      raise base.DataError(origin, "missing frame folder of a listed video")
    files = frame_files(origin)
    has_masks = os.path.isdir(mask)
    if not has_masks and split != "test":
      # Its frames would be unlabelled: evaluation would score none of them, without a word.
      raise base.DataError(mask, f"missing mask folder of a {split} video (only test videos come "
                           f"without masks): restore it, or remove {name} from {split}.txt")
    masks = mask_files(mask, files, origin) if has_masks else {}
    frames = []
    for stem, file in files.items():
      label = os.path.join(mask, masks.get(stem, stem + ".png")) if has_masks else None
      # A listed-but-missing mask stays a path, so reading it fails naming the file.
      frames.append(base.FrameRef(f"{name}/{stem}", os.path.join(origin, file), label))
    return base.VideoRecord(name, tuple(frames))

  def map_label(self, raw: np.ndarray) -> np.ndarray:
    return reduce_zero_label(raw)

  def read_raw_label(self, frame: base.FrameRef) -> np.ndarray:
    return read_palette_label(frame.label, base.describe(frame, "label"))
