"""Key -> shape manifests of the released PyTorch checkpoints' layers, for the converter tests.

The released weights are not available offline, so the converter tests build their state_dicts
from manifests written here from the specs' key lists and torch's layer shapes (specs/dtern.md
§10.1 for the MiT, specs/dcfm.md §9 and specs/etc.md §3 for ResNet / PSPNet), never from the
converters' rules: a converter that disagrees with a spec then fails. Shapes are torch's (Linear
(out, in), Conv2d (out, in, kh, kw)); `()` is a scalar such as BN's `num_batches_tracked`.
"""
import numpy as np

MIT_SR_RATIOS = (8, 4, 2, 1)
RESNET_LAYERS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}  # blocks per layer{1..4}


def bn(prefix, channels):
  """`nn.BatchNorm2d`: affine weights, running statistics and `num_batches_tracked`."""
  return {f"{prefix}.{n}": (channels,) for n in ("weight", "bias", "running_mean", "running_var")
          } | {f"{prefix}.num_batches_tracked": ()}


def linear(prefix, out, inp):
  return {f"{prefix}.weight": (out, inp), f"{prefix}.bias": (out,)}


def conv(prefix, out, inp, kh, kw=None, *, bias):
  """`nn.Conv2d` with a kh x kw (square if `kw` is None) kernel. `bias` is always said: convs
  before a BN have none, the others have one, and a wrong guess would be a wrong manifest."""
  shapes = {f"{prefix}.weight": (out, inp, kh, kw or kh)}
  return shapes | ({f"{prefix}.bias": (out,)} if bias else {})


def norm(prefix, channels):
  """`nn.LayerNorm`."""
  return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,)}


def mit_backbone_manifest(dims, depths):
  """specs/dtern.md §10.1: stock mmseg MiT keys (under `backbone.`) -> torch shapes."""
  keys, previous = {}, 3
  for s, (dim, depth, sr) in enumerate(zip(dims, depths, MIT_SR_RATIOS), start=1):
    keys |= conv(f"backbone.patch_embed{s}.proj", dim, previous, 7 if s == 1 else 3, bias=True)
    keys |= norm(f"backbone.patch_embed{s}.norm", dim)
    for j in range(depth):
      b = f"backbone.block{s}.{j}"
      keys |= norm(f"{b}.norm1", dim) | linear(f"{b}.attn.q", dim, dim)
      keys |= linear(f"{b}.attn.kv", 2 * dim, dim) | linear(f"{b}.attn.proj", dim, dim)
      if sr > 1:
        keys |= conv(f"{b}.attn.sr", dim, dim, sr, bias=True) | norm(f"{b}.attn.norm", dim)
      keys |= norm(f"{b}.norm2", dim) | linear(f"{b}.mlp.fc1", 4 * dim, dim)
      keys |= conv(f"{b}.mlp.dwconv.dwconv", 4 * dim, 1, 3, bias=True)
      keys |= linear(f"{b}.mlp.fc2", dim, 4 * dim)
    keys |= norm(f"backbone.norm{s}", dim)
    previous = dim
  return keys


def resnet_stem_manifest(depth, pspnet_layout):
  """R-18: one 7x7 conv; R-50: the deep base 3->64->64->128. Named `layer0.{0,1,3,4,6,7}` in
  PSPNet's layout, `conv{1,2,3}` / `bn{1,2,3}` in the ImageNet files."""
  if depth == 18:
    names = [("layer0.0", "layer0.1")] if pspnet_layout else [("conv1", "bn1")]
    convs = [(64, 3, 7)]
  else:
    names = ([("layer0.0", "layer0.1"), ("layer0.3", "layer0.4"), ("layer0.6", "layer0.7")]
             if pspnet_layout else [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")])
    convs = [(64, 3, 3), (64, 64, 3), (128, 64, 3)]
  keys = {}
  for (conv_name, bn_name), (out, inp, k) in zip(names, convs):
    keys |= conv(conv_name, out, inp, k, bias=False) | bn(bn_name, out)
  return keys


def resnet_layers_manifest(depth):
  """`layer{1..4}.{j}`: BasicBlock conv1/conv2 (R-18), Bottleneck conv1..3 (R-50), and
  `downsample.{0,1}` where the width or stride changes."""
  keys, inplanes = {}, 64 if depth == 18 else 128
  expansion = 1 if depth == 18 else 4
  for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), RESNET_LAYERS[depth]), start=1):
    for j in range(blocks):
      p = f"layer{i}.{j}"
      if depth == 18:
        keys |= conv(f"{p}.conv1", planes, inplanes, 3, bias=False) | bn(f"{p}.bn1", planes)
        keys |= conv(f"{p}.conv2", planes, planes, 3, bias=False) | bn(f"{p}.bn2", planes)
      else:
        keys |= conv(f"{p}.conv1", planes, inplanes, 1, bias=False) | bn(f"{p}.bn1", planes)
        keys |= conv(f"{p}.conv2", planes, planes, 3, bias=False) | bn(f"{p}.bn2", planes)
        keys |= (conv(f"{p}.conv3", planes * 4, planes, 1, bias=False)
                 | bn(f"{p}.bn3", planes * 4))
      if j == 0 and (i > 1 or inplanes != planes * expansion):
        keys |= (conv(f"{p}.downsample.0", planes * expansion, inplanes, 1, bias=False)
                 | bn(f"{p}.downsample.1", planes * expansion))
      inplanes = planes * expansion
  return keys


def ppm_manifest(in_dim):
  """PSPNet's pyramid pooling: `ppm.features.{i}` = (pool, 1x1 conv, BN, ReLU) for 4 bins."""
  keys = {}
  for i in range(4):
    keys |= conv(f"ppm.features.{i}.1", in_dim // 4, in_dim, 1, bias=False)
    keys |= bn(f"ppm.features.{i}.2", in_dim // 4)
  return keys


def pspnet_head_manifest(name, in_dim, hidden, classes):
  """PSPNet's `cls` / `aux` head: 3x3 conv, BN, (ReLU, dropout), 1x1 classifier with a bias."""
  return (conv(f"{name}.0", hidden, in_dim, 3, bias=False) | bn(f"{name}.1", hidden)
          | conv(f"{name}.4", classes, hidden, 1, bias=True))


def zeros_state_dict(manifest, prefix=""):
  """A state_dict of float32 zeros with the manifest's keys (under `prefix`) and shapes."""
  return {prefix + key: np.zeros(shape, np.float32) for key, shape in manifest.items()}
