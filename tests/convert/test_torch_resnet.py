"""ResNet / PSPNet converters against key manifests written from the specs.

The manifests are generated here from specs/dcfm.md §9 and specs/etc.md §3 (torch key names and
shapes), not from the converter's rules: DCFM's R-50 encoder file (354 entries under
`module.backbone.`), a full semseg/ETC PSPNet, and the torchvision / semseg ImageNet files. Full
depth, zero-filled arrays (the released weights are not available offline); the forward numerics
of converted weights are proven against torch in tests/parity/test_resnet_parity.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vssjax.convert.common import CheckpointMismatchError, abstract_variables, apply_rules
from vssjax.convert.torch_io import load_state_dict, strip_ddp_prefix
from vssjax.convert.torch_resnet import (
    convert_pspnet, convert_resnet_imagenet, ppm_rules, resnet_rules)
from vssjax.models.pspnet import pspnet
from vssjax.models.resnet import resnet
from vssjax.train.init_from import detect_format

_LAYERS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}
_EXAMPLE = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)


def _bn(prefix, channels):
  return {f"{prefix}.{n}": (channels,) for n in ("weight", "bias", "running_mean", "running_var")
          } | {f"{prefix}.num_batches_tracked": ()}


def _conv(prefix, out, inp, k, bias=False):
  return {f"{prefix}.weight": (out, inp, k, k)} | ({f"{prefix}.bias": (out,)} if bias else {})


def _stem_manifest(depth, pspnet_layout):
  """R-18: one 7x7 conv; R-50: the deep base 3->64->64->128 (`layer0.{0,1,3,4,6,7}`)."""
  if depth == 18:
    names = [("layer0.0", "layer0.1")] if pspnet_layout else [("conv1", "bn1")]
    convs = [(64, 3, 7)]
  else:
    names = ([("layer0.0", "layer0.1"), ("layer0.3", "layer0.4"), ("layer0.6", "layer0.7")]
             if pspnet_layout else [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")])
    convs = [(64, 3, 3), (64, 64, 3), (128, 64, 3)]
  keys = {}
  for (conv, bn), (out, inp, k) in zip(names, convs):
    keys |= _conv(conv, out, inp, k) | _bn(bn, out)
  return keys


def _layers_manifest(depth):
  """`layer{1..4}.{j}`: BasicBlock conv1/conv2 (R-18), Bottleneck conv1..3 (R-50), and
  `downsample.{0,1}` where the width or stride changes."""
  keys, inplanes = {}, 64 if depth == 18 else 128
  expansion = 1 if depth == 18 else 4
  for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), _LAYERS[depth]), start=1):
    for j in range(blocks):
      p = f"layer{i}.{j}"
      if depth == 18:
        keys |= _conv(f"{p}.conv1", planes, inplanes, 3) | _bn(f"{p}.bn1", planes)
        keys |= _conv(f"{p}.conv2", planes, planes, 3) | _bn(f"{p}.bn2", planes)
      else:
        keys |= _conv(f"{p}.conv1", planes, inplanes, 1) | _bn(f"{p}.bn1", planes)
        keys |= _conv(f"{p}.conv2", planes, planes, 3) | _bn(f"{p}.bn2", planes)
        keys |= _conv(f"{p}.conv3", planes * 4, planes, 1) | _bn(f"{p}.bn3", planes * 4)
      if j == 0 and (i > 1 or inplanes != planes * expansion):
        keys |= (_conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                 | _bn(f"{p}.downsample.1", planes * expansion))
      inplanes = planes * expansion
  return keys


def _ppm_manifest(in_dim):
  keys = {}
  for i in range(4):
    keys |= _conv(f"ppm.features.{i}.1", in_dim // 4, in_dim, 1)
    keys |= _bn(f"ppm.features.{i}.2", in_dim // 4)
  return keys


def _head_manifest(name, in_dim, hidden, classes):
  return (_conv(f"{name}.0", hidden, in_dim, 3) | _bn(f"{name}.1", hidden)
          | _conv(f"{name}.4", classes, hidden, 1, bias=True))


def _state_dict(manifest, prefix=""):
  return {prefix + key: np.zeros(shape, np.float32) for key, shape in manifest.items()}


def _dcfm_encoder_manifest():
  return _stem_manifest(50, True) | _layers_manifest(50) | _ppm_manifest(2048)


def test_dcfm_r50_encoder_manifest_has_354_entries_and_converts():
  """The encoder file of specs/dcfm.md §9 (backbone + PPM, no heads) onto a PSPNet's subtrees."""
  state = _state_dict(_dcfm_encoder_manifest(), "module.backbone.")
  assert len(state) == 354  # the spec's count for R-50
  state = strip_ddp_prefix(state)
  state["backbone.layer3.5.conv2.weight"] = np.ones((256, 256, 3, 3), np.float32)
  state["backbone.ppm.features.3.2.running_var"] = np.full((512,), 2.0, np.float32)
  model = pspnet(50, 19)
  expected = {path: spec for path, spec in abstract_variables(model, _EXAMPLE, train=False).items()
              if path.split("/")[1] in ("backbone", "ppm")}
  rules = (resnet_rules(model.backbone, "backbone", "backbone.")
           + ppm_rules(model.bins, "ppm", "backbone.ppm."))
  variables = traverse_util.flatten_dict(apply_rules(state, rules, expected), sep="/")
  assert variables.keys() == expected.keys()
  np.testing.assert_array_equal(variables["params/backbone/layer3_5/conv2/kernel"], 1.0)
  np.testing.assert_array_equal(variables["batch_stats/ppm/features_3/bn/var"], 2.0)


