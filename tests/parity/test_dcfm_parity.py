"""DCFM, written in PyTorch from specs/dcfm.md alone, vs vssjax's DCFM through its converter.

The reference below is built from the spec's architecture sections (§1 backbone split, common
feature and d; §1.3 Norm; §2.1 FFM; §2.2 head; §3 inference eqs. 1-7) with the module tree that
gives the state_dict keys of §9: an encoder file (`backbone.encoder.*` MiT + `backbone.decoder.*`
SegFormer MLP decoder with its unused `conv_seg`, or `backbone.layer{0..4}` + `backbone.ppm`) and a
decoder file (`bot_aspp`, `ffm.convblk.{conv,norm}`, `final.*`), each saved as DDP's
`module.`-prefixed state_dict with `torch.save`. Nothing here comes from the DCFM release's code
or from vssjax's model: the MiT is the spec's (§9 key list, §10 eps / GELU / attention / padding
notes; its Mix-FFN order fc1 -> dwconv -> GELU -> fc2 and pre-norm residual blocks are SegFormer's,
which the spec names), the dilated ResNet-18 + PPM follows §1.2.

vssjax loads both files with `init_from.load_torch_variables` for a `DCFMMethod` built from the
repo's DCFM configs (MiT-B0 at its real widths, E = d = 256; ResNet-18 with d = 320), and is run
through the method's public inference pieces (`encode_keyframe`, `encode_shallow`,
`fused_logits`), its module's key-mode `__call__`, and its `DCFMPredictor` over a 3-frame video.
Compared in eval mode at float32 with 'highest' matmul precision:
- the raw shallow feature F_in (MiT: after patch_embed1 + block1[0], before norm1; R-18: layer1);
- keyframe logits in the inference order (N(F_in) then resize, video_test.py), and on R-18 also
  in the training order (resize then N, decoder.py; the module's `__call__`), where the two differ
  and each side must use the same one on the same path (spec §2.1 step 1, §11.13); on MiT both
  maps are at 1/4 and the orders agree exactly;
- P-mode non-key logits (shallow prefix of x_t fused with the cached previous keyframe);
- B-mode non-key logits, the sum of the per-keyframe logits (eq. 7);
- the predictor's label maps (B and P schedules) against the reference's argmax of logits
  upsampled to the frame and, for B, summed after upsampling as the release does, wherever the
  reference's top-2 margin is clear of rounding.
All weights are random (unit-scale; the 1x1 convs that read L2-normalised features at unit
element scale, so that their outputs are O(1)) and every BN has random running statistics. Frames
are 60x76: every stride floors, and ResNet's F_in is resized 15x19 -> 8x10.
"""
import dataclasses

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import load_config
from tests.parity.torch_reference import randomize_batch_norm_statistics, randomize_parameters
from vssjax.methods.dcfm import DCFMMethod, DCFMPredictor
from vssjax.models.layers import normalize_images
from vssjax.train import init_from

pytestmark = pytest.mark.parity

TOLERANCE = 1e-4
HW = (60, 76)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def l2n(x):
  """Spec §1.3: x / max(||x||_2, 1e-12) over channels."""
  return F.normalize(x, p=2, dim=1, eps=1e-12)


# ---------------------------------------------------------------- MiT (spec §1.1, §9, §10)
class Attention(nn.Module):

  def __init__(self, dim, heads, sr):
    super().__init__()
    self.heads, self.sr_ratio = heads, sr
    self.q = nn.Linear(dim, dim)
    self.kv = nn.Linear(dim, 2 * dim)
    self.proj = nn.Linear(dim, dim)
    if sr > 1:
      self.sr = nn.Conv2d(dim, dim, sr, stride=sr)  # VALID, floors
      self.norm = nn.LayerNorm(dim, eps=1e-5)

  def forward(self, x, h, w):
    b, n, c = x.shape
    hd = c // self.heads
    q = self.q(x).reshape(b, n, self.heads, hd).transpose(1, 2)
    if self.sr_ratio > 1:
      x = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
      x = self.norm(x)
    kv = self.kv(x).reshape(b, -1, 2, self.heads, hd).permute(2, 0, 3, 1, 4)  # [k (C), v (C)]
    attn = (q @ kv[0].transpose(-2, -1) * hd ** -0.5).softmax(-1)
    return self.proj((attn @ kv[1]).transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):

  def __init__(self, dim):
    super().__init__()
    self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

  def forward(self, x, h, w):
    b, n, c = x.shape
    return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):

  def __init__(self, dim):
    super().__init__()
    self.fc1 = nn.Linear(dim, 4 * dim)
    self.dwconv = DWConv(4 * dim)
    self.fc2 = nn.Linear(4 * dim, dim)

  def forward(self, x, h, w):
    return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))  # exact (erf) GELU


