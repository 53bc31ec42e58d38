"""Image and label-map resizing with exactly PyTorch's `F.interpolate` semantics.

Checkpoints trained in PyTorch only reproduce their published numbers when every resize matches
torch's (`mode='bilinear'` without antialiasing, both `align_corners` values, and `'nearest'` for
labels). `jax.image.resize` differs from torch when downsampling (it antialiases) and has no
`align_corners=True`, so both resizes are written here from torch's index formulas.

Bilinear resizing is separable: per axis, every output pixel is a two-tap blend of the input pixels
`lo` and `hi` (torch's index formulas), i.e. a dense interpolation matrix (out x in, two non-zeros
per row). Sizes are static Python ints, so indices, weights and matrices are numpy constants built
at trace time. Three forms of that one linear map, each where XLA:CPU runs it best
(docs/benchmarks.md):
- the forward gathers the two taps and blends them (memory-bound; 3-6x faster than contracting the
  matrix, whose tiny inner dimension and transposes make a poor matmul);
- under differentiation the forward of integer-factor upsamplings (factors 2, 4, 8 without
  align_corners, where the taps repeat per output phase) is shifted copies weighted per phase
  instead (`_blend_phases`): XLA re-computes the resize inside the consumers' fusions, where a
  gather's output (laid out gathered-axis first) costs several times more;
- the backward of those upsamplings is the adjoint of the phase blend, written out (strided views
  of the gradient, weighted and shifted back); of other resizes it is the transposed matrix,
  because the gather's own gradient is a scatter-add, slower than that matmul.
"""
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _bilinear_source_coords(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
  """Fractional source coordinate of every output pixel, as torch's `upsample_bilinear2d`.

  torch does this arithmetic in float32; so do we, because float64 coordinates differ from
  torch's by up to ~1e-5 of a pixel at large sizes (measured 5e-5 max abs on a 120->480 resize).
  Its half-pixel formula `scale * (dst + 0.5) - 0.5` is ONE fused multiply-add in torch's
  kernels (its CPU build contracts it, and nvcc does by default on CUDA): rounding the product
  before subtracting 0.5 moves some coordinates by a float32 ulp at non-integer ratios (3e-5 px
  for 853 -> 214 and 864 -> 853, the test resize's way back; 3e-5 abs on unit-scale values).
  """
  f32 = np.float32
  dst = np.arange(out_size, dtype=f32)
  if align_corners:
    scale = f32(in_size - 1) / f32(out_size - 1) if out_size > 1 else f32(0)
    return dst * scale
  # Half-pixel centres; torch clamps negative coordinates to 0 for linear modes. The product of
  # two float32 values is exact in float64, and so is subtracting 0.5 from it wherever the result
  # is not clamped, so one rounding to float32 gives the fused multiply-add's value.
  scale = f32(in_size) / f32(out_size)
  fused = (np.float64(scale) * (dst + f32(0.5)).astype(np.float64) - 0.5).astype(f32)
  return np.maximum(fused, f32(0))


def _bilinear_taps(in_size: int, out_size: int, align_corners: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per output pixel: the two source indices (lo, hi) and the weight of hi (1 - it for lo)."""
  src = _bilinear_source_coords(in_size, out_size, align_corners)
  lo = np.minimum(src.astype(np.int64), in_size - 1)  # src >= 0, so truncation is floor.
  hi = np.minimum(lo + 1, in_size - 1)
  return lo, hi, src - lo.astype(np.float32)


def bilinear_matrix(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
  """The [out_size, in_size] float32 matrix that bilinearly resizes one axis like torch."""
  lo, hi, frac = _bilinear_taps(in_size, out_size, align_corners)
  matrix = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(matrix, (rows, lo), np.float32(1) - frac)
  np.add.at(matrix, (rows, hi), frac)
  return matrix


@functools.lru_cache(maxsize=None)
def _phase_taps(in_size: int, out_size: int, align_corners: bool
                ) -> tuple[tuple[int, float], ...] | None:
  """Per phase p of an integer-factor upsampling, (a_p, w_p) such that output s*i + p blends the
  edge-clamped x[i + a_p] and x[i + a_p + 1] with weight w_p on the second, when that reproduces
  torch's interpolation matrix exactly (align_corners=False at factors 2, 4, 8, ...); else None."""
  if out_size % in_size or in_size < 3:
    return None
  factor = out_size // in_size
  lo, _, frac = _bilinear_taps(in_size, out_size, align_corners)
  middle = in_size // 2
  taps = tuple((int(lo[middle * factor + p]) - middle, float(frac[middle * factor + p]))
               for p in range(factor))
  if any(offset not in (-1, 0) for offset, _ in taps):
    return None
  implied = np.zeros((out_size, in_size), np.float32)
  for i in range(in_size):
    for p, (offset, weight) in enumerate(taps):
      implied[i * factor + p, min(max(i + offset, 0), in_size - 1)] += np.float32(1) - weight
      implied[i * factor + p, min(i + offset + 1, in_size - 1)] += np.float32(weight)
  return taps if np.array_equal(implied,
                                bilinear_matrix(in_size, out_size, align_corners)) else None


def _shift_weights(taps: tuple[tuple[int, float], ...]) -> dict[int, np.ndarray]:
  """Per shift o in (-1, 0, 1), the [factor] weights of the edge-clamped x[i + o] in the output
  phases s*i + p (0 where a phase does not read that shift); shifts no phase reads are left out."""
  weights = {shift: np.zeros(len(taps), np.float32) for shift in (-1, 0, 1)}
  for p, (offset, weight) in enumerate(taps):
    weights[offset][p] += np.float32(1) - np.float32(weight)
    weights[offset + 1][p] += np.float32(weight)
  return {shift: w for shift, w in weights.items() if w.any()}


def _blend_phases(x: jax.Array, axis: int, taps: tuple[tuple[int, float], ...]) -> jax.Array:
  """Integer-factor upsampling of one axis without a gather: every shift of the edge-padded x,
  times its per-phase weights along a new phase axis, summed; then the phase axis is merged into
  `axis`. One broadcast multiply-add per shift: no gather (whose output XLA lays out transposed)
  and no concatenation of the phases (XLA:CPU's concatenate fusion interleaved DTERN's loss logits
  at 0.4 GB/s, docs/benchmarks.md). A phase's weight 0 on a shift it does not read multiplies that
  neighbour by 0: the values equal the gather's for finite inputs."""
  size, factor = x.shape[axis], len(taps)
  padding = [(0, 0)] * x.ndim
  padding[axis] = (1, 1)
  padded = jnp.pad(x, padding, mode="edge")
  weight_shape = [1] * (x.ndim + 1)
  weight_shape[axis + 1] = factor
  out = None
  for shift, weights in _shift_weights(taps).items():
    view = jax.lax.slice_in_dim(padded, 1 + shift, 1 + shift + size, axis=axis)
    term = jnp.expand_dims(view, axis + 1) * jnp.asarray(weights.reshape(weight_shape), x.dtype)
    out = term if out is None else out + term
  return out.reshape(x.shape[:axis] + (size * factor,) + x.shape[axis + 1:])


def _unblend_phases(grad: jax.Array, axis: int, taps: tuple[tuple[int, float], ...]
                    ) -> jax.Array:
  """The adjoint of `_blend_phases`: per shift, the output phases' gradients weighted and summed
  (in float32, like the matmul it replaces), then shifted back with the edge clamps folded in.
  Strided views, multiplies and adds: 2-9x faster on XLA:CPU than the transposed interpolation
  matrix, and up to 3x faster than JAX's own transpose of the phase blend (docs/benchmarks.md)."""
  factor = len(taps)
  size = grad.shape[axis] // factor
  phases = grad.reshape(grad.shape[:axis] + (size, factor) + grad.shape[axis + 1:])
  phase = lambda p: jax.lax.index_in_dim(phases, p, axis + 1, keepdims=False).astype(jnp.float32)
  per_shift = {}  # shift o -> the gradient of the edge-clamped x[i + o], at every i
  for shift, weights in _shift_weights(taps).items():
    per_shift[shift] = functools.reduce(jnp.add, [phase(p) * w for p, w in enumerate(weights) if w])
  piece = lambda x, start, stop: jax.lax.slice_in_dim(x, start, stop, axis=axis)
  zeros = lambda x: jnp.zeros_like(piece(x, 0, 1))
  out = per_shift[0]
  if -1 in per_shift:  # x[max(i - 1, 0)] was read at i: x[0] at i = 0 and 1, x[j] at j + 1
    g = per_shift[-1]
    out = out + jnp.concatenate([piece(g, 0, 1) + piece(g, 1, 2), piece(g, 2, size), zeros(g)],
                                axis)
  if 1 in per_shift:  # x[min(i + 1, size - 1)] was read at i: x[j] at j - 1, x[size - 1] at both
    g = per_shift[1]
    out = out + jnp.concatenate(
        [zeros(g), piece(g, 0, size - 2), piece(g, size - 2, size - 1) + piece(g, size - 1, size)],
        axis)
  return out.astype(grad.dtype)


def _blend_axis(x: jax.Array, out_size: int, axis: int, align_corners: bool, *,
                phases: bool = False) -> jax.Array:
  """Resizes one axis of `x`: (1 - w) * x[lo] + w * x[hi], as torch's `upsample_bilinear2d`;
  with `phases`, integer-factor upsamplings go through `_blend_phases` instead of a gather."""
  if x.shape[axis] == out_size:  # torch's source coordinates are then exactly the output's
    return x
  taps = _phase_taps(x.shape[axis], out_size, align_corners) if phases else None
  if taps is not None:
    return _blend_phases(x, axis, taps)
  lo, hi, frac = _bilinear_taps(x.shape[axis], out_size, align_corners)
  shape = [1] * x.ndim
  shape[axis] = out_size
  w_hi = jnp.asarray(frac.reshape(shape), x.dtype)
  w_lo = jnp.asarray((np.float32(1) - frac).reshape(shape), x.dtype)
  return jnp.take(x, lo, axis=axis) * w_lo + jnp.take(x, hi, axis=axis) * w_hi


def _blend(x: jax.Array, size: tuple[int, int], align_corners: bool, phases: bool) -> jax.Array:
  """Both axes blended in float32 at least and rounded to x's dtype once, as torch's kernels
  blend a bfloat16 map (in their float32 `opmath` type): blending in bfloat16 rounded the weights
  and every tap, up to 4 bf16 ulps off the map torch returns (DTERN's fusion, PPM's upsampling)."""
  dtype = x.dtype
  x = x.astype(jnp.promote_types(dtype, jnp.float32))
  x = _blend_axis(x, size[0], x.ndim - 3, align_corners, phases=phases)
  return _blend_axis(x, size[1], x.ndim - 2, align_corners, phases=phases).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _resize_bilinear(x: jax.Array, in_hw: tuple[int, int], size: tuple[int, int],
                     align_corners: bool) -> jax.Array:
  del in_hw  # x's own (H, W); passed only so that the backward knows it
  return _blend(x, size, align_corners, phases=False)


def _resize_bilinear_fwd(x, in_hw, size, align_corners):
  """The forward of a differentiated resize: the same values, in the form the backward's fusions
  re-compute cheaply (module docstring)."""
  del in_hw
  return _blend(x, size, align_corners, phases=True), None


def _transpose_axis(grad: jax.Array, in_size: int, axis: int, align_corners: bool) -> jax.Array:
  """The adjoint of `_blend_axis` on one axis: of an integer-factor upsampling `_unblend_phases`,
  otherwise the transposed interpolation matrix at HIGHEST precision (so that GPU/TPU default
  matmul precision, TF32 or bf16 passes, does not degrade the pinned numerics)."""
  if in_size == grad.shape[axis]:
    return grad
  taps = _phase_taps(in_size, grad.shape[axis], align_corners)
  if taps is not None:
    return _unblend_phases(grad, axis, taps)
  matrix = jnp.asarray(bilinear_matrix(in_size, grad.shape[axis], align_corners), grad.dtype)
  grad = jnp.tensordot(matrix, grad, axes=((0,), (axis,)), precision=jax.lax.Precision.HIGHEST)
  return jnp.moveaxis(grad, 0, axis)


def _resize_bilinear_bwd(in_hw, size, align_corners, _, grad):
  del size
  grad = _transpose_axis(grad, in_hw[1], grad.ndim - 2, align_corners)
  return (_transpose_axis(grad, in_hw[0], grad.ndim - 3, align_corners),)


_resize_bilinear.defvjp(_resize_bilinear_fwd, _resize_bilinear_bwd)


def _check_size(size: Sequence[int]) -> tuple[int, int]:
  if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
    raise ValueError(f"size must be two positive ints (height, width), got {size!r}")
  return int(size[0]), int(size[1])


def resize_bilinear(x: jax.Array, size: Sequence[int], *, align_corners: bool = False
                   ) -> jax.Array:
  """Bilinear resize of `[..., H, W, C]` (NHWC or any leading dims) to `size=(h, w)`.

  Matches `torch.nn.functional.interpolate(mode='bilinear', align_corners=..., antialias=False)`
  for up- and downsampling at any (non-integer) ratio. Floating-point inputs only; the result has
  the dtype of `x`.
  """
  if x.ndim < 3:
    raise ValueError(f"resize_bilinear expects [..., H, W, C], got shape {x.shape}")
  out_h, out_w = _check_size(size)
  in_h, in_w = x.shape[-3], x.shape[-2]
  if (in_h, in_w) == (out_h, out_w):
    return x
  return _resize_bilinear(x, (in_h, in_w), (out_h, out_w), align_corners)


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """Source index of every output pixel for torch's legacy 'nearest' mode.

  torch computes `min(floor(float32(dst) * float32(in / out)), in - 1)` in float32; doing the
  same arithmetic in float32 here keeps the rare borderline indices identical.
  """
  scale = np.float32(np.float32(in_size) / np.float32(out_size))
  dst = np.arange(out_size, dtype=np.float32)
  src = np.floor(dst * scale).astype(np.int64)
  return np.minimum(src, in_size - 1)


def resize_nearest(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """Nearest-neighbour resize of label maps laid out `[..., H, W]` (no channel axis).

  The LAST two axes are spatial, so `[H, W]`, `[B, H, W]` and `[B, T, H, W]` all work; to resize
  an NHWC array use `resize_nearest(jnp.moveaxis(x, -1, 0), ...)` or index it per channel.
  Semantics are torch `F.interpolate(mode='nearest')` (src = floor(dst * in / out)); any dtype,
  integer labels stay exact since this is a pure gather.
  """
  if x.ndim < 2:
    raise ValueError(f"resize_nearest expects [..., H, W], got shape {x.shape}")
  out_h, out_w = _check_size(size)
  in_h, in_w = x.shape[-2], x.shape[-1]
  if in_h != out_h:
    x = jnp.take(x, nearest_indices(in_h, out_h), axis=-2)
  if in_w != out_w:
    x = jnp.take(x, nearest_indices(in_w, out_w), axis=-1)
  return x
