"""An HF SegFormer state_dict renamed to the keys of the same model in an mmseg checkpoint.

No mmseg is installed, so the mmseg-format checkpoints of the converter and CLI tests are written
from HF ones by a table written independently of both converters (packing HF's k/v into mmseg's
single `kv` Linear); converting the result must give what the HF converter gives.
"""
import re

import numpy as np

# HF (transformers 5) name -> mmseg name, applied in order; `{s}` = HF stage index + 1.
_HF_TO_MMSEG = (
    (r"^segformer\.stages\.(\d+)\.patch_embeddings\.layer_norm\.", "backbone.patch_embed{s}.norm."),
    (r"^segformer\.stages\.(\d+)\.patch_embeddings\.proj\.", "backbone.patch_embed{s}.proj."),
    (r"^segformer\.stages\.(\d+)\.layer_norm\.", "backbone.norm{s}."),
    (r"^segformer\.stages\.(\d+)\.blocks\.", "backbone.block{s}."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.q_proj\.", ".attn.q."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attn.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attn.norm."),
    (r"^decode_head\.linear_projections\.(\d+)\.", "decode_head.linear_c{s}."),
    (r"^decode_head\.linear_fuse\.", "decode_head.linear_fuse.conv."),
    (r"^decode_head\.batch_norm\.", "decode_head.linear_fuse.bn."),
    (r"^decode_head\.classifier\.", "decode_head.linear_pred."),
)
# Classes of the unused `conv_seg` written beside the head: SegFormer never runs it and the
# converter drops it unread, so any count does (7, the mmseg converter tests' own).
_CONV_SEG_CLASSES = 7


def _mmseg_name(name: str) -> str:
  for pattern, replacement in _HF_TO_MMSEG:
    match = re.search(pattern, name)
    if match:
      stage = int(match.group(1)) + 1 if match.groups() else None
      name = name[:match.start()] + replacement.format(s=stage) + name[match.end():]
  return name


def hf_to_mmseg(hf_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """HF SegFormer state_dict -> the state_dict of the same model as mmseg names it."""
  out = {}
  for name, value in hf_state.items():
    if ".attention.v_proj." in name:
      continue
    if ".attention.k_proj." in name:
      value = np.concatenate([value, hf_state[name.replace("k_proj", "v_proj")]], axis=0)
      name = name.replace(".attention.k_proj.", ".attn.kv.")
    out[_mmseg_name(name)] = value
  embed = out["decode_head.linear_pred.weight"].shape[1]
  # mmseg's BaseDecodeHead builds `conv_seg` (channels = E / 2 in the SegFormer configs); unused.
  out["decode_head.conv_seg.weight"] = np.zeros((_CONV_SEG_CLASSES, embed // 2, 1, 1), np.float32)
  out["decode_head.conv_seg.bias"] = np.zeros((_CONV_SEG_CLASSES,), np.float32)
  return out
