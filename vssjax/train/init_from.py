"""Starting a train state from released PyTorch weights (`FORMATS`: HF transformers, mmseg,
DCFM's release, semseg/ETC PSPNets, torchvision/semseg ImageNet ResNets).

Used twice: by the train loop when `config.init.torch_checkpoint` is set and the workdir has no
checkpoint yet (fine-tuning), and by `python -m vssjax.convert`, which saves the result as a step-0
Orbax checkpoint that `--mode=eval` evaluates directly.

Two kinds of checkpoint are accepted:
- a full model of the config's method (e.g. a released mmseg SegFormer): every variable is replaced.
  Converters are looked up by (method name, format) and imported lazily, like methods; a new method
  registers its converter in `_CONVERTERS` as "module:function", taking (state_dict, the method's
  Flax module) and returning {'params', 'batch_stats', ...};
- ImageNet backbone weights (NVlabs `mit_b*.pth`, HF `SegformerForImageClassification`,
  torchvision / semseg ResNets, or those a backbone of one's own reads with its
  `convert_torch`), the usual start of training: they go into the `backbone` (or DCFM's
  `encoder/backbone`) of the method's module; everything else keeps its fresh initialisation.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from vssjax.convert.common import CheckpointMismatchError, StateDict, Variables
from vssjax.convert.torch_io import load_state_dict
from vssjax.errors import SetupError
from vssjax.methods.backbones import Backbone
from vssjax.methods.base import Method
from vssjax.models.mit import MixTransformer
from vssjax.models.resnet import ResNet
from vssjax.train.state import TrainState

_CONVERTERS = {
    ("segformer", "hf"): "vssjax.convert.hf_segformer:convert_hf_segformer",
    ("segformer", "mmseg"): "vssjax.convert.mmseg_segformer:convert_mmseg_segformer",
    ("dtern", "mmseg"): "vssjax.convert.mmseg_dtern:convert_mmseg_dtern",
    ("dcfm", "dcfm"): "vssjax.convert.dcfm:convert_dcfm",
    ("etc", "pspnet"): "vssjax.convert.torch_resnet:convert_pspnet",
}
_BACKBONE_CONVERTERS = {  # format: (converter, the backbone it fills)
    "hf": ("vssjax.convert.hf_segformer:convert_hf_mit", MixTransformer),
    "mmseg": ("vssjax.convert.mmseg_segformer:convert_mmseg_mit", MixTransformer),
    "resnet": ("vssjax.convert.torch_resnet:convert_resnet_imagenet", ResNet),
}
FORMATS = ("hf", "mmseg", "dcfm", "pspnet", "resnet")
# Keys only a full segmentation model has (a decode head, DCFM's fusion module, PSPNet's
# classifier).
_HEAD_PREFIXES = ("decode_head.", "ffm.", "cls.")
_DCFM_FILES = " (DCFM's release is two files: --checkpoint=encoder.pth,decoder.pth)"
# Keys of mmsegmentation's own SegFormer (mmseg >= 0.20 `MixVisionTransformer` + `SegformerHead`:
# the open-mmlab model zoo, and ImageNet MiT files rewritten by its `mit2mmseg.py`). Format
# 'mmseg' here is the NVlabs release's naming (mmseg 0.13: `backbone.block1.0...`,
# `decode_head.linear_c1...`), which CFFM, DTERN and HF's weights come from.
_MMSEG_ZOO_PREFIXES = ("backbone.layers.", "layers.0.0.projection.", "decode_head.convs.",
                       "decode_head.fusion_conv.")


def _refuse_mmseg_zoo(state_dict: StateDict) -> None:
  """mmsegmentation's model-zoo SegFormer is another model, not another naming: its head projects
  each level with a 1x1 conv + BatchNorm + ReLU and concatenates [c1..c4], 256 channels wide for
  B0-B5 alike (NVlabs: a Linear per level, [c4..c1], 768 from B2), and its mIoU are its own runs
  (Cityscapes B0 76.54, not the paper's 76.2). Refused by name, not as hundreds of missing keys."""
  zoo = sorted(k for k in state_dict if k.startswith(_MMSEG_ZOO_PREFIXES))
  if zoo:
    raise SetupError(
        f"mmsegmentation model-zoo SegFormer/MiT keys ({', '.join(zoo[:2])}, ...): that is "
        "mmseg's own re-implementation (>= 0.20), whose SegformerHead is a different model (a "
        "conv + BN + ReLU per level, 256 channels for every variant), not the NVlabs release "
        "these configs reproduce. Convert the NVlabs files (segformer.b*.pth, mit_b*.pth) or "
        "the HF hub's nvidia/segformer-* / nvidia/mit-b* weights instead")


def detect_format(state_dict: StateDict) -> str:
  """'hf' for transformers files (keys under `segformer.`), 'dcfm' for DCFM's encoder/decoder pair
  (`ffm.`, `bot_aspp.`; its encoder file alone: `backbone.encoder.` on MiT, `backbone.layer0.` /
  `backbone.ppm.`, semseg's PSPNet under `backbone.`, on ResNet), 'mmseg' for `backbone.` /
  `decode_head.` keys or a bare MiT (`patch_embed1.`), 'pspnet' for whole semseg / ETC PSPNets
  (`layer0.`, `ppm.`, `cls.`, `aux.`), 'resnet' for ImageNet ResNets (torchvision / semseg:
  `layer1.`, `fc.`). HF checkpoints also hold `decode_head.*`: 'hf' goes first.
  """
  if any(k.startswith("segformer.") for k in state_dict):
    return "hf"
  if any(k.startswith(("ffm.", "bot_aspp.", "backbone.encoder.", "backbone.layer0.",
                       "backbone.ppm.")) for k in state_dict):
    return "dcfm"
  _refuse_mmseg_zoo(state_dict)
  if any(k.startswith(("backbone.", "decode_head.", "patch_embed1.")) for k in state_dict):
    return "mmseg"
  if any(k.startswith(("ppm.", "cls.")) for k in state_dict):
    return "pspnet"
  if any(k.startswith("layer1.") for k in state_dict):
    return "resnet"
  sample = ", ".join(sorted(state_dict)[:5])
  raise SetupError(f"cannot tell the checkpoint format from its keys (first: {sample}): none "
                   f"of {FORMATS} (MiT and ResNet backbones; SegFormer, DTERN, DCFM and PSPNet "
                   "models) names its keys so: a checkpoint of another model? (python -m "
                   "vssjax.convert --format=NAME forces one)")


def is_backbone_only(state_dict: StateDict) -> bool:
  """An ImageNet classification checkpoint: a backbone (and its classifier) without a head."""
  return not any(k.startswith(_HEAD_PREFIXES) for k in state_dict)


def _backbone_of(module) -> tuple[tuple[str, ...], Any]:
  """(parameter path, module) of the ImageNet-initialised backbone: `backbone`, or DCFM's
  `encoder/backbone`; (None, None) when the method has none."""
  if getattr(module, "backbone", None) is not None:
    return ("backbone",), module.backbone
  encoder = getattr(module, "encoder", None)
  if getattr(encoder, "backbone", None) is not None:
    return ("encoder", "backbone"), encoder.backbone
  return None, None


def _nest(path: tuple[str, ...], tree: Any) -> Any:
  for key in reversed(path):
    tree = {key: tree}
  return tree


def _import(target: str):
  module_name, function = target.split(":")
  return getattr(importlib.import_module(module_name), function)


def convert_state_dict(state_dict: StateDict, method: Method, fmt: str | None = None, *,
                       whole_model: bool = False) -> Variables:
  """Converts a loaded state_dict for `method` (format auto-detected when `fmt` is None).

  Returns all of the method's variables for a full-model checkpoint; for backbone-only weights,
  the backbone's collections nested under its path (`{'params': {'backbone': ...}}`, with
  `batch_stats` too for a ResNet, under `encoder/backbone` for DCFM). `whole_model`: refuse
  backbone-only weights (converting for evaluation, where the head would stay untrained).
  """
  path, backbone = _backbone_of(method.module)
  own = isinstance(backbone, Backbone)  # it reads its weights itself, in a layout of its own
  if not own:
    fmt = fmt or detect_format(state_dict)
    if fmt not in FORMATS:
      raise SetupError(f"unknown checkpoint format {fmt!r}; known: {FORMATS}")
    if fmt == "mmseg":  # also when --format=mmseg skipped the detection
      _refuse_mmseg_zoo(state_dict)
    if fmt == "dcfm" and not any(k.startswith("backbone.") for k in state_dict):
      raise SetupError(f"DCFM's decoder file without its encoder file{_DCFM_FILES}")
  if is_backbone_only(state_dict):
    if fmt == "dcfm":
      raise SetupError(f"DCFM's encoder file without its decoder file{_DCFM_FILES}")
    if whole_model:
      raise SetupError(
          "backbone weights only (an ImageNet classification checkpoint?), no segmentation head: "
          "evaluating them would score an untrained head. Start a training run from them "
          "(--config.init.torch_checkpoint=...), or convert a whole segmentation model's "
          "checkpoint")
    if own:
      return _nested(path, _own_backbone_variables(backbone, state_dict))
    if backbone is None:
      raise SetupError(f"a backbone-only checkpoint, but method {method.config.method.name!r} "
                       "has no `backbone` submodule to load it into")
    if fmt not in _BACKBONE_CONVERTERS:
      raise SetupError(f"a backbone-only checkpoint in format {fmt!r}; backbone formats: "
                       f"{sorted(_BACKBONE_CONVERTERS)}")
    converter, kind = _BACKBONE_CONVERTERS[fmt]
    if not isinstance(backbone, kind):  # the converter would fail on attributes it lacks
      raise SetupError(f"{kind.__name__} weights (format {fmt!r}) for a {type(backbone).__name__} "
                       f"backbone (model.backbone={method.config.model.backbone!r}): a checkpoint "
                       "of another backbone than this config's")
    kwargs = {} if fmt in ("hf", "resnet") else {
        "prefix": "backbone." if any(k.startswith("backbone.") for k in state_dict) else ""}
    return _nested(path, _import(converter)(state_dict, backbone, **kwargs))
  name = method.config.method.name
  if own:
    raise SetupError(f"a whole {name} model's checkpoint, but model.backbone="
                     f"{method.config.model.backbone!r} is a backbone of one's own: the released "
                     "models are on MiT and ResNet backbones")
  formats = _whole_model_formats(name)
  if (name, fmt) not in _CONVERTERS:
    hint = _DCFM_FILES if name == "dcfm" else ""
    raise SetupError(f"the checkpoint is in format {fmt!r}, but method {name!r} converts from "
                     f"{formats}{hint}: is it the right file, or the right config?")
  try:
    return _import(_CONVERTERS[(name, fmt)])(state_dict, method.module)
  except CheckpointMismatchError as error:
    detected = _detected_format(state_dict)
    if detected not in (None, fmt):
      error.add_note(f"(its keys look like format {detected!r}, not the {fmt!r} given: "
                     f"--format={detected}, or leave --format out)")
    raise


def _whole_model_formats(name: str) -> list[str]:
  """The formats method `name`'s whole-model checkpoints convert from; one without any is refused
  (its weights were not released)."""
  formats = sorted(f for m, f in _CONVERTERS if m == name)
  if not formats:
    raise SetupError(f"method {name!r} has no converter: no weights of it were released. Train it "
                     "(--mode=train), from ImageNet backbone weights if you have them "
                     "(--config.init.torch_checkpoint=...)")
  return formats


def _nested(path: tuple[str, ...], variables: Variables) -> Variables:
  """A backbone's variables placed at its `path` in the method's model, collection by
  collection."""
  return {collection: _nest(path, tree) for collection, tree in variables.items()}


def _own_backbone_variables(backbone: Backbone, state_dict: StateDict) -> Variables:
  """What a backbone of one's own makes of its PyTorch weights (`Backbone.convert_torch`), checked
  to be collections of variables: the shapes are checked when they are swapped in."""
  variables = backbone.convert_torch(state_dict)
  if not (isinstance(variables, Mapping) and "params" in variables
          and all(isinstance(tree, Mapping) for tree in variables.values())):
    keys = (f" with keys {sorted(map(str, variables))}" if isinstance(variables, Mapping)
            else "")
    raise SetupError(f"{type(backbone).__name__}.convert_torch returned "
                     f"{type(variables).__name__}{keys}: it returns the backbone's variables by "
                     "collection, {'params': {...}, ...}")
  return variables


def _read_by(state_dict: StateDict, method: Method, fmt: str | None) -> str:
  """How the checkpoint is read, for the line that announces it: its format, or the backbone of
  one's own that reads it."""
  backbone = _backbone_of(method.module)[1]
  if isinstance(backbone, Backbone):
    return f"read by {type(backbone).__name__}.convert_torch"
  return f"format {fmt or detect_format(state_dict)}"


def _detected_format(state_dict: StateDict) -> str | None:
  """`detect_format`'s answer, or None where it has none (or refuses the file)."""
  try:
    return detect_format(state_dict)
  except SetupError:
    return None


def load_torch_variables(paths: str | Sequence[str], method: Method, fmt: str | None = None, *,
                         allow_pickle: bool = False, whole_model: bool = False,
                         setting: str | None = None) -> Variables:
  """Reads the checkpoint file(s) at `paths` and converts them for `method` (`whole_model`: see
  `convert_state_dict`).

  Several files (a comma-separated string or a sequence) are one checkpoint split in parts, as
  DCFM's encoder and decoder files: their keys are merged and must not overlap. `setting`: the
  config field that named them (`init.torch_checkpoint`), which an error then names too: a
  message that names a file alone (a missing one, keys that do not fit) does not say where it
  was asked for.
  """
  try:
    return _read_and_convert(paths, method, fmt, allow_pickle, whole_model)
  except SetupError as error:
    if setting:
      error.add_note(f"(the checkpoint of {setting}={paths!r})")
    raise


def _read_and_convert(paths: str | Sequence[str], method: Method, fmt: str | None,
                      allow_pickle: bool, whole_model: bool) -> Variables:
  paths = [p for p in paths.split(",") if p] if isinstance(paths, str) else list(paths)
  paths = [os.path.expanduser(p) for p in paths]  # `--checkpoint=~/x.pth`: no shell expands it
  if whole_model:  # before reading what cannot be converted (a large file, SD-CPC's config)
    _whole_model_formats(method.config.method.name)
  state_dict: dict[str, Any] = {}
  for path in paths:
    part = load_state_dict(path, allow_pickle=allow_pickle)
    overlap = sorted(set(part) & set(state_dict))
    if overlap:
      raise CheckpointMismatchError(f"{path} repeats keys of an earlier file: {overlap[:5]}")
    state_dict.update(part)
  try:
    print(f"converting {', '.join(paths)}: {len(state_dict)} tensors, "
          f"{_read_by(state_dict, method, fmt)}", flush=True)
    return convert_state_dict(state_dict, method, fmt, whole_model=whole_model)
  except ValueError as e:  # CheckpointMismatchError included: say which file did not fit
    e.add_note(f"while converting {', '.join(paths)}")
    raise


def _merge(fresh: Any, converted: Any, path: str = "") -> Any:
  """`fresh` with every subtree that `converted` has replaced; shapes must agree leaf by leaf."""
  if not isinstance(converted, Mapping):
    if tuple(converted.shape) != tuple(fresh.shape):
      raise CheckpointMismatchError(
          f"{path}: converted shape {tuple(converted.shape)} != model shape {tuple(fresh.shape)}")
    return converted
  if not isinstance(fresh, Mapping) or set(converted) - set(fresh):
    raise CheckpointMismatchError(f"{path or '/'}: converted variables "
                                  f"{sorted(converted)} do not fit the model's")
  return {k: _merge(v, converted[k], f"{path}/{k}") if k in converted else v
          for k, v in fresh.items()}


def _left_out(fresh: Mapping[str, Any], converted: Mapping[str, Any], path: str) -> list[str]:
  """The paths of the largest subtrees of `fresh` that `converted` does not hold: DCFM's
  `params/encoder/decoder` beside the ImageNet `params/encoder/backbone`, not nothing because
  `params/encoder` is there."""
  left = []
  for key, tree in fresh.items():
    if key not in converted:
      left.append(f"{path}{key}")
    elif isinstance(tree, Mapping) and isinstance(converted[key], Mapping):
      left += _left_out(tree, converted[key], f"{path}{key}/")
  return left


def replaces_every_variable(state: TrainState, variables: Mapping[str, Any]) -> bool:
  """Whether `variables` replace every parameter and statistic of `state`: then
  `state_with_variables` never reads the state's values, and an abstract state (nothing
  initialised, nothing compiled) will do."""
  fresh = state.variables
  fresh_leaves = {id(leaf) for leaf in jax.tree.leaves(fresh)}
  return not any(id(leaf) in fresh_leaves for leaf in jax.tree.leaves(_merge(fresh, variables)))


def combined(*parts: Mapping[str, Any]) -> dict[str, Any]:
  """Variables of several sources (`{collection: {name: tree}}`: a method's `fixed_variables`, a
  PyTorch checkpoint's) as one, for a single `state_with_variables`, whose line of what kept its
  fresh initialisation then names only what none of them loaded (loaded one at a time, ETC's
  teacher, which comes from its own run, would be listed as fresh after the student's ImageNet
  weights)."""
  merged: dict[str, dict[str, Any]] = {}
  for part in parts:
    for collection, trees in part.items():
      merged.setdefault(collection, {}).update(trees)
  return merged


def state_with_variables(state: TrainState, variables: Mapping[str, Any],
                         tx: optax.GradientTransformation | None, sharding: Any, *,
                         report_kept: bool = True) -> TrainState:
  """`state` with the given (possibly partial) variables swapped in, step 0, a fresh optimizer
  state (none without `tx`: converted weights, which nothing trains from), and placed by
  `sharding`. `state` may be abstract if the variables replace all of it
  (`replaces_every_variable`). `report_kept` prints the parts the variables left fresh (weights
  meant to start the model: a backbone-only file); off where only a method's `fixed_variables`
  (ETC's teacher) are loaded, which never cover the trained model."""
  fresh = state.variables
  merged = _merge(fresh, variables)
  kept = sorted(path for c, tree in fresh.items()
                for path in _left_out(tree, variables.get(c, {}), f"{c}/"))
  if kept and report_kept:
    print(f"kept the fresh initialisation of {', '.join(kept)}", flush=True)
  params = merged.pop("params")
  new = TrainState(step=np.zeros((), np.int32), params=params, model_state=merged,
                   opt_state=None if tx is None else tx.init(params))
  if tx is None and sharding is not None:
    sharding = sharding.replace(opt_state=None)
  return jax.device_put(new, sharding)
