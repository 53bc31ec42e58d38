"""Released DTERN checkpoint (mmseg state_dict, numpy) -> Flax variables of its `ClipSegmentor`.

Keys (specs/dtern.md §10, Appendix A): the stock mmseg MiT under `backbone.` (rules shared with
`mmseg_segformer`) and `SegFormerHead_clips2_DTERN_ensemble4` under `decode_head.`. Our paths mirror
the torch module tree with `a.b.0.c` written `a/b_0/c`, so every rule is a renaming plus the
layout changes of `common`. Raw parameters (`sim_alpha`, `prompt*`, `top_down_transform*`, `FCC`,
`VCC`) are copied as they are; `top_down_transform` is right-multiplied in both frameworks.
Parameter-free entries (`Rearrange`, activations, empty lists) have no keys. Every saved entry,
unused ones included (`conv_seg`, `clustering.norm1`), has a Flax variable, so nothing is dropped
except `num_batches_tracked`.
"""
import jax
import jax.numpy as jnp

from vssjax.convert.common import (
    Rule, StateDict, Variables, abstract_variables, apply_rules, batch_norm_rules, conv_rules,
    dense_rules, layer_norm_rules)
from vssjax.convert.mmseg_segformer import head_rules as segformer_head_rules
from vssjax.convert.mmseg_segformer import mit_hint, mit_rules
from vssjax.convert.torch_resnet import conv_bn_rules
from vssjax.models.clip_segmentor import ClipSegmentor
from vssjax.models.dtern_head import LTEM_HEADS

# eval_shape only needs parameter shapes: any 4-frame clip whose 1/32 grid is non-empty will do.
_EXAMPLE = jax.ShapeDtypeStruct((1, 4, 64, 64, 3), jnp.float32)

_RAW_LTEM_PARAMS = ("sim_alpha", "sim_beta", "prompt1", "top_down_transform1", "prompt2",
                    "top_down_transform2")


def _cam_rules(target: str, source: str, num_kernels: int) -> list[Rule]:
  """`function_module.CAM`: Sequential children `name.i` are Flax modules `name_i`."""
  p = f"params/{target}"
  biased_convs = ["conv1_1_0", "conv1_2_0", "conv1_2_2", "excite_0", "excite_2", "conv_0",
                  *[f"conv2_{i}_0" for i in range(1, num_kernels + 2)]]
  rules = [rule for name in biased_convs
           for rule in conv_rules(f"{p}/{name}", f"{source}.{_torch_name(name)}")]
  for conv, bn in (("conv3_1_0", "conv3_1_1"), ("conv3_2_0", "conv3_2_1")):
    rules += conv_rules(f"{p}/{conv}", f"{source}.{_torch_name(conv)}", bias=False)
    rules += batch_norm_rules(f"{target}/{bn}", f"{source}.{_torch_name(bn)}")
  for bn in (f"conv2_{num_kernels + 1}_1", "conv_1"):
    rules += batch_norm_rules(f"{target}/{bn}", f"{source}.{_torch_name(bn)}")
  return rules


def _torch_name(flax_name: str) -> str:
  """'conv2_5_1' -> 'conv2_5.1', 'excite_0' -> 'excite.0': the last '_' is a Sequential index."""
  head, _, index = flax_name.rpartition("_")
  return f"{head}.{index}"


def _ltem_rules(target: str, source: str, num_kernels: int) -> list[Rule]:
  p = f"params/{target}"
  rules = [Rule(f"{p}/{name}", (f"{source}.{name}",)) for name in _RAW_LTEM_PARAMS]
  rules += layer_norm_rules(f"{p}/norm1", f"{source}.norm1")
  rules += layer_norm_rules(f"{p}/clustering/norm1", f"{source}.clustering.norm1")
  rules += _cam_rules(f"{target}/clustering/cam", f"{source}.clustering.cam", num_kernels)
  rules += conv_rules(f"{p}/clustering/Clustering_0", f"{source}.clustering.Clustering.0",
                      bias=False)
  for name in ("q", "k", "v", "proj"):
    rules += dense_rules(f"{p}/{name}", f"{source}.{name}")
  rules += dense_rules(f"{p}/mlp/fc1", f"{source}.mlp.fc1")
  rules += conv_rules(f"{p}/mlp/dwconv", f"{source}.mlp.dwconv.dwconv")
  rules += dense_rules(f"{p}/mlp/fc2", f"{source}.mlp.fc2")
  return rules


def _gtem_rules(target: str, source: str) -> list[Rule]:
  rules = [Rule(f"params/{target}/{name}", (f"{source}.{name}",)) for name in ("FCC", "VCC")]
  rules += dense_rules(f"params/{target}/q", f"{source}.q")
  rules += dense_rules(f"params/{target}/k", f"{source}.k")
  for name in ("query_project", "key_project", "value_project", "out_project"):
    module = f"{source}.cross_attn.{name}"  # mmcv ConvModule: bias-free `conv`, `bn`
    rules += conv_bn_rules(f"{target}/cross_attn/{name}", f"{module}.conv", f"{module}.bn")
  return rules


def dtern_head_rules(num_kernels: int) -> list[Rule]:
  """Rules for every `decode_head.*` entry of the release (`num_kernels` CAM kernel sizes)."""
  rules = segformer_head_rules()
  rules += conv_rules("params/decode_head/linear_pred1", "decode_head.linear_pred1")
  rules += conv_rules("params/decode_head/conv_seg", "decode_head.conv_seg")
  for i in range(4):
    rules += conv_bn_rules(f"decode_head/dtern/convs_{i}", f"decode_head.dtern.convs.{i}.conv",
                           f"decode_head.dtern.convs.{i}.bn")
  rules += conv_bn_rules("decode_head/dtern/fusion_conv", "decode_head.dtern.fusion_conv.conv",
                         "decode_head.dtern.fusion_conv.bn")
  for i in range(len(LTEM_HEADS)):
    rules += _ltem_rules(f"decode_head/dtern/cluster_blocks_{i}",
                         f"decode_head.dtern.cluster_blocks.{i}", num_kernels)
  rules += _gtem_rules("decode_head/dtern/gtem", "decode_head.dtern.gtem")
  return rules


def convert_mmseg_dtern(state_dict: StateDict, model: ClipSegmentor) -> Variables:
  """DTERN release state_dict -> {'params', 'batch_stats'} of `model`.

  Raises `CheckpointMismatchError` naming every missing, unexpected and mis-shaped key (e.g. a
  checkpoint of another backbone, K or class count, or a plain SegFormer checkpoint).
  """
  rules = (mit_rules(model.backbone, "params/backbone", "backbone.")
           + dtern_head_rules(len(model.decode_head.kernels)))
  expected = abstract_variables(model, _EXAMPLE, train=False)
  return apply_rules(state_dict, rules, expected,
                     hints=[mit_hint(state_dict, model.backbone, "backbone.")],
                     classifier="params/decode_head/linear_pred1")
