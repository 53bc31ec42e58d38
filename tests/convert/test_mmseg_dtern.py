"""DTERN release converter: the key manifest of specs/dtern.md §10/Appendix A converts, runs, and
wrong checkpoints fail naming their keys.

The manifest is generated here from the spec's key list (not from the converter's rules), with the
torch shapes of a tiny model, since the released weights are not available offline.
"""
import re

import numpy as np
import pytest
from flax import traverse_util

from tests.conftest import load_config
from vssjax.convert.common import CheckpointMismatchError
from vssjax.convert.mmseg_dtern import convert_mmseg_dtern
from vssjax.methods import get_method
from vssjax.methods.per_frame import frame_labels

_SR_RATIOS = (8, 4, 2, 1)


def _bn(prefix, channels):
  return {f"{prefix}.{n}": (channels,) for n in ("weight", "bias", "running_mean", "running_var")
          } | {f"{prefix}.num_batches_tracked": ()}


def _linear(prefix, out, inp):
  return {f"{prefix}.weight": (out, inp), f"{prefix}.bias": (out,)}


def _conv(prefix, out, inp, kh, kw=None, bias=True):
  shapes = {f"{prefix}.weight": (out, inp, kh, kw or kh)}
  return shapes | ({f"{prefix}.bias": (out,)} if bias else {})


def _norm(prefix, channels):
  return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,)}


def backbone_manifest(dims, depths):
  """§10.1: stock mmseg MiT keys -> torch shapes."""
  keys, previous = {}, 3
  for s, (dim, depth, sr) in enumerate(zip(dims, depths, _SR_RATIOS), start=1):
    keys |= _conv(f"backbone.patch_embed{s}.proj", dim, previous, 7 if s == 1 else 3)
    keys |= _norm(f"backbone.patch_embed{s}.norm", dim)
    for j in range(depth):
      b = f"backbone.block{s}.{j}"
      keys |= _norm(f"{b}.norm1", dim) | _linear(f"{b}.attn.q", dim, dim)
      keys |= _linear(f"{b}.attn.kv", 2 * dim, dim) | _linear(f"{b}.attn.proj", dim, dim)
      if sr > 1:
        keys |= _conv(f"{b}.attn.sr", dim, dim, sr) | _norm(f"{b}.attn.norm", dim)
      keys |= _norm(f"{b}.norm2", dim) | _linear(f"{b}.mlp.fc1", 4 * dim, dim)
      keys |= _conv(f"{b}.mlp.dwconv.dwconv", 4 * dim, 1, 3) | _linear(f"{b}.mlp.fc2", dim, 4 * dim)
    keys |= _norm(f"backbone.norm{s}", dim)
    previous = dim
  return keys


def _ltem_manifest(prefix, e, k, kernels):
  keys = {f"{prefix}.sim_alpha": (1,), f"{prefix}.sim_beta": (1,), f"{prefix}.prompt1": (k,),
          f"{prefix}.top_down_transform1": (k, k), f"{prefix}.prompt2": (k,),
          f"{prefix}.top_down_transform2": (k, k)}
  keys |= _norm(f"{prefix}.norm1", e) | _norm(f"{prefix}.clustering.norm1", e)
  cam = f"{prefix}.clustering.cam"
  keys |= _conv(f"{cam}.conv3_1.0", e, e, 1, 3, bias=False) | _bn(f"{cam}.conv3_1.1", e)
  keys |= _conv(f"{cam}.conv3_2.0", e, e, 3, 1, bias=False) | _bn(f"{cam}.conv3_2.1", e)
  keys |= _conv(f"{cam}.excite.0", e, 1, 1, 11) | _conv(f"{cam}.excite.2", e, 1, 11, 1)
  keys |= _conv(f"{cam}.conv1_1.0", e, e, 1) | _conv(f"{cam}.conv1_2.0", e, e, 1)
  keys |= _conv(f"{cam}.conv1_2.2", e, 1, 3)
  for i, kernel in enumerate(kernels, start=1):
    keys |= _conv(f"{cam}.conv2_{i}.0", e, 1, kernel)
  keys |= _conv(f"{cam}.conv2_5.0", e, e, 1) | _bn(f"{cam}.conv2_5.1", e)
  keys |= _conv(f"{cam}.conv.0", e, e, 1) | _bn(f"{cam}.conv.1", e)
  keys |= _conv(f"{prefix}.clustering.Clustering.0", k, e, 1, bias=False)
  for name in ("q", "k", "v", "proj"):
    keys |= _linear(f"{prefix}.{name}", e, e)
  keys |= _linear(f"{prefix}.mlp.fc1", 4 * e, e) | _conv(f"{prefix}.mlp.dwconv.dwconv", 4 * e, 1, 3)
  return keys | _linear(f"{prefix}.mlp.fc2", e, 4 * e)


