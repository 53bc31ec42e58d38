"""vssjax dilated ResNet / PPM / PSPNet vs a PyTorch PSPNet with converted weights.

torchvision is not installed, so the reference is written here the way semseg builds PSPNet: an
ordinary ResNet (torchvision BasicBlock / v1.5 Bottleneck, plain 7x7 or deep-base stem), whose
layer3/layer4 are then dilated by editing the built convs by name (every `conv2` dilation 2/4
with stride 1, `downsample.0` and the BasicBlock `conv1` stride 1), wrapped in the PSPNet Sequential
layout (`layer0`, `ppm.features.{i}`, `cls`, `aux`). Weights are unit-scale random and every BN
has random running statistics. Reduced depths keep it fast; a layer with two blocks checks the
dilation of non-first blocks. Compared at an odd, non-square size (65x97: 33x49 -> 17x25 -> 9x13,
and PPM windows that overlap) and an even one (64x96, where only torch's symmetric max-pool padding,
not "SAME"'s bottom/right padding, gives the right windows) in eval mode, and once in train mode
(batch statistics, running statistic updates, aux head; dropout 0 on both sides).
"""
import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import traverse_util
from torch import nn

from tests.parity.torch_reference import randomize_batch_norm_statistics, randomize_parameters
from vssjax.convert.torch_resnet import convert_pspnet, convert_resnet_imagenet
from vssjax.models.pspnet import PSPNet
from vssjax.models.resnet import ResNet

pytestmark = pytest.mark.parity

TOLERANCE = 1e-4
NUM_CLASSES = 5
BINS = (1, 2, 3, 6)
# (block, layers, stem, cls hidden width): ETC's PSPNet-18 layout and semseg's R-50/101 layout.
CONFIGS = {"basic_plain": ("basic", (1, 1, 2, 1), "plain", 256),
           "bottleneck_deep": ("bottleneck", (1, 1, 1, 2), "deep", 512)}


class TorchBasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchBottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(nn.Module):
  """An ImageNet ResNet as torchvision (plain stem) / semseg (deep base) name their weights."""

  def __init__(self, block, layers, deep_base):
    super().__init__()
    self.deep_base = deep_base
    if deep_base:
      self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(64)
      self.conv2 = nn.Conv2d(64, 64, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(64)
      self.conv3 = nn.Conv2d(64, 128, 3, 1, 1, bias=False)
      self.bn3 = nn.BatchNorm2d(128)
      self.inplanes = 128
    else:
      self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
      self.bn1 = nn.BatchNorm2d(64)
      self.inplanes = 64
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
      setattr(self, f"layer{i}", self._make_layer(block, planes, blocks, 1 if i == 1 else 2))
    self.fc = nn.Linear(512 * block.expansion, 1000)

  def _make_layer(self, block, planes, blocks, stride):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
          nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, 1, None) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class TorchPPM(nn.Module):

  def __init__(self, in_dim, reduction_dim, bins):
    super().__init__()
    self.features = nn.ModuleList(nn.Sequential(
        nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_dim, reduction_dim, 1, bias=False),
        nn.BatchNorm2d(reduction_dim), nn.ReLU()) for b in bins)

  def forward(self, x):
    size = x.shape[2:]
    return torch.cat([x] + [F.interpolate(f(x), size, mode="bilinear", align_corners=True)
                            for f in self.features], 1)


def _head(in_dim, hidden, classes, dropout):
  return nn.Sequential(nn.Conv2d(in_dim, hidden, 3, padding=1, bias=False),
                       nn.BatchNorm2d(hidden), nn.ReLU(), nn.Dropout2d(dropout),
                       nn.Conv2d(hidden, classes, 1))


