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
returned in bf16, then cast to the float32 parameter's). `broadcast_add` does the same for any
operand broadcast in a sum (DTERN's CAM adds a row and a column descriptor, each summed over the
other axis; SD-CPC's token embedding is added to every frame's tokens).

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


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _broadcast_sum(x_shape: tuple[int, ...], y_shape: tuple[int, ...], x: jax.Array,
                   y: jax.Array) -> jax.Array:
  del x_shape, y_shape  # the backward's
  return x + y


def _broadcast_sum_forward(x_shape, y_shape, x, y):
  return _broadcast_sum(x_shape, y_shape, x, y), None


def _summed_to(grad: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """`grad` summed over the axes along which an operand of `shape` was broadcast, in float32 and
  rounded once to grad's dtype."""
  leading = grad.ndim - len(shape)
  axes = tuple(range(leading)) + tuple(
      leading + i for i, size in enumerate(shape) if size == 1 and grad.shape[leading + i] != 1)
  if not axes:
    return grad
  return jnp.sum(grad, axis=axes, dtype=jnp.float32).astype(grad.dtype).reshape(shape)


def _broadcast_sum_backward(x_shape, y_shape, _, grad):
  return _summed_to(grad, x_shape), _summed_to(grad, y_shape)


_broadcast_sum.defvjp(_broadcast_sum_forward, _broadcast_sum_backward)


def broadcast_add(x: jax.Array, y: jax.Array) -> jax.Array:
  """`x + y` of two arrays of one dtype, broadcast as numpy does; below float32, the gradient of
  an operand that was broadcast (summed over the axes it was broadcast along) is summed in float32
  and rounded once to that dtype, as under PyTorch autocast (module docstring; JAX's is a bf16
  sum)."""
  if x.dtype != y.dtype:
    raise TypeError(f"broadcast_add takes operands of one dtype, not {x.dtype} and {y.dtype}: "
                    "cast first")
  if x.shape == y.shape or jnp.promote_types(x.dtype, jnp.float32) == x.dtype:
    return x + y  # nothing summed, or summed in float32 (or wider)
  return _broadcast_sum(x.shape, y.shape, x, y)


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """`y + bias` in y's dtype (bias `[C]` over y's last axis), through `broadcast_add`. The bias
  is cast outside its rule, where `methods.variables_read` sees the cast: a program given the
  variables converted once reads no float32 bias."""
  return broadcast_add(y, bias.astype(y.dtype))
