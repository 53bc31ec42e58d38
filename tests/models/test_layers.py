"""Hand-computed checks of the shared layers (torch parity of BatchNorm is in tests/parity)."""
import functools
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.conftest import assert_each_gradient_close, random_model_variables
from tests.models.helpers import TINY_MIT, assert_torch_default_init
from vssjax.models.layers import (BatchNorm, Conv, Dense, DepthwiseConv, DepthwiseWeights,
                                  DropPath, cosine_similarity, dense_init, depthwise_conv,
                                  dropout2d, flatten_time, l2_normalize, normalize_images,
                                  torch_bias_init, torch_default_init, torch_kernel_init)
from vssjax.models.mit import mit
from vssjax.models.mobilenet_v2 import MobileNetV2
from vssjax.models.resnet import resnet
from vssjax.ops import conv as conv_ops


def test_flatten_time_is_clip_major():
  """[B, T, ...] -> [B*T, ...] with time innermost: clip b's frame t is row b*T + t, the order
  in which the models split a per-frame network's output back into clips."""
  x = jnp.arange(2 * 3 * 4).reshape(2, 3, 4)
  out = flatten_time(x)
  assert out.shape == (6, 4)
  # Every row: the last one alone (b=1, t=2) is row 5 in time-major order too.
  for b in range(2):
    for t in range(3):
      np.testing.assert_array_equal(out[b * 3 + t], x[b, t])


def test_normalize_images_uses_rgb_imagenet_statistics():
  frames = jnp.asarray([[[[123, 116, 103], [255, 0, 0]]]], jnp.uint8)
  out = normalize_images(frames, jnp.bfloat16)
  assert out.dtype == jnp.bfloat16 and out.shape == (1, 1, 2, 3)
  expected = [[(123 - 123.675) / 58.395, (116 - 116.28) / 57.12, (103 - 103.53) / 57.375],
              [(255 - 123.675) / 58.395, -116.28 / 57.12, -103.53 / 57.375]]
  np.testing.assert_allclose(np.asarray(out, np.float32)[0, 0], expected, rtol=1e-2, atol=1e-2)
  np.testing.assert_allclose(normalize_images(frames)[0, 0], expected, atol=1e-6)


def test_l2_normalize_is_torch_normalize():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0], [1e-14, 0.0]])
  # torch F.normalize divides by max(norm, 1e-12): a zero vector stays zero, a tiny one shrinks.
  np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0], [1e-2, 0.0]], rtol=1e-6)


def test_l2_normalize_matches_numpy_along_any_axis():
  x = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(np.float32)
  for axis in (-1, 0, 1):
    expected = x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)
    np.testing.assert_allclose(l2_normalize(jnp.asarray(x), axis=axis), expected, rtol=1e-6)
  # A larger eps floors the norm; bf16 in, bf16 out (computed in float32).
  small = np.array([[0.3, 0.4]], np.float32)
  np.testing.assert_allclose(l2_normalize(jnp.asarray(small), eps=1.0), small)
  out = l2_normalize(jnp.asarray(x, jnp.bfloat16))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32),
                             x / np.linalg.norm(x, axis=-1, keepdims=True), atol=1e-2)


def test_cosine_similarity_broadcasts_like_torch():
  """torch 1.7's F.cosine_similarity over the last axis: against a [E] prompt and a size-1 axis,
  and a zero vector gives 0 (the norm product is clamped to 1e-8, not each norm)."""
  rng = np.random.default_rng(0)
  a = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
  a[0, 0, 0] = 0.0
  for b in (rng.standard_normal(7), rng.standard_normal((2, 1, 5, 7))):
    b = b.astype(np.float32)
    dot = np.sum(a * b, axis=-1)
    expected = dot / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-8)
    out = cosine_similarity(jnp.asarray(a), jnp.asarray(b))
    assert out.shape == (2, 3, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert float(out[0, 0, 0]) == 0.0


def test_cosine_similarity_of_bfloat16_vectors_is_float32():
  """torch's autocast runs `cosine_similarity` in float32; in bf16 DTERN's exemplar gate's
  cosines (0.95 to 0.98) were up to 0.01 off."""
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.standard_normal((4, 3, 64)) + 3, jnp.bfloat16) for _ in range(2))
  out = cosine_similarity(a, b)
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(out, cosine_similarity(a.astype(jnp.float32),
                                                       b.astype(jnp.float32)))


