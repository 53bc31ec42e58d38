"""`--mode=infer`: predict videos (a file, a folder of frames, or a folder of either) with a
trained checkpoint.

Writes one palette PNG of class ids per frame (`<workdir>/infer/<name>/labels/`, viewable in any
image viewer, readable back as ids), an overlay video (unless `eval.overlay_video` is off) and,
with `eval.temporal_consistency`, the label-free TC of each video, with a progress line. A
video's outputs are written into a hidden folder beside `infer/<name>/` and swapped in once
complete, so an interrupted or failed run leaves an earlier run's outputs whole; one a run killed
outright left is removed by the next run of that video.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import itertools
import json
import os
import re
import shutil
import uuid
from typing import Generator, Iterator, NamedTuple, Sequence

import jax
import numpy as np
from etils import epath
from PIL import Image

from data_pipelines import eval_transforms
from data_pipelines.dataset import make_source
from data_pipelines.read_ahead import read_ahead
from data_pipelines.sources import base, footage
from data_pipelines.transforms import pillow_resize
from vssjax import parallel, visualize
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.eval.compile_ahead import CompileAhead, compiles_ahead
from vssjax.eval.evaluator import Scorers, make_scorers, merge_across_processes
from vssjax.eval.shots import ShotPredictor
from vssjax.eval.stream import stream_predictions
from vssjax.files import write_text_whole
from vssjax.listing import first_few
from vssjax.metrics.temporal_consistency import TemporalConsistency
from vssjax.progress import Progress
from vssjax.train import config_record
from vssjax.train.workdir import check_workdir_to_evaluate, one_local_process


class Input(NamedTuple):
  """What `--input` holds: its frames, decoded as they are iterated."""
  num_frames: int  # a video file's as its container declares it: an estimate (`_infer_video`)
  frames: Iterator[tuple[str, np.ndarray]]  # (frame name, RGB uint8 frame)
  frame_rate: float  # the video's own; 0 for a frame folder or a video that declares none


# Containers a folder's video files are recognised by (a lone --input file may be any OpenCV reads).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def input_videos(path: str) -> list[str]:
  """The videos `--input` names, in name order: a video file or a folder of frames is one; a
  folder of frame folders and video files (a dataset split's layout, a folder of clips) is each
  of them (a folder holding frames is one video, the others beside them named, not predicted).
  Nothing is decoded yet; a path that holds no video is a `SetupError` naming it."""
  if not os.path.exists(path):
    raise SetupError(f"--input {path} does not exist")
  if not os.path.isdir(path) or _frame_folder(path) != path:  # a file; one video in VSPW's layout
    return [path]
  entries = [os.path.join(path, name) for name in base.visible_entries(path)]  # no `._<clip>`
  videos = [entry for entry in entries
            if (os.path.isdir(entry) and _holds_images(_frame_folder(entry)))
            or (os.path.isfile(entry) and entry.lower().endswith(VIDEO_SUFFIXES))]
  if _holds_images(path):
    if videos:  # frames and videos side by side: the frames win, the rest is not lost silently
      print(f"infer: {path} holds frames, so it is one video of them; its {len(videos)} other "
            f"videos ({', '.join(os.path.basename(v) for v in videos[:3])}"
            f"{', ...' if len(videos) > 3 else ''}) are not predicted: pass them on their own",
            flush=True)
    return [path]
  if not videos:
    raise SetupError(f"--input {path} holds no frames ({'/'.join(footage.IMAGE_SUFFIXES)}), "
                     f"no folders of frames and no video files ({'/'.join(VIDEO_SUFFIXES)})")
  _say_left_out(path, {os.path.basename(v) for v in videos},
                f"video files ({'/'.join(VIDEO_SUFFIXES)}); pass one on its own for OpenCV to try")
  folders = [os.path.basename(entry) for entry in entries
             if os.path.isdir(entry) and entry not in videos]
  if folders:  # a folder of clips one level further down, say: not lost without a word either
    print(f"infer: {path}: {first_few(folders)} not predicted: folders without frames (a folder "
          "of videos is read one level deep: pass such a folder on its own)", flush=True)
  names = [footage.video_name(video) for video in videos]
  clashing = sorted({name for name in names if names.count(name) > 1})
  if clashing:
    raise SetupError(f"--input {path}: several videos would write infer/{clashing[0]}/ "
                     f"({', '.join(v for v, n in zip(videos, names) if n == clashing[0])}); "
                     "pass them one at a time")
  return videos


def _holds_images(folder: str) -> bool:
  return bool(footage.image_names(folder))


def _say_left_out(folder: str, used: set[str], kinds: str) -> None:
  """Names the files of `folder` that are not `used` (hidden ones aside), which are not `kinds`:
  a clip or a frame of a format not recognised (`.flv`, `.webp`) beside the others would
  otherwise be left out without a word."""
  left_out = [name for name in base.visible_entries(folder)
              if name not in used and os.path.isfile(os.path.join(folder, name))]
  if left_out:
    print(f"infer: {folder}: {first_few(left_out)} not predicted: not {kinds}", flush=True)


def _frame_folder(video_folder: str) -> str:
  """Where a video folder's frames are: its `origin/` in VSPW's layout (frames in origin/, label
  maps in mask/), else the folder itself. A VSPW split (`data/`) is then a folder of videos."""
  origin = os.path.join(video_folder, "origin")
  if os.path.isdir(origin) and _holds_images(origin):
    return origin
  return video_folder


def read_frames(path: str) -> Input:
  """The frames of a video file, an image (one frame) or a frame folder (in VSPW's layout, its
  origin/).

  A frame folder's frames are its images in name order but label maps beside them
  (`*_label.png`, as the project's vtest_pseudo set stores them), which are skipped with a note
  (`footage.frame_files`). Input that cannot be read, or frames that would write one label PNG
  (`_check_frame_names`), is a `SetupError` naming it: an image, or a video file's first frame,
  is decoded at once (`_start_decoding`).
  """
  if _is_image_file(path):
    return _read_image_file(path)
  if not os.path.isdir(path):
    return _read_video_file(path)
  folder = _frame_folder(path)
  try:
    files = footage.frame_files(folder)
  except base.DataError as error:
    raise SetupError(f"--input {error}") from error
  _check_frame_names(path, files)
  # Video files beside frames were named by `input_videos`; label maps are noted by frame_files.
  named = set(footage.image_names(folder)) | {
      name for name in base.visible_entries(folder) if name.lower().endswith(VIDEO_SUFFIXES)}
  _say_left_out(folder, named, f"frames ({'/'.join(footage.IMAGE_SUFFIXES)})")
  frames = ((os.path.splitext(os.path.basename(f))[0], base.read_image(f, f)) for f in files)
  return Input(len(files), frames, 0.0)


def _check_frame_names(path: str, files: list[str]) -> None:
  """Refuses frames whose names differ only by their suffix (a.jpg, a.png): each writes
  labels/<name less suffix>.png, so one's labels would overwrite the other's while the count
  said both were written. Most often label maps beside their frames (0000.png by 0000.jpg),
  which would also be predicted as frames."""
  stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
  counts = collections.Counter(stems)
  clashing = sorted(stem for stem, count in counts.items() if count > 1)
  if clashing:
    others = f" (and {len(clashing) - 1} more names)" if len(clashing) > 1 else ""
    raise SetupError(
        f"--input {path}: several frames would write labels/{clashing[0]}.png "
        f"({', '.join(os.path.basename(f) for f, s in zip(files, stems) if s == clashing[0])})"
        f"{others}; keep one frame of each name in the folder (label maps beside the frames?)")


def _is_image_file(path: str) -> bool:
  return os.path.isfile(path) and path.lower().endswith(footage.IMAGE_SUFFIXES)


def _read_image_file(path: str) -> Input:
  """A lone image: one frame, its labels named after it, as a folder's frames are (OpenCV would
  also decode it as a video, of no declared length, its labels 000000.png)."""
  try:
    frame = base.read_image(path, path)
  except base.DataError as error:
    raise SetupError(f"--input {error}") from error
  stem = os.path.splitext(os.path.basename(path))[0]
  return Input(1, ((stem, image) for image in [frame]), 0.0)  # a generator: closed after the run


def _read_video_file(path: str) -> Input:
  """A video file's frames, the first decoded now, with the rate its container declares."""
  first, decoder = _start_decoding(path)
  frames = itertools.chain([first], decoder)
  num_frames, frame_rate = footage.declared_frames_and_rate(path)
  return Input(num_frames, ((f"{i:06d}", frame) for i, frame in enumerate(frames)), frame_rate)


def _start_decoding(path: str) -> tuple[np.ndarray, Generator[np.ndarray, None, None]]:
  """A video file's first frame and its decoder, open, which yields the frames after it (closing
  it closes the file). Decoding the first frame opens the file: an unreadable one is a
  `SetupError` now, not mid-run."""
  decoder = footage.read_video_frames(path)
  try:
    first = next(decoder, None)
  except base.DataError as error:
    raise SetupError(f"--input {error}") from error
  if first is None:
    raise SetupError(f"--input {path}: OpenCV decodes no frame of it (is it a video?)")
  return first, decoder


def save_palette_png(path: epath.Path, labels: np.ndarray, palette: np.ndarray) -> None:
  image = Image.fromarray(labels.astype(np.uint8), mode="P")
  flat = np.zeros((256, 3), np.uint8)
  flat[: len(palette)] = palette
  image.putpalette(flat.ravel().tolist())
  image.save(str(path))


# In each staging folder, locked by the run writing there: the OS releases it however the run
# ends, kill -9 included, so a lock the next run can take marks a folder nobody will finish.
_STAGING_LOCK = ".writing"


@contextlib.contextmanager
def _staging_folder(out_dir: epath.Path, workdir: str) -> Iterator[epath.Path]:
  """A hidden folder beside `out_dir` that a run writes a video's outputs into, swapped in once
  they are complete (`_swap_in`): an interrupted or failed run (Ctrl-C, a bad frame mid-video)
  leaves an earlier run's outputs as they were, or no outputs at all, never a truncated PNG, an
  unplayable overlay or a part of the frames passing for a run's whole; it removes the folder as
  it stops. The token is this run's own, as the evaluator's provisional overlay's: two runs never
  write into one staging folder.

  A run killed outright (kill -9, out of memory) cannot remove its folder: one process on a local
  filesystem (`one_local_process`) holds a lock in it while writing, and removes the folders of
  `out_dir` whose lock it can take, which no run is writing any more (`_remove_abandoned`)."""
  staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex}.partial"
  local = one_local_process(workdir)
  if local:
    _remove_abandoned(out_dir)
  (staging / "labels").mkdir(parents=True)
  with contextlib.ExitStack() as held:
    if local:  # locked before it takes its name: no other run ever finds it free while this writes
      lock = held.enter_context(open(staging / f"{_STAGING_LOCK}.new", "w", encoding="utf-8"))
      fcntl.flock(lock, fcntl.LOCK_EX)
      (staging / f"{_STAGING_LOCK}.new").rename(staging / _STAGING_LOCK)
    try:
      yield staging
    except BaseException:  # KeyboardInterrupt too: nothing of this run under the outputs' names
      shutil.rmtree(staging, ignore_errors=True)
      raise


