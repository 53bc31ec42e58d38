"""DCFM network pieces: published parameter counts, the shallow path's parameters, the channel
dropout of the common feature and of the head."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.conftest import load_config
from tests.models.helpers import (assert_torch_default_init, assert_whole_channels_dropped,
                                  dropout_calls)
from vssjax.methods.dcfm import build_dcfm
from vssjax.models.dcfm import DCFM, DCFMClassifier, FFM, MiTCommonEncoder
from vssjax.models.segformer_head import SegFormerHead


def test_ffm_in_two_pieces_is_the_conv_of_the_concatenation():
  """A keyframe's projected common feature plus a frame's independent share equals the release's
  1x1 conv (with bias) of [common, independent half] -> BN -> ReLU, in train and eval mode."""
  rng = np.random.default_rng(0)
  common = jnp.asarray(rng.standard_normal((2, 5, 6, 8)), jnp.float32)
  half = jnp.asarray(rng.standard_normal((2, 5, 6, 3)), jnp.float32)
  ffm = FFM(features=8, independent_dim=3)
  variables = ffm.init(jax.random.key(0), common, half, train=False,
                       method=lambda m, c, h, train: m(m.project_common(c),
                                                       m.project_independent(h), train=train))
  variables = jax.tree.map(lambda x: x + 0.3 * jnp.asarray(rng.standard_normal(x.shape),
                                                           jnp.float32), variables)
  kernel, bias = variables["params"]["conv"]["kernel"], variables["params"]["conv"]["bias"]
  assert kernel.shape == (1, 1, 11, 8)
  conv = jnp.einsum("nhwc,cd->nhwd", jnp.concatenate([common, half], -1), kernel[0, 0],
                    precision="highest") + bias
  stats = variables["batch_stats"]["norm"]
  norm = variables["params"]["norm"]
  for train in (False, True):
    projected = ffm.apply(variables, common, method=FFM.project_common)
    independent = ffm.apply(variables, half, method=FFM.project_independent)
    out, _ = ffm.apply(variables, projected, independent, train=train, mutable=["batch_stats"])
    mean = conv.mean((0, 1, 2)) if train else stats["mean"]
    var = conv.var((0, 1, 2)) if train else stats["var"]
    expected = jax.nn.relu((conv - mean) / jnp.sqrt(var + 1e-5) * norm["scale"] + norm["bias"])
    np.testing.assert_allclose(out, expected, atol=2e-5, rtol=1e-5)


def _param_count(config_path: str) -> tuple[int, int]:
  config = load_config(config_path)
  model = build_dcfm(config.model, config.data.num_classes)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  total = sum(x.size for x in jax.tree.leaves(variables["params"]))
  encoder = sum(x.size for x in jax.tree.leaves(variables["params"]["encoder"]))
  return total, encoder


@pytest.mark.parametrize("path, total, encoder", [
    # Table II: 24.8M / 82.1M; the encoder/decoder split of specs/dcfm.md §9.
    ("configs/dcfm/vspw_mitb2.py", 24.83e6, 24.725e6),
    ("configs/dcfm/vspw_mitb5.py", 82.08e6, 81.97e6),
    ("configs/dcfm/cityscapes_r18.py", 11.99e6, 11.44e6),
    ("configs/dcfm/cityscapes_r101.py", 55.54e6, 46.82e6),
])
def test_parameter_counts_match_the_release(path, total, encoder):
  got_total, got_encoder = _param_count(path)
  assert abs(got_total - total) < 0.006e6, got_total
  assert abs(got_encoder - encoder) < 0.006e6, got_encoder


def test_shallow_path_needs_only_the_first_layers():
  """A non-key frame runs patch_embed1 + block1_0 only: they are all the parameters it needs."""
  config = load_config("configs/dcfm/synthetic_mitb0.py", "quick")
  model = build_dcfm(config.model, config.data.num_classes)
  images = jnp.ones((1, 32, 48, 3))
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)
  backbone = variables["params"]["encoder"]["backbone"]
  shallow_params = {"encoder": {"backbone": {k: backbone[k] for k in ("patch_embed1", "block1_0")}}}
  shallow = jax.jit(lambda v, x: model.apply(v, x, train=False, method=DCFM.shallow))(
      {"params": shallow_params}, images)
  assert shallow.shape == (1, 8, 12, config.model.backbone_overrides.embed_dims[0])
  # The same map is what the keyframe path hands to the FFM.
  _, from_full = jax.jit(lambda v, x: model.apply(v, x, train=False, method=DCFM.encode))(
      variables, images)
  np.testing.assert_allclose(shallow, from_full, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("head_hidden", [False, True])
def test_non_key_logits_are_the_sum_over_keyframes(head_hidden):
  """Eq. 7: the non-key logits of a frame fused with two keyframes are the sum of its per-keyframe
  decodes, whether the head is linear (one head on the summed features) or not (two heads)."""
  config = load_config("configs/dcfm/synthetic_mitb0.py", "quick")
  config.model.head_hidden = head_hidden
  model = build_dcfm(config.model, config.data.num_classes)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.standard_normal((3, 32, 48, 3)), jnp.float32)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)
  variables = jax.tree.map(lambda x: x + 0.1 * jnp.asarray(rng.standard_normal(x.shape),
                                                           jnp.float32), variables)

  def pieces(m, x):
    common, shallow = m.encode(x, train=False)
    projected = m.project(common)
    keys = [projected[0:1], projected[1:2]]
    decoded = [m.decode(p, shallow[2:], train=False, normalize_first=True)[1] for p in keys]
    return m.non_key_logits(keys, shallow[2:]), decoded

  summed, (first, second) = jax.jit(lambda v, x: model.apply(v, x, method=pieces))(
      variables, images)
  assert summed.shape == (1, 8, 12, config.data.num_classes)
  np.testing.assert_allclose(summed, first + second, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(first - second).max()) > 1e-2  # the two keyframes do differ


def test_resnet_ppm_starts_from_torch_default_init():
  """semseg's PPM convs keep PyTorch's default init: DCFM's `initialize_weights` only reaches
  bot_aspp, ffm and final, which start from He fan-in normals (specs/dcfm.md §2.1)."""
  config = load_config("configs/dcfm/cityscapes_r18.py", "quick")
  model = build_dcfm(config.model, config.data.num_classes)
  images = jnp.zeros((1, 32, 32, 3), jnp.float32)
  params = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)["params"]
  for i in range(4):  # 512 -> 128 channels per bin
    assert_torch_default_init(torch.nn.Conv2d(512, 128, 1, bias=False),
                              params["encoder"]["ppm"][f"features_{i}"]["conv"]["kernel"])
  bottleneck = np.asarray(params["bot_aspp"]["kernel"])
  assert abs(bottleneck.std() * np.sqrt(bottleneck.shape[2] / 2) - 1) < 0.05  # He fan-in


class _StubMiT(nn.Module):
  """The MiT interface of `MiTCommonEncoder` without a MiT: the input is the four levels, the
  shallow feature is the first."""

  @nn.compact
  def __call__(self, levels, *, train, shallow_blocks):
    return levels, levels[0]


def test_mit_common_feature_drops_whole_channels_in_training():
  """specs/dcfm.md §1.1: the common feature is the SegFormer decoder's fused map after
  Dropout2d(0.1): in training whole channels are zeroed and the rest scaled by 1/(1 - rate); in
  eval mode it is the fused map itself. Without it the MiT configs train without that noise."""
  encoder = MiTCommonEncoder(backbone=_StubMiT(), decoder=SegFormerHead(0, embed_dim=8),
                             dropout_rate=0.5)
  rng = np.random.default_rng(0)
  levels = [jnp.asarray(rng.standard_normal((2, 8 // 2**i, 8 // 2**i, d)), jnp.float32)
            for i, d in enumerate((8, 16, 24, 32))]
  variables = jax.jit(lambda x: encoder.init(jax.random.key(0), x, train=False))(levels)
  # A large BN shift keeps the fused map (after its ReLU) non-zero everywhere.
  variables["params"]["decoder"]["linear_fuse"]["bn"]["bias"] = jnp.full((8,), 10.0)

  def common_and_fused(train):
    fused = []

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if isinstance(context.module, SegFormerHead) and context.method_name == "__call__":
        fused.append(out[1])
      return out

    with nn.intercept_methods(record):
      (common, _), _ = encoder.apply(variables, levels, train=train, mutable=["batch_stats"],
                                     rngs={"dropout": jax.random.key(1)})
    return common, fused[0]

  common, fused = common_and_fused(train=True)
  assert_whole_channels_dropped(fused, common, 0.5)
  common, fused = common_and_fused(train=False)
  np.testing.assert_array_equal(common, fused)


def test_classifier_dropout_drops_whole_channels():
  """specs/dcfm.md §2.2: the head's dropout before `cls` is Dropout2d: in training each
  (sample, channel) is zeroed or kept whole, scaled by 1/(1 - rate), not element by element."""
  head = DCFMClassifier(num_classes=3, hidden=False, dropout_rate=0.5)
  x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (2, 4, 5, 16)), jnp.float32)
  variables = head.init(jax.random.key(0), x, train=False)
  (before, after), = dropout_calls(
      lambda: head.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)}))
  np.testing.assert_array_equal(before, x)
  assert_whole_channels_dropped(before, after, 0.5)
