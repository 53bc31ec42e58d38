"""Stride-1 depth-wise cross-correlation as shifted multiply-adds, with a hand-written gradient.

On XLA:CPU a grouped `lax.conv_general_dilated` with one group per channel is ~30x slower than
summing the kernel-tap-weighted shifted views of the zero-padded input (notes/jax_stack.md §6).
Left to autodiff, that sum differentiates badly: every tap's slice of the padded input is kept as
a residual, and the input gradient is built by padding each tap's `dy * k` back to the padded
shape, materialising kh*kw padded arrays and summing them (a 13x13 kernel makes 169). The custom
VJP keeps only the input and computes
- the input gradient as the same shifted sum over `dy` with the kernel flipped (the adjoint of a
  stride-1 correlation), one fused loop;
- the kernel gradient as one reduction per tap of `shifted x * dy` over every axis but the
  channels, accumulated in float32.
Alone, this took the synthetic MiT-B0 train step on the 2-core CPU from 286-348 to 221-235 ms
(docs/benchmarks.md).
As with `ops/resize.py`'s custom VJP, forward-mode differentiation (`jax.jvp`) is not defined.
"""
import functools

import jax
import jax.numpy as jnp

Pads = tuple[tuple[int, int], tuple[int, int]]


def _shifted_sum(x: jax.Array, taps: jax.Array, pads: Pads) -> jax.Array:
  """sum_{i,j} taps[i, j] * (x zero-padded by `pads`)[..., i:i+H', j:j+W', :], in x's dtype.

  Accumulated in float32 and rounded once, as cuDNN's bf16 convolution accumulates (adding the
  bf16 terms one by one erred 0.48 % on a [4, 60, 60, 256] map against float32, the grouped conv
  0.29 %); XLA fuses the sum into one loop either way, and float32 inputs are unchanged.
  """
  kh, kw = taps.shape[:2]
  height = x.shape[-3] + sum(pads[0]) - kh + 1
  width = x.shape[-2] + sum(pads[1]) - kw + 1
  padded = jnp.pad(x, ((0, 0),) * (x.ndim - 3) + pads + ((0, 0),))
  out = None
  for i in range(kh):
    for j in range(kw):
      term = (padded[..., i:i + height, j:j + width, :].astype(jnp.float32)
              * taps[i, j].astype(jnp.float32))
      out = term if out is None else out + term
  return out.astype(x.dtype)


def _shifted_view(x: jax.Array, di: int, dj: int, shape: tuple[int, ...]) -> jax.Array:
  """view[..., h, w, :] = x[..., h + di, w + dj, :] (zero outside `x`), of `shape`, as ONE
  `lax.pad` (negative amounts crop).

  The forward pads once and slices the padded array. Were the backward to slice the same padded
  array, XLA would merge the two and keep all kh*kw slices in memory from the forward on; a
  different expression of the same view keeps them transient (and measured faster).
  """
  config = [(0, 0, 0)] * (x.ndim - 3)
  config += [(-di, shape[-3] - x.shape[-3] + di, 0), (-dj, shape[-2] - x.shape[-2] + dj, 0),
             (0, 0, 0)]
  return jax.lax.pad(x, jnp.zeros((), x.dtype), config)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def shifted_depthwise(x: jax.Array, kernel: jax.Array, pads: Pads) -> jax.Array:
  """Depth-wise cross-correlation of `x` `[..., H, W, C]` with `kernel` `[kh, kw, 1, C]` (stride
  1, zero padding `pads` = ((top, bottom), (left, right))), in `x`'s dtype."""
  return _shifted_sum(x, kernel[:, :, 0], pads)


def _forward(x, kernel, pads):
  return shifted_depthwise(x, kernel, pads), (x, kernel)


def _backward(pads, residuals, dy):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  # y[h] = sum_i x[h + i - top] k[i], so dx[h] = sum_i' dy[h + i' - (kh - 1 - top)] k[kh - 1 - i'].
  flipped_pads = tuple((k - 1 - before, k - 1 - after)
                       for k, (before, after) in zip((kh, kw), pads))
  dx = _shifted_sum(dy, kernel[::-1, ::-1, 0], flipped_pads)
  x32, dy32 = x.astype(jnp.float32), dy.astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  dkernel = jnp.stack([
      jnp.stack([jnp.sum(_shifted_view(x32, i - pads[0][0], j - pads[1][0], dy.shape) * dy32,
                         axis=axes) for j in range(kw)])
      for i in range(kh)])
  return dx, dkernel[:, :, None].astype(kernel.dtype)


shifted_depthwise.defvjp(_forward, _backward)