class TorchPSPNet(nn.Module):
  """semseg's PSPNet around `resnet`: dilates layer3/4 in place; returns every tensor we compare."""

  def __init__(self, resnet, head_features, dropout):
    super().__init__()
    stem = [resnet.conv1, resnet.bn1, nn.ReLU()]
    if resnet.deep_base:
      stem += [resnet.conv2, resnet.bn2, nn.ReLU(), resnet.conv3, resnet.bn3, nn.ReLU()]
    self.layer0 = nn.Sequential(*stem, resnet.maxpool)
    self.layer1, self.layer2 = resnet.layer1, resnet.layer2
    self.layer3, self.layer4 = resnet.layer3, resnet.layer4
    for layer, dilation in ((self.layer3, 2), (self.layer4, 4)):
      for name, module in layer.named_modules():
        if "conv2" in name:
          module.dilation, module.padding, module.stride = (dilation,) * 2, (dilation,) * 2, (1, 1)
        elif "conv1" in name or "downsample.0" in name:
          module.stride = (1, 1)
    c3, c4 = resnet.inplanes // 2, resnet.inplanes
    self.ppm = TorchPPM(c4, c4 // len(BINS), BINS)
    self.cls = _head(2 * c4, head_features, NUM_CLASSES, dropout)
    self.aux = _head(c3, 256, NUM_CLASSES, dropout)

  def forward(self, x):
    c1 = self.layer1(self.layer0(x))
    c2 = self.layer2(c1)
    c3 = self.layer3(c2)
    c4 = self.layer4(c3)
    features = self.ppm(c4)
    return {"c1": c1, "c2": c2, "c3": c3, "c4": c4, "features": features,
            "logits": self.cls(features), "aux_logits": self.aux(c3)}


def torch_pspnet(config, dropout=0.1, seed=0):
  block, layers, stem, head_features = CONFIGS[config]
  torch.manual_seed(seed)
  resnet = TorchResNet(TorchBasicBlock if block == "basic" else TorchBottleneck, layers,
                       deep_base=stem == "deep")
  model = TorchPSPNet(resnet, head_features, dropout)
  randomize_parameters(model)
  randomize_batch_norm_statistics(model)
  return resnet, model


def flax_pspnet(config, dropout=0.1):
  block, layers, stem, head_features = CONFIGS[config]
  backbone = ResNet(block=block, layers=layers, stem=stem)
  return PSPNet(backbone=backbone, num_classes=NUM_CLASSES,
                ppm_features=backbone.out_features[-1] // len(BINS), head_features=head_features,
                dropout_rate=dropout, bins=BINS)


def _numpy_state(module):
  return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _nhwc(tensor):
  return tensor.detach().permute(0, 2, 3, 1).numpy()


def _images(batch, seed=1, hw=(65, 97)):
  return np.random.default_rng(seed).standard_normal((batch, *hw, 3)).astype(np.float32)


def _assert_close(ours, theirs, what):
  assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
  error = np.abs(np.asarray(ours) - theirs).max()
  assert error <= TOLERANCE, f"{what}: max abs error {error:.2e}"


def _forward(model, variables, images, train):
  """Our outputs plus c1..c4 (the backbone's return value, captured in one pass)."""
  def run(v, x):
    outputs, state = model.apply(
        v, x, train=train, mutable=["intermediates", "batch_stats"] if train else ["intermediates"],
        capture_intermediates=lambda module, _: module.name == "backbone")
    c1, c2, c3, c4 = state["intermediates"]["backbone"]["__call__"][0]
    return outputs | {"c1": c1, "c2": c2, "c3": c3, "c4": c4}, state.get("batch_stats")

  with jax.default_matmul_precision("highest"):
    return jax.jit(run)(variables, images)


@pytest.mark.parametrize("hw,out_hw", [((65, 97), (9, 13)), ((64, 96), (8, 12))],
                         ids=["odd", "even"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_pspnet_eval_matches_torch(config, hw, out_hw):
  _, torch_model = torch_pspnet(config)
  model = flax_pspnet(config)
  variables = convert_pspnet(_numpy_state(torch_model), model)
  images = _images(1, hw=hw)
  with torch.no_grad():
    expected = torch_model.eval()(torch.from_numpy(images).permute(0, 3, 1, 2))
  ours, _ = _forward(model, variables, images, train=False)
  assert "aux_logits" not in ours
  assert ours["c4"].shape[1:3] == ours["logits"].shape[1:3] == out_hw
  for name in ("c1", "c2", "c3", "c4", "features", "logits"):
    _assert_close(ours[name], _nhwc(expected[name]), name)


def test_pspnet_train_mode_batch_norm_matches_torch():
  """Batch statistics in every BN, aux head, running-stat updates.

  The bin-1 PPM branch normalises B values per channel; B = 4, because with B = 2 channels whose
  two values nearly coincide amplify float rounding ~1/sqrt(eps) times (1.5e-4 measured).
  """
  _, torch_model = torch_pspnet("basic_plain", dropout=0.0)
  model = flax_pspnet("basic_plain", dropout=0.0)
  variables = convert_pspnet(_numpy_state(torch_model), model)
  images = _images(4)
  expected = torch_model.train()(torch.from_numpy(images).permute(0, 3, 1, 2))
  ours, batch_stats = _forward(model, variables, images, train=True)
  for name in ("c4", "features", "logits", "aux_logits"):
    _assert_close(ours[name], _nhwc(expected[name]), name)
  updated = convert_pspnet(_numpy_state(torch_model), model)["batch_stats"]
  flat_ours = traverse_util.flatten_dict(batch_stats, sep="/")
  flat_theirs = traverse_util.flatten_dict(updated, sep="/")
  assert flat_ours.keys() == flat_theirs.keys()
  for path, theirs in flat_theirs.items():
    _assert_close(flat_ours[path], theirs, path)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_imagenet_layout_converts_to_the_pspnet_backbone(config):
  """torchvision / semseg-deep-base names (with `fc`) give the same backbone variables as the
  PSPNet layout of the same modules."""
  resnet, torch_model = torch_pspnet(config)
  model = flax_pspnet(config)
  from_imagenet = convert_resnet_imagenet(_numpy_state(resnet), model.backbone)
  from_pspnet = convert_pspnet(_numpy_state(torch_model), model)
  for collection in ("params", "batch_stats"):
    ours = traverse_util.flatten_dict(from_imagenet[collection])
    theirs = traverse_util.flatten_dict(from_pspnet[collection]["backbone"])
    assert ours.keys() == theirs.keys()
    for path, value in theirs.items():
      np.testing.assert_array_equal(ours[path], value, err_msg=str(path))
