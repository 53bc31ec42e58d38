"""TC (ETC's temporal consistency) on hand-built pairs with known answers."""
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


def _resample2d_reference(labels, flow):
  """FlowNet2's Resample2d kernel on class ids, in numpy, then the release's uint8 cast: float32
  sampling point and fractions, each term formed in float64 and rounded to float32, float32 sum."""
  height, width = labels.shape
  xf = np.arange(width, dtype=np.float32)[None, :] + flow[..., 0]
  yf = np.arange(height, dtype=np.float32)[:, None] + flow[..., 1]
  alpha, beta = (xf - np.floor(xf)).astype(np.float64), (yf - np.floor(yf)).astype(np.float64)
  left, right = (np.clip(np.floor(xf) + d, 0, width - 1).astype(int) for d in (0, 1))
  top, bottom = (np.clip(np.floor(yf) + d, 0, height - 1).astype(int) for d in (0, 1))
  values = labels.astype(np.float64)
  total = np.zeros(labels.shape, np.float32)
  taps = (((1 - alpha) * (1 - beta), top, left), (alpha * (1 - beta), top, right),
          ((1 - alpha) * beta, bottom, left), (alpha * beta, bottom, right))
  for weight, rows, cols in taps:
    total = total + (weight * values[rows, cols]).astype(np.float32)
  return total.astype(np.uint8)


def test_released_warp_truncates_exactly_like_the_flownet2_kernel():
  rng = np.random.default_rng(3)
  labels = np.kron(rng.integers(0, 19, (6, 8)), np.ones((8, 8), int))  # uniform 8x8 blocks
  flow = rng.uniform(-3, 3, labels.shape + (2,)).astype(np.float32)
  expected = _resample2d_reference(labels, flow)
  np.testing.assert_array_equal(_warp_labels(labels, flow, "bilinear"), expected)
  # Inside uniform blocks some sums round to just below the id and truncate to the id below,
  # and float32 terms would truncate at other pixels: the float64 terms matter.
  interior = np.kron(np.ones((6, 8), bool), np.pad(np.ones((2, 2), bool), 3))
  assert (expected[interior] != labels[interior]).any()
  float32_terms = np.floor(warp(jnp.asarray(labels, jnp.float32)[None, ..., None],
                                jnp.asarray(flow)[None]))[0, ..., 0]
  assert (np.asarray(float32_terms) != expected).any()
