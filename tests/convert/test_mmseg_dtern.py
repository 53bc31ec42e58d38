"""DTERN release converter: the key manifest of specs/dtern.md §10/Appendix A converts, runs, and
wrong checkpoints fail naming their keys.

The manifest is generated from the spec's key list (not from the converter's rules), with the
torch shapes of a tiny model, since the released weights are not available offline: the head's
here, the MiT backbone's by tests/convert/manifests.py, which DCFM's converter tests share.
"""
import re

import numpy as np
import pytest
from flax import traverse_util

from tests.conftest import load_config
from tests.convert.manifests import bn, conv, linear, mit_backbone_manifest, norm
from vssjax.convert.common import CheckpointMismatchError
from vssjax.convert.mmseg_dtern import convert_mmseg_dtern
from vssjax.convert.mmseg_segformer import convert_mmseg_segformer
from vssjax.methods import get_method
from vssjax.methods.per_frame import frame_labels

def _ltem_manifest(prefix, e, k, kernels):
  keys = {f"{prefix}.sim_alpha": (1,), f"{prefix}.sim_beta": (1,), f"{prefix}.prompt1": (k,),
          f"{prefix}.top_down_transform1": (k, k), f"{prefix}.prompt2": (k,),
          f"{prefix}.top_down_transform2": (k, k)}
  keys |= norm(f"{prefix}.norm1", e) | norm(f"{prefix}.clustering.norm1", e)
  cam = f"{prefix}.clustering.cam"
  keys |= conv(f"{cam}.conv3_1.0", e, e, 1, 3, bias=False) | bn(f"{cam}.conv3_1.1", e)
  keys |= conv(f"{cam}.conv3_2.0", e, e, 3, 1, bias=False) | bn(f"{cam}.conv3_2.1", e)
  keys |= conv(f"{cam}.excite.0", e, 1, 1, 11, bias=True)
  keys |= conv(f"{cam}.excite.2", e, 1, 11, 1, bias=True)
  keys |= conv(f"{cam}.conv1_1.0", e, e, 1, bias=True)
  keys |= conv(f"{cam}.conv1_2.0", e, e, 1, bias=True)
  keys |= conv(f"{cam}.conv1_2.2", e, 1, 3, bias=True)
  for i, kernel in enumerate(kernels, start=1):
    keys |= conv(f"{cam}.conv2_{i}.0", e, 1, kernel, bias=True)
  keys |= conv(f"{cam}.conv2_5.0", e, e, 1, bias=True) | bn(f"{cam}.conv2_5.1", e)
  keys |= conv(f"{cam}.conv.0", e, e, 1, bias=True) | bn(f"{cam}.conv.1", e)
  keys |= conv(f"{prefix}.clustering.Clustering.0", k, e, 1, bias=False)
  for name in ("q", "k", "v", "proj"):
    keys |= linear(f"{prefix}.{name}", e, e)
  keys |= linear(f"{prefix}.mlp.fc1", 4 * e, e)
  keys |= conv(f"{prefix}.mlp.dwconv.dwconv", 4 * e, 1, 3, bias=True)
  return keys | linear(f"{prefix}.mlp.fc2", e, 4 * e)


def head_manifest(dims, e, k, nc, kernels, channels=128):
  """Appendix A: `decode_head.*` keys -> torch shapes."""
  h = "decode_head"
  keys = conv(f"{h}.conv_seg", nc, channels, 1, bias=True)
  for i, dim in enumerate(dims, start=1):
    keys |= linear(f"{h}.linear_c{i}.proj", e, dim)
  keys |= conv(f"{h}.linear_fuse.conv", e, 4 * e, 1, bias=False) | bn(f"{h}.linear_fuse.bn", e)
  keys |= conv(f"{h}.linear_pred", nc, e, 1, bias=True)
  keys |= conv(f"{h}.linear_pred1", nc, 2 * e, 1, bias=True)
  for i, dim in enumerate(dims[::-1]):
    keys |= conv(f"{h}.dtern.convs.{i}.conv", e, dim, 1, bias=False)
    keys |= bn(f"{h}.dtern.convs.{i}.bn", e)
  keys |= conv(f"{h}.dtern.fusion_conv.conv", e, 4 * e, 1, bias=False)
  keys |= bn(f"{h}.dtern.fusion_conv.bn", e)
  for layer in range(2):
    keys |= _ltem_manifest(f"{h}.dtern.cluster_blocks.{layer}", e, k, kernels)
  g = f"{h}.dtern.gtem"
  keys |= {f"{g}.FCC": (1, 1, nc, e), f"{g}.VCC": (1, nc, e)}
  keys |= linear(f"{g}.q", e, e) | linear(f"{g}.k", e, e)
  for name in ("key", "query", "value", "out"):
    keys |= conv(f"{g}.cross_attn.{name}_project.conv", e, e, 1, bias=False)
    keys |= bn(f"{g}.cross_attn.{name}_project.bn", e)
  return keys


def test_manifest_matches_the_spec_key_counts():
  """§10: 176 B0 backbone keys, 218 head keys; B1 widths and K = 200 shapes of Appendix A."""
  assert len(mit_backbone_manifest((32, 64, 160, 256), (2, 2, 2, 2))) == 176
  assert len(mit_backbone_manifest((64, 128, 320, 512), (3, 6, 40, 3))) == 1052
  head = head_manifest((64, 128, 320, 512), 256, 200, 124, (11, 9, 7, 5))
  assert len(head) == 218
  assert head["decode_head.dtern.convs.0.conv.weight"] == (256, 512, 1, 1)
  assert head["decode_head.dtern.cluster_blocks.1.clustering.cam.conv2_1.0.weight"] == (
      256, 1, 11, 11)


