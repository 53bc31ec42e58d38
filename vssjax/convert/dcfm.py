"""DCFM release checkpoints (encoder + decoder files, specs/dcfm.md §9) -> Flax variables of
`vssjax.models.dcfm.DCFM`.

The release saves `DDP(encoder).state_dict()` and `DDP(decoder).state_dict()` separately; loaded
together (their keys are disjoint) and with DDP's `module.` peeled off by `torch_io`, the keys are:
- encoder, MiT: `backbone.encoder.*` (the MiT, mmseg names) and `backbone.decoder.{linear_c1..4,
  linear_fuse}` (the SegFormer MLP decoder); `backbone.decoder.conv_seg.*` is an unused leftover
  of mmseg's BaseDecodeHead and is dropped;
- encoder, ResNet: `backbone.layer{0..4}.*` (PSPNet layout) and `backbone.ppm.features.*`;
- decoder: `bot_aspp.weight` (ResNet only), `ffm.convblk.{conv,norm}`, and `final.1` (VSPW head) or
  `final.{0,1,4}` (Cityscapes/CamVid head: conv, BN, classifier).
"""

from __future__ import annotations

from vssjax.convert.common import (DEFAULT_DROP, EXAMPLE_IMAGE, Rule, StateDict, Variables,
                                   abstract_variables, apply_rules, batch_norm_rules, conv_rules)
from vssjax.convert.mmseg_segformer import head_rules, mit_hint, mit_rules
from vssjax.convert.torch_resnet import ppm_rules, resnet_rules
from vssjax.models.dcfm import DCFM, MiTCommonEncoder

UNUSED_KEYS = (r"^backbone\.decoder\.conv_seg\.",)


def _encoder_rules(model: DCFM) -> list[Rule]:
  encoder = model.encoder
  if isinstance(encoder, MiTCommonEncoder):
    return (mit_rules(encoder.backbone, "params/encoder/backbone", "backbone.encoder.")
            + head_rules("encoder/decoder", "backbone.decoder", classifier=False))
  return (resnet_rules(encoder.backbone, "encoder/backbone", "backbone.")
          + ppm_rules(encoder.ppm.bins, "encoder/ppm", "backbone.ppm."))


def _decoder_rules(model: DCFM) -> list[Rule]:
  rules = conv_rules("params/bot_aspp", "bot_aspp", bias=False) if model.bottleneck else []
  rules += conv_rules("params/ffm/conv", "ffm.convblk.conv")
  rules += batch_norm_rules("ffm/norm", "ffm.convblk.norm")
  if not model.head_hidden:  # Sequential(Dropout2d, conv)
    return rules + conv_rules("params/final/cls", "final.1", bias=False)
  # Sequential(conv, BN, ReLU, Dropout2d, conv)
  return (rules + conv_rules("params/final/conv", "final.0", bias=False)
          + batch_norm_rules("final/bn", "final.1")
          + conv_rules("params/final/cls", "final.4", bias=False))


def convert_dcfm(state_dict: StateDict, model: DCFM) -> Variables:
  """The merged encoder + decoder state_dict -> {'params', 'batch_stats'} of `model`.

  Raises `CheckpointMismatchError` naming every missing, unexpected and mis-shaped key (e.g. only
  one of the two files, or a VSPW checkpoint for a Cityscapes config).
  """
  expected = abstract_variables(model, EXAMPLE_IMAGE, train=False)
  hint = (mit_hint(state_dict, model.encoder.backbone, "backbone.encoder.")
          if isinstance(model.encoder, MiTCommonEncoder) else None)
  return apply_rules(state_dict, _encoder_rules(model) + _decoder_rules(model), expected,
                     drop=(*DEFAULT_DROP, *UNUSED_KEYS), hints=[hint],
                     classifier="params/final/cls")