class Block(nn.Module):

  def __init__(self, dim, heads, sr):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.attn = Attention(dim, heads, sr)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = MixFFN(dim)

  def forward(self, x, h, w):
    x = x + self.attn(self.norm1(x), h, w)
    return x + self.mlp(self.norm2(x), h, w)


class PatchEmbed(nn.Module):

  def __init__(self, cin, cout, k, s):
    super().__init__()
    self.proj = nn.Conv2d(cin, cout, k, s, k // 2)
    self.norm = nn.LayerNorm(cout, eps=1e-5)

  def forward(self, x):
    x = self.proj(x)
    h, w = x.shape[2:]
    return self.norm(x.flatten(2).transpose(1, 2)), h, w


class MiT(nn.Module):
  """B0: dims 32/64/160/256, heads 1/2/5/8, depths 2/2/2/2, sr 8/4/2/1."""

  def __init__(self, dims=(32, 64, 160, 256), heads=(1, 2, 5, 8), depths=(2, 2, 2, 2),
               srs=(8, 4, 2, 1)):
    super().__init__()
    for i in range(4):
      setattr(self, f"patch_embed{i + 1}",
              PatchEmbed(3 if i == 0 else dims[i - 1], dims[i], 7 if i == 0 else 3,
                         4 if i == 0 else 2))
      setattr(self, f"block{i + 1}",
              nn.ModuleList(Block(dims[i], heads[i], srs[i]) for _ in range(depths[i])))
      setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i], eps=1e-6))

  @staticmethod
  def _map(x, h, w):
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)

  def shallow(self, x):
    """Enc_lo: patch_embed1 + block1[0], before norm1 (the `vit1` hook)."""
    x, h, w = self.patch_embed1(x)
    return self._map(self.block1[0](x, h, w), h, w)

  def forward(self, x):
    features, shallow = [], None
    for i in range(1, 5):
      x, h, w = getattr(self, f"patch_embed{i}")(x)
      for j, block in enumerate(getattr(self, f"block{i}")):
        x = block(x, h, w)
        if i == 1 and j == 0:
          shallow = self._map(x, h, w)
      x = self._map(getattr(self, f"norm{i}")(x), h, w)
      features.append(x)
    return features, shallow


class LinearProj(nn.Module):

  def __init__(self, cin, e):
    super().__init__()
    self.proj = nn.Linear(cin, e)

  def forward(self, x):
    b, _, h, w = x.shape
    return self.proj(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)


class ConvModule(nn.Module):

  def __init__(self, cin, cout):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, 1, bias=False)
    self.bn = nn.BatchNorm2d(cout)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


class MLPDecoder(nn.Module):
  """SegFormer's all-MLP head without its classifier: the common feature, E wide at 1/4."""

  def __init__(self, dims, e=256):
    super().__init__()
    for i, dim in enumerate(dims, start=1):
      setattr(self, f"linear_c{i}", LinearProj(dim, e))
    self.linear_fuse = ConvModule(4 * e, e)
    self.dropout = nn.Dropout2d(0.1)
    self.conv_seg = nn.Conv2d(128, 19, 1)  # mmseg's unused leftover (§9)

  def forward(self, features):
    size = features[0].shape[2:]
    maps = [getattr(self, f"linear_c{i}")(c) for i, c in enumerate(features, start=1)]
    maps = [maps[0]] + [F.interpolate(m, size, mode="bilinear", align_corners=False)
                        for m in maps[1:]]
    return self.dropout(self.linear_fuse(torch.cat(maps[::-1], 1)))  # [c4, c3, c2, c1]


