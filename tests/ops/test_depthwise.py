"""vssjax.ops.depthwise: the shifted depth-wise conv and its hand-written gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.ops.depthwise import shifted_depthwise


def _grouped(x, kernel, pads):
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding=pads,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


def _value_and_grads(conv, x, kernel, pads, cotangent):
  y, vjp = jax.vjp(lambda x, k: conv(x, k, pads), x, kernel)
  return (y, *vjp(cotangent))


@pytest.mark.parametrize("kernel_hw, pads", [
    ((3, 3), ((1, 1), (1, 1))),
    ((13, 13), ((6, 6), (6, 6))),  # DTERN's combined CAM kernel
    ((1, 11), ((0, 0), (5, 5))),
    ((3, 5), ((0, 2), (4, 1))),  # asymmetric padding, output smaller than the input in H
])
def test_values_and_gradients_match_the_grouped_convolution(kernel_hw, pads):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 9, 14, 5)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((*kernel_hw, 1, 5)), jnp.float32)
  out_shape = jax.eval_shape(lambda: _grouped(x, kernel, pads)).shape
  cotangent = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
  ours = _value_and_grads(shifted_depthwise, x, kernel, pads, cotangent)
  reference = _value_and_grads(_grouped, x, kernel, pads, cotangent)
  for name, a, b in zip(("value", "input gradient", "kernel gradient"), ours, reference):
    assert a.shape == b.shape, name
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


def test_leading_axes_and_bfloat16_gradients():
  """Clips `[B, T, H, W, C]` go through as they are; in bf16 the value and both gradients
  accumulate in float32, as cuDNN's convolution does (so each is the float32 result of the same
  bf16 numbers rounded once: within one bf16 ulp; the value and the input gradient summed their
  bf16 terms one by one, several ulps off)."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 3, 8, 8, 4)), jnp.bfloat16)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 1, 4)), jnp.bfloat16)
  cotangent = jnp.asarray(rng.standard_normal((2, 3, 8, 8, 4)), jnp.bfloat16)
  pads = ((1, 1), (1, 1))
  y, dx, dkernel = _value_and_grads(shifted_depthwise, x, kernel, pads, cotangent)
  assert (y.dtype, dx.dtype, dkernel.dtype) == (jnp.bfloat16,) * 3
  flat = lambda a: a.astype(jnp.float32).reshape(6, 8, 8, 4)
  _, dx32, dkernel32 = _value_and_grads(_grouped, flat(x), kernel.astype(jnp.float32), pads,
                                        flat(cotangent))
  y32 = _grouped(flat(x), kernel.astype(jnp.float32), pads)
  for name, ours, exact in (("value", flat(y), y32), ("input gradient", flat(dx), dx32),
                            ("kernel gradient", dkernel.astype(jnp.float32), dkernel32)):
    np.testing.assert_allclose(ours, exact, rtol=2.0**-8, err_msg=name)
