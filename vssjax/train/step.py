"""The one jitted update step shared by every method."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vssjax import parallel
from vssjax.methods import contract
from vssjax.methods.base import Batch, Method
from vssjax.train.state import TrainState


def make_train_step(
    method: Method, optimizer: Callable[[jax.Array], optax.GradientTransformation],
    state_sharding, mesh: jax.sharding.Mesh, base_rng: jax.Array
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]:
  """Returns `step(state, batch, total_steps) -> (state, metrics)`, jitted with explicit shardings.

  `optimizer(total_steps)` is the transformation for a schedule of that length
  (`optimizer.optimizer_for`); `total_steps` is an argument (an int32 scalar, see
  `schedule_length`), not a constant of the program, so that a run resumed with more steps reuses
  the compiled step. The state is donated (updated in place); the batch is split over every device
  of the mesh (its data and fsdp axes, `parallel.batch_sharding`). The dropout/drop-path key is
  derived from the step, so a resumed run draws the same randomness.
  """

  def checked_loss(params, model_state, batch, rng):  # the checks run once, while tracing
    # Variables split over the fsdp axis (parameters, and model state such as ETC's frozen
    # teacher) are gathered whole for the forward and backward passes (the gradients then split
    # again for the update): every device computes its own samples from whole weights, as FSDP
    # means. Left to itself, XLA's partitioner splits some layers' activations along the split
    # weights' dimensions instead, and moves activations between the devices: 11x the bytes for
    # SegFormer-B1 on 4 GPUs (docs/scaling.md). A replicated variable is left as it is.
    params, model_state = jax.lax.with_sharding_constraint((params, model_state),
                                                           parallel.replicated(mesh))
    outputs = method.loss_and_metrics(params, model_state, batch, rng)
    contract.check_training_outputs(method, outputs, model_state)
    return outputs

  def step(state: TrainState, batch: Batch, total_steps: jax.Array):
    rng = jax.random.fold_in(base_rng, state.step)
    grad_fn = jax.value_and_grad(checked_loss, has_aux=True)
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):  # `parallel.batch_shards`
      (_, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng)
    tx = optimizer(total_steps)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params))
    new_state = TrainState(step=state.step + 1, params=params,
                           model_state=model_state, opt_state=opt_state)
    return new_state, metrics

  return jax.jit(
      step,
      in_shardings=(state_sharding, parallel.batch_sharding(mesh), parallel.replicated(mesh)),
      out_shardings=(state_sharding, parallel.replicated(mesh)),
      donate_argnums=(0,))


def schedule_length(total_steps: int, mesh: jax.sharding.Mesh) -> jax.Array:
  """`total_steps` as the train step's last argument: an int32 scalar on every device."""
  return jax.device_put(np.int32(total_steps), parallel.replicated(mesh))


def _train_state(variables: dict[str, Any], tx: optax.GradientTransformation) -> TrainState:
  variables = dict(variables)
  params = variables.pop("params")
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                    opt_state=tx.init(params))


def init_state(init_variables: Callable[[jax.Array], dict[str, Any]], variables: dict[str, Any],
               tx: optax.GradientTransformation, rng: jax.Array, mesh: jax.sharding.Mesh,
               rules=(), *, abstract: bool = False) -> tuple[TrainState, object]:
  """Initialises the state from `init_variables(rng)` directly in its sharding (see
  `parallel.state_shardings`).

  `variables` are the shapes of `init_variables(rng)` (its `jax.eval_shape`), which the caller
  has for the optimizer already: the model is not traced again for them. With `abstract` the
  state's leaves are `jax.ShapeDtypeStruct`s carrying their shardings, and nothing is compiled or
  run: all that a checkpoint restore needs. The initialisation program is slow to compile (its
  hundreds of per-parameter RNG derivations: 23 s of XLA:CPU for the synthetic DTERN, whose
  forward pass XLA removes as dead code), so eval and resume skip it.
  """
  shapes = jax.eval_shape(lambda v: _train_state(v, tx), variables)
  sharding = parallel.state_shardings(shapes, mesh, rules)
  if abstract:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        shapes, sharding), sharding

  def init(rng):
    return _train_state(init_variables(rng), tx)

  return jax.jit(init, out_shardings=sharding)(rng), sharding
