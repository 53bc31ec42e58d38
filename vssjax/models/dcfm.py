"""DCFM (TCSVT 2024): a common feature from the whole network, an independent one from its first
layers, fused per frame (specs/dcfm.md §1-2). NHWC; parameter names follow the release's keys.

The encoder gives two features of a frame: the deep *common* feature (whole MiT + SegFormer MLP
decoder without classifier, or dilated ResNet + PPM) and the shallow *independent* feature (MiT
after the first `shallow_blocks` blocks of stage 1, one in the release; ResNet after layer1). A
keyframe fuses its own two features; a non-key frame runs only the shallow prefix and fuses it
with a keyframe's cached common feature, which is where the speed comes from.

Tree: `encoder/{backbone, decoder | ppm}`, `bot_aspp` (with `bottleneck`: 1x1 conv to d; the
ResNet release configs have it, the MiT ones not), `ffm/{conv, norm}`, `final/{conv, bn}`
(Cityscapes/CamVid head) and `final/cls`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from vssjax.models.layers import (BatchNorm, Conv, LinearWeights, channel_matmul, dropout2d,
                                  l2_normalize)
from vssjax.models.mit import MixTransformer
from vssjax.models.ppm import PPM
from vssjax.models.resnet import ResNet
from vssjax.models.segformer_head import SegFormerHead
from vssjax.ops.resize import resize_bilinear

# DCFM's `initialize_weights`: kaiming_normal_ (fan_in, gain sqrt 2), zero bias.
kaiming_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

# The features a path can leave out (Table V's switches): a keyframe's or a non-key frame's
# common (F_co) or independent (F_in) feature.
FEATURES = ("key_common", "key_independent", "non_key_common", "non_key_independent")


def _conv1x1(features: int, *, bias: bool, dtype: Dtype, name: str) -> nn.Module:
  return Conv(features, (1, 1), use_bias=bias, kernel_init=kaiming_fan_in, dtype=dtype,
              name=name)


class MiTCommonEncoder(nn.Module):
  """MiT + SegFormer MLP decoder (no classifier) + Dropout2d: common feature at 1/4, width E."""
  backbone: MixTransformer
  decoder: SegFormerHead  # with num_classes=0
  shallow_blocks: int = 1
  dropout_rate: float = 0.1
  shallow_per_common = 1  # the common feature is on the shallow feature's grid (1/4)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, shallow_only: bool = False):
    """-> (common, shallow); with `shallow_only` -> shallow (stage-1 tokens after its first
    `shallow_blocks` blocks, before the stage norm)."""
    if shallow_only:
      return self.backbone(x, train=train, shallow_blocks=self.shallow_blocks, shallow_only=True)
    features, shallow = self.backbone(x, train=train, shallow_blocks=self.shallow_blocks)
    _, fused = self.decoder(features, train=train)
    common = dropout2d(self.dropout_rate)(fused, deterministic=not train)
    return common, shallow


class PSPCommonEncoder(nn.Module):
  """Dilated ResNet + PPM: common feature at 1/8 (4096 or 1024 wide); shallow = layer1 at 1/4."""
  backbone: ResNet
  ppm: PPM
  shallow_per_common = 2  # layer1's 1/4 grid halved: the dilated network's 1/8

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, shallow_only: bool = False):
    if shallow_only:
      return self.backbone(x, train=train, shallow_only=True)
    c1, _, _, c4 = self.backbone(x, train=train)
    return self.ppm(c4, train=train), c1


class FFM(nn.Module):
  """Feature fusion: concat [common (d), independent half] -> 1x1 conv (bias) -> BN -> ReLU.

  The conv is applied in two pieces, its common block (`project_common`, with the bias) and its
  independent block (`project_independent`), summed in float32: equal to the conv of the
  concatenation. A keyframe's projected common feature is computed once and reused by every
  non-key frame that fuses with it, and a non-key frame's narrow independent product once for
  both keyframes it fuses with (B mode).
  """
  features: int  # d, also the width of the common feature
  independent_dim: int  # the width of the independent half
  dtype: Dtype = jnp.float32

  def setup(self):
    self.conv = LinearWeights((1, 1, self.features + self.independent_dim, self.features),
                              kaiming_fan_in)
    self.norm = BatchNorm(dtype=self.dtype)

  def project_common(self, common: jax.Array) -> jax.Array:
    """The common feature's share of the conv (bias included), in float32."""
    kernel, bias = self.conv()
    return channel_matmul(common, kernel[0, 0, :self.features], self.dtype) + bias

  def project_independent(self, independent_half: jax.Array) -> jax.Array:
    """The independent half's share of the conv, in float32."""
    kernel, _ = self.conv()
    return channel_matmul(independent_half, kernel[0, 0, self.features:], self.dtype)

  def bias(self) -> jax.Array:
    """The conv's bias [d], in float32: the common share of a common feature left out."""
    return self.conv()[1].astype(jnp.float32)

  def __call__(self, projected_common: jax.Array, projected_independent: jax.Array, *,
               train: bool) -> jax.Array:
    x = projected_common + projected_independent
    return nn.relu(self.norm(x.astype(self.dtype), train=train))


