"""Backward warping by optical flow and ETC's photometric occlusion mask (specs/etc.md §4.2, §6).

`warp(x, flow)[b, y, x]` samples `x[b]` bilinearly at (x + u, y + v), with (u, v) = flow[b, y, x]
in pixels: the convention of `vssjax.flow` (`flow(a, b)` warps frame a onto frame b) and of
FlowNet2's backward flow. It reproduces FlowNet2's `Resample2d` (kernel_size 1), which ETC's
temporal loss and TC metric use: the four neighbour indices floor(.) and floor(.) + 1 are EACH
clipped to [0, W-1] x [0, H-1], while the interpolation weights come from the unclipped fractional
part. The four weight * value terms are added in the kernel's order (top-left, top-right,
bottom-left, bottom-right) to a float32 sum.

The kernel's own rounding (`resample2d_rounding=True`, under `jax.enable_x64(True)`) matters only
where a result is truncated to an integer (TC's released warp of class ids: a blend of one id that
rounds to just below it truncates to the id below). In NVIDIA/flownet2-pytorch's current
`resample2d_kernel.cu` (float instantiation) the fractions alpha, beta are float32 and the first
three terms, `(1. - alpha) * ...`, are formed in float64 (the `1.` literal) and rounded to float32
before the add; the fourth, `(alpha)*(beta) * value`, is all float32, and nvcc's default
`--fmad=true` contracts its last multiply with the add into one fused multiply-add (one rounding of
sum + float32(alpha*beta) * value). Here that fused step is formed in float64 (the product of two
float32 numbers is exact there) and rounded once to float32, which equals the FMA unless the
float64 sum itself rounds onto a float32 rounding midpoint (double rounding: rare). On class ids
in 8x8 blocks of 19 ids warped by random flows of up to 3 pixels, rounding the fourth product
before its add instead truncates 0.96 % of the pixels differently, forming it in float64 like the
others 0.81 % (tests/metrics/test_temporal_consistency.py holds the exact reference). The compiled
kernel was not run here (no GPU): the contraction is nvcc's default, not a measurement. By default
every term is formed in the dtype of `x`.

Equivalence with PyTorch: this equals `F.grid_sample(x, grid, mode='bilinear',
padding_mode='border', align_corners=True)` with `grid = 2 * (p + flow) / (size - 1) - 1`. Per
axis, a coordinate left of 0 has both clipped corners at index 0 (and border padding clamps the
coordinate to 0), one right of size-1 has both at size-1, and inside the image neither clips, so
the values and the gradients with respect to `x` agree everywhere. Gradients flow into `x`
(a scatter-add of the same weights); the flow gets the gradient of the weights only, which ETC
never uses since its flow is data.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_shapes(x: jax.Array, flow: jax.Array) -> None:
  if x.ndim != 4 or flow.ndim != 4 or flow.shape[-1] != 2 or flow.shape[:3] != x.shape[:3]:
    raise ValueError(f"warp expects x [B,H,W,C] and flow [B,H,W,2] on the same grid, got "
                     f"{x.shape} and {flow.shape}")


def _sampling_points(flow: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Absolute sampling coordinates (x + u, y + v), float32 [B, H, W] each."""
  height, width = flow.shape[1:3]
  flow = flow.astype(jnp.float32)
  cols = jnp.arange(width, dtype=jnp.float32)[None, None, :] + flow[..., 0]
  rows = jnp.arange(height, dtype=jnp.float32)[None, :, None] + flow[..., 1]
  return cols, rows


def _clipped_index(coord: jax.Array, size: int) -> jax.Array:
  """`coord` (already integral) clipped to [0, size-1] as int32; clipping in float first keeps
  huge flows from overflowing the integer cast."""
  return jnp.clip(coord, 0, size - 1).astype(jnp.int32)