def test_batch_norm_updates_running_var_with_unbiased_variance():
  x = jnp.asarray([1.0, 3.0]).reshape(2, 1, 1, 1)  # mean 2, biased var 1, unbiased var 2
  bn = BatchNorm()
  variables = bn.init(jax.random.key(0), x, train=True)
  out, updates = bn.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(out.ravel(), [-1.0, 1.0], atol=1e-5)  # uses the biased variance
  np.testing.assert_allclose(updates["batch_stats"]["mean"], [0.1 * 2.0])
  np.testing.assert_allclose(updates["batch_stats"]["var"], [0.9 * 1.0 + 0.1 * 2.0])
  # Eval mode normalises with the running statistics.
  stats = {"params": variables["params"], "batch_stats": {"mean": jnp.array([1.0]),
                                                          "var": jnp.array([4.0 - 1e-5])}}
  np.testing.assert_allclose(bn.apply(stats, x, train=False).ravel(), [0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("train", [False, True])
def test_bfloat16_batch_norm_rounds_once_as_torch_does(train):
  """torch's batch norm of bf16 inputs computes in float32 and rounds its output once. Inputs
  with a mean of 100 (bf16 ulp 0.5): rounding x * (scale / std) to bf16 before the add that
  cancels the mean erred by up to 0.25 at outputs of size 1 (before the fix)."""
  x = 100 + np.random.default_rng(0).standard_normal((8, 4, 4, 3))
  x = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)  # the values the bf16 layer sees
  scale = np.array([0.7, 1.3, 2.1])
  variables = {"params": {"scale": jnp.asarray(scale, jnp.float32), "bias": jnp.zeros(3)},
               "batch_stats": {"mean": jnp.full(3, 100.0), "var": jnp.full(3, 1.1)}}
  out = BatchNorm(dtype=jnp.bfloat16).apply(variables, jnp.asarray(x, jnp.bfloat16), train=train,
                                            mutable=["batch_stats"])[0]
  mean, var = (x.mean((0, 1, 2)), x.var((0, 1, 2))) if train else (100.0, 1.1)
  want = (x - mean) / np.sqrt(var + 1e-5) * scale
  assert out.dtype == jnp.bfloat16
  # One rounding of the float32 result: within half a bf16 ulp (2^-9 relative), plus float32
  # rounding of the statistics.
  np.testing.assert_allclose(np.asarray(out, np.float64), want, rtol=2 ** -8, atol=1e-4)


def test_dropout2d_drops_whole_channels_of_each_sample():
  """torch's Dropout2d: per (sample, channel) the whole H x W map is kept (scaled by 1/(1-p)) or
  zeroed; identity when deterministic; the 'dropout' rng."""
  x = jnp.ones((8, 5, 6, 16))
  out = dropout2d(0.5).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
  per_map = np.asarray(out).reshape(8, 30, 16)
  assert (per_map == per_map[:, :1]).all()  # one decision per map
  assert set(np.unique(per_map)) == {0.0, 2.0}
  np.testing.assert_array_equal(dropout2d(0.5).apply({}, x, deterministic=True), x)


def test_dropout2d_scales_bfloat16_in_float32_and_float32_as_flax():
  """torch's kernel scales a bf16 map in float32: x / 0.9 rounded once (Flax's own `nn.Dropout`
  divides by 0.9 in bf16, 0.8984375: kept values 0.18% too large). float32 maps and the draws
  are `nn.Dropout`'s, so a float32 run trains as before."""
  x = jnp.asarray(1 + np.random.default_rng(0).random((4, 3, 3, 32)), jnp.float32)
  key = {"dropout": jax.random.key(0)}
  flax_dropout = nn.Dropout(0.1, broadcast_dims=(-3, -2))
  np.testing.assert_array_equal(dropout2d(0.1).apply({}, x, deterministic=False, rngs=key),
                                flax_dropout.apply({}, x, deterministic=False, rngs=key))
  x = x.astype(jnp.bfloat16)
  out = dropout2d(0.1).apply({}, x, deterministic=False, rngs=key)
  kept = out != 0
  assert out.dtype == jnp.bfloat16 and 0 < kept.mean() < 1
  np.testing.assert_array_equal(
      kept, flax_dropout.apply({}, x, deterministic=False, rngs=key) != 0)
  expected = (x.astype(jnp.float32) / np.float32(0.9)).astype(jnp.bfloat16)
  np.testing.assert_array_equal(out[kept], expected[kept])


def test_drop_path_keeps_or_drops_whole_samples_and_rescales():
  x = jnp.ones((64, 2, 2, 3))
  out = DropPath(0.5).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
  per_sample = np.asarray(out).reshape(64, -1)
  assert set(np.unique(per_sample)) == {0.0, 2.0}
  assert (per_sample.min(1) == per_sample.max(1)).all()
  assert 10 < (per_sample[:, 0] == 0).sum() < 54
  np.testing.assert_array_equal(DropPath(0.5).apply({}, x, train=False), x)


def test_drop_path_takes_a_traced_rate_and_keeps_the_inputs_dtype():
  """Under `MixTransformer.scan_blocks` each block's rate is a traced scalar: the same draws and
  scaling as the field's rate, and bf16 stays bf16 (a float32 rate would promote it)."""
  x = jnp.ones((64, 2, 2, 3), jnp.bfloat16)
  key = {"dropout": jax.random.key(0)}
  static = DropPath(0.25).apply({}, x, train=True, rngs=key)
  traced = jax.jit(lambda r: DropPath(0.0).apply({}, x, train=True, rate=r, rngs=key))(0.25)
  assert static.dtype == traced.dtype == jnp.bfloat16
  kept = jnp.asarray(1, jnp.bfloat16) / jnp.asarray(0.75, jnp.bfloat16)  # 1 / keep, in bf16
  assert set(np.unique(np.asarray(traced, np.float32))) == {0.0, float(kept)}
  np.testing.assert_array_equal(static, traced)


def test_drop_path_scales_as_torchs_division_by_the_keep_probability():
  """timm 0.3's `x.div(keep_prob)` (the releases' MiT), as torch's CUDA kernel divides by a
  scalar: x times the float32 reciprocal, rounded once. A bf16 keep_prob (0.8984 for 0.9) scaled
  every kept branch 0.2% too much."""
  x = jnp.asarray(1 + np.random.default_rng(0).random((64, 2, 2, 3)), jnp.bfloat16)
  out = DropPath(0.1).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
  kept = np.asarray(out, np.float32).reshape(64, -1).any(1)
  assert 40 < kept.sum() < 64
  expected = (x.astype(jnp.float32) * (np.float32(1) / np.float32(0.9))).astype(jnp.bfloat16)
  np.testing.assert_array_equal(out[kept], expected[kept])


class _Named(nn.Module):
  """A layer `make(name)` of a compact method, its name given, then one assigned in `setup`."""
  make: object

  def setup(self):
    self.second = self.make(None)

  def __call__(self, x):
    return self.second(self.first(x))

  @nn.compact
  def first(self, x):
    return self.make("first")(x)


# Flax's layers as vssjax ran them before `WithBias` (kernel == stride convs as matmuls).
_FLAX_CONV = functools.partial(nn.Conv, conv_general_dilated=conv_ops.conv_general_dilated)
_LAYERS = {
    "dense": (lambda ours: functools.partial(Dense if ours else nn.Dense, 6,
                                             **torch_default_init(6))),
    "conv3x3": (lambda ours: functools.partial(Conv if ours else _FLAX_CONV, 6, (3, 3),
                                               **torch_default_init(54))),
    "conv1x1": (lambda ours: functools.partial(Conv if ours else _FLAX_CONV, 6, (1, 1),
                                               bias_init=torch_bias_init(6))),
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("layer", sorted(_LAYERS))
def test_conv_and_dense_are_flaxs_layers_with_their_bias_added_by_add_bias(layer, dtype):
  """`Conv` and `Dense` (a bias-free Flax layer in `WithBias`) have Flax's parameter tree and
  initial values, named in a compact method or assigned in `setup`, and its outputs."""
  ours, flax_layer = (functools.partial(_LAYERS[layer](o), dtype=dtype) for o in (True, False))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 5, 6)), jnp.float32)
  variables = _Named(lambda name: ours(name=name)).init(jax.random.key(1), x)
  expected = _Named(lambda name: flax_layer(name=name)).init(jax.random.key(1), x)
  assert jax.tree.structure(variables) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(variables), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want)
  out = _Named(lambda name: ours(name=name)).apply(variables, x)
  assert out.dtype == dtype
  np.testing.assert_array_equal(out, _Named(lambda name: flax_layer(name=name)).apply(expected, x))


