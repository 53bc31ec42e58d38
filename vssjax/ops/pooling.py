"""Adaptive average pooling with exactly PyTorch's `F.adaptive_avg_pool2d` windows.

Output cell i of an axis of length `in_size` pooled to `out_size` averages the input range
[floor(i * in / out), ceil((i + 1) * in / out)). When `in_size` is not a multiple of `out_size`
neighbouring windows overlap (and windows are unequal), which a strided `avg_pool` cannot express;
PSPNet's pyramid pooling (bins 1, 2, 3, 6 over e.g. a 97x97 map) depends on it.

A rectangle average is separable, so like `resize.py` the op is two small [out, in] averaging
matrices applied with `einsum`: static numpy constants, exact up to float summation order,
jit-friendly and differentiable.
"""
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
  """The [out_size, in_size] float32 matrix whose row i averages torch's i-th window."""
  matrix = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)  # ceil division in integers
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def adaptive_avg_pool(x: jax.Array, size: int | Sequence[int]) -> jax.Array:
  """`[..., H, W, C]` -> `[..., h, w, C]` with torch's adaptive average pooling windows.

  `size` is `(h, w)` or one int for a square output. The contraction runs at HIGHEST precision so
  TPU/GPU default matmul precision does not degrade it, and in float32 at least, rounded to x's
  dtype once, as torch averages a bfloat16 map (in float32): averaging matrices in bfloat16 (1/n
  rounded) and a rounded first axis put a 60x60 map's mean up to 1% off.
  """
  if x.ndim < 3:
    raise ValueError(f"adaptive_avg_pool expects [..., H, W, C], got shape {x.shape}")
  out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
  if min(out_h, out_w) < 1:
    raise ValueError(f"output size must be positive, got {size!r}")
  dtype = x.dtype
  compute = jnp.promote_types(dtype, jnp.float32)
  mat_h = jnp.asarray(adaptive_pool_matrix(x.shape[-3], out_h), compute)
  mat_w = jnp.asarray(adaptive_pool_matrix(x.shape[-2], out_w), compute)
  highest = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,...hwc->...owc", mat_h, x.astype(compute), precision=highest)
  return jnp.einsum("pw,...hwc->...hpc", mat_w, x, precision=highest).astype(dtype)
