"""Parameter counts of MiT-B0..B5 and the SegFormer head equal transformers' SegFormer.

Counts are the strongest cheap check that every layer exists with the right width (a wrong mlp
ratio, a missing bias or a misplaced norm all change them). Flax shapes come from
`jax.eval_shape` and torch builds on the meta device, so even B5 costs no memory or FLOPs.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from vssjax.models.mit import MIT_VARIANTS, mit
from vssjax.models.segformer import segformer

_EXAMPLE = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
# Backbone sizes in millions from specs/dtern.md §10.2 (computed from the mmseg module tree).
_SPEC_BACKBONE_MILLIONS = {"b0": 3.319, "b1": 13.151, "b2": 24.196, "b5": 81.443}


def _flax_param_count(model) -> int:
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), _EXAMPLE)
  leaves = traverse_util.flatten_dict(variables["params"]).values()
  return sum(int(np.prod(v.shape)) for v in leaves)


def _hf_counts(variant: str, embed_dim: int) -> tuple[int, int]:
  """(backbone, whole model) parameter counts of the matching HF SegFormer, 150 classes."""
  arch = MIT_VARIANTS[variant]
  config = SegformerConfig(hidden_sizes=list(arch["embed_dims"]), num_attention_heads=list(
      arch["num_heads"]), depths=list(arch["depths"]), sr_ratios=list(arch["sr_ratios"]),
                           decoder_hidden_size=embed_dim, num_labels=150)
  with torch.device("meta"):
    model = SegformerForSemanticSegmentation(config)
  backbone = sum(p.numel() for p in model.segformer.parameters())
  return backbone, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("variant", sorted(MIT_VARIANTS))
def test_backbone_and_segformer_param_counts_match_transformers(variant):
  hf_backbone_256, hf_total_256 = _hf_counts(variant, 256)
  _, hf_total_768 = _hf_counts(variant, 768)
  assert _flax_param_count(mit(variant)) == hf_backbone_256
  assert _flax_param_count(segformer(variant, 150, embed_dim=256)) == hf_total_256
  assert _flax_param_count(segformer(variant, 150, embed_dim=768)) == hf_total_768
  if variant in _SPEC_BACKBONE_MILLIONS:
    assert round(hf_backbone_256 / 1e6, 3) == _SPEC_BACKBONE_MILLIONS[variant]
