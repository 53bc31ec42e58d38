"""transformers' SegFormer as the parity and converter tests use it: unit-scale random weights,
random BN statistics, and mmseg's LayerNorm eps, so that a converted model's outputs must match
its own to float rounding (HF's 0.02-std init makes the blocks nearly identity maps, which would
hide wiring errors)."""
import torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from tests.parity.torch_reference import randomize_parameters
from vssjax.models.mit import MIT_VARIANTS


def pin_mmseg_layer_norm_eps(model: SegformerForSemanticSegmentation) -> None:
  """HF uses eps 1e-5 in the block and stage LayerNorms where mmseg (and vssjax) use 1e-6."""
  for name, module in model.named_modules():
    if name.endswith(("layernorm_before", "layernorm_after")) or (
        name.startswith("segformer.stages.") and name.endswith(".layer_norm")
        and name.count(".") == 3):
      module.eps = 1e-6


def random_hf_segformer(variant: str, depths, num_classes: int, embed_dim: int, seed: int = 0,
                        **overrides) -> SegformerForSemanticSegmentation:
  """An eval-mode HF SegFormer with MiT-`variant`'s widths, heads and sr ratios (`overrides`
  replace any of them, as `vssjax.models.mit.mit` takes them), `depths` blocks per stage and a
  head of `embed_dim` channels: random unit-scale weights, random head BN statistics, mmseg's
  LayerNorm eps."""
  arch = MIT_VARIANTS[variant] | overrides
  config = SegformerConfig(hidden_sizes=list(arch["embed_dims"]), num_attention_heads=list(
      arch["num_heads"]), depths=list(depths), sr_ratios=list(arch["sr_ratios"]),
                           decoder_hidden_size=embed_dim, num_labels=num_classes)
  torch.manual_seed(seed)
  model = SegformerForSemanticSegmentation(config).eval()
  randomize_parameters(model)
  with torch.no_grad():
    bn = model.decode_head.batch_norm
    bn.running_mean.copy_(0.1 * torch.randn_like(bn.running_mean))
    bn.running_var.copy_(0.5 + torch.rand_like(bn.running_var))
  pin_mmseg_layer_norm_eps(model)
  return model