class MiTBackbone(nn.Module):

  def __init__(self):
    super().__init__()
    self.encoder = MiT()
    self.decoder = MLPDecoder((32, 64, 160, 256))

  def shallow(self, x):
    return self.encoder.shallow(x)

  def forward(self, x):
    features, shallow = self.encoder(x)
    return self.decoder(features), shallow


# ------------------------------------------------- dilated ResNet-18 + PPM (spec §1.2, §9)
class BasicBlock(nn.Module):

  def __init__(self, cin, cout, stride, dilation):
    super().__init__()
    # conv1: the layer's stride, no dilation; conv2: the layer's dilation (layer3 2, layer4 4).
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, dilation, dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                     nn.BatchNorm2d(cout))
                       if stride != 1 or cin != cout else None)

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class PSPBackbone(nn.Module):
  """R-18: plain 7x7 stem + maxpool (`layer0`), layer1 (the split), layer2 s2, layer3/4 s1 with
  dilation 2/4 (output stride 8), PPM bins 1,2,3,6 (align_corners=True) -> 512 + 4*128 = 1024."""

  def __init__(self):
    super().__init__()
    self.layer0 = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    cin = 64
    for i, (cout, stride, dilation) in enumerate(
        ((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4)), start=1):
      setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride, dilation),
                                               BasicBlock(cout, cout, 1, dilation)))
      cin = cout
    self.ppm = nn.Module()
    self.ppm.features = nn.ModuleList(
        nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(512, 128, 1, bias=False),
                      nn.BatchNorm2d(128), nn.ReLU()) for b in (1, 2, 3, 6))

  def shallow(self, x):
    return self.layer1(self.layer0(x))

  def forward(self, x):
    shallow = self.shallow(x)
    x = self.layer4(self.layer3(self.layer2(shallow)))
    size = x.shape[2:]
    x = torch.cat([x] + [F.interpolate(f(x), size, mode="bilinear", align_corners=True)
                         for f in self.ppm.features], 1)
    return x, shallow


# ------------------------------------------------------------ DCFM (spec §1.3, §2, §3)
class Encoder(nn.Module):

  def __init__(self, backbone):
    super().__init__()
    self.backbone = backbone

  def forward(self, x):
    return self.backbone(x)


class ConvBlock(nn.Module):

  def __init__(self, cin, cout):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, 1, bias=True)
    self.norm = nn.BatchNorm2d(cout)

  def forward(self, x):
    return F.relu(self.norm(self.conv(x)))


class FFM(nn.Module):

  def __init__(self, d, c_in):
    super().__init__()
    self.half = c_in // 2
    self.convblk = ConvBlock(d + self.half, d)

  def forward(self, common, independent):
    """§2.1: resize F_in to F_co's grid (a no-op once done), keep its first C_in/2 channels,
    concat [F_co, F_in half], 1x1 conv (bias), BN, ReLU."""
    independent = F.interpolate(independent, common.shape[2:], mode="bilinear",
                                align_corners=False)
    return self.convblk(torch.cat([common, independent[:, :self.half]], 1))


