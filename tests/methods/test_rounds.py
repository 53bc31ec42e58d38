"""A per-sample loss taken in rounds: its mean, gradients and by-products are the plain
composition's, and each traced loop is noted for the bench. (The cross-entropy's rounds split over
devices: tests/methods/test_losses.py.)"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssjax import parallel
from vssjax.methods import rounds


def _per_sample(x, y, weights, shift):
  """A sum over the samples given of a loss of two differentiable inputs, and a by-product."""
  value = jnp.sum(weights * jnp.square(jnp.tanh(x) - y * shift[:, None]))
  return value, {"positive": jnp.sum(x > 0), "count": x.shape[0]}


def _arrays(seed=0, n=8):
  rng = np.random.default_rng(seed)
  return ([jnp.asarray(rng.normal(size=(n, 6)), jnp.float32) for _ in range(2)],
          [jnp.asarray(rng.uniform(size=(n, 6)), jnp.float32),
           jnp.asarray(rng.normal(size=n), jnp.float32)])


@pytest.mark.parametrize("mesh_axes", [None, (4, 1), (2, 2)])
def test_mean_gradients_and_by_products_are_the_plain_compositions(mesh_axes):
  (x, y), data = _arrays()
  divisor = jnp.float32(48.0)

  def weighted(x, y):
    """The mean under a loss weight: the backward pass scales the kept gradients by it."""
    mean, by_products = rounds.mean_in_rounds(_per_sample, [x, y], data, divisor)
    return 0.4 * mean, by_products

  def plain(x, y):
    value, by_products = _per_sample(x, y, *data)
    return 0.4 * value / divisor, by_products

  def value_and_gradients(loss):
    mesh = parallel.make_mesh(*mesh_axes).abstract_mesh if mesh_axes else None
    with jax.sharding.use_abstract_mesh(mesh) if mesh else contextlib.nullcontext():
      return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(x, y)

  (mean, by_products), gradients = value_and_gradients(weighted)
  (expected, expected_by_products), expected_gradients = value_and_gradients(plain)
  np.testing.assert_allclose(mean, expected, rtol=1e-6)
  assert {k: int(v) for k, v in by_products.items()} == {
      k: int(v) for k, v in expected_by_products.items()}
  for gradient, expected_gradient in zip(gradients, expected_gradients):
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-6, atol=1e-9)


def test_each_traced_loop_is_noted_for_the_bench():
  """One sample's shapes and the number of rounds: one a sample alone, one a sample of a device's
  share under a mesh of 4; a loss traced outside the block is not noted."""
  differentiable, data = _arrays()
  loss = lambda x, y: rounds.mean_in_rounds(_per_sample, [x, y], data, jnp.float32(1))[0]
  with rounds.rounds_traced() as loops:
    jax.eval_shape(loss, *differentiable)
    with jax.sharding.use_abstract_mesh(parallel.make_mesh(4, 1).abstract_mesh):
      jax.eval_shape(loss, *differentiable)
  jax.eval_shape(loss, *differentiable)
  assert [loop.count for loop in loops] == [8, 2]
  assert loops[0].arguments == ((jax.ShapeDtypeStruct((1, 6), jnp.float32),) * 2,
                                (jax.ShapeDtypeStruct((1, 6), jnp.float32),
                                 jax.ShapeDtypeStruct((1,), jnp.float32)))



def test_a_map_in_rounds_is_noted_as_its_function_on_one_sample():
  """OHEM's selection pass (values only) is a loop of rounds too."""
  x, y = _arrays()[0]
  fn = lambda x, y: x * y
  with rounds.rounds_traced() as loops:
    mapped = rounds.map_in_rounds(fn, x, y)
  assert [loop.count for loop in loops] == [8]
  assert loops[0].arguments == (jax.ShapeDtypeStruct((1, 6), jnp.float32),) * 2
  np.testing.assert_array_equal(mapped, x * y)
  np.testing.assert_array_equal(jax.jit(loops[0].program)(x[:1], y[:1]), x[:1] * y[:1])


def test_a_noted_loop_reads_a_device_s_share_of_the_batch():
  """`note_loop`'s arguments as a device holds them: the whole batch alone, a quarter of it under
  a mesh of 4 (OHEM's bisection counts over its share of the losses)."""
  x = jax.ShapeDtypeStruct((8, 5, 3), jnp.float32)
  assert rounds.device_share(x) == x
  with jax.sharding.use_abstract_mesh(parallel.make_mesh(4, 1).abstract_mesh):
    assert rounds.device_share(x) == jax.ShapeDtypeStruct((2, 5, 3), jnp.float32)
  with rounds.rounds_traced() as loops:
    rounds.note_loop(31, jnp.sum, x)
  rounds.note_loop(31, jnp.sum, x)  # outside the block: not noted
  assert loops == [rounds.Rounds(31, jnp.sum, (x,))]


def test_a_noted_program_is_the_loss_and_its_gradients_on_one_sample():
  """What the bench compiles as one round's cost."""
  (x, y), (weights, shift) = _arrays(seed=1, n=1)
  with rounds.rounds_traced() as loops:
    rounds.mean_in_rounds(_per_sample, [x, y], [weights, shift], jnp.float32(3))
  value, gradients = jax.jit(loops[0].program)((x, y), (weights, shift))
  expected, expected_gradients = jax.value_and_grad(
      lambda x, y: _per_sample(x, y, weights, shift)[0], argnums=(0, 1))(x, y)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  for gradient, expected_gradient in zip(gradients, expected_gradients):
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-6)
