"""mmseg SegFormer converter and checkpoint reading.

No mmseg is installed, so the mmseg checkpoint is written here: the weights of a random HF
SegFormer renamed to the mmseg keys by a table written independently of both converters
(tests/convert/mmseg_names.py, packing HF's k/v into mmseg's single `kv` Linear), wrapped as mmcv
saves it and `torch.save`d. Converting it must give exactly the variables the HF converter gives
for the same weights, whose forward pass is proven equal to transformers' in tests/parity.
"""
import re
import struct
import types
import zipfile

import numpy as np
import pytest
import torch
from flax import traverse_util
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from tests.conftest import method_segformer
from tests.convert.mmseg_names import hf_to_mmseg
from vssjax.convert import torch_io
from vssjax.convert.common import CheckpointMismatchError
from vssjax.convert.hf_segformer import convert_hf_segformer
from vssjax.convert.mmseg_segformer import convert_mmseg_mit, convert_mmseg_segformer
from vssjax.errors import SetupError
from vssjax.models.mit import mit
from vssjax.train import init_from
from vssjax.train.init_from import detect_format

_DEPTHS = (1, 2, 1, 1)
_NUM_CLASSES = 7

@pytest.fixture(scope="module")
def hf_state():
  torch.manual_seed(0)
  config = SegformerConfig(hidden_sizes=[32, 64, 160, 256], num_attention_heads=[1, 2, 5, 8],
                           depths=list(_DEPTHS), decoder_hidden_size=64, num_labels=_NUM_CLASSES)
  model = SegformerForSemanticSegmentation(config)
  with torch.no_grad():  # distinct BN statistics, so swapping mean/var would show
    model.decode_head.batch_norm.running_mean.normal_()
    model.decode_head.batch_norm.running_var.uniform_(0.5, 1.5)
  return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def mmseg_state(hf_state):
  return hf_to_mmseg(hf_state)


def _model():
  return method_segformer("b0", _NUM_CLASSES, 64, depths=_DEPTHS)


def _flat(variables):
  return traverse_util.flatten_dict(variables, sep="/")


def test_key_table_produces_the_stock_mmseg_names(mmseg_state):
  # 6 keys per patch embed + stage norm, 20 per block with spatial reduction, 16 without; at the
  # stock depth 2 that is specs/dtern.md §10.1's 176 (24 + 6 * 20 + 2 * 16). Here depths (1,2,1,1).
  backbone = [k for k in mmseg_state if k.startswith("backbone.")]
  assert len(backbone) == 4 * 6 + 4 * 20 + 16
  assert "backbone.block2.1.attn.kv.weight" in mmseg_state
  assert "backbone.block4.0.attn.sr.weight" not in mmseg_state
  assert mmseg_state["decode_head.linear_fuse.conv.weight"].shape == (64, 256, 1, 1)


def test_mmcv_ddp_pth_converts_like_the_hf_checkpoint(hf_state, mmseg_state, tmp_path):
  path = tmp_path / "iter_160000.pth"
  wrapped = {f"module.{k}": torch.from_numpy(v) for k, v in mmseg_state.items()}
  torch.save({"meta": {"iter": 160000, "CLASSES": ("a", "b")}, "state_dict": wrapped,
              "optimizer": {"state": {}}}, path)
  loaded = torch_io.load_state_dict(path)
  assert sorted(loaded) == sorted(mmseg_state)
  assert detect_format(loaded) == "mmseg" and detect_format(hf_state) == "hf"

  from_mmseg = _flat(convert_mmseg_segformer(loaded, _model()))
  from_hf = _flat(convert_hf_segformer(hf_state, _model()))
  assert from_mmseg.keys() == from_hf.keys()
  for path_, value in from_mmseg.items():
    np.testing.assert_array_equal(value, from_hf[path_], err_msg=path_)
  # The packed kv is copied as is: its first C output rows are the keys.
  np.testing.assert_array_equal(
      from_mmseg["params/backbone/block2_1/attn/kv/kernel"][:, :64],
      hf_state["segformer.stages.1.blocks.1.attention.k_proj.weight"].T)
  np.testing.assert_array_equal(from_mmseg["batch_stats/decode_head/linear_fuse/bn/mean"],
                                hf_state["decode_head.batch_norm.running_mean"])


