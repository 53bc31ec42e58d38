"""HF transformers SegFormer / MiT state_dict (numpy) -> Flax variables of `vssjax.models`.

Accepts both naming schemes:
- transformers >= 5 module names, what `model.state_dict()` returns:
  `segformer.stages.N.blocks.M.attention.q_proj`, `.attention.sequence_reduction.*`, `mlp.fc1`,
  `layernorm_before`, `decode_head.linear_projections.N`, ...
- the legacy names stored in hub/`save_pretrained` files: `segformer.encoder.block.N.M`,
  `attention.self.query`, `mlp.dense1`, `layer_norm_1`, `decode_head.linear_c.N`, ...
Legacy names are first rewritten to the v5 ones (the same renames transformers applies on load,
see `transformers/conversion_mapping.py`), then mapped onto our mmseg-style paths. HF keeps
separate `k_proj` / `v_proj`; mmseg (and we) pack them as `kv` = [keys; values].
"""
from collections.abc import Sequence

import numpy as np

from vssjax.convert.common import (
    DEFAULT_DROP, EXAMPLE_IMAGE, Rule, StateDict, Variables, abstract_variables, apply_rules,
    batch_norm_rules, conv_rules, dense_rules, layer_norm_rules, linear_to_dense, rename_keys,
    width_hint)
from vssjax.convert.mit_layout import mit_mismatch
from vssjax.models.mit import MixTransformer
from vssjax.models.segformer import SegFormer

LEGACY_RENAMES: tuple[tuple[str, str], ...] = (
    (r"encoder\.patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."),
    (r"encoder\.block\.(\d+)\.", r"stages.\1.blocks."),
    (r"encoder\.layer_norm\.(\d+)\.", r"stages.\1.layer_norm."),
    (r"attention\.self\.query\.", "attention.q_proj."),
    (r"attention\.self\.key\.", "attention.k_proj."),
    (r"attention\.self\.value\.", "attention.v_proj."),
    (r"attention\.self\.sr\.", "attention.sequence_reduction.sequence_reduction."),
    (r"attention\.self\.layer_norm\.", "attention.sequence_reduction.layer_norm."),
    (r"attention\.output\.dense\.", "attention.o_proj."),
    (r"mlp\.dense1\.", "mlp.fc1."),
    (r"mlp\.dense2\.", "mlp.fc2."),
    (r"\.layer_norm_1\.", ".layernorm_before."),
    (r"\.layer_norm_2\.", ".layernorm_after."),
    (r"decode_head\.linear_c\.", "decode_head.linear_projections."),
)


def _packed_kv(k_weight_or_bias: np.ndarray, v_weight_or_bias: np.ndarray) -> np.ndarray:
  """HF k_proj, v_proj -> mmseg `kv` (outputs [keys; values]); weights also go to Dense layout."""
  packed = np.concatenate([k_weight_or_bias, v_weight_or_bias], axis=0)
  return linear_to_dense(packed) if packed.ndim == 2 else packed


def _block_rules(target: str, source: str, sr_ratio: int) -> list[Rule]:
  attn, hf_attn = f"{target}/attn", f"{source}.attention"
  rules = [
      *layer_norm_rules(f"{target}/norm1", f"{source}.layernorm_before"),
      *dense_rules(f"{attn}/q", f"{hf_attn}.q_proj"),
      *[Rule(f"{attn}/kv/{leaf}", (f"{hf_attn}.k_proj.{part}", f"{hf_attn}.v_proj.{part}"),
             _packed_kv) for leaf, part in (("kernel", "weight"), ("bias", "bias"))],
      *dense_rules(f"{attn}/proj", f"{hf_attn}.o_proj"),
      *layer_norm_rules(f"{target}/norm2", f"{source}.layernorm_after"),
      *dense_rules(f"{target}/mlp/fc1", f"{source}.mlp.fc1"),
      *conv_rules(f"{target}/mlp/dwconv", f"{source}.mlp.dwconv.dwconv"),
      *dense_rules(f"{target}/mlp/fc2", f"{source}.mlp.fc2"),
  ]
  if sr_ratio > 1:
    reduction = f"{hf_attn}.sequence_reduction"
    rules += [*conv_rules(f"{attn}/sr", f"{reduction}.sequence_reduction"),
              *layer_norm_rules(f"{attn}/norm", f"{reduction}.layer_norm")]
  return rules


