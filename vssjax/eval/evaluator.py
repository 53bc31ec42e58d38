"""The evaluator: every frame of every video through the method's streaming predictor.

Metrics are accumulated per video on the host (confusion matrix for mIoU/wIoU/accuracy, window
statistics for mVC_n/VEC_n and, with `eval.temporal_consistency`, ETC's flow-warped TC), merged
across devices and processes, and written as JSON + Markdown. Each process evaluates a disjoint
shard of the videos, and each of its prediction devices a disjoint part of that shard.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import pickle
import threading
import time
import uuid
from typing import Any, Callable, Sequence

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from data_pipelines.clip_sampling import make_clip_sampler
from data_pipelines.lists import read_list
from data_pipelines.loader import eval_videos, split_video_names
from data_pipelines.dataset import make_source
from data_pipelines.read_ahead import read_ahead
from data_pipelines.sources.base import DataError, VideoSource
from vssjax import parallel, visualize
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.eval import report
from vssjax.eval.compile_ahead import CompileAhead, compiles_ahead
from vssjax.eval.shots import ShotPredictor
from vssjax.eval.stream import stream_predictions
from vssjax.flow import FlowProvider
from vssjax.methods.base import Method, Variables
from vssjax.metrics.confusion import (MIOU_CONVENTIONS, ConfusionMatrix, fwiou, miou_by_convention,
                                     per_class_iou, pixel_accuracy)
from vssjax.metrics.consistency import VideoConsistency
from vssjax.metrics.temporal_consistency import TemporalConsistency
from vssjax.progress import Progress


def merge_across_processes(accumulator):
  """Sums an accumulator over processes: each pickles it, all gather, everyone merges."""
  if jax.process_count() == 1:
    return accumulator
  blob = np.frombuffer(pickle.dumps(accumulator), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([blob.size]))
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[: blob.size] = blob
  gathered = multihost_utils.process_allgather(padded)
  merged = None
  for size, row in zip(sizes.ravel(), gathered):
    part = pickle.loads(row[: int(size)].tobytes())
    merged = part if merged is None else merged.merge(part)
  return merged


def _sum_across_processes(counts: list[int]) -> list[int]:
  if jax.process_count() == 1:
    return counts
  return [int(v) for v in multihost_utils.process_allgather(np.array(counts)).sum(axis=0)]


def _longest_across_processes(seconds: float) -> float:
  if jax.process_count() == 1:
    return seconds
  return float(multihost_utils.process_allgather(np.array([seconds], np.float32)).max())


def _predict_video(predictor: ShotPredictor, video, confusion: ConfusionMatrix,
                   frame_predicted: Callable[[float], None], decode_ahead: bool):
  """Runs one video through a fresh predictor (`stream_predictions`: the device predicts frame t+1
  while the host fetches and scores frame t), scoring each labelled frame into `confusion`;
  returns frames, labels and predictions in order.

  With `decode_ahead`, a thread also decodes the frames ahead meanwhile. `frame_predicted` gets the
  time each frame's turn of the loop ended.
  """
  frames, labels, predictions = [], [], []

  def kept(decoded):
    for frame, label in decoded:  # the whole video, which mVC/VEC and TC score once predicted
      frames.append(frame)
      labels.append(label)
      yield "", frame  # `ShotPredictor`'s note names it by its index

  decoded = read_ahead(video) if decode_ahead else iter(video)
  with contextlib.closing(decoded):
    for index, _, prediction in stream_predictions(
        predictor, kept(decoded), confusion.num_classes,
        lambda pushed: frame_predicted(time.perf_counter())):
      predictions.append(prediction)
      if labels[index] is None:
        continue
      try:
        confusion.update(labels[index], prediction)
      except ValueError as e:
        raise DataError(f"video {video.name} frame {index}", str(e)) from e
  return frames, labels, predictions


class _OneVideoBehind:
  """Runs each video's whole-video scoring on one worker thread while the next video is predicted.

  mVC/VEC (and TC) need a whole video and cost the host about as much per frame as a GPU's
  forward pass (docs/benchmarks.md), so the evaluator does not wait for them. One worker keeps the
  order of additions (the same float sums as scoring inline), and at most one video waits to be
  scored, so at most two videos' label maps are held.
  """

  def __init__(self):
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="eval_scoring")
    self._pending: concurrent.futures.Future | None = None

  def submit(self, fn, *args) -> None:
    self.wait()
    self._pending = self._executor.submit(fn, *args)

  def wait(self) -> None:
    """Waits for the video being scored; raises what its scoring raised."""
    pending, self._pending = self._pending, None
    if pending is not None:
      pending.result()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self._executor.shutdown(wait=True)


@dataclasses.dataclass
class Scorers:
  """The metric accumulators of one evaluation, built from `config.eval`."""
  confusion: ConfusionMatrix
  consistency: VideoConsistency
  temporal: TemporalConsistency | None  # with eval.temporal_consistency
  tc_videos: set[str] | None  # eval.tc_video_list: the videos TC scores (None: all)
  flow_provider: FlowProvider | None
  # A keyframe method's frames scored by kind as well (`StreamingPredictor.keyframes`): DCFM's
  # Table V reports the mIoU of each.
  keyframes: ConfusionMatrix
  non_key: ConfusionMatrix

  def scores_tc(self, video: str) -> bool:
    """Whether TC scores `video` (TC on, and the video in eval.tc_video_list if one is given)."""
    return self.temporal is not None and (self.tc_videos is None or video in self.tc_videos)

  def merge(self, other: Scorers) -> Scorers:
    """Adds another device's accumulators into these; returns self."""
    for name in ("confusion", "consistency", "keyframes", "non_key"):
      getattr(self, name).merge(getattr(other, name))
    if self.temporal is not None:
      self.temporal.merge(other.temporal)
    return self


