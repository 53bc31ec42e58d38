"""mVC_n and VEC_n: hand-counted videos, the scripts' edge cases, and a brute-force reference.

The reference below is written straight from specs/dtern.md §9.2-9.3 and, for DCFM's mVC,
specs/dcfm.md §7, with Python loops over windows and pixels (and, for the quirks, in-place
per-window mutation as the script does); the vectorised code must agree with it on random videos.
"""

import itertools

import numpy as np
import pytest

from vssjax.metrics.consistency import VideoConsistency, window_stable

IGNORE = 255
# 256 % 5 != 0, so the reference's literal uint8 wrap of an ignored pixel's forced label (255 + 1)
# differs from plain modulo; the vectorised code relies on that never reaching a matrix.
RANDOM_CLASSES = 5


def _hand_video():
  """18 frames of 3x3, 3 classes. Pixel kinds (row-major):

  A A B      A: GT 0, prediction 0 throughout.
  C D X      B: GT ignored (255) throughout, prediction 1.
  X X X      C: GT 1 throughout; prediction 1 before frame 10, 2 from frame 10.
             D: GT 2 before frame 5, 1 from frame 5; prediction 2 throughout.
             X: GT t % 2 (never stable); prediction 0.
  """
  length = 18
  t = np.arange(length)

  def constant(value):
    return np.full(length, value)

  kinds = {
      "A": (constant(0), constant(0)),
      "B": (constant(IGNORE), constant(1)),
      "C": (constant(1), np.where(t < 10, 1, 2)),
      "D": (np.where(t < 5, 2, 1), constant(2)),
      "X": (t % 2, constant(0)),
  }
  gts, preds = np.empty((2, length, 3, 3), np.uint8)
  for row, kinds_in_row in enumerate(["AAB", "CDX", "XXX"]):
    for col, kind in enumerate(kinds_in_row):
      gts[:, row, col], preds[:, row, col] = kinds[kind]
  return gts, preds


def test_hand_video_layout():
  gts, preds = _hand_video()
  assert gts.shape == (18, 3, 3)
  np.testing.assert_array_equal(gts[6], [[0, 0, IGNORE], [1, 1, 0], [0, 0, 0]])
  np.testing.assert_array_equal(preds[12], [[0, 0, 1], [2, 2, 0], [0, 0, 0]])


def test_mvc_hand_counted():
  metric = VideoConsistency(3)
  assert metric.add_video(*_hand_video())
  summary = metric.summary()
  # n=8, starts 0..9. GT-stable: A, A, B, C always, D from start 5. Both stable: A, A, B always,
  # C for starts 0..2, D from 5. Starts 0-2: 4/4; 3-4: 3/4; 5-9: 4/5.
  assert metric.vc_windows[8] == 10
  assert summary["mVC_8"] == pytest.approx((3 * 1 + 2 * 3 / 4 + 5 * 4 / 5) / 10)
  # n=16, starts 0..1: GT-stable A, A, B, C; both stable A, A, B.
  assert metric.vc_windows[16] == 2
  assert summary["mVC_16"] == pytest.approx(3 / 4)


def test_mvc_per_video_averages_each_videos_mean():
  """The paper's eq. 13 reading beside the scripts' pooled one: a perfect 20-frame video (12
  windows of 8) and the hand video (10 windows, mean 0.86) weigh equally only per video."""
  perfect = np.zeros((20, 3, 3), np.uint8)
  hand_mean = (3 * 1 + 2 * 3 / 4 + 5 * 4 / 5) / 10
  metric, halves = VideoConsistency(3), [VideoConsistency(3), VideoConsistency(3)]
  for video, half in zip([_hand_video(), (perfect, perfect)], halves):
    metric.add_video(*video)
    half.add_video(*video)
  summary = metric.summary()
  assert summary["mVC_8"] == pytest.approx((10 * hand_mean + 12) / 22)
  assert summary["mVC_8_per_video"] == pytest.approx((hand_mean + 1) / 2)
  assert summary["mVC_16_per_video"] == pytest.approx((3 / 4 + 1) / 2)
  assert halves[0].merge(halves[1]).summary() == pytest.approx(summary)


