"""`lax.conv_general_dilated` with non-overlapping convolutions computed as matrix products.

A convolution whose kernel equals its stride and has no padding or dilation (every 1x1 conv, and
patchify convs such as MiT's spatial-reduction `sr`) reads each input pixel once: it is a reshape
plus one matmul. XLA:CPU runs its convolution emitter for these about 2.5x slower than its matmul
(a 1x1 conv 512 -> 128 on 16x24x24: 12.0 ms vs 4.7 ms, docs/benchmarks.md); GPU and TPU lower both
forms to the same GEMM. Flax modules take this function as `nn.Conv(conv_general_dilated=...)`
(`vssjax.models.layers.Conv`), so parameters (kernel `[kh, kw, in, out]`) are unchanged; only
the summation order differs from the convolution's.
"""
from collections.abc import Sequence

import jax
import jax.numpy as jnp

_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_non_overlapping(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                        dimension_numbers, feature_group_count) -> bool:
  if lhs.ndim != 4 or feature_group_count != 1:
    return False
  if dimension_numbers != jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC):
    return False
  if tuple(window_strides) != tuple(rhs.shape[:2]):
    return False
  if any(d not in (None, 1) for dilation in (lhs_dilation, rhs_dilation)
         for d in (dilation if isinstance(dilation, Sequence) else (dilation,))):
    return False
  if padding == "SAME":  # flax's default: no padding when every size is a multiple of the stride
    return all(size % k == 0 for size, k in zip(lhs.shape[1:3], rhs.shape[:2]))
  return padding == "VALID" or (not isinstance(padding, str)
                                and all(tuple(p) == (0, 0) for p in padding))


def matmul_last_axis(x: jax.Array, kernel: jax.Array, **dot_kwargs) -> jax.Array:
  """`x [..., C] @ kernel [C, D]` as ONE 2-D `dot` over the flattened rows.

  Written as an `einsum` over `...c`, the weight gradient contracts several axes, which XLA:CPU
  may take in a permuted order and feed through a strided transpose (20 ms for the SegFormer
  decoder's gradient on the synthetic train step, docs/benchmarks.md); over one row axis it
  does not.
  """
  out = jnp.dot(x.reshape(-1, x.shape[-1]), kernel, **dot_kwargs)
  return out.reshape(*x.shape[:-1], kernel.shape[-1])


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, precision=None, **kwargs) -> jax.Array:
  """Drop-in for `lax.conv_general_dilated`: NHWC/HWIO convs with kernel == stride, no padding
  (VALID, zeros, or SAME where it pads nothing), no dilation and one group become reshape + matmul;
  everything else goes to lax unchanged.

  Like a VALID convolution, trailing rows/columns that do not fill a window are dropped.
  """
  if not kwargs and _is_non_overlapping(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, feature_group_count):
    kh, kw = rhs.shape[:2]
    if (kh, kw) == (1, 1):
      return matmul_last_axis(lhs, rhs[0, 0], precision=precision)
    n, h, w, c = lhs.shape
    h, w = h // kh, w // kw
    patches = lhs[:, :h * kh, :w * kw].reshape(n, h, kh, w, kw, c)
    return jnp.einsum("nhiwjc,ijco->nhwo", patches, rhs, precision=precision)
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      precision=precision, **kwargs)
