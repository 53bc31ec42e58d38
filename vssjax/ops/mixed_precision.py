"""Products with a float32 result whose gradients run in the operands' (bf16) dtype.

A `dot_general` of bf16 operands with `preferred_element_type=float32` (attention scores before
the float32 softmax, the folded SegFormer head's per-level products that are summed before one
rounding) gets a float32 cotangent. JAX's transpose rule contracts that float32 cotangent with the
other, bf16, operand, which promotes it: both gradient products of every such dot ran as
float32 x float32 matmuls (TF32 on NVIDIA GPUs, twice the bytes of bf16), with float32 copies of
the bf16 operands: 81 of the 1033 GFLOP of the bf16 MiT-B1 480x480 batch-16 train step, 198 of
1956 in DCFM-B2's. `float32_product` rounds the cotangent to the operands' dtype first, so the
gradient products are bf16 x bf16, as under PyTorch autocast (whose matmuls return bf16, so their
gradients arrive in bf16). The forward value is unchanged; with float32 operands it is the plain
product, gradients included. As with `ops/resize.py`'s custom VJP, forward-mode differentiation
(`jax.jvp`) of the bf16 form is not defined.
"""
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _float32_result(product: Callable, x: jax.Array, y: jax.Array) -> jax.Array:
  return product(x, y, preferred_element_type=jnp.float32)


def _forward(product, x, y):
  return _float32_result(product, x, y), (x, y)


def _backward(product, residuals, grad):
  x, y = residuals
  _, vjp = jax.vjp(product, x, y)  # the product in the operands' dtype; only its transpose runs
  return vjp(grad.astype(jnp.result_type(x, y)))


_float32_result.defvjp(_forward, _backward)


def float32_product(product: Callable[..., jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
  """`product(x, y, preferred_element_type=float32)` for a bilinear `product` (a `jnp.dot`,
  `jnp.einsum`, ... taking that keyword); gradients computed in x and y's dtype (module
  docstring)."""
  if jnp.result_type(x, y) == jnp.float32:
    return product(x, y, preferred_element_type=jnp.float32)
  return _float32_result(product, x, y)
