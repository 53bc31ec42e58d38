"""vssjax.ops.mixed_precision: float32 products whose gradients run in the operands' dtype, and
biases and broadcast operands whose bf16 gradients are summed in float32."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.ops.mixed_precision import add_bias, broadcast_add, float32_product

_SCORES = functools.partial(jnp.einsum, "btnh,bsnh->bnts")


def _operands(dtype):
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.standard_normal((2, 6, 2, 8)), dtype),
          jnp.asarray(rng.standard_normal((2, 5, 2, 8)), dtype))


def _loss(product):
  weights = jnp.asarray(np.random.default_rng(1).standard_normal((2, 2, 6, 5)), jnp.float32)
  return lambda q, k: jnp.sum(product(q, k) * weights)


def _dot_operand_dtypes(fn, *args) -> set[tuple[str, ...]]:
  return {tuple(str(v.aval.dtype) for v in eqn.invars)
          for eqn in jax.make_jaxpr(fn)(*args).jaxpr.eqns if eqn.primitive.name == "dot_general"}


def test_float32_operands_are_the_plain_product():
  q, k = _operands(jnp.float32)
  plain = lambda q, k: _SCORES(q, k, preferred_element_type=jnp.float32)
  ours = lambda q, k: float32_product(_SCORES, q, k)
  np.testing.assert_array_equal(ours(q, k), plain(q, k))
  for a, b in zip(jax.grad(_loss(ours), (0, 1))(q, k), jax.grad(_loss(plain), (0, 1))(q, k)):
    np.testing.assert_array_equal(a, b)


def test_bfloat16_value_is_float32_and_gradient_products_are_bfloat16():
  q, k = _operands(jnp.bfloat16)
  ours = lambda q, k: float32_product(_SCORES, q, k)
  out = ours(q, k)
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(out, _SCORES(q, k, preferred_element_type=jnp.float32))
  grad = jax.grad(_loss(ours), (0, 1))
  # JAX's own transpose contracts the float32 cotangent with the bf16 operand (promoted to
  # float32 when lowered).
  plain = lambda q, k: _SCORES(q, k, preferred_element_type=jnp.float32)
  assert any("float32" in pair
             for pair in _dot_operand_dtypes(jax.grad(_loss(plain), (0, 1)), q, k))
  assert _dot_operand_dtypes(grad, q, k) == {("bfloat16", "bfloat16")}
  reference = jax.grad(_loss(plain), (0, 1))(q.astype(jnp.float32), k.astype(jnp.float32))
  for a, b in zip(grad(q, k), reference):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(a), b, rtol=3e-2, atol=3e-2)


def _sum_gradients(add_fn):
  """The jitted gradients (x, y) of `sum(add_fn(x, y) * weights)`, compiled as in a training
  step: the broadcast operand's reduction fused with what makes its cotangent (all arguments,
  nothing constant-folded)."""
  loss = lambda x, y, weights: jnp.sum(add_fn(x, y).astype(jnp.float32) * weights)
  return jax.jit(jax.grad(loss, (0, 1)))


def test_add_bias_of_a_float32_output_is_the_plain_sum():
  rng = np.random.default_rng(0)
  y = jnp.asarray(rng.standard_normal((2, 5, 6, 8)), jnp.float32)
  bias = jnp.asarray(rng.standard_normal(8), jnp.float32)
  weights = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  plain = lambda y, bias: y + bias
  np.testing.assert_array_equal(add_bias(y, bias), plain(y, bias))
  for a, b in zip(_sum_gradients(add_bias)(y, bias, weights),
                  _sum_gradients(plain)(y, bias, weights)):
    np.testing.assert_array_equal(a, b)


def test_add_bias_sums_a_bfloat16_outputs_bias_gradient_in_float32():
  """230400 rows, MiT-B0's stage 1 at a batch of 16 at 480x480. JAX's own gradient of a bf16 bias
  add is a bf16 sum (how far off it ends depends on XLA's fusion: tests/models/test_layers.py has
  one 88% off); `add_bias`'s sums in float32 and rounds once to bf16, as autocast does (then cast
  to the float32 bias's dtype). The value is the bf16 sum; y's gradient is the bias add's
  cotangent, whose sum the bias's gradient is."""
  rng = np.random.default_rng(0)
  rows, channels = 230400, 4
  y = jnp.asarray(rng.uniform(0, 2, (rows, channels)), jnp.bfloat16)
  bias = jnp.asarray(rng.standard_normal(channels), jnp.float32)
  weights = jnp.asarray(rng.uniform(0.5, 1.5, (rows, channels)), jnp.float32)
  plain = lambda y, bias: y + bias.astype(y.dtype)
  out = add_bias(y, bias)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out, plain(y, bias))
  cotangent, grad_bias = _sum_gradients(add_bias)(y, bias, weights)
  assert cotangent.dtype == jnp.bfloat16 and grad_bias.dtype == jnp.float32
  exact = np.asarray(cotangent, np.float64).sum(0)
  np.testing.assert_allclose(grad_bias, exact, rtol=2 ** -8)  # one bf16 rounding
  sums = lambda add: re.findall(r"applies stablehlo\.add .* -> tensor<4x(\w+)>",
                                _sum_gradients(add).lower(y, bias, weights).as_text())
  assert sums(add_bias) == ["f32"] and "bf16" in sums(plain)