def test_conv_and_dense_take_flaxs_positional_arguments_and_param_dtype():
  x = jnp.ones((1, 8, 8, 3))
  for ours, flax_layer in ((Conv, _FLAX_CONV), (Dense, nn.Dense)):
    args = (4, (3, 3), 2) if ours is Conv else (4,)  # features, kernel size, strides
    ours, flax_layer = (make(*args, param_dtype=jnp.bfloat16, name="layer")
                        for make in (ours, flax_layer))
    variables, expected = (layer.init(jax.random.key(0), x) for layer in (ours, flax_layer))
    assert (jax.tree.map(lambda a: (a.shape, a.dtype), variables)
            == jax.tree.map(lambda a: (a.shape, a.dtype), expected))
    np.testing.assert_array_equal(ours.apply(variables, x), flax_layer.apply(expected, x))


@pytest.mark.parametrize("layer", sorted(_LAYERS))
def test_a_bfloat16_layers_bias_gradient_is_summed_in_float32(layer):
  """Over 65536 output pixels a bf16 sum of the bias's gradient ends far off (8192 for a sum near
  65536 on XLA:CPU, `ops.mixed_precision.add_bias`); ours is the exact sum of the layer's (bf16)
  cotangents, rounded once to bf16. Compiled as in a training step: everything an argument."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 128, 128, 6)), jnp.float32)
  weights = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, (4, 128, 128, 6)),
                        jnp.float32)
  module = _LAYERS[layer](True)(dtype=jnp.bfloat16)
  params = module.init(jax.random.key(0), x)
  loss = lambda p, x, weights: jnp.sum(module.apply(p, x).astype(jnp.float32) * weights)
  grad = jax.jit(jax.grad(loss))(params, x, weights)["params"]["bias"]
  assert grad.dtype == jnp.float32
  exact = np.asarray(weights.astype(jnp.bfloat16), np.float64).sum((0, 1, 2))
  np.testing.assert_allclose(grad, exact, rtol=2 ** -8)


@pytest.mark.parametrize("torch_layer, kernel_shape", [
    (torch.nn.Linear(300, 40), (300, 40)),
    (torch.nn.Conv2d(64, 32, 3), (3, 3, 64, 32)),
    (torch.nn.Conv2d(48, 48, (1, 11), groups=48), (1, 11, 1, 48))])  # depth-wise
def test_torch_default_initialisers(torch_layer, kernel_shape):
  """The kernel's fan-in comes from its Flax shape; the bias is told the same fan-in."""
  kernel = torch_kernel_init(jax.random.key(0), kernel_shape)
  bias = torch_bias_init(math.prod(kernel_shape[:-1]))(jax.random.key(1), kernel_shape[-1:])
  assert_torch_default_init(torch_layer, kernel, bias)


