"""Hand-computed cases for the torch-semantics resizes (torch parity is in tests/parity)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.ops import resize
from vssjax.ops.resize import bilinear_matrix, resize_bilinear, resize_nearest


def _row(values):
  """[1, 1, W, 1] NHWC array holding one row of `values`."""
  return jnp.asarray(values, jnp.float32).reshape(1, 1, -1, 1)


@pytest.mark.parametrize("align_corners, expected", [
    (False, [0.0, 0.25, 0.75, 1.0]),  # half-pixel centres, clamped at the borders
    (True, [0.0, 1 / 3, 2 / 3, 1.0]),  # corners pinned
])
def test_bilinear_upsample_2_to_4(align_corners, expected):
  out = resize_bilinear(_row([0.0, 1.0]), (1, 4), align_corners=align_corners)
  np.testing.assert_allclose(out.ravel(), expected, atol=1e-7)


def test_bilinear_downsample_by_two_averages_pairs_without_antialias():
  out = resize_bilinear(_row([1.0, 3.0, 5.0, 9.0]), (1, 2))
  np.testing.assert_allclose(out.ravel(), [2.0, 7.0], atol=1e-6)
  # align_corners keeps the end points.
  out = resize_bilinear(_row([1.0, 3.0, 5.0, 9.0]), (1, 2), align_corners=True)
  np.testing.assert_allclose(out.ravel(), [1.0, 9.0], atol=1e-6)


def test_bilinear_rows_sum_to_one_and_identity_is_noop():
  for in_size, out_size in ((5, 13), (13, 5), (7, 7), (1, 4), (4, 1)):
    for ac in (False, True):
      np.testing.assert_allclose(bilinear_matrix(in_size, out_size, ac).sum(1), 1.0, atol=1e-6)
  x = jnp.arange(12.0).reshape(1, 2, 3, 2)
  assert resize_bilinear(x, (2, 3)) is x


def test_bilinear_any_leading_dims_jit_and_gradient():
  x = jnp.ones((2, 3, 4, 5, 2))  # [B, T, H, W, C]
  out = jax.jit(lambda a: resize_bilinear(a, (7, 3)))(x)
  assert out.shape == (2, 3, 7, 3, 2)
  np.testing.assert_allclose(out, 1.0, atol=1e-6)
  # d(sum out)/dx = column sums of the two interpolation matrices (outer product).
  grad = jax.grad(lambda a: resize_bilinear(a, (7, 3)).sum())(jnp.ones((1, 4, 5, 1)))
  expected = np.outer(bilinear_matrix(4, 7, False).sum(0), bilinear_matrix(5, 3, False).sum(0))
  np.testing.assert_allclose(grad[0, :, :, 0], expected, rtol=1e-6)


def test_nearest_hand_cases_on_label_layouts():
  labels = jnp.asarray([[0, 1, 2, 3]], jnp.int32)  # [H=1, W=4]
  np.testing.assert_array_equal(resize_nearest(labels, (1, 2)), [[0, 2]])
  # Upsampling 2 -> 5: src = floor(dst * 0.4) = 0, 0, 0, 1, 1.
  np.testing.assert_array_equal(resize_nearest(jnp.asarray([[7, 9]]), (1, 5)), [[7, 7, 7, 9, 9]])
  batch = jnp.arange(2 * 3 * 2, dtype=jnp.int32).reshape(2, 3, 2)  # [B, H, W]
  out = resize_nearest(batch, (6, 1))
  assert out.dtype == jnp.int32 and out.shape == (2, 6, 1)
  np.testing.assert_array_equal(out[1, :, 0], [6, 6, 8, 8, 10, 10])


@pytest.mark.parametrize("in_size, out_size, borderline", [
    (480, 22, {11: 240}),  # 11 * 480/22 = 240 exactly: float32 stays on 240, float64 gives 239
    (720, 33, {11: 240, 22: 480}),
    (1024, 82, {41: 511}),  # 41 * 1024/82 = 512 exactly: torch's float32 falls to 511
])
def test_nearest_indices_use_torch_s_float32_scale(in_size, out_size, borderline):
  """torch's 'nearest' computes floor(float32(dst) * float32(in / out)) in float32; where the
  exact product is an integer the rounding of the scale decides the pixel, and a label map
  resized with another (float64) scale comes out shifted by one row there vs torch (indices
  checked against F.interpolate at these sizes)."""
  f32 = np.float32
  indices = resize.nearest_indices(in_size, out_size)
  expected = np.floor(np.arange(out_size, dtype=f32) * f32(f32(in_size) / f32(out_size)))
  np.testing.assert_array_equal(indices, np.minimum(expected.astype(np.int64), in_size - 1))
  assert {dst: int(indices[dst]) for dst in borderline} == borderline


def test_bad_sizes_are_rejected():
  with pytest.raises(ValueError, match="size"):
    resize_bilinear(jnp.ones((1, 2, 2, 1)), (0, 3))
  with pytest.raises(ValueError, match="H, W"):
    resize_nearest(jnp.ones((4,)), (2, 2))


def test_phase_taps_only_where_they_reproduce_torch_exactly():
  """Integer-factor upsampling without align_corners is periodic per phase (factor 2: weights
  0.75 on x[i-1] / 0.25 on x[i+1]); factor 3's float32 coordinates and align_corners are not."""
  assert resize._phase_taps(12, 24, False) == ((-1, 0.75), (0, 0.25))
  assert len(resize._phase_taps(60, 480, False)) == 8
  assert resize._phase_taps(12, 24, True) is None
  assert resize._phase_taps(5, 15, False) is None
  assert resize._phase_taps(24, 12, False) is None