def make_scorers(config: ConfigDict) -> Scorers:
  """`config.eval`'s accumulators; a bad setting is a `SetupError` naming it. The train loop calls
  this before its first step, so a typo in eval settings fails then, not after training."""
  num_classes = config.data.num_classes
  if config.eval.overlay_video:
    visualize.check_frame_rate(config.eval.overlay_fps)
  parallel.prediction_devices(config.eval.devices)  # a count this process does not have
  if config.eval.max_videos < 0:  # was no video at all, and NaN metrics
    raise SetupError(f"eval.max_videos={config.eval.max_videos}: 0 (every video) or how many")
  if config.eval.miou_convention not in MIOU_CONVENTIONS:
    raise SetupError(f"eval.miou_convention must be one of {sorted(MIOU_CONVENTIONS)}, got "
                     f"{config.eval.miou_convention!r}")
  tc_videos = _read_tc_video_list(config.eval.tc_video_list)
  try:
    temporal = (TemporalConsistency(num_classes, config.eval.tc_warp)
                if config.eval.temporal_consistency else None)
    return Scorers(
        confusion=ConfusionMatrix(num_classes),
        consistency=VideoConsistency(
            num_classes, windows=tuple(config.eval.windows), vec_quirks=config.eval.vec_quirks,
            vc_convention=config.eval.vc_convention),
        temporal=temporal,
        tc_videos=tc_videos,
        flow_provider=(FlowProvider(config.eval.tc_flow.method, config.eval.tc_flow.cache_dir)
                       if temporal is not None else None),
        keyframes=ConfusionMatrix(num_classes), non_key=ConfusionMatrix(num_classes))
  except (ValueError, FileNotFoundError) as error:  # the metrics' own checks of their settings
    raise SetupError(f"config.eval: {error}") from error


