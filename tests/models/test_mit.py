"""Forward behaviour of MiT / SegFormer: shapes, the two depthwise-conv forms, train-mode noise."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests.conftest import method_segformer, random_model_variables
from tests.models.helpers import layer_norm_epsilons
from vssjax.models.layers import (DepthwiseConv, DepthwiseWeights, depthwise_conv,
                                  torch_kernel_init)
from vssjax.models.mit import Block, apply_as_scan, mit

# A narrow B0-shaped model keeps compiles short; the architecture code path is the full one.
_TINY = dict(embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4), depths=(1, 2, 1, 1))


@pytest.fixture(scope="module")
def tiny_model_and_vars():
  model = method_segformer("b0", 5, 16, **_TINY)
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


def test_layer_norm_epsilons_are_mmseg_s():
  """Each MiT LayerNorm's eps by module path, as mmseg (specs/dtern.md §2): 1e-5 in the patch-embed
  and spatial-reduction norms, 1e-6 in the block and stage norms. The parity test hardly sees a
  wrong eps (its activations have unit variance: a block eps of 1e-5 exceeds its tolerance 1.5
  times), and not the patch-embed or sr norms', so each is read off the modules here."""
  epsilons = layer_norm_epsilons(mit("b0", **_TINY), jnp.ones((1, 32, 32, 3)), train=False)
  expected = {}
  for stage, depth in enumerate(_TINY["depths"], start=1):
    expected[f"patch_embed{stage}/norm"] = 1e-5
    for j in range(depth):
      expected[f"block{stage}_{j}/norm1"] = expected[f"block{stage}_{j}/norm2"] = 1e-6
      if stage < 4:  # sr ratio > 1
        expected[f"block{stage}_{j}/attn/norm"] = 1e-5
    expected[f"norm{stage}"] = 1e-6
  assert epsilons == expected


def test_train_mode_drop_path_is_random_and_eval_is_deterministic(tiny_model_and_vars):
  """Eval mode drops nothing, whatever the key: the model without drop-path's output."""
  base, variables, images = tiny_model_and_vars
  model = method_segformer("b0", 5, 16, drop_path_rate=0.5, **_TINY)

  @functools.partial(jax.jit, static_argnames="train")
  def logits(seed, train):
    out, _ = model.apply(variables, images, train=train, rngs={"dropout": jax.random.key(seed)},
                         mutable=["batch_stats"])
    return out

  def run(seed, train=True):
    return np.asarray(logits(seed, train))

  assert not np.allclose(run(0), run(1))
  without_drop_path = base.apply(variables, images, train=False)
  np.testing.assert_array_equal(run(0, train=False), run(1, train=False))
  np.testing.assert_allclose(run(0, train=False), without_drop_path, atol=1e-5)  # jit vs eager


@pytest.mark.parametrize("kernel_size", [3, (1, 11), 5])
def test_shifted_and_grouped_depthwise_conv_agree(kernel_size):
  x = jax.random.normal(jax.random.key(0), (2, 9, 7, 6))
  shifted = DepthwiseConv(kernel_size, impl="shifted")
  params = shifted.init(jax.random.key(1), x)
  params = jax.tree.map(lambda p: p + 0.3, params)  # non-zero bias too
  grouped = DepthwiseConv(kernel_size, impl="grouped")
  np.testing.assert_allclose(shifted.apply(params, x), grouped.apply(params, x), atol=1e-5)


def test_depthwise_conv_hand_case_shifts_each_channel_independently():
  x = jnp.arange(2 * 3 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 3, 2)
  kernel = jnp.zeros((3, 3, 1, 2)).at[1, 2, 0, 0].set(1.0).at[0, 1, 0, 1].set(2.0)
  out = DepthwiseConv(3).apply({"params": {"kernel": kernel, "bias": jnp.array([0.0, 1.0])}}, x)
  # Channel 0 reads its right neighbour (zero past the edge); channel 1 reads 2x the pixel above.
  expected0 = jnp.pad(x[:, :, 1:, 0], ((0, 0), (0, 0), (0, 1)))
  expected1 = 2 * jnp.pad(x[:, :-1, :, 1], ((0, 0), (1, 0), (0, 0))) + 1.0
  np.testing.assert_array_equal(out[..., 0], expected0)
  np.testing.assert_array_equal(out[..., 1], expected1)