def test_dense_init_is_timms_trunc_normal_which_does_not_truncate():
  """timm's trunc_normal_(std=.02) cuts at +-2 absolute (100 std): a plain N(0, 0.02)."""
  kernel = np.asarray(dense_init(jax.random.key(0), (256, 256)))
  assert abs(kernel.std() - 0.02) < 0.0005  # Flax's truncated_normal(0.02) gives 0.0176
  assert np.abs(kernel).max() > 2.5 * 0.02  # tails beyond 2 std are kept


@pytest.mark.parametrize("channels, kernel_size", [(64, 3), (256, 3), (48, (1, 11))])
def test_depthwise_conv_init_is_he_fan_out_normal_with_groups(channels, kernel_size):
  """mmseg's Conv2d init for MiT's DWConv: normal(0, sqrt(2 / fan_out)) with fan_out =
  kh * kw * out_channels / groups = kh * kw (groups = C), whatever C is: std sqrt(2/9) for a 3x3.
  Counting C in the fan-out would start the MixFFN convs sqrt(C) times too small."""
  conv = DepthwiseConv(kernel_size)
  variables = conv.init(jax.random.key(0), jnp.zeros((1, 3, 3, channels)))["params"]
  kh, kw = (kernel_size,) * 2 if isinstance(kernel_size, int) else kernel_size
  kernel = np.asarray(variables["kernel"], np.float64)
  assert kernel.shape == (kh, kw, 1, channels)
  std = np.sqrt(2 / (kh * kw))
  # The sample std of n normal draws has a relative standard error of 1 / sqrt(2 n).
  assert abs(kernel.std() / std - 1) < 5 / np.sqrt(2 * kernel.size)
  np.testing.assert_array_equal(variables["bias"], np.zeros(channels))


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


