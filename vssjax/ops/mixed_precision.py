"""Mixed precision as PyTorch's autocast computes it: bf16 operands, float32 accumulation.

`float32_product`: a `dot_general` of bf16 operands with `preferred_element_type=float32`
(attention scores before the float32 softmax, the folded SegFormer head's per-level products that
are summed before one rounding) gets a float32 cotangent. JAX's transpose rule contracts that
float32 cotangent with the other, bf16, operand, which promotes it: both gradient products of every
such dot ran as float32 x float32 matmuls (TF32 on NVIDIA GPUs, twice the bytes of bf16), with
float32 copies of the bf16 operands: 81 of the 1033 GFLOP of the bf16 MiT-B1 480x480 batch-16
train step, 198 of 1956 in DCFM-B2's. `float32_product` rounds the cotangent to the operands'
dtype first, so the gradient products are bf16 x bf16, as under PyTorch autocast (whose matmuls
return bf16, so their gradients arrive in bf16). The forward value is unchanged; with float32
operands it is the plain product, gradients included.

`add_bias`: a bias added to a bf16 output gets, from JAX, a gradient summed over every pixel in
bf16 (the transpose of the broadcast is a bf16 reduction). How far off that ends depends on what
XLA fuses with it, and a bf16 partial sum stops growing once it dwarfs the terms: a bf16 Dense's
bias gradient over 65536 pixels came out 8192 for a sum of 65500 (tests/models/test_layers.py),
and in SegFormer-B0 at a batch of 4 at 384x384 the classifier's was 105% off its float32 value,
the median bias 16% (XLA:CPU, 2026-12-07). Its gradient here is summed in float32 and rounded once
to bf16, as under PyTorch autocast (a bf16 layer's bias gradient accumulated in float32 and
returned in bf16, then cast to the float32 parameter's).

As with `ops/resize.py`'s custom VJP, forward-mode differentiation (`jax.jvp`) of the bf16 forms is
not defined.
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


@jax.custom_vjp
def _bias_added(y: jax.Array, bias: jax.Array) -> jax.Array:
  return y + bias


def _bias_forward(y, bias):
  return _bias_added(y, bias), None


def _bias_backward(_, grad):
  leading = tuple(range(grad.ndim - 1))
  return grad, jnp.sum(grad, axis=leading, dtype=jnp.float32).astype(grad.dtype)


_bias_added.defvjp(_bias_forward, _bias_backward)


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """`y + bias` in y's dtype (bias `[C]` over y's last axis); with a y below float32 the bias's
  gradient is summed in float32 and rounded once to y's dtype (module docstring). The bias is
  cast outside the summing rule, where `methods.variables_read` sees the cast: a program given
  the variables converted once reads no float32 bias."""
  bias = bias.astype(y.dtype)
  if jnp.promote_types(y.dtype, jnp.float32) == y.dtype:
    return y + bias
  return _bias_added(y, bias)