def test_mit_with_grouped_dwconv_matches_shifted_with_same_params():
  images = jax.random.normal(jax.random.key(0), (1, 35, 41, 3))
  shifted, grouped = mit("b0", **_TINY), mit("b0", dwconv_impl="grouped", **_TINY)
  variables = random_model_variables(shifted, images)
  forward = jax.jit(lambda v, x: (shifted.apply(v, x, train=False),
                                  grouped.apply(v, x, train=False)))
  for a, b in zip(*forward(variables, images)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  model = mit("b0", dtype=jnp.bfloat16, **_TINY)
  images = jnp.ones((1, 32, 32, 3))
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  assert {v.dtype for v in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
  # The stage outputs are LayerNorms', float32 as under torch's autocast: the residual stream
  # stays float32 (bf16 rounded it after every block, twice autocast's error by c4 on MiT-B2).
  assert {o.dtype for o in out} == {jnp.dtype(jnp.float32)}


# Stages of 2, 3, 1 and 2 blocks: three run as a scan, the one-block stage as it is.
_SCANNABLE = dict(_TINY, depths=(2, 3, 1, 2))


def _random_projection_loss(model, images, outputs_like):
  """A training loss whose gradient reaches every parameter: the features' sum against fixed
  random maps (a sum of squares of LayerNorm outputs would be nearly constant)."""
  rng = np.random.default_rng(1)
  weights = [rng.standard_normal(o.shape).astype(np.float32) for o in outputs_like]
  return lambda params: sum(jnp.sum(f * w) for f, w in zip(
      model.apply({"params": params}, images, train=True), weights))


def test_scanned_blocks_have_the_unrolled_parameters_outputs_and_gradients():
  """`scan_blocks` changes how the training program is built, not the model: the same parameter
  tree (checkpoints and converters are unchanged), outputs and gradients; one scan per stage of
  several blocks in training, none in prediction. (No stochastic depth here: its draws differ.)"""
  images = jax.random.normal(jax.random.key(0), (2, 35, 41, 3))
  unrolled = mit("b0", drop_path_rate=0.0, **_SCANNABLE)
  scanned = mit("b0", drop_path_rate=0.0, scan_blocks=True, **_SCANNABLE)
  variables = random_model_variables(unrolled, images)
  scanned_init = jax.eval_shape(lambda x: scanned.init(jax.random.key(0), x, train=False), images)
  assert jax.tree.map(jnp.shape, scanned_init) == jax.tree.map(jnp.shape, variables)

  forward = jax.jit(lambda v, x: (unrolled.apply(v, x, train=True),
                                  scanned.apply(v, x, train=True)))
  expected, got = forward(variables, images)
  for a, b in zip(expected, got):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  grads = [jax.jit(jax.grad(_random_projection_loss(model, images, expected)))(variables["params"])
           for model in (unrolled, scanned)]
  for a, b in zip(*map(jax.tree.leaves, grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()))

  def scans(model, train):
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=train))(variables, images)
    return str(jaxpr).count(" scan[")
  assert [scans(model, True) for model in (unrolled, scanned)] == [0, 3]
  assert scans(scanned, False) == 0


def test_scanned_blocks_keep_dcfms_shallow_feature():
  """DCFM takes a feature between two first-stage blocks: that stage runs unrolled, the rest as
  scans, and both results are the unrolled model's."""
  images = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
  unrolled = mit("b0", drop_path_rate=0.0, **_SCANNABLE)
  scanned = mit("b0", drop_path_rate=0.0, scan_blocks=True, **_SCANNABLE)
  variables = random_model_variables(unrolled, images)
  for shallow_only in (False, True):
    outputs = [model.apply(variables, images, train=True, shallow_blocks=1,
                           shallow_only=shallow_only) for model in (unrolled, scanned)]
    for a, b in zip(*map(jax.tree.leaves, outputs)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_scanned_blocks_drop_each_block_at_its_own_rate_with_its_own_key():
  """Training with stochastic depth: block i of a scanned stage drops as the unrolled block i
  would at its rate, with the i-th key of the stage's split key."""
  x = jax.random.normal(jax.random.key(0), (16, 4, 4, 16))
  blocks = [Block(2, 1, 4, rate, name=f"block2_{i}") for i, rate in enumerate((0.0, 0.3, 0.6))]
  params = {block.name: block.clone(parent=None).init(jax.random.key(i), x, train=False)["params"]
            for i, block in enumerate(blocks)}
  rates = np.array([block.drop_path for block in blocks])
  rng = jax.random.key(7)
  got = jax.jit(lambda p, h: apply_as_scan(blocks, p, rates, h, train=True, rng=rng))(params, x)
  expected = x
  for block, key in zip(blocks, jax.random.split(rng, len(blocks))):
    expected = block.clone(parent=None).apply({"params": params[block.name]}, expected,
                                              train=True, rngs={"dropout": key})
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  evaluated = apply_as_scan(blocks, params, rates, x, train=False, rng=None)
  assert not np.allclose(got, evaluated)  # some branch was dropped


def test_depthwise_weights_declares_a_depthwise_conv_s_variables():
  """Same names, shapes and initial values as `DepthwiseConv` (so CAM's summed convs keep their
  checkpoint tree), and applied by `depthwise_conv` they are that conv."""
  x = jax.random.normal(jax.random.key(0), (2, 9, 7, 6))
  conv = DepthwiseConv((5, 3), kernel_init=torch_kernel_init)
  variables = conv.init(jax.random.key(1), x)
  weights = DepthwiseWeights((5, 3), kernel_init=torch_kernel_init)
  declared = weights.init(jax.random.key(1), 6)
  assert jax.tree.structure(declared) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, declared, variables)
  kernel, bias = weights.apply(declared, 6)
  np.testing.assert_allclose(depthwise_conv(x, kernel, bias, "shifted", jnp.float32),
                             conv.apply(variables, x), atol=1e-6)
  no_bias = DepthwiseWeights(3, use_bias=False)
  assert no_bias.apply(no_bias.init(jax.random.key(1), 6), 6)[1] is None
