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

from tests.conftest import method_segformer
from vssjax.models.mit import MIT_VARIANTS
from vssjax.models.segformer_head import SegFormerHead

_EXAMPLE = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
# Backbone sizes in millions from specs/dtern.md §10.2 (computed from the mmseg module tree).
_SPEC_BACKBONE_MILLIONS = {"b0": 3.319, "b1": 13.151, "b2": 24.196, "b5": 81.443}


def _flax_params(model, *inputs):
  return jax.eval_shape(lambda *x: model.init(jax.random.key(0), *x, train=False), *inputs)[
      "params"]


def _count(params) -> int:
  return sum(int(np.prod(v.shape)) for v in traverse_util.flatten_dict(params).values())


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
  # One trace of the whole model (tracing B5 takes seconds): its `backbone` subtree is
  # `mit(variant)`, and the 768-wide head is counted on its own, on the four feature widths.
  params = _flax_params(method_segformer(variant, 150, 256), _EXAMPLE)
  assert set(params) == {"backbone", "decode_head"}
  backbone = _count(params["backbone"])
  assert backbone == hf_backbone_256
  assert _count(params) == hf_total_256
  features = [jax.ShapeDtypeStruct((1, 64 // stride, 64 // stride, width), jnp.float32)
              for stride, width in zip((4, 8, 16, 32), MIT_VARIANTS[variant]["embed_dims"])]
  head_768 = _flax_params(SegFormerHead(150, embed_dim=768), features)
  assert backbone + _count(head_768) == hf_total_768
  if variant in _SPEC_BACKBONE_MILLIONS:
    assert round(hf_backbone_256 / 1e6, 3) == _SPEC_BACKBONE_MILLIONS[variant]
