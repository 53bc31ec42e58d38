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
from vssjax.models.mit import MIT_VARIANTS, mit
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


# specs/dtern.md §2 (the SegFormer paper's MiT table): stage depths and widths of each variant;
# heads [1, 2, 5, 8] and reduction ratios [8, 4, 2, 1] in all of them.
_SPEC_DEPTHS = {"b0": (2, 2, 2, 2), "b1": (2, 2, 2, 2), "b2": (3, 4, 6, 3), "b3": (3, 4, 18, 3),
                "b4": (3, 8, 27, 3), "b5": (3, 6, 40, 3)}
_SPEC_WIDTHS = {"b0": (32, 64, 160, 256),
                **{f"b{i}": (64, 128, 320, 512) for i in range(1, 6)}}


def test_variants_have_the_papers_depths_and_widths():
  """The counts above compare against transformers' SegFormer built from `MIT_VARIANTS` itself,
  so a wrong depth there (B3 and B4 have no released count to pin) would pass them: here each
  variant's architecture, as `mit(variant)` builds it, is the paper's."""
  assert sorted(MIT_VARIANTS) == sorted(_SPEC_DEPTHS)
  for variant, depths in _SPEC_DEPTHS.items():
    model = mit(variant)
    assert tuple(model.depths) == depths, variant
    assert tuple(model.embed_dims) == _SPEC_WIDTHS[variant], variant
    assert tuple(model.num_heads) == (1, 2, 5, 8), variant
    assert tuple(model.sr_ratios) == (8, 4, 2, 1), variant
    assert model.mlp_ratio == 4, variant