def _remove_abandoned(out_dir: epath.Path) -> None:
  """Removes the staging folders of `out_dir` that runs killed outright left (their lock free),
  saying so: each may hold a whole video's label PNGs. Those of a run still writing (another
  shell's) stay, and so does anything without the lock (not this code's)."""
  own = re.compile(rf"\.{re.escape(out_dir.name)}\.[0-9a-f]{{32}}\.partial")
  folders = sorted(out_dir.parent.iterdir()) if out_dir.parent.is_dir() else []
  for folder in folders:
    if not own.fullmatch(folder.name):
      continue
    try:
      lock = open(folder / _STAGING_LOCK, encoding="utf-8")  # pylint: disable=consider-using-with
    except OSError:  # no lock: not this code's, or its run has just finished and removed it
      continue
    with lock:
      try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:  # a run writing there now
        continue
      if folder.exists():  # not removed by its run, which released the lock once it had
        print(f"infer: removing {folder}: the outputs of a run of {out_dir.name} that was stopped "
              "outright (kill -9, out of memory)", flush=True)
        shutil.rmtree(folder)


# A run's record beside its outputs: the input (absolute), the checkpoint's step, the frames.
_RUN_RECORD = "run.json"


def _swap_in(staging: epath.Path, out_dir: epath.Path) -> None:
  """Moves a complete run's outputs from `staging` into `out_dir` in place of an earlier run's:
  its labels/ whole (a re-run must not leave label maps of frames it did not predict among its
  own), its overlay.mp4, tc.json and run.json, or where it wrote none, the earlier run's are
  removed (an overlay or TC of other labels). Renames only, so the earlier outputs stand until
  they are replaced; other files in `out_dir` are left alone."""
  out_dir.mkdir(parents=True, exist_ok=True)
  labels_dir = out_dir / "labels"
  if labels_dir.exists():
    earlier = list(labels_dir.glob("*.png"))
    if earlier:
      print(f"infer: replacing the {len(earlier)} label PNG{'s' if len(earlier) > 1 else ''} of "
            f"an earlier run{_said_run(out_dir / _RUN_RECORD)} in {labels_dir}", flush=True)
    labels_dir.rename(staging / "earlier_labels")  # removed with the staging folder
  (staging / "labels").rename(labels_dir)
  for name in ("overlay.mp4", "tc.json", _RUN_RECORD):
    if (staging / name).exists():
      (staging / name).replace(out_dir / name)
    elif (out_dir / name).exists():
      (out_dir / name).unlink()
  shutil.rmtree(staging)


