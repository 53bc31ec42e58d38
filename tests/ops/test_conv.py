"""vssjax.ops.conv: kernel == stride convolutions as matmuls, everything else through lax."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vssjax.models.layers import Conv
from vssjax.ops.conv import conv_general_dilated

_DN = ("NHWC", "HWIO", "NHWC")


def _ours(x, kernel, strides, padding, groups=1):
  dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, _DN)
  return conv_general_dilated(x, kernel, strides, padding, dimension_numbers=dn,
                              feature_group_count=groups)


def _both(x, kernel, strides, padding, groups=1):
  dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, _DN)
  ours = _ours(x, kernel, strides, padding, groups)
  reference = jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=dn,
                                           feature_group_count=groups)
  return ours, reference


def _primitives(fn, *args) -> set[str]:
  return {eqn.primitive.name for eqn in jax.make_jaxpr(fn)(*args).eqns}


@pytest.mark.parametrize("kernel_hw, size", [((1, 1), (7, 9)), ((2, 2), (6, 8)), ((4, 4), (15, 10)),
                                             ((8, 8), (24, 17)), ((2, 3), (9, 9))])
def test_non_overlapping_conv_is_a_matmul_with_the_same_result(kernel_hw, size):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, *size, 5)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((*kernel_hw, 5, 6)), jnp.float32)
  ours, reference = _both(x, kernel, kernel_hw, "VALID")
  assert ours.shape == reference.shape  # trailing rows/columns that fill no window are dropped
  np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=1e-5)
  fn = lambda a, k: _ours(a, k, kernel_hw, ((0, 0), (0, 0)))
  assert "conv_general_dilated" not in _primitives(fn, x, kernel)


@pytest.mark.parametrize("strides, padding, groups", [((1, 1), ((1, 1), (1, 1)), 1),
                                                      ((2, 2), ((1, 1), (1, 1)), 1),
                                                      ((3, 3), ((1, 1), (1, 1)), 1),
                                                      ((3, 3), "VALID", 5)])
def test_other_convolutions_go_to_lax_unchanged(strides, padding, groups):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 9, 9, 5)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 5 // groups, 5)), jnp.float32)
  ours, reference = _both(x, kernel, strides, padding, groups)
  np.testing.assert_array_equal(ours, reference)
  fn = lambda a, k: _ours(a, k, strides, padding, groups)
  assert "conv_general_dilated" in _primitives(fn, x, kernel)


@pytest.mark.parametrize("layer, as_matmul", [
    (dict(features=3, kernel_size=(1, 1)), True),  # flax's default padding, SAME
    (dict(features=3, kernel_size=(4, 4), strides=4, padding="VALID"), True),
    (dict(features=3, kernel_size=(4, 4), strides=4, padding="SAME"), True),  # 8 = 2 windows
    (dict(features=3, kernel_size=(3, 3), strides=3, padding="SAME"), False),  # pads 8 to 9
])
def test_layers_conv_keeps_flax_parameters_and_output(layer, as_matmul):
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 8, 8, 4)), jnp.float32)
  variables = nn.Conv(**layer).init(jax.random.PRNGKey(0), x)
  np.testing.assert_allclose(Conv(**layer).apply(variables, x),
                             nn.Conv(**layer).apply(variables, x), atol=1e-5, rtol=1e-5)
  assert jax.tree.map(jnp.shape, Conv(**layer).init(jax.random.PRNGKey(0), x)) == jax.tree.map(
      jnp.shape, variables)
  lowered = _primitives(lambda v, a: Conv(**layer).apply(v, a), variables, x)
  assert ("conv_general_dilated" not in lowered) == as_matmul


def test_a_dilated_kernel_equal_to_its_stride_goes_to_lax():
  """Dilation spreads the kernel's taps over more than one window, so such a conv is not a
  reshape + matmul even when the kernel equals the stride."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 5)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((2, 2, 5, 6)), jnp.float32)
  dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, _DN)
  padding = ((0, 0), (0, 0))  # lax takes no string padding with an input dilation
  for dilation in {"lhs_dilation": (2, 2)}, {"rhs_dilation": (2, 2)}:
    ours = conv_general_dilated(x, kernel, (2, 2), padding, dimension_numbers=dn, **dilation)
    np.testing.assert_array_equal(ours, jax.lax.conv_general_dilated(
        x, kernel, (2, 2), padding, dimension_numbers=dn, **dilation))
