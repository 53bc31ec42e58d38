"""vssjax.models.mit (MiT): LayerNorm epsilons, the two depthwise-conv forms, bf16 compute, blocks
run as a scan, DCFM's shallow feature."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import random_model_variables
from tests.models.helpers import TINY_MIT, layer_norm_epsilons
from vssjax.errors import SetupError
from vssjax.models.layers import layer_norm
from vssjax.models.mit import BLOCK_EPS, Block, OverlapPatchEmbed, apply_as_scan, mit


def test_layer_norm_epsilons_are_mmseg_s():
  """Each MiT LayerNorm's eps by module path, as mmseg (specs/dtern.md §2): 1e-5 in the patch-embed
  and spatial-reduction norms, 1e-6 in the block and stage norms. The parity test hardly sees a
  wrong eps (its activations have unit variance: a block eps of 1e-5 exceeds its tolerance 1.5
  times), and not the patch-embed or sr norms', so each is read off the modules here."""
  epsilons = layer_norm_epsilons(mit("b0", **TINY_MIT), jnp.ones((1, 32, 32, 3)), train=False)
  expected = {}
  for stage, depth in enumerate(TINY_MIT["depths"], start=1):
    expected[f"patch_embed{stage}/norm"] = 1e-5
    for j in range(depth):
      expected[f"block{stage}_{j}/norm1"] = expected[f"block{stage}_{j}/norm2"] = 1e-6
      if stage < 4:  # sr ratio > 1
        expected[f"block{stage}_{j}/attn/norm"] = 1e-5
    expected[f"norm{stage}"] = 1e-6
  assert epsilons == expected


