"""Tests for clip samplers, including DTERN's test-time rules for the first frames."""
import ml_collections
import numpy as np
import pytest

from data_pipelines import clip_sampling
from tests.data_pipelines.helpers import ScriptedRng
from vssjax import configs_lib
from vssjax.errors import SetupError

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


@pytest.mark.parametrize("offsets, frames", [((-9, -6, -3, 0), 4), ((-9, -6, -3, -1, 0), 1),
                                             ((-2, -1, 0), 1), ((0,), 1)])
def test_the_first_frames_bring_up_every_eval_clip_length(offsets, frames):
  """DTERN's first three clips are the frame alone, the later ones of 4 frames; clipped clips
  always have one frame per offset (a frame repeats at a video's start)."""
  sampler = clip_sampling.OffsetClipSampler(offsets)
  assert sampler.frames_to_every_eval_clip_length() == frames
  lengths = [len(sampler.eval_indices(t + 1, t)) for t in range(30)]
  assert set(lengths[:frames]) == set(lengths)


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
  with pytest.raises(SetupError, match="end with the target offset 0"):
    clip_sampling.OffsetClipSampler((0, -3))
  with pytest.raises(SetupError, match="unknown clip sampler kind"):
    clip_sampling.make_clip_sampler(ml_collections.ConfigDict(dict(kind="triples")))


@pytest.mark.parametrize("clip, message", [
    (dict(kind="pair", offsets=(-1, 1), reverse_prob=0.5),
     r"^clip.reverse_prob=0.5: only clip.kind='offsets' reverses clips, and clip.kind is 'pair'"),
    (dict(kind="single", offsets=(0,), reverse_prob=0.5),
     r"^clip.reverse_prob=0.5: .* clip.kind is 'single': leave it at 0.0$"),
    (dict(kind="single", offsets=(-9, -6, -3, 0), reverse_prob=0.0),
     r"^clip.offsets=\(-9, -6, -3, 0\): clip.kind='single' takes the target frame alone"),
])
def test_a_setting_the_kind_ignores_is_refused(clip, message):
  """Both were ignored without a word: a 'pair' run set to reverse clips trained on unreversed
  ones, a 'single' run given a clip's offsets trained on single frames."""
  with pytest.raises(SetupError, match=message):
    clip_sampling.make_clip_sampler(ml_collections.ConfigDict(clip))


def test_the_default_clip_settings_pass_for_every_kind():
  """The base config's offsets (0,) and reverse_prob 0.0 are what 'single' takes, and 'pair' and
  'offsets' configs set their own offsets over them."""
  clip = configs_lib.base_config().clip
  assert isinstance(clip_sampling.make_clip_sampler(clip), clip_sampling.SingleFrameSampler)
  clip.update(kind="pair", offsets=(-1, 1))
  assert isinstance(clip_sampling.make_clip_sampler(clip), clip_sampling.PairSampler)


@pytest.mark.parametrize("window", [(1,), (1, -1), (1, 1, 1), (0.5, 1)])
def test_a_label_window_that_is_not_before_and_after_is_refused(window):
  """(1,) was a TypeError from `labeled_window` once evaluation began, after training."""
  assert clip_sampling.check_label_window([1, 0]) == (1, 0)
  assert clip_sampling.check_label_window(()) == ()
  with pytest.raises(SetupError, match=r"data.eval_label_window=.*: \(before, after\)"):
    clip_sampling.check_label_window(window)


def test_sparse_labels_make_the_labelled_frame_the_target():
  dtern = clip_sampling.OffsetClipSampler((-9, -6, -3, 0), reverse_prob=0.5)
  rng = np.random.default_rng(0)
  clips = {tuple(dtern.train_indices(30, rng, [19])) for _ in range(100)}
  assert clips == {(10, 13, 16, 19), (28, 25, 22, 19)}  # Cityscapes: -9.. or, reversed, +9..
  single = clip_sampling.SingleFrameSampler()
  assert {single.train_indices(30, rng, [4, 19])[0] for _ in range(100)} == {4, 19}
  with pytest.raises(ValueError, match="no labelled frame"):
    single.train_indices(30, rng, [])



def test_sparse_labels_without_reversal_take_past_frames():
  """DTERN's clip of a labelled frame looks back (-9, -6, -3) unless reversed: with reverse_prob 0
  every clip must be past frames, as at test time; mirrored offsets would train on future ones."""
  forward = clip_sampling.OffsetClipSampler((-9, -6, -3, 0), reverse_prob=0.0)
  rng = np.random.default_rng(0)
  for _ in range(20):
    assert forward.train_indices(30, rng, [15]) == [6, 9, 12, 15]
  backward = clip_sampling.OffsetClipSampler((-9, -6, -3, 0), reverse_prob=1.0)
  assert backward.train_indices(30, rng, [15]) == [24, 21, 18, 15]


