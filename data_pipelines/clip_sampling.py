"""Clip samplers: (video length, target frame) -> the frame indices a method sees.

The last index of every clip is the target (the frame whose label trains or is evaluated); the
others are references. Train sampling is random; eval sampling is a pure function of the target,
including each method's rules for the first frames of a video where a full clip does not fit.
Sparsely labelled videos (Cityscapes, CamVid with video frames) pass `labeled_targets`, the indices
of their labelled frames, and the target is drawn from those.

Keyframe-based evaluation (DCFM) is not a clip: `dcfm_first_keyframe` says where a video's first
keyframe is (the predictor, `vssjax/methods/dcfm.py`, places the others), and `labeled_window`
cuts the short evaluation videos around a sparse label.
"""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence

import ml_collections
import numpy as np

from data_pipelines.transforms import whole_numbers_at_least
from vssjax.errors import SetupError

# DTERN's clip and its hand-written test-time clips for the first frames (specs/dtern.md §8):
# targets 0-2 are predicted from the single frame, 3-8 from these compressed clips.
DTERN_OFFSETS = (-9, -6, -3, 0)
# ETC's partner t - o, o ~ numpy randint(-3, 3) without 0 (high bound exclusive), specs/etc.md §2.
ETC_PARTNER_OFFSETS = (3, 2, 1, -1, -2)
_DTERN_FIRST_FRAMES = {
    0: [0], 1: [1], 2: [2], 3: [0, 1, 2, 3], 4: [0, 2, 3, 4], 5: [0, 2, 4, 5], 6: [0, 2, 4, 6],
    7: [0, 3, 5, 7], 8: [0, 3, 6, 8]}


class ClipSampler(abc.ABC):
  """Frame indices for one training sample or one evaluated target frame; last = target."""

  @property
  @abc.abstractmethod
  def frames_per_clip(self) -> int:
    """Frames in a training clip (T of the batch)."""

  @property
  def eval_frames_per_clip(self) -> int:
    """Frames the clip of an evaluated frame takes (`eval_indices`): the training clip's by
    default."""
    return self.frames_per_clip

  @abc.abstractmethod
  def train_indices(self, num_frames: int, rng: np.random.Generator,
                    labeled_targets: Sequence[int] | None = None) -> list[int]:
    """A random clip of a video with `num_frames` frames; the target is one of
    `labeled_targets` where given (sparse labels), else the sampler's own rule."""

  @abc.abstractmethod
  def eval_indices(self, num_frames: int, t: int) -> list[int]:
    """The clip used to predict frame `t` at test time."""


class SingleFrameSampler(ClipSampler):
  """Per-frame methods: a uniformly random frame at train time, the frame itself at test."""
  frames_per_clip = 1

  def train_indices(self, num_frames: int, rng: np.random.Generator,
                    labeled_targets: Sequence[int] | None = None) -> list[int]:
    return [_draw_target(num_frames, rng, labeled_targets)]

  def eval_indices(self, num_frames: int, t: int) -> list[int]:
    _check_target(num_frames, t)
    return [t]


