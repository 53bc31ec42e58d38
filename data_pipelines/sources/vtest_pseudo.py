r"""vtest-pseudo: OpenCV's `vtest.avi` campus footage with the project's own dense labels.

There is no real labelled video on these machines (notes/data_sources.md), so this is a small
real-footage set labelled by construction: the camera never moves, so the static scene is labelled
once by the polygons below (drawn by hand on the 768x576 frame for this project), and people are
found in every frame by a temporal-median background subtraction. Frames are split in time: the
first 70 % train, the last 30 % val, each cut into videos of `chunk` frames.

Build it (about 95 MB download, then a few seconds):

  apt-get download opencv-doc
  dpkg-deb --fsys-tarfile opencv-doc_*.deb | tar x --wildcards '*vtest.avi'
  python -m data_pipelines.make_vtest_pseudo \
      --video=usr/share/doc/opencv-doc/examples/data/vtest.avi --out_dir=~/vssjax_data/vtest_pseudo

Layout written (and read by the 'vtest_pseudo' source, `root` = out_dir):
`<split>/<video>/<frame>.jpg` and `<split>/<video>/<frame>_label.png` (train ids, 255 = ignore).
Known limits: someone standing still for long fades into the background; shadows and
look-alike background change are labelled 'person'; polygon borders are a few pixels off.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence

import cv2
import numpy as np

from data_pipelines.sources import base, footage
from vssjax.errors import SetupError

CLASS_NAMES = ("other", "grass", "path_road", "building", "parked_vehicle", "pole_sign", "person")
OTHER, GRASS, ROAD, BUILDING, VEHICLE, POLE_SIGN, PERSON = range(len(CLASS_NAMES))
PALETTE = np.array([[0, 0, 0], [107, 142, 35], [128, 64, 128], [70, 70, 70], [0, 0, 142],
                    [220, 220, 0], [220, 20, 60]], np.uint8)
SOURCE_HW = (576, 768)
# (class, polygon in 768x576 pixels), painted in order over 'other'; later ones win.
SCENE_POLYGONS = (
    (GRASS, ((0, 50), (300, 42), (305, 112), (600, 112), (610, 128), (330, 145), (0, 145))),
    (GRASS, ((0, 235), (150, 240), (280, 245), (400, 300), (500, 340), (600, 385), (700, 430),
             (768, 470), (768, 576), (0, 576))),
    (GRASS, ((705, 140), (768, 130), (768, 260), (740, 270))),
    (ROAD, ((0, 75), (110, 68), (300, 60), (300, 70), (110, 80), (0, 88))),
    (ROAD, ((0, 145), (330, 145), (420, 135), (600, 118), (690, 100), (768, 95), (768, 130),
            (705, 140), (740, 270), (768, 265), (768, 470), (700, 430), (600, 385), (500, 340),
            (400, 300), (280, 245), (150, 240), (0, 235))),
    (BUILDING, ((0, 0), (200, 0), (205, 40), (110, 45), (0, 50))),
    (BUILDING, ((300, 0), (768, 0), (768, 55), (730, 55), (650, 45), (640, 95), (600, 100),
                (600, 112), (305, 112))),
    (VEHICLE, ((652, 48), (718, 45), (722, 95), (655, 98))),
    (VEHICLE, ((735, 55), (768, 50), (768, 92), (737, 92))),
    (POLE_SIGN, ((424, 40), (432, 40), (438, 392), (428, 392))),
    (POLE_SIGN, ((398, 22), (438, 22), (438, 38), (398, 38))),
    (POLE_SIGN, ((413, 203), (445, 203), (445, 243), (413, 243))),
    (POLE_SIGN, ((740, 155), (762, 155), (762, 220), (740, 220))),
    (POLE_SIGN, ((30, 112), (48, 112), (48, 140), (30, 140))),
)
DIFF_THRESHOLD = 40  # max over channels of |frame - background| (uint8) that counts as moving.
MIN_PERSON_AREA = 150  # Pixels at 768x576; smaller blobs are noise.
TRAIN_SHARE = 0.7


def scene_labels(hw: tuple[int, int]) -> np.ndarray:
  """uint8 [H, W] static-scene labels at size hw (polygons scaled from 768x576)."""
  labels = np.full(hw, OTHER, np.uint8)
  scale = np.array([hw[1] / SOURCE_HW[1], hw[0] / SOURCE_HW[0]])
  for cls, polygon in SCENE_POLYGONS:
    points = np.round(np.array(polygon) * scale).astype(np.int32)
    cv2.fillPoly(labels, [points], int(cls))
  return labels


def moving_mask(frame: np.ndarray, background: np.ndarray, min_area: int) -> np.ndarray:
  """bool [H, W]: pixels that differ from the background, cleaned of specks and small blobs."""
  diff = np.abs(frame.astype(np.int16) - background.astype(np.int16)).max(axis=-1)
  mask = (diff > DIFF_THRESHOLD).astype(np.uint8)
  mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
  mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
  count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
  keep = np.zeros(count, bool)
  keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
  return keep[components]


def pseudo_labels(frames: np.ndarray) -> np.ndarray:
  """uint8 [T, H, W] labels of frames uint8 [T, H, W, 3]: scene polygons, then moving people."""
  hw = frames.shape[1:3]
  background = np.median(frames[::3], axis=0).astype(np.uint8)
  scene = scene_labels(hw)
  min_area = max(1, round(MIN_PERSON_AREA * hw[0] * hw[1] / (SOURCE_HW[0] * SOURCE_HW[1])))
  return np.stack([np.where(moving_mask(f, background, min_area), np.uint8(PERSON), scene)
                   for f in frames])


def split_videos(num_frames: int, chunk: int) -> dict[str, list[range]]:
  """Frame ranges per split: first TRAIN_SHARE of the frames train, the rest val, in chunks."""
  cut = int(round(num_frames * TRAIN_SHARE))
  return {split: [range(s, min(s + chunk, stop)) for s in range(start, stop, chunk)]
          for split, (start, stop) in (("train", (0, cut)), ("val", (cut, num_frames)))}


def _write_image(path: str, image: np.ndarray, params: Sequence[int] = ()) -> None:
  if not cv2.imwrite(path, image, list(params)):  # a full disk or no permission: not silent
    raise OSError(f"{path}: OpenCV could not write the image")


def build(video: str, out_dir: str, scale: float = 0.5, chunk: int = 60) -> dict[str, int]:
  """Writes the dataset under out_dir; returns frames per split.

  `out_dir` must be new or empty: written over an earlier build with other settings, the old
  videos and frames would stay mixed in with the new ones.
  """
  out_dir = os.path.expanduser(out_dir)
  if scale <= 0 or chunk < 1:
    raise SetupError(f"--scale must be > 0 and --chunk >= 1, got {scale} and {chunk}")
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    raise SetupError(f"--out_dir {out_dir} is not empty (an earlier build?); give a new folder "
                     f"or delete it first")
  started = time.perf_counter()
  frames = []
  for rgb in footage.read_video_frames(video):
    if rgb.shape[:2] != SOURCE_HW:  # the scene's polygons are drawn on vtest.avi's own frames
      raise base.DataError(video, f"is {rgb.shape[1]}x{rgb.shape[0]}, not vtest.avi's "
                           f"{SOURCE_HW[1]}x{SOURCE_HW[0]}: the pseudo-labels' scene is drawn "
                           "for that video alone (docs/data.md)")
    hw = (round(rgb.shape[0] * scale), round(rgb.shape[1] * scale))
    frames.append(cv2.resize(rgb, (hw[1], hw[0]), interpolation=cv2.INTER_AREA))
    if len(frames) % 100 == 0:
      print(f"vtest_pseudo: decoded {len(frames)} frames", flush=True)
  if not frames:
    raise base.DataError(video, "no frame could be decoded")
  frames = np.stack(frames)
  print(f"vtest_pseudo: {len(frames)} frames of {frames.shape[1:3]}, labelling", flush=True)
  labels = pseudo_labels(frames)
  counts = {}
  for split, chunks in split_videos(len(frames), chunk).items():
    for index, frame_range in enumerate(chunks):
      folder = os.path.join(out_dir, split, f"vtest_{split}_{index:02d}")
      os.makedirs(folder, exist_ok=True)
      for t in frame_range:
        stem = os.path.join(folder, f"{t:06d}")
        _write_image(stem + ".jpg", cv2.cvtColor(frames[t], cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, 95])
        _write_image(stem + footage.LABEL_MAP_SUFFIX, labels[t])
    counts[split] = sum(len(r) for r in chunks)
    print(f"vtest_pseudo: wrote {split}: {len(chunks)} videos, {counts[split]} frames", flush=True)
  shares = np.bincount(labels.ravel(), minlength=len(CLASS_NAMES)) / labels.size
  print("vtest_pseudo: class shares " + ", ".join(
      f"{name} {share:.1%}" for name, share in zip(CLASS_NAMES, shares)), flush=True)
  print(f"vtest_pseudo: done in {time.perf_counter() - started:.1f} s -> {out_dir}", flush=True)
  return counts


@base.register_source
class VtestPseudoSource(base.FolderSource):
  """Reads what `build` wrote."""
  name = "vtest_pseudo"
  class_names = CLASS_NAMES
  splits = ("train", "val")
  official_palette = PALETTE

  def videos(self, split: str) -> list[base.VideoRecord]:
    self.check_split(split)
    split_dir = self.split_path(split)
    if not os.path.isdir(split_dir):
      raise base.DataError(split_dir, "missing; build vtest-pseudo first (python -m "
                           "data_pipelines.make_vtest_pseudo --help)")
    videos = []
    for name in base.visible_entries(split_dir):  # no `.DS_Store` of a copy made on macOS
      if not os.path.isdir(os.path.join(split_dir, name)):
        continue
      files = [f for f in footage.image_files(os.path.join(split_dir, name))
               if f.endswith(".jpg")]
      videos.append(base.VideoRecord(name, tuple(
          base.FrameRef(f"{name}/{os.path.basename(f)[:-4]}", f,
                        f[:-4] + footage.LABEL_MAP_SUFFIX)
          for f in files)))
    return videos

