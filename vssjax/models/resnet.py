"""Dilated ResNet-18/50/101 (output stride 8), the PSPNet backbone of DCFM and ETC, NHWC.

specs/dcfm.md §1.2 and specs/etc.md §3: with `dilated=True` layer3 and layer4 keep stride 1 and
dilate the 3x3 `conv2` of every block by 2 and 4 (padding = dilation), and their `downsample`
1x1 convs get stride 1, as PSPNet does to torchvision/semseg ResNets. The Bottleneck strides its
3x3 `conv2` (torchvision v1.5 / semseg); the BasicBlock strides `conv1`, which in a dilated
layer becomes a plain stride-1 3x3 (only `conv2` is dilated).

Stems: 'plain' is torchvision's 7x7 s2 conv (ResNet-18, torchvision ImageNet weights); 'deep' is
semseg's "deep base" of three 3x3 convs 3->64->64->128 (ResNet-50/101, `resnet*_v2.pth`). Both
end in a 3x3 s2 max-pool padded with -inf, so the stem output is at stride 4.

Parameter paths mirror the PSPNet state_dict so `convert/torch_resnet.py` is a renaming: the stem
is `layer0/{conv1,bn1[,conv2,bn2,conv3,bn3]}` (torch `layer0.{0,1,3,4,6,7}`), block j of layer i
is `layer{i}_{j}/{conv1,bn1,conv2,bn2[,conv3,bn3]}` plus `downsample/{conv,bn}` (torch
`downsample.{0,1}`). Every convolution pads explicitly: 'SAME' pads asymmetrically at stride 2
and would shift every feature relative to the PyTorch weights.
"""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from vssjax.models.layers import BatchNorm, run_block, torch_conv


