"""Adaptive average pooling: torch's window rule by hand and vs `F.adaptive_avg_pool2d`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vssjax.ops.pooling import adaptive_avg_pool, adaptive_pool_matrix


def test_windows_overlap_when_not_divisible():
  # 5 -> 3: windows [0, 2), [1, 4), [3, 5): floor(i * 5 / 3) to ceil((i + 1) * 5 / 3).
  expected = np.array([[1 / 2, 1 / 2, 0, 0, 0],
                       [0, 1 / 3, 1 / 3, 1 / 3, 0],
                       [0, 0, 0, 1 / 2, 1 / 2]], np.float32)
  np.testing.assert_allclose(adaptive_pool_matrix(5, 3), expected, atol=1e-7)


# PPM bins over odd stride-8 grids (97 = 769 crop, 9x13 = 65x97 input), output larger than the
# input (windows of one pixel repeat) and a 1x1 global pool.
@pytest.mark.parity
@pytest.mark.parametrize("in_size, out_size", [
    ((9, 13), (6, 6)), ((9, 13), (3, 3)), ((97, 97), (6, 6)), ((7, 5), (2, 3)), ((4, 4), (6, 6)),
    ((9, 13), (1, 1)), ((12, 18), (6, 6))])
def test_matches_torch(in_size, out_size):
  x = np.random.default_rng(0).standard_normal((2, *in_size, 3)).astype(np.float32)
  expected = F.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), out_size)
  out = adaptive_avg_pool(jnp.asarray(x), out_size)
  assert out.shape == (2, *out_size, 3)
  np.testing.assert_allclose(out, expected.permute(0, 2, 3, 1).numpy(), atol=1e-6, rtol=0)


def test_int_size_leading_dims_and_gradient():
  x = jnp.arange(2 * 3 * 7 * 5 * 1, dtype=jnp.float32).reshape(2, 3, 7, 5, 1)
  out = adaptive_avg_pool(x, 1)
  np.testing.assert_allclose(out[..., 0, 0, 0], x.mean(axis=(2, 3, 4)), rtol=1e-6)
  # The global average spreads the gradient evenly over the window.
  grad = jax.grad(lambda v: adaptive_avg_pool(v, 1).sum())(x)
  np.testing.assert_allclose(grad, np.full(x.shape, 1 / 35, np.float32), rtol=1e-6)


def test_bfloat16_maps_are_averaged_in_float32_and_rounded_once():
  """As torch averages a bf16 map (in float32): bf16 averaging matrices (1/3600 rounded) and a
  rounded first axis put a 60x60 map's mean up to 1% off."""
  x = jnp.asarray(2 + np.random.default_rng(0).random((2, 60, 60, 4)), jnp.bfloat16)
  for size in (1, (6, 6), (2, 3)):
    out = adaptive_avg_pool(x, size)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        out, adaptive_avg_pool(x.astype(jnp.float32), size).astype(jnp.bfloat16))


def test_rejects_maps_without_channel_axis():
  with pytest.raises(ValueError, match=r"\[\.\.\., H, W, C\]"):
    adaptive_avg_pool(jnp.zeros((4, 4)), 2)