@dataclasses.dataclass(frozen=True)
class OffsetClipSampler(ClipSampler):
  """Clips at fixed offsets from the target, e.g. DTERN's (-9, -6, -3, 0).

  Train: with probability `reverse_prob` the video is reversed first (so references may be future
  frames), then the target is uniform over the positions where the whole clip fits. Videos too
  short for the clip (DTERN's code crashes on them) get indices clipped into the video. With
  `labeled_targets`, the target is one of them and reversal mirrors the offsets (DTERN's
  Cityscapes clips: -9, -6, -3 or, with p 0.5, +9, +6, +3).
  Eval: DTERN's first-frames table when the offsets are DTERN's; otherwise indices are clipped into
  the video (a frame repeats) where the clip does not fit.
  """
  offsets: tuple[int, ...]
  reverse_prob: float = 0.0

  def __post_init__(self):
    if not self.offsets or self.offsets[-1] != 0:
      raise SetupError(f"offsets must end with the target offset 0, got {self.offsets}")
    if not 0.0 <= self.reverse_prob <= 1.0:
      raise SetupError(f"reverse_prob must be in [0, 1], got {self.reverse_prob}")

  def train_indices(self, num_frames: int, rng: np.random.Generator,
                    labeled_targets: Sequence[int] | None = None) -> list[int]:
    reverse = rng.random() < self.reverse_prob
    if labeled_targets is not None:
      t = _draw_target(num_frames, rng, labeled_targets)
      sign = -1 if reverse else 1
      return [min(max(t + sign * offset, 0), num_frames - 1) for offset in self.offsets]
    first = -min(self.offsets)
    last = num_frames - 1 - max(self.offsets)
    if last < first:
      first, last = 0, num_frames - 1
    t = int(rng.integers(first, last + 1))
    indices = self._clipped(num_frames, t)
    return [num_frames - 1 - i for i in indices] if reverse else indices

  def eval_indices(self, num_frames: int, t: int) -> list[int]:
    _check_target(num_frames, t)
    if self.offsets == DTERN_OFFSETS and t in _DTERN_FIRST_FRAMES:
      return list(_DTERN_FIRST_FRAMES[t])
    return self._clipped(num_frames, t)

  @property
  def frames_per_clip(self) -> int:
    return len(self.offsets)

  def frames_to_every_eval_clip_length(self) -> int:
    """How many first frames of a video, streamed (`eval_indices(t + 1, t)`), bring up every
    length a test-time clip has: a streaming predictor runs a program per length. Past DTERN's
    first-frames table every clip has one frame per offset, so its targets and one more hold them
    all (4 frames with DTERN's: clips of 1 frame, then of 4); 1 where clips are clipped alone."""
    lengths, frames = set(), 0
    for t in range(len(_DTERN_FIRST_FRAMES) + 1):
      length = len(self.eval_indices(t + 1, t))
      if length not in lengths:
        lengths.add(length)
        frames = t + 1
    return frames

  def _clipped(self, num_frames: int, t: int) -> list[int]:
    return [min(max(t + offset, 0), num_frames - 1) for offset in self.offsets]


@dataclasses.dataclass(frozen=True)
class PairSampler(ClipSampler):
  """A target and one partner frame at an offset drawn uniformly from `partner_offsets`; the clip
  is [partner, target]. The partner index is clamped into the video (VSPW's rule; Cityscapes and
  CamVid neighbours always exist). Eval is per frame: [t].

  DCFM (specs/dcfm.md §4.1): `dcfm_partner_offsets(R)` = {-R..-1, 1..R}; ETC (specs/etc.md §2):
  `ETC_PARTNER_OFFSETS`. Both train on the target's label only.
  """
  partner_offsets: tuple[int, ...]
  frames_per_clip = 2
  eval_frames_per_clip = 1

  def __post_init__(self):
    if not self.partner_offsets or 0 in self.partner_offsets:
      raise SetupError(f"partner offsets must be non-empty and non-zero, got "
                       f"{self.partner_offsets}")

  def train_indices(self, num_frames: int, rng: np.random.Generator,
                    labeled_targets: Sequence[int] | None = None) -> list[int]:
    t = _draw_target(num_frames, rng, labeled_targets)
    offset = self.partner_offsets[int(rng.integers(len(self.partner_offsets)))]
    return [min(max(t + offset, 0), num_frames - 1), t]

  def eval_indices(self, num_frames: int, t: int) -> list[int]:
    _check_target(num_frames, t)
    return [t]


def dcfm_partner_offsets(radius: int) -> tuple[int, ...]:
  """DCFM's r: randint(1-R, R), r <= 0 -> r-1, i.e. uniform on {-R..-1, 1..R}."""
  if radius < 1:
    raise ValueError(f"DCFM radius R must be >= 1, got {radius}")
  return tuple(range(-radius, 0)) + tuple(range(1, radius + 1))