def head_manifest(dims, e, k, nc, kernels, channels=128):
  """Appendix A: `decode_head.*` keys -> torch shapes."""
  h = "decode_head"
  keys = _conv(f"{h}.conv_seg", nc, channels, 1)
  for i, dim in enumerate(dims, start=1):
    keys |= _linear(f"{h}.linear_c{i}.proj", e, dim)
  keys |= _conv(f"{h}.linear_fuse.conv", e, 4 * e, 1, bias=False) | _bn(f"{h}.linear_fuse.bn", e)
  keys |= _conv(f"{h}.linear_pred", nc, e, 1) | _conv(f"{h}.linear_pred1", nc, 2 * e, 1)
  for i, dim in enumerate(dims[::-1]):
    keys |= _conv(f"{h}.dtern.convs.{i}.conv", e, dim, 1, bias=False)
    keys |= _bn(f"{h}.dtern.convs.{i}.bn", e)
  keys |= _conv(f"{h}.dtern.fusion_conv.conv", e, 4 * e, 1, bias=False)
  keys |= _bn(f"{h}.dtern.fusion_conv.bn", e)
  for layer in range(2):
    keys |= _ltem_manifest(f"{h}.dtern.cluster_blocks.{layer}", e, k, kernels)
  g = f"{h}.dtern.gtem"
  keys |= {f"{g}.FCC": (1, 1, nc, e), f"{g}.VCC": (1, nc, e)}
  keys |= _linear(f"{g}.q", e, e) | _linear(f"{g}.k", e, e)
  for name in ("key", "query", "value", "out"):
    keys |= _conv(f"{g}.cross_attn.{name}_project.conv", e, e, 1, bias=False)
    keys |= _bn(f"{g}.cross_attn.{name}_project.bn", e)
  return keys


def test_manifest_matches_the_spec_key_counts():
  """§10: 176 B0 backbone keys, 218 head keys; B1 widths and K = 200 shapes of Appendix A."""
  assert len(backbone_manifest((32, 64, 160, 256), (2, 2, 2, 2))) == 176
  assert len(backbone_manifest((64, 128, 320, 512), (3, 6, 40, 3))) == 1052
  head = head_manifest((64, 128, 320, 512), 256, 200, 124, (11, 9, 7, 5))
  assert len(head) == 218
  assert head["decode_head.dtern.convs.0.conv.weight"] == (256, 512, 1, 1)
  assert head["decode_head.dtern.cluster_blocks.1.clustering.cam.conv2_1.0.weight"] == (
      256, 1, 11, 11)


@pytest.fixture(scope="module")
def method():
  config = load_config("configs/dtern/vspw_mitb0.py", "quick")
  return get_method(config)


def _state_dict(method, num_clusters=None):
  model, head = method.module, method.module.decode_head
  shapes = backbone_manifest(model.backbone.embed_dims, model.backbone.depths)
  shapes |= head_manifest(model.backbone.embed_dims, head.embed_dim,
                          num_clusters or head.num_clusters, head.num_classes, head.kernels)
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
  with pytest.raises(CheckpointMismatchError,
                     match=r"missing keys \(181\)[\s\S]*decode_head\.dtern\.gtem\.FCC"):
    convert_mmseg_dtern(segformer_only, method.module)
  extra = _state_dict(method) | {"auxiliary_head.conv_seg.weight": np.zeros((1,))}
  with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(1\)"):
    convert_mmseg_dtern(extra, method.module)
