"""The SegFormer method in bf16 compute: float32 parameters, finite loss and gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.conftest import load_config, random_config_batch
from vssjax.methods import get_method
from vssjax.train.host_init import host_filled


def test_bfloat16_compute_keeps_float32_params_and_trains():
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.model.dtype = "bfloat16"
  method = get_method(config)
  batch = random_config_batch(config)
  # init's dtypes are those of its trace; its values need only be sensible, so numpy fills them
  # (compiling init cost a third of the test).
  shapes = jax.eval_shape(method.init, jax.random.PRNGKey(0), batch)
  assert {x.dtype for x in jax.tree.leaves(shapes["params"])} == {jnp.dtype(jnp.float32)}
  variables = host_filled(shapes)
  params = variables.pop("params")
  # Jitted: op-by-op dispatch of the bf16 graph took over a minute on the 2-core CPU.
  (loss, (metrics, _)), grads = jax.jit(jax.value_and_grad(method.loss_and_metrics, has_aux=True))(
      params, variables, batch, jax.random.PRNGKey(1))
  assert np.isfinite(loss) and loss.dtype == jnp.float32
  assert 1.0 < float(loss) < 5.0  # about log(9) for an untrained model
  assert all(np.isfinite(g).all() and g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  assert 0.0 <= float(metrics["pixel_acc"]) <= 1.0
