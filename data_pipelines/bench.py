r"""Training-loader throughput: clips/s and frames/s of a config's Grain train loader.

  python -m data_pipelines.bench --config=configs/segformer/synthetic_mitb0.py \
      [--batches=20] [--workers=0,1,2] [--config.data.batch_size=8 ...]

Builds the loader exactly as training does (source, backend, clip sampler, transforms, flow,
workers), discards `--warmup` batches (worker start-up, first decode) and times the next
`--batches` for each worker count. Nothing runs on an accelerator.
"""
from __future__ import annotations

import time

import grain
from absl import app, flags
from ml_collections import config_flags

from data_pipelines import clip_sampling, loader
from vssjax.command_line import (numbers_flag, parse_config_flags, quiet_routine_logs,
                                 refuse_arguments, user_errors_in_one_line)


def measure(data_cfg, sampler: clip_sampling.ClipSampler, num_workers: int, batches: int,
            warmup: int) -> dict[str, float]:
  """Seconds, clips/s and frames/s over `batches` batches after `warmup` untimed ones."""
  data_cfg = data_cfg.copy_and_resolve_references()
  data_cfg.num_workers = num_workers
  iterator = iter(loader.make_train_loader(
      data_cfg, sampler, seed=0, shard_options=grain.sharding.ShardOptions(0, 1)))
  for _ in range(warmup):
    next(iterator)
  started = time.perf_counter()
  clips = frames = 0
  for _ in range(batches):
    # Only the shape is kept: with workers a batch is in shared memory, and one that outlives the
    # iterator is unlinked too late (Python then warns of "leaked shared_memory objects" at exit).
    batch_clips, clip_frames = next(iterator)["frames"].shape[:2]
    clips += batch_clips
    frames += batch_clips * clip_frames
  seconds = time.perf_counter() - started
  return dict(seconds=seconds, clips_per_s=clips / seconds, frames_per_s=frames / seconds)


def _cli() -> None:
  """The command line. Its flags are defined only when run as a program, so that importing this
  module (the tests, next to vssjax.main's own --config) defines none."""
  config_flag = config_flags.DEFINE_config_file("config", None, "Config file[:arg].",
                                                lock_config=True)
  batches = flags.DEFINE_integer("batches", 20, "Timed batches per worker count.")
  warmup = flags.DEFINE_integer("warmup", 2, "Untimed batches first.")
  workers_flag = flags.DEFINE_list("workers", None,
                                   "Grain worker counts to try (default: the config's).")
  flags.mark_flags_as_required(["config"])

  @user_errors_in_one_line
  def main(argv):
    refuse_arguments(argv)
    quiet_routine_logs()
    config = config_flag.value
    sampler = clip_sampling.make_clip_sampler(config.clip)
    workers = (numbers_flag("workers", workers_flag.value, int) if workers_flag.value
               else [config.data.num_workers])
    crop = tuple(config.data.train_transform.crop_size)
    print(f"bench: source {config.data.source} ({config.data.backend}), batch "
          f"{config.data.batch_size} clips x {clip_sampling.clip_length(config.clip)} frames at "
          f"{crop[0]}x{crop[1]}, {batches.value} batches after {warmup.value} warm-up", flush=True)
    for count in workers:
      result = measure(config.data, sampler, count, batches.value, warmup.value)
      print(f"bench: workers {count}: {result['clips_per_s']:.2f} clips/s  "
            f"{result['frames_per_s']:.2f} frames/s  ({result['seconds']:.1f} s)", flush=True)

  app.run(main, flags_parser=parse_config_flags)


if __name__ == "__main__":
  _cli()
