"""Backward warping and the occlusion mask on hand-built cases (torch parity: tests/parity)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.ops import warp as warp_ops

# Jitted: one compile per shape is far cheaper than op-by-op dispatch on the test CPU.
warp, warp_nearest = jax.jit(warp_ops.warp), jax.jit(warp_ops.warp_nearest)
occlusion_mask = jax.jit(warp_ops.occlusion_mask)


def _image(height=4, width=5, channels=2):
  return jnp.arange(height * width * channels, dtype=jnp.float32).reshape(1, height, width,
                                                                           channels)


def _constant_flow(x, dx, dy):
  flow = np.zeros(x.shape[:3] + (2,), np.float32)
  flow[..., 0], flow[..., 1] = dx, dy
  return jnp.asarray(flow)


@pytest.mark.parametrize("warp_fn", [warp, warp_nearest])
def test_zero_flow_is_identity(warp_fn):
  x = _image()
  np.testing.assert_array_equal(warp_fn(x, _constant_flow(x, 0, 0)), x)


@pytest.mark.parametrize("warp_fn", [warp, warp_nearest])
def test_integer_shift_samples_the_neighbour_and_clamps_at_the_border(warp_fn):
  x = _image()
  out = np.asarray(warp_fn(x, _constant_flow(x, 2, -1)))
  # out[y, x] = in[clip(y - 1), clip(x + 2)]
  rows = np.clip(np.arange(4) - 1, 0, 3)
  cols = np.clip(np.arange(5) + 2, 0, 4)
  np.testing.assert_array_equal(out[0], np.asarray(x)[0][rows][:, cols])


def test_bilinear_weights_use_the_unclamped_fraction():
  x = jnp.asarray([0.0, 10.0, 20.0]).reshape(1, 1, 3, 1)
  flow = jnp.asarray([[[0.25, 0.0], [-1.5, 0.0], [0.75, 0.0]]]).reshape(1, 1, 3, 2)
  # x=0 -> 0.25 (between 0 and 10); x=1 -> -0.5 (both corners clip to column 0);
  # x=2 -> 2.75 (both corners clip to column 2).
  np.testing.assert_allclose(np.ravel(warp(x, flow)), [2.5, 0.0, 20.0], atol=1e-6)


@pytest.mark.parametrize("axis", [2, 1], ids=["x", "y"])
def test_nearest_rounds_half_up_and_keeps_integer_dtype(axis):
  """Along either axis (a row of labels moved by u, a column by v), 0.5 px rounds up and 0.49
  down; rounding toward 0 on one axis would move label maps by a pixel under sub-pixel flow."""
  shape = [1, 1, 1, 1]
  shape[axis] = 3
  labels = jnp.asarray([3, 7, 9], jnp.int32).reshape(shape)
  offsets = np.asarray([0.5, 0.49, -1.6], np.float32)
  flow = np.zeros((*shape[:3], 2), np.float32)
  flow[..., 2 - axis] = offsets.reshape(shape[:3])  # u (channel 0) on x, v (channel 1) on y
  out = warp_nearest(labels, jnp.asarray(flow))
  assert out.dtype == jnp.int32
  np.testing.assert_array_equal(np.ravel(out), [7, 7, 3])


def test_bilinear_warp_rejects_integer_input_and_mismatched_flow():
  x = _image()
  with pytest.raises(ValueError, match="floating-point"):
    warp(x.astype(jnp.int32), _constant_flow(x, 0, 0))
  with pytest.raises(ValueError, match="same grid"):
    warp(x, jnp.zeros((1, 4, 4, 2)))
  with pytest.raises(ValueError, match="enable_x64"):  # would silently be float32 otherwise
    warp_ops.warp(x, _constant_flow(x, 0, 0), resample2d_rounding=True)


def test_occlusion_mask_is_exp_of_minus_abs_signed_channel_sum():
  image_t = jnp.asarray([[[[1.0, 2.0, 3.0], [0.5, -0.5, 0.0]]]])
  warped = jnp.asarray([[[[0.0, 3.0, 1.0], [0.0, 0.0, 0.0]]]])
  # Signed sums: (1 - 1 + 2) = 2 and (0.5 - 0.5 + 0) = 0 (an L1 would give 4 and 1).
  mask = occlusion_mask(image_t, warped)
  assert mask.shape == (1, 1, 2, 1)
  np.testing.assert_allclose(np.ravel(mask), [np.exp(-2.0), 1.0], rtol=1e-6)
  with pytest.raises(ValueError, match="normalised"):
    occlusion_mask(image_t.astype(jnp.uint8), warped)