def dcfm_first_keyframe(video_index: int, pass_index: int, interval: int, passes: int = 1,
                        rotate: bool = True) -> int:
  """DCFM's first keyframe offset `st` (specs/dcfm.md §3.1): it starts at 0 and, in B mode
  (rotate), advances by one (mod K) after every pass over a video, so it rotates across videos
  (VSPW, 1 pass) and across the passes of each 3-frame clip (Cityscapes/CamVid, 2 passes). P mode
  (rotate=False) always starts at 0."""
  return (video_index * passes + pass_index) % interval if rotate else 0


def check_label_window(window) -> tuple[int, ...]:
  """`data.eval_label_window` as a tuple: () or (before, after), counts of frames >= 0."""
  window = tuple(window)
  if window and (len(window) != 2 or not whole_numbers_at_least(window, 0)):
    raise SetupError(f"data.eval_label_window={window}: (before, after), frames around each "
                     "labelled frame (DCFM's Cityscapes protocol: (1, 1)), or () for whole videos")
  return window


def labeled_window(num_frames: int, labeled_index: int, before: int, after: int) -> list[int]:
  """The frames [a-before, a+after] around a labelled frame a, cut to the video: DCFM evaluates
  Cityscapes and CamVid on [a-1, a, a+1] (R = 1)."""
  _check_target(num_frames, labeled_index)
  return list(range(max(labeled_index - before, 0), min(labeled_index + after, num_frames - 1) + 1))


def _draw_target(num_frames: int, rng: np.random.Generator,
                 labeled_targets: Sequence[int] | None) -> int:
  if labeled_targets is None:
    return int(rng.integers(num_frames))
  if not len(labeled_targets):
    raise ValueError("a sparsely labelled video has no labelled frame to train on")
  return int(labeled_targets[int(rng.integers(len(labeled_targets)))])


def _check_target(num_frames: int, t: int) -> None:
  if not 0 <= t < num_frames:
    raise IndexError(f"target frame {t} out of range for a video of {num_frames} frames")


def make_clip_sampler(cfg: ml_collections.ConfigDict) -> ClipSampler:
  """From `{kind: 'single'|'offsets'|'pair', offsets: (...), reverse_prob: p}`; for 'pair',
  `offsets` are the partner offsets (e.g. (-1, 1) for DCFM R = 1, (3, 2, 1, -1, -2) for ETC).

  A setting the kind has no use for is refused rather than ignored: 'single' takes the target
  alone (offsets (0,)), and only 'offsets' reverses clips (reverse_prob 0 otherwise). The
  defaults every config carries (base_config: offsets (0,), reverse_prob 0.0) pass."""
  if cfg.kind not in ("single", "offsets", "pair"):
    raise SetupError(f"unknown clip sampler kind {cfg.kind!r}; expected 'single', 'offsets' or "
                     f"'pair'")
  reverse_prob = float(cfg.get("reverse_prob", 0.0))
  if cfg.kind == "offsets":
    return OffsetClipSampler(tuple(int(o) for o in cfg.offsets), reverse_prob)
  if reverse_prob != 0.0:
    raise SetupError(f"clip.reverse_prob={reverse_prob}: only clip.kind='offsets' reverses "
                     f"clips, and clip.kind is {cfg.kind!r}: leave it at 0.0")
  if cfg.kind == "pair":
    return PairSampler(tuple(int(o) for o in cfg.offsets))
  offsets = tuple(int(o) for o in cfg.get("offsets", (0,)))
  if offsets != (0,):
    raise SetupError(f"clip.offsets={offsets}: clip.kind='single' takes the target frame alone, "
                     f"whatever the offsets: leave them at (0,), or set clip.kind='offsets'")
  return SingleFrameSampler()


def clip_length(cfg: ml_collections.ConfigDict) -> int:
  """Frames per training clip (T of the batch) for a clip config."""
  return make_clip_sampler(cfg).frames_per_clip
