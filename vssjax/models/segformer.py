"""SegFormer (MiT backbone + all-MLP head): the per-frame image baseline of every method.

Submodules are named `backbone` and `decode_head` as in the mmseg checkpoints, so parameter
trees are `{'backbone': MiT params, 'decode_head': head params}`.
"""
import flax.linen as nn
import jax

from vssjax.models.mit import MixTransformer
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