@pytest.mark.parametrize("offsets", [(1,), (-1, 1), clip_sampling.ETC_PARTNER_OFFSETS])
def test_pair_partners_are_clamped_inside_the_video(offsets):
  """A partner past either end is clamped onto the video's first or last frame (VSPW's rule): one
  index past the end would fail the sample (an IndexError loading the clip) at the last frames."""
  sampler = clip_sampling.PairSampler(offsets)
  num_frames = 10
  for t in range(num_frames):
    for k, offset in enumerate(offsets):
      for labeled in (None, [t]):  # the target drawn, or the labelled frame
        draws = (t, k) if labeled is None else (0, k)
        partner, target = sampler.train_indices(num_frames, ScriptedRng(*draws), labeled)
        assert target == t and 0 <= partner < num_frames, (t, offset)
        assert partner == min(max(t + offset, 0), num_frames - 1), (t, offset)
  assert clip_sampling.PairSampler((1,)).train_indices(num_frames, ScriptedRng(0, 0), [9]) == [9, 9]

def test_dcfm_pairs():
  assert clip_sampling.dcfm_partner_offsets(1) == (-1, 1)
  assert clip_sampling.dcfm_partner_offsets(2) == (-2, -1, 1, 2)
  sampler = clip_sampling.make_clip_sampler(ml_collections.ConfigDict(dict(kind="pair",
                                                                           offsets=(-1, 1))))
  rng = np.random.default_rng(0)
  pairs = [sampler.train_indices(10, rng) for _ in range(2000)]
  assert all(abs(u - t) == 1 or (u == t and t in (0, 9)) for u, t in pairs)  # VSPW clamps.
  assert {t for _, t in pairs} == set(range(10))
  assert 0.45 < np.mean([u > t for u, t in pairs if 0 < t < 9]) < 0.55
  assert sampler.train_indices(30, rng, [19])[1] == 19
  assert sampler.eval_indices(10, 4) == [4]


def test_etc_partners_are_uniform_over_the_five_offsets():
  sampler = clip_sampling.PairSampler(clip_sampling.ETC_PARTNER_OFFSETS)
  rng = np.random.default_rng(0)
  offsets = [u - t for u, t in (sampler.train_indices(30, rng, [19]) for _ in range(5000))]
  values, counts = np.unique(offsets, return_counts=True)
  assert values.tolist() == [-2, -1, 1, 2, 3]
  assert (np.abs(counts / 5000 - 0.2) < 0.02).all()
  with pytest.raises(ValueError, match="non-zero"):
    clip_sampling.PairSampler((0, 1))


def test_dcfm_keyframe_placement():
  # VSPW (1 pass, K = 2): st rotates across videos; P mode keeps 0.
  assert [clip_sampling.dcfm_first_keyframe(v, 0, 2) for v in range(4)] == [0, 1, 0, 1]
  assert [clip_sampling.dcfm_first_keyframe(v, 0, 2, rotate=False) for v in range(3)] == [0] * 3
  # Cityscapes/CamVid (2 passes): every 3-frame clip is seen with st = 0, then st = 1.
  assert [clip_sampling.dcfm_first_keyframe(v, p, 2, passes=2)
          for v in range(2) for p in range(2)] == [0, 1, 0, 1]
  assert clip_sampling.labeled_window(30, 19, 1, 1) == [18, 19, 20]
  assert clip_sampling.labeled_window(30, 19, 19, 10) == list(range(30))
  assert clip_sampling.labeled_window(5, 0, 1, 1) == [0, 1]


def test_clip_length():
  make = lambda **kw: ml_collections.ConfigDict(kw)  # noqa: E731
  assert clip_sampling.clip_length(make(kind="single", offsets=(0,))) == 1
  assert clip_sampling.clip_length(make(kind="pair", offsets=(3, 2, 1, -1, -2))) == 2
  assert clip_sampling.clip_length(DTERN) == 4


@pytest.mark.parametrize("sampler", [
    clip_sampling.SingleFrameSampler(), clip_sampling.OffsetClipSampler((-9, -6, -3, 0)),
    clip_sampling.PairSampler((3, 2, 1, -1, -2))])
def test_frames_per_clip_count_what_the_indices_hold(sampler):
  """What the loaders check a split against (one-frame videos cannot serve a longer clip)."""
  rng = np.random.default_rng(0)
  assert len(sampler.train_indices(30, rng)) == sampler.frames_per_clip
  assert len(sampler.eval_indices(30, 20)) == sampler.eval_frames_per_clip