def test_mit_with_grouped_dwconv_matches_shifted_with_same_params():
  images = jax.random.normal(jax.random.key(0), (1, 35, 41, 3))
  shifted, grouped = mit("b0", **TINY_MIT), mit("b0", dwconv_impl="grouped", **TINY_MIT)
  variables = random_model_variables(shifted, images)
  forward = jax.jit(lambda v, x: (shifted.apply(v, x, train=False),
                                  grouped.apply(v, x, train=False)))
  for a, b in zip(*forward(variables, images)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  model = mit("b0", dtype=jnp.bfloat16, **TINY_MIT)
  images = jnp.ones((1, 32, 32, 3))
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  assert {v.dtype for v in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
  # The stage outputs are LayerNorms', float32 as under torch's autocast: the residual stream
  # stays float32 (bf16 rounded it after every block, twice autocast's error by c4 on MiT-B2).
  assert {o.dtype for o in out} == {jnp.dtype(jnp.float32)}


# Stages of 2, 3, 1 and 2 blocks: three run as a scan, the one-block stage as it is.
_SCANNABLE = dict(TINY_MIT, depths=(2, 3, 1, 2))


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


@pytest.mark.parametrize("shallow_blocks", [0, TINY_MIT["depths"][0]])
def test_dcfms_shallow_feature_is_the_first_stage_before_its_other_blocks_and_norm(shallow_blocks):
  """DCFM's independent feature (specs/dcfm.md §1.1) after `shallow_blocks` of stage 1: its
  remaining blocks and then its norm give the stage's output; at the stage's whole depth the norm
  alone, which the shallow feature is taken before."""
  model = mit("b0", drop_path_rate=0.0, **TINY_MIT)
  images = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
  variables = random_model_variables(model, images)
  (c1, *_), shallow = model.apply(variables, images, train=False, shallow_blocks=shallow_blocks)
  np.testing.assert_array_equal(
      model.apply(variables, images, train=False, shallow_blocks=shallow_blocks,
                  shallow_only=True), shallow)
  params = variables["params"]
  x = shallow
  for j in range(shallow_blocks, TINY_MIT["depths"][0]):
    block = Block(TINY_MIT["num_heads"][0], model.sr_ratios[0], model.mlp_ratio, 0.0,
                  model.dwconv_impl)
    x = block.apply({"params": params[f"block1_{j}"]}, x, train=False)
  np.testing.assert_allclose(layer_norm(BLOCK_EPS).apply({"params": params["norm1"]}, x), c1,
                             rtol=1e-5, atol=1e-5)
  assert not np.allclose(x, c1, atol=1e-2)


def test_the_first_stages_alone_are_the_whole_networks_and_read_only_their_parameters():
  """`stages=n`: c1..cn as the four stages give them, without running (or reading) the deeper
  stages; n outside 1..4, or with DCFM's shallow feature, refused."""
  model = mit("b0", **TINY_MIT)
  images = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
  variables = random_model_variables(model, images)
  features = model.apply(variables, images, train=False)
  for stages in (1, 2, 4):
    first = model.apply(variables, images, train=False, stages=stages)
    assert len(first) == stages
    for got, expected in zip(first, features):
      np.testing.assert_array_equal(got, expected)
  stage1 = {"params": {k: v for k, v in variables["params"].items()
                       if k.startswith(("patch_embed1", "block1_", "norm1"))}}
  np.testing.assert_array_equal(model.apply(stage1, images, train=False, stages=1)[0], features[0])
  for stages, shallow_blocks in ((0, None), (5, None), (1, 1)):
    with pytest.raises(ValueError, match=rf"stages must be in \[1, 4\].*got {stages}"):
      model.apply(variables, images, train=False, stages=stages, shallow_blocks=shallow_blocks)


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


def _block_drop_rates(model, images):
  """Each Block's `drop_path` rate by module path, read off a traced init (nothing computed)."""
  rates = {}

  def record(next_fun, call_args, call_kwargs, context):
    if isinstance(context.module, Block) and context.method_name == "__call__":
      rates["/".join(context.module.path)] = context.module.drop_path
    return next_fun(*call_args, **call_kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  return rates


def test_stochastic_depth_grows_linearly_from_zero_to_the_rate_over_all_blocks():
  """mmseg/timm's schedule `linspace(0, drop_path_rate, sum(depths))` over the blocks in order
  (specs/dtern.md §2: 0 -> 0.1): the first block never drops, the last drops at the full rate. A
  shifted schedule would train every block, the first included, with more stochastic depth."""
  images = jnp.ones((1, 32, 32, 3))
  names = [f"block{s}_{j}" for s, depth in enumerate(TINY_MIT["depths"], start=1)
           for j in range(depth)]
  for rate, model in ((0.1, mit("b0", **TINY_MIT)),  # the default is SegFormer's 0.1
                      (0.3, mit("b0", drop_path_rate=0.3, **TINY_MIT))):
    rates = _block_drop_rates(model, images)
    assert sorted(rates) == sorted(names)
    np.testing.assert_allclose([rates[name] for name in names],
                               np.linspace(0.0, rate, len(names)), rtol=0, atol=1e-12)


def test_block_drops_its_attention_and_mlp_branches_by_stochastic_depth():
  """timm's Block: x + DropPath(attn(LN1 x)), then + DropPath(mlp(LN2 x)), each branch dropped
  per sample. A sample whose two branches are both dropped leaves the block exactly as it came
  in; if the MLP branch escaped stochastic depth, no sample would (and deep MiTs would train
  with less regularisation than the release)."""
  batch = 64
  x = jax.random.normal(jax.random.key(0), (batch, 2, 2, 16))
  block = Block(num_heads=2, sr_ratio=1, mlp_ratio=4, drop_path=0.5)
  variables = random_model_variables(block, x)
  out = np.asarray(block.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)}))
  unchanged = np.all(out == np.asarray(x), axis=(1, 2, 3))
  # Independent draws at 0.5: a quarter of the samples (16 expected) lose both branches.
  assert 4 <= unchanged.sum() <= 28, unchanged.sum()
  # Each other sample moved by a whole branch (nothing is added partially or left near x).
  moved = np.abs(out - np.asarray(x)).reshape(batch, -1).max(1)
  assert moved[~unchanged].min() > 1e-3
  evaluated = block.apply(variables, x, train=False)
  assert not np.allclose(out, evaluated)


