"""MobileNetV2 backbone (width 1.0, torchvision layout) for ETC's "ETC-Mobile" student, NHWC.

The ETC release references `model.mobile.DenseASPP` (submodules `features/ppm/cls/aux`) but does
not ship it (specs/etc.md §3), so this is a reconstruction; its choices:

* `features` is torchvision's `mobilenet_v2().features` exactly, so that its ImageNet weights
  would convert by renaming (no converter reads them yet, so ETC-Mobile trains from scratch:
  docs/deviations.md): a 3x3 s2 stem conv (32), the 17 inverted-residual blocks of the
  (t, c, n, s) table `SETTINGS`, and the final 1x1 conv 320 -> 1280 (`last_conv=False` drops it,
  as the CSAIL segmentation code's MobileNetV2-dilated does). BatchNorm eps 1e-5, torch momentum
  0.1; ReLU6.
* Output stride 8 or 16 (`output_stride`; 32 = the classifier's) by the dilation rule of the
  CSAIL semantic-segmentation-pytorch `MobileNetV2Dilated` (`_nostride_dilate`), the common
  dilated MobileNetV2: for OS 8, from the block that would reach stride 16 (features 7) on,
  strides become 1 and 3x3 depthwise convs are dilated, 2 in features 8-13 and 4 in features
  15-17; the block whose stride was removed keeps the previous dilation (1 in features 7, 2 in
  features 14), as torchvision's `replace_stride_with_dilation` does for ResNets. OS 16 changes
  only features 14 on (dilation 2 in 15-17). 1x1 convs are unaffected.
* Returns the stride-4/8/16/32 stage outputs (c1, c2, c3, c4) = outputs of features 3, 6, 13
  and the last layer (24, 32, 96, 1280 channels), like `resnet.ResNet`, so a PSPNet head can take
  c4 for the pyramid pooling and c3 for the aux head.

The depthwise convs are grouped `nn.Conv`s (cuDNN-friendly; on XLA:CPU the shifted-adds form of
`layers.DepthwiseConv` is faster, notes/jax_stack.md §6, but it has no stride or dilation).

Parameter paths mirror the torchvision state_dict: `features_{i}` for `features.{i}`; a
Conv-BN-ReLU6 (`Conv2dNormActivation`) has children `conv`, `bn` (torch `.0`, `.1`); block
layers are `conv_{j}` (torch `conv.{j}`): ConvBNReLU6s, then the 1x1 projection conv and its BN.
"""
from __future__ import annotations


import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from vssjax.models.layers import BatchNorm, run_block, torch_conv


STEM_WIDTH = 32
LAST_WIDTH = 1280
# (expansion t, output channels c, repeats n, first stride s), torchvision's table.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))
NUM_BLOCKS = sum(repeats for _, _, repeats, _ in SETTINGS)  # 17
# Index (in `features`) of the last layer of the stride-4, -8 and -16 stages.
STAGE_ENDS = (3, 6, 13)
OUTPUT_STRIDES = (8, 16, 32)


class ConvBNReLU6(nn.Module):
  """torchvision `Conv2dNormActivation`: conv (no bias) -> BN -> ReLU6; children conv, bn."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  dilation: int = 1
  groups: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = torch_conv(self.features, self.kernel_size, stride=self.stride, dilation=self.dilation,
              groups=self.groups, dtype=self.dtype, name="conv")(x)
    return nn.relu6(BatchNorm(dtype=self.dtype, name="bn")(x, train=train))


class InvertedResidual(nn.Module):
  """[1x1 expand ->] 3x3 depthwise (strided or dilated) -> 1x1 linear projection, + identity
  when the stride is 1 and the width is kept."""
  features: int
  expansion: int
  stride: int = 1
  dilation: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    in_features = x.shape[-1]
    hidden = in_features * self.expansion
    y = x
    if self.expansion != 1:
      y = ConvBNReLU6(hidden, 1, dtype=self.dtype, name="conv_0")(y, train=train)
    depthwise = 0 if self.expansion == 1 else 1  # its index in torch's `conv` Sequential
    y = ConvBNReLU6(hidden, 3, stride=self.stride, dilation=self.dilation, groups=hidden,
                    dtype=self.dtype, name=f"conv_{depthwise}")(y, train=train)
    y = torch_conv(self.features, 1, dtype=self.dtype, name=f"conv_{depthwise + 1}")(y)
    y = BatchNorm(dtype=self.dtype, name=f"conv_{depthwise + 2}")(y, train=train)
    if self.stride == 1 and in_features == self.features:
      return x + y
    return y


def block_schedule(output_stride: int) -> list[tuple[int, int, int, int]]:
  """(expansion, width, stride, dilation) of the blocks features_1 .. features_17."""
  if output_stride not in OUTPUT_STRIDES:
    raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
  schedule, reached_stride, dilation = [], 2, 1  # the stem has stride 2
  for expansion, width, repeats, first_stride in SETTINGS:
    for r in range(repeats):
      stride, block_dilation = (first_stride if r == 0 else 1), dilation
      if stride > 1 and reached_stride >= output_stride:
        stride, dilation = 1, dilation * 2  # only the blocks after this one dilate more
      reached_stride *= stride
      schedule.append((expansion, width, stride, block_dilation))
  return schedule


class MobileNetV2(nn.Module):
  """`__call__(x [B,H,W,3], *, train) -> (c1, c2, c3, c4)` at strides 4, 8, 16 and 32, or
  4, 8, 8, 8 (output_stride 8) / 4, 8, 16, 16 (16). `dtype` is the compute dtype. `remat` (a
  `layers.REMAT_POLICIES` name, '' for none): in training every inverted residual block is
  rematerialised (`layers.run_block`)."""
  output_stride: int = 8
  last_conv: bool = True
  dtype: Dtype = jnp.float32
  remat: str = ""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, ...]:
    x = ConvBNReLU6(STEM_WIDTH, 3, stride=2, dtype=self.dtype, name="features_0")(
        x.astype(self.dtype), train=train)
    outputs = []
    for index, (expansion, width, stride, dilation) in enumerate(
        block_schedule(self.output_stride), start=1):
      block = InvertedResidual(width, expansion, stride, dilation, self.dtype,
                               name=f"features_{index}")
      x = run_block(block, x, train=train, remat=self.remat)
      if index in STAGE_ENDS:
        outputs.append(x)
    if self.last_conv:
      x = ConvBNReLU6(LAST_WIDTH, 1, dtype=self.dtype, name=f"features_{NUM_BLOCKS + 1}")(
          x, train=train)
    outputs.append(x)
    return tuple(outputs)

  @property
  def out_features(self) -> tuple[int, ...]:
    """Channels of c1..c4."""
    return (24, 32, 96, LAST_WIDTH if self.last_conv else SETTINGS[-1][1])