def mit_rules(backbone: MixTransformer, target: str, source: str) -> list[Rule]:
  """Rules for every MiT variable under Flax path `target` from HF keys under `source`."""
  rules = []
  for i, (depth, sr_ratio) in enumerate(zip(backbone.depths, backbone.sr_ratios)):
    stage, s = f"{source}stages.{i}", i + 1
    rules += conv_rules(f"{target}/patch_embed{s}/proj", f"{stage}.patch_embeddings.proj")
    rules += layer_norm_rules(f"{target}/patch_embed{s}/norm",
                              f"{stage}.patch_embeddings.layer_norm")
    for j in range(depth):
      rules += _block_rules(f"{target}/block{s}_{j}", f"{stage}.blocks.{j}", sr_ratio)
    rules += layer_norm_rules(f"{target}/norm{s}", f"{stage}.layer_norm")
  return rules


def mit_hint(state_dict: StateDict, backbone: MixTransformer, source: str) -> str | None:
  """`mit_mismatch` for HF keys (v5 names) under `source`."""
  return mit_mismatch(state_dict, backbone,
                      lambda i: f"{source}stages.{i}.patch_embeddings.proj.weight",
                      lambda i: f"{source}stages.{i}.blocks.")


def head_rules() -> list[Rule]:
  """Rules for the SegFormer decode head (HF `decode_head.*` -> our `decode_head/*`)."""
  rules = []
  for i in range(4):
    rules += dense_rules(f"params/decode_head/linear_c{i + 1}",
                         f"decode_head.linear_projections.{i}.proj")
  rules += conv_rules("params/decode_head/linear_fuse/conv", "decode_head.linear_fuse", bias=False)
  rules += batch_norm_rules("decode_head/linear_fuse/bn", "decode_head.batch_norm")
  rules += conv_rules("params/decode_head/linear_pred", "decode_head.classifier")
  return rules


def convert_hf_segformer(state_dict: StateDict, model: SegFormer) -> Variables:
  """`SegformerForSemanticSegmentation` state_dict -> {'params', 'batch_stats'} for `model`.

  Raises `CheckpointMismatchError` naming every missing, unexpected and mis-shaped key
  (unexpected and mis-shaped keys by their name in `state_dict`; missing ones by their
  transformers-5 name, since an absent key has no name in the file).
  """
  renamed, original = rename_keys(state_dict, LEGACY_RENAMES)
  rules = mit_rules(model.backbone, "params/backbone", "segformer.") + head_rules()
  expected = abstract_variables(model, EXAMPLE_IMAGE, train=False)
  width = width_hint(renamed, "decode_head.linear_projections.0.proj.weight",
                     model.decode_head.embed_dim, "model.decoder_dim", display_names=original)
  return apply_rules(renamed, rules, expected, display_names=original,
                     hints=[mit_hint(renamed, model.backbone, "segformer."), width],
                     classifier="params/decode_head/linear_pred")


def convert_hf_mit(state_dict: StateDict, backbone: MixTransformer, *,
                   prefix: str = "segformer.",
                   ignore: Sequence[str] = (r"^classifier\.",)) -> Variables:
  """HF MiT weights (e.g. ImageNet `SegformerForImageClassification`) -> {'params'} of `backbone`.

  Keys matching a regex in `ignore` (by default the ImageNet classifier) are dropped.
  """
  renamed, original = rename_keys(state_dict, LEGACY_RENAMES)
  expected = abstract_variables(backbone, EXAMPLE_IMAGE, train=False)
  return apply_rules(renamed, mit_rules(backbone, "params", prefix), expected,
                     drop=(*DEFAULT_DROP, *ignore), display_names=original,
                     hints=[mit_hint(renamed, backbone, prefix)])