# Backbones whose blocks `model.remat` rematerialises: (factory of the remat policy, the blocks
# it wraps in training). MiT's scanned stages (2, 3 and 2 blocks) are one rematerialised scan body
# each, its one-block stage a block as it is.
_REMAT_BACKBONES = {
    "mit": (lambda remat: mit("b0", drop_path_rate=0.3, remat=remat, **TINY_MIT), 5),
    "mit_scanned": (lambda remat: mit("b0", drop_path_rate=0.3, remat=remat, scan_blocks=True,
                                      **dict(TINY_MIT, depths=(2, 3, 1, 2))), 4),
    "resnet18": (lambda remat: resnet(18, remat=remat), 8),
    "mobilenet_v2": (lambda remat: MobileNetV2(remat=remat), 17),
}


_REMAT_IMAGES = jax.ShapeDtypeStruct((2, 40, 40, 3), jnp.float32)


def _rematerialised_blocks(model, variables, train: bool) -> int:
  """How many `jax.checkpoint`s the model's application holds."""
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=train,
                                                  rngs={"dropout": jax.random.key(2)},
                                                  mutable=["batch_stats"]))(variables,
                                                                            _REMAT_IMAGES)
  # jax.checkpoint's primitive: 'remat2' in jax 0.10, 'checkpoint' in later versions.
  return len(re.findall(r" (?:remat2|checkpoint)\[", str(jaxpr)))


@pytest.mark.parametrize("backbone", sorted(_REMAT_BACKBONES))
def test_remat_wraps_each_block_in_training_only(backbone):
  """`remat` keeps the variables, and wraps each block in `jax.checkpoint` in training, none in
  prediction."""
  make, blocks = _REMAT_BACKBONES[backbone]
  kept, recomputed = make(""), make("nothing_saveable")
  variables = jax.eval_shape(lambda x: kept.init(jax.random.key(0), x, train=False),
                             _REMAT_IMAGES)
  assert jax.eval_shape(lambda x: recomputed.init(jax.random.key(0), x, train=False),
                        _REMAT_IMAGES) == variables
  assert [_rematerialised_blocks(model, variables, True) for model in (kept, recomputed)] == [
      0, blocks]
  assert _rematerialised_blocks(recomputed, variables, False) == 0


# Unrolled blocks are wrapped by `layers.run_block` in every backbone (the test above), so its
# effects are tested on MiT's (stochastic depth) and ResNet's (BatchNorm; MobileNetV2's blocks are
# wrapped alike), the scanned stages' wrapping on MiT's, and a second policy, which only
# `jax.checkpoint` reads, on MiT's unrolled blocks (what each policy keeps: the next test).
@pytest.mark.parametrize("backbone, policy", [
    ("mit", "nothing_saveable"), ("mit", "dots_with_no_batch_dims_saveable"),
    ("mit_scanned", "nothing_saveable"), ("resnet18", "nothing_saveable")])
