"""Tests for clip samplers, including DTERN's test-time rules for the first frames."""
import ml_collections
import numpy as np
import pytest

from data_pipelines import clip_sampling

DTERN = ml_collections.ConfigDict(dict(kind="offsets", offsets=(-9, -6, -3, 0), reverse_prob=0.5))


def test_single_frame():
  sampler = clip_sampling.make_clip_sampler(ml_collections.ConfigDict(dict(kind="single")))
  rng = np.random.default_rng(0)
  draws = {sampler.train_indices(5, rng)[0] for _ in range(200)}
  assert draws == {0, 1, 2, 3, 4}
  assert sampler.eval_indices(5, 3) == [3]
  with pytest.raises(IndexError):
    sampler.eval_indices(5, 5)


def test_dtern_eval_rules_from_the_spec():
  sampler = clip_sampling.make_clip_sampler(DTERN)
  expected = {0: [0], 1: [1], 2: [2], 3: [0, 1, 2, 3], 4: [0, 2, 3, 4], 5: [0, 2, 4, 5],
              6: [0, 2, 4, 6], 7: [0, 3, 5, 7], 8: [0, 3, 6, 8], 9: [0, 3, 6, 9],
              10: [1, 4, 7, 10], 19: [10, 13, 16, 19]}
  for t, clip in expected.items():
    assert sampler.eval_indices(20, t) == clip, t


def test_dtern_train_without_reversal():
  sampler = clip_sampling.OffsetClipSampler((-9, -6, -3, 0), reverse_prob=0.0)
  rng = np.random.default_rng(0)
  targets = set()
  for _ in range(500):
    clip = sampler.train_indices(14, rng)
    assert clip == [clip[-1] - 9, clip[-1] - 6, clip[-1] - 3, clip[-1]]
    targets.add(clip[-1])
  assert targets == set(range(9, 14))  # Uniform over [9, L-1].


def test_dtern_train_reversal_makes_references_future_frames():
  always = clip_sampling.OffsetClipSampler((-9, -6, -3, 0), reverse_prob=1.0)
  clip = always.train_indices(14, np.random.default_rng(0))
  t = clip[-1]
  assert clip == [t + 9, t + 6, t + 3, t] and 0 <= t <= 4
  half = clip_sampling.make_clip_sampler(DTERN)
  rng = np.random.default_rng(1)
  reversed_share = np.mean([clip[0] > clip[-1] for clip in (half.train_indices(30, rng)
                                                           for _ in range(2000))])
  assert 0.45 < reversed_share < 0.55


def test_short_videos_are_clipped_into_range():
  sampler = clip_sampling.OffsetClipSampler((-9, -6, -3, 0))
  rng = np.random.default_rng(0)
  for _ in range(50):
    clip = sampler.train_indices(5, rng)
    assert all(0 <= i < 5 for i in clip) and len(clip) == 4
  forward = clip_sampling.OffsetClipSampler((2, 0))  # ETC-style partner t+2, then target t.
  assert forward.eval_indices(4, 3) == [3, 3]
  assert forward.eval_indices(4, 1) == [3, 1]


def test_config_errors():
  with pytest.raises(ValueError, match="end with the target offset 0"):
    clip_sampling.OffsetClipSampler((0, -3))
  with pytest.raises(ValueError, match="unknown clip sampler kind"):
    clip_sampling.make_clip_sampler(ml_collections.ConfigDict(dict(kind="pairs")))