class Decoder(nn.Module):

  def __init__(self, d, c_in, classes, head_nums, bottleneck_from=None):
    super().__init__()
    self.bot_aspp = (nn.Conv2d(bottleneck_from, d, 1, bias=False) if bottleneck_from
                     else nn.Identity())
    self.ffm = FFM(d, c_in)
    if head_nums == 0:
      self.final = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(d, classes, 1, bias=False))
    else:
      self.final = nn.Sequential(nn.Conv2d(d, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(),
                                 nn.Dropout2d(0.1), nn.Conv2d(d, classes, 1, bias=False))

  def common(self, deep):
    """Eq. 1: F_co = N(Conv(Enc(x)))."""
    return l2n(self.bot_aspp(deep))

  def fuse_and_classify(self, common, shallow, normalize_first):
    """Eqs. 3-4 / 6 at low resolution. Inference (video_test.py) normalises F_in over all its
    channels and then resizes; training (decoder.py) resizes, then normalises."""
    if normalize_first:
      independent = l2n(shallow)
    else:
      independent = l2n(F.interpolate(shallow, common.shape[2:], mode="bilinear",
                                      align_corners=False))
    return self.final(l2n(self.ffm(common, independent)))


def _scale_unit_inputs(decoder):
  """The 1x1 convs that read L2-normalised features get unit-scale elements (O(1) outputs)."""
  with torch.no_grad():
    convs = [decoder.ffm.convblk.conv, decoder.final[0] if isinstance(
        decoder.final[0], nn.Conv2d) else decoder.final[1]]
    for conv in convs:
      conv.weight.mul_(conv.weight[0].numel() ** 0.5)


def _randomize(*modules, seed):
  torch.manual_seed(seed)
  for module in modules:
    randomize_parameters(module)
    randomize_batch_norm_statistics(module)
    module.eval()


@dataclasses.dataclass
class Variant:
  config: str
  backbone: str
  head_hidden: bool
  build: object  # () -> (torch backbone, torch decoder)


VARIANTS = {
    # MiT-B0 (E = d = 256, no bot_aspp) with the VSPW head (head_nums 0), whose B mode vssjax
    # classifies once on the summed fused features (`DCFMClassifier.linear_at_eval`).
    "mitb0_head0": Variant("configs/dcfm/vspw_mitb2.py", "b0", False,
                           lambda: (MiTBackbone(), Decoder(256, 32, 7, 0))),
    # R-18 + PPM, bot_aspp 1024 -> 320, with the Cityscapes/CamVid head (head_nums 1), which runs
    # once per keyframe in B mode. (The head does not depend on the backbone: MiT-B1's Cityscapes
    # layout is these two halves' combination.)
    "r18_head1": Variant("configs/dcfm/cityscapes_r18.py", "r18", True,
                         lambda: (PSPBackbone(), Decoder(320, 64, 7, 1, bottleneck_from=1024))),
}


def _method(variant: Variant) -> DCFMMethod:
  config = load_config(variant.config, "quick")
  config.data.num_classes = 7
  config.data.eval_transform.scale = HW[::-1]  # the predictor keeps 60x76 frames as they are
  config.method.update(mode="B", keyframe_interval=2)
  model = config.model
  model.backbone = variant.backbone
  model.backbone_overrides.update(embed_dims=(), depths=(), num_heads=())  # B0's real widths
  if variant.backbone.startswith("b"):
    model.decoder_dim = 256  # d = E: no bot_aspp (common_dim 0)
  else:
    model.common_dim = 320
  assert model.head_hidden == variant.head_hidden and model.shallow_blocks == 1
  return DCFMMethod(config)


def _save(module, path):
  torch.save({f"module.{k}": v for k, v in module.state_dict().items()}, path)
  return str(path)


def _torch_input(frames):
  x = torch.from_numpy(frames).float().permute(0, 3, 1, 2) / 255.0
  return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _nhwc(x):
  return x.permute(0, 2, 3, 1).numpy()


def _max_error(ours, theirs, what):
  ours = np.asarray(ours)
  assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
  return float(np.abs(ours - theirs).max())


def _up(logits):
  return F.interpolate(logits, HW, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_dcfm_matches_spec_reference(name, tmp_path):
  variant = VARIANTS[name]
  backbone, decoder = variant.build()
  encoder = Encoder(backbone)
  _randomize(encoder, decoder, seed=0)
  _scale_unit_inputs(decoder)
  paths = [_save(encoder, tmp_path / "encoder_epoch_1.pth"),
           _save(decoder, tmp_path / "decoder_epoch_1.pth")]

  method = _method(variant)
  variables = init_from.load_torch_variables(paths, method)
  frames = np.random.default_rng(1).integers(0, 256, (3, 1, *HW, 3), np.uint8)  # k, t, k'

  # Reference: keyframes 0 and 2 (full network), frame 1 non-key (shallow prefix only).
  with torch.no_grad():
    x = [_torch_input(f) for f in frames]
    deep_k, shallow_k = encoder(x[0])
    deep_n, shallow_n = encoder(x[2])
    common_k, common_n = decoder.common(deep_k), decoder.common(deep_n)
    key = decoder.fuse_and_classify(common_k, shallow_k, normalize_first=True)
    key_train_order = decoder.fuse_and_classify(common_k, shallow_k, normalize_first=False)
    shallow_t = backbone.shallow(x[1])
    assert torch.equal(backbone.shallow(x[0]), shallow_k)  # prefix alone == the full pass' hook
    from_prev = decoder.fuse_and_classify(common_k, shallow_t, normalize_first=True)
    from_next = decoder.fuse_and_classify(common_n, shallow_t, normalize_first=True)
    # The release sums the logits after upsampling them to the frame (eq. 7).
    up_b = _up(from_prev) + _up(from_next)
    next_key = decoder.fuse_and_classify(common_n, shallow_n, normalize_first=True)
    up_key, up_next_key, up_p = _up(key), _up(next_key), _up(from_prev)

  errors = {}
  resized_independent = shallow_k.shape[2:] != common_k.shape[2:]
  with jax.default_matmul_precision("highest"):
    projected_k, logits_k = method.encode_keyframe(variables, frames[0])
    projected_n, _ = method.encode_keyframe(variables, frames[2])
    shallow = method.encode_shallow(variables, frames[1])
    logits_p = method.fused_logits(variables, [projected_k], shallow)
    logits_b = method.fused_logits(variables, [projected_k, projected_n], shallow)
    if resized_independent:  # the training order differs only where F_in is resized
      logits_train_order = jax.jit(lambda v, f: method.module.apply(
          v, normalize_images(f), train=False))(variables, frames[0])
    labels = {}
    for mode in ("B", "P"):
      schedule = dataclasses.replace(method.schedule, mode=mode)
      predictor = DCFMPredictor(method, variables, schedule)
      out = [p for f in frames for p in predictor.push(f[0])] + predictor.flush()
      assert [i for i, _ in out] == [0, 1, 2] and predictor.keyframes() == [0, 2]
      labels[mode] = {i: np.asarray(l) for i, l in out}

  errors["shallow"] = _max_error(shallow, _nhwc(shallow_t), "shallow")
  errors["key"] = _max_error(logits_k, _nhwc(key), "key")
  if resized_independent:
    errors["key_train_order"] = _max_error(logits_train_order, _nhwc(key_train_order),
                                           "key_train_order")
    # ... and there the two orders give different logits, so each side picked its path's order.
    assert float((key - key_train_order).abs().max()) > 100 * TOLERANCE
  else:
    assert float((key - key_train_order).abs().max()) <= 1e-6  # up to rounding
  errors["nonkey_P"] = _max_error(logits_p, _nhwc(from_prev), "nonkey_P")
  errors["nonkey_B"] = _max_error(logits_b, _nhwc(from_prev + from_next), "nonkey_B")
  print(name, {k: f"{v:.1e}" for k, v in errors.items()})
  assert max(errors.values()) <= TOLERANCE, errors
  scale = float(np.abs(_nhwc(key)).max())
  assert scale > 0.5, scale  # the logits are O(1): the tolerance is a relative one too

  def check_labels(ours, up_logits, what):
    top2 = up_logits[0].topk(2, dim=0).values
    clear = (top2[0] - top2[1]).numpy() > 1e-3
    assert clear.mean() > 0.95, what
    theirs = up_logits[0].argmax(0).numpy()
    assert ours.shape == theirs.shape == HW, what
    np.testing.assert_array_equal(ours[clear], theirs[clear], err_msg=what)

  for mode in ("B", "P"):
    check_labels(labels[mode][0], up_key, f"{mode} keyframe 0")
    check_labels(labels[mode][2], up_next_key, f"{mode} keyframe 2")
  check_labels(labels["B"][1], up_b, "B non-key")
  check_labels(labels["P"][1], up_p, "P non-key")
