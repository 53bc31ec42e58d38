"""Weight import: whole semseg / ETC PSPNet files are format 'pspnet', not backbones; how converted
variables are swapped into a fresh state. (ImageNet MiT files with or without mmseg's prefix:
tests/convert/test_mmseg_segformer.py.)"""

import jax
import numpy as np
import optax
import pytest
import torch
from flax import traverse_util

from tests.conftest import load_config
from tests.convert.manifests import (ppm_manifest, pspnet_head_manifest, resnet_layers_manifest,
                                     resnet_stem_manifest, zeros_state_dict)
from vssjax.convert.common import CheckpointMismatchError, abstract_variables
from vssjax.errors import SetupError
from vssjax.methods import get_method
from vssjax.train import init_from
from vssjax.train.state import TrainState


def test_whole_pspnet_checkpoints_convert_for_etc():
  """The release's PSPNet-18 layout (`layer0.`, `ppm.`, `cls.`, `aux.`) onto the ETC student."""
  state = zeros_state_dict(resnet_stem_manifest(18, True) | resnet_layers_manifest(18)
                           | ppm_manifest(512) | pspnet_head_manifest("cls", 1024, 256, 19)
                           | pspnet_head_manifest("aux", 256, 256, 19))
  state["cls.4.bias"] = np.arange(19, dtype=np.float32)
  assert init_from.detect_format(state) == "pspnet"
  assert not init_from.is_backbone_only(state)
  method = get_method(load_config("configs/etc/cityscapes_psp18_baseline.py"))
  variables = init_from.convert_state_dict(state, method)
  np.testing.assert_array_equal(variables["params"]["cls"]["classifier"]["bias"], np.arange(19))
  expected = abstract_variables(method.module, jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32),
                                train=False)
  assert traverse_util.flatten_dict(variables, sep="/").keys() == expected.keys()


def test_imagenet_resnets_stay_backbone_files():
  state = zeros_state_dict(resnet_stem_manifest(18, False) | resnet_layers_manifest(18)
                           | {"fc.weight": (1000, 512), "fc.bias": (1000,)})
  assert init_from.detect_format(state) == "resnet"
  assert init_from.is_backbone_only(state)


@pytest.mark.parametrize("config_path", ["configs/etc/cityscapes_psp18_baseline.py",
                                         "configs/etc/camvid_mobilenet.py"])
def test_backbone_files_of_another_family_are_refused_naming_both(config_path):
  """MiT weights for a ResNet or MobileNetV2 config (or the reverse) failed in the converter with
  an AttributeError."""
  mit = {f"patch_embed1.{k}": v for k, v in {"proj.weight": (32, 3, 7, 7)}.items()}
  method = get_method(load_config(config_path))
  with pytest.raises(SetupError, match=r"^MixTransformer weights \(format 'mmseg'\) for a "
                                       r"(ResNet|MobileNetV2) backbone \(model.backbone="):
    init_from.convert_state_dict(zeros_state_dict(mit), method)
  resnet = zeros_state_dict(resnet_stem_manifest(18, False) | resnet_layers_manifest(18))
  segformer = get_method(load_config("configs/segformer/synthetic_mitb0.py", "quick"))
  with pytest.raises(SetupError, match=r"^ResNet weights \(format 'resnet'\) for a "
                                       r"MixTransformer backbone \(model.backbone='b0'\)"):
    init_from.convert_state_dict(resnet, segformer)


def test_backbone_files_are_refused_where_a_whole_model_is_needed():
  """`python -m vssjax.convert` of ImageNet weights saved a workdir whose head was untrained and
  told to evaluate it; training from them is what they are for."""
  state = zeros_state_dict(resnet_stem_manifest(18, False) | resnet_layers_manifest(18))
  method = get_method(load_config("configs/etc/cityscapes_psp18_baseline.py"))
  assert list(init_from.convert_state_dict(state, method)) == ["params", "batch_stats"]
  with pytest.raises(SetupError, match=r"^backbone weights only \(an ImageNet classification "
                                       r"checkpoint\?\), no segmentation head: .* Start a training "
                                       r"run from them "
                                       r"\(--config\.init\.torch_checkpoint=\.\.\.\)"):
    init_from.convert_state_dict(state, method, whole_model=True)


