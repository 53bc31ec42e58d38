"""`--mode=infer`: predict a video file or a folder of frames with a trained checkpoint.

Writes one palette PNG of class ids per frame (`<workdir>/infer/<name>/labels/`, viewable in any
image viewer, readable back as ids) and an overlay video, with a progress line.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from typing import Iterator, NamedTuple

import numpy as np
from etils import epath
from PIL import Image

from data_pipelines.dataset import make_source
from data_pipelines.read_ahead import read_ahead
from data_pipelines.sources import base, footage
from vssjax import parallel, visualize
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.eval.evaluator import Scorers, make_scorers
from vssjax.progress import Progress


class Input(NamedTuple):
  """What `--input` holds: its frames, decoded as they are iterated."""
  num_frames: int
  frames: Iterator[tuple[str, np.ndarray]]  # (frame name, RGB uint8 frame)
  frame_rate: float  # the video's own; 0 for a frame folder or a video that declares none


def read_frames(path: str) -> Input:
  """The frames of a video file or a frame dir.

  A frame dir's frames are its images in name order but label maps beside them (`*_label.png`, as
  the project's vtest_pseudo set stores them), which are skipped with a note
  (`footage.frame_files`). Input that cannot be read is a `SetupError` naming it, raised here,
  before the checkpoint is restored: a video file's first frame is decoded at once.
  """
  if not os.path.exists(path):
    raise SetupError(f"--input {path} does not exist")
  try:
    if os.path.isdir(path):
      return _read_frame_folder(path)
    return _read_video_file(path)
  except base.DataError as error:
    raise SetupError(f"--input {error}") from error


def _read_frame_folder(path: str) -> Input:
  """A frame folder's frames (a folder of video folders is refused, naming one to pass)."""
  try:
    files = footage.frame_files(path)
  except base.DataError:
    videos = sorted(entry.name for entry in os.scandir(path) if entry.is_dir())
    if not videos:
      raise
    raise SetupError(f"--input {path} holds folders, not frames: infer predicts one video, so "
                     f"pass one of them, e.g. --input={os.path.join(path, videos[0])}") from None
  frames = ((os.path.splitext(os.path.basename(f))[0], base.read_image(f, f)) for f in files)
  return Input(len(files), frames, 0.0)


def _read_video_file(path: str) -> Input:
  """A video file's frames, the first decoded now, with the rate its container declares."""
  decoded = footage.read_video_frames(path)
  first = next(decoded, None)  # opens the file: an unreadable one fails now, not mid-run
  if first is None:
    raise SetupError(f"--input {path}: OpenCV decodes no frame of it (is it a video?)")
  frames = itertools.chain([first], decoded)
  num_frames, frame_rate = footage.declared_frames_and_rate(path)
  return Input(num_frames, ((f"{i:06d}", frame) for i, frame in enumerate(frames)), frame_rate)


def save_palette_png(path: epath.Path, labels: np.ndarray, palette: np.ndarray) -> None:
  image = Image.fromarray(labels.astype(np.uint8), mode="P")
  flat = np.zeros((256, 3), np.uint8)
  flat[: len(palette)] = palette
  image.putpalette(flat.ravel().tolist())
  image.save(str(path))


def _clear_earlier_output(labels_dir: epath.Path) -> None:
  """Makes `labels_dir`, emptied of an earlier run's PNGs: a re-run (a later checkpoint, or another
  input of the same name) must not leave label maps of frames it did not predict among its own."""
  labels_dir.mkdir(parents=True, exist_ok=True)
  earlier = list(labels_dir.glob("*.png"))
  if earlier:
    print(f"infer: replacing the {len(earlier)} label PNGs of an earlier run in {labels_dir}",
          flush=True)
    for path in earlier:
      path.unlink()


