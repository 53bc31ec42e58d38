"""TC (ETC's temporal consistency) on hand-built pairs with known answers."""
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.metrics.temporal_consistency import TemporalConsistency, _warp_labels
from vssjax.ops.warp import warp


def _flow(shape, dx=0.0, dy=0.0):
  flow = np.zeros(shape + (2,), np.float32)
  flow[..., 0], flow[..., 1] = dx, dy
  return flow


def test_hand_counted_pair_without_motion():
  current = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
  following = np.array([[0, 1, 1, 1], [0, 1, 1, 1]])
  metric = TemporalConsistency(3)
  metric.add_pair(current, following, _flow(current.shape))
  # class 0: I = 2, U = 4; class 1: I = 4, U = 6; class 2 never predicted: IoU 0, still averaged.
  assert metric.pairs == 1
  assert metric.summary()["TC"] == pytest.approx((2 / 4 + 4 / 6 + 0) / 3)


@pytest.mark.parametrize("warp_mode", ["bilinear", "nearest"])
def test_motion_compensated_by_the_flow_is_perfectly_consistent(warp_mode):
  current = np.array([[0, 0, 1, 1, 1]] * 3)
  following = np.array([[0, 0, 0, 1, 1]] * 3)  # the boundary moved one pixel right
  # Frame i+1 sampled at x + 1 reconstructs frame i (the last column clamps and still agrees).
  metric = TemporalConsistency(2, warp_mode)
  metric.add_pair(current, following, _flow(current.shape, dx=1.0))
  assert metric.summary()["TC"] == 1.0
  unwarped = TemporalConsistency(2, warp_mode)
  unwarped.add_pair(current, following, _flow(current.shape))
  assert unwarped.summary()["TC"] < 1.0


def test_identical_static_predictions_give_100_percent():
  predictions = np.random.default_rng(0).integers(0, 5, (4, 6, 7))
  predictions[:] = predictions[0]
  metric = TemporalConsistency(5)
  metric.add_video(predictions, lambda i: _flow((6, 7)))
  assert metric.pairs == 3 and metric.summary()["TC"] == 1.0


def test_released_bilinear_warp_creates_intermediate_ids_and_nearest_does_not():
  current = np.array([[1, 1]])
  following = np.array([[0, 2]])
  flow = _flow(current.shape, dx=0.5)  # pixel 0 samples halfway between ids 0 and 2
  bilinear, nearest = TemporalConsistency(3, "bilinear"), TemporalConsistency(3, "nearest")
  bilinear.add_pair(current, following, flow)
  nearest.add_pair(current, following, flow)
  # bilinear: warped [1, 2] (0.5 * 0 + 0.5 * 2 = id 1, which is in neither map); nearest: [2, 2].
  assert bilinear.matrix.matrix[1, 1] == 1 and bilinear.summary()["TC"] == pytest.approx(1 / 6)
  assert nearest.matrix.matrix[1, 1] == 0 and nearest.summary()["TC"] == 0.0


def test_merge_equals_one_pass_and_rejects_other_settings():
  rng = np.random.default_rng(1)
  predictions = rng.integers(0, 4, (5, 8, 9))
  flows = rng.uniform(-2, 2, (4, 8, 9, 2)).astype(np.float32)
  whole, first, second = (TemporalConsistency(4) for _ in range(3))
  whole.add_video(predictions, lambda i: flows[i])
  first.add_video(predictions[:3], lambda i: flows[i])
  second.add_video(predictions[2:], lambda i: flows[2 + i])
  first.merge(second)
  assert first.pairs == whole.pairs == 4
  np.testing.assert_array_equal(first.matrix.matrix, whole.matrix.matrix)
  with pytest.raises(ValueError, match="merge"):
    first.merge(TemporalConsistency(4, "nearest"))