def test_a_checkpoint_that_does_not_convert_names_its_file(tmp_path):
  path = tmp_path / "mystery.pth"
  torch.save({"unknown.weight": torch.zeros(2)}, path)
  method = get_method(load_config("configs/etc/cityscapes_psp18_baseline.py"))
  with pytest.raises(ValueError, match="cannot tell the checkpoint format") as raised:
    init_from.load_torch_variables(str(path), method)
  assert f"while converting {path}" in raised.value.__notes__


def test_a_checkpoint_of_another_method_names_the_formats_that_fit():
  """A full SegFormer file (format hf) given to DCFM, e.g. one file of its two-file release
  forgotten: the error names what DCFM converts from and how its release is passed."""
  segformer_file = {"segformer.encoder.patch_embeddings.0.proj.weight": np.zeros((8, 3, 7, 7)),
                    "decode_head.classifier.weight": np.zeros((9, 32, 1, 1))}
  method = get_method(load_config("configs/dcfm/synthetic_mitb0.py", "quick"))
  with pytest.raises(SetupError, match=r"format 'hf', but method 'dcfm' converts from \['dcfm'\] "
                                       r"\(DCFM's release is two files: --checkpoint=encoder\.pth,"
                                       r"decoder\.pth\): is it the right file, or the right "
                                       r"config\?$"):
    init_from.convert_state_dict(segformer_file, method)


def test_a_method_without_released_weights_says_so():
  """SD-CPC's code and weights are not public: 'converts from none' left the user guessing."""
  segformer_file = {"segformer.encoder.patch_embeddings.0.proj.weight": np.zeros((8, 3, 7, 7)),
                    "decode_head.classifier.weight": np.zeros((9, 32, 1, 1))}
  method = get_method(load_config("configs/sdcpc/synthetic_mitb0.py", "quick"))
  with pytest.raises(SetupError, match=r"^method 'sdcpc' has no converter: no weights of it were "
                                       r"released\. Train it \(--mode=train\)"):
    init_from.convert_state_dict(segformer_file, method)
  with pytest.raises(SetupError, match=r"^method 'sdcpc' has no converter"):  # before reading it
    init_from.load_torch_variables("/nowhere/weights.pth", method, whole_model=True)


def test_a_format_given_against_the_keys_is_named_with_the_mismatch():
  """--format=mmseg for an HF file: the mismatch's hundreds of keys, and which format the keys
  are in."""
  hf_file = {"segformer.encoder.patch_embeddings.0.proj.weight": np.zeros((8, 3, 7, 7)),
             "decode_head.classifier.weight": np.zeros((9, 32, 1, 1))}
  method = get_method(load_config("configs/segformer/synthetic_mitb0.py", "quick"))
  with pytest.raises(CheckpointMismatchError, match="no keys under backbone.patch_embed1") as info:
    init_from.convert_state_dict(hf_file, method, "mmseg")
  assert info.value.__notes__ == [
      "(its keys look like format 'hf', not the 'mmseg' given: --format=hf, or leave --format "
      "out)"]


