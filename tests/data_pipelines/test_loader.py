"""Tests for the Grain train loader (batches, checkpointing, sharding, bad samples, worker
processes) and eval."""
import dataclasses
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from data_pipelines import clip_sampling, dataset, eval_transforms, loader
from data_pipelines.sources import base
from tests.conftest import REPO
from tests.data_pipelines import helpers
from vssjax.errors import DataError, SetupError
from vssjax.flow import FlowProvider

CLIP3 = clip_sampling.OffsetClipSampler((-2, -1, 0), reverse_prob=0.5)
ONE_SHARD = grain.sharding.ShardOptions(0, 1)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_batches_follow_the_contract(tmp_path):
  cfg = helpers.data_config(tmp_path, backend="arrayrecord")
  batch = next(iter(loader.make_train_loader(cfg, CLIP3, seed=0, shard_options=ONE_SHARD)))
  assert set(batch) == {"frames", "labels", "labeled"}
  assert batch["frames"].shape == (4, 3, 24, 24, 3) and batch["frames"].dtype == np.uint8
  assert batch["labels"].shape == (4, 3, 24, 24) and batch["labels"].dtype == np.int32
  assert batch["labeled"].shape == (4, 3) and batch["labeled"].dtype == np.bool_
  assert set(np.unique(batch["labels"])) <= set(range(9)) | {255}


def test_worker_processes_give_the_same_batches_and_ignore_ctrl_c_and_sigterm(tmp_path):
  """Two Grain workers build what the training process builds alone, and neither a Ctrl-C, which
  a terminal sends to every process of the group, nor a SIGTERM, which a scheduler sends to every
  process of the job, kills them: the training process decides when to stop
  (`vssjax.train.preemption`), and may need batches beyond those buffered until then."""
  cfg = helpers.data_config(tmp_path, backend="arrayrecord")
  expected = _take(iter(loader.make_train_loader(cfg, CLIP3, seed=5, shard_options=ONE_SHARD)), 4)
  cfg.num_workers = 2
  iterator = iter(loader.make_train_loader(cfg, CLIP3, seed=5, shard_options=ONE_SHARD))
  batches = _take(iterator, 2)  # one from each worker (round robin): both are set up
  workers = multiprocessing.active_children()
  assert len(workers) == 2
  for worker in workers:
    os.kill(worker.pid, signal.SIGINT)
    os.kill(worker.pid, signal.SIGTERM)
  batches += _take(iterator, 2)
  for worker in workers:  # a worker that a signal killed has ended within the second
    worker.join(timeout=1.0)
  assert all(worker.is_alive() for worker in workers)
  for got, want in zip(batches, expected, strict=True):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