def test_mismatches_are_all_named(mmseg_state):
  broken = dict(mmseg_state)
  del broken["backbone.block2.1.mlp.fc1.bias"]
  broken["decode_head.linear_pred1.weight"] = np.zeros((7, 128, 1, 1), np.float32)
  broken["backbone.norm3.weight"] = np.zeros((161,), np.float32)
  with pytest.raises(CheckpointMismatchError) as info:
    convert_mmseg_segformer(broken, _model())
  message = str(info.value)
  assert "missing keys (1):\n  backbone.block2.1.mlp.fc1.bias" in message
  assert "unexpected keys (1):\n  decode_head.linear_pred1.weight" in message
  assert "backbone.norm3.weight: shape (161,) does not fit params/backbone/norm3/scale" in message


def test_a_head_of_another_width_names_model_decoder_dim(mmseg_state):
  with pytest.raises(CheckpointMismatchError, match=r"\nthe checkpoint's decode_head.linear_c1.proj"
                     r".weight is 64 wide, the config's model.decoder_dim is 256: pass "
                     r"--config.model.decoder_dim=64\n"):
    convert_mmseg_segformer(mmseg_state, method_segformer("b0", _NUM_CLASSES, 256, depths=_DEPTHS))


def test_another_class_count_is_said_in_a_line(mmseg_state, hf_state):
  """An ADE20K (150) or Cityscapes (19) model for a VSPW config (124) listed two mis-shaped keys,
  their shapes, and nothing that named the class count."""
  wanted = method_segformer("b0", 124, 64, depths=_DEPTHS)
  for convert, state, key in ((convert_mmseg_segformer, mmseg_state, "linear_pred"),
                              (convert_hf_segformer, hf_state, "classifier")):
    with pytest.raises(CheckpointMismatchError) as info:
      convert(state, wanted)
    assert str(info.value).splitlines()[:2] == [
        "checkpoint does not match the model (2 mis-shaped keys)",
        f"the checkpoint scores 7 classes (decode_head.{key}.weight), the config's "
        "data.num_classes is 124: a model of another dataset? (VSPW has 124 classes, Cityscapes "
        "19, CamVid 11, ADE20K 150)"]


def test_imagenet_mit_checkpoint_loads_into_the_backbone(mmseg_state):
  imagenet = {k[len("backbone."):]: v for k, v in mmseg_state.items() if k.startswith("backbone.")}
  imagenet["head.weight"] = np.zeros((1000, 256), np.float32)
  imagenet["head.bias"] = np.zeros((1000,), np.float32)
  params = _flat(convert_mmseg_mit(imagenet, mit("b0", depths=_DEPTHS)))
  assert len(params) == len(imagenet) - 2
  np.testing.assert_array_equal(params["params/patch_embed3/proj/kernel"],
                                imagenet["patch_embed3.proj.weight"].transpose(2, 3, 1, 0))


class _NotATensor:  # stands in for the arbitrary Python objects some mmcv `meta` entries hold
  pass


def test_pickled_objects_need_explicit_trust(mmseg_state, tmp_path):
  """Refused in one line naming the object and both switches (torch's own message is a dozen lines
  about allowlists); a whole pickled model, once trusted, gives its state_dict."""
  path = tmp_path / "with_objects.pth"
  torch.save({"meta": {"env": _NotATensor()}, "state_dict": {
      k: torch.from_numpy(v) for k, v in mmseg_state.items()}}, path)
  with pytest.raises(torch_io.CheckpointReadError) as info:
    torch_io.load_state_dict(path)
  assert str(info.value) == (
      f"{path}: holds pickled Python objects besides tensors (here "
      "tests.convert.test_mmseg_segformer._NotATensor; mmcv metadata, or a whole model saved "
      "instead of its state_dict), which a weights-only load refuses. If you trust the file, "
      "unpickle it fully, which executes code stored in it: --allow_pickle (python -m "
      "vssjax.convert) or --config.init.allow_pickle=True (training)")
  assert sorted(torch_io.load_state_dict(path, allow_pickle=True)) == sorted(mmseg_state)
  model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1))
  torch.save(model, tmp_path / "model.pth")
  with pytest.raises(torch_io.CheckpointReadError, match=r"\(here torch\.nn\.modules\.container"):
    torch_io.load_state_dict(tmp_path / "model.pth")
  torch.save({"model": model, "epoch": 3}, tmp_path / "wrapped_model.pth")
  for name in ("model.pth", "wrapped_model.pth"):
    loaded = torch_io.load_state_dict(tmp_path / name, allow_pickle=True)
    assert sorted(loaded) == ["0.bias", "0.weight"], name
    np.testing.assert_array_equal(loaded["0.bias"], model[0].bias.detach().numpy())