class DCFMClassifier(nn.Module):
  """`Dec`: [1x1 conv d->d (no bias) -> BN -> ReLU] (head_nums 1) -> Dropout2d -> 1x1 conv."""
  num_classes: int
  hidden: bool
  dropout_rate: float = 0.1
  dtype: Dtype = jnp.float32

  @property
  def linear_at_eval(self) -> bool:
    """Without the hidden block the head is Dropout + a bias-free 1x1 conv, linear at eval: the
    sum of its logits over several features is its logits of their sum."""
    return not self.hidden

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.hidden:
      x = _conv1x1(x.shape[-1], bias=False, dtype=self.dtype, name="conv")(x)
      x = nn.relu(BatchNorm(dtype=self.dtype, name="bn")(x, train=train))
    x = dropout2d(self.dropout_rate)(x, deterministic=not train)
    return _conv1x1(self.num_classes, bias=False, dtype=self.dtype, name="cls")(x)


class DCFM(nn.Module):
  """The DCFM network; its methods are the pieces the trainer and the streaming predictor call.

  - `encode(images)` -> (N(Conv(Enc(x))), raw shallow feature): a keyframe (eqs. 1-2);
  - `shallow(images)` -> raw shallow feature: a non-key frame runs only this (eq. 5);
  - `project(common)` -> the common feature's share of the FFM conv, which a keyframe computes
    once for all the non-key frames that fuse with it;
  - `decode(projected, shallow)` -> (fused F^ = N(FFM(...)), low-resolution logits) (eqs. 3-4, 6);
  - `non_key_logits(projecteds, shallow)` -> a non-key frame's logits summed over its keyframes
    (eq. 7).

  `left_out` (Table V's ablation, specs/dcfm.md §8; empty in every released config) names the
  features (`FEATURES`) that the key or the non-key path fuses without, at training and test.
  """
  encoder: nn.Module  # MiTCommonEncoder | PSPCommonEncoder
  num_classes: int
  common_dim: int  # d
  independent_dim: int  # the width of the independent half: half the shallow feature's
  bottleneck: bool  # a 1x1 conv (no bias) from the encoder's width to d; else d is that width
  head_hidden: bool  # the Cityscapes/CamVid head (head_nums 1)
  dropout_rate: float = 0.1
  dtype: Dtype = jnp.float32
  left_out: Sequence[str] = ()

  def setup(self):
    self.bot_aspp = (_conv1x1(self.common_dim, bias=False, dtype=self.dtype, name="bot_aspp")
                     if self.bottleneck else None)
    self.ffm = FFM(self.common_dim, self.independent_dim, self.dtype)
    self.final = DCFMClassifier(self.num_classes, self.head_hidden, self.dropout_rate, self.dtype)

  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    """Key-mode low-resolution logits of every frame. Without the key path's common feature
    (`left_out`) only the shallow prefix runs, the deep part's result unread (but at `init`,
    which makes every parameter: the non-key path reads the common feature)."""
    if "key_common" not in self.left_out or self.is_initializing():
      common, shallow = self.encode(images, train=train)
      return self.decode(self.project(common), shallow, train=train)[1]
    shallow = self.shallow(images, train=train)
    grid = tuple(-(-n // self.encoder.shallow_per_common) for n in shallow.shape[-3:-1])
    unread = jnp.zeros(shallow.shape[:-3] + grid + (self.common_dim,), jnp.float32)
    return self.decode(unread, shallow, train=train)[1]

  def encode(self, images: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    common, shallow = self.encoder(images, train=train)
    if self.bot_aspp is not None:
      common = self.bot_aspp(common)
    return l2_normalize(common), shallow

  def shallow(self, images: jax.Array, *, train: bool) -> jax.Array:
    return self.encoder(images, train=train, shallow_only=True)

  def project(self, common: jax.Array) -> jax.Array:
    return self.ffm.project_common(common)

  def decode(self, projected: jax.Array, shallow: jax.Array, *, train: bool,
             normalize_first: bool = False) -> tuple[jax.Array, jax.Array]:
    """Fuses a (projected) common feature with a (raw) shallow one and classifies: (fused
    F^ = N(FFM(...)), low-resolution logits) (eqs. 3-4, 6)."""
    independent = self._independent_share(shallow, projected.shape, "key",
                                           normalize_first=normalize_first)
    fused = self.fuse(projected, independent, train=train, path="key")
    return fused, self.final(fused, train=train)

  def non_key_logits(self, projecteds: Sequence[jax.Array], shallow: jax.Array) -> jax.Array:
    """Eq. 7 at test time: the sum over the given keyframes' projected common features of a
    non-key frame's low-resolution logits (eq. 6).

    The frame's independent product is computed once for all keyframes. When the head is
    linear (head_nums 0) it classifies the sum of the fused features once instead of summing
    per-keyframe logits: equal up to float rounding, and one head fewer per B-mode frame.
    """
    independent = self._independent_share(shallow, projecteds[0].shape, "non_key",
                                           normalize_first=True)
    fused = [self.fuse(projected, independent, train=False, path="non_key")
             for projected in projecteds]
    if self.final.linear_at_eval:
      return self.final(sum(fused), train=False)
    return sum(self.final(f, train=False) for f in fused)

  def project_independent(self, shallow: jax.Array, size: tuple[int, int], *,
                          normalize_first: bool) -> jax.Array:
    """The FFM conv's share of a raw shallow feature, on the common grid `size`.

    The shallow map is resized to the common grid (ResNet: 1/4 -> 1/8, no antialias) and
    L2-normalised over all its channels, then its first half is kept. The release resizes first
    when training and normalises first at test (`normalize_first`); on MiT both grids are 1/4 and
    the order does not matter.
    """
    if normalize_first:
      independent = resize_bilinear(l2_normalize(shallow), size, align_corners=False)
    else:
      independent = l2_normalize(resize_bilinear(shallow, size, align_corners=False))
    return self.ffm.project_independent(independent[..., : independent.shape[-1] // 2])

  def _independent_share(self, shallow: jax.Array, shape: tuple[int, ...], path: str, *,
                         normalize_first: bool) -> jax.Array:
    """`project_independent` on the common feature's grid (`shape`, the projected common
    feature's), or zeros where `path` leaves the independent feature out: the program then reads
    no FFM kernel (a streaming program is given only the variables its outputs depend on)."""
    if f"{path}_independent" in self.left_out:
      return jnp.zeros(shape, jnp.float32)
    return self.project_independent(shallow, shape[-3:-1], normalize_first=normalize_first)

  def fuse(self, projected: jax.Array, independent: jax.Array, *, train: bool,
           path: str) -> jax.Array:
    """F^ = N(FFM(common, independent half)) from the two projected shares, on the 'key' or
    'non_key' `path`. A feature the path leaves out (`left_out`) adds nothing: its share is the
    conv's of zeros (the common share's bias alone), which is a conv without that input (its
    weights then get no gradient) but for the initialisation's fan-in."""
    if f"{path}_common" in self.left_out:
      projected = jnp.broadcast_to(self.ffm.bias(), projected.shape)
    if f"{path}_independent" in self.left_out:
      independent = jnp.zeros_like(independent)
    return l2_normalize(self.ffm(projected, independent, train=train))
