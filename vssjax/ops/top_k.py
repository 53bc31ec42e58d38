"""`jax.lax.top_k`'s results by a sort, which a batch split over devices leaves split.

XLA's SPMD partitioner gathers `lax.top_k`'s whole operand onto every device, whatever axes it is
split on (an all-gather of the global batch in a batch-split training step, and each device then
ranks every sample's rows). A sort along the last axis is partitioned along the others, so each
device ranks its own samples' rows and nothing moves (tests/ops/test_top_k.py).
"""
import jax
import jax.numpy as jnp
from jax import lax


def top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The `k` largest entries of each row of the floats `x` (its last axis) and their indices,
  largest first, equal entries by their index: `lax.top_k(x, k)`'s, but for NaN (which
  `lax.top_k` ranks first and this last) and signed zeros (which this takes as equal, where
  `lax.top_k` ranks +0 above -0). A stable sort of the negated row, with the indices as a second
  operand (negated integers could overflow: floats only)."""
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"top_k ranks floats, got {x.dtype}")
  axis = x.ndim - 1
  order = lax.broadcasted_iota(jnp.int32, x.shape, axis)
  negated, indices = lax.sort((-x, order), dimension=axis, is_stable=True, num_keys=1)
  return -negated[..., :k], indices[..., :k]


def kth_largest(x: jax.Array, k: int) -> jax.Array:
  """The `k`-th largest entry of each row of the floats `x` (its last axis), keeping the axis:
  `top_k(x, k)[0][..., -1:]`, by a sort of the values alone."""
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"kth_largest ranks floats, got {x.dtype}")
  return -lax.sort(-x, dimension=x.ndim - 1)[..., k - 1:k]
