"""The ConvLSTM cell unrolled over a sequence vs the release's `ConvLSTM` equations in torch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from vssjax.models.conv_lstm import ConvLSTM


def _torch_step(gates: torch.nn.Conv2d, x, state):
  """The release's `ConvLSTM.forward` (NCHW): gates (i, f, o, g) from conv(cat(x, h))."""
  hidden, cell = state
  i, f, o, g = gates(torch.cat([x, hidden], 1)).chunk(4, 1)
  cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
  return torch.sigmoid(o) * torch.tanh(cell), cell


@pytest.mark.parity
def test_unrolled_cell_matches_the_release_in_torch():
  lstm = ConvLSTM(hidden_size=4)
  sequence = [jnp.asarray(np.random.default_rng(t).standard_normal((2, 5, 6, 1)), jnp.float32)
              for t in range(3)]
  params = lstm.init(jax.random.key(0), sequence[0])["params"]
  assert params["Gates"]["kernel"].shape == (3, 3, 5, 16) and params["Gates"]["bias"].shape == (16,)
  gates = torch.nn.Conv2d(5, 16, 3, padding=1)
  with torch.no_grad():
    gates.weight.copy_(torch.from_numpy(np.array(params["Gates"]["kernel"]).transpose(3, 2, 0, 1)))
    gates.bias.copy_(torch.from_numpy(np.array(params["Gates"]["bias"])))
    state = (torch.zeros(2, 4, 5, 6), torch.zeros(2, 4, 5, 6))
    for x in sequence:
      state = _torch_step(gates, torch.from_numpy(np.array(x)).permute(0, 3, 1, 2), state)
  with jax.default_matmul_precision("highest"):
    hidden, cell = jax.jit(lambda p, s: lstm.apply({"params": p}, s, method=ConvLSTM.unroll))(
        params, sequence)
  np.testing.assert_allclose(hidden, state[0].permute(0, 2, 3, 1).numpy(), atol=1e-5)
  np.testing.assert_allclose(cell, state[1].permute(0, 2, 3, 1).numpy(), atol=1e-5)
