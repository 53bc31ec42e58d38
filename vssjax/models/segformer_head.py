"""SegFormer all-MLP decode head (specs/dtern.md §3), NHWC, mmseg parameter names.

Per level a Linear C_i -> E (`linear_c1..4`); levels 2-4 bilinearly upsampled (align_corners
False) to the c1 grid; concat in the order [c4, c3, c2, c1] (the order the checkpoints were
trained with); `linear_fuse` = 1x1 conv + BatchNorm + ReLU; Dropout2d; `linear_pred` 1x1 conv.

Computed in a cheaper but equal order. Everything between the per-level Linear and the fuse
conv's BatchNorm is linear: the fuse conv applied to the concatenation is the sum over levels of
its [E, E] block applied to each level, and a 1x1 conv commutes with a bilinear resize (a
per-channel weighted sum of pixels whose weights sum to 1). So each level applies ONE folded
matrix `W_linear_c_i @ W_fuse_block_i` [C_i, E] at its own resolution, the four results are
upsampled and summed, and the folded biases are added once. The 4E-channel concatenation and the
full-resolution 4E -> E matmul (over half of the head's FLOPs, and the largest op of the forward,
docs/benchmarks.md) are gone; parameters, checkpoints and results are unchanged up to float
rounding (pinned by the HF parity test). In bf16 the folded products and the level sum stay in
float32, and the sum is rounded once, like a convolution's accumulator.

Init as mmseg's head, for training from scratch: `linear_fuse` is an mmcv ConvModule (He fan-out
normal, BN 1/0); `linear_c*` (`nn.Linear` in `MLP`) and `linear_pred` (a plain `nn.Conv2d`) have
no init hook and keep PyTorch's default, U(+-1/sqrt(fan_in)) for weights and biases.
"""
from collections.abc import Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from vssjax.models.layers import (BatchNorm, Conv, LinearWeights, channel_matmul, conv_init,
                                  dropout2d, flatten_time, torch_default_init)
from vssjax.ops.resize import resize_bilinear


class _FoldedFuse(nn.Module):
  """mmcv `ConvModule` `linear_fuse` (children `conv`, `bn`) applied to the never-built concat
  [c4, c3, c2, c1] of the projected levels, computed level by level (module docstring)."""
  embed_dim: int
  dtype: Dtype

  @nn.compact
  def __call__(self, features: Sequence[jax.Array],
               projections: Sequence[tuple[jax.Array, jax.Array]], *, train: bool) -> jax.Array:
    dim, levels = self.embed_dim, len(features)
    fuse, _ = LinearWeights((1, 1, levels * dim, dim), conv_init, use_bias=False, name="conv")()
    size = features[0].shape[-3:-1]
    highest = jax.lax.Precision.HIGHEST
    summed, bias = None, jnp.zeros((dim,), jnp.float32)
    for level, (feature, (kernel, level_bias)) in enumerate(zip(features, projections), start=1):
      position = levels - level  # the concatenation puts the coarsest level first
      block = fuse[0, 0, position * dim:(position + 1) * dim]
      folded = jnp.dot(kernel, block, precision=highest)
      y = resize_bilinear(channel_matmul(feature, folded, self.dtype), size, align_corners=False)
      summed = y if summed is None else summed + y
      bias = bias + jnp.dot(level_bias, block, precision=highest)
    x = BatchNorm(dtype=self.dtype, name="bn")((summed + bias).astype(self.dtype), train=train)
    return nn.relu(x)


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
               ) -> tuple[jax.Array | None, jax.Array]:
    if len(features) != 4:
      raise ValueError(f"SegFormerHead expects 4 feature maps, got {len(features)}")
    projections = [LinearWeights((feature.shape[-1], self.embed_dim),
                                 **torch_default_init(feature.shape[-1]),
                                 name=f"linear_c{level}")()
                   for level, feature in enumerate(features, start=1)]
    fused = _FoldedFuse(self.embed_dim, self.dtype, name="linear_fuse")(
        features, projections, train=train)
    if not self.num_classes:
      return None, fused
    y = dropout2d(self.dropout_rate)(fused, deterministic=not train)
    logits = Conv(self.num_classes, (1, 1), **torch_default_init(self.embed_dim),
                  dtype=self.dtype, name="linear_pred")(y)
    return logits, fused


class SegFormerBranch:
  """Mixin of the video heads (DTERN's, SD-CPC's) that run the SegFormer all-MLP branch on every
  frame of the clip, in the head's own scope: mmseg keeps it at `decode_head.linear_c1` etc., so
  SegFormer checkpoints load into it. The head has the fields `num_classes`, `embed_dim`,
  `dropout_rate` and `dtype`, and calls `setup_segformer_branch` in its `setup`."""

  def setup_segformer_branch(self) -> None:
    self.segformer = SegFormerHead(self.num_classes, self.embed_dim, self.dropout_rate,
                                   self.dtype)
    nn.share_scope(self, self.segformer)

  def segformer_branch(self, features: Sequence[jax.Array], *, train: bool
                       ) -> tuple[dict[str, jax.Array], jax.Array | None, list[jax.Array] | None]:
    """4 levels [B, T, h_i, w_i, C_i] -> (outputs with `frame_logits` [B, T, h1, w1, NC], the
    fused feature [B*T, h1, w1, E], the levels with time flattened [B*T, h_i, w_i, C_i]). With
    T = 1 the last two are None: the head returns the outputs as they are (the release's early
    exit for a video's first frames)."""
    if len(features) != 4:
      raise ValueError(f"{type(self).__name__} expects 4 feature maps, got {len(features)}")
    batch, num_t = features[0].shape[:2]
    frames = [flatten_time(f) for f in features]
    logits, fused = self.segformer(frames, train=train)
    out = {"frame_logits": logits.reshape((batch, num_t) + logits.shape[1:])}
    return (out, None, None) if num_t == 1 else (out, fused, frames)
