"""vssjax.models.segformer (MiT + SegFormer head): shapes, parameter paths, train-mode noise."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests.conftest import method_segformer, random_model_variables
from tests.models.helpers import TINY_MIT


@pytest.fixture(scope="module")
def tiny_model_and_vars():
  model = method_segformer("b0", 5, 16, **TINY_MIT)
  images = jax.random.normal(jax.random.key(0), (2, 67, 93, 3))
  return model, random_model_variables(model, images), images


def test_shapes_at_a_size_that_is_not_a_multiple_of_32(tiny_model_and_vars):
  model, variables, images = tiny_model_and_vars
  features = jax.jit(lambda v, x: model.apply(
      v, x, train=False, method=lambda m, x, train: m.backbone(x, train=train)))(variables, images)
  # torch conv arithmetic: k7 s4 p3 then k3 s2 p1 three times.
  assert [f.shape for f in features] == [(2, 17, 24, 8), (2, 9, 12, 16), (2, 5, 6, 24),
                                         (2, 3, 3, 32)]
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
  assert logits.shape == (2, 17, 24, 5) and logits.dtype == jnp.float32


def test_every_layer_norm_path_contains_norm(tiny_model_and_vars):
  _, variables, _ = tiny_model_and_vars
  paths = traverse_util.flatten_dict(variables["params"], sep="/")
  assert "backbone/block2_1/attn/norm/scale" in paths
  assert "backbone/norm4/scale" in paths and "backbone/patch_embed1/norm/scale" in paths
  scales = [p for p in paths if p.endswith("/scale")]
  assert scales and all("norm" in p or p.endswith("bn/scale") for p in scales)


def test_train_mode_drop_path_is_random_and_eval_is_deterministic(tiny_model_and_vars):
  """Eval mode drops nothing, whatever the key: the model without drop-path's output."""
  base, variables, images = tiny_model_and_vars
  model = method_segformer("b0", 5, 16, drop_path_rate=0.5, **TINY_MIT)

  @functools.partial(jax.jit, static_argnames="train")
  def logits(seed, train):
    out, _ = model.apply(variables, images, train=train, rngs={"dropout": jax.random.key(seed)},
                         mutable=["batch_stats"])
    return out

  def run(seed, train=True):
    return np.asarray(logits(seed, train))

  assert not np.allclose(run(0), run(1))
  without_drop_path = jax.jit(functools.partial(base.apply, train=False))(variables, images)
  np.testing.assert_array_equal(run(0, train=False), run(1, train=False))
  np.testing.assert_allclose(run(0, train=False), without_drop_path, atol=1e-5)  # two programs
