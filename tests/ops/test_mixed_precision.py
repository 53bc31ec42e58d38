"""vssjax.ops.mixed_precision: float32 products whose gradients run in the operands' dtype."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from vssjax.ops.mixed_precision import float32_product

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