@pytest.fixture(scope="module")
def method():
  config = load_config("configs/dtern/vspw_mitb0.py", "quick")
  return get_method(config)


def _state_dict(method, num_clusters=None, num_classes=None):
  model, head = method.module, method.module.decode_head
  shapes = mit_backbone_manifest(model.backbone.embed_dims, model.backbone.depths)
  shapes |= head_manifest(model.backbone.embed_dims, head.embed_dim,
                          num_clusters or head.num_clusters, num_classes or head.num_classes,
                          head.kernels)
  rng = np.random.default_rng(0)
  return {k: rng.normal(size=s).astype(np.float32) if s else np.array(7)
          for k, s in shapes.items()}


_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
               "var": "running_var"}


def _source_key(path):
  """The torch key a Flax variable comes from, by the documented convention (`a.b.0.c` is
  `a/b_0/c`, torch's weight/running_* leaves) plus the two modules whose torch names nest deeper:
  the SegFormer head's `linear_c{i}.proj` and the Mix-FFN's `dwconv.dwconv`."""
  _, *modules, leaf = path.split("/")
  modules = [re.sub(r"_(\d+)$", r".\1", m) for m in modules]
  if re.fullmatch(r"linear_c\d", modules[-1]):
    modules.append("proj")
  elif modules[-2:] == ["mlp", "dwconv"]:
    modules.append("dwconv")
  return ".".join(modules + [_TORCH_LEAF.get(leaf, leaf)])


def _torch_layout(path, tensor):
  """Linear (out, in) -> Dense (in, out); Conv2d (out, in, kh, kw) -> (kh, kw, in, out)."""
  if not path.endswith("/kernel"):
    return tensor
  return tensor.T if tensor.ndim == 2 else tensor.transpose(2, 3, 1, 0)


def test_manifest_converts_completely_and_runs(method):
  state_dict = _state_dict(method)
  variables = convert_mmseg_dtern(state_dict, method.module)
  flat = traverse_util.flatten_dict(variables, sep="/")
  # Every variable is its own source tensor, not another of the same shape (e.g. an LTEM's q and k
  # swapped), and every saved tensor but `num_batches_tracked` is used exactly once.
  for path, value in flat.items():
    np.testing.assert_array_equal(value, _torch_layout(path, state_dict[_source_key(path)]),
                                  err_msg=path)
  assert sorted(map(_source_key, flat)) == sorted(
      k for k in state_dict if not k.endswith("num_batches_tracked"))
  # The converted variables run a clip end to end.
  frames = np.random.default_rng(1).integers(0, 256, (1, 4, 64, 64, 3), dtype=np.uint8)
  logits = method.clip_logits(variables, frames)
  labels = np.asarray(frame_labels(logits, input_hw=(64, 64), frame_hw=(64, 64)))
  assert labels.shape == (64, 64)
  assert labels.min() >= 0 and labels.max() < method.num_classes


def test_wrong_checkpoints_name_their_keys(method):
  with pytest.raises(CheckpointMismatchError, match=r"mis-shaped keys[\s\S]*top_down_transform1"):
    convert_mmseg_dtern(_state_dict(method, num_clusters=7), method.module)
  segformer_only = {k: v for k, v in _state_dict(method).items() if ".dtern." not in k}
  # A plain SegFormer's checkpoint: said first, then the first 10 of the 181 missing keys.
  with pytest.raises(CheckpointMismatchError) as info:
    convert_mmseg_dtern(segformer_only, method.module)
  lines = str(info.value).splitlines()
  assert lines[:3] == [
      "checkpoint does not match the model (181 missing keys)",
      "the checkpoint has no keys under decode_head.dtern: a checkpoint of another model or "
      "method than the config's?",
      "missing keys (181):"]
  assert lines[3] == "  decode_head.dtern.convs.0.conv.weight"
  assert lines[13:] == ["  ... and 171 more"]
  with pytest.raises(CheckpointMismatchError, match=r"\nthe checkpoint scores 150 classes "
                     r"\(decode_head\.linear_pred1\.weight\), the config's data\.num_classes "
                     rf"is {method.num_classes}: "):
    convert_mmseg_dtern(_state_dict(method, num_classes=150), method.module)
  # The other way round, a DTERN checkpoint for a SegFormer config: its temporal head was 183
  # unexpected keys, with no line saying what they are.
  segformer = get_method(load_config("configs/segformer/synthetic_mitb0.py", "quick"))
  with pytest.raises(CheckpointMismatchError) as info:
    convert_mmseg_segformer(_state_dict(method), segformer.module)
  assert ("\nthe checkpoint has keys under decode_head.linear_pred1, decode_head.dtern, of which "
          "the config's model reads nothing: a checkpoint of another model or method than the "
          "config's?\n") in str(info.value)
  extra = _state_dict(method) | {"auxiliary_head.conv_seg.weight": np.zeros((1,))}
  with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(1\)"):
    convert_mmseg_dtern(extra, method.module)
