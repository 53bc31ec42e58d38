"""SegFormer all-MLP decode head (specs/dtern.md §3), NHWC, mmseg parameter names.

Per level a Linear C_i -> E (`linear_c1..4`); levels 2-4 bilinearly upsampled (align_corners
False) to the c1 grid; concat in the order [c4, c3, c2, c1] (the order the checkpoints were
trained with); `linear_fuse` = 1x1 conv + BatchNorm + ReLU; Dropout2d; `linear_pred` 1x1 conv.
"""
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vssjax.models.layers import Conv, ConvBNAct
from vssjax.ops.resize import resize_bilinear

Dtype = Any


class SegFormerHead(nn.Module):
  """`__call__(features, *, train) -> (logits [B,H4,W4,NC], fused feature [B,H4,W4,E])`.

  The fused feature is returned too because DTERN and other video heads build on it. With
  `num_classes=0` the head stops at the fused feature (no dropout, no `linear_pred`; logits None):
  DCFM's common-feature decoder.
  """
  num_classes: int
  embed_dim: int = 256
  dropout_rate: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], *, train: bool
               ) -> tuple[jax.Array, jax.Array]:
    if len(features) != 4:
      raise ValueError(f"SegFormerHead expects 4 feature maps, got {len(features)}")
    size = features[0].shape[-3:-1]
    projected = []
    for level, feature in enumerate(features, start=1):
      y = nn.Dense(self.embed_dim, dtype=self.dtype, name=f"linear_c{level}")(feature)
      projected.append(resize_bilinear(y, size, align_corners=False))
    fused = ConvBNAct(self.embed_dim, dtype=self.dtype, name="linear_fuse")(
        jnp.concatenate(projected[::-1], axis=-1), train=train)
    if not self.num_classes:
      return None, fused
    # Dropout2d: one keep/drop decision per (sample, channel), shared over H and W.
    y = nn.Dropout(self.dropout_rate, broadcast_dims=(-3, -2))(fused, deterministic=not train)
    logits = Conv(self.num_classes, (1, 1), dtype=self.dtype, name="linear_pred")(y)
    return logits, fused
