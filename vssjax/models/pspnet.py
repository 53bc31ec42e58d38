"""PSPNet: dilated ResNet + pyramid pooling + classifier, ETC's per-frame student (PSPNet-18) and
its ResNet-101 teacher (specs/etc.md §3; semseg's PSPNet).

The classifier `cls` is a 3x3 conv without bias -> BN -> ReLU -> Dropout2d -> 1x1 conv with
bias on the PPM output; in training an auxiliary classifier `aux` of the same shape reads layer3
(deep supervision, weighted 0.4 in the loss). Logits stay on the stride-8 grid: upsampling to the
label size is the loss's / predictor's business, as for SegFormer.

Tree: `backbone/...` (ResNet), `ppm/features_{i}/{conv,bn}`, `cls|aux/{conv_bn/{conv,bn},
classifier}`, mirroring torch `layer*`, `ppm.features.{i}.{1,2}`, `cls|aux.{0,1,4}`.

Init: semseg initialises only the ResNet (then loads ImageNet weights into it); the PPM, cls and
aux convs keep PyTorch's `nn.Conv2d` default, U(+-1/sqrt(fan_in)) for weights and the classifier
biases (specs/etc.md §5 "heads PyTorch default init"), and so do they here. BatchNorms start at
scale 1, bias 0 as in torch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from vssjax.models.layers import (Conv, ConvBNAct, dropout2d, torch_default_init,
                                  torch_kernel_init)
from vssjax.models.ppm import PPM
from vssjax.models.resnet import resnet


# Hidden width of the main classifier: 256 in ETC's PSPNet-18, 512 in semseg's R-50/101 PSPNet.
HEAD_FEATURES = {18: 256, 50: 512, 101: 512}
AUX_FEATURES = 256


class SegmentationHead(nn.Module):
  """3x3 conv (no bias) -> BN -> ReLU -> Dropout2d -> 1x1 conv with bias to the classes."""
  features: int
  num_classes: int
  dropout_rate: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = ConvBNAct(self.features, 3, dtype=self.dtype, kernel_init=torch_kernel_init,
                  name="conv_bn")(x, train=train)
    x = dropout2d(self.dropout_rate)(x, deterministic=not train)
    return Conv(self.num_classes, (1, 1), **torch_default_init(self.features), dtype=self.dtype,
                name="classifier")(x)


class PSPNet(nn.Module):
  """`__call__(images, *, train, aux_logits=True) -> {'logits', 'features'[, 'aux_logits']}`.

  `logits` [B, h, w, num_classes] and `features` (the PPM output, ETC's distillation feature) are
  on the stride-8 grid h x w of c4; `aux_logits` (from layer3, same grid) is present only when
  `aux`, `train` and the call's `aux_logits`. `aux_logits=False` skips the aux head in training
  (its compute and its BatchNorm's running-statistic update), for a loss that gives it no weight.
  `images` are normalised float NHWC. The aux head's parameters are created at init whatever
  `train` and `aux_logits` are, so init and converters see the full tree. `backbone` is a
  dilated `ResNet` or any module with its interface (c1..c4 at stride 8, e.g. ETC-Mobile's
  `MobileNetV2(output_stride=8)`).
  """
  backbone: nn.Module
  num_classes: int
  ppm_features: int
  head_features: int = 512
  aux_features: int = AUX_FEATURES
  aux: bool = True
  dropout_rate: float = 0.1
  bins: Sequence[int] = (1, 2, 3, 6)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool,
               aux_logits: bool = True) -> dict[str, jax.Array]:
    _, _, c3, c4 = self.backbone(images, train=train)
    features = PPM(self.ppm_features, self.bins, self.dtype, kernel_init=torch_kernel_init,
                   name="ppm")(c4, train=train)
    outputs = {"features": features,
               "logits": self._head(self.head_features, "cls")(features, train=train)}
    run_aux = self.aux and train and aux_logits
    if run_aux or (self.aux and self.is_initializing()):
      logits = self._head(self.aux_features, "aux")(c3, train=train)
      if run_aux:
        outputs["aux_logits"] = logits
    return outputs

  def _head(self, features: int, name: str) -> SegmentationHead:
    return SegmentationHead(features, self.num_classes, self.dropout_rate, self.dtype, name=name)


def pspnet(depth: int, num_classes: int, *, aux: bool = True, dropout_rate: float = 0.1,
           dtype: Dtype = jnp.float32, **backbone_overrides: Any) -> PSPNet:
  """PSPNet on a dilated ResNet-`depth`; PPM branches are a quarter of c4's width (512 / 128),
  the heads' hidden width semseg's for that depth (`HEAD_FEATURES`).

  `backbone_overrides` go to `resnet()` (stem, dilated, remat).
  """
  backbone = resnet(depth, dtype=dtype, **backbone_overrides)
  bins = (1, 2, 3, 6)
  return PSPNet(backbone=backbone, num_classes=num_classes,
                ppm_features=backbone.out_features[-1] // len(bins),
                head_features=HEAD_FEATURES[depth], aux=aux,
                dropout_rate=dropout_rate, bins=bins, dtype=dtype)