def test_converted_variables_replace_theirs_only_and_must_all_fit_the_model(capsys):
  """Backbone weights replace the backbone and leave the head fresh; a converted subtree the model
  lacks (a misnamed module) is an error, never silently dropped with its part left fresh."""
  params = {"backbone": {"w": np.zeros((2, 3), np.float32)},
            "head": {"b": np.zeros(3, np.float32)}}
  tx = optax.sgd(0.1)
  state = TrainState(step=np.array(7, np.int32), params=params, model_state={},
                     opt_state=tx.init(params))
  backbone = {"w": np.ones((2, 3), np.float32)}
  merged = init_from.state_with_variables(state, {"params": {"backbone": backbone}}, tx, None)
  assert "kept the fresh initialisation of params/head" in capsys.readouterr().out
  np.testing.assert_array_equal(merged.params["backbone"]["w"], backbone["w"])
  np.testing.assert_array_equal(merged.params["head"]["b"], params["head"]["b"])
  assert int(merged.step) == 0
  misnamed = {"params": {"backbone": backbone, "decode_head": {"b": np.ones(3, np.float32)}}}
  with pytest.raises(CheckpointMismatchError,
                     match=r"/params: converted variables \['backbone', 'decode_head'\] do not"):
    init_from.state_with_variables(state, misnamed, tx, None)


def test_a_nested_part_left_fresh_is_named(capsys):
  """DCFM's ImageNet MiT weights fill params/encoder/backbone: the encoder's decoder beside it
  kept its fresh initialisation, and the line named only params/ffm and params/final."""
  zeros = lambda: {"w": np.zeros(2, np.float32)}
  params = {"encoder": {"backbone": zeros(), "decoder": zeros()}, "ffm": zeros()}
  tx = optax.sgd(0.1)
  state = TrainState(step=np.array(0, np.int32), params=params,
                     model_state={"batch_stats": {"encoder": {"decoder": zeros()}}},
                     opt_state=tx.init(params))
  weights = {"params": {"encoder": {"backbone": {"w": np.ones(2, np.float32)}}}}
  init_from.state_with_variables(state, weights, tx, None)
  assert capsys.readouterr().out == ("kept the fresh initialisation of batch_stats/encoder, "
                                     "params/encoder/decoder, params/ffm\n")


def test_fixed_variables_do_not_report_the_trained_model_as_kept_fresh(capsys):
  """ETC's teacher (a method's `fixed_variables`) covers none of the trained model: saying that
  the student 'kept the fresh initialisation' read as if the teacher had not loaded."""
  params = {"student": {"w": np.zeros(2, np.float32)}}
  tx = optax.sgd(0.1)
  state = TrainState(step=np.array(0, np.int32), params=params,
                     model_state={"teacher": {"w": np.zeros(2, np.float32)}},
                     opt_state=tx.init(params))
  teacher = {"teacher": {"w": np.ones(2, np.float32)}}
  merged = init_from.state_with_variables(state, teacher, tx, None, report_kept=False)
  np.testing.assert_array_equal(merged.model_state["teacher"]["w"], teacher["teacher"]["w"])
  assert "kept the fresh" not in capsys.readouterr().out


def test_fixed_variables_and_weights_load_as_one_and_report_only_what_neither_loaded(capsys):
  """ETC's teacher (`fixed_variables`) with the student's ImageNet backbone weights: the line of
  what kept its fresh initialisation names the student's head, not the teacher (loaded)."""
  params = {"backbone": {"w": np.zeros(2, np.float32)}, "head": {"w": np.zeros(2, np.float32)}}
  tx = optax.sgd(0.1)
  state = TrainState(step=np.array(0, np.int32), params=params,
                     model_state={"teacher": {"net": {"w": np.zeros(2, np.float32)}}},
                     opt_state=tx.init(params))
  fixed = {"teacher": {"net": {"w": np.ones(2, np.float32)}}}
  weights = {"params": {"backbone": {"w": np.full(2, 2, np.float32)}}}
  loaded = init_from.combined(fixed, weights)
  merged = init_from.state_with_variables(state, loaded, tx, None, report_kept=True)
  assert "kept the fresh initialisation of params/head\n" in capsys.readouterr().out
  np.testing.assert_array_equal(merged.model_state["teacher"]["net"]["w"], 1.0)
  np.testing.assert_array_equal(merged.params["backbone"]["w"], 2.0)