def _said_run(record: epath.Path) -> str:
  """' (step N, input PATH)' of the run whose record this is; '' where it has none (a run of
  earlier code) or cannot be read."""
  try:
    said = json.loads(record.read_text())
    return f" (step {said['step']}, input {said['input']})"
  except (OSError, ValueError, KeyError, TypeError):
    return ""


def run(config: ConfigDict, workdir: str, input_path: str, *,
        step: int | None = None) -> list[epath.Path]:
  """Predicts every frame of each video `input_path` names (`input_videos`) with checkpoint `step`
  (default: the latest) of `workdir`, into `infer/<video>/`; returns the folders this process
  wrote. The checkpoint is restored and the programs compiled once for all the videos; with
  several processes each predicts its share (every process_count-th video), as the evaluator
  shares out a split. Each overlay video plays at its input's own rate, else (a frame folder, or
  a video that declares none) at `eval.overlay_fps`.
  With `eval.temporal_consistency`, each video's predictions are also scored for TC (label-free:
  each prediction against the next one warped back by optical flow, as the evaluator does) into
  its `tc.json`, and several videos' together (the pairs of all, as the evaluator scores a split)
  into `infer/tc_<input folder>.json`."""
  from vssjax.train.loop import restore_for_eval  # pylint: disable=g-import-not-at-top

  # `--input=~/clip.mp4`: a shell expands no ~ after `=`, so it comes as it was typed.
  input_path = os.path.expanduser(input_path)
  videos = input_videos(input_path)
  # A wrong --input fails before the restore, as does a folder's corrupt clip or frame folder of
  # clashing frame names, not after the videos before it.
  inputs = {videos[0]: read_frames(videos[0])}
  for video in videos[1:]:
    if os.path.isfile(video):
      _start_decoding(video)[1].close()  # its first frame decoded, the file closed again
    else:
      inputs[video] = read_frames(video)  # its frames listed and their names checked, none read
  first = inputs[videos[0]]
  if config.eval.overlay_video:
    visualize.check_frame_rate(first.frame_rate or config.eval.overlay_fps)
  # TC's settings, checked before the restore too; this accumulator takes every pair of every
  # video, as the evaluator scores a split.
  folder_tc = make_scorers(config).temporal
  check_workdir_to_evaluate(workdir, "--mode=infer's outputs",
                            folder=os.path.join(workdir, "infer"))
  method, variables, step = restore_for_eval(config, workdir, step)
  changes = config_record.said_eval_changes(workdir, config, step, kept_in="each run.json")
  # Several processes (a pod, a cluster) share the videos out, and each its local devices, as the
  # evaluator does (`eval.devices`); a video's frames follow each other on one device.
  devices = parallel.prediction_devices(config.eval.devices)
  copies = parallel.local_copies(variables, devices)  # collective: before any process's own work
  palette = make_source(config.data).palette
  process, processes = _process()
  mine = videos[process::processes]
  if len(videos) > 1:
    share = f" ({len(mine)} in this process)" if processes > 1 else ""
    print(f"infer: {len(videos)} videos in {input_path}{share}", flush=True)
  if tuple(config.data.eval_transform.exact_size):  # what eval scores at: said, not silent
    h, w = config.data.eval_transform.exact_size
    print(f"infer: frames are predicted resized to {h}x{w} (data.eval_transform.exact_size, as "
          "--mode=eval reads them), their labels brought back to each frame's own size",
          flush=True)
  folder_tc_path = epath.Path(workdir) / "infer" / f"tc_{footage.video_name(input_path)}.json"
  # An earlier run's joint TC scores labels this run replaces: it goes once a video's are replaced
  # (not before: a run that fails first leaves the earlier outputs whole), and comes back with TC.
  stale_folder_tc = videos != [input_path] and process == 0
  # One video at a time (one in all, or one device): its frames' progress lines interleave with
  # no other's.
  frame_progress = min(len(devices), len(mine)) == 1

  def infer_one(video: str, variables) -> tuple[epath.Path, Scorers]:
    """`video` on the device that holds `variables`, with scorers of its own."""
    scorers = make_scorers(config)
    position = f"video {videos.index(video) + 1}/{len(videos)}: " if len(videos) > 1 else ""
    out_dir = _infer_video(config, method, variables, step, workdir, video,
                           inputs.pop(video, None) or read_frames(video), scorers, palette,
                           frame_progress=frame_progress, config_changes=changes,
                           position=position)
    if stale_folder_tc:
      with contextlib.suppress(FileNotFoundError):
        os.remove(folder_tc_path)
    return out_dir, scorers

  def compile_ahead(share: list[str], variables) -> CompileAhead:
    """A device's videos' later frame sizes compiled ahead, as the evaluator does."""
    warm_up = functools.partial(_predict_black_frames, config, method, variables)
    return CompileAhead(share, warm_up, compiles_ahead(config), _first_frame, "infer")

  done = parallel.map_over_devices(mine, copies, infer_one, ahead=compile_ahead)
  if folder_tc is not None and len(videos) > 1:
    for _, scorers in done:  # video by video, as one device adds them
      folder_tc.merge(scorers.temporal)
    folder_tc = merge_across_processes(folder_tc)
    if process == 0:
      _write_tc(folder_tc_path, folder_tc, config.eval.tc_flow.method,
                f"over {len(videos)} videos")
  return [out_dir for out_dir, _ in done]


