"""The evaluator: every frame of every video through the method's streaming predictor.

Metrics are accumulated per video on the host (confusion matrix for mIoU/wIoU/accuracy, window
statistics for mVC_n/VEC_n and, with `eval.temporal_consistency`, ETC's flow-warped TC), merged
across processes, and written as JSON + Markdown. With several processes each evaluates a
disjoint shard of the videos.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from data_pipelines.lists import read_list
from data_pipelines.loader import eval_videos
from data_pipelines.dataset import make_source
from data_pipelines.sources.base import DataError
from vssjax import visualize
from vssjax.configs_lib import ConfigDict
from vssjax.eval import report
from vssjax.flow import FlowProvider
from vssjax.methods.base import Method, StreamingPredictor, Variables
from vssjax.metrics.confusion import (ConfusionMatrix, fwiou, miou_mmseg, miou_vspw, per_class_iou,
                                     pixel_accuracy)
from vssjax.metrics.consistency import VideoConsistency
from vssjax.metrics.temporal_consistency import TemporalConsistency
from vssjax.progress import Progress


def _merge_across_processes(accumulator):
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


def _predict_video(predictor: StreamingPredictor, video, confusion: ConfusionMatrix,
                   timer: list[float]):
  """Runs one video through a fresh predictor, scoring each labelled frame into `confusion`;
  returns frames, labels and predictions in order.

  The predictions of a push are fetched and scored after the next push is dispatched, so the
  device predicts frame t+1 while the host reads it, fetches frame t and scores it. `timer` gets
  each frame's share of the wall time (reading, predicting, fetching, scoring).
  """
  frames, labels, predictions = [], [], {}

  def fetch_and_score(ready):
    for frame_id, prediction in ready:
      predictions[frame_id] = prediction = np.asarray(prediction)
      if labels[frame_id] is None:
        continue
      try:
        confusion.update(labels[frame_id], prediction)
      except ValueError as e:
        raise DataError(f"video {video.name} frame {frame_id}: {e}") from e

  pending = []
  last = time.perf_counter()
  for frame, label in video:
    frames.append(frame)
    labels.append(label)
    ready = predictor.push(frame)
    fetch_and_score(pending)
    pending = ready
    now = time.perf_counter()
    timer.append(now - last)
    last = now
  fetch_and_score(pending + predictor.flush())
  timer[-1] += time.perf_counter() - last
  if sorted(predictions) != list(range(len(frames))):
    raise RuntimeError(
        f"{type(predictor).__name__} returned frames {sorted(predictions)} for video {video.name} "
        f"of {len(frames)} frames")
  return frames, labels, [predictions[i] for i in range(len(frames))]


def evaluate(method: Method, variables: Variables, config: ConfigDict, *, workdir: str | None,
             step: int = 0, split: str | None = None) -> dict[str, Any]:
  """Evaluates on `split` (default `config.data.eval_split`); writes results into `workdir`."""
  split = split or config.data.eval_split
  num_classes = config.data.num_classes
  confusion = ConfusionMatrix(num_classes)
  consistency = VideoConsistency(
      num_classes, windows=tuple(config.eval.windows), vec_quirks=config.eval.vec_quirks)
  temporal = (TemporalConsistency(num_classes, config.eval.tc_warp)
              if config.eval.temporal_consistency else None)
  tc_videos = (set(read_list(config.eval.tc_video_list)) if config.eval.tc_video_list else None)
  flow_provider = (FlowProvider(config.eval.tc_flow.method, config.eval.tc_flow.cache_dir)
                   if temporal is not None else None)
  videos = list(eval_videos(config.data, split, jax.process_index(), jax.process_count()))
  if config.eval.max_videos:
    videos = videos[: config.eval.max_videos]
  progress = Progress(f"eval[{split}] video", len(videos), "videos")
  frame_times: list[float] = []
  warmup_frames = 0
  overlay_path = None
  for index, video in enumerate(videos):
    for predictor in method.video_predictors(variables, video.index):
      frames, labels, predictions = _predict_video(predictor, video, confusion, frame_times)
      if all(label is not None for label in labels):
        consistency.add_video(np.stack(labels), np.stack(predictions))
      if temporal is not None and (tc_videos is None or video.name in tc_videos):
        _add_temporal_pairs(temporal, flow_provider, f"{split}/{video.name}", frames, predictions)
    if index == 0:
      warmup_frames = len(frame_times)
    if index == 0 and workdir and config.eval.overlay_video and jax.process_index() == 0:
      overlay_path = _write_overlay(workdir, video.name, frames, predictions, labels,
                                    config.eval.overlay_fps, make_source(config.data).palette)
    progress.update(index + 1, force=index + 1 == len(videos))

  confusion = _merge_across_processes(confusion)
  consistency = _merge_across_processes(consistency)
  if temporal is not None:
    temporal = _merge_across_processes(temporal)
  # The first video compiles the predictor's programs (a keyframe method has several, first used
  # at different frames); it is left out of the throughput when there are others.
  timed = frame_times[warmup_frames:] if len(videos) > 1 else frame_times[1:] or frame_times
  num_videos, num_frames = _sum_across_processes([len(videos), len(frame_times)])
  results: dict[str, Any] = {
      "step": int(step),
      "split": split,
      "num_videos": num_videos,
      "num_frames": num_frames,
      "mIoU": miou_vspw(confusion.matrix),
      "mIoU_mmseg": miou_mmseg(confusion.matrix),
      "wIoU": fwiou(confusion.matrix),
      "pixel_acc": pixel_accuracy(confusion.matrix),
      "frames_per_s": len(timed) / max(sum(timed), 1e-9),
      "per_class_iou": [None if np.isnan(v) else float(v) for v in per_class_iou(confusion.matrix)],
  }
  results.update(consistency.summary())
  if temporal is not None:
    results.update(temporal.summary())
  if overlay_path is not None:
    results["overlay_video"] = str(overlay_path)
  if workdir and jax.process_index() == 0:
    _, md_path, table = report.write_results(workdir, results, config.published)
    print(f"\nResults ({split}, step {step}) -> {md_path}\n{table}\n", flush=True)
  logging.info("eval results: %s", {k: v for k, v in results.items() if k != "per_class_iou"})
  return results


def _add_temporal_pairs(temporal: TemporalConsistency, flow_provider: FlowProvider, video_key: str,
                        frames: list[np.ndarray], predictions: list[np.ndarray]) -> None:
  """Scores every consecutive pair of one video for TC, warping prediction i+1 onto frame i.

  Flows are cached under `<split>/<video>/<i+1>-<i>`, so every predictor of a video (and, with
  `eval.tc_flow.cache_dir`, every later evaluation) computes each flow once.
  """
  for i in range(len(frames) - 1):
    flow = flow_provider(frames[i + 1], frames[i], key=f"{video_key}/{i + 1}-{i}")
    try:
      temporal.add_pair(predictions[i], predictions[i + 1], flow)
    except ValueError as e:
      raise DataError(f"video {video_key} frames {i}-{i + 1}: {e}") from e


def _write_overlay(workdir, video_name, frames, predictions, labels, fps, palette) -> epath.Path:
  path = epath.Path(workdir) / f"overlay_{video_name}.mp4"
  return visualize.write_video(
      path, (visualize.side_by_side(f, p, palette, g) for f, p, g in zip(frames, predictions, labels)),
      fps)