def test_mit_linear_convolution_and_depthwise_inits_are_mmseg_s():
  """MiT's `_init_weights` (mmseg/timm): every Linear trunc_normal(std=.02) (which does not
  truncate at that std: a N(0, 0.02)) with zero bias; every Conv2d normal(0, sqrt(2 / fan_out)),
  fan_out = kh * kw * out_channels / groups (k*k for the depth-wise 3x3), zero bias. Flax's
  defaults (LeCun normal) would start training from scratch far from the release: a q kernel
  6x too wide on a 64-channel block."""
  channels = 64
  block = Block(num_heads=2, sr_ratio=2, mlp_ratio=4, drop_path=0.0)
  params = jax.jit(lambda key: block.init(key, jnp.zeros((1, 2, 2, channels)), train=False))(
      jax.random.key(0))["params"]
  linears = {"attn/q": params["attn"]["q"], "attn/kv": params["attn"]["kv"],
             "attn/proj": params["attn"]["proj"], "mlp/fc1": params["mlp"]["fc1"],
             "mlp/fc2": params["mlp"]["fc2"]}
  convs = {"attn/sr": (params["attn"]["sr"], np.sqrt(2 / (2 * 2 * channels))),
           "mlp/dwconv": (params["mlp"]["dwconv"], np.sqrt(2 / (3 * 3)))}
  for name, (layer, std) in [*((n, (l, 0.02)) for n, l in linears.items()), *convs.items()]:
    kernel = np.asarray(layer["kernel"], np.float64).ravel()
    # The sample std of n normal draws has a relative standard error of 1 / sqrt(2 n).
    assert abs(kernel.std() / std - 1) < 5 / np.sqrt(2 * kernel.size), name
    assert abs(kernel.mean()) < 5 * std / np.sqrt(kernel.size), name
    np.testing.assert_array_equal(layer["bias"], 0.0, err_msg=name)


def test_mit_patch_embedding_conv_init_is_he_fan_out_normal():
  """The first patch embedding (7x7, stride 4, 3 -> C) as mmseg initialises every MiT Conv2d:
  normal(0, sqrt(2 / fan_out)), fan_out = 7 * 7 * C (0.025 for C = 64; Flax's LeCun default
  would draw 0.082, from fan_in = 7 * 7 * 3)."""
  embed = OverlapPatchEmbed(64, 7, 4)
  params = jax.jit(lambda key: embed.init(key, jnp.zeros((1, 8, 8, 3))))(jax.random.key(0))
  proj = params["params"]["proj"]
  kernel = np.asarray(proj["kernel"], np.float64).ravel()
  std = np.sqrt(2 / (7 * 7 * 64))
  assert abs(kernel.std() / std - 1) < 5 / np.sqrt(2 * kernel.size)
  np.testing.assert_array_equal(proj["bias"], 0.0)


@pytest.mark.parametrize("hw, stage", [((24, 64), 1), ((64, 28), 1), ((32, 1000), None)])
def test_an_input_too_small_for_a_stages_spatial_reduction_is_refused_naming_the_smallest(hw,
                                                                                         stage):
  """At 24x24 stage 1's map is 6x6, smaller than its 8x8 spatial-reduction window: the attention
  had no key, and the trace failed in a reduction ('zero-size array to reduction operation max'),
  naming no size."""
  model, images = mit("b0"), jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)
  init = lambda x: model.init(jax.random.key(0), x, train=False)
  if stage is None:
    jax.eval_shape(init, images)
    return
  with pytest.raises(SetupError, match=rf"^a {hw[0]}x{hw[1]} input is too small for the MiT: its "
                     rf"stage-{stage} map \(\d a side\) is smaller than that stage's 8x8 spatial "
                     r"reduction; the MiT takes inputs of at least 29x29 "):
    jax.eval_shape(init, images)
  jax.eval_shape(init, jax.ShapeDtypeStruct((1, 29, 29, 3), jnp.float32))
