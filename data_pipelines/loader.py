"""Grain loaders: per-process batches of augmented clips for training, whole videos for eval.

Training batches follow the project's batch contract (DESIGN.md "The data flow" item 4):
frames uint8 [B,T,H,W,3] (not normalised), labels int32 [B,T,H,W] (255 = ignore), labeled bool
[B,T]. The Grain sampler shards videos over processes, shuffles, repeats forever and derives one
RNG per sample from (seed, sample index), so a restored iterator state replays exactly.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grain
import ml_collections
import numpy as np
from absl import logging

from data_pipelines import clip_sampling, dataset, transforms
from data_pipelines.sources.base import DataError

_MAX_BAD_DRAWS = 100  # With skip_bad_samples: give up when this many draws in a row are bad.


class ClipMap(grain.transforms.RandomMap):
  """video index -> one augmented training clip; bad samples raise, or are skipped and counted.

  A skipped sample is replaced by a video drawn from the sample's own RNG, so the replacement is
  deterministic too. `num_skipped` counts skips in this process (each Grain worker has its own);
  every skip is logged with the file it failed on.
  """

  def __init__(self, videos: dataset.VideoDataset, sampler: clip_sampling.ClipSampler,
               transform_cfg: ml_collections.ConfigDict, skip_bad_samples: bool):
    self._videos = videos
    self._sampler = sampler
    self._transform_cfg = transform_cfg
    self._skip_bad_samples = skip_bad_samples
    self.num_skipped = 0

  def _clip(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    frame_indices = self._sampler.train_indices(self._videos.num_frames(index), rng)
    clip = self._videos.load(index, frame_indices)
    clip["frames"], clip["labels"] = transforms.train_transform(
        clip["frames"], clip["labels"], self._transform_cfg, rng)
    return clip

  def random_map(self, element: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    index = int(element)
    for _ in range(_MAX_BAD_DRAWS):
      try:
        return self._clip(index, rng)
      except DataError as e:
        if not self._skip_bad_samples:
          raise
        self.num_skipped += 1
        logging.warning("Skipped bad sample (%d so far in this process): %s", self.num_skipped, e)
        index = int(rng.integers(len(self._videos)))
    raise DataError("training data", f"{_MAX_BAD_DRAWS} bad samples in a row; last video drawn: "
                    f"{self._videos.name(index)}")


def per_process_batch_size(batch_size: int, shard_count: int) -> int:
  if batch_size % shard_count:
    raise ValueError(f"data.batch_size={batch_size} is not divisible by the {shard_count} "
                     f"data shards (processes)")
  return batch_size // shard_count


def make_train_loader(data_cfg: ml_collections.ConfigDict, sampler: clip_sampling.ClipSampler, *,
                      seed: int, shard_options: grain.sharding.ShardOptions | None = None
                      ) -> grain.DataLoader:
  """An infinite, shuffled, sharded, checkpointable loader of per-process clip batches.

  Args:
    data_cfg: the `data` config (source, backend, train_split, batch_size (global), num_workers,
      skip_bad_samples, train_transform).
    sampler: turns a video's length into a clip's frame indices.
    seed: shuffling and augmentation seed (non-negative 32-bit).
    shard_options: which shard of the videos this process reads; default: by JAX process.
  """
  shard_options = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
  batch = per_process_batch_size(data_cfg.batch_size, shard_options.shard_count)
  videos = dataset.make_dataset(data_cfg, data_cfg.train_split)
  index_sampler = grain.samplers.IndexSampler(
      num_records=len(videos), shard_options=shard_options, shuffle=True, num_epochs=None,
      seed=seed)
  clip_map = ClipMap(videos, sampler, data_cfg.train_transform, data_cfg.skip_bad_samples)
  return grain.DataLoader(
      data_source=grain.sources.RangeDataSource(0, len(videos), 1),
      sampler=index_sampler,
      operations=[clip_map, grain.transforms.Batch(batch, drop_remainder=True)],
      worker_count=data_cfg.num_workers)


@dataclasses.dataclass(frozen=True)
class EvalVideo:
  """One evaluation video; iterating it decodes its (frame, label-or-None) pairs in order."""
  name: str
  num_frames: int
  _videos: dataset.VideoDataset
  _index: int

  def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    return self._videos.iter_video(self._index)


def eval_videos(data_cfg: ml_collections.ConfigDict, split: str, shard_index: int = 0,
                shard_count: int = 1) -> Iterator[EvalVideo]:
  """This shard's videos of `split` (every shard_count-th one, so shards stay balanced)."""
  videos = dataset.make_dataset(data_cfg, split)
  for index in range(shard_index, len(videos), shard_count):
    yield EvalVideo(videos.name(index), videos.num_frames(index), videos, index)
