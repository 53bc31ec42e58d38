"""vssjax.ops.mixed_precision: float32 products whose gradients run in the operands' dtype, and
biases whose bf16 gradients are summed in float32."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np

from vssjax.ops.mixed_precision import add_bias, float32_product

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


def _bias_gradients(add):
  """The jitted gradients (y, bias) of `sum(add(y, bias) * weights)`, compiled as in a training
  step: the bias's reduction fused with what makes its cotangent (all arguments, nothing
  constant-folded)."""
  loss = lambda y, bias, weights: jnp.sum(add(y, bias).astype(jnp.float32) * weights)
  return jax.jit(jax.grad(loss, (0, 1)))


def test_add_bias_of_a_float32_output_is_the_plain_sum():
  rng = np.random.default_rng(0)
  y = jnp.asarray(rng.standard_normal((2, 5, 6, 8)), jnp.float32)
  bias = jnp.asarray(rng.standard_normal(8), jnp.float32)
  weights = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  plain = lambda y, bias: y + bias
  np.testing.assert_array_equal(add_bias(y, bias), plain(y, bias))
  for a, b in zip(_bias_gradients(add_bias)(y, bias, weights),
                  _bias_gradients(plain)(y, bias, weights)):
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
  cotangent, grad_bias = _bias_gradients(add_bias)(y, bias, weights)
  assert cotangent.dtype == jnp.bfloat16 and grad_bias.dtype == jnp.float32
  exact = np.asarray(cotangent, np.float64).sum(0)
  np.testing.assert_allclose(grad_bias, exact, rtol=2 ** -8)  # one bf16 rounding
  sums = lambda add: re.findall(r"applies stablehlo\.add .* -> tensor<4x(\w+)>",
                                _bias_gradients(add).lower(y, bias, weights).as_text())
  assert sums(add_bias) == ["f32"] and "bf16" in sums(plain)
