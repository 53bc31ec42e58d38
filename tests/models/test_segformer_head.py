"""SegFormer head init as mmseg's (its forward is pinned by tests/parity/test_segformer_parity)."""
import jax
import jax.numpy as jnp
import torch

from tests.models.helpers import assert_torch_default_init
from vssjax.models.segformer_head import SegFormerHead


def test_linear_layers_start_from_torch_default_init():
  """`linear_c*` (nn.Linear) and `linear_pred` (nn.Conv2d) keep PyTorch's default; `linear_fuse`
  (a ConvModule) stays He fan-out normal."""
  dims = (8, 16, 24, 32)
  features = [jnp.zeros((1, 16 // 2**i, 16 // 2**i, d)) for i, d in enumerate(dims)]
  head = SegFormerHead(num_classes=5, embed_dim=64)
  # Jitted: the same values, without the op-by-op forward pass that init also runs.
  params = jax.jit(lambda key: head.init(key, features, train=False)["params"])(jax.random.key(0))
  for level, dim in enumerate(dims, start=1):
    linear = params[f"linear_c{level}"]
    assert_torch_default_init(torch.nn.Linear(dim, 64), linear["kernel"], linear["bias"])
  assert_torch_default_init(torch.nn.Conv2d(64, 5, 1), params["linear_pred"]["kernel"],
                            params["linear_pred"]["bias"])
  fuse = params["linear_fuse"]["conv"]["kernel"]  # fan-out 64: std sqrt(2 / 64)
  assert abs(float(fuse.std()) / (2 / 64) ** 0.5 - 1) < 0.05