def _read_tc_video_list(name: str) -> set[str] | None:
  """The videos eval.tc_video_list `name` names (a list file's path, or a shipped list's name:
  `read_list`); None for '' (every video)."""
  if not name:
    return None
  try:
    names = set(read_list(name))
  except OSError as error:  # not found (both places named), unreadable
    raise SetupError(f"eval.tc_video_list: {error}") from error
  except UnicodeDecodeError as error:
    raise SetupError(f"eval.tc_video_list: {name} is not a text file of video names "
                     f"({error})") from error
  if not names:  # TC would score nothing, n/a
    raise SetupError(f"eval.tc_video_list: {name} names no video: name some, or set it to '' for "
                     "TC on every evaluated video")
  return names


def check_tc_video_list(config: ConfigDict, scorers: Scorers) -> None:
  """Refuses, with TC on, an eval.tc_video_list naming a video that the eval split does not hold
  (a typo, another split's or data set's list): TC skipped such names unsaid, and was n/a, said to
  be for one-frame videos, when none matched. Checked against the whole split (listing it): an
  evaluation that sees only part of it (eval.max_videos, a process's shard) leaves listed videos
  out rightly. The train loop calls this before its first step, and `evaluate` before its first
  video."""
  if scorers.temporal is None or scorers.tc_videos is None:
    return
  split = config.data.eval_split
  unmatched = sorted(scorers.tc_videos - set(split_video_names(config.data, split)))
  if unmatched:
    shown = ", ".join(unmatched[:3]) + (", ..." if len(unmatched) > 3 else "")
    raise SetupError(
        f"eval.tc_video_list: {config.eval.tc_video_list} names {len(unmatched)} of its "
        f"{len(scorers.tc_videos)} videos that split {split!r} of data.source "
        f"{config.data.source!r} does not hold ({shown}): fix the list, evaluate the split "
        "whose videos it names, or score TC over every video with --config.eval.tc_video_list= "
        "(not comparable with a TC published over the list's: the results then leave that TC "
        "out)")


def evaluate(method: Method, variables: Variables, config: ConfigDict, *, workdir: str | None,
             step: int = 0, decode_ahead: bool | None = None,
             compile_ahead: bool | None = None, stop_requested: Callable[[], bool] | None = None,
             config_changes: Sequence[str] = ()) -> dict[str, Any] | None:
  """Evaluates on `config.data.eval_split`; writes results into `workdir`.

  Each process takes its share of the videos and splits it over its prediction devices
  (`eval.devices`, `parallel.prediction_devices`: every local accelerator by default): device k of
  K predicts videos k, k + K, ... of the share, in a thread of its own, with a whole copy of the
  variables and accumulators of its own, merged at the end (in device order, then across
  processes). `decode_ahead`: decode frames in a read-ahead thread; by default when the device is
  an accelerator (`parallel.computes_off_the_host`), the only case where it pays.
  `compile_ahead`: compile the predictors' programs for the next videos' frame sizes in a thread
  while the device predicts (`compile_ahead.CompileAhead`); by default as
  `compile_ahead.compiles_ahead` says.
  `stop_requested` (one process only) is asked before each video: once it is true, the evaluation
  ends there and returns None, writing nothing (a preemption during a periodic evaluation: a
  scheduler's grace period is shorter than an evaluation, whose step is already checkpointed).
  `config_changes` (`field: trained -> now` lines) go into the results as they are.
  """
  if stop_requested is not None and jax.process_count() > 1:
    raise ValueError("stop_requested ends one process's evaluation, whose merge every process "
                     "must reach: one process only")
  split = config.data.eval_split
  devices = parallel.prediction_devices(config.eval.devices)
  copies = parallel.local_copies(variables, devices)  # collective: before any process's own work
  if decode_ahead is None:
    decode_ahead = parallel.computes_off_the_host()
  if compile_ahead is None:
    compile_ahead = compiles_ahead(config)
  scorers = [make_scorers(config) for _ in devices]  # checked before the run, not after it
  check_tc_video_list(config, scorers[0])
  videos = list(eval_videos(config.data, split, jax.process_index(), jax.process_count(),
                            config.eval.max_videos,
                            make_clip_sampler(config.clip).eval_frames_per_clip,
                            keep_whole=scorers[0].scores_tc))
  source = make_source(config.data)  # the overlay's palette, the results' class names
  shared = _Shared(Progress(f"eval[{split}] video", len(videos), "videos"), stop_requested,
                   f"eval[{split}]")
  write_overlay = None
  if workdir and config.eval.overlay_video and jax.process_index() == 0:
    write_overlay = functools.partial(_write_overlay, workdir, fps=config.eval.overlay_fps,
                                      palette=source.palette)
  timed_frames, timed_wall, provisional = _predict_shares(
      method, copies, videos, scorers, split, decode_ahead, compile_ahead, shared, write_overlay)
  overlay_path = _settle_overlay(provisional, keep=not shared.cut_short)
  if shared.cut_short:
    print(f"eval[{split}] of step {step} cut short by the stop request after "
          f"{shared.videos_done} of {len(videos)} videos; no results written", flush=True)
    return None

  tc_videos = sum(scorers[0].scores_tc(video.name) for video in videos)
  results = _results(config, step, functools.reduce(Scorers.merge, scorers), source,
                     [len(videos), shared.frames_done, timed_frames, tc_videos], timed_wall)
  if overlay_path is not None:
    results["overlay_video"] = str(overlay_path)
  if config_changes:
    results["config_changes"] = list(config_changes)
  if workdir and jax.process_index() == 0:
    _, md_path, table = report.write_results(workdir, results, *report.published_for(config))
    report.append_history(workdir, results)
    print(f"\nResults ({split}, step {step}) -> {md_path}\n{table}\n", flush=True)
  return results


