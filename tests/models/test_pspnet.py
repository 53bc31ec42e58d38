"""PSPNet outputs: stride-8 logits and PPM features, the aux head only in training; head init;
the heads' channel-wise (2-D) dropout."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.models.helpers import assert_torch_default_init
from vssjax.models.pspnet import PSPNet, SegmentationHead, pspnet

_IMAGES = jax.ShapeDtypeStruct((2, 65, 97, 3), jnp.float32)


def _outputs(model, train):
  def run(x):
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x,
                           train=False)
    outputs = model.apply(variables, x, train=train, mutable=["batch_stats"],
                          rngs={"dropout": jax.random.key(2)})[0]
    return variables["params"], outputs
  return jax.eval_shape(run, _IMAGES)


@pytest.mark.parametrize("depth, features, head", [(18, 1024, 256), (50, 4096, 512)])
def test_outputs_and_heads(depth, features, head):
  model = pspnet(depth, 19)
  params, eval_outputs = _outputs(model, train=False)
  _, train_outputs = _outputs(model, train=True)
  assert sorted(eval_outputs) == ["features", "logits"]
  assert sorted(train_outputs) == ["aux_logits", "features", "logits"]
  assert eval_outputs["logits"].shape == train_outputs["aux_logits"].shape == (2, 9, 13, 19)
  assert eval_outputs["features"].shape == (2, 9, 13, features)
  # The aux head exists after an eval-mode init (converters and train states see it).
  assert params["cls"]["conv_bn"]["conv"]["kernel"].shape == (3, 3, features, head)
  assert params["aux"]["conv_bn"]["conv"]["kernel"].shape == (3, 3, features // 4, 256)
  assert params["aux"]["classifier"]["bias"].shape == (19,)


def test_without_aux_head():
  params, outputs = _outputs(pspnet(18, 7, aux=False), train=True)
  assert "aux" not in params and "aux_logits" not in outputs
  assert outputs["logits"].shape == (2, 9, 13, 7)


class _StubBackbone(nn.Module):
  """The backbone interface (c1..c4 at stride 8) without a backbone: the input four times."""

  @nn.compact
  def __call__(self, x, *, train):
    return x, x, x, x


def test_heads_start_from_torch_default_init():
  """semseg leaves the PPM, cls and aux convs at PyTorch's nn.Conv2d default (spec etc.md §5)."""
  model = PSPNet(backbone=_StubBackbone(), num_classes=19, ppm_features=16, head_features=32,
                 aux_features=24)
  # Jitted: the same values, without the op-by-op forward pass that init also runs (4x slower).
  params = jax.jit(lambda key: model.init(key, jnp.zeros((1, 6, 6, 64)), train=False)["params"])(
      jax.random.key(0))
  for i in range(4):
    assert_torch_default_init(torch.nn.Conv2d(64, 16, 1, bias=False),
                              params["ppm"][f"features_{i}"]["conv"]["kernel"])
  for name, in_features, hidden in (("cls", 64 + 4 * 16, 32), ("aux", 64, 24)):
    head = params[name]
    assert_torch_default_init(torch.nn.Conv2d(in_features, hidden, 3, bias=False),
                              head["conv_bn"]["conv"]["kernel"])
    assert_torch_default_init(torch.nn.Conv2d(hidden, 19, 1), head["classifier"]["kernel"],
                              head["classifier"]["bias"])


def test_head_dropout_drops_whole_channels():
  """Dropout2d (spec etc.md §3, semseg's cls/aux): one keep/drop decision per sample and channel,
  shared over H and W, not per element."""
  head = SegmentationHead(features=16, num_classes=3, dropout_rate=0.5)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 4)), jnp.float32)
  variables = head.init(jax.random.key(0), x, train=False)
  _, state = head.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)},
                        mutable=["batch_stats", "intermediates"], capture_intermediates=True)
  before = np.asarray(state["intermediates"]["conv_bn"]["__call__"][0])
  after = np.asarray(state["intermediates"]["Dropout_0"]["__call__"][0])
  dropped = ((after == 0) & (before != 0)).any(axis=(1, 2))  # [B, C]: any pixel zeroed
  assert not np.any(dropped[:, None, None] & (after != 0))  # a dropped channel keeps no pixel
  assert dropped.any() and not dropped.all()


def test_training_without_aux_logits_skips_the_aux_head():
  """`aux_logits=False` (a loss that gives the aux head no weight): the head's parameters exist
  after a training-mode init, but a training pass neither returns its logits nor moves its
  BatchNorm's running statistics; the main head's outputs and statistics are unchanged."""
  model = PSPNet(backbone=_StubBackbone(), num_classes=5, ppm_features=8, head_features=16,
                 aux_features=8)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 16)), jnp.float32)
  variables = model.init(jax.random.key(0), x, train=True, aux_logits=False)
  assert "aux" in variables["params"] and "aux" in variables["batch_stats"]

  def train(aux_logits):
    return model.apply(variables, x, train=True, aux_logits=aux_logits, mutable=["batch_stats"],
                       rngs={"dropout": jax.random.key(1)})

  (without, stats_without), (with_aux, stats_with) = train(False), train(True)
  assert sorted(without) == ["features", "logits"] and "aux_logits" in with_aux
  np.testing.assert_array_equal(without["logits"], with_aux["logits"])
  aux_before = variables["batch_stats"]["aux"]
  jax.tree.map(np.testing.assert_array_equal, stats_without["batch_stats"]["aux"], aux_before)
  assert not np.array_equal(stats_with["batch_stats"]["aux"]["conv_bn"]["bn"]["mean"],
                            aux_before["conv_bn"]["bn"]["mean"])
  jax.tree.map(np.testing.assert_array_equal, stats_without["batch_stats"]["cls"],
               stats_with["batch_stats"]["cls"])


@pytest.mark.parametrize("depth, ppm_features", [(18, 128), (50, 512), (101, 512)])
def test_pspnet_pools_semseg_s_bins(depth, ppm_features):
  """`pspnet()` builds semseg's pyramid pooling: bins (1, 2, 3, 6) (spec etc.md §3), each branch
  a quarter of c4's width. The bins shape no parameter, so released weights would load into a
  model pooling other grids and silently predict differently."""
  model = pspnet(depth, 19)
  assert tuple(model.bins) == (1, 2, 3, 6)
  assert model.ppm_features == ppm_features
