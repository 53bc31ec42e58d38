"""Colourised label maps and overlay videos, for humans looking at predictions."""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np
from etils import epath

from vssjax.errors import SetupError

IGNORE_COLOR = np.array([0, 0, 0], np.uint8)


def colorize(labels: np.ndarray, palette: np.ndarray, ignore_label: int = 255) -> np.ndarray:
  """int label map [H, W] -> uint8 RGB [H, W, 3]; ignored pixels black."""
  lut = np.zeros((256, 3), np.uint8)
  lut[: len(palette)] = palette
  lut[ignore_label] = IGNORE_COLOR
  return lut[np.clip(labels, 0, 255).astype(np.uint8)]


def overlay(frame: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5):
  """Blends the colourised labels over the RGB frame."""
  colors = colorize(labels, palette).astype(np.float32)
  return (frame.astype(np.float32) * (1 - alpha) + colors * alpha).round().astype(np.uint8)


def check_frame_rate(fps: float) -> None:
  """Refuses a frame rate an overlay video cannot play at; it comes from `eval.overlay_fps` (or a
  video's own), so callers check it before their long work, `write_video` again."""
  if not fps > 0:
    raise SetupError(f"eval.overlay_fps={fps}: a video needs a frame rate > 0")


def write_video(path: str | epath.Path, frames: Iterable[np.ndarray], fps: float) -> epath.Path:
  """Writes RGB uint8 frames as an MP4 (mp4v), which OpenCV's wheels can encode without ffmpeg.

  A video has one frame size: frames of another size than the first (a frame folder of mixed
  sizes) are resized to it, which OpenCV would otherwise drop with only a log line. mp4v encodes
  even sides only: OpenCV crops an odd side's last row or column (a 1-pixel side does not open at
  all), so frames are padded to even sides with black instead (`_padded_to_even`) and every
  predicted pixel stays in the video.
  """
  check_frame_rate(fps)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = None
  try:
    for frame in frames:
      if writer is None:
        h, w = frame.shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                 (w + w % 2, h + h % 2))
        if not writer.isOpened():
          raise SetupError(f"OpenCV cannot open {path} for writing (mp4v); "
                           "--config.eval.overlay_video=False writes no overlay video")
      if frame.shape[:2] != (h, w):
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
      writer.write(cv2.cvtColor(_padded_to_even(frame), cv2.COLOR_RGB2BGR))
  finally:
    if writer is not None:
      writer.release()
  if writer is None:
    raise ValueError(f"no frames to write to {path}")
  return path


def _padded_to_even(frame: np.ndarray) -> np.ndarray:
  """The frame with a black row below and a black column right of it where its side is odd."""
  h, w = frame.shape[:2]
  return cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def side_by_side(frame: np.ndarray, prediction: np.ndarray, palette: np.ndarray,
                 ground_truth: np.ndarray | None = None) -> np.ndarray:
  """[frame | overlay of the prediction | ground truth (if given)], for overlay videos."""
  panels = [frame, overlay(frame, prediction, palette)]
  if ground_truth is not None:
    panels.append(colorize(ground_truth, palette))
  return np.concatenate(panels, axis=1)