def test_damaged_and_misnamed_files_say_what_to_do(mmseg_state, tmp_path):
  """Cut short (an interrupted download), empty, or not safetensors: one line each, not a
  SafetensorError traceback, and a cut .pth not called 'not a PyTorch checkpoint'."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  torch.save({k: torch.from_numpy(v) for k, v in mmseg_state.items()}, tmp_path / "whole.pth")
  save_file(dict(mmseg_state), str(tmp_path / "whole.safetensors"))
  (tmp_path / "notes.safetensors").write_text("a text file")
  for name in ("pth", "safetensors"):
    data = (tmp_path / f"whole.{name}").read_bytes()
    (tmp_path / f"cut.{name}").write_bytes(data[:len(data) // 2])
    (tmp_path / f"empty.{name}").write_bytes(b"")
  expected = {
      "cut.pth": "a torch.save archive cut short or damaged (an interrupted download or copy?): "
                 "fetch it again",
      "empty.pth": "an empty file (0 bytes): an interrupted download or copy? fetch it again"}
  for name in ("cut.safetensors", "empty.safetensors", "notes.safetensors"):
    expected[name] = "not a readable .safetensors file (Error while deserializing header: "
  for name, message in expected.items():
    with pytest.raises(torch_io.CheckpointReadError) as info:
      torch_io.load_state_dict(tmp_path / name)
    assert str(info.value).startswith(f"{tmp_path / name}: {message}"), str(info.value)
    assert "\n" not in str(info.value)


def test_a_pth_whose_bytes_were_flipped_is_refused_not_converted(mmseg_state, tmp_path):
  """torch.load does not check the archive's CRCs: a flipped byte in a tensor converted into a
  wrong weight without a word."""
  path = tmp_path / "flipped.pth"
  torch.save({k: torch.from_numpy(v) for k, v in mmseg_state.items()}, path)
  with zipfile.ZipFile(path) as archive:
    largest = max(archive.infolist(), key=lambda info: info.file_size)
  data = bytearray(path.read_bytes())
  header = largest.header_offset
  name_length, extra_length = struct.unpack("<HH", data[header + 26:header + 30])
  data[header + 30 + name_length + extra_length + largest.file_size // 2] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(torch_io.CheckpointReadError) as info:
    torch_io.load_state_dict(path)
  assert str(info.value) == (
      f"{path}: its entry {largest.filename} does not match its checksum, the file is damaged (a "
      "disk or copy error?): fetch it again")


def test_bf16_files_and_bad_inputs(tmp_path):
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  bf16 = torch.tensor([1.5, -2.25], dtype=torch.bfloat16)
  save_file({"w": bf16}, str(tmp_path / "model.safetensors"))  # a save_pretrained directory
  torch.save({"w": bf16}, tmp_path / "bf16.pth")
  for path in (tmp_path, tmp_path / "bf16.pth"):
    loaded = torch_io.load_state_dict(path)["w"]
    assert loaded.dtype == np.float32 and loaded.tolist() == [1.5, -2.25], path
  with pytest.raises(torch_io.CheckpointReadError, match="no such file"):
    torch_io.load_state_dict(tmp_path / "absent.pth")
  torch.save({"state_dict": {"a": 3}}, tmp_path / "not_tensors.pth")
  with pytest.raises(torch_io.CheckpointReadError, match="entry 'a' is a int"):
    torch_io.load_state_dict(tmp_path / "not_tensors.pth")
  # Not a checkpoint at all: said so, without steering to allow_pickle (which executes code).
  (tmp_path / "notes.pth").write_text("a text file")
  for allow_pickle in (False, True):
    with pytest.raises(torch_io.CheckpointReadError) as info:
      torch_io.load_state_dict(tmp_path / "notes.pth", allow_pickle=allow_pickle)
    assert "notes.pth: not a PyTorch checkpoint" in str(info.value)
    assert "allow_pickle" not in str(info.value)


def test_imagenet_mit_weights_fill_the_backbone_with_or_without_the_mmseg_prefix(mmseg_state):
  """Backbone-only MiT files come bare (NVlabs `mit_b*.pth`) or under mmseg's `backbone.`: both
  must give the same backbone weights."""
  method = types.SimpleNamespace(module=_model())
  prefixed = {k: v for k, v in mmseg_state.items() if k.startswith("backbone.")}
  bare = {k[len("backbone."):]: v for k, v in prefixed.items()}
  from_prefixed = traverse_util.flatten_dict(init_from.convert_state_dict(prefixed, method))
  from_bare = traverse_util.flatten_dict(init_from.convert_state_dict(bare, method))
  assert from_prefixed.keys() == from_bare.keys() and len(from_bare) == len(bare)
  assert all(path[:2] == ("params", "backbone") for path in from_bare)
  for path, value in from_bare.items():
    np.testing.assert_array_equal(from_prefixed[path], value, err_msg="/".join(path))


def _mmseg_zoo_backbone(nvlabs_backbone: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """NVlabs MiT keys (bare) -> mmsegmentation's own naming, as its tools/model_converters/
  mit2mmseg.py rewrites them (`patch_embed{s}` -> `layers.{s-1}.0`, `proj` -> `projection`,
  `block{s}` -> `layers.{s-1}.1`, q + kv -> `attn.attn.in_proj_*`, `proj` -> `attn.attn.out_proj`,
  mlp fc1 / dwconv / fc2 -> `ffn.layers.0/1/4` (1x1 convs), `norm{s}` -> `layers.{s-1}.2`)."""
  out = {}
  for key, value in nvlabs_backbone.items():
    if ".attn.kv." in key:
      continue
    new = re.sub(r"^patch_embed(\d)\.", lambda m: f"layers.{int(m[1]) - 1}.0.", key)
    new = new.replace(".0.proj.", ".0.projection.")
    new = re.sub(r"^block(\d)\.", lambda m: f"layers.{int(m[1]) - 1}.1.", new)
    new = re.sub(r"^norm(\d)\.", lambda m: f"layers.{int(m[1]) - 1}.2.", new)
    if ".attn.q." in new:
      value = np.concatenate([value, nvlabs_backbone[key.replace(".q.", ".kv.")]])
      new = new.replace(".attn.q.", ".attn.attn.in_proj_")
    new = new.replace(".attn.proj.", ".attn.attn.out_proj.")
    for old, part in ((".mlp.fc1.", ".ffn.layers.0."), (".mlp.dwconv.dwconv.", ".ffn.layers.1."),
                      (".mlp.fc2.", ".ffn.layers.4.")):
      new = new.replace(old, part)
    out[new] = value
  return out


def test_mmseg_model_zoo_segformers_are_refused_by_name(mmseg_state):
  """mmsegmentation's own SegFormer (>= 0.20; the open-mmlab model zoo, mit2mmseg.py's ImageNet
  files) is a different model, not a renaming: its SegformerHead is a 1x1 ConvModule (BN + ReLU)
  per level, 256 channels for every variant. Its whole checkpoints were detected as 'mmseg' and
  failed with every key listed as missing or unexpected; its ImageNet MiT files as 'cannot tell
  the format'. Both now say what the file is and which weights to convert instead."""
  method = types.SimpleNamespace(module=_model(), config=types.SimpleNamespace(
      method=types.SimpleNamespace(name="segformer")))
  nvlabs = {k[len("backbone."):]: v for k, v in mmseg_state.items() if k.startswith("backbone.")}
  backbone = _mmseg_zoo_backbone(nvlabs)
  assert "layers.0.1.0.attn.attn.in_proj_weight" in backbone and "layers.3.2.weight" in backbone
  head = {f"decode_head.convs.{i}.{part}": np.zeros(4, np.float32)
          for i in range(4) for part in ("conv.weight", "bn.weight", "bn.bias")}
  head |= {"decode_head.fusion_conv.conv.weight": np.zeros(4, np.float32),
           "decode_head.conv_seg.weight": np.zeros(4, np.float32)}
  whole = {f"backbone.{k}": v for k, v in backbone.items()} | head
  for state, fmt in ((whole, None), (whole, "mmseg"), (backbone, None), (backbone, "mmseg")):
    with pytest.raises(SetupError, match=r"^mmsegmentation model-zoo SegFormer/MiT keys .*NVlabs "
                                         r"files .*nvidia/segformer-\*"):
      init_from.convert_state_dict(state, method, fmt)
  # NVlabs-named files still convert.
  assert detect_format(mmseg_state) == "mmseg"
  init_from.convert_state_dict(mmseg_state, method)