def test_vec_clean_and_quirks_hand_counted():
  clean, quirks = VideoConsistency(3), VideoConsistency(3, vec_quirks=True)
  clean.add_video(*_hand_video())
  quirks.add_video(*_hand_video())
  # Clean n=8: A gives (0,0) x 2 x 10 windows; C gives (1,1) at starts 0..2 and the forced (1,2)
  # at starts 3..9; D gives (1,2) at starts 5..9; B is ignored. IoU_0 = 1, IoU_1 = 3/15.
  np.testing.assert_array_equal(clean.vec_matrices[8].matrix, [[20, 0, 0], [0, 3, 12], [0, 0, 0]])
  # n=16 (starts 0, 1): A (0,0) x 4, C forced (1,2) x 2. IoU_0 = 1, IoU_1 = 0.
  np.testing.assert_array_equal(clean.vec_matrices[16].matrix, [[4, 0, 0], [0, 0, 2], [0, 0, 0]])
  # Quirks: the n=16 pass sees the original video, then leaves the forced label 2 as C's
  # prediction at frames 0 and 1 and rewrites A's GT 0 to 128 there. In the n=8 pass A is
  # GT-unstable at starts 0 and 1 (128 vs 0), and C is prediction-stable only at start 2.
  np.testing.assert_array_equal(quirks.vec_matrices[16].matrix, clean.vec_matrices[16].matrix)
  np.testing.assert_array_equal(quirks.vec_matrices[8].matrix, [[16, 0, 0], [0, 1, 14], [0, 0, 0]])
  assert clean.summary()["VEC_8"] == pytest.approx((1 + 3 / 15) / 2)
  assert quirks.summary()["VEC_8"] == pytest.approx((1 + 1 / 15) / 2)
  assert clean.summary()["VEC_16"] == quirks.summary()["VEC_16"] == pytest.approx(1 / 2)
  # mVC never sees the mutation.
  assert quirks.summary()["mVC_8"] == clean.summary()["mVC_8"]


def test_quirks_do_not_mutate_caller_arrays():
  gts, preds = _hand_video()
  gts_before, preds_before = gts.copy(), preds.copy()
  VideoConsistency(3, vec_quirks=True).add_video(gts, preds)
  np.testing.assert_array_equal(gts, gts_before)
  np.testing.assert_array_equal(preds, preds_before)


@pytest.mark.parametrize("length, scored", [(16, False), (17, True)])
def test_videos_of_at_most_16_frames_are_skipped(length, scored):
  gts = np.zeros((length, 2, 2), np.uint8)
  metric = VideoConsistency(3)
  assert metric.add_video(gts, gts) is scored
  assert (metric.videos_scored, metric.videos_skipped) == (int(scored), int(not scored))
  summary = metric.summary()
  assert set(summary) == {"mVC_8", "mVC_16", "mVC_8_per_video", "mVC_16_per_video", "VEC_8",
                          "VEC_16"}
  if scored:
    assert set(summary.values()) == {1.0}
  else:
    assert np.isnan(list(summary.values())).all()


def test_last_window_start_is_excluded():
  # One pixel, 17 frames, prediction different only at frame 0. Start L-n (which would skip
  # frame 0 and score 1) is not a window: n=16 has the single start 0, n=8 the starts 0..8.
  gts = np.zeros((17, 1, 1), np.uint8)
  preds = gts.copy()
  preds[0] = 1
  metric = VideoConsistency(3)
  metric.add_video(gts, preds)
  summary = metric.summary()
  assert metric.vc_windows == {8: 9, 16: 1}
  assert summary["mVC_16"] == 0.0
  assert summary["mVC_8"] == pytest.approx(8 / 9)
  # VEC: start 0 forces (0+1) mod 3 on the GT-0 pixel; the other 8-frame starts are correct.
  np.testing.assert_array_equal(metric.vec_matrices[8].matrix[0], [8, 1, 0])
  np.testing.assert_array_equal(metric.vec_matrices[16].matrix[0], [0, 1, 0])


def test_windows_without_stable_gt_are_dropped_from_mvc():
  gts = np.zeros((20, 1, 2), np.uint8)
  gts[:, 0, 0] = np.arange(20) % 2  # pixel 0 never GT-stable
  gts[:10, 0, 1] = 1  # pixel 1 changes at frame 10: GT-stable for 8-frame starts 0-2 and 10-11
  metric = VideoConsistency(3)
  metric.add_video(gts, gts)
  assert metric.vc_windows == {8: 5, 16: 0}
  assert metric.summary()["mVC_8"] == 1.0
  assert np.isnan(metric.summary()["mVC_16"])