@pytest.mark.parametrize("depth, hidden", [(18, 256), (50, 512)])
def test_full_pspnet_manifest_converts(depth, hidden):
  c3, c4 = (256, 512) if depth == 18 else (1024, 2048)
  manifest = (_stem_manifest(depth, True) | _layers_manifest(depth) | _ppm_manifest(c4)
              | _head_manifest("cls", 2 * c4, hidden, 19) | _head_manifest("aux", c3, 256, 19))
  state = _state_dict(manifest)
  state["cls.4.bias"] = np.arange(19, dtype=np.float32)
  state["aux.0.weight"] = np.random.default_rng(0).standard_normal((256, c3, 3, 3)).astype(
      np.float32)
  variables = convert_pspnet(state, pspnet(depth, 19))
  np.testing.assert_array_equal(variables["params"]["cls"]["classifier"]["bias"], np.arange(19))
  np.testing.assert_array_equal(variables["params"]["aux"]["conv_bn"]["conv"]["kernel"],
                                state["aux.0.weight"].transpose(2, 3, 1, 0))


@pytest.mark.parametrize("depth", [18, 50])
def test_imagenet_files_convert_and_drop_fc(depth):
  """torchvision resnet18 / semseg resnet50_v2 names, with their 1000-way `fc`."""
  manifest = _stem_manifest(depth, False) | _layers_manifest(depth)
  manifest |= {"fc.weight": (1000, 512 if depth == 18 else 2048), "fc.bias": (1000,)}
  state = _state_dict(manifest)
  state["bn1.running_mean"] = np.full((64,), 3.0, np.float32)
  variables = convert_resnet_imagenet(state, resnet(depth))
  np.testing.assert_array_equal(variables["batch_stats"]["layer0"]["bn1"]["mean"], 3.0)
  assert sorted(variables["params"]) == sorted(
      ["layer0"] + [f"layer{i}_{j}" for i, n in enumerate(_LAYERS[depth], start=1)
                    for j in range(n)])


def test_an_etc_training_checkpoint_converts_its_student(tmp_path, capsys):
  """ETC's training scripts save {'epoch', 'state_dict', 'optimizer'} of DataParallel(FlowModel):
  the PSPNet under `module.student.`, holding its class-weighted loss's buffer, beside FlowNet2
  and the wrapper's own loss modules."""
  import torch  # pylint: disable=g-import-not-at-top
  plain = _state_dict(_stem_manifest(18, True) | _layers_manifest(18) | _ppm_manifest(512)
                      | _head_manifest("cls", 1024, 256, 19) | _head_manifest("aux", 256, 256, 19))
  plain["cls.4.bias"] = np.arange(19, dtype=np.float32)
  wrapped = {f"module.student.{k}": torch.from_numpy(v) for k, v in plain.items()}
  wrapped["module.student.criterion.criterion.weight"] = torch.full((19,), 0.9)
  wrapped["module.flownet.flownetc.conv1.0.weight"] = torch.zeros(64, 6, 7, 7)
  wrapped["module.criterion.ce.criterion.weight"] = torch.full((19,), 0.9)
  path = tmp_path / "train_epoch_200.pth"
  torch.save({"epoch": 200, "state_dict": wrapped,
              "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0]}]}}, path)

  state = load_state_dict(path)
  said = capsys.readouterr().out
  assert f"converting its student ({len(plain) + 1} tensors)" in said
  assert "leaving out criterion., flownet. (2 tensors)" in said
  assert detect_format(state) == "pspnet"
  model = pspnet(18, 19)
  converted = traverse_util.flatten_dict(convert_pspnet(state, model), sep="/")
  expected = traverse_util.flatten_dict(convert_pspnet(plain, model), sep="/")
  assert converted.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(converted[key], value, err_msg=key)


def test_mismatched_checkpoints_name_their_keys():
  manifest = (_stem_manifest(18, True) | _layers_manifest(18) | _ppm_manifest(512)
              | _head_manifest("cls", 1024, 256, 19) | _head_manifest("aux", 256, 256, 19))
  model = pspnet(18, 19)
  renamed = _state_dict(manifest)
  renamed["layer4.1.bn2.running_varx"] = renamed.pop("layer4.1.bn2.running_var")
  with pytest.raises(CheckpointMismatchError) as error:
    convert_pspnet(renamed, model)
  assert "missing keys (1):\n  layer4.1.bn2.running_var\n" in str(error.value)
  assert "unexpected keys (1):\n  layer4.1.bn2.running_varx" in str(error.value)

  wrong_classes = _state_dict(manifest) | _state_dict(_head_manifest("cls", 1024, 256, 21))
  with pytest.raises(CheckpointMismatchError, match=r"cls\.4\.weight: shape \(21, 256, 1, 1\)"):
    convert_pspnet(wrong_classes, model)

  with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(7\):\n  aux\.0\.weight"):
    convert_pspnet(_state_dict(manifest), pspnet(18, 19, aux=False))

  with pytest.raises(CheckpointMismatchError) as error:  # a plain-stem file for a deep-stem model
    convert_pspnet(_state_dict(manifest), pspnet(18, 19, stem="deep"))
  assert "\n  layer0.3.weight\n" in str(error.value)
  assert "layer0.0.weight: shape (64, 3, 7, 7) does not fit" in str(error.value)
