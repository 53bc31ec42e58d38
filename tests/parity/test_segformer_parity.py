"""HF transformers SegFormer (torch, eval) vs vssjax SegFormer with converted weights.

Every weight is re-drawn at unit-ish scale (HF's 0.02-std init makes the blocks nearly identity
maps, which would hide wiring errors) and the BN running statistics are randomised. HF's block and
stage LayerNorms use eps 1e-5 where mmseg (and vssjax) use 1e-6; they are pinned to 1e-6 here so
the comparison is exact up to float rounding.
"""
import jax
import numpy as np
import pytest
import torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from vssjax.convert.hf_segformer import convert_hf_segformer
from vssjax.models.mit import MIT_VARIANTS
from vssjax.models.segformer import segformer

TOLERANCE = 1e-4


def randomize_parameters(model) -> None:
  """Unit-scale random weights (norm scales near 1, biases near 0), so mismatches show."""
  with torch.no_grad():
    for name, param in model.named_parameters():
      if param.ndim > 1:
        param.copy_(torch.randn_like(param) / param[0].numel() ** 0.5)
      else:
        param.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(param))


def randomize_batch_norm_statistics(model) -> None:
  """Running means near 0 and variances near 1 but not equal to them, so that eval-mode
  BatchNorm arithmetic is exercised."""
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(0.5, 1.5)


def random_hf_segformer(variant: str, depths, num_classes: int, embed_dim: int, seed: int = 0):
  arch = MIT_VARIANTS[variant]
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
  for name, module in model.named_modules():
    if name.endswith(("layernorm_before", "layernorm_after")) or (
        name.startswith("segformer.stages.") and name.endswith(".layer_norm")
        and name.count(".") == 3):
      module.eps = 1e-6
  return model


@pytest.mark.parametrize("variant, depths, embed_dim", [
    ("b0", (2, 2, 2, 2), 256),
    ("b5", (1, 1, 1, 1), 768),  # B2/B5 widths, heads and sr ratios; depth cut for speed
])
def test_segformer_matches_transformers(variant, depths, embed_dim):
  hf = random_hf_segformer(variant, depths, num_classes=11, embed_dim=embed_dim)
  variables = convert_hf_segformer({k: v.numpy() for k, v in hf.state_dict().items()},
                                   model := segformer(variant, 11, embed_dim=embed_dim,
                                                      depths=depths))
  images = np.random.default_rng(1).standard_normal((1, 75, 109, 3)).astype(np.float32)
  with torch.no_grad():
    expected = hf(torch.from_numpy(images).permute(0, 3, 1, 2), output_hidden_states=True)

  @jax.jit
  def forward(v, x):
    features = model.apply(v, x, train=False, method=lambda m, x, train: m.backbone(x, train=train))
    return features, model.apply(v, x, train=False)

  with jax.default_matmul_precision("highest"):
    features, logits = forward(variables, images)
  assert len(expected.hidden_states) == 4
  for stage, (ours, theirs) in enumerate(zip(features, expected.hidden_states), start=1):
    theirs = theirs.permute(0, 2, 3, 1).numpy()
    assert ours.shape == theirs.shape, stage
    assert np.abs(np.asarray(ours) - theirs).max() <= TOLERANCE, f"stage {stage}"
  theirs = expected.logits.permute(0, 2, 3, 1).numpy()
  assert logits.shape == theirs.shape == (1, 19, 28, 11)
  assert np.abs(np.asarray(logits) - theirs).max() <= TOLERANCE
