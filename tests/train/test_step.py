"""The shared train step: a fresh dropout/drop-path key each step, derived from the step number
(so a resumed run draws the same ones), and the gradient and parameter norms it logs."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import load_config
from vssjax import parallel
from vssjax.methods.base import Method
from vssjax.train import step as step_lib
from vssjax.train.state import TrainState

_SLOPE = np.array([3.0, 0.0, 4.0], np.float32)  # the loss's gradient, of norm 5


class _LinearMethod(Method):
  """loss = <w, slope>; its metrics show the step's random key through one uniform draw."""

  def init(self, rng, batch):
    raise NotImplementedError

  def loss_and_metrics(self, params, model_state, batch, rng):
    loss = jnp.dot(params["w"], _SLOPE) + 0.0 * batch["frames"].sum()
    return loss, ({"loss": loss, "draw": jax.random.uniform(rng)}, model_state)

  def predictor(self, variables):
    raise NotImplementedError


def _state(step: int) -> TrainState:
  params = {"w": jnp.ones(3)}
  return TrainState(step=jnp.array(step, jnp.int32), params=params, model_state={},
                    opt_state=optax.sgd(0.1).init(params))


def test_each_step_draws_a_key_of_its_own_and_logs_the_gradient_norm():
  mesh = parallel.make_mesh()
  method = _LinearMethod(load_config("configs/segformer/synthetic_mitb0.py", "quick"))
  train_step = step_lib.make_train_step(method, optax.sgd(0.1), parallel.replicated(mesh), mesh,
                                        jax.random.PRNGKey(1))
  batch = {"frames": jnp.zeros((4, 1, 2, 2, 3), jnp.uint8)}
  first, metrics_0 = train_step(_state(0), batch)
  assert int(first.step) == 1
  _, metrics_1 = train_step(first, batch)  # donates `first`
  _, resumed_1 = train_step(_state(1), batch)  # another run's state at the same step
  # Dropout masks must differ from step to step, and be the same for a resumed run.
  assert float(metrics_0["draw"]) != float(metrics_1["draw"])
  assert float(resumed_1["draw"]) == float(metrics_1["draw"])
  assert float(metrics_0["grad_norm"]) == pytest.approx(5.0)  # the gradient's, not the update's
  assert float(metrics_0["param_norm"]) == pytest.approx(np.linalg.norm(1 - 0.1 * _SLOPE))
