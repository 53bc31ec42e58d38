"""MobileNetV2 inverted-residual blocks vs torch (torchvision's block layout), eval-mode BN:
strided, dilated (output stride 8) and residual blocks, with activations on both sides of ReLU6's
cap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from vssjax.models.mobilenet_v2 import InvertedResidual


def _conv_bn_relu6(cin, cout, kernel, stride=1, dilation=1, groups=1):
  pad = dilation * (kernel - 1) // 2
  return torch.nn.Sequential(
      torch.nn.Conv2d(cin, cout, kernel, stride, pad, dilation, groups, bias=False),
      torch.nn.BatchNorm2d(cout), torch.nn.ReLU6())


def _torch_block(cin, cout, expansion, stride, dilation):
  hidden = cin * expansion
  layers = [] if expansion == 1 else [_conv_bn_relu6(cin, hidden, 1)]
  layers += [_conv_bn_relu6(hidden, hidden, 3, stride, dilation, hidden),
             torch.nn.Conv2d(hidden, cout, 1, bias=False), torch.nn.BatchNorm2d(cout)]
  return torch.nn.Sequential(*layers).eval()


def _flax_variables(block: torch.nn.Sequential) -> dict:
  """torch `{j}` / `{j}.{0,1}` modules -> flax `conv_{j}` / `conv_{j}/{conv,bn}` variables."""
  flat = {}
  for name, module in block.named_modules():
    if not isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
      continue
    parts = name.split(".")
    path = (f"conv_{parts[0]}",) + tuple({"0": "conv", "1": "bn"}[p] for p in parts[1:])
    if isinstance(module, torch.nn.Conv2d):
      flat[("params", *path, "kernel")] = module.weight.detach().numpy().transpose(2, 3, 1, 0)
    elif isinstance(module, torch.nn.BatchNorm2d):
      flat[("params", *path, "scale")] = module.weight.detach().numpy()
      flat[("params", *path, "bias")] = module.bias.detach().numpy()
      flat[("batch_stats", *path, "mean")] = module.running_mean.numpy()
      flat[("batch_stats", *path, "var")] = module.running_var.numpy()
  return flat


@pytest.mark.parity
@pytest.mark.parametrize("cin, cout, expansion, stride, dilation", [
    (16, 24, 6, 2, 1), (32, 32, 6, 1, 2), (8, 8, 1, 1, 4)])
def test_inverted_residual_matches_torch(cin, cout, expansion, stride, dilation):
  """Eval-mode blocks with random BN statistics; the inputs (std 2) and BN scales (up to 4) put
  over 1% of every ReLU6's inputs above 6, which the test checks on torch's side: at unit scale
  no input reached 6 and a plain ReLU in place of ReLU6 passed."""
  torch.manual_seed(0)
  block = _torch_block(cin, cout, expansion, stride, dilation)
  above_cap = []
  for module in block.modules():
    if isinstance(module, torch.nn.ReLU6):
      module.register_forward_hook(
          lambda _, inputs, __: above_cap.append(float((inputs[0] > 6).float().mean())))
    if isinstance(module, torch.nn.BatchNorm2d):
      torch.nn.init.uniform_(module.weight, 0.5, 4.0)
      torch.nn.init.uniform_(module.bias, -0.5, 0.5)
      torch.nn.init.uniform_(module.running_mean, -0.5, 0.5)
      torch.nn.init.uniform_(module.running_var, 0.5, 1.5)
  flat = _flax_variables(block)
  variables = traverse_util.unflatten_dict(flat)
  x = 2 * np.random.default_rng(0).standard_normal((2, 9, 11, cin)).astype(np.float32)
  model = InvertedResidual(cout, expansion, stride, dilation)
  expected_paths = set(traverse_util.flatten_dict(
      jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.asarray(x), train=False))))
  assert expected_paths == set(flat)
  with jax.default_matmul_precision("highest"):
    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(x))
  with torch.no_grad():
    expected = block(torch.from_numpy(x).permute(0, 3, 1, 2))
    if stride == 1 and cin == cout:
      expected = expected + torch.from_numpy(x).permute(0, 3, 1, 2)
  assert len(above_cap) == (1 if expansion == 1 else 2)
  assert min(above_cap) > 0.01, above_cap
  np.testing.assert_allclose(out, expected.permute(0, 2, 3, 1).numpy(), atol=1e-4)
