"""HF SegFormer converter: both naming schemes consumed completely, mismatches named precisely."""
import jax
import numpy as np
import pytest
import torch
from flax import traverse_util
from safetensors.numpy import load_file
from transformers import (SegformerConfig, SegformerForImageClassification,
                          SegformerForSemanticSegmentation)

from tests.conftest import load_config, method_segformer
from vssjax.convert.common import CheckpointMismatchError
from vssjax.convert.hf_segformer import convert_hf_mit, convert_hf_segformer
from vssjax.methods import get_method
from vssjax.models.mit import mit
from vssjax.train.init_from import load_torch_variables
from vssjax.train.loop import batch_spec

# B0 widths with a short, uneven depth: cheap, and block indices differ per stage.
_DEPTHS = (1, 2, 1, 1)
_CONFIG = dict(hidden_sizes=[32, 64, 160, 256], num_attention_heads=[1, 2, 5, 8],
               depths=list(_DEPTHS), decoder_hidden_size=64, num_labels=7)


@pytest.fixture(scope="module")
def hf_model():
  torch.manual_seed(0)
  return SegformerForSemanticSegmentation(SegformerConfig(**_CONFIG)).eval()


@pytest.fixture(scope="module")
def new_names(hf_model):
  """transformers-5 module names, as `state_dict()` returns them."""
  return {k: v.numpy() for k, v in hf_model.state_dict().items()}


@pytest.fixture(scope="module")
def legacy_names(hf_model, tmp_path_factory):
  """The names transformers writes to files (`save_pretrained` reverts to the legacy scheme)."""
  directory = tmp_path_factory.mktemp("hf")
  hf_model.save_pretrained(directory)
  return load_file(str(directory / "model.safetensors"))


def _model():
  return method_segformer("b0", 7, 64, depths=_DEPTHS)


def _flat(variables):
  return traverse_util.flatten_dict(variables, sep="/")


def test_legacy_file_really_uses_legacy_names(legacy_names):
  assert "segformer.encoder.block.1.1.attention.self.query.weight" in legacy_names
  assert "decode_head.linear_c.3.proj.weight" in legacy_names
  assert not any(".stages." in k for k in legacy_names)


def test_both_naming_schemes_convert_to_identical_variables(new_names, legacy_names):
  from_new = _flat(convert_hf_segformer(new_names, _model()))
  from_legacy = _flat(convert_hf_segformer(legacy_names, _model()))
  assert from_new.keys() == from_legacy.keys()
  for path, value in from_new.items():
    np.testing.assert_array_equal(value, from_legacy[path], err_msg=path)
  # Spot-check layouts: Linear transposed, k/v packed, conv to HWIO, BN stats to batch_stats.
  attn = "segformer.stages.1.blocks.1.attention"
  np.testing.assert_array_equal(from_new["params/backbone/block2_1/attn/kv/kernel"],
                                np.concatenate([new_names[f"{attn}.k_proj.weight"],
                                                new_names[f"{attn}.v_proj.weight"]]).T)
  np.testing.assert_array_equal(
      from_new["params/backbone/block2_1/mlp/dwconv/kernel"][:, :, 0, 5],
      new_names["segformer.stages.1.blocks.1.mlp.dwconv.dwconv.weight"][5, 0])
  np.testing.assert_array_equal(from_new["batch_stats/decode_head/linear_fuse/bn/var"],
                                new_names["decode_head.batch_norm.running_var"])
  assert "batch_stats/decode_head/linear_fuse/bn/mean" in from_new


def test_mismatches_are_all_named(legacy_names):
  broken = dict(legacy_names)
  del broken["segformer.encoder.block.1.0.mlp.dense1.bias"]
  broken["decode_head.extra.weight"] = np.zeros(3, np.float32)
  broken["decode_head.classifier.weight"] = np.zeros((8, 64, 1, 1), np.float32)
  with pytest.raises(CheckpointMismatchError) as info:
    convert_hf_segformer(broken, _model())
  message = str(info.value)
  assert "missing keys (1)" in message
  # Missing keys can only be named in the transformers-5 scheme the rules are written in.
  assert "segformer.stages.1.blocks.0.mlp.fc1.bias" in message
  assert "unexpected keys (1)" in message and "decode_head.extra.weight" in message
  assert "mis-shaped keys (1)" in message
  assert "decode_head.classifier.weight: shape (8, 64, 1, 1)" in message