def test_bad_input_raises():
  metric = TemporalConsistency(3)
  with pytest.raises(ValueError, match="outside"):
    metric.add_pair(np.zeros((2, 2), int), np.full((2, 2), 3), _flow((2, 2)))
  with pytest.raises(ValueError, match=r"\[H, W, 2\]"):
    metric.add_pair(np.zeros((2, 2), int), np.zeros((2, 2), int), _flow((2, 3)))
  with pytest.raises(ValueError, match=r"^frames 0-1: .*\[H, W, 2\]"):
    metric.add_video(np.zeros((3, 2, 2), int), lambda i: _flow((2, 3)))
  with pytest.raises(ValueError, match="warp mode"):
    TemporalConsistency(3, "bicubic")
  assert np.isnan(metric.summary()["TC"])


def _to_float32(exact: Fraction) -> np.float32:
  """`exact` rounded to the nearest float32, ties to even (as one FMA rounds)."""
  guess = np.float32(float(exact))  # within one float32 step of the answer
  candidates = [np.nextafter(guess, np.float32(-np.inf)), guess,
                np.nextafter(guess, np.float32(np.inf))]
  return min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact),
                                        int(np.asarray(c).view(np.int32)) & 1))


def _resample2d_reference(labels, flow, fourth_term="fused"):
  """NVIDIA/flownet2-pytorch's `resample2d_kernel.cu` (float) on class ids, in numpy with exact
  rationals, then the release's uint8 cast. float32 sampling point and fractions alpha, beta; the
  first three terms `(1. - alpha) * ...` formed in float64 and rounded to float32, summed in
  float32; the fourth `(alpha)*(beta) * value` all float32, fused with the add by nvcc's default
  FMA contraction ('fused'); 'rounded' rounds its product first (no contraction), 'float64' forms
  it like the others."""
  height, width = labels.shape
  xf = np.arange(width, dtype=np.float32)[None, :] + flow[..., 0]
  yf = np.arange(height, dtype=np.float32)[:, None] + flow[..., 1]
  alpha, beta = xf - np.floor(xf), yf - np.floor(yf)  # float32
  a64, b64 = alpha.astype(np.float64), beta.astype(np.float64)
  left, right = (np.clip(np.floor(xf) + d, 0, width - 1).astype(int) for d in (0, 1))
  top, bottom = (np.clip(np.floor(yf) + d, 0, height - 1).astype(int) for d in (0, 1))
  values = labels.astype(np.float64)
  total = np.zeros(labels.shape, np.float32)
  for weight, rows, cols in (((1 - a64) * (1 - b64), top, left), (a64 * (1 - b64), top, right),
                             ((1 - a64) * b64, bottom, left)):
    total = total + (weight * values[rows, cols]).astype(np.float32)
  last = values[bottom, right].astype(np.float32)
  if fourth_term == "float64":
    total = total + (a64 * b64 * values[bottom, right]).astype(np.float32)
  elif fourth_term == "rounded":
    total = total + alpha * beta * last
  else:
    product = alpha * beta  # float32, rounded
    total = np.vectorize(lambda s, p, v: _to_float32(Fraction(float(s)) + Fraction(float(p))
                                                     * Fraction(float(v))),
                         otypes=[np.float32])(total, product, last)
  return total.astype(np.uint8)


def test_released_warp_truncates_exactly_like_the_flownet2_kernel():
  rng = np.random.default_rng(3)
  labels = np.kron(rng.integers(0, 19, (6, 8)), np.ones((8, 8), int))  # uniform 8x8 blocks
  flow = rng.uniform(-3, 3, labels.shape + (2,)).astype(np.float32)
  expected = _resample2d_reference(labels, flow)
  np.testing.assert_array_equal(_warp_labels(labels, flow, "bilinear"), expected)
  # Inside uniform blocks some sums round to just below the id and truncate to the id below,
  # at pixels that depend on every rounding step of the kernel: float32 terms throughout, the
  # fourth term rounded before its add, or formed in float64 all truncate elsewhere.
  interior = np.kron(np.ones((6, 8), bool), np.pad(np.ones((2, 2), bool), 3))
  assert (expected[interior] != labels[interior]).any()
  float32_terms = np.floor(warp(jnp.asarray(labels, jnp.float32)[None, ..., None],
                                jnp.asarray(flow)[None]))[0, ..., 0]
  assert (np.asarray(float32_terms) != expected).any()
  for other in ("rounded", "float64"):
    assert (_resample2d_reference(labels, flow, other) != expected).any(), other
