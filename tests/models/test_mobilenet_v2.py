"""MobileNetV2 backbone: torchvision's parameter count, stage shapes per output stride, layout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vssjax.models.mobilenet_v2 import SETTINGS, MobileNetV2, block_schedule

_INPUT = jax.ShapeDtypeStruct((1, 65, 97, 3), jnp.float32)
# torchvision mobilenet_v2(): 3,504,872 parameters, of which the classifier Linear(1280, 1000)
# holds 1,281,000, so its `features` hold 2,223,872.
TORCHVISION_FEATURES_PARAMS = 3_504_872 - (1280 * 1000 + 1000)


def _features_count_from_table(last_conv: bool) -> int:
  """Conv weights + BN (scale, bias) of torchvision's features, from its (t, c, n, s) table."""
  count, width = 3 * 3 * 3 * 32 + 2 * 32, 32
  for expansion, out, repeats, _ in SETTINGS:
    for _ in range(repeats):
      hidden = width * expansion
      if expansion != 1:
        count += width * hidden + 2 * hidden
      count += 9 * hidden + 2 * hidden + hidden * out + 2 * out
      width = out
  return count + (320 * 1280 + 2 * 1280 if last_conv else 0)


def _variables(model):
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), _INPUT)


@pytest.mark.parametrize("last_conv", [True, False])
def test_parameter_count_is_torchvisions(last_conv):
  leaves = traverse_util.flatten_dict(_variables(MobileNetV2(last_conv=last_conv))["params"])
  count = sum(int(np.prod(v.shape)) for v in leaves.values())
  assert count == _features_count_from_table(last_conv)
  if last_conv:
    assert count == TORCHVISION_FEATURES_PARAMS == 2_223_872


@pytest.mark.parametrize("output_stride, sizes", [
    (8, [(17, 25), (9, 13), (9, 13), (9, 13)]),
    (16, [(17, 25), (9, 13), (5, 7), (5, 7)]),
    (32, [(17, 25), (9, 13), (5, 7), (3, 4)]),
])
def test_stage_shapes_per_output_stride(output_stride, sizes):
  model = MobileNetV2(output_stride=output_stride)
  outputs = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), _variables(model), _INPUT)
  assert [o.shape[1:3] for o in outputs] == sizes
  assert tuple(o.shape[-1] for o in outputs) == model.out_features == (24, 32, 96, 1280)


def test_dilation_schedule_follows_the_nostride_dilate_rule():
  strides_and_dilations = [(s, d) for _, _, s, d in block_schedule(8)]
  # features 2 and 4 keep stride 2; 7 and 14 lose it and keep the previous dilation (1, 2).
  assert [i + 1 for i, (s, _) in enumerate(strides_and_dilations) if s == 2] == [2, 4]
  assert [d for _, d in strides_and_dilations] == [1] * 7 + [2] * 7 + [4] * 3
  assert [d for _, _, _, d in block_schedule(16)] == [1] * 14 + [2] * 3
  with pytest.raises(ValueError, match="output_stride"):
    block_schedule(4)


def test_parameter_paths_mirror_torchvision_names():
  variables = _variables(MobileNetV2())
  paths = set(traverse_util.flatten_dict(variables["params"], sep="/"))
  # features.1 (t=1): conv.0 = depthwise ConvBNReLU6, conv.1 = projection, conv.2 = its BN.
  assert {"features_0/conv/kernel", "features_1/conv_0/conv/kernel", "features_1/conv_1/kernel",
          "features_1/conv_2/scale", "features_2/conv_3/bias", "features_18/bn/scale"} <= paths
  assert variables["params"]["features_2"]["conv_1"]["conv"]["kernel"].shape == (3, 3, 1, 96)
  assert "features_17/conv_3/mean" in set(
      traverse_util.flatten_dict(variables["batch_stats"], sep="/"))