def test_dcfm_convention_counts_windows_without_stable_gt_as_zero():
  """The video above: DCFM's |G and Q| / (|G| + 1e-8) scores the 7 + 4 windows without a
  GT-stable pixel 0 instead of dropping them."""
  gts = np.zeros((20, 1, 2), np.uint8)
  gts[:, 0, 0] = np.arange(20) % 2
  gts[:10, 0, 1] = 1
  metric = VideoConsistency(3, vc_convention="dcfm")
  metric.add_video(gts, gts)
  assert metric.vc_windows == {8: 12, 16: 4}
  assert metric.summary()["mVC_8"] == pytest.approx(5 / 12)
  assert metric.summary()["mVC_16"] == 0.0


def test_dcfm_convention_scores_short_videos_for_mvc_only():
  """A 12-frame video: skipped by VSPW's mVC; DCFM's has its 4 eight-frame windows (and still no
  16-frame one). VEC_n skips it in both conventions."""
  gts = np.zeros((12, 2, 2), np.uint8)
  preds = gts.copy()
  preds[0, 0, 0] = 1  # window 0 has 3 of 4 pixels prediction-stable
  vspw, dcfm = VideoConsistency(3), VideoConsistency(3, vc_convention="dcfm")
  assert vspw.add_video(gts, preds) is False and dcfm.add_video(gts, preds) is False
  assert vspw.vc_windows == {8: 0, 16: 0} and dcfm.vc_windows == {8: 4, 16: 0}
  assert dcfm.videos_skipped == 1 and dcfm.vec_matrices[8].matrix.sum() == 0
  summary = dcfm.summary()
  assert summary["mVC_8"] == pytest.approx((0.75 + 3) / 4, rel=1e-7)
  assert np.isnan([summary["mVC_16"], summary["VEC_8"], summary["VEC_16"]]).all()


def test_unknown_vc_convention_is_refused():
  with pytest.raises(ValueError, match="vc_convention must be one of"):
    VideoConsistency(3, vc_convention="paper")


def test_ignored_gt_counts_for_mvc_not_for_vec():
  gts = np.full((18, 1, 1), IGNORE, np.uint8)
  preds = np.zeros((18, 1, 1), np.uint8)
  metric = VideoConsistency(3)
  metric.add_video(gts, preds)
  summary = metric.summary()
  assert summary["mVC_8"] == 1.0
  assert metric.vec_matrices[8].matrix.sum() == 0 and np.isnan(summary["VEC_8"])


def test_add_video_validates_labels():
  gts, preds = _hand_video()
  preds[3, 1, 1] = 7
  metric = VideoConsistency(3)
  with pytest.raises(ValueError, match=r"prediction has values \[7\]"):
    metric.add_video(gts, preds)
  with pytest.raises(ValueError, match=r"\[L, H, W\]"):
    metric.add_video(gts[0], preds[0])
  with pytest.raises(ValueError, match="vec_quirks"):
    VideoConsistency(200, vec_quirks=True)


@pytest.mark.parametrize("vec_quirks", [False, True])
def test_merge_equals_single_accumulation(vec_quirks):
  videos = [_random_video(np.random.default_rng(seed), 20 + seed) for seed in range(3)]
  single = VideoConsistency(RANDOM_CLASSES, vec_quirks=vec_quirks)
  for video in videos:
    single.add_video(*video)
  first, second = (VideoConsistency(RANDOM_CLASSES, vec_quirks=vec_quirks) for _ in range(2))
  first.add_video(*videos[0])
  first.add_video(*videos[1])
  second.add_video(*videos[2])
  first += second
  assert first.summary() == single.summary()
  assert first.videos_scored == 3
  with pytest.raises(ValueError, match="cannot merge"):
    first.merge(VideoConsistency(RANDOM_CLASSES, windows=(8,)))
  with pytest.raises(ValueError, match="cannot merge"):
    first.merge(VideoConsistency(RANDOM_CLASSES, vec_quirks=vec_quirks, vc_convention="dcfm"))


def test_window_stable_matches_direct_comparison():
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 2, size=(25, 4, 5))
  frames[:, :2] = 0  # always-stable pixels so the comparison is not trivially all-False
  for n in range(2, 21):
    expected = np.array([np.all(frames[i + 1:i + n] == frames[i], axis=0) for i in range(25 - n)])
    np.testing.assert_array_equal(window_stable(frames, n), expected.reshape(-1, 4, 5))