def test_rematerialised_blocks_train_as_the_kept_ones(backbone, policy):
  """`remat` changes what a training step keeps for its backward pass, not the model: the same
  outputs, BatchNorm statistics, stochastic-depth draws and gradients.

  Both steps run op by op (`jax.disable_jit`), so the recomputed forward is the kept one's ops on
  the same inputs, bit for bit. Compiled, XLA fuses (and so rounds) a recomputed activation
  otherwise than the kept one: on one machine MobileNetV2's compiled gradients differed by up to
  3% (a BatchNorm shift's, whose BatchNorm sees 50 values a channel here; earlier machines agreed
  to 1e-3). The kept program alone moves the same gradient by the same 3% when its images change
  by 1e-6 relative: a pre-activation crossing a ReLU6 kink, not remat."""
  make, _ = _REMAT_BACKBONES[backbone]
  images = jax.random.normal(jax.random.key(0), _REMAT_IMAGES.shape)
  kept, recomputed = make(""), make(policy)
  variables = random_model_variables(kept, images)
  weights = [np.random.default_rng(1).standard_normal(f.shape).astype(np.float32)
             for f in jax.eval_shape(lambda x: kept.apply(variables, x, train=False), images)]

  def loss(params, model):
    features, state = model.apply({**variables, "params": params}, images, train=True,
                                  rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
    return sum(jnp.sum(f * w) for f, w in zip(features, weights)), state

  with jax.disable_jit():
    (expected, expected_state), expected_grads = jax.value_and_grad(
        functools.partial(loss, model=kept), has_aux=True)(variables["params"])
    (got, state), grads = jax.value_and_grad(
        functools.partial(loss, model=recomputed), has_aux=True)(variables["params"])
  np.testing.assert_array_equal(got, expected)
  for a, b in zip(jax.tree.leaves(expected_state), jax.tree.leaves(state)):
    np.testing.assert_array_equal(b, a)
  # The backward passes may add a residual's two cotangents in either order (ResNet's differ by
  # ~1e-6 relative); a block left out of a gradient would be off by about its own size.
  assert_each_gradient_close(grads, expected_grads, rtol=1e-5, noise=1e-7)


def test_rematerialised_scan_keeps_less_for_the_backward_pass():
  """What remat is for, in XLA's own count of a training step's temporary buffers: a scanned MiT
  stage keeps each block's activations for the backward pass, a rematerialised one what its
  policy saves.
  (Unrolled blocks rematerialise too, as the test above checks, but XLA:CPU schedules their
  recomputation early and keeps as much: docs/scaling.md.)"""
  images = jax.ShapeDtypeStruct((2, 128, 128, 3), jnp.float32)

  def temporary_bytes(remat):
    model = mit("b0", drop_path_rate=0.0, scan_blocks=True, remat=remat,
                **dict(TINY_MIT, depths=(4, 4, 4, 4)))
    params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                            images)["params"]
    grad = jax.grad(lambda p, x: sum(jnp.sum(f ** 2) for f in model.apply(
        {"params": p}, x, train=True)))
    return jax.jit(grad).lower(params, images).compile().memory_analysis().temp_size_in_bytes
  # Each policy keeps more than the one before: the block's input alone, its matrix products
  # without batch dimensions (all of MiT's but the attention's), all its matrix products.
  kept = [temporary_bytes(policy) for policy in ("nothing_saveable",
                                                 "dots_with_no_batch_dims_saveable",
                                                 "dots_saveable")]
  assert kept == sorted(set(kept)) and kept[-1] < 0.6 * temporary_bytes("")


def test_an_unknown_remat_policy_is_refused():
  with pytest.raises(ValueError, match=r"remat policy must be one of .* got 'everything'"):
    mit("b0", remat="everything", **TINY_MIT).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=True)