@pytest.mark.parametrize("in_size", [3, 4, 7])  # 3: the smallest size with phase taps
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_phase_upsampling_gradient_is_the_transposed_matrix(in_size, factor):
  """The written-out adjoint of the phase blend (`_unblend_phases`, edge clamps included) is the
  transpose of torch's interpolation matrix, on each axis."""
  rng = np.random.default_rng(factor)
  out_size = in_size * factor
  cotangent = rng.standard_normal((2, out_size, out_size + factor, 3)).astype(np.float32)
  _, vjp = jax.vjp(lambda a: resize_bilinear(a, cotangent.shape[1:3]),
                   jnp.zeros((2, in_size, in_size + 1, 3), jnp.float32))
  (grad,) = vjp(jnp.asarray(cotangent))
  expected = np.einsum("oh,pw,bopc->bhwc", bilinear_matrix(in_size, out_size, False),
                       bilinear_matrix(in_size + 1, out_size + factor, False), cotangent)
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)


def test_phase_upsampling_gradient_keeps_bfloat16():
  """In bf16 the adjoint sums the phases in float32 and returns the input's dtype."""
  cotangent = jnp.asarray(np.random.default_rng(0).standard_normal((1, 32, 32, 2)), jnp.bfloat16)
  grads = {}  # from the same bf16-representable cotangent
  for dtype in (jnp.float32, jnp.bfloat16):
    _, vjp = jax.vjp(lambda a: resize_bilinear(a, (32, 32)), jnp.zeros((1, 4, 4, 2), dtype))
    (grads[dtype],) = vjp(jnp.asarray(cotangent, dtype))
  assert grads[jnp.bfloat16].dtype == jnp.bfloat16
  # One bf16 rounding between the two axes: errors relative to the gradient's largest entries.
  scale = float(np.abs(grads[jnp.float32]).max())
  np.testing.assert_allclose(np.float32(grads[jnp.bfloat16]), grads[jnp.float32], rtol=0,
                             atol=1e-2 * scale)


@pytest.mark.parametrize("in_hw, out_hw, align_corners", [
    ((6, 6), (97, 97), True), ((6, 6), (60, 60), False), ((6, 7), (120, 214), False),
    ((8, 8), (32, 32), False), ((60, 60), (15, 26), False)])
def test_bfloat16_maps_are_blended_in_float32_and_rounded_once(in_hw, out_hw, align_corners):
  """As torch's kernels blend a bf16 map (in float32): blending in bf16 rounded the weights and
  every tap, 4 ulps off torch's map. The differentiated form (phase blends for factor 4) too."""
  x = jnp.asarray(2 + np.random.default_rng(0).random((2, *in_hw, 3)), jnp.bfloat16)
  expected = resize_bilinear(x.astype(jnp.float32), out_hw, align_corners=align_corners)
  resized = lambda a: resize_bilinear(a, out_hw, align_corners=align_corners)
  for out in (resized(x), jax.vjp(resized, x)[0]):
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(out, expected.astype(jnp.bfloat16))


def test_half_pixel_source_coordinates_are_one_fused_multiply_add():
  """torch's `scale * (dst + 0.5) - 0.5` (align_corners=False) is one fused multiply-add; where
  the product rounded first gives another float32 (853 -> 214: one of the 214 coordinates, by
  3e-5 px) the coordinate is the single-rounding one."""
  f32 = np.float32
  scale = f32(853) / f32(214)
  half = np.arange(214, dtype=f32) + f32(0.5)
  fused = (scale.astype(np.float64) * half.astype(np.float64) - 0.5).astype(f32)
  two_roundings = scale * half - f32(0.5)
  assert (fused != two_roundings).any()
  np.testing.assert_array_equal(resize._bilinear_source_coords(853, 214, False), fused)