_KILLED_TRAINER = """
import multiprocessing, os, signal, sys
from data_pipelines import loader
from tests.data_pipelines import helpers
from tests.data_pipelines.test_loader import CLIP3, ONE_SHARD
cfg = helpers.data_config(sys.argv[1], backend="arrayrecord", num_workers=2)
iterator = iter(loader.make_train_loader(cfg, CLIP3, seed=5, shard_options=ONE_SHARD))
next(iterator), next(iterator)  # both workers set up
print("workers", *[worker.pid for worker in multiprocessing.active_children()], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _ended(pid: int) -> bool:
  """Whether process `pid` is gone or a zombie (ended, waiting for its new parent to reap it)."""
  try:
    with open(f"/proc/{pid}/stat") as stat:
      return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
  except FileNotFoundError:
    return True


def test_worker_processes_end_with_a_killed_training_process(tmp_path):
  """A training process killed outright (kill -9, the out-of-memory killer) cannot stop its
  workers, which ignore Ctrl-C and SIGTERM: they end themselves when it is gone, rather than run
  on holding the terminal's pipe and shared memory."""
  output = tmp_path / "output.txt"  # a file: workers left running would hold a pipe open
  with output.open("w") as stdout:
    trainer = subprocess.run([sys.executable, "-c", _KILLED_TRAINER, str(tmp_path)],
                             stdout=stdout, stderr=subprocess.STDOUT, cwd=REPO, timeout=120,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert trainer.returncode == -signal.SIGKILL, output.read_text()
  said = [line.split()[1:] for line in output.read_text().splitlines()
          if line.startswith("workers")]
  workers = [int(pid) for pid in said[0]]
  assert len(workers) == 2
  deadline = time.monotonic() + 10
  while not all(_ended(pid) for pid in workers) and time.monotonic() < deadline:
    time.sleep(0.1)
  left = [pid for pid in workers if not _ended(pid)]
  for pid in left:  # not left running past the test
    os.kill(pid, signal.SIGKILL)
  assert not left


@pytest.mark.parametrize("workers", [0, 2])
def test_checkpoint_round_trip_replays_batches(tmp_path, workers):
  """A restored iterator goes on with the batches the saved one would have given next, with
  worker processes too (their positions are in the checkpoint), and those are the batches of the
  in-process stream."""
  cfg = helpers.data_config(tmp_path, backend="arrayrecord", num_workers=workers)
  iterator = iter(loader.make_train_loader(cfg, CLIP3, seed=7, shard_options=ONE_SHARD))
  _take(iterator, 3)  # with 2 workers, an odd count: the next batch is the second worker's
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  manager.save(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = _take(iterator, 3)
  restored_iter = iter(loader.make_train_loader(cfg, CLIP3, seed=7, shard_options=ONE_SHARD))
  manager.restore(3, args=ocp.args.Composite(
      data_iter=grain.checkpoint.CheckpointRestore(restored_iter)))
  manager.close()
  cfg.num_workers = 0
  in_process = _take(iter(loader.make_train_loader(cfg, CLIP3, seed=7, shard_options=ONE_SHARD)),
                     6)[3:]
  for want, got, alone in zip(expected, _take(restored_iter, 3), in_process, strict=True):
    for key in want:
      np.testing.assert_array_equal(want[key], got[key])
      np.testing.assert_array_equal(want[key], alone[key])


def _constant_cfg(tmp_path, **overrides):
  """Videos whose pixels equal their index, and transforms that keep pixel values."""
  cfg = helpers.data_config(tmp_path, source="test_constant", **overrides)
  cfg.test_constant = dict(num_videos=8, num_frames=12, size=16)
  cfg.train_transform.update(scale=(16, 16), ratio_range=(1.0, 1.0), crop_size=(16, 16),
                             cat_max_ratio=1.0, flip_prob=0.5, photometric=False)
  return cfg


def test_two_processes_read_disjoint_halves_of_each_epoch(tmp_path):
  cfg = _constant_cfg(tmp_path)  # 8 videos, global batch 4 -> 2 per process, 2 batches/epoch.
  seen = []
  for index in (0, 1):
    shard = grain.sharding.ShardOptions(index, 2, drop_remainder=True)
    batches = _take(iter(loader.make_train_loader(cfg, CLIP3, seed=0, shard_options=shard)), 2)
    assert batches[0]["frames"].shape[0] == 2
    seen.append([int(b["frames"][i, 0, 0, 0, 0]) for b in batches for i in range(2)])
  assert len(set(seen[0])) == len(set(seen[1])) == 4
  assert not set(seen[0]) & set(seen[1])
  assert set(seen[0]) | set(seen[1]) == set(range(8))


def test_same_seed_same_batches_other_seed_other_batches(tmp_path):
  cfg = helpers.data_config(tmp_path)
  first = [next(iter(loader.make_train_loader(cfg, CLIP3, seed=s, shard_options=ONE_SHARD)))
           for s in (1, 1, 2)]
  np.testing.assert_array_equal(first[0]["frames"], first[1]["frames"])
  assert not np.array_equal(first[0]["frames"], first[2]["frames"])


def test_batch_size_must_divide_over_processes(tmp_path):
  cfg = helpers.data_config(tmp_path, batch_size=5)
  with pytest.raises(SetupError, match="data.batch_size=5 is not divisible by the 2 processes"):
    loader.make_train_loader(cfg, CLIP3, seed=0,
                             shard_options=grain.sharding.ShardOptions(0, 2))


def _folder_cfg(tmp_path, skip):
  cfg = helpers.data_config(tmp_path, source="test_folder", backend="files",
                            skip_bad_samples=skip, batch_size=2)
  root = helpers.write_folder(tmp_path / "videos", num_videos=3)
  cfg.test_folder = dict(root=root)
  for t in range(6):  # Video 1 is unreadable whichever clip is drawn.
    (tmp_path / "videos" / "synthetic_train_00001" / f"{t:04d}.png").write_bytes(b"bad")
  return cfg


def test_bad_sample_raises_naming_the_file(tmp_path):
  cfg = _folder_cfg(tmp_path, skip=False)
  iterator = iter(loader.make_train_loader(cfg, CLIP3, seed=0, shard_options=ONE_SHARD))
  with pytest.raises(base.DataError,
                     match=r"synthetic_train_00001/000\d\.png: cannot decode image"):
    _take(iterator, 3)


def test_bad_samples_are_skipped_deterministically_and_counted(tmp_path, caplog):
  cfg = _folder_cfg(tmp_path, skip=True)
  videos = dataset.make_dataset(cfg, "train")
  clip_map = loader.ClipMap(videos, CLIP3, cfg.train_transform, skip_bad_samples=True)
  clips = [clip_map.random_map(1, np.random.default_rng(5)) for _ in range(2)]
  assert clip_map.num_skipped >= 2
  np.testing.assert_array_equal(clips[0]["frames"], clips[1]["frames"])
  with caplog.at_level(logging.WARNING):
    batches = _take(iter(loader.make_train_loader(cfg, CLIP3, seed=0, shard_options=ONE_SHARD)),
                    3)
  assert len(batches) == 3
  assert "Skipped bad sample (1 so far in this process)" in caplog.text
  assert "synthetic_train_00001/000" in caplog.text


def test_too_many_bad_samples_in_a_row_name_the_last_bad_file(tmp_path):
  cfg = _folder_cfg(tmp_path, skip=True)
  for frame in (tmp_path / "videos").glob("*/*.png"):  # now every video is unreadable
    frame.write_bytes(b"bad")
  clip_map = loader.ClipMap(dataset.make_dataset(cfg, "train"), CLIP3, cfg.train_transform,
                            skip_bad_samples=True)
  with pytest.raises(base.DataError, match=r"bad samples in a row; the last: "
                     r"\S*synthetic_train_0000\d/000\d\.png: cannot decode image") as raised:
    clip_map.random_map(1, np.random.default_rng(0))
  assert isinstance(raised.value.__cause__, base.DataError)


def test_sample_rngs_are_distinct_across_seeds_and_keep_seed_0s_streams():
  draw = lambda rng: rng.integers(0, 2**31, 8)
  for position in (0, 7, 2**40):
    np.testing.assert_array_equal(  # seed 0: the key the loader always used
        draw(loader.sample_rng(0, position)),
        draw(np.random.Generator(np.random.Philox(key=position))))
    assert not np.array_equal(draw(loader.sample_rng(1, position)),
                              draw(loader.sample_rng(0, position + 1)))


def test_eval_videos_shards_and_pairs(tmp_path):
  cfg = helpers.data_config(tmp_path, synthetic=dict(helpers.TINY, num_val_videos=5))
  shards = [list(loader.eval_videos(cfg, "val", i, 2)) for i in (0, 1)]
  names = [[v.name for v in shard] for shard in shards]
  assert len(names[0]) == 3 and len(names[1]) == 2
  assert set(names[0]) | set(names[1]) == {f"synthetic_val_{i:05d}" for i in range(5)}
  video = shards[1][0]
  pairs = list(video)
  assert video.num_frames == len(pairs) == 6
  frame, label = pairs[0]
  assert frame.shape == (32, 32, 3) and label.shape == (32, 32) and label.dtype == np.int32
  # max_videos: the split's first N videos, shared by the shards (not N per shard).
  limited = [[v.name for v in loader.eval_videos(cfg, "val", i, 2, max_videos=3)] for i in (0, 1)]
  assert limited == [["synthetic_val_00000", "synthetic_val_00002"], ["synthetic_val_00001"]]


def test_eval_videos_cut_a_window_around_each_labelled_frame(tmp_path):
  """`data.eval_label_window = (before, after)` (DCFM's (1, 1), SD-CPC's (9, 0)): one video per
  labelled frame a, of the frames [a - before, a + after] that the video has, in order."""
  cfg = helpers.data_config(tmp_path)
  cfg.eval_label_window = (2, 1)
  windows = list(loader.eval_videos(cfg, "val", max_videos=1))
  assert [v.name for v in windows] == [f"synthetic_val_00000@{a}" for a in range(6)]
  assert [v.frame_indices for v in windows] == [
      (0, 1), (0, 1, 2), (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5)]
  whole = dataset.make_dataset(cfg, "val")
  np.testing.assert_array_equal([frame for frame, _ in windows[3]],
                                [frame for frame, _ in whole.iter_video(0, [1, 2, 3, 4])])


def test_each_window_is_a_video_of_the_protocol_counted_across_shards(tmp_path):
  """DCFM's first keyframe rotates per evaluated "video", and a label window is one (specs/dcfm.md
  §3.1: each 3-frame clip): windows of one stored video count apart, in the split's order whatever
  the shard. Whole videos count one each. (They took the stored video's index: every window of a
  fully labelled video got the same keyframe phases.)"""
  cfg = helpers.data_config(tmp_path, synthetic=dict(helpers.TINY, num_val_videos=3))
  assert [v.protocol_index for v in loader.eval_videos(cfg, "val")] == [0, 1, 2]
  cfg.eval_label_window = (1, 1)  # 6 labelled frames per video: 6 windows each
  shards = [list(loader.eval_videos(cfg, "val", i, 2)) for i in (0, 1)]
  indices = {v.name: v.protocol_index for shard in shards for v in shard}
  assert [indices[f"synthetic_val_{i:05d}@{a}"] for i in range(3) for a in range(6)] == list(
      range(18))
  assert [v.protocol_index for v in shards[1]] == list(range(6, 12))
  # A video kept whole (temporal consistency scores it) takes its first window's step and counts
  # as its windows: the videos after it rotate as with it cut (they were 6 steps early).
  kept = list(loader.eval_videos(cfg, "val", keep_whole=lambda name: name.endswith("1")))
  assert [(v.name, v.protocol_index) for v in kept[5:8]] == [
      ("synthetic_val_00000@5", 5), ("synthetic_val_00001", 6), ("synthetic_val_00002@0", 12)]


def test_eval_label_windows_score_only_their_labelled_frame(tmp_path):
  """DCFM's and SD-CPC's windowed protocols score the annotated frame a of each window alone
  (specs/dcfm.md §3.1: the clip holds GT for a only). Where the stored video labels the
  neighbours too (a fully labelled set, VSPW's), each labelled frame
  must still be scored once, in its own window, not again in every window it falls in."""
  cfg = helpers.data_config(tmp_path)
  whole = dataset.make_dataset(cfg, "val")
  assert whole.labeled_indices(0) == list(range(6))  # every frame labelled
  labels = [label for _, label in whole.iter_video(0)]
  cfg.eval_label_window = (1, 1)
  windows = list(loader.eval_videos(cfg, "val", max_videos=1))
  assert len(windows) == 6
  for a, window in enumerate(windows):
    pairs = list(window)
    assert len(pairs) == len(window.frame_indices)
    scored = [t for t, (_, label) in zip(window.frame_indices, pairs) if label is not None]
    assert scored == [a]
    np.testing.assert_array_equal(pairs[window.frame_indices.index(a)][1], labels[a])


def test_eval_videos_resize_frames_and_labels_to_an_exact_size(tmp_path):
  """`eval_transform.exact_size` (DCFM's VSPW protocol): frames and labels of every eval video come
  at exactly (h, w), whatever the stored aspect ratio; the labels by nearest neighbour."""
  cfg = helpers.data_config(tmp_path)
  [(frame, label)] = [next(iter(v)) for v in loader.eval_videos(cfg, "val", max_videos=1)]
  cfg.eval_transform.exact_size = (20, 48)
  [(resized, resized_label)] = [next(iter(v)) for v in loader.eval_videos(cfg, "val", max_videos=1)]
  assert frame.shape == (32, 32, 3) and resized.shape == (20, 48, 3)
  assert resized_label.shape == (20, 48) and resized_label.dtype == np.int32
  np.testing.assert_array_equal(resized_label,
                                eval_transforms.resize_exact(frame, label, (20, 48))[1])
  assert set(np.unique(resized_label)) <= set(np.unique(label))


def test_flow_batches_and_sparse_targets(tmp_path):
  cfg = helpers.data_config(tmp_path, batch_size=2)
  cfg.flow = dict(method="farneback", cache_dir="")
  batch = next(iter(loader.make_train_loader(cfg, CLIP3, seed=0, shard_options=ONE_SHARD)))
  assert batch["flow"].shape == (2, 2, 24, 24, 2) and batch["flow"].dtype == np.float32
  source = helpers.ConstantSource(num_videos=1, num_frames=6, size=8)
  video = source.videos("train")[0]
  frames = tuple(f if t == 4 else base.FrameRef(f.frame_id, f.image) for t, f in
                 enumerate(video.frames))
  videos = dataset.VideoDataset([base.VideoRecord("v", frames)], source, labels_mapped=False)
  clip_map = loader.ClipMap(videos, clip_sampling.PairSampler((1, -1)), cfg.train_transform, False)
  for seed in range(5):
    clip = clip_map.random_map(0, np.random.default_rng(seed))
    assert clip["labeled"].tolist() == [False, True]  # The labelled frame is the target.



def test_batch_flow_is_flow_from_each_clip_frame_to_the_next(tmp_path):
  """`flow[:, i]` is FlowProvider's flow(frame i, frame i+1), the `vssjax.flow` convention ETC's
  temporal loss warps with; computed from the frames swapped it would point the other way and
  warp each frame away from the next one."""
  cfg = helpers.data_config(tmp_path, batch_size=2)
  cfg.train_transform.update(scale=(32, 32), ratio_range=(1.0, 1.0), crop_size=(32, 32),
                             cat_max_ratio=1.0, flip_prob=0.0, photometric=False)  # identity
  cfg.flow = dict(method="farneback", cache_dir="")
  batch = next(iter(loader.make_train_loader(cfg, CLIP3, seed=0, shard_options=ONE_SHARD)))
  provider = FlowProvider("farneback")
  for b in range(2):
    for i in range(2):
      frame, following = batch["frames"][b, i], batch["frames"][b, i + 1]
      want = provider(frame, following)
      np.testing.assert_allclose(batch["flow"][b, i], want, atol=1e-5)
      assert np.abs(provider(following, frame) - want).max() > 0.5  # the camera pans


def _indexed_video(num_frames: int, size: int = 16) -> dataset.VideoDataset:
  """One fully labelled video whose frame t has every pixel equal to t."""
  source = helpers.ConstantSource(num_videos=1, num_frames=num_frames, size=size)
  frames = tuple(base.FrameRef(f.frame_id, np.full((size, size, 3), t, np.uint8), f.label)
                 for t, f in enumerate(source.videos("train")[0].frames))
  return dataset.VideoDataset([base.VideoRecord("v", frames)], source, labels_mapped=False)


def test_a_fully_labelled_video_gets_the_samplers_own_targets(tmp_path):
  """A fully labelled video (VSPW) is not sparsely labelled: DTERN's clips target frames 9 on, so
  their four frames are distinct past frames. Drawn as if sparse, targets 0-8 would give clips of
  frame 0 repeated (clamped), which DTERN never trains on."""
  cfg = _constant_cfg(tmp_path)
  videos = _indexed_video(12)
  assert videos.labeled_indices(0) == list(range(12))
  offsets = clip_sampling.DTERN_OFFSETS
  clip_map = loader.ClipMap(videos, clip_sampling.OffsetClipSampler(offsets), cfg.train_transform,
                            False)
  for seed in range(30):
    clip = clip_map.random_map(0, np.random.default_rng(seed))
    indices = clip["frames"][:, 0, 0, 0].tolist()
    assert indices[-1] >= 9 and indices == [indices[-1] + o for o in offsets], indices
    assert clip["labeled"].all()

def test_a_training_video_without_labels_is_a_bad_sample_named(tmp_path):
  cfg = helpers.data_config(tmp_path)
  source = helpers.ConstantSource(num_videos=1, num_frames=3, size=8)
  frames = tuple(base.FrameRef(f.frame_id, f.image) for f in source.videos("train")[0].frames)
  videos = dataset.VideoDataset([base.VideoRecord("unlabelled", frames)], source,
                                labels_mapped=False)
  clip_map = loader.ClipMap(videos, CLIP3, cfg.train_transform, False)
  with pytest.raises(base.DataError, match="video unlabelled: has no labelled frame to train on"):
    clip_map.random_map(0, np.random.default_rng(0))


def test_global_batches_do_not_depend_on_the_process_count(tmp_path):
  cfg = helpers.data_config(tmp_path)
  whole = _take(iter(loader.make_train_loader(cfg, CLIP3, seed=3, shard_options=ONE_SHARD)), 2)
  halves = [_take(iter(loader.make_train_loader(
      cfg, CLIP3, seed=3, shard_options=grain.sharding.ShardOptions(i, 2, drop_remainder=True))), 2)
            for i in (0, 1)]
  for step, batch in enumerate(whole):
    for key in batch:  # process 0 builds the first half of every global batch, process 1 the rest
      np.testing.assert_array_equal(
          batch[key], np.concatenate([halves[0][step][key], halves[1][step][key]]))


def _sparse_videos():
  """Three constant videos of 6 frames; video 1 has labels on frames 2 and 5 only."""
  source = helpers.ConstantSource(num_videos=3, num_frames=6, size=8)
  records = source.videos("train")
  sparse = tuple(f if t in (2, 5) else base.FrameRef(f.frame_id, f.image)
                 for t, f in enumerate(records[1].frames))
  records[1] = base.VideoRecord(records[1].name, sparse)
  return dataset.VideoDataset(records, source, labels_mapped=False)


def test_epoch_items_are_videos_or_labelled_frames():
  videos = _sparse_videos()
  items, targets = loader.epoch_items(videos, "videos", "constant train")
  assert items.tolist() == [0, 1, 2] and targets is None
  items, targets = loader.epoch_items(videos, "frames", "constant train")
  assert list(zip(items.tolist(), targets.tolist())) == (
      [(0, t) for t in range(6)] + [(1, 2), (1, 5)] + [(2, t) for t in range(6)])
  with pytest.raises(ValueError, match="'videos' or 'frames'"):
    loader.epoch_items(videos, "clips", "constant train")


def test_the_epoch_description_tells_other_items_apart_and_ignores_where_they_are_stored():
  """What a resumed iterator position is checked against (`epoch_description`)."""
  source = helpers.ConstantSource(num_videos=3, num_frames=6, size=8)

  def described(records, unit="videos"):
    videos = dataset.VideoDataset(records, source, labels_mapped=False)
    return loader.epoch_description(videos, loader.epoch_items(videos, unit, "c train"))

  records = source.videos("train")
  assert described(records).startswith("3 videos, digest ")
  assert described(records, "frames").startswith("18 labelled frames of 3 videos, digest ")
  assert described(list(source.videos("train"))) == described(records)  # the same names
  assert described(records[:2]).startswith("2 videos, digest ")
  renamed = [dataclasses.replace(video, name=f"{video.name}x") for video in records]
  assert described(renamed) != described(records)
  sparse = [dataclasses.replace(records[0], frames=records[0].frames[:5]), *records[1:]]
  assert described(sparse, "frames").startswith("17 labelled frames of 3 videos")
  assert described(records[::-1]) != described(records)  # the order is the items'


def test_a_frames_epoch_of_a_split_without_labels_is_a_data_error_naming_it():
  """One line from the commands (`DataError`), as every other data mistake."""
  source = helpers.ConstantSource(num_videos=2, num_frames=3, size=8)
  unlabelled = [base.VideoRecord(video.name, tuple(base.FrameRef(f.frame_id, f.image)
                                                   for f in video.frames))
                for video in source.videos("train")]
  videos = dataset.VideoDataset(unlabelled, source, labels_mapped=False)
  assert loader.epoch_items(videos, "videos", "constant train")[0].tolist() == [0, 1]
  with pytest.raises(DataError, match=r"^constant train: no video has a labelled frame, and "
                     r"data\.train_epoch='frames'"):
    loader.epoch_items(videos, "frames", "constant train")


def test_frames_epoch_reads_no_record_with_the_video_index(tmp_path, monkeypatch):
  cfg = helpers.data_config(tmp_path, backend="arrayrecord")
  dataset.make_dataset(cfg, "train")  # Builds the records and their index.
  sources = helpers.count_record_reads(monkeypatch)
  videos = dataset.make_dataset(cfg, "train")
  items, targets = loader.epoch_items(videos, "frames", "synthetic train")
  assert sources[-1].reads == 0
  assert items.tolist() == np.repeat(np.arange(8), 6).tolist()
  assert targets.tolist() == list(range(6)) * 8


class _RecordingClipMap:
  """Stands in for ClipMap: a 'clip' is the (video, target) it was asked for."""

  def random_map(self, element, rng, target=None):
    del rng
    return {"item": np.array([element, -1 if target is None else target])}


def test_frames_epoch_visits_every_labelled_frame_once_as_target():
  # 14 (video, frame) items
  items = loader.epoch_items(_sparse_videos(), "frames", "constant train")
  batch_map = loader._LocalBatchMap(_RecordingClipMap(), items, 2, ONE_SHARD, seed=0)
  epochs = [[tuple(row) for k in range(7 * e, 7 * e + 7) for row in batch_map.map(k)["item"]]
            for e in (0, 1)]
  for seen in epochs:
    assert sorted(seen) == sorted(zip(*(a.tolist() for a in items)))
  assert epochs[0] != epochs[1]  # A fresh order every epoch.


def test_clip_map_trains_on_the_given_target(tmp_path):
  cfg = helpers.data_config(tmp_path)
  cfg.train_transform.update(scale=(32, 32), ratio_range=(1.0, 1.0), crop_size=(32, 32),
                             cat_max_ratio=1.0, flip_prob=0.0, photometric=False)
  videos = dataset.make_dataset(cfg, "train")
  clip_map = loader.ClipMap(videos, clip_sampling.PairSampler((1, -1)), cfg.train_transform, False)
  assert not np.array_equal(videos.load(2, [0])["frames"], videos.load(2, [5])["frames"])
  for target in (0, 3, 5):
    clip = clip_map.random_map(2, np.random.default_rng(target), target)
    np.testing.assert_array_equal(clip["frames"][-1], videos.load(2, [target])["frames"][0])


def test_loader_reads_train_epoch(tmp_path):
  sampler = clip_sampling.PairSampler((1, -1))
  batch = next(iter(loader.make_train_loader(helpers.data_config(tmp_path, train_epoch="frames"),
                                             sampler, seed=0, shard_options=ONE_SHARD)))
  assert batch["frames"].shape == (4, 2, 24, 24, 3)
  with pytest.raises(SetupError, match="data.train_epoch must be"):
    loader.make_train_loader(helpers.data_config(tmp_path, train_epoch="clips"), sampler, seed=0,
                             shard_options=ONE_SHARD)


def test_the_loader_refuses_settings_it_cannot_load_with_before_reading_anything(tmp_path):
  """A negative worker count was Grain's ValueError traceback; a zero crop, one from a worker."""
  sampler = clip_sampling.PairSampler((1, -1))
  with pytest.raises(SetupError, match=r"data.num_workers=-1: 0 \(load in this process\)"):
    loader.make_train_loader(helpers.data_config(tmp_path, num_workers=-1), sampler, seed=0)
  config = helpers.data_config(tmp_path)
  config.train_transform.crop_size = (0, 24)
  with pytest.raises(SetupError, match=r"data.train_transform.crop_size=\(0, 24\)"):
    loader.make_train_loader(config, sampler, seed=0)


# The loader's refusal, on Cityscapes and CamVid copies without their sequences.
@pytest.mark.parametrize("source, missing", [("cityscapes", "leftImg8bit_sequence/"),
                                             ("camvid", "frames/")])
def test_one_frame_videos_serve_per_frame_methods_and_refuse_clips(tmp_path, source, missing):
  """Without the sequences (Cityscapes) or the 30 fps frames (CamVid) a DCFM pair or DTERN clip
  would repeat the annotated frame (or take CamVid's labelled frames 1 s apart as neighbours) and
  train or score a temporal method without time, silently: the loaders refuse, naming what is
  missing. Each labelled frame is a video: a per-frame method trains on each equally often."""
  cfg = helpers.data_config(tmp_path / "tfds", source=source, backend="files",
                            train_split="train", eval_split="train", eval_label_window=(0, 0))
  if source == "cityscapes":
    cfg.cityscapes = dict(root=helpers.write_cityscapes_without_sequences(tmp_path / "cs"))
  else:
    cfg.camvid = dict(root=helpers.write_camvid(tmp_path / "cv", with_frames=False))
  one = grain.sharding.ShardOptions(0, 1)
  batch = next(iter(loader.make_train_loader(cfg, clip_sampling.SingleFrameSampler(), seed=0,
                                             shard_options=one)))
  assert batch["frames"].shape[1] == 1 and batch["labeled"].all()
  assert [video.num_frames for video in loader.eval_videos(cfg, "train")] == [1] * (
      2 if source == "cityscapes" else 3)
  with pytest.raises(base.DataError, match=rf"{source} train: every video is a single frame, "
                     rf"but the config's training clips take 2 frames.*{missing}"):
    loader.make_train_loader(cfg, clip_sampling.PairSampler((-1, 1)), seed=0, shard_options=one)
  with pytest.raises(base.DataError, match=r"evaluated clips or windows .* take 4 frames"):
    list(loader.eval_videos(cfg, "train", clip_frames=4))  # DTERN's clip of an evaluated frame
  cfg.eval_label_window = (1, 1)
  with pytest.raises(base.DataError, match=r"evaluated clips or windows \(data.eval_label_window\) "
                                           r"take 3 frames"):
    list(loader.eval_videos(cfg, "train"))


def test_a_bad_file_read_by_a_worker_process_reaches_the_trainer_as_its_data_error(tmp_path):
  """A worker sends the error to the trainer pickled: `DataError` (two arguments) did not unpickle
  there, and the run ended on a TypeError traceback instead of the line naming the file."""
  root = helpers.write_vspw(tmp_path / "vspw")
  bad = os.path.join(root, "data", "vid_a", "mask", "00000001.png")
  with open(bad, "wb") as f:
    f.write(b"not a png")
  cfg = helpers.data_config(tmp_path, source="vspw", vspw=dict(root=root), num_classes=124,
                            num_workers=2)
  with pytest.raises(DataError, match=f"^{bad}: cannot decode label image"):
    _take(iter(loader.make_train_loader(cfg, CLIP3, seed=0, shard_options=ONE_SHARD)), 4)