def _gather(x: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """x [B, H, W, C] at integer (rows, cols) [B, H, W] -> [B, H, W, C]."""
  batch, height, width, channels = x.shape
  flat = x.reshape(batch, height * width, channels)
  index = (rows * width + cols).reshape(batch, -1, 1)
  return jnp.take_along_axis(flat, index, axis=1).reshape(rows.shape + (channels,))


def warp(x: jax.Array, flow: jax.Array, *, resample2d_rounding: bool = False) -> jax.Array:
  """Bilinear backward warp of `x` [B, H, W, C] by `flow` [B, H, W, 2] (Resample2d semantics).

  Returns [B, H, W, C] in the dtype of `x` (floating point). The fractional parts are float32, as
  in the kernel; `resample2d_rounding` rounds each step as the CUDA kernel does (module
  docstring; float32 `x`, 64-bit JAX), else every term is formed in x's dtype.
  """
  _check_shapes(x, flow)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"bilinear warp needs a floating-point x, got {x.dtype}; cast it (class ids "
                     f"as TC's released warp does) or use warp_nearest")
  if resample2d_rounding and (x.dtype != jnp.float32 or not jax.config.jax_enable_x64):
    raise ValueError("resample2d_rounding needs a float32 x and 64-bit JAX (call warp under "
                     f"jax.enable_x64(True)), got {x.dtype} with jax_enable_x64="
                     f"{jax.config.jax_enable_x64}")
  height, width = x.shape[1:3]
  cols, rows = _sampling_points(flow)
  left, top = jnp.floor(cols), jnp.floor(rows)
  alpha, beta = (cols - left)[..., None], (rows - top)[..., None]  # float32, as in the kernel
  x_left, x_right = _clipped_index(left, width), _clipped_index(left + 1, width)
  y_top, y_bottom = _clipped_index(top, height), _clipped_index(top + 1, height)
  top_left, top_right = _gather(x, y_top, x_left), _gather(x, y_top, x_right)
  bottom_left, bottom_right = _gather(x, y_bottom, x_left), _gather(x, y_bottom, x_right)
  if not resample2d_rounding:
    alpha, beta = alpha.astype(x.dtype), beta.astype(x.dtype)
    return ((1 - alpha) * (1 - beta) * top_left + alpha * (1 - beta) * top_right
            + (1 - alpha) * beta * bottom_left + alpha * beta * bottom_right)
  wide = jnp.float64
  alpha_wide, beta_wide = alpha.astype(wide), beta.astype(wide)

  def rounded_term(weight: jax.Array, value: jax.Array) -> jax.Array:
    return (weight * value.astype(wide)).astype(jnp.float32)

  out = rounded_term((1 - alpha_wide) * (1 - beta_wide), top_left)
  out = out + rounded_term(alpha_wide * (1 - beta_wide), top_right)
  out = out + rounded_term((1 - alpha_wide) * beta_wide, bottom_left)
  # fma(float32(alpha * beta), value, out): exact product, one rounding of the sum (docstring).
  fused = out.astype(wide) + (alpha * beta).astype(wide) * bottom_right.astype(wide)
  return fused.astype(jnp.float32)


def warp_nearest(x: jax.Array, flow: jax.Array) -> jax.Array:
  """Nearest-neighbour backward warp (any dtype, e.g. label maps [B, H, W, 1]).

  Samples at (floor(x + u + 0.5), floor(y + v + 0.5)) clipped to the image, so class ids are only
  moved, never blended: the clean alternative to bilinearly warping ids (specs/etc.md §6 step 5).
  """
  _check_shapes(x, flow)
  height, width = x.shape[1:3]
  cols, rows = _sampling_points(flow)
  return _gather(x, _clipped_index(jnp.floor(rows + 0.5), height),
                 _clipped_index(jnp.floor(cols + 0.5), width))


def occlusion_mask(image_t: jax.Array, warped_image: jax.Array) -> jax.Array:
  """ETC's validity mask M = exp(-|sum_c (I_t - I_warped)_c|), [B, H, W, 1].

  The images must be ImageNet-normalised floats ((x - mean) / std on the 0..255 scale, as
  `layers.normalize_images` makes them), the scale at which the released code computes it: the
  SIGNED sum over the three channels, then the absolute value (not an L1 distance). Integer
  (0..255) images would give a mask of ~0 everywhere, so they are rejected.
  """
  if not (jnp.issubdtype(image_t.dtype, jnp.floating)
          and jnp.issubdtype(warped_image.dtype, jnp.floating)):
    raise ValueError(f"occlusion_mask needs ImageNet-normalised float images, got dtypes "
                     f"{image_t.dtype} and {warped_image.dtype}")
  difference = jnp.sum(image_t.astype(jnp.float32) - warped_image.astype(jnp.float32), axis=-1,
                       keepdims=True)
  return jnp.exp(-jnp.abs(difference))
