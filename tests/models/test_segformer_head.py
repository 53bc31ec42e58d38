"""SegFormer head init as mmseg's (its forward is pinned by tests/parity/test_segformer_parity),
its channel dropout; the SegFormer branch that the video heads share."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.models.helpers import (assert_torch_default_init, assert_whole_channels_dropped,
                                  dropout_calls)
from vssjax.models.segformer_head import SegFormerBranch, SegFormerHead


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


class _VideoHead(SegFormerBranch, nn.Module):
  """The least head on the shared SegFormer branch: the target's fused feature, summed."""
  num_classes: int = 5
  embed_dim: int = 8
  dropout_rate: float = 0.1
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.setup_segformer_branch()

  def __call__(self, features, *, train):
    out, fused, frames = self.segformer_branch(features, train=train)
    if fused is None:
      return out
    out["frames"] = len(frames), frames[0].shape
    return out


def test_segformer_branch_lives_in_the_head_s_scope_on_every_frame():
  """The branch's parameters are the head's own (`linear_c1`, ... as mmseg's `decode_head`), its
  logits per frame [B, T, ...] equal the plain SegFormerHead's on each frame; T = 1 exits early;
  anything but 4 levels is refused naming the head."""
  rng = np.random.default_rng(0)
  dims = (8, 16, 24, 32)
  features = [jnp.asarray(rng.normal(size=(2, 3, 16 // 2**i, 16 // 2**i, d)), jnp.float32)
              for i, d in enumerate(dims)]
  head = _VideoHead()
  variables = head.init(jax.random.key(0), features, train=False)
  assert sorted(variables["params"]) == [*(f"linear_c{i}" for i in range(1, 5)), "linear_fuse",
                                         "linear_pred"]
  out = head.apply(variables, features, train=False)
  assert out["frames"] == (4, (6, 16, 16, 8))
  for t in range(3):
    want, _ = SegFormerHead(5, 8).apply(variables, [f[:, t] for f in features], train=False)
    np.testing.assert_allclose(out["frame_logits"][:, t], want, atol=1e-6)
  single = head.apply(variables, [f[:, :1] for f in features], train=False)
  assert set(single) == {"frame_logits"} and single["frame_logits"].shape == (2, 1, 16, 16, 5)
  with pytest.raises(ValueError, match="_VideoHead expects 4 feature maps, got 3"):
    head.apply(variables, features[:3], train=False)


def test_dropout_before_linear_pred_drops_whole_channels():
  """Dropout2d before `linear_pred` (specs/dtern.md §3): in training each (sample, channel) of the
  fused feature is either zero over H and W or kept whole, scaled by 1/(1 - rate). Element-wise
  dropout there would train on other noise than the release's."""
  rng = np.random.default_rng(0)
  dims = (8, 16, 24, 32)
  features = [jnp.asarray(rng.normal(size=(2, 8 // 2**i, 8 // 2**i, d)), jnp.float32)
              for i, d in enumerate(dims)]
  head = SegFormerHead(num_classes=5, embed_dim=16, dropout_rate=0.5)
  variables = jax.jit(lambda f: head.init(jax.random.key(0), f, train=False))(features)
  # A large BN shift keeps the fused feature (after its ReLU) non-zero everywhere.
  variables["params"]["linear_fuse"]["bn"]["bias"] = jnp.full((16,), 10.0)
  (before, after), = dropout_calls(lambda: head.apply(
      variables, features, train=True, rngs={"dropout": jax.random.key(1)},
      mutable=["batch_stats"]))
  assert_whole_channels_dropped(before, after, 0.5)