def _first_frame(path: str) -> np.ndarray:
  """The first frame of a video file or frame folder, reading no other."""
  if os.path.isdir(path):
    first = footage.frame_files(_frame_folder(path))[0]
    return base.read_image(first, first)
  frame, rest = _start_decoding(path)
  rest.close()
  return frame


def _predict_black_frames(config: ConfigDict, method, variables, path: str,
                          frame: np.ndarray) -> None:
  """`CompileAhead`'s warm-up: `method.warm_up_frames` black frames of `frame`'s shape through a
  fresh predictor, as `_infer_video` pushes a video (at `data.eval_transform.exact_size` if set)."""
  del path
  black = [("", np.zeros_like(frame))] * method.warm_up_frames
  predictor = ShotPredictor(method.predictor(variables), lambda: method.predictor(variables), None)
  for _ in _predicted(predictor, iter(black), config.data.num_classes,
                      tuple(config.data.eval_transform.exact_size) or None, lambda pushed: None):
    pass


def _process() -> tuple[int, int]:
  """(this process's index, the number of processes)."""
  return jax.process_index(), jax.process_count()


def _infer_video(config: ConfigDict, method, variables, step: int, workdir: str, input_path: str,
                 video: Input, scorers: Scorers, palette: np.ndarray, *,
                 frame_progress: bool = True, config_changes: Sequence[str] = (),
                 position: str = "") -> epath.Path:
  """One video through a fresh predictor: label PNGs, overlay video (with `eval.overlay_video`)
  and, with TC on (`scorers`, this video's), tc.json, written into a staging folder and swapped
  into `infer/<name>/` once all are complete (`_staging_folder`). `frame_progress`: a progress
  line every few frames (off where several devices' videos run at once: their lines would
  interleave). `config_changes` (`field: trained -> now`) go into its run.json; `position`
  ('video 3/12: ', a folder's) starts its first line."""
  total, frames, frame_rate = video
  # A container's frame count may be wrong (a truncated file, a count the codec only estimates):
  # it sizes nothing, it only sets the progress line's ETA; the frames decoded are what count.
  declared = os.path.isfile(input_path) and not _is_image_file(input_path)
  out_dir = epath.Path(workdir) / "infer" / footage.video_name(input_path)
  print(f"infer: {position}{input_path} ({_said_length(total, declared)}) with the checkpoint of "
        f"step {step} -> {out_dir}", flush=True)
  predictor = ShotPredictor(method.predictor(variables), lambda: method.predictor(variables),
                            f"infer: {input_path}")
  progress = Progress("infer frame", total, "frames", estimated=declared)
  progress.enabled = progress.enabled and frame_progress
  names: list[str] = []
  with _staging_folder(out_dir, workdir) as staging:
    # With an accelerator, a thread decodes the frames ahead while the host writes the one before.
    decoded = read_ahead(frames) if parallel.computes_off_the_host() else iter(frames)
    with contextlib.closing(decoded):
      predicted = _predicted(predictor, _named(decoded, names, progress), config.data.num_classes,
                             tuple(config.data.eval_transform.exact_size) or None, progress.update)
      saved = _saved_and_scored(predicted, staging / "labels", names, palette, scorers,
                                input_path)
      _drain(saved, staging / "overlay.mp4" if config.eval.overlay_video else None, palette,
             frame_rate or config.eval.overlay_fps)
    tc = None
    if scorers.temporal is not None:
      tc = _tc_record(scorers.temporal, config.eval.tc_flow.method)
      (staging / "tc.json").write_text(json.dumps(tc, indent=2) + "\n")
    # What made these outputs: a later run's replacing line names it, and a folder of PNGs
    # otherwise says neither the checkpoint nor the input.
    record = {"input": os.path.abspath(input_path), "step": step, "frames": len(names)}
    if config_changes:  # predicted with other settings than the checkpoint was trained with
      record["config_changes"] = list(config_changes)
    (staging / _RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    _swap_in(staging, out_dir)
  also = (f" and {out_dir / 'overlay.mp4'}" if config.eval.overlay_video
          else " (no overlay video: eval.overlay_video is off)")
  _say_written(out_dir / "labels", len(names), also, input_path, total if declared else None)
  if tc is not None:
    _say_tc(tc, out_dir / "tc.json")
  return out_dir


def _named(frames: Iterator[tuple[str, np.ndarray]], names: list[str],
           progress: Progress) -> Iterator[tuple[str, np.ndarray]]:
  """`frames`, each one's name added to `names` as it is read (a label PNG's name, the frames'
  count); `progress` is finished once they end, its count of frames then known."""
  for name, frame in frames:
    names.append(name)
    yield name, frame
  progress.finish(len(names))


def _predicted(predictor: ShotPredictor, frames: Iterator[tuple[str, np.ndarray]],
               num_classes: int, exact_size: tuple[int, int] | None, after_push
               ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
  """`stream_predictions` of `frames`, each pushed at `exact_size` (h, w) where one is set
  (`data.eval_transform.exact_size`, DCFM's VSPW protocol), resized as the evaluator reads a video
  (`eval_transforms.resize_exact`), so infer predicts what eval does; its labels come back at the
  frame's own size, nearest as labels are resized there, and with the frame as read: the label
  PNGs, overlay and TC are at the input's size."""
  if exact_size is None:
    yield from stream_predictions(predictor, frames, num_classes, after_push)
    return
  originals: collections.deque[np.ndarray] = collections.deque()  # pushed, not yet answered

  def resized():
    for name, frame in frames:
      originals.append(frame)
      yield name, eval_transforms.resize_exact(frame, None, exact_size)[0]

  for index, _, labels in stream_predictions(predictor, resized(), num_classes, after_push):
    frame = originals.popleft()  # answers come in frame order
    if labels.shape != frame.shape[:2]:
      labels = pillow_resize(labels.astype(np.int32), frame.shape[:2], Image.Resampling.NEAREST)
    yield index, frame, labels


def _saved_and_scored(predicted: Iterator[tuple[int, np.ndarray, np.ndarray]],
                      labels_dir: epath.Path, names: list[str], palette: np.ndarray,
                      scorers: Scorers, input_path: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Saves the labels of each (index, frame, labels) of `predicted` (in frame order) as the
  palette PNG of frame `names[index]` and, with TC on, scores them with the frame before's; yields
  (frame, labels) on."""
  last: tuple[np.ndarray, np.ndarray] | None = None  # the frame before and its labels
  for index, frame, labels in predicted:
    save_palette_png(labels_dir / f"{names[index]}.png", labels, palette)
    # A change of frame size starts a new shot (`ShotPredictor`): no pair across it.
    if scorers.temporal is not None and last is not None and last[0].shape == frame.shape:
      _score_pair(scorers, input_path, index, *last, frame, labels)
    last = (frame, labels)
    yield frame, labels


def _drain(predictions: Iterator[tuple[np.ndarray, np.ndarray]], overlay: epath.Path | None,
           palette: np.ndarray, fps: float) -> None:
  """Runs `predictions` ((frame, labels) in frame order) to their end, each overlaid into the
  video `overlay` as it comes (None: no overlay), so a long input is never held whole."""
  if overlay is None:
    collections.deque(predictions, maxlen=0)  # for the PNGs (and TC) alone
    return
  visualize.write_video(
      overlay, (visualize.overlay(frame, labels, palette) for frame, labels in predictions), fps)


def _say_written(labels_dir: epath.Path, count: int, also: str, input_path: str,
                 declared: int | None) -> None:
  """Says that `count` label PNGs (`also`: and what else) were written, and where a video file
  `declared` more frames than were decoded, that it stopped short."""
  print(f"infer: wrote {count} label PNG{'' if count == 1 else 's'} to {labels_dir}{also}",
        flush=True)
  if declared is not None and count < declared:  # OpenCV just ends at a broken frame
    print(f"infer: note: {input_path} declares {declared} frames but decoding stopped after "
          f"{count} (a truncated or corrupt file?)", flush=True)


def _said_length(num_frames: int, declared: bool) -> str:
  """A video's length for its first line: a container's declared count as the estimate it is."""
  if not declared:
    return f"{num_frames} frame{'' if num_frames == 1 else 's'}"
  if not num_frames:
    return "its container declares no frame count"
  return f"{num_frames} frame{'' if num_frames == 1 else 's'} as its container declares"


def _score_pair(scorers: Scorers, input_path: str, index: int, frame: np.ndarray,
                labels: np.ndarray, next_frame: np.ndarray, next_labels: np.ndarray) -> None:
  """TC of frames index-1 and index: the flow bringing frame index onto frame index-1 warps its
  prediction back (`TemporalConsistency.add_pair`)."""
  try:
    scorers.temporal.add_pair(labels, next_labels,
                              scorers.flow_provider.compute(next_frame, frame))
  except ValueError as error:
    raise base.DataError(input_path, f"frames {index - 1}-{index}: {error}") from error


def _tc_record(temporal: TemporalConsistency, flow: str) -> dict:
  """A TC record: TC as a fraction (null without a frame pair), the pairs, flow and warp used."""
  tc = temporal.summary()["TC"]
  return {"TC": None if np.isnan(tc) else tc, "pairs": temporal.pairs, "flow": flow,
          "warp": temporal.warp_mode}


def _say_tc(record: dict, path: epath.Path, scope: str = "") -> None:
  said = ("n/a (no two consecutive frames of one size)" if record["TC"] is None
          else f"{100 * record['TC']:.2f}%")
  print(f"infer: TC (label-free temporal consistency) {said} over {record['pairs']} frame pairs"
        f"{' ' + scope if scope else ''} -> {path}", flush=True)


def _write_tc(path: epath.Path, temporal: TemporalConsistency, flow: str, scope: str = "") -> None:
  """Writes `temporal`'s record (`_tc_record`) to `path` whole (`files.write_text_whole`): an
  interrupted write leaves an earlier run's whole, not a truncated one."""
  record = _tc_record(temporal, flow)
  write_text_whole(path, json.dumps(record, indent=2) + "\n")
  _say_tc(record, path, scope)
