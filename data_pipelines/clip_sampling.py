"""Clip samplers: (video length, target frame) -> the frame indices a method sees.

The last index of every clip is the target (the frame whose label trains or is evaluated); the
others are references. Train sampling is random; eval sampling is a pure function of the target,
including each method's rules for the first frames of a video where a full clip does not fit.
"""
from __future__ import annotations

import abc
import dataclasses

import ml_collections
import numpy as np

# DTERN's clip and its hand-written test-time clips for the first frames (specs/dtern.md §8):
# targets 0-2 are predicted from the single frame, 3-8 from these compressed clips.
DTERN_OFFSETS = (-9, -6, -3, 0)
_DTERN_FIRST_FRAMES = {
    0: [0], 1: [1], 2: [2], 3: [0, 1, 2, 3], 4: [0, 2, 3, 4], 5: [0, 2, 4, 5], 6: [0, 2, 4, 6],
    7: [0, 3, 5, 7], 8: [0, 3, 6, 8]}


class ClipSampler(abc.ABC):
  """Frame indices for one training sample or one evaluated target frame; last = target."""

  @abc.abstractmethod
  def train_indices(self, num_frames: int, rng: np.random.Generator) -> list[int]:
    """A random clip of a video with `num_frames` frames."""

  @abc.abstractmethod
  def eval_indices(self, num_frames: int, t: int) -> list[int]:
    """The clip used to predict frame `t` at test time."""


class SingleFrameSampler(ClipSampler):
  """Per-frame methods: a uniformly random frame at train time, the frame itself at test."""

  def train_indices(self, num_frames: int, rng: np.random.Generator) -> list[int]:
    return [int(rng.integers(num_frames))]

  def eval_indices(self, num_frames: int, t: int) -> list[int]:
    _check_target(num_frames, t)
    return [t]


@dataclasses.dataclass(frozen=True)
class OffsetClipSampler(ClipSampler):
  """Clips at fixed offsets from the target, e.g. DTERN's (-9, -6, -3, 0).

  Train: with probability `reverse_prob` the video is reversed first (so references may be future
  frames), then the target is uniform over the positions where the whole clip fits. Videos too
  short for the clip (DTERN's code crashes on them) get indices clipped into the video.
  Eval: DTERN's first-frames table when the offsets are DTERN's; otherwise indices are clipped into
  the video (a frame repeats) where the clip does not fit.
  """
  offsets: tuple[int, ...]
  reverse_prob: float = 0.0

  def __post_init__(self):
    if not self.offsets or self.offsets[-1] != 0:
      raise ValueError(f"offsets must end with the target offset 0, got {self.offsets}")
    if not 0.0 <= self.reverse_prob <= 1.0:
      raise ValueError(f"reverse_prob must be in [0, 1], got {self.reverse_prob}")

  def train_indices(self, num_frames: int, rng: np.random.Generator) -> list[int]:
    reverse = rng.random() < self.reverse_prob
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

  def _clipped(self, num_frames: int, t: int) -> list[int]:
    return [min(max(t + offset, 0), num_frames - 1) for offset in self.offsets]


def _check_target(num_frames: int, t: int) -> None:
  if not 0 <= t < num_frames:
    raise IndexError(f"target frame {t} out of range for a video of {num_frames} frames")


def make_clip_sampler(cfg: ml_collections.ConfigDict) -> ClipSampler:
  """From `{kind: 'single'|'offsets', offsets: (...), reverse_prob: p}`."""
  if cfg.kind == "single":
    return SingleFrameSampler()
  if cfg.kind == "offsets":
    return OffsetClipSampler(tuple(int(o) for o in cfg.offsets),
                             float(cfg.get("reverse_prob", 0.0)))
  raise ValueError(f"unknown clip sampler kind {cfg.kind!r}; expected 'single' or 'offsets'")
