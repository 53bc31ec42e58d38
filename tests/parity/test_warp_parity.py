"""`warp` vs torch `grid_sample(bilinear, padding_mode='border', align_corners=True)`: values and
gradients w.r.t. the warped tensor, non-square maps, flows pointing far outside the image."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.parity.torch_reference import torch_warp
from vssjax.ops.warp import warp


def _value_and_vjp(x, flow, cotangent):
  out, vjp = jax.vjp(lambda v: warp(v, flow), x)
  return out, vjp(cotangent)[0]


@pytest.mark.parity
@pytest.mark.parametrize("shape, flow_scale", [((2, 6, 9, 3), 1.5), ((1, 11, 4, 5), 3.0),
                                               ((2, 5, 7, 2), 20.0)])
def test_warp_and_its_gradient_match_grid_sample(shape, flow_scale):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  flow = (flow_scale * rng.standard_normal(shape[:3] + (2,))).astype(np.float32)
  cotangent = rng.standard_normal(shape).astype(np.float32)

  x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_()
  expected = torch_warp(x_torch, flow)
  expected.backward(torch.from_numpy(cotangent).permute(0, 3, 1, 2))
  expected_grad = x_torch.grad.permute(0, 2, 3, 1).numpy()

  with jax.default_matmul_precision("highest"):
    out, grad = jax.jit(lambda v, f, c: _value_and_vjp(v, f, c))(
        jnp.asarray(x), jnp.asarray(flow), jnp.asarray(cotangent))
  # Some sampling points really are outside the image (the clamped case is exercised).
  cols = np.arange(shape[2])[None, None, :] + flow[..., 0]
  assert (cols < 0).any() and (cols > shape[2] - 1).any()
  np.testing.assert_allclose(out, expected.detach().permute(0, 2, 3, 1).numpy(), atol=1e-5)
  np.testing.assert_allclose(grad, expected_grad, atol=1e-5)


@pytest.mark.parity
def test_flow_gradient_exists_and_is_finite():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 5, 6, 2)), jnp.float32)
  flow = jnp.full((1, 5, 6, 2), 0.3, jnp.float32)
  grad = jax.jit(jax.grad(lambda f: jnp.sum(warp(x, f) ** 2)))(flow)
  assert grad.shape == flow.shape and bool(jnp.all(jnp.isfinite(grad)))
  assert float(jnp.abs(grad).max()) > 0
