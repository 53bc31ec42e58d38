"""vssjax.ops.attention: jax.nn's softmax and attention values, gradients through contractions."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.ops import attention
from vssjax.ops.attention import dot_product_attention, softmax


def _count_in_jaxpr(primitive: str, fn, *args) -> int:
  """How often `primitive` is applied in fn's jaxpr, nested jaxprs included."""
  return str(jax.make_jaxpr(fn)(*args)).count(f" {primitive}[")


@pytest.mark.parametrize("axis", [-1, 1, 0, -2])
def test_softmax_values_and_gradient_match_jax(axis):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 5, 7)) * 4, jnp.float32)
  weights = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  np.testing.assert_array_equal(softmax(x, axis), jax.nn.softmax(x, axis=axis))
  loss = lambda f: lambda x: jnp.sum(f(x) * weights) ** 2
  np.testing.assert_allclose(jax.grad(loss(lambda x: softmax(x, axis)))(x),
                             jax.grad(loss(lambda x: jax.nn.softmax(x, axis=axis)))(x),
                             rtol=1e-5, atol=1e-5)


def test_softmax_gradient_reduces_by_contraction():
  """The gradient's <y, g> is a dot_general: the one reduce_sum left is the forward's
  denominator (jax.nn.softmax's gradient reduces y * g, which XLA:CPU runs slowly)."""
  x = jnp.ones((4, 6), jnp.float32)
  grad = lambda f: jax.grad(lambda x: jnp.vdot(f(x), x))
  assert _count_in_jaxpr("reduce_sum", grad(softmax), x) == 1
  assert _count_in_jaxpr("reduce_sum", grad(jax.nn.softmax), x) > 1  # what this avoids


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dot_product_attention_matches_jax(dtype):
  rng = np.random.default_rng(1)
  q, k, v = (jnp.asarray(rng.standard_normal(shape), dtype)
             for shape in ((2, 9, 2, 8), (2, 5, 2, 8), (2, 5, 2, 8)))
  attend = lambda f: lambda q, k, v: f(q, k, v, scale=8 ** -0.5)
  np.testing.assert_allclose(np.float32(attend(dot_product_attention)(q, k, v)),
                             np.float32(attend(jax.nn.dot_product_attention)(q, k, v)),
                             rtol=1e-6, atol=1e-6)
  loss = lambda f: lambda *qkv: jnp.sum(attend(f)(*qkv).astype(jnp.float32) ** 2)
  ours = jax.grad(loss(dot_product_attention), argnums=(0, 1, 2))(q, k, v)
  reference = jax.grad(loss(jax.nn.dot_product_attention), argnums=(0, 1, 2))(q, k, v)
  tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
  for name, a, b in zip("qkv", ours, reference):
    assert a.dtype == b.dtype == dtype, name
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tolerance, atol=tolerance,
                               err_msg=name)


def test_a_refusal_of_the_fused_kernel_names_the_setting_and_the_shapes(monkeypatch):
  """cuDNN's kernel refuses some shapes with a message naming neither the setting nor the way
  out (an H200 refused MiT-B1's training at 480x480: 14400 queries over 225 keys)."""
  def refuse(*args, **kwargs):
    raise NotImplementedError("Unsupported sequence length Q 4, KV 3.")

  monkeypatch.setattr(jax.nn, "dot_product_attention", refuse)
  query, key = jnp.ones((1, 4, 2, 8), jnp.bfloat16), jnp.ones((1, 3, 2, 8), jnp.bfloat16)
  with pytest.raises(NotImplementedError,
                     match=r"model\.attention_impl='cudnn': .* \(1, 4, 2, 8\) over keys "
                           r"\(1, 3, 2, 8\) \(Unsupported sequence length Q 4, KV 3\.\); "
                           r"use 'xla'"):
    dot_product_attention(query, key, key, scale=0.5, implementation="cudnn")


