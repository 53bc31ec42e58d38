"""Video consistency metrics over n-frame windows: mVC_n (VSPW) and VEC_n (DTERN).

Both follow the reference scripts' window conventions (specs/dtern.md §9.2-9.3, specs/dcfm.md §7):

* A video with at most ``SKIP_VIDEOS_UP_TO_FRAMES`` (16) frames is skipped for every n (VSPW's
  scripts; DCFM's mVC keeps it, see below).
* Window starts are i = 0 .. L-n-1; the last possible start L-n is excluded (the scripts'
  off-by-one, kept so numbers match the published ones).
* A pixel is GT-stable (prediction-stable) in window i when its label at frame i equals its label
  at every frame i+1 .. i+n-1.

mVC_n: acc_i = |GT-stable and prediction-stable| / |GT-stable|, with the ignore label counting as
a label (255 == 255 is stable); mVC_n is the mean of acc_i over all windows of all videos.
Correctness is never checked. Two conventions, because the published tables use both:

* ``'vspw'`` (default; the VSPW ``VC_perclip.py`` script): windows with no GT-stable pixel are
  dropped, as its nanmean does, and short videos are skipped.
* ``'dcfm'`` (DCFM's ``metric/video_test.py``, specs/dcfm.md §7): acc_i = |both| / (|GT-stable| +
  1e-8), so a window with no GT-stable pixel scores 0 and still counts, and no video is skipped
  (one of 9..16 frames has 8-frame windows). VEC_n keeps its own skipping either way.

Both scripts pool the windows of all videos; DCFM's paper (eq. 13) averages per-video means
instead, and which one produced its tables is unverified (specs/dcfm.md §7). So ``summary`` also
gives ``mVC_n_per_video``, the mean over videos of each video's mean window accuracy (videos with
no counted window left out), to compare released weights against either reading.

VEC_n: per window, every GT-stable pixel whose GT is not ignored adds (GT at frame i, effective
prediction) to one dataset-wide confusion matrix; the effective prediction is the prediction at
frame i where the prediction is stable, and the wrong label (y+1) mod NC where it is not (which is
also a false positive of class y+1). VEC_n is the VSPW-convention mIoU of that matrix.

``vec_quirks=True`` reproduces the one public VEC script (DTERN dev ``IOU_perclip.py``), which
mutates its frame lists in place and runs n=16 before n=8 on the same lists (spec §9.3 item 2).
After window i of a pass, frame i keeps the forced wrong labels as its prediction and GT class 0
in frame i becomes the sentinel 128; later (smaller-n) passes see both. The forced label is
computed from the mutated GT, so a sentinel pixel is forced to (129 mod NC), 5 for NC = 124.
(The script's uint8 maths also wraps an ignored pixel's forced label, 255 + 1, to 0; that pixel's
GT is ignored in every window that contains it, so the wrap never reaches a matrix.) Quirk mode
processes the windows in decreasing n and needs NC <= 128 and ignore label 255.

Accumulators are plain counts and sums so that ``merge`` across processes equals one pass over all
videos (float sums up to the order of additions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_pipelines.sources.base import IGNORE_LABEL
from vssjax.metrics.confusion import ConfusionMatrix, check_labels, miou_vspw

SKIP_VIDEOS_UP_TO_FRAMES = 16
# Name -> how it differs, for `eval.vc_convention` and the note under a results table.
VC_CONVENTIONS = {
    "vspw": "windows without ground-truth-stable pixels dropped, videos of <= 16 frames skipped",
    "dcfm": "windows without ground-truth-stable pixels count 0, no video skipped",
}
_DCFM_VC_EPS = 1e-8  # DCFM's denominator |G| + 1e-8: an empty G scores 0 instead of nan
QUIRK_CLASS0_SENTINEL = 128
_QUIRK_IGNORE_LABEL = 255


def window_stable(frames: np.ndarray, n: int) -> np.ndarray:
  """Which pixels keep their frame-i label over frames i .. i+n-1, for every start i < L-n.

  Equality to frame i over the window is the same as equality of consecutive frames, so this ANDs
  the L-1 consecutive-equality maps over sliding runs of n-1 by doubling: O(L log n) array ops
  instead of O(L n).

  Args:
    frames: ``[L, H, W]`` label maps.
    n: window length, >= 2.

  Returns:
    bool ``[max(L-n, 0), H, W]``; entry i is the window starting at frame i.
  """
  num_frames = frames.shape[0]
  if num_frames <= n:
    return np.zeros((0,) + frames.shape[1:], bool)
  run = frames[1:] == frames[:-1]  # run[t]: equalities t .. t+span-1 all hold
  span, needed = 1, n - 1
  while 2 * span <= needed:
    run = run[:-span] & run[span:]
    span *= 2
  # Two overlapping runs of `span` equalities cover exactly `needed` of them.
  overlap = needed - span
  stable = run[:run.shape[0] - overlap] & run[overlap:]  # starts 0 .. L-n
  return stable[:-1]


def _label_dtype(num_classes: int, ignore_label: int) -> np.dtype:
  """Smallest integer type holding every valid label: uint8 for VSPW, so comparisons are cheap."""
  lowest, highest = min(0, ignore_label), max(num_classes - 1, ignore_label)
  return np.result_type(np.min_scalar_type(lowest), np.min_scalar_type(highest))


class VideoConsistency:
  """Streaming mVC_n and VEC_n over videos added one at a time.

  Attributes:
    num_classes: NC.
    windows: the window lengths n.
    ignore_label: GT value for unlabelled pixels.
    vec_quirks: reproduce the literal VEC script (module docstring).
    vc_convention: 'vspw' or 'dcfm', how mVC_n treats short videos and windows without GT-stable
      pixels (module docstring).
    videos_scored: videos longer than ``SKIP_VIDEOS_UP_TO_FRAMES`` frames.
    videos_skipped: shorter videos, left out of VEC_n (and, in the 'vspw' convention, of mVC_n).
    vc_sum: per n, the sum of per-window mVC accuracies.
    vc_windows: per n, the number of windows counted ('vspw': those with at least one GT-stable
      pixel; 'dcfm': all).
    vc_video_sum: per n, the sum over videos of their mean window accuracy.
    vc_videos: per n, the number of videos with at least one counted window.
    vec_matrices: per n, the dataset-wide VEC confusion matrix.
  """

  def __init__(self, num_classes: int, windows: Sequence[int] = (8, 16),
               ignore_label: int = IGNORE_LABEL, vec_quirks: bool = False,
               vc_convention: str = "vspw"):
    if any(n < 2 for n in windows) or len(set(windows)) != len(windows):
      raise ValueError(f"window lengths must be distinct and >= 2, got {tuple(windows)}")
    if vc_convention not in VC_CONVENTIONS:
      raise ValueError(f"vc_convention must be one of {tuple(VC_CONVENTIONS)}, got "
                       f"{vc_convention!r}")
    if vec_quirks and (num_classes > QUIRK_CLASS0_SENTINEL or ignore_label != _QUIRK_IGNORE_LABEL):
      raise ValueError(
          f"vec_quirks reproduces a uint8 script: it needs num_classes <= "
          f"{QUIRK_CLASS0_SENTINEL} and ignore_label {_QUIRK_IGNORE_LABEL}, got "
          f"{num_classes} and {ignore_label}")
    self.num_classes = num_classes
    self.windows = tuple(windows)
    self.ignore_label = ignore_label
    self.vec_quirks = vec_quirks
    self.vc_convention = vc_convention
    self.videos_scored = 0
    self.videos_skipped = 0
    self.vc_sum = {n: 0.0 for n in self.windows}
    self.vc_windows = {n: 0 for n in self.windows}
    self.vc_video_sum = {n: 0.0 for n in self.windows}
    self.vc_videos = {n: 0 for n in self.windows}
    self.vec_matrices = {n: ConfusionMatrix(num_classes, ignore_label) for n in self.windows}

  def add_video(self, gts: np.ndarray, preds: np.ndarray, *, checked: bool = False) -> bool:
    """Scores one whole video; returns False if it was too short for VEC_n (and, in the 'vspw'
    convention, for mVC_n).

    Args:
      gts: ``[L, H, W]`` integer GT labels in ``[0, NC)`` or the ignore label.
      preds: ``[L, H, W]`` integer predicted labels in ``[0, NC)``.
      checked: every frame pair already passed `check_labels` (the evaluator's confusion matrix
        checks each frame as it scores it), so the check is skipped, as `ConfusionMatrix.update`
        does.

    Raises:
      ValueError: shapes differ or are not 3-D, or a label is out of range (callers add the
        video name).
    """
    gts, preds = np.asarray(gts), np.asarray(preds)
    if gts.ndim != 3:
      raise ValueError(f"expected [L, H, W] label maps, got shape {gts.shape}")
    if not checked:
      check_labels(gts, preds, self.num_classes, self.ignore_label)
    long_enough = gts.shape[0] > SKIP_VIDEOS_UP_TO_FRAMES
    if long_enough:
      self.videos_scored += 1
    else:
      self.videos_skipped += 1
      if self.vc_convention == "vspw":
        return False
    dtype = _label_dtype(self.num_classes, self.ignore_label)
    gts, preds = gts.astype(dtype, copy=False), preds.astype(dtype, copy=False)
    accuracies = self._add_windows_frame_by_frame(
        gts, preds, clean_vec=long_enough and not self.vec_quirks)
    for n in self.windows:
      self.vc_sum[n] += float(np.sum(accuracies[n]))
      self.vc_windows[n] += len(accuracies[n])
      if accuracies[n]:
        self.vc_video_sum[n] += float(np.mean(accuracies[n]))
        self.vc_videos[n] += 1
    if self.vec_quirks and long_enough:
      self._add_vec_windows_quirks(gts.copy(), preds.copy())
    return long_enough

  def _add_windows_frame_by_frame(self, gts: np.ndarray, preds: np.ndarray, clean_vec: bool
                                  ) -> dict[int, list[float]]:
    """Every window's mVC accuracy (returned per n, in window order; in the 'vspw' convention
    windows without GT-stable pixels are left out) and, with `clean_vec`, its VEC counts (added to
    the matrices).

    Window i of length n is stable at a pixel when the pixel's label run ending at frame i+n-1
    is at least n frames long, and its frame-i label is then the frame-(i+n-1) label. So one pass
    over the frames, keeping each pixel's current run length, scores every window as its last
    frame arrives: no [windows, H, W] arrays, a quarter less time than building them (a 30-frame
    768x576 video: 285-313 -> 217-241 ms, identical sums). The video's last frame ends only the
    excluded last window (module docstring), so it is never read.
    """
    longest = max(self.windows)
    run_dtype = np.min_scalar_type(longest)
    accuracies: dict[int, list[float]] = {n: [] for n in self.windows}
    dcfm = self.vc_convention == "dcfm"
    eps = _DCFM_VC_EPS if dcfm else 0.0
    gt_run = pred_run = None
    for t in range(gts.shape[0] - 1):
      gt, pred = gts[t], preds[t]
      if gt_run is None:
        gt_run, pred_run = np.ones(gt.shape, run_dtype), np.ones(gt.shape, run_dtype)
      else:
        for run, labels in ((gt_run, gts), (pred_run, preds)):
          run *= labels[t] == labels[t - 1]  # a changed label restarts its run ...
          run += 1  # ... at 1; otherwise it grows (capped: only >= n is ever asked)
          np.minimum(run, longest, out=run)
      forced = self._forced_wrong(gt) if clean_vec else None
      for n in self.windows:
        if t < n - 1:
          continue
        gt_stable, pred_stable = gt_run >= n, pred_run >= n
        gt_count = np.count_nonzero(gt_stable)
        if gt_count or dcfm:
          accuracies[n].append(np.count_nonzero(gt_stable & pred_stable) / (gt_count + eps))
        if forced is not None:
          # GT-stable pixels only (the others count as ignored); an unstable prediction is
          # forced wrong.
          scored_gt = np.where(gt_stable, gt, np.asarray(self.ignore_label, gt.dtype))
          self.vec_matrices[n].update(scored_gt, np.where(pred_stable, pred, forced),
                                      checked=True)
    return accuracies

  def _forced_wrong(self, labels: np.ndarray) -> np.ndarray:
    """The label VEC substitutes for an unstable prediction: never the GT label itself.

    In the labels' dtype, as the script's uint8 maths (an ignored 255 wraps to 0; its pixel is
    never scored)."""
    return (labels + 1) % self.num_classes

  def _add_vec_windows_quirks(self, gts: np.ndarray, preds: np.ndarray) -> None:
    """The literal script's passes, mutating ``gts`` and ``preds`` (uint8 copies) in place.

    Within one pass window i only writes frame i and only reads frames >= i, so all windows of a
    pass can be computed at once from the state the previous pass left.
    """
    for n in sorted(self.windows, reverse=True):
      gt_stable, pred_stable = window_stable(gts, n), window_stable(preds, n)
      num_windows = gt_stable.shape[0]
      first_gt, first_pred = gts[:num_windows], preds[:num_windows]  # views: writes mutate
      unstable = gt_stable & ~pred_stable
      first_pred[unstable] = self._forced_wrong(first_gt[unstable])
      scored = gt_stable & (first_gt != self.ignore_label)
      labels = first_gt[scored]
      labels[labels == QUIRK_CLASS0_SENTINEL] = 0
      self.vec_matrices[n].update(labels, first_pred[scored], checked=True)
      first_gt[first_gt == 0] = QUIRK_CLASS0_SENTINEL

  def merge(self, other: VideoConsistency) -> VideoConsistency:
    """Adds another accumulator's sums and counts (e.g. from another process); returns self."""
    config = (self.num_classes, self.windows, self.ignore_label, self.vec_quirks,
              self.vc_convention)
    other_config = (other.num_classes, other.windows, other.ignore_label, other.vec_quirks,
                    other.vc_convention)
    if other_config != config:
      raise ValueError(f"cannot merge VideoConsistency with (num_classes, windows, ignore_label, "
                       f"vec_quirks, vc_convention) = {other_config} into {config}")
    self.videos_scored += other.videos_scored
    self.videos_skipped += other.videos_skipped
    for n in self.windows:
      self.vc_sum[n] += other.vc_sum[n]
      self.vc_windows[n] += other.vc_windows[n]
      self.vc_video_sum[n] += other.vc_video_sum[n]
      self.vc_videos[n] += other.vc_videos[n]
      self.vec_matrices[n].merge(other.vec_matrices[n])
    return self

  def __iadd__(self, other: VideoConsistency) -> VideoConsistency:
    return self.merge(other)

  def summary(self) -> dict[str, float]:
    """``mVC_n`` (pooled over windows), ``mVC_n_per_video`` and ``VEC_n`` for every n, as
    fractions in [0, 1]; nan if nothing was scored."""
    result = {}
    for n in self.windows:
      windows, videos = self.vc_windows[n], self.vc_videos[n]
      result[f"mVC_{n}"] = self.vc_sum[n] / windows if windows else float("nan")
      result[f"mVC_{n}_per_video"] = self.vc_video_sum[n] / videos if videos else float("nan")
    for n in self.windows:
      result[f"VEC_{n}"] = miou_vspw(self.vec_matrices[n].matrix)
    return result