# --- Brute-force reference -------------------------------------------------------------------


def _random_video(rng, length, num_classes=RANDOM_CLASSES, shape=(3, 4)):
  """Piecewise-constant labels (rare changes) so that many windows have stable pixels."""
  values = list(range(num_classes)) + [IGNORE]

  def track(choices, change_prob):
    out, current = [], rng.choice(choices)
    for _ in range(length):
      if rng.random() < change_prob:
        current = rng.choice(choices)
      out.append(current)
    return out

  gts = np.array([track(values, 0.08) for _ in range(np.prod(shape))]).T.reshape(length, *shape)
  preds = np.where(rng.random(gts.shape) < 0.9, gts, rng.integers(0, num_classes, gts.shape))
  preds = np.where(preds == IGNORE, 0, preds)
  preds[:, 0] = np.array([track(range(num_classes), 0.04)
                          for _ in range(shape[1])]).T  # a row of independently stable preds
  return gts.astype(np.uint8), preds.astype(np.uint8)


def _reference_vspw_miou(pairs, num_classes):
  matrix = [[0] * num_classes for _ in range(num_classes)]
  for gt, pred in pairs:
    matrix[gt][pred] += 1
  ious = []
  for c in range(num_classes):
    gt_pixels = sum(matrix[c])
    if gt_pixels:
      pred_pixels = sum(matrix[k][c] for k in range(num_classes))
      ious.append(matrix[c][c] / (gt_pixels + pred_pixels - matrix[c][c]))
  return sum(ious) / len(ious) if ious else float("nan")


def _reference(videos, num_classes, windows, quirks, vc_convention="vspw"):
  """Loops over videos, windows and pixels exactly as the specs word them."""
  accs = {n: [] for n in windows}
  video_means = {n: [] for n in windows}  # the paper's eq. 13: each video's mean, then averaged
  pairs = {n: [] for n in windows}
  for gts, preds in videos:
    length = len(gts)
    if length <= 16 and vc_convention == "vspw":
      continue
    scores_vec = length > 16  # VEC skips short videos in both conventions
    pixels = list(itertools.product(range(gts.shape[1]), range(gts.shape[2])))
    gt_state, pred_state = gts.astype(int).tolist(), preds.astype(int).tolist()
    for n in windows:
      first_window = len(accs[n])
      for i in range(length - n):
        both = stable = 0
        for y, x in pixels:
          gt_ok = all(gts[i, y, x] == gts[i + j, y, x] for j in range(1, n))
          pred_ok = all(preds[i, y, x] == preds[i + j, y, x] for j in range(1, n))
          stable += gt_ok
          both += gt_ok and pred_ok
          if scores_vec and not quirks and gt_ok and gts[i, y, x] != IGNORE:
            label = int(gts[i, y, x])
            pairs[n].append((label, int(preds[i, y, x]) if pred_ok else (label + 1) % num_classes))
        if vc_convention == "dcfm":
          accs[n].append(both / (stable + 1e-8))  # DCFM's metric/video_test.py VC
        elif stable:
          accs[n].append(both / stable)
      if len(accs[n]) > first_window:
        video_means[n].append(np.mean(accs[n][first_window:]))
    if quirks and scores_vec:  # the script: n=16 then n=8 on the same lists, mutated per window
      for n in sorted(windows, reverse=True):
        for i in range(length - n):
          for y, x in pixels:
            label = gt_state[i][y][x]
            gt_ok = all(label == gt_state[i + j][y][x] for j in range(1, n))
            pred_ok = all(pred_state[i][y][x] == pred_state[i + j][y][x] for j in range(1, n))
            if gt_ok and not pred_ok:
              pred_state[i][y][x] = (label + 1) % 256 % num_classes  # the script's uint8 maths
            if gt_ok and label != IGNORE:
              pairs[n].append((0 if label == 128 else label, pred_state[i][y][x]))
            if label == 0:
              gt_state[i][y][x] = 128
  result = {f"mVC_{n}": sum(accs[n]) / len(accs[n]) if accs[n] else float("nan")
            for n in windows}
  result.update({f"mVC_{n}_per_video": np.mean(video_means[n]) if video_means[n] else float("nan")
                 for n in windows})
  result.update({f"VEC_{n}": _reference_vspw_miou(pairs[n], num_classes) for n in windows})
  return result


