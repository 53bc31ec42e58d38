"""ETC's supervised loss vs torch: align-corners upsampling + `F.cross_entropy(weight=...)`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vssjax.methods import etc_losses


@pytest.mark.parity
def test_supervised_loss_matches_torch_weighted_cross_entropy_with_aux():
  rng = np.random.default_rng(0)
  logits, aux = rng.standard_normal((2, 2, 4, 5, 19)).astype(np.float32)
  labels = rng.integers(0, 19, (2, 13, 17))
  labels[0, :3] = 255
  weight = torch.tensor(etc_losses.CITYSCAPES_CLASS_WEIGHTS)
  target = torch.from_numpy(labels)

  def torch_ce(x):
    up = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(13, 17), mode="bilinear",
                       align_corners=True)
    return F.cross_entropy(up, target, weight=weight, ignore_index=255)

  expected = torch_ce(logits) + 0.4 * torch_ce(aux)
  with jax.default_matmul_precision("highest"):
    loss = etc_losses.supervised_loss(jnp.asarray(logits), jnp.asarray(aux), jnp.asarray(labels))
  np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)