def test_broadcast_add_sums_each_broadcast_operands_bfloat16_gradient_in_float32():
  """DTERN's CAM adds a row descriptor [N, 1, W, C] and a column one [N, H, 1, C]: each gradient
  sums the cotangent over the axis it was broadcast along, a bf16 sum from JAX; `broadcast_add`'s
  are float32 sums rounded once. The value is the bf16 sum."""
  rng = np.random.default_rng(0)
  rows = jnp.asarray(rng.uniform(0, 2, (2, 1, 300, 4)), jnp.bfloat16)
  columns = jnp.asarray(rng.uniform(0, 2, (2, 200, 1, 4)), jnp.bfloat16)
  weights = jnp.asarray(rng.uniform(0.5, 1.5, (2, 200, 300, 4)), jnp.float32)
  np.testing.assert_array_equal(broadcast_add(rows, columns), rows + columns)
  grad_rows, grad_columns = _sum_gradients(broadcast_add)(rows, columns, weights)
  assert grad_rows.shape == rows.shape and grad_columns.shape == columns.shape
  cotangent = np.asarray(weights.astype(jnp.bfloat16), np.float64)  # d sum(z * w) / dz, in bf16
  np.testing.assert_allclose(grad_rows, cotangent.sum(1, keepdims=True), rtol=2 ** -8)
  np.testing.assert_allclose(grad_columns, cotangent.sum(2, keepdims=True), rtol=2 ** -8)
  sums = lambda add_fn: re.findall(r"applies stablehlo\.add .* -> tensor<[0-9x]+x(\w+)>",
                                   _sum_gradients(add_fn).lower(rows, columns, weights).as_text())
  assert set(sums(broadcast_add)) == {"f32"} and set(sums(lambda x, y: x + y)) == {"bf16"}


def test_broadcast_add_of_float32_operands_is_the_plain_sum_and_of_two_dtypes_refused():
  """A missing leading axis counts as broadcast (SD-CPC's token embedding [T, C] on [F, T, C])."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 5, 8)), jnp.float32)
  y = jnp.asarray(rng.standard_normal((5, 8)), jnp.float32)
  weights = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  np.testing.assert_array_equal(broadcast_add(x, y), x + y)
  for a, b in zip(_sum_gradients(broadcast_add)(x, y, weights),
                  _sum_gradients(lambda x, y: x + y)(x, y, weights)):
    np.testing.assert_array_equal(a, b)
  grad_y = _sum_gradients(broadcast_add)(x.astype(jnp.bfloat16), y.astype(jnp.bfloat16), weights)[1]
  np.testing.assert_allclose(grad_y, np.asarray(weights.astype(jnp.bfloat16), np.float64).sum(0),
                             rtol=2 ** -8)
  same = x.astype(jnp.bfloat16)  # equal shapes: nothing summed, the plain sum (jvp too)
  np.testing.assert_array_equal(jax.jvp(broadcast_add, (same, same), (same, same))[1], same + same)
  with pytest.raises(TypeError, match="operands of one dtype, not bfloat16 and float32"):
    broadcast_add(x.astype(jnp.bfloat16), y)
