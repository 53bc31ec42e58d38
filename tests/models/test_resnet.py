"""Dilated ResNet / PSPNet: output strides and sizes, the shallow path, parameter counts.

Parameter counts come from `jax.eval_shape` (no memory, no FLOPs even for ResNet-101) and are
checked against specs/dcfm.md §9, whose encoder column is backbone (without `fc`) + PPM.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import errors, traverse_util

from tests.conftest import random_model_variables
from vssjax.models.pspnet import pspnet
from vssjax.models.resnet import ResNet, resnet

_IMAGES = jax.ShapeDtypeStruct((2, 65, 97, 3), jnp.float32)


def _abstract_variables(model, images=_IMAGES, **kwargs):
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False, **kwargs), images)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("depth, dilated, sizes", [
    # torch arithmetic: 65x97 -> stem conv 33x49 -> max-pool 17x25 -> 9x13 (-> 5x7 -> 3x4).
    (18, True, [(17, 25), (9, 13), (9, 13), (9, 13)]),
    (50, True, [(17, 25), (9, 13), (9, 13), (9, 13)]),
    (50, False, [(17, 25), (9, 13), (5, 7), (3, 4)]),
])
def test_feature_sizes_and_widths(depth, dilated, sizes):
  model = resnet(depth, dilated=dilated)
  variables = _abstract_variables(model)
  features = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, _IMAGES)
  widths = (64, 128, 256, 512) if depth == 18 else (256, 512, 1024, 2048)
  assert [f.shape for f in features] == [(2, *s, w) for s, w in zip(sizes, widths)]


def test_stems_and_their_projections():
  """Plain 7x7 stem (64 wide: R-18 layer1 needs no projection) vs the deep base (128 wide)."""
  plain = traverse_util.flatten_dict(_abstract_variables(resnet(18))["params"], sep="/")
  deep = traverse_util.flatten_dict(_abstract_variables(resnet(50))["params"], sep="/")
  assert plain["layer0/conv1/kernel"].shape == (7, 7, 3, 64)
  assert not any(k.startswith("layer0/conv2") or k.startswith("layer1_0/downsample")
                 for k in plain)
  assert [deep[f"layer0/conv{i}/kernel"].shape for i in (1, 2, 3)] == [
      (3, 3, 3, 64), (3, 3, 64, 64), (3, 3, 64, 128)]
  assert deep["layer1_0/downsample/conv/kernel"].shape == (1, 1, 128, 256)
  assert deep["layer1_0/conv1/kernel"].shape == (1, 1, 128, 64)
  assert deep["layer3_0/conv2/kernel"].shape == (3, 3, 256, 256)


def test_shallow_only_needs_and_creates_only_stem_and_layer1():
  model = ResNet(block="basic", layers=(1, 1, 1, 1), stem="plain")
  images = jax.random.normal(jax.random.key(1), (1, 33, 41, 3))
  shallow_tree = _abstract_variables(model, images, shallow_only=True)
  assert sorted(shallow_tree["params"]) == ["layer0", "layer1_0"]
  variables = random_model_variables(model, images)
  c1 = model.apply(variables, images, train=False)[0]
  pruned = {collection: {name: tree[name] for name in ("layer0", "layer1_0")}
            for collection, tree in variables.items()}
  np.testing.assert_array_equal(model.apply(pruned, images, train=False, shallow_only=True), c1)
  # ... while the full pass does need the deeper ones.
  with pytest.raises(errors.ScopeParamNotFoundError, match="layer2_0"):
    model.apply(pruned, images, train=False)


@pytest.mark.parametrize("depth, encoder_millions", [(18, 11.44), (50, 27.83), (101, 46.82)])
def test_encoder_parameter_counts_match_the_spec(depth, encoder_millions):
  params = _abstract_variables(pspnet(depth, 19))["params"]
  assert round((_count(params["backbone"]) + _count(params["ppm"])) / 1e6, 2) == encoder_millions
  if depth == 18:  # torchvision resnet18: 11,689,512 parameters, of which fc 513,000
    assert _count(params["backbone"]) == 11_689_512 - 513_000


def test_unknown_depth_and_stem_are_rejected():
  with pytest.raises(ValueError, match="depth 34"):
    resnet(34)
  with pytest.raises(ValueError, match="stem 'wide'"):
    _abstract_variables(ResNet(block="basic", layers=(1, 1, 1, 1), stem="wide"))