@pytest.mark.parametrize("vec_quirks, vc_convention",
                         [(False, "vspw"), (True, "vspw"), (False, "dcfm"), (True, "dcfm")])
def test_matches_brute_force_reference(vec_quirks, vc_convention):
  rng = np.random.default_rng(7)
  videos = [_random_video(rng, length) for length in (12, 16, 17, 19, 26, 31)]
  metric = VideoConsistency(RANDOM_CLASSES, vec_quirks=vec_quirks, vc_convention=vc_convention)
  for video in videos:
    metric.add_video(*video)
  expected = _reference(videos, RANDOM_CLASSES, (8, 16), vec_quirks, vc_convention)
  assert metric.summary() == pytest.approx(expected, nan_ok=True)
  assert metric.vc_windows[8] > 20 and 0.05 < expected["VEC_8"] < 0.95  # not trivial data


def test_random_videos_tell_the_vc_conventions_apart():
  """The reference data above has windows without GT-stable pixels and short videos, so the two
  conventions differ on it (the test above would not notice a convention that is ignored)."""
  rng = np.random.default_rng(7)
  videos = [_random_video(rng, length, shape=(1, 2)) for length in (12, 16, 17, 19, 26, 31)]
  summaries = {}
  for convention in ("vspw", "dcfm"):
    metric = VideoConsistency(RANDOM_CLASSES, vc_convention=convention)
    for video in videos:
      metric.add_video(*video)
    summaries[convention] = metric.summary()
    assert summaries[convention] == pytest.approx(
        _reference(videos, RANDOM_CLASSES, (8, 16), False, convention), nan_ok=True)
  assert summaries["dcfm"]["mVC_8"] != pytest.approx(summaries["vspw"]["mVC_8"])
  assert summaries["dcfm"]["VEC_8"] == summaries["vspw"]["VEC_8"]


@pytest.mark.parametrize("vc_convention", ["vspw", "dcfm"])
def test_labels_stable_for_longer_than_255_frames_match_the_reference(vc_convention):
  """Run lengths are counted in uint8 and capped at the longest window: uncapped, a label stable
  for 256 frames wraps to a run of 0 and the next windows of a long video (VSPW has videos of
  over 256 frames) see the pixel as unstable. 300 frames of 1x3: a constant pixel, one whose
  prediction changes once at frame 250, and one of rare changes."""
  length = 300
  gts = np.zeros((length, 1, 3), np.uint8)
  preds = np.zeros_like(gts)
  gts[:, 0, 1], preds[250:, 0, 1] = 1, 2
  preds[:250, 0, 1] = 1
  gts[:, :, 2:], preds[:, :, 2:] = _random_video(np.random.default_rng(5), length, shape=(1, 1))
  metric = VideoConsistency(RANDOM_CLASSES, vc_convention=vc_convention)
  metric.add_video(gts, preds)
  expected = _reference([(gts, preds)], RANDOM_CLASSES, (8, 16), False, vc_convention)
  assert metric.summary() == pytest.approx(expected, nan_ok=True)
  assert expected["mVC_16"] < 1.0


def test_other_window_lengths_match_the_reference():
  """Short windows (many per video) and one longer than every video (no window at all)."""
  rng = np.random.default_rng(3)
  videos = [_random_video(rng, length) for length in (17, 23)]
  metric = VideoConsistency(RANDOM_CLASSES, windows=(2, 5, 40))
  for video in videos:
    metric.add_video(*video)
  expected = _reference(videos, RANDOM_CLASSES, (2, 5, 40), quirks=False)
  assert metric.summary() == pytest.approx(expected, nan_ok=True)
  assert metric.vc_windows == {2: (17 - 2) + (23 - 2), 5: (17 - 5) + (23 - 5), 40: 0}


def test_random_videos_trigger_the_quirks():
  rng = np.random.default_rng(7)
  videos = [_random_video(rng, length) for length in (16, 17, 19, 26, 31)]
  clean = VideoConsistency(RANDOM_CLASSES)
  quirks = VideoConsistency(RANDOM_CLASSES, vec_quirks=True)
  for video in videos:
    clean.add_video(*video)
    quirks.add_video(*video)
  assert quirks.summary()["VEC_16"] == clean.summary()["VEC_16"]
  assert quirks.summary()["VEC_8"] != pytest.approx(clean.summary()["VEC_8"])