def _predict_shares(method: Method, copies: list[Variables], videos: list, scorers: list[Scorers],
                    split: str, decode_ahead: bool, compile_ahead: bool, shared: _Shared,
                    write_overlay) -> tuple[int, float, epath.Path | None]:
  """Device k of K predicts and scores videos k, k + K, ... into `scorers[k]` with `copies[k]`
  (`_evaluate_share`), the first one writing the overlay of its first video (with
  `write_overlay`). Returns the frames that frames/s counts, the seconds they took
  (`_timed_span`), and the overlay under its provisional name (None: none written)."""

  def evaluate_share(k: int, share: list, variables: Variables):
    return _evaluate_share(method, variables, share, scorers[k], split, decode_ahead,
                           compile_ahead, shared, write_overlay if k == 0 else None)

  started = time.perf_counter()
  outcomes = parallel.share_over_devices(videos, copies, evaluate_share, shared.failed)
  timed_frames, timed_wall = _timed_span(shared.frame_ends, [first for first, _ in outcomes],
                                         started)
  provisional = next((path for _, path in outcomes if path is not None), None)
  return timed_frames, timed_wall, provisional


def _settle_overlay(provisional: epath.Path | None, keep: bool) -> epath.Path | None:
  """The overlay this evaluation wrote under its provisional name, renamed to its own (replacing
  an earlier evaluation's), or without `keep` (an evaluation cut short) removed: None then, and
  without an overlay."""
  if provisional is None:
    return None
  if not keep:
    provisional.unlink()
    return None
  overlay_path = provisional.parent / provisional.name.split(".", 2)[2]  # less ".<token>."
  provisional.replace(overlay_path)
  return overlay_path


