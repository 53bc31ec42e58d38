"""PyTorch ResNet / PSPNet state_dicts (numpy) -> Flax variables of `models.resnet` / `pspnet`.

Two key layouts reach the same tree (specs/dcfm.md §9, specs/etc.md §3):
- the PSPNet layout (semseg, ETC, DCFM's encoder under `backbone.`): the stem is a Sequential
  `layer0.{0,1,3,4,6,7}` (deep base: conv, BN, -, conv, BN, -, conv, BN) or `layer0.{0,1}`
  (plain 7x7), then `layer{1..4}.{j}.{conv*,bn*,downsample.{0,1}}`, `ppm.features.{i}.{1,2}`,
  `cls.{0,1,4}` and `aux.{0,1,4}` (indices 2, 3 are ReLU and Dropout2d);
- ImageNet initialisation files: torchvision (`conv1`, `bn1`, `layer*`, `fc`; ResNet-18) and
  semseg's deep base (`conv1, bn1, conv2, bn2, conv3, bn3`, `layer*`, `fc`; `resnet*_v2.pth`).
  The classifier `fc` is dropped.
Blocks are named alike in both, and our paths mirror them (`layer{i}_{j}/...`), so each rule is a
renaming plus the layout changes of `common`. BN running statistics go to `batch_stats`;
`num_batches_tracked` is dropped. DDP's `module.` prefix is peeled by `torch_io` when every key
has it; callers pass any remaining prefix (e.g. DCFM's `backbone.`) as `source_prefix`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from vssjax.convert.common import (
    DEFAULT_DROP, EXAMPLE_IMAGE, Rule, StateDict, Variables, abstract_variables, apply_rules,
    batch_norm_rules, conv_rules)
from vssjax.errors import SetupError
from vssjax.models.pspnet import PSPNet
from vssjax.models.resnet import DEEP_STEM_WIDTHS, ResNet

StemKeys = Literal["pspnet", "imagenet"]

# ImageNet checkpoints carry a 1000-way classifier that the segmentation backbone has no use for.
IMAGENET_CLASSIFIER_KEYS = (r"^fc\.",)


def _join(prefix: str, name: str) -> str:
  return f"{prefix}/{name}" if prefix else name


def conv_bn_rules(target: str, conv_source: str, bn_source: str, *, conv_name: str = "conv",
                  bn_name: str = "bn") -> list[Rule]:
  """A bias-free conv and its BN: `target/{conv_name,bn_name}` (module path, no collection)."""
  return [*conv_rules(f"params/{_join(target, conv_name)}", conv_source, bias=False),
          *batch_norm_rules(_join(target, bn_name), bn_source)]


def _stem_rules(stem: Literal["plain", "deep"], target: str, source: str, keys: StemKeys
                ) -> list[Rule]:
  """`layer0/{conv,bn}{k}` from `layer0.{3(k-1)}/{3(k-1)+1}` (PSPNet) or `conv{k}/bn{k}`."""
  num_convs = 1 if stem == "plain" else len(DEEP_STEM_WIDTHS)
  rules = []
  for k in range(1, num_convs + 1):
    if keys == "pspnet":
      conv_source, bn_source = f"{source}layer0.{3 * (k - 1)}", f"{source}layer0.{3 * (k - 1) + 1}"
    else:
      conv_source, bn_source = f"{source}conv{k}", f"{source}bn{k}"
    rules += conv_bn_rules(_join(target, "layer0"), conv_source, bn_source, conv_name=f"conv{k}",
                           bn_name=f"bn{k}")
  return rules


def _block_rules(backbone: ResNet, stage: int, index: int, target: str, source: str
                 ) -> list[Rule]:
  """Block `index` of layer `stage`: conv{k}/bn{k} and, on the first block when the shortcut is a
  projection, `downsample.{0,1}`."""
  num_convs = 2 if backbone.block == "basic" else 3
  rules = []
  for k in range(1, num_convs + 1):
    rules += conv_bn_rules(target, f"{source}.conv{k}", f"{source}.bn{k}", conv_name=f"conv{k}",
                           bn_name=f"bn{k}")
  if index == 0 and backbone.has_projection(stage):
    rules += conv_bn_rules(_join(target, "downsample"), f"{source}.downsample.0",
                           f"{source}.downsample.1")
  return rules


def resnet_rules(backbone: ResNet, target_prefix: str, source_prefix: str, *,
                 stem_keys: StemKeys = "pspnet") -> list[Rule]:
  """Rules for every variable of `backbone` under module path `target_prefix` ('' at the root;
  no collection) from torch keys starting with `source_prefix` (e.g. 'backbone.' or '')."""
  rules = _stem_rules(backbone.stem, target_prefix, source_prefix, stem_keys)
  for stage, num_blocks in enumerate(backbone.layers, start=1):
    for j in range(num_blocks):
      rules += _block_rules(backbone, stage, j, _join(target_prefix, f"layer{stage}_{j}"),
                            f"{source_prefix}layer{stage}.{j}")
  return rules


def ppm_rules(bins: Sequence[int], target_prefix: str, source_prefix: str) -> list[Rule]:
  """Rules for a `PPM` with `len(bins)` branches at `target_prefix` from `{source_prefix}
  features.{i}.{1,2}` (e.g. source_prefix 'ppm.')."""
  return [rule for i in range(len(bins))
          for rule in conv_bn_rules(_join(target_prefix, f"features_{i}"),
                                    f"{source_prefix}features.{i}.1",
                                    f"{source_prefix}features.{i}.2")]


def _head_rules(target: str, source: str) -> list[Rule]:
  """`SegmentationHead` from torch `Sequential(conv, BN, ReLU, Dropout2d, conv)`."""
  return [*conv_bn_rules(f"{target}/conv_bn", f"{source}.0", f"{source}.1"),
          *conv_rules(f"params/{target}/classifier", f"{source}.4")]


def pspnet_rules(model: PSPNet) -> list[Rule]:
  """Rules for a whole `PSPNet` (backbone, PPM, `cls`, and `aux` when the model has it), at the
  root on both sides: semseg and ETC save the PSPNet itself."""
  rules = resnet_rules(model.backbone, "backbone", "")
  rules += ppm_rules(model.bins, "ppm", "ppm.")
  heads = ("cls", "aux") if model.aux else ("cls",)
  for head in heads:
    rules += _head_rules(head, head)
  return rules


# semseg's and ETC's PSPNet hold their loss module (`self.criterion`); ETC's CriterionDSN is a
# class-weighted CrossEntropyLoss, whose weights are a buffer saved with the model
# (`criterion.criterion.weight`): not a model variable.
_LOSS_BUFFERS = (r"^criterion\.",)


def convert_pspnet(state_dict: StateDict, model: PSPNet) -> Variables:
  """semseg / ETC PSPNet state_dict -> {'params', 'batch_stats'} of `model`.

  Raises `CheckpointMismatchError` naming every missing, unexpected and mis-shaped key (e.g. a
  checkpoint with an aux head for a model without one, another depth or class count).
  """
  if not isinstance(model.backbone, ResNet):  # ETC-Mobile: the rules read a ResNet's layout
    raise SetupError(f"a PSPNet checkpoint (ResNet backbone) for a model on "
                     f"{type(model.backbone).__name__}: a checkpoint of another backbone than "
                     "this config's (no MobileNetV2 PSPNet weights were released)")
  expected = abstract_variables(model, EXAMPLE_IMAGE, train=False)
  return apply_rules(state_dict, pspnet_rules(model), expected,
                     drop=DEFAULT_DROP + _LOSS_BUFFERS, classifier="params/cls/classifier")


def convert_resnet_imagenet(state_dict: StateDict, backbone: ResNet) -> Variables:
  """ImageNet ResNet weights -> {'params', 'batch_stats'} of `backbone` (`fc` dropped).

  torchvision's layout for the plain stem (ResNet-18), semseg's deep-base layout for the deep
  stem (ResNet-50/101); the stem decides which stem keys are expected.
  """
  expected = abstract_variables(backbone, EXAMPLE_IMAGE, train=False)
  rules = resnet_rules(backbone, "", "", stem_keys="imagenet")
  return apply_rules(state_dict, rules, expected, drop=(*DEFAULT_DROP, *IMAGENET_CLASSIFIER_KEYS))
