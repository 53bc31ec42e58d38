"""The shared train step: a fresh dropout/drop-path key each step, derived from the step number
(so a resumed run draws the same ones), and the gradient and parameter norms it logs."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import collectives, load_config
from vssjax import parallel
from vssjax.errors import SetupError
from vssjax.methods import get_method
from vssjax.methods.base import Method
from vssjax.train import loop
from vssjax.train import step as step_lib
from vssjax.train.optimizer import optimizer_for
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
  step = step_lib.make_train_step(method, lambda _: optax.sgd(0.1), parallel.replicated(mesh),
                                  mesh, jax.random.PRNGKey(1))
  train_step = lambda state, batch: step(state, batch, step_lib.schedule_length(10, mesh))
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


def test_the_schedule_length_is_an_argument_of_the_program_not_a_constant():
  """A run resumed with more `train.steps` runs the same program (JAX's persistent cache then
  skips the compile): it differed by the poly schedule's constant before. The length still sets
  the learning rate: the second step of a 4-step schedule takes 3/4 of the base, of an 8-step one
  7/8."""
  mesh = parallel.make_mesh()
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.optim.update(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, warmup_steps=0,
                      min_lr=0.0, power=1.0, param_groups=())
  params = {"w": jnp.ones(3)}
  optimizer = optimizer_for(config.optim, params)
  train_step = step_lib.make_train_step(_LinearMethod(config), optimizer,
                                        parallel.replicated(mesh), mesh, jax.random.PRNGKey(1))
  batch = {"frames": jnp.zeros((4, 1, 2, 2, 3), jnp.uint8)}

  def fresh():  # new arrays each time: the step donates the state
    w = {"w": jnp.ones(3)}
    return TrainState(step=jnp.array(0, jnp.int32), params=w, model_state={},
                      opt_state=optimizer(4).init(w))

  lengths = [step_lib.schedule_length(n, mesh) for n in (4, 8)]
  programs = [train_step.lower(fresh(), batch, n).as_text() for n in lengths]
  assert programs[0] == programs[1]
  for length, second_lr in zip(lengths, (0.1 * 3 / 4, 0.1 * 7 / 8)):
    state, _ = train_step(fresh(), batch, length)
    state, _ = train_step(state, batch, length)
    np.testing.assert_allclose(state.params["w"], 1 - (0.1 + second_lr) * _SLOPE, rtol=1e-6)


class _StateDroppingMethod(_LinearMethod):
  """Returns (loss, metrics): the new model state left out."""

  def loss_and_metrics(self, params, model_state, batch, rng):
    loss, (metrics, _) = super().loss_and_metrics(params, model_state, batch, rng)
    return loss, metrics


def test_the_loss_is_traced_under_the_mesh_so_it_knows_the_batch_split():
  """`parallel.batch_shards` inside a method's loss (the cross-entropy's rounds) is the mesh's."""
  seen = []

  class _Recording(_LinearMethod):
    def loss_and_metrics(self, params, model_state, batch, rng):
      seen.append(parallel.batch_shards())
      return super().loss_and_metrics(params, model_state, batch, rng)

  mesh = parallel.make_mesh(2, 2)
  method = _Recording(load_config("configs/segformer/synthetic_mitb0.py", "quick"))
  step = step_lib.make_train_step(method, lambda _: optax.sgd(0.1), parallel.replicated(mesh),
                                  mesh, jax.random.PRNGKey(1))
  step(_state(0), {"frames": jnp.zeros((4, 1, 2, 2, 3), jnp.uint8)},
       step_lib.schedule_length(10, mesh))
  assert seen == [4]


def test_a_loss_and_metrics_return_of_another_shape_stops_the_first_step_naming_it():
  """It split the metrics dict into (metrics, model_state) and failed in `dict(...)` with "update
  sequence element #0 has length 1", naming neither the method nor what it returns."""
  mesh = parallel.make_mesh()
  method = _StateDroppingMethod(load_config("configs/segformer/synthetic_mitb0.py", "quick"))
  step = step_lib.make_train_step(method, lambda _: optax.sgd(0.1), parallel.replicated(mesh),
                                  mesh, jax.random.PRNGKey(1))
  with pytest.raises(SetupError, match=r"^_StateDroppingMethod.loss_and_metrics returned \(array, "
                     r"dict\): it returns \(loss, \(metrics, new_model_state\)\)"):
    step(_state(0), {"frames": jnp.zeros((4, 1, 2, 2, 3), jnp.uint8)},
         step_lib.schedule_length(10, mesh))


@pytest.mark.parametrize("path, arg", [("configs/segformer/synthetic_mitb0.py", "quick"),
                                       ("configs/etc/synthetic_psp18.py", "quick,variant=distill")])
def test_fsdp_gathers_the_split_weights_and_moves_no_activation(path, arg):
  """With kernels split over an fsdp axis, each device computes its own samples from whole
  weights: the step gathers the split kernels (whole variable shapes: ETC's frozen teacher, in
  the model state, too) and reduces gradients and sums, and moves no activation between devices
  (no all-to-all or permute, no gather of anything but a weight). XLA's partitioner left to
  itself split some of SegFormer's layers, and ETC's teacher, along the kernels' split dimension
  instead."""
  config = load_config(path, arg)
  config.update(sharding_rules=(("kernel$", "fsdp"),))
  config.mesh.update(data=2, fsdp=2)
  method = get_method(config)
  mesh = parallel.make_mesh(2, 2)
  state, sharding, _, _ = loop.create_state(config, method, mesh, abstract=True)
  assert any(not s.is_fully_replicated for s in jax.tree.leaves(sharding.params))
  step = loop.configured_train_step(config, method, state.params, sharding, mesh)
  batch = {key: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=parallel.batch_sharding(mesh))
           for key, s in loop.batch_spec(config).items()}
  compiled = step.trace(state, batch, step_lib.schedule_length(10, mesh)).lower().compile()
  weights = {f"f32[{','.join(map(str, x.shape))}]"
             for x in jax.tree.leaves((state.params, state.model_state))}
  moved = collectives(compiled)
  assert {op for op, _ in moved} == {"all-gather", "all-reduce"}
  assert all(shape in weights for op, shapes in moved if op == "all-gather" for shape in shapes)
