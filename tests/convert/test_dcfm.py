"""DCFM release converter: the encoder + decoder key trees of specs/dcfm.md §9 convert onto the
model (MiT with the VSPW head, ResNet-50 with the Cityscapes head), and an incomplete pair fails
naming the missing keys. Manifests come from the spec's key lists, not from the converter."""

import numpy as np
import pytest
from flax import traverse_util

from tests.conftest import load_config
from tests.convert.manifests import (bn, conv, linear, mit_backbone_manifest, ppm_manifest,
                                     resnet_layers_manifest, resnet_stem_manifest, zeros_state_dict)
from vssjax.convert.common import CheckpointMismatchError
from vssjax.convert.torch_io import strip_ddp_prefix
from vssjax.errors import SetupError
from vssjax.methods import get_method
from vssjax.train import init_from


def _mit_encoder(dims, depths, e=256):
  keys = {k.replace("backbone.", "backbone.encoder.", 1): v
          for k, v in mit_backbone_manifest(dims, depths).items()}
  for i, dim in enumerate(dims, start=1):
    keys |= linear(f"backbone.decoder.linear_c{i}.proj", e, dim)
  keys |= conv("backbone.decoder.linear_fuse.conv", e, 4 * e, 1, bias=False) | bn(
      "backbone.decoder.linear_fuse.bn", e)
  return keys | conv("backbone.decoder.conv_seg", 19, 128, 1, bias=True)  # unused leftover


def _decoder(d, c_in, classes, hidden, bottleneck_from=None):
  keys = conv("bot_aspp", d, bottleneck_from, 1, bias=False) if bottleneck_from else {}
  keys |= conv("ffm.convblk.conv", d, d + c_in // 2, 1, bias=True) | bn("ffm.convblk.norm", d)
  if hidden:
    return (keys | conv("final.0", d, d, 1, bias=False) | bn("final.1", d)
            | conv("final.4", classes, d, 1, bias=False))
  return keys | conv("final.1", classes, d, 1, bias=False)


def _checkpoint(manifest):
  """The release's DDP state_dict, zero tensors (as broadcast views: no memory)."""
  return {f"module.{k}": np.broadcast_to(np.float32(0), shape) for k, shape in manifest.items()}


def _convert(config, manifest):
  method = get_method(config)
  state = strip_ddp_prefix(_checkpoint(manifest))
  assert init_from.detect_format(state) == "dcfm" and not init_from.is_backbone_only(state)
  variables = init_from.convert_state_dict(state, method)
  return traverse_util.flatten_dict(variables, sep="/")


def test_vspw_mitb2_release_converts():
  encoder = _mit_encoder((64, 128, 320, 512), (3, 4, 6, 3))
  assert len(encoder) == 348  # the spec's count of the B2 encoder file
  variables = _convert(load_config("configs/dcfm/vspw_mitb2.py"),
                       encoder | _decoder(256, 64, 124, hidden=False))
  params = sum(v.size for k, v in variables.items() if k.startswith("params/"))
  assert params == 24_828_352  # every parameter of the 24.8M model came from the checkpoint
  assert variables["params/final/cls/kernel"].shape == (1, 1, 256, 124)
  assert variables["batch_stats/ffm/norm/var"].shape == (256,)
  with pytest.raises(CheckpointMismatchError, match=r"\nthe checkpoint scores 19 classes "
                     r"\(final\.1\.weight\), the config's data\.num_classes is 124: "):
    _convert(load_config("configs/dcfm/vspw_mitb2.py"),
             encoder | _decoder(256, 64, 19, hidden=False))


def test_cityscapes_r50_release_converts_and_half_a_pair_fails():
  encoder = {f"backbone.{k}": v for k, v in (resnet_stem_manifest(50, True)
                                             | resnet_layers_manifest(50)
                                             | ppm_manifest(2048)).items()}
  decoder = _decoder(1280, 256, 19, hidden=True, bottleneck_from=4096)
  config = load_config("configs/dcfm/cityscapes_r50.py")
  variables = _convert(config, encoder | decoder)
  assert variables["params/bot_aspp/kernel"].shape == (1, 1, 4096, 1280)
  assert variables["params/ffm/conv/kernel"].shape == (1, 1, 1280 + 128, 1280)
  assert variables["batch_stats/final/bn/mean"].shape == (1280,)
  with pytest.raises(CheckpointMismatchError, match=r"ffm\.convblk\.conv\.weight"):
    _convert(config, encoder | {"ffm.convblk.conv.bias": (1280,)})  # decoder file missing


def test_imagenet_mit_weights_go_into_the_encoder_backbone():
  config = load_config("configs/dcfm/synthetic_mitb0.py", "quick")
  manifest = {k[len("backbone."):]: v for k, v in
              mit_backbone_manifest((8, 16, 24, 32), (1, 1, 1, 1)).items()}
  state = {k: np.ones(shape, np.float32) for k, shape in manifest.items()}
  state["head.weight"] = np.ones((1000, 32), np.float32)  # the ImageNet classifier, dropped
  assert init_from.is_backbone_only(state)
  variables = init_from.convert_state_dict(state, get_method(config))
  assert list(variables["params"]) == ["encoder"]
  assert list(variables["params"]["encoder"]) == ["backbone"]
  np.testing.assert_array_equal(
      variables["params"]["encoder"]["backbone"]["patch_embed1"]["proj"]["kernel"], 1.0)


@pytest.mark.parametrize("alone, missing", [
    (_mit_encoder((8, 16, 24, 32), (1, 1, 1, 1)), "encoder file without its decoder"),
    (_decoder(16, 8, 9, hidden=False), "decoder file without its encoder")],
                         ids=["encoder", "decoder"])
def test_either_file_alone_asks_for_both_files(alone, missing):
  """The encoder file has no head keys, so it read as ImageNet backbone weights 'in format
  dcfm'; the decoder file listed every encoder key as missing (about 180 lines)."""
  method = get_method(load_config("configs/dcfm/synthetic_mitb0.py", "quick"))
  with pytest.raises(SetupError, match=rf"^DCFM's {missing} file \(DCFM's release is two files: "
                                       r"--checkpoint=encoder\.pth,"):
    init_from.convert_state_dict(strip_ddp_prefix(_checkpoint(alone)), method)


def test_a_resnet_encoder_file_alone_asks_for_both_files():
  """Its keys (semseg's PSPNet under `backbone.`) read as format 'mmseg' ImageNet weights, whose
  conversion then failed with an AttributeError."""
  encoder = zeros_state_dict({f"backbone.{k}": v for k, v in (
      resnet_stem_manifest(18, True) | resnet_layers_manifest(18) | ppm_manifest(512)).items()})
  assert init_from.detect_format(encoder) == "dcfm"
  method = get_method(load_config("configs/dcfm/cityscapes_r18.py", "quick"))
  with pytest.raises(SetupError, match=r"^DCFM's encoder file without its decoder file"):
    init_from.convert_state_dict(encoder, method)
