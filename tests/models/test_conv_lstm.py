"""The ConvLSTM cell's init and training rules (equations vs torch: tests/parity)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.models.helpers import assert_torch_default_init
from vssjax.models import conv_lstm
from vssjax.models.conv_lstm import ConvLSTM


def test_init_is_torch_default_uniform():
  params = ConvLSTM(hidden_size=4).init(jax.random.key(1), jnp.zeros((1, 4, 4, 1)))["params"]
  # Gates: concat(1 input + 4 hidden channels) -> 4 gates x 4 hidden channels, 3x3.
  assert_torch_default_init(torch.nn.Conv2d(5, 16, 3), params["Gates"]["kernel"],
                            params["Gates"]["bias"])


@pytest.mark.parametrize("rule, trains_through_distillation", [
    ("frozen", False), ("adversarial", False), ("joint", True)])
def test_training_rules(rule, trains_through_distillation):
  params = {"w": jnp.ones(3)}
  grad = jax.grad(lambda p: jnp.sum(conv_lstm.student_view(p, rule)["w"] ** 2))(params)
  assert bool(jnp.any(grad["w"] != 0)) == trains_through_distillation
  with pytest.raises(ValueError, match="training rule"):
    conv_lstm.student_view(params, "sometimes")


def test_objective_is_zero_unless_adversarial():
  lstm = ConvLSTM()
  params = lstm.init(jax.random.key(0), jnp.zeros((1, 3, 3, 1)))["params"]
  sequence = [jnp.ones((1, 3, 3, 1))] * 2
  assert float(conv_lstm.training_objective(lstm, params, sequence, "frozen")) == 0.0
  hidden, _ = lstm.apply({"params": params}, sequence, method=ConvLSTM.unroll)
  np.testing.assert_allclose(conv_lstm.training_objective(lstm, params, sequence, "adversarial"),
                             np.mean(1 - np.asarray(hidden)), rtol=1e-6)
