"""The Grain training loader (per-process batches of augmented clips) and `eval_videos`, the
evaluation's videos in order (a plain generator over `VideoDataset`: no shuffling or batching).

Training batches follow the project's batch contract (docs/design.md, "The data flow" item 5):
frames uint8 [B,T,H,W,3] (not normalised), labels int32 [B,T,H,W] (255 = ignore), labeled bool
[B,T], and with `data.flow.method` set, flow float32 [B,T-1,H,W,2] between consecutive clip frames
(`vssjax.flow` convention), computed on the original frames and moved through the augmentation.
The Grain sampler shards batch numbers over processes and `_LocalBatchMap` turns each into its
clips: videos (or, with `data.train_epoch='frames'`, labelled frames) shuffled per epoch, forever,
and one RNG per sample from (seed, sample index), so a restored iterator state replays exactly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator

import grain
import ml_collections
import numpy as np
from absl import logging

from data_pipelines import clip_sampling, dataset, eval_transforms, transforms
from data_pipelines.sources.base import DataError
from vssjax import parallel
from vssjax.errors import SetupError
from vssjax.flow import FlowProvider

_MAX_BAD_DRAWS = 100  # With skip_bad_samples: give up when this many draws in a row are bad.


class ClipMap:
  """video index (and optionally its target frame) -> one augmented training clip; bad samples
  raise, or are skipped and counted. `_LocalBatchMap` (Grain's one operation) calls it per sample
  with that sample's own RNG (`sample_rng`), not Grain's.

  A skipped sample is replaced by a video drawn from the sample's own RNG, whose target the
  sampler picks, so the replacement is deterministic too. `num_skipped` counts skips in this
  process (each Grain worker has its own); every skip is logged with the file it failed on.
  """

  def __init__(self, videos: dataset.VideoDataset, sampler: clip_sampling.ClipSampler,
               transform_cfg: ml_collections.ConfigDict, skip_bad_samples: bool,
               flow: FlowProvider | None = None):
    self._videos = videos
    self._sampler = sampler
    self._transform_cfg = transform_cfg
    self._skip_bad_samples = skip_bad_samples
    self._flow = flow
    self.num_skipped = 0

  def _clip(self, index: int, target: int | None, rng: np.random.Generator
            ) -> dict[str, np.ndarray]:
    num_frames = self._videos.num_frames(index)
    if target is None:
      labeled = self._videos.labeled_indices(index)
      if not labeled:
        raise DataError(f"video {self._videos.name(index)}", "has no labelled frame to train on")
      targets = labeled if len(labeled) < num_frames else None  # Fully labelled: sampler's rule.
    else:
      targets = [target]  # Treated as the video's only labelled frame.
    frame_indices = self._sampler.train_indices(num_frames, rng, targets)
    clip = self._videos.load(index, frame_indices)
    flow = self._clip_flow(index, frame_indices, clip["frames"]) if self._flow else None
    out = transforms.train_transform(transforms.Clip(clip["frames"], clip["labels"], flow),
                                     self._transform_cfg, rng)
    clip["frames"], clip["labels"] = out.frames, out.labels
    if self._flow:
      clip["flow"] = out.flow
    return clip

  def _clip_flow(self, index: int, frame_indices: list[int], frames: np.ndarray) -> np.ndarray:
    name = self._videos.name(index)
    return np.stack([
        self._flow(frames[i], frames[i + 1], f"{name}/{frame_indices[i]}-{frame_indices[i + 1]}")
        for i in range(len(frames) - 1)])

  def random_map(self, element: int, rng: np.random.Generator, target: int | None = None
                 ) -> dict[str, np.ndarray]:
    """The clip of video `element` whose target is `target` (None: the sampler draws it)."""
    index = int(element)
    for _ in range(_MAX_BAD_DRAWS):
      try:
        return self._clip(index, target, rng)
      except DataError as e:
        if not self._skip_bad_samples:
          raise
        self.num_skipped += 1
        logging.warning("Skipped bad sample (%d so far in this process): %s", self.num_skipped, e)
        last_error = e
        index, target = int(rng.integers(len(self._videos))), None
    raise DataError("training data", f"{_MAX_BAD_DRAWS} bad samples in a row; the last: "
                    f"{last_error}") from last_error


def sample_rng(seed: int, position: int) -> np.random.Generator:
  """The augmentation RNG of sample `position` of the stream of `seed`.

  Philox keyed by (seed, position) as one 128-bit integer: distinct for every pair (a key of
  seed + position would give seed s at position p+1 the draws of seed s+1 at p).
  """
  return np.random.Generator(np.random.Philox(key=(seed << 64) | position))


class _LocalBatchSampler:
  """Grain sampler over this process's batch numbers: index p + k*P (from Grain) -> batch k.

  Grain hands shard p the indices p, p+P, p+2P, ...; the k-th is this process's k-th batch. The
  records are batch numbers, not videos: `_LocalBatchMap` decides the videos, so that the global
  batch does not depend on how many processes share it.
  """

  def __init__(self, shard_options: grain.sharding.ShardOptions, epoch: str):
    self._shard_options = shard_options  # grain.DataLoader reads this attribute
    self._epoch = epoch  # `epoch_description`: in the repr that Grain checks at a restore

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    return grain.RecordMetadata(index=index, record_key=index // self._shard_options.shard_count)

  def __repr__(self) -> str:  # compared by Grain when restoring an iterator state
    return (f"_LocalBatchSampler(shard {self._shard_options.shard_index} of "
            f"{self._shard_options.shard_count}{_EPOCH}{self._epoch})")


_EPOCH = "; epoch of "  # before `epoch_description` in the sampler's repr


def sampler_epoch(sampler_repr: str) -> tuple[str | None, str]:
  """(the epoch that a training sampler's repr (Grain's record of it in an iterator state)
  carries, or None for one of a vssjax before the epoch's record; the repr without it)."""
  if _EPOCH not in sampler_repr:
    return None, sampler_repr
  rest, epoch = sampler_repr.split(_EPOCH, 1)
  return epoch[:-1], rest + ")"


def epoch_description(videos: dataset.VideoDataset, items: tuple[np.ndarray, np.ndarray | None]
                      ) -> str:
  """What a saved iterator position is a position in: the count of `epoch_items`' items and a
  digest of them and of the videos they draw clips from (each video's name, length and labelled
  frames, in the split's order).

  A restored position k reads item k of an epoch's permutation of these items, and its clip from
  that item's video: over other items (another `data.train_epoch`, videos added to the split or
  removed) or other videos it would replay no earlier order, repeating some clips and skipping
  others without a word. A moved `data.data_dir` over the same videos gives the same description.
  The sampler's repr carries it, so Grain refuses such a restore, which the training loop names
  (`restore_checkpoint`). Metadata only: 10 ms for a split of VSPW's size (2806 videos, 199,226
  labelled frames) held in memory."""
  item_videos, item_targets = items
  digest = hashlib.sha256()
  for index in range(len(videos)):
    digest.update(f"{videos.name(index)}\0{videos.num_frames(index)}\0".encode())
    digest.update(np.asarray(videos.labeled_indices(index), np.int64).tobytes())
  digest.update(np.asarray(item_videos, np.int64).tobytes())
  if item_targets is None:
    counted = f"{len(item_videos)} videos"
  else:
    digest.update(item_targets.astype(np.int64).tobytes())
    counted = f"{len(item_targets)} labelled frames of {len(videos)} videos"
  return f"{counted}, digest {digest.hexdigest()[:16]}"


def epoch_items(videos: dataset.VideoDataset, unit: str, split: str
                ) -> tuple[np.ndarray, np.ndarray | None]:
  """What one training epoch visits once each: (video index, target frame or None) as two arrays.

  'videos': every video, its target drawn by the clip sampler (mmseg's one clip per video visit).
  'frames': every labelled frame of every video as the target (DCFM's VSPW epoch, every frame
  once as x_L, specs/dcfm.md §4.1), so long videos weigh by their length. This asks every video
  for its labelled frames up front; with the ArrayRecord backend the split's video index answers
  without reading a record. `split` names the videos' split in a `DataError` (source and split:
  "vspw train").
  """
  if unit == "videos":
    return np.arange(len(videos)), None
  if unit != "frames":
    raise SetupError(f"data.train_epoch must be 'videos' or 'frames', got {unit!r}")
  labeled = [videos.labeled_indices(i) for i in range(len(videos))]
  if not any(labeled):
    raise DataError(split, "no video has a labelled frame, and data.train_epoch='frames' trains on "
                    "each labelled frame")
  return (np.repeat(np.arange(len(videos)), [len(frames) for frames in labeled]),
          np.concatenate([np.asarray(frames, np.int64) for frames in labeled]))


_watching_parent: list[threading.Thread] = []  # one watch per worker process


def _exit_with_parent(parent: multiprocessing.process.BaseProcess) -> None:
  """In a worker process: a daemon thread that waits for the parent process to end (the pipe
  `parent.join` waits on closes with it, however it ends) and then ends this process at once,
  as a worker left alone has nothing to do."""
  if _watching_parent:
    return

  def watch():
    parent.join()
    os._exit(1)

  _watching_parent.append(threading.Thread(target=watch, name="exit-with-parent", daemon=True))
  _watching_parent[0].start()


class _LocalBatchMap(grain.transforms.Map):
  """Batch number k -> this process's rows of global batch k, stacked.

  Global batch k holds positions [k*B, (k+1)*B) of one endless sample stream; process p of P builds
  rows [p*B/P, (p+1)*B/P). Position g uses item permutation_{g // N}[g % N] (a fresh permutation
  of the N epoch items per epoch: videos, or (video, target frame) pairs, `epoch_items`) and an
  augmentation RNG seeded by (seed, g). Nothing depends on the process or worker count, so one
  process or many train on identical batches (tested), and each epoch visits every item once,
  split disjointly over processes.
  """

  def __init__(self, clip_map: ClipMap, items: tuple[np.ndarray, np.ndarray | None],
               batch_size: int, shard_options: grain.sharding.ShardOptions, seed: int):
    self._clip_map = clip_map
    self._item_videos, self._item_targets = items
    self._batch_size = batch_size
    self._local = parallel.per_process_batch_size(batch_size, shard_options.shard_count)
    self._first_row = shard_options.shard_index * self._local
    self._seed = seed
    self._epoch_order: tuple[int, np.ndarray] | None = None

  def __setstate__(self, state: dict) -> None:
    """Unpickled in a Grain worker process (`data.num_workers` > 0): Ctrl-C and SIGTERM are
    ignored there.

    A terminal's Ctrl-C reaches every process of its group, and a scheduler's SIGTERM (SLURM's
    scancel or preemption) every process of the job. The training process stops cleanly at either
    (its steps up to the agreed stop step, a checkpoint, then exit), which ends the workers (Grain
    stops them, killing any left). A worker ended by the signal itself would print its
    KeyboardInterrupt traceback at Ctrl-C, and at SIGTERM leave the training process only its
    buffered batches, so that a stop step beyond them would fail with Grain's "Worker process was
    terminated unexpectedly" instead of checkpointing. Set here as Grain's DataLoader takes no
    worker initialiser, and a worker unpickles its operations first thing, in its main thread (a
    signal during its start-up, before that, still ends it).

    So a worker outlives no training process: one killed (kill -9, the out-of-memory killer) or
    ended by a signal outside its stop handler (a SIGTERM while it restores or evaluates) cannot
    stop its workers, which would run on, holding the terminal's pipe and shared memory. Each
    worker ends itself when its parent is gone (`_exit_with_parent`).
    """
    self.__dict__.update(state)
    parent = multiprocessing.parent_process()
    if parent is not None:
      signal.signal(signal.SIGINT, signal.SIG_IGN)
      signal.signal(signal.SIGTERM, signal.SIG_IGN)
      _exit_with_parent(parent)

  def _item_at(self, position: int) -> tuple[int, int | None]:
    """(video, target frame or None) of stream position `position`."""
    num_items = len(self._item_videos)
    epoch, offset = divmod(position, num_items)
    if self._epoch_order is None or self._epoch_order[0] != epoch:
      order = np.random.default_rng([self._seed, epoch]).permutation(num_items)
      self._epoch_order = (epoch, order)
    item = self._epoch_order[1][offset]
    target = None if self._item_targets is None else int(self._item_targets[item])
    return int(self._item_videos[item]), target

  def map(self, element: int) -> dict[str, np.ndarray]:
    start = int(element) * self._batch_size + self._first_row
    clips = []
    for position in range(start, start + self._local):
      rng = sample_rng(self._seed, position)
      video, target = self._item_at(position)
      clips.append(self._clip_map.random_map(video, rng, target))
    return {key: np.stack([clip[key] for clip in clips]) for key in clips[0]}


def _check_videos_hold_clips(videos: dataset.VideoDataset, frames: int, what: str,
                             data_cfg: ml_collections.ConfigDict, split: str) -> None:
  """Refuses a split whose every video is one frame when a clip (`what`) takes several: each clip
  would repeat that frame, and a temporal method would train or be scored without time, silently.
  It happens when a copy lacks the frames around the labelled ones (Cityscapes without
  leftImg8bit_sequence/, CamVid without frames/)."""
  if frames > 1 and len(videos) and all(videos.num_frames(i) == 1 for i in range(len(videos))):
    raise DataError(f"{data_cfg.source} {split}", (
        f"every video is a single frame, but the config's {what} take {frames} frames: the "
        f"frames around the labelled ones are missing from the copy (Cityscapes: "
        f"leftImg8bit_sequence/, CamVid: frames/; records built without them need a rebuild)"))


def flow_enabled(data_cfg: ml_collections.ConfigDict) -> bool:
  """Whether training batches carry optical flow between clip frames (`data.flow.method` set):
  asked by the loader that computes it and by `vssjax.train.loop.batch_spec`, which must agree."""
  return bool(data_cfg.flow.method)


def make_train_loader(data_cfg: ml_collections.ConfigDict, sampler: clip_sampling.ClipSampler, *,
                      seed: int, shard_options: grain.sharding.ShardOptions | None = None
                      ) -> grain.DataLoader:
  """An infinite, shuffled, sharded, checkpointable loader of per-process clip batches.

  Args:
    data_cfg: the `data` config (source, backend, train_split, batch_size (global), num_workers,
      skip_bad_samples, train_transform, flow=dict(method='dis'|'farneback'|'', cache_dir),
      train_epoch='videos'|'frames' (`epoch_items`)): `configs_lib.base_config`'s fields.
    sampler: turns a video's length into a clip's frame indices.
    seed: shuffling and augmentation seed (non-negative 32-bit).
    shard_options: which rows of each global batch this process builds; default: by JAX process.
  """
  shard_options = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
  transforms.check_train_transform(data_cfg.train_transform)
  if data_cfg.num_workers < 0:
    raise SetupError(f"data.num_workers={data_cfg.num_workers}: 0 (load in this process) or more "
                     "worker processes")
  videos = dataset.make_dataset(data_cfg, data_cfg.train_split)
  _check_videos_hold_clips(videos, sampler.frames_per_clip, "training clips", data_cfg,
                           data_cfg.train_split)
  flow = (FlowProvider(data_cfg.flow.method, data_cfg.flow.cache_dir)
          if flow_enabled(data_cfg) else None)
  clip_map = ClipMap(videos, sampler, data_cfg.train_transform, data_cfg.skip_bad_samples, flow)
  items = epoch_items(videos, data_cfg.train_epoch,
                      f"{data_cfg.source} {data_cfg.train_split}")
  batch_map = _LocalBatchMap(clip_map, items, data_cfg.batch_size, shard_options, seed)
  return grain.DataLoader(
      data_source=grain.sources.RangeDataSource(0, 2**62, 1),  # batch numbers, endless
      sampler=_LocalBatchSampler(shard_options, epoch_description(videos, items)),
      operations=[batch_map],
      worker_count=data_cfg.num_workers)


@dataclasses.dataclass(frozen=True)
class EvalVideo:
  """One evaluation video; iterating it decodes its (frame, label-or-None) pairs in order."""
  name: str
  num_frames: int
  _videos: dataset.VideoDataset
  index: int  # Position in the whole split (not in this shard).
  frame_indices: tuple[int, ...] | None = None  # A window of the stored video; None: all of it.
  exact_size: tuple[int, int] | None = None  # (h, w) every frame and label is resized to.
  # With a window: the stored frame whose label is scored (the window's labelled frame a); the
  # other frames come without labels even where the stored video labels them.
  scored_frame: int | None = None
  # Position among the split's evaluated videos and windows (each window counts, as each is a
  # "video" of DCFM's protocol, whose first keyframe rotates by it).
  protocol_index: int = 0

  def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    pairs = self._videos.iter_video(self.index, self.frame_indices)
    if self.scored_frame is not None:
      pairs = ((frame, label if t == self.scored_frame else None)
               for t, (frame, label) in zip(self.frame_indices, pairs))
    if self.exact_size is None:
      return pairs
    return (eval_transforms.resize_exact(frame, label, self.exact_size)
            for frame, label in pairs)


def split_video_names(data_cfg: ml_collections.ConfigDict, split: str) -> list[str]:
  """The names of every video of `split`, in its order: what a list of its videos (the evaluator's
  eval.tc_video_list) is checked against, whatever part of it one evaluation sees."""
  videos = dataset.make_dataset(data_cfg, split)
  return [videos.name(index) for index in range(len(videos))]


def eval_videos(data_cfg: ml_collections.ConfigDict, split: str, shard_index: int = 0,
                shard_count: int = 1, max_videos: int = 0, clip_frames: int = 1,
                keep_whole: Callable[[str], bool] = lambda name: False) -> Iterator[EvalVideo]:
  """This shard's videos of `split` (every shard_count-th one, so shards stay balanced); with
  `max_videos`, of the split's first `max_videos` only, whatever the number of shards.
  `clip_frames`: the frames a predicted frame's clip takes (DTERN: 4); a split of one-frame
  videos cannot serve it and is refused.

  With `data.eval_label_window = (before, after)` each video is cut to the frames
  [a - before, a + after] around its labelled frame a (DCFM evaluates Cityscapes and CamVid on
  [a-1, a, a+1]); a video with several labelled frames gives one window per label, and only a's
  label is scored in it: the protocols score the annotated frame alone (DCFM's clip holds GT for
  a only, specs/dcfm.md §3.1), so a labelled neighbour in the window (CamVid without its 30 fps
  `frames/`, a fully labelled set) must not be counted again at every window it falls in. A video
  whose name `keep_whole` accepts is evaluated whole all the same, each labelled frame scored once
  (the videos temporal consistency scores: it needs every consecutive pair).

  With `data.eval_transform.exact_size = (h, w)` every frame and label is resized to exactly that
  size as it is read (`eval_transforms.resize_exact`), so predictors see it as the frame and
  metrics are scored at it (DCFM's VSPW protocol); () keeps the stored size.
  """
  videos = dataset.make_dataset(data_cfg, split)
  window = clip_sampling.check_label_window(data_cfg.eval_label_window)
  _check_videos_hold_clips(videos, max(clip_frames, 1 + sum(window)),
                           "evaluated clips or windows (data.eval_label_window)", data_cfg, split)
  exact_size = tuple(data_cfg.eval_transform.exact_size) or None
  num_videos = min(len(videos), max_videos) if max_videos else len(videos)
  protocol_index = 0  # counted over every shard's videos: the split's order, whatever the shard
  for index in range(num_videos):
    name = videos.name(index)
    labeled = videos.labeled_indices(index) if window else []
    whole = not window or keep_whole(name)
    if index % shard_count == shard_index:
      num_frames = videos.num_frames(index)
      if whole:
        yield EvalVideo(name, num_frames, videos, index, exact_size=exact_size,
                        protocol_index=protocol_index)
      else:
        for k, a in enumerate(labeled):
          frames = tuple(clip_sampling.labeled_window(num_frames, a, *window))
          yield EvalVideo(f"{name}@{a}", len(frames), videos, index, frames, exact_size, a,
                          protocol_index + k)
    # A video kept whole counts as the windows it would have been, so the videos after it keep
    # their protocol steps whether or not it is kept whole (temporal consistency on or off).
    protocol_index += len(labeled) if window else 1