def _results(config: ConfigDict, step: int, scorers: Scorers, source: VideoSource,
             counts: list[int], timed_wall: float) -> dict[str, Any]:
  """The results of `scorers` (this process's devices' merged), merged across processes.
  `counts` (this process's videos, frames, timed frames and videos TC scored) are summed over
  processes, and of `timed_wall` (the seconds its timed frames took) the longest counts: frames/s
  is the whole evaluation's throughput."""
  confusion = merge_across_processes(scorers.confusion)
  consistency = merge_across_processes(scorers.consistency)
  temporal = scorers.temporal
  if temporal is not None:
    temporal = merge_across_processes(temporal)
  num_videos, num_frames, timed_frames, tc_videos = _sum_across_processes(counts)
  timed_wall = _longest_across_processes(timed_wall)
  mious = miou_by_convention(confusion.matrix)
  by_kind = {f"mIoU_{kind}": merge_across_processes(getattr(scorers, kind)).matrix
             for kind in ("keyframes", "non_key")}
  results: dict[str, Any] = {
      "step": int(step),
      "data_source": config.data.source,  # 'synthetic' under a real config's `:quick` too
      "split": config.data.eval_split,
      # The source's settings but its copy's place: which generated set (the synthetic knobs) or
      # which part of a real one, so that runs on different data are not ranked side by side.
      "data_settings": {name: value for name, value in config.data.get(source.name, {}).items()
                        if name != "root"},
      "num_videos": num_videos,
      "num_frames": num_frames,
      "scored_pixels": int(confusion.matrix.sum()),  # labelled pixels (0: a split without labels)
      "mIoU": mious[f"mIoU_{config.eval.miou_convention}"],
      "mIoU_convention": config.eval.miou_convention,
      **mious,
      "wIoU": fwiou(confusion.matrix),
      "pixel_acc": pixel_accuracy(confusion.matrix),
      "frames_per_s": timed_frames / max(timed_wall, 1e-9),
      "per_class_iou": [None if np.isnan(v) else float(v) for v in per_class_iou(confusion.matrix)],
      "class_names": list(source.class_names),
      "mVC_convention": consistency.vc_convention,
  }
  # A keyframe method's keyframes and other frames, each kind where it had a labelled pixel.
  results.update({name: miou_by_convention(matrix)[f"mIoU_{config.eval.miou_convention}"]
                  for name, matrix in by_kind.items() if matrix.sum()})
  results.update(consistency.summary())
  if temporal is not None:
    # How many videos TC scored: none (eval.tc_video_list's all beyond eval.max_videos) and
    # videos without a frame pair leave it n/a for different reasons (results.md says which).
    results.update(temporal.summary(), TC_pairs=temporal.pairs, TC_videos=tc_videos)
  return results


class _Shared:
  """What the prediction devices' threads share: the end time of every frame predicted (frames/s:
  DCFM's protocol predicts each frame once per pass), the count of the videos and frames done, the
  progress lines, a stop that one device's failure sets for the others, and the stop request.

  The progress line counts videos; where none has ended for `_FRAMES_LINE_S` (a long video: a
  footage clip, a single-video split), a line `<prefix>: N frames predicted` says the work goes
  on, every `_FRAMES_LINE_S` at most."""

  _FRAMES_LINE_S = 10.0

  def __init__(self, progress: Progress, stop_requested: Callable[[], bool] | None,
               frames_prefix: str):
    self.frame_ends: list[float] = []  # appended by every thread (a list append is atomic)
    self.failed = threading.Event()
    self.cut_short = False  # a share ended early on the stop request
    self.videos_done = 0
    self.frames_done = 0  # each video's frames once, whatever its passes
    self._stop_requested = stop_requested
    self._progress = progress
    self._frames_prefix = frames_prefix
    self._quiet_since = time.perf_counter()  # the last progress line or video done
    self._lock = threading.Lock()

  def frame_predicted(self, now: float) -> None:
    """A frame's turn of the loop ended at `now` (`time.perf_counter()`)."""
    self.frame_ends.append(now)
    if now - self._quiet_since >= self._FRAMES_LINE_S and self._progress.enabled:
      with self._lock:
        if now - self._quiet_since >= self._FRAMES_LINE_S:
          self._quiet_since = now
          print(f"{self._frames_prefix}: {len(self.frame_ends)} frames predicted, "
                f"{self.videos_done}/{self._progress.total} videos done", flush=True)

  def go_on(self) -> bool:
    """Whether a share predicts its next video: no other share failed, and no stop requested."""
    if self.failed.is_set():
      return False
    if self._stop_requested is not None and self._stop_requested():
      self.cut_short = True
      return False
    return True

  def video_done(self, num_frames: int) -> None:
    with self._lock:
      self.videos_done += 1
      self.frames_done += num_frames
      self._quiet_since = time.perf_counter()
      self._progress.update(self.videos_done, force=self.videos_done == self._progress.total)


