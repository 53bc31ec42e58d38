"""vssjax resizes, BatchNorm and GELU vs torch (`F.interpolate`, `nn.BatchNorm2d`, `F.gelu`) on
random tensors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.parity.torch_reference import nchw
from vssjax.models.layers import BatchNorm, gelu
from vssjax.ops.resize import resize_bilinear, resize_nearest

# (input H, W) -> (output H, W): up, down, mixed, non-integer ratios, 1-pixel edge cases and
# the DTERN/SegFormer sizes (1/4 -> 1/8 of a 480x853 frame, 120 -> 480 logits).
SIZES = [((7, 9), (13, 20)), ((13, 20), (7, 9)), ((19, 28), (17, 31)), ((10, 10), (5, 5)),
         ((5, 8), (1, 1)), ((1, 1), (4, 3)), ((120, 214), (60, 107)), ((120, 120), (480, 480))]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("in_size, out_size", SIZES)
def test_bilinear_matches_torch(in_size, out_size, align_corners):
  x = np.random.default_rng(0).standard_normal((2, *in_size, 3)).astype(np.float32)
  expected = F.interpolate(nchw(x, contiguous=False), size=out_size, mode="bilinear",
                           align_corners=align_corners).permute(0, 2, 3, 1).numpy()
  out = np.asarray(resize_bilinear(jnp.asarray(x), out_size, align_corners=align_corners))
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("in_size, out_size", [
    ((120, 214), (480, 853)), ((480, 853), (120, 214)), ((480, 864), (480, 853)),
    ((128, 256), (1024, 2048)), ((1, 1000), (1, 333))])
def test_bilinear_source_coordinates_are_torchs_fused_multiply_add(in_size, out_size):
  """At non-integer ratios torch's `scale * (dst + 0.5) - 0.5` is one fused multiply-add; with
  the product rounded first, coordinates move by a float32 ulp and values by up to ~3e-5 on unit
  inputs (853 -> 214). With it, only the blend's own rounding remains."""
  x = np.random.default_rng(0).standard_normal((1, *in_size, 2)).astype(np.float32)
  expected = F.interpolate(nchw(x, contiguous=False), size=out_size, mode="bilinear",
                           align_corners=False).permute(0, 2, 3, 1).numpy()
  out = np.asarray(resize_bilinear(jnp.asarray(x), out_size))
  np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("in_size, out_size", [((7, 9), (13, 20)), ((13, 20), (7, 9)),
                                               ((6, 8), (6, 17)), ((24, 24), (96, 96)),
                                               ((3, 12), (24, 24)), ((5, 6), (15, 12))])
def test_bilinear_gradient_matches_torch_autograd(in_size, out_size, align_corners):
  """The differentiated forward (phase blends at integer factors 2-8 without align_corners) and
  the hand-written backward (their adjoint there, transposed interpolation matrices elsewhere)
  against torch's autograd."""
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, *in_size, 3)).astype(np.float32)
  cotangent = rng.standard_normal((2, *out_size, 3)).astype(np.float32)
  x_torch = nchw(x, contiguous=False).clone().requires_grad_(True)
  expected = F.interpolate(x_torch, size=out_size, mode="bilinear", align_corners=align_corners)
  expected.backward(nchw(cotangent, contiguous=False))
  out, vjp = jax.vjp(lambda a: resize_bilinear(a, out_size, align_corners=align_corners),
                     jnp.asarray(x))
  np.testing.assert_allclose(out, expected.detach().permute(0, 2, 3, 1).numpy(), atol=1e-5, rtol=0)
  (grad,) = vjp(jnp.asarray(cotangent))
  np.testing.assert_allclose(grad, x_torch.grad.permute(0, 2, 3, 1).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("in_size, out_size", SIZES + [((480, 853), (481, 854)),
                                                       ((853, 480), (97, 1000))])
def test_nearest_matches_torch_exactly(in_size, out_size):
  labels = np.random.default_rng(0).integers(0, 255, (2, *in_size)).astype(np.int32)
  expected = F.interpolate(torch.from_numpy(labels[:, None].astype(np.float32)), size=out_size,
                           mode="nearest")[:, 0].numpy().astype(np.int32)
  np.testing.assert_array_equal(resize_nearest(jnp.asarray(labels), out_size), expected)


def test_batch_norm_train_step_and_eval_match_torch():
  x = np.random.default_rng(0).standard_normal((3, 5, 4, 6)).astype(np.float32) * 2 + 1
  torch_bn = torch.nn.BatchNorm2d(6)  # momentum 0.1, eps 1e-5
  with torch.no_grad():
    torch_bn.weight.copy_(torch.linspace(0.5, 1.5, 6))
    torch_bn.bias.copy_(torch.linspace(-1, 1, 6))
  variables = {"params": {"scale": torch_bn.weight.detach().numpy().copy(),
                          "bias": torch_bn.bias.detach().numpy().copy()},
               "batch_stats": {"mean": np.zeros(6, np.float32), "var": np.ones(6, np.float32)}}
  expected_train = torch_bn.train()(nchw(x, contiguous=False)).permute(0, 2, 3, 1).detach().numpy()
  out, updates = BatchNorm().apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(out, expected_train, atol=1e-5)
  np.testing.assert_allclose(updates["batch_stats"]["mean"], torch_bn.running_mean, atol=1e-6)
  np.testing.assert_allclose(updates["batch_stats"]["var"], torch_bn.running_var, atol=1e-6)
  variables["batch_stats"] = updates["batch_stats"]
  expected_eval = torch_bn.eval()(nchw(x, contiguous=False)).permute(0, 2, 3, 1).detach().numpy()
  np.testing.assert_allclose(BatchNorm().apply(variables, x, train=False), expected_eval, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gelu_matches_torch_exact_gelu(dtype):
  """Values and gradient of torch's exact GELU over [-10, 10]. In bf16 torch computes in float32
  and rounds once; jax.nn.gelu's erfc form computed in bf16 was up to 1.6e-2 (one ulp) away."""
  x = np.linspace(-10, 10, 20001, dtype=np.float32)
  x_torch = torch.from_numpy(x).to(getattr(torch, dtype)).requires_grad_()
  expected = F.gelu(x_torch)
  expected.sum().backward()
  x_jax = jnp.asarray(x, dtype)
  out = np.asarray(gelu(x_jax), np.float32)
  expected = expected.detach().float().numpy()
  if dtype == "float32":
    grad = jax.grad(lambda v: gelu(v).sum())(x_jax)
    np.testing.assert_allclose(out, expected, atol=2e-6, rtol=0)
    np.testing.assert_allclose(grad, x_torch.grad.numpy(), atol=2e-6, rtol=0)
  else:  # the same float32 result rounded once: equal but for rounding-boundary cases
    assert (out == expected).mean() > 0.9
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)
