"""SegFormer (MiT backbone + all-MLP head): the per-frame image baseline of every method.

Submodules are named `backbone` and `decode_head` as in the mmseg checkpoints, so parameter
trees are `{'backbone': MiT params, 'decode_head': head params}`.
"""
from typing import Any

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from vssjax.models.mit import MixTransformer, mit
from vssjax.models.segformer_head import SegFormerHead


# Decoder width of the published SegFormer configs: 256 for B0/B1, 768 for B2-B5.
SEGFORMER_EMBED_DIMS = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768}


class SegFormer(nn.Module):
  """`__call__(images, *, train) -> logits [B, H/4, W/4, num_classes]` (stride-4 grid).

  `images` are normalised float NHWC (see `layers.normalize_images`); upsampling the logits to
  the label size is the caller's business (loss / predictor), as in mmseg.
  """
  backbone: MixTransformer
  decode_head: SegFormerHead

  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    features = self.backbone(images, train=train)
    logits, _ = self.decode_head(features, train=train)
    return logits


def segformer(variant: str, num_classes: int, *, embed_dim: int | None = None,
              dtype: Dtype = jnp.float32, **backbone_overrides: Any) -> SegFormer:
  """SegFormer-`variant` with the published head width unless `embed_dim` is given.

  `backbone_overrides` go to `mit()` (e.g. drop_path_rate, dwconv_impl, depths).
  """
  backbone = mit(variant, dtype=dtype, **backbone_overrides)
  head = SegFormerHead(num_classes, embed_dim or SEGFORMER_EMBED_DIMS[variant], dtype=dtype)
  return SegFormer(backbone=backbone, decode_head=head)
