"""mmseg / NVlabs SegFormer state_dict (numpy) -> Flax variables of `vssjax.models`.

Our MiT and head parameter paths mirror the mmseg keys (specs/dtern.md §10.1), so this converter is
a renaming plus the layout changes of `common` (Linear transposed, conv to HWIO, BN buffers to
`batch_stats`):
- `backbone.patch_embed{s}.{proj,norm}`, `backbone.block{s}.{j}.{norm1, attn.{q,kv,proj,sr,norm},
  norm2, mlp.{fc1, dwconv.dwconv, fc2}}`, `backbone.norm{s}` (s = 1..4);
- `decode_head.linear_c{i}.proj`, `decode_head.linear_fuse.{conv,bn}`, `decode_head.linear_pred`.
mmseg's `attn.kv` is one Linear(C, 2C) whose first C outputs are the keys and the next C the
values; our `kv` Dense packs them the same way, so it is copied as is (no split).
`decode_head.conv_seg` is inherited from mmseg's `BaseDecodeHead` but never used by SegFormer's
forward; it is dropped. File wrappers (mmcv `meta`/`state_dict`, DDP `module.`) are peeled off by
`torch_io.load_state_dict` before this runs.
"""
from collections.abc import Sequence

from vssjax.convert.common import (
    DEFAULT_DROP, EXAMPLE_IMAGE, Rule, StateDict, Variables, abstract_variables, apply_rules,
    batch_norm_rules, conv_rules, dense_rules, layer_norm_rules, width_hint)
from vssjax.convert.mit_layout import mit_mismatch
from vssjax.models.mit import MixTransformer
from vssjax.models.segformer import SegFormer

# Present in every mmseg SegFormer checkpoint, unused by the model.
UNUSED_HEAD_KEYS = (r"^decode_head\.conv_seg\.",)


def _block_rules(target: str, source: str, sr_ratio: int) -> list[Rule]:
  rules = [*layer_norm_rules(f"{target}/norm1", f"{source}.norm1"),
           *[rule for name in ("q", "kv", "proj")
             for rule in dense_rules(f"{target}/attn/{name}", f"{source}.attn.{name}")],
           *layer_norm_rules(f"{target}/norm2", f"{source}.norm2"),
           *dense_rules(f"{target}/mlp/fc1", f"{source}.mlp.fc1"),
           *conv_rules(f"{target}/mlp/dwconv", f"{source}.mlp.dwconv.dwconv"),
           *dense_rules(f"{target}/mlp/fc2", f"{source}.mlp.fc2")]
  if sr_ratio > 1:  # Stage 4 (sr 1) attends to the full map and has no reduction conv.
    rules += [*conv_rules(f"{target}/attn/sr", f"{source}.attn.sr"),
              *layer_norm_rules(f"{target}/attn/norm", f"{source}.attn.norm")]
  return rules


def mit_rules(backbone: MixTransformer, target: str, source: str) -> list[Rule]:
  """Rules for every MiT variable under Flax path `target` from mmseg keys under `source`."""
  rules = []
  for i, (depth, sr_ratio) in enumerate(zip(backbone.depths, backbone.sr_ratios)):
    s = i + 1
    rules += conv_rules(f"{target}/patch_embed{s}/proj", f"{source}patch_embed{s}.proj")
    rules += layer_norm_rules(f"{target}/patch_embed{s}/norm", f"{source}patch_embed{s}.norm")
    for j in range(depth):
      rules += _block_rules(f"{target}/block{s}_{j}", f"{source}block{s}.{j}", sr_ratio)
    rules += layer_norm_rules(f"{target}/norm{s}", f"{source}norm{s}")
  return rules


def mit_hint(state_dict: StateDict, backbone: MixTransformer, source: str) -> str | None:
  """`mit_mismatch` for mmseg keys under `source`."""
  return mit_mismatch(state_dict, backbone, lambda i: f"{source}patch_embed{i + 1}.proj.weight",
                      lambda i: f"{source}block{i + 1}.")


def head_rules(target: str = "decode_head", source: str = "decode_head", *,
               classifier: bool = True) -> list[Rule]:
  """Rules for mmseg's SegFormer all-MLP head: the module `target` (under params/ and
  batch_stats/) from the keys under `source.`; without `classifier`, its `linear_pred` is left out
  (DCFM's encoder ends at the fused features)."""
  rules = []
  for i in range(1, 5):
    rules += dense_rules(f"params/{target}/linear_c{i}", f"{source}.linear_c{i}.proj")
  rules += conv_rules(f"params/{target}/linear_fuse/conv", f"{source}.linear_fuse.conv",
                      bias=False)
  rules += batch_norm_rules(f"{target}/linear_fuse/bn", f"{source}.linear_fuse.bn")
  if classifier:
    rules += conv_rules(f"params/{target}/linear_pred", f"{source}.linear_pred")
  return rules


def convert_mmseg_segformer(state_dict: StateDict, model: SegFormer) -> Variables:
  """mmseg `EncoderDecoder(MiT, SegFormerHead)` state_dict -> {'params', 'batch_stats'} of `model`.

  Raises `CheckpointMismatchError` naming every missing, unexpected and mis-shaped key.
  """
  rules = mit_rules(model.backbone, "params/backbone", "backbone.") + head_rules()
  expected = abstract_variables(model, EXAMPLE_IMAGE, train=False)
  return apply_rules(state_dict, rules, expected, drop=(*DEFAULT_DROP, *UNUSED_HEAD_KEYS),
                     hints=[mit_hint(state_dict, model.backbone, "backbone."),
                            width_hint(state_dict, "decode_head.linear_c1.proj.weight",
                                       model.decode_head.embed_dim, "model.decoder_dim")],
                     classifier="params/decode_head/linear_pred")


def convert_mmseg_mit(state_dict: StateDict, backbone: MixTransformer, *, prefix: str = "",
                      ignore: Sequence[str] = (r"^head\.",)) -> Variables:
  """ImageNet MiT weights (NVlabs `mit_b*.pth`: backbone keys at the top level plus the `head`
  classifier) -> {'params'} of `backbone`. Keys matching a regex in `ignore` are dropped."""
  expected = abstract_variables(backbone, EXAMPLE_IMAGE, train=False)
  return apply_rules(state_dict, mit_rules(backbone, "params", prefix), expected,
                     drop=(*DEFAULT_DROP, *ignore), hints=[mit_hint(state_dict, backbone, prefix)])