WIDTHS = (64, 128, 256, 512)
EXPANSION = {"basic": 1, "bottleneck": 4}
DEPTHS: dict[int, tuple[Literal["basic", "bottleneck"], tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
RESNET_NAMES = {f"r{depth}": depth for depth in DEPTHS}  # `model.backbone` names -> depth
PLAIN_STEM_WIDTH = 64
DEEP_STEM_WIDTHS = (64, 64, 128)


class Downsample(nn.Module):
  """The 1x1 conv + BN projection of a block's shortcut (torch `downsample.{0,1}`)."""
  features: int
  stride: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = torch_conv(self.features, 1, stride=self.stride, dtype=self.dtype, name="conv")(x)
    return BatchNorm(dtype=self.dtype, name="bn")(x, train=train)


class ResidualBlock(nn.Module):
  """What both blocks share: `stride` goes to the block's strided conv, `dilation` to its 3x3
  `conv2`; `project` makes the shortcut the `downsample` projection instead of the identity."""
  planes: int
  stride: int = 1
  dilation: int = 1
  project: bool = False
  dtype: Dtype = jnp.float32

  def conv_bn(self, x: jax.Array, index: int, features: int, kernel_size: int, *, train: bool,
              stride: int = 1, dilation: int = 1) -> jax.Array:
    """Children `conv{index}` then `bn{index}` (called from the compact `__call__`)."""
    x = torch_conv(features, kernel_size, stride=stride, dilation=dilation, dtype=self.dtype,
             name=f"conv{index}")(x)
    return BatchNorm(dtype=self.dtype, name=f"bn{index}")(x, train=train)

  def add_shortcut(self, x: jax.Array, residual: jax.Array, *, train: bool) -> jax.Array:
    if self.project:
      x = Downsample(residual.shape[-1], self.stride, self.dtype, name="downsample")(
          x, train=train)
    return nn.relu(residual + x)


class BasicBlock(ResidualBlock):
  """3x3 (strided) -> BN -> ReLU -> 3x3 (dilated) -> BN, + shortcut, ReLU."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = nn.relu(self.conv_bn(x, 1, self.planes, 3, stride=self.stride, train=train))
    y = self.conv_bn(y, 2, self.planes, 3, dilation=self.dilation, train=train)
    return self.add_shortcut(x, y, train=train)


class Bottleneck(ResidualBlock):
  """1x1 -> 3x3 (strided, dilated) -> 1x1 (4x planes), each with BN, + shortcut, ReLU."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = nn.relu(self.conv_bn(x, 1, self.planes, 1, train=train))
    y = nn.relu(self.conv_bn(y, 2, self.planes, 3, stride=self.stride, dilation=self.dilation,
                             train=train))
    y = self.conv_bn(y, 3, self.planes * EXPANSION["bottleneck"], 1, train=train)
    return self.add_shortcut(x, y, train=train)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class Stem(nn.Module):
  """`layer0`: conv(s)-BN-ReLU then a 3x3 s2 max-pool; output at stride 4."""
  kind: Literal["plain", "deep"]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.kind == "plain":
      convs = [(PLAIN_STEM_WIDTH, 7, 2)]
    elif self.kind == "deep":
      convs = [(width, 3, 2 if i == 0 else 1) for i, width in enumerate(DEEP_STEM_WIDTHS)]
    else:
      raise ValueError(f"unknown ResNet stem {self.kind!r}; expected 'plain' or 'deep'")
    for i, (features, kernel_size, stride) in enumerate(convs, start=1):
      x = torch_conv(features, kernel_size, stride=stride, dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.relu(BatchNorm(dtype=self.dtype, name=f"bn{i}")(x, train=train))
    # Flax pads max_pool windows with -inf, as torch's MaxPool2d does.
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ResNet(nn.Module):
  """`__call__(x [B,H,W,3], *, train) -> (c1, c2, c3, c4)`, the outputs of layer1..layer4.

  Strides 4/8/8/8 when `dilated` (else 4/8/16/32), sizes following torch's conv arithmetic
  (65x97 -> 17x25, then 9x13). `shallow_only=True` runs only the stem and layer1 and returns c1:
  DCFM's non-key frames, which must not need (or touch) any deeper parameter. `dtype` is the
  compute dtype (params stay float32). `remat` (a `layers.REMAT_POLICIES` name, '' for none): in
  training every residual block is rematerialised (`layers.run_block`).
  """
  block: Literal["basic", "bottleneck"]
  layers: tuple[int, ...]
  stem: Literal["plain", "deep"]
  dilated: bool = True
  dtype: Dtype = jnp.float32
  remat: str = ""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, shallow_only: bool = False
               ) -> jax.Array | tuple[jax.Array, ...]:
    block = BLOCKS[self.block]
    x = Stem(self.stem, self.dtype, name="layer0")(x.astype(self.dtype), train=train)
    outputs = []
    for stage, (planes, num_blocks) in enumerate(zip(WIDTHS, self.layers), start=1):
      stride, dilation = self._stride_and_dilation(stage)
      for j in range(num_blocks):
        first = j == 0
        module = block(planes, stride if first else 1, dilation,
                       first and self.has_projection(stage), self.dtype, name=f"layer{stage}_{j}")
        x = run_block(module, x, train=train, remat=self.remat)
      if shallow_only:
        return x
      outputs.append(x)
    return tuple(outputs)

  def _stride_and_dilation(self, stage: int) -> tuple[int, int]:
    """(first-block stride, conv2 dilation) of layer `stage` (1-based)."""
    if stage == 1:
      return 1, 1
    if self.dilated and stage >= 3:
      return 1, 2 ** (stage - 2)
    return 2, 1

  def has_projection(self, stage: int) -> bool:
    """Whether the first block of layer `stage` projects its shortcut (`downsample`). torch
    builds one where the width or the undilated resolution changes: always in layers 2-4
    (dilation keeps it, at stride 1), in layer1 only when the stem width differs (deep base 128
    -> 256, plain 64 -> 256 for bottlenecks)."""
    return stage > 1 or self.stem_width != self.out_features[0]

  @property
  def stem_width(self) -> int:
    return PLAIN_STEM_WIDTH if self.stem == "plain" else DEEP_STEM_WIDTHS[-1]

  @property
  def out_features(self) -> tuple[int, ...]:
    """Channels of c1..c4."""
    return tuple(width * EXPANSION[self.block] for width in WIDTHS)


def resnet(depth: int, *, stem: Literal["plain", "deep"] | None = None, dilated: bool = True,
           dtype: Dtype = jnp.float32, remat: str = "") -> ResNet:
  """ResNet-`depth` (18, 50, 101); the stem defaults to the one its ImageNet weights have
  (plain 7x7 for 18 from torchvision, deep base for 50/101 from semseg)."""
  if depth not in DEPTHS:
    raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(DEPTHS)}")
  block, layers = DEPTHS[depth]
  return ResNet(block=block, layers=layers, stem=stem or ("plain" if depth == 18 else "deep"),
                dilated=dilated, dtype=dtype, remat=remat)