def run(config: ConfigDict, workdir: str, input_path: str, *, step: int | None = None):
  """Predicts every frame of `input_path` with checkpoint `step` (default: the latest) of
  `workdir`. The overlay video plays at the input video's own rate, else (a frame folder, or a
  video that declares none) at `eval.overlay_fps`. With `eval.temporal_consistency`, also scores
  the predictions' TC (label-free: each prediction against the next one warped back by optical
  flow, as the evaluator does) into `tc.json`; returns the output folder."""
  from vssjax.train.loop import restore_for_eval  # pylint: disable=g-import-not-at-top

  total, frames, frame_rate = read_frames(input_path)  # a wrong --input fails before the restore
  fps = frame_rate or config.eval.overlay_fps
  visualize.check_frame_rate(fps)
  scorers = make_scorers(config)  # TC's settings, checked before the restore too
  method, variables, step = restore_for_eval(config, workdir, step)
  palette = make_source(config.data).palette
  name = epath.Path(input_path).stem
  out_dir = epath.Path(workdir) / "infer" / name
  _clear_earlier_output(out_dir / "labels")
  if (out_dir / "tc.json").exists():  # the TC of an earlier run's labels; this run writes its own
    (out_dir / "tc.json").unlink()
  print(f"infer: {input_path} ({total} frame{'' if total == 1 else 's'}) with the checkpoint of "
        f"step {step} -> {out_dir}", flush=True)
  predictor = method.predictor(variables)
  progress = Progress("infer frame", total, "frames")
  names: list[str] = []

  def overlays() -> Iterator[np.ndarray]:
    """Predicts frame by frame, saving each label PNG; yields the overlays in order, so the video
    is written as they come (a long input is never held in memory).

    A push's predictions are saved after the next push is dispatched: the device predicts a frame
    while the host writes the previous one (and, with an accelerator, a thread decodes the next
    ones).
    """
    pending_frames: dict[int, np.ndarray] = {}
    # A predictor may answer frames in any order (docs/extending.md); the overlay video and TC's
    # pairs take them in frame order, each frame's TC partner the frame before it.
    answered: dict[int, np.ndarray] = {}
    next_index = 0
    last: tuple[np.ndarray, np.ndarray] | None = None  # frame next_index - 1 and its labels

    def consume(ready):
      nonlocal next_index, last
      answered.update(ready)
      while next_index in answered:
        index, next_index = next_index, next_index + 1
        labels = np.asarray(answered.pop(index))
        frame = pending_frames.pop(index)
        save_palette_png(out_dir / "labels" / f"{names[index]}.png", labels, palette)
        if scorers.temporal is not None and last is not None:
          _score_pair(scorers, input_path, index, *last, frame, labels)
        last = (frame, labels)
        yield visualize.overlay(frame, labels, palette)

    ready: list = []
    decoded = read_ahead(frames) if parallel.computes_off_the_host() else iter(frames)
    with contextlib.closing(decoded):
      for index, (frame_name, frame) in enumerate(decoded):
        names.append(frame_name)
        pending_frames[index] = frame
        ready, previous = predictor.push(frame), ready
        yield from consume(previous)
        progress.update(index + 1, force=index + 1 == total)
    yield from consume(ready + predictor.flush())
    if next_index != len(names) or answered:
      raise RuntimeError(f"{type(predictor).__name__} answered frames 0-{next_index - 1} and "
                         f"{sorted(answered)} of {len(names)}: every frame must come back once")

  video = visualize.write_video(out_dir / "overlay.mp4", overlays(), fps)
  print(f"infer: wrote {len(names)} label PNGs to {out_dir / 'labels'} and {video}", flush=True)
  if scorers.temporal is not None:
    _write_tc(out_dir, scorers)
  return out_dir


def _score_pair(scorers: Scorers, input_path: str, index: int, frame: np.ndarray,
                labels: np.ndarray, next_frame: np.ndarray, next_labels: np.ndarray) -> None:
  """TC of frames index-1 and index: the flow bringing frame index onto frame index-1 warps its
  prediction back (`TemporalConsistency.add_pair`)."""
  try:
    scorers.temporal.add_pair(labels, next_labels,
                              scorers.flow_provider.compute(next_frame, frame))
  except ValueError as error:
    raise base.DataError(input_path, f"frames {index - 1}-{index}: {error}") from error


def _write_tc(out_dir: epath.Path, scorers: Scorers) -> None:
  """`tc.json`: TC as a fraction (null without a frame pair), the pairs, flow and warp used."""
  tc = scorers.temporal.summary()["TC"]
  record = {"TC": None if np.isnan(tc) else tc, "pairs": scorers.temporal.pairs,
            "flow": scorers.flow_provider.method, "warp": scorers.temporal.warp_mode}
  (out_dir / "tc.json").write_text(json.dumps(record, indent=2) + "\n")
  said = "n/a (one frame)" if record["TC"] is None else f"{100 * tc:.2f}%"
  print(f"infer: TC (label-free temporal consistency) {said} over {record['pairs']} frame pairs "
        f"-> {out_dir / 'tc.json'}", flush=True)