def _evaluate_share(method: Method, variables: Variables, videos: list, scorers: Scorers,
                    split: str, decode_ahead: bool, compile_ahead: bool, shared: _Shared,
                    write_overlay) -> tuple[float | None, epath.Path | None]:
  """Predicts and scores `videos` one after another on the device that holds `variables`, with
  `compile_ahead` each new frame size's programs compiled ahead in a thread (`CompileAhead`).

  Returns when its programs were compiled: when its first video was fully scored (a keyframe
  method's several programs, first used at different frames, all compiled by then) or, with one
  video, when its first frame ended (None without a frame); and the overlay `write_overlay` (if
  given) wrote of its first video. Stops before its next video once another device's share has
  failed or a stop was requested.
  """
  first_scored, overlay_path, first_frame_end = None, None, []

  def frame_predicted(now: float) -> None:
    shared.frame_predicted(now)
    if not first_frame_end:
      first_frame_end.append(now)
  warm_up = functools.partial(_predict_black_video, method, variables,
                              scorers.confusion.num_classes)
  with _OneVideoBehind() as scoring, CompileAhead(videos, warm_up, compile_ahead) as ahead:
    for index, video in enumerate(videos):
      if not shared.go_on():
        break
      ahead.wait_for(index)
      if index == 1:
        # The first video compiled the predictor's programs (a keyframe method has several, first
        # used at different frames): throughput is timed from the second video on, once the first
        # is fully scored.
        scoring.wait()
        first_scored = time.perf_counter()
      for predictor in _shot_predictors(method, variables, video):
        try:
          frames, labels, predictions = _predict_video(predictor, video, scorers.confusion,
                                                       frame_predicted, decode_ahead)
        except Exception as e:
          e.add_note(f"while evaluating video {video.name} of split {split!r}")
          raise
        scoring.submit(_score_video, scorers, split, video.name, frames, labels, predictions,
                       predictor.shots(), predictor.keyframes())
      if index == 0 and write_overlay is not None:
        overlay_path = write_overlay(video.name, frames, predictions, labels)
      shared.video_done(len(frames))
    scoring.wait()
  return (first_scored if first_scored is not None else next(iter(first_frame_end), None),
          overlay_path)


def _timed_span(frame_ends: list[float], compiled: list[float | None], started: float
                ) -> tuple[int, float]:
  """(frames, seconds) that frames/s counts: from the moment the last device had its programs
  compiled (`compiled`, `_evaluate_share`'s; None for a device without a frame) on. Timed from
  the first device's instead, a device that compiled for longer (its one video's first frame)
  had its compile counted: 2.88 frames/s, then 88 on the next run. Where no frame came after
  it (one frame in all), from `started` on, the compile included."""
  times = [moment for moment in compiled if moment is not None]
  timed_from = max(times, default=started)
  timed = sum(end > timed_from for end in frame_ends)
  if not timed:
    timed_from, timed = started, len(frame_ends)
  return timed, time.perf_counter() - timed_from