def test_checkpoint_deeper_than_model_is_rejected(new_names):
  with pytest.raises(CheckpointMismatchError, match=r"segformer\.stages\.1\.blocks\.1\."):
    convert_hf_segformer(new_names, method_segformer("b0", 7, 64, depths=(1, 1, 1, 1)))


def test_a_checkpoint_of_another_mit_size_says_which_first(legacy_names):
  """A B0-wide file for a B1 config was 200 missing and mis-shaped keys, and nothing else."""
  with pytest.raises(CheckpointMismatchError) as info:
    convert_hf_segformer(legacy_names, method_segformer("b1", 7, 64))
  assert str(info.value).splitlines()[1] == (
      "the checkpoint holds a MiT (embed_dims (32, 64, 160, 256), depths (1, 2, 1, 1)), the "
      "config's model.backbone is MiT-b1 (embed_dims (64, 128, 320, 512), depths (2, 2, 2, 2)): "
      "use the config of the checkpoint's size (or set model.backbone; its results are then not "
      "set against the config's published numbers)")


@pytest.mark.parametrize("names, key", [
    ("legacy_names", "decode_head.linear_c.0.proj.weight"),  # named as the file names it
    ("new_names", "decode_head.linear_projections.0.proj.weight")])
def test_a_head_of_another_width_names_model_decoder_dim(names, key, request):
  """SegFormer's 768-wide B2-B5 head against a 256-wide config was a dozen mis-shaped keys, which
  name no setting (docs/reproducing.md promises the field)."""
  with pytest.raises(CheckpointMismatchError) as info:
    convert_hf_segformer(request.getfixturevalue(names), method_segformer("b0", 7, 32,
                                                                          depths=_DEPTHS))
  assert str(info.value).splitlines()[1] == (
      f"the checkpoint's {key} is 64 wide, the config's model.decoder_dim is 32: pass "
      "--config.model.decoder_dim=64")


def test_imagenet_backbone_checkpoint_converts_without_classifier():
  classifier = SegformerForImageClassification(SegformerConfig(**{**_CONFIG, "num_labels": 3}))
  state = {k: v.numpy() for k, v in classifier.state_dict().items()}
  params = _flat(convert_hf_mit(state, mit("b0", depths=_DEPTHS)))
  assert all(path.startswith("params/") for path in params)
  np.testing.assert_array_equal(params["params/norm4/scale"],
                                state["segformer.stages.3.layer_norm.weight"])
  # One Flax variable per HF backbone tensor, except that each block's k/v pairs become one kv.
  backbone_keys = [k for k in state if k.startswith("segformer.")]
  assert len(params) == len(backbone_keys) - 2 * sum(_DEPTHS)


def test_the_released_cityscapes_b0_weights_fit_their_config(tmp_path):
  """HF's nvidia/segformer-b0-finetuned-cityscapes-512-1024 (the published 71.9 of
  configs/segformer/cityscapes_mitb0.py) is transformers' default SegFormer, MiT-B0 with a
  256-wide decoder, with 19 labels: saved as the hub stores it, it converts for that config and
  replaces every parameter and BatchNorm statistic of the method, shape for shape."""
  SegformerForSemanticSegmentation(SegformerConfig(num_labels=19)).save_pretrained(tmp_path)
  method = get_method(load_config("configs/segformer/cityscapes_mitb0.py"))
  spec = batch_spec(method.config)
  fresh = jax.eval_shape(lambda: method.init(
      jax.random.PRNGKey(0), {k: jax.numpy.zeros(s.shape, s.dtype) for k, s in spec.items()}))
  converted = load_torch_variables(str(tmp_path), method)
  assert {path: np.shape(value) for path, value in _flat(converted).items()} == {
      path: value.shape for path, value in _flat(fresh).items()}
