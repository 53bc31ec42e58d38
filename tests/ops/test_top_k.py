"""`top_k` and `kth_largest` against `lax.top_k`, and what a batch split over devices moves."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import split_over_two_devices
from vssjax.ops.top_k import kth_largest, top_k


@pytest.mark.parametrize("k", [1, 3, 12])
def test_the_same_values_and_indices_as_lax_top_k_ties_and_infinities_included(k):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 4, (2, 3, 12)).astype(np.float32)  # many ties in each row
  x[0, 1, ::2] = -np.inf  # masked entries, as the DSSA window's
  x[1, 2] = 0.0
  for dtype in (jnp.float32, jnp.bfloat16):
    values, indices = top_k(jnp.asarray(x, dtype), k)
    expected_values, expected_indices = jax.lax.top_k(jnp.asarray(x, dtype), k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(kth_largest(jnp.asarray(x, dtype), k), expected_values[..., -1:])


def test_integers_are_refused():
  """A negated integer row could overflow (int32's minimum, any unsigned value)."""
  with pytest.raises(TypeError, match="top_k ranks floats, got int32"):
    top_k(jnp.arange(4), 2)
  with pytest.raises(TypeError, match="kth_largest ranks floats, got uint8"):
    kth_largest(jnp.arange(4, dtype=jnp.uint8), 2)


def test_a_batch_split_over_two_devices_ranks_each_device_s_rows_where_lax_top_k_gathers():
  """Split along the batch, the sort moves nothing between the devices but the scalar sums of the
  results; `lax.top_k` all-gathers its whole operand (jax 0.10 and 0.11, XLA:CPU)."""
  x = np.random.default_rng(1).normal(size=(4, 3, 40)).astype(np.float32)
  weights = np.arange(5, dtype=np.float32)

  def summed(rank):
    def fn(x):
      values, indices = rank(x, 5)
      return jnp.sum(values * weights), jnp.sum(indices * weights), jnp.sum(kth_largest(x, 5))
    return fn

  moved, split, whole = split_over_two_devices(summed(top_k), (x,), split=(0,))
  assert all(op == "all-reduce" and set(shapes) <= {"f32[]"} for op, shapes in moved), moved
  np.testing.assert_allclose(split, whole, rtol=1e-6)
  np.testing.assert_allclose(whole, summed(jax.lax.top_k)(x), rtol=1e-6)
  moved_by_lax, _, _ = split_over_two_devices(summed(jax.lax.top_k), (x,), split=(0,))
  assert "all-gather" in {op for op, _ in moved_by_lax}