def _score_video(scorers: Scorers, split: str, name: str, frames, labels, predictions,
                 shots, keyframes: list[int] | None) -> None:
  """Whole-video scoring: mVC/VEC of each shot and, with TC on (for this video), its TC pairs;
  of a keyframe method (`keyframes`, the predictor's), each labelled frame by its kind."""
  if keyframes is not None:
    keyframes = set(keyframes)
    for t, label in enumerate(labels):
      if label is not None:  # checked by `confusion` as the frame was scored
        kind = scorers.keyframes if t in keyframes else scorers.non_key
        kind.update(label, predictions[t])
  for shot in shots:  # each a video of its own (`ShotPredictor`): mostly one, the whole video
    try:
      if all(labels[t] is not None for t in shot):  # each frame checked by `confusion`
        scorers.consistency.add_video(np.stack([labels[t] for t in shot]),
                                      np.stack([predictions[t] for t in shot]), checked=True)
    except ValueError as e:
      raise DataError(f"video {_shot_name(name, shot, len(frames))}", str(e)) from e
    if scorers.scores_tc(name):
      _add_temporal_pairs(scorers.temporal, scorers.flow_provider, f"{split}/{name}", frames,
                          predictions, shot)


def _predict_black_video(method: Method, variables: Variables, num_classes: int, video,
                         frame: np.ndarray) -> None:
  """`CompileAhead`'s warm-up: black frames of `frame`'s shape (`method.warm_up_frames`, at most
  the video's) through `video`'s predictors, as `_predict_video` pushes the video."""
  black = np.zeros_like(frame)
  frames = [("", black)] * min(video.num_frames, method.warm_up_frames)
  for predictor in _shot_predictors(method, variables, video):
    for _ in stream_predictions(predictor, frames, num_classes):
      pass


def _shot_predictors(method: Method, variables: Variables, video) -> list[ShotPredictor]:
  """`method.video_predictors` of `video`, each taking the video shot by shot: at a change of
  frame size (a footage folder of stills) the protocol's predictor starts afresh, as at a new
  video, as `--mode=infer` predicts such a folder. The first one says so, once for the video."""

  def new_predictor(k: int):
    return lambda: method.video_predictors(variables, video.protocol_index)[k]

  return [ShotPredictor(predictor, new_predictor(k), None if k else f"eval: video {video.name}")
          for k, predictor in enumerate(method.video_predictors(variables, video.protocol_index))]


def _shot_name(video: str, shot: range, num_frames: int) -> str:
  """The video's name, or where it holds several shots (`ShotPredictor`), the shot's."""
  return video if len(shot) == num_frames else f"{video} (its frames {shot.start}-{shot.stop - 1})"


def _add_temporal_pairs(temporal: TemporalConsistency, flow_provider: FlowProvider, video_key: str,
                        frames: list[np.ndarray], predictions: list[np.ndarray],
                        shot: range | None = None) -> None:
  """Scores every consecutive pair of one video (or of its frames `shot`) for TC, warping
  prediction i+1 onto frame i.

  Flows are cached under `<split>/<video>/<i+1>-<i>` (i counted from the video's first frame), so
  every predictor of a video (and, with `eval.tc_flow.cache_dir`, every later evaluation)
  computes each flow once.
  """
  shot = range(len(frames)) if shot is None else shot

  def flow(i: int) -> np.ndarray:
    t = shot.start + i
    return flow_provider(frames[t + 1], frames[t], key=f"{video_key}/{t + 1}-{t}")

  try:
    temporal.add_video([predictions[t] for t in shot], flow)
  except ValueError as e:  # The message starts with the frame pair, counted in the shot.
    raise DataError(f"video {_shot_name(video_key, shot, len(frames))}", str(e)) from e


def _write_overlay(workdir, video_name, frames, predictions, labels, fps, palette) -> epath.Path:
  """Writes the overlay under a provisional name, `.<token>.overlay_<video>.mp4`, which the
  evaluation takes as its own once complete: a cut-short one leaves the last one's
  `overlay_<video>.mp4` in place. The token is this evaluation's own: another one in the same
  workdir (`--mode=eval` while training evaluates) writes, renames and removes its own file."""
  path = epath.Path(workdir) / f".{uuid.uuid4().hex}.overlay_{video_name}.mp4"
  pictures = (visualize.side_by_side(f, p, palette, g)
              for f, p, g in zip(frames, predictions, labels))
  return visualize.write_video(path, pictures, fps)