@pytest.mark.parametrize("length, keys, padded", [(5, 3, (6, 4)), (4, 3, (4, 4)), (4, 2, None)])
def test_the_fused_kernel_gets_even_lengths_and_the_same_values(monkeypatch, length, keys, padded):
  """jax 0.11.2's cuDNN training rule refuses odd lengths (`_fused_attention`): they are padded
  to even ones and masked out by the sequence lengths. Run here through jax's XLA implementation,
  which honours the lengths as cuDNN's padding mask does: values and gradients are the unpadded
  attention's. Even lengths go through untouched."""
  fused, calls = jax.nn.dot_product_attention, []

  def as_if_fused(query, key, value, **kwargs):
    calls.append((query.shape[1], key.shape[1], kwargs.get("query_seq_lengths") is not None,
                  kwargs.pop("implementation")))
    return fused(query, key, value, implementation="xla", **kwargs)

  monkeypatch.setattr(jax.nn, "dot_product_attention", as_if_fused)
  rng = np.random.default_rng(0)
  query = jnp.asarray(rng.normal(size=(2, length, 2, 8)), jnp.float32)
  key, value = (jnp.asarray(rng.normal(size=(2, keys, 2, 8)), jnp.float32) for _ in range(2))

  def loss(implementation, query, key, value):
    out = dot_product_attention(query, key, value, scale=0.3, implementation=implementation)
    return jnp.sum(out * jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape) / out.size)

  (got, got_grads), (want, want_grads) = (
      jax.value_and_grad(functools.partial(loss, impl), argnums=(0, 1, 2))(query, key, value)
      for impl in ("cudnn", "xla"))
  expected_call = (*padded, True, "cudnn") if padded else (length, keys, False, "cudnn")
  assert calls == [expected_call]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for g, w in zip(got_grads, want_grads):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_the_fused_path_at_mit_b1_stage_1_shapes_rounds_no_worse_than_xla_in_bfloat16():
  """MiT-B1 at 480x480: stage 1 attends 14400 queries over 15x15 = 225 keys, both padded by
  `_fused_attention`. On a GPU the path runs cuDNN's kernel (`model.attention_impl='cudnn'`;
  the device plan's GPU test command in docs/benchmarks.md runs this file there), elsewhere XLA's
  with the same padding and lengths. Its bfloat16 values and gradients are within twice the 'xla'
  implementation's bfloat16 error of the float32 attention, plus a bfloat16 ulp at the size."""
  fused = "cudnn" if jax.default_backend() == "gpu" else "xla"
  rng = np.random.default_rng(0)
  query = jnp.asarray(rng.normal(size=(1, 14400, 1, 64)), jnp.float32)
  key, value = (jnp.asarray(rng.normal(size=(1, 225, 1, 64)), jnp.float32) for _ in range(2))
  weights = jnp.asarray(rng.normal(size=query.shape), jnp.float32)

  def value_and_grads(attend, dtype):
    def loss(*operands):
      out = attend(*(x.astype(dtype) for x in operands), scale=64 ** -0.5)
      return jnp.sum(out.astype(jnp.float32) * weights)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(query, key, value)

  def fused_attention(query, key, value, scale):
    # pylint: disable-next=protected-access
    return attention._fused_attention(query, key, value, scale, fused)

  def xla(query, key, value, scale):
    return dot_product_attention(query, key, value, scale=scale, implementation="xla")

  exact = value_and_grads(xla, jnp.float32)
  for got, bf16, want in zip(*(jax.tree.leaves(value_and_grads(fn, jnp.bfloat16))
                               for fn in (fused_attention, xla)), jax.tree.leaves(exact)):
    got, bf16, want = (np.asarray(x, np.float64) for x in (got, bf16, want))
    assert np.all(np.isfinite(got))
    ulp = 2.0 ** -8 * np.abs(want).max()
    assert np.abs(got - want).max() <= 2 * np.abs(bf16 - want).max() + ulp
