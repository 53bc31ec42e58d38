"""Softmax and scaled dot-product attention whose gradients run well on XLA:CPU.

`jax.nn.softmax`'s derivative is `y * (t - sum(y * t, -1))`. Transposed for the gradient, that
`sum(y * t, -1)` becomes a reduction of an elementwise product, and XLA:CPU fuses such a reduction
into a loop that is many times slower than the same contraction as a dot: 1.2 s per call in
DTERN-B1's training step for the [3600, 3600] cross-attention softmax (docs/benchmarks.md). Here
the gradient is written by hand: the inner product as a contraction (`einsum`), the rest
elementwise. (A custom JVP cannot do this: whichever way its tangent is written, its transpose
holds either that reduction or a batch-only `dot_general`, which XLA:CPU runs as slowly.) The
values are `jax.nn.softmax`'s; gradients differ only in float summation order. As with
`ops/resize.py`'s custom VJP, forward-mode differentiation (`jax.jvp`) is not defined.

`jax.nn.dot_product_attention(implementation='xla')` calls `jax.nn.softmax` inside, so attention
goes through `dot_product_attention` below, the same computation with this softmax; other
implementations (cuDNN) are passed through.
"""
import functools
import string
from typing import Literal

import jax
import jax.numpy as jnp

from vssjax.ops.mixed_precision import float32_product


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
  """Softmax over one axis; equal in value to `jax.nn.softmax(x, axis)`."""
  unnormalized = jnp.exp(x - jnp.max(x, axis=axis, keepdims=True))
  return unnormalized / jnp.sum(unnormalized, axis=axis, keepdims=True)


def _softmax_fwd(x, axis):
  y = softmax(x, axis)
  return y, y


def _softmax_bwd(axis, y, grad):
  """y * (grad - <y, grad>): the inner product as a contraction, the rest elementwise."""
  full = string.ascii_letters[:y.ndim]
  inner = jnp.einsum(f"{full},{full}->{full.replace(full[axis], '')}", y, grad)
  return (y * (grad - jnp.expand_dims(inner, axis)),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


def _fused_attention(query: jax.Array, key: jax.Array, value: jax.Array, scale: float,
                     implementation: str) -> jax.Array:
  """`jax.nn.dot_product_attention(implementation=...)` with odd query and key counts padded to
  even ones, the padding masked out by the sequence lengths (cuDNN's padding mask), so the values
  are the unpadded attention's and the padded query rows are dropped.

  Why: jax 0.11.2's training rule for cuDNN's kernel tests its empty bias placeholder against
  None, so it takes every call as biased and refuses an odd length ("Unsupported sequence length
  Q 14400, KV 225" on an H200: MiT-B1 at 480x480 attends over 15x15 keys in every stage;
  jax/_src/cudnn/fused_attention_stablehlo.py, `_dot_product_attention_fwd_rule`)."""
  length, keys = query.shape[1], key.shape[1]
  lengths = {}
  if length % 2 or keys % 2:
    def padded(x: jax.Array, count: int) -> jax.Array:
      return jnp.pad(x, ((0, 0), (0, count % 2), (0, 0), (0, 0)))

    query, key, value = padded(query, length), padded(key, keys), padded(value, keys)
    batch = query.shape[0]
    lengths = dict(query_seq_lengths=jnp.full((batch,), length, jnp.int32),
                   key_value_seq_lengths=jnp.full((batch,), keys, jnp.int32))
  out = jax.nn.dot_product_attention(query, key, value, scale=scale,
                                     implementation=implementation, **lengths)
  return out[:, :length]


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, *, scale: float,
                          implementation: Literal["xla", "cudnn"] = "xla") -> jax.Array:
  """`jax.nn.dot_product_attention` of query [B, T, N, H] over key, value [B, S, N, H] (no mask
  or bias): float32 scores and softmax, probabilities cast to the value dtype, as JAX's 'xla'
  implementation; 'cudnn' is JAX's own fused kernel (`_fused_attention`)."""
  if implementation != "xla":
    try:
      return _fused_attention(query, key, value, scale, implementation)
    except NotImplementedError as error:  # it names neither the setting nor the way out
      raise NotImplementedError(
          f"model.attention_impl={implementation!r}: the fused kernel refused queries "
          f"{query.shape} over keys {key.shape} ({error}); use 'xla' for this input size or "
          f"mode") from error
  probs = attention_probabilities(query, key, scale=scale).astype(value.dtype)
  return jnp.einsum("bnts,bsnh->btnh", probs, value)


def attention_probabilities(query: jax.Array, key: jax.Array, *, scale: float) -> jax.Array:
  """The float32 attention weights [B, N, T, S] of query [B, T, N, H] over key [B, S, N, H], as
  `dot_product_attention`'s 'xla' path weighs the values with them."""
  # float32 scores; their gradient products run in the operands' dtype (ops.mixed_precision).
  logits = float32_product(functools.partial(jnp.einsum, "btnh,bsnh->bnts"), query, key)
  return softmax(logits * jnp.float32(scale), -1)
