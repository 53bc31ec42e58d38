"""What `config.model`'s backbone settings mean for every method (`vssjax/methods/backbones.py`):
each reaches the backbone it configures, and one that cannot apply is refused as the method is
built, naming the field."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import load_config, random_config_batch
from vssjax import bench_torch, parallel
from vssjax.convert.common import (EXAMPLE_IMAGE, abstract_variables, apply_rules,
                                   batch_norm_rules, conv_rules)
from vssjax.errors import SetupError
from vssjax.methods import get_method
from vssjax.methods.backbones import OWN, Backbone, build_backbone
from vssjax.models import mit
from vssjax.models.layers import BatchNorm, torch_conv
from vssjax.plugins import NotASubclass
from vssjax.train import init_from
from vssjax.train.host_init import host_filled

HERE = "tests.methods.test_backbones"  # the backbones of one's own below, by import path


class FourStrides(Backbone):
  """A backbone of one's own: a strided conv + BatchNorm + ReLU per level, strides 4 to 32."""

  @nn.compact
  def __call__(self, images, *, train):
    x, features = images, []
    for level, width in enumerate((4, 8, 8, 8)):
      x = torch_conv(width, 3, stride=4 if level == 0 else 2, dtype=self.dtype,
                     name=f"conv{level}")(x)
      x = nn.relu(BatchNorm(dtype=self.dtype, name=f"norm{level}")(x, train=train))
      features.append(x)
    return features


class ReadsTorch(FourStrides):
  """FourStrides with `convert_torch`: a PyTorch original whose modules have its names."""

  def convert_torch(self, state_dict):
    expected = abstract_variables(self, EXAMPLE_IMAGE, train=False)
    rules = [rule for level in range(4) for rule in (
        conv_rules(f"params/conv{level}", f"conv{level}", bias=False)
        + batch_norm_rules(f"norm{level}", f"norm{level}"))]
    return apply_rules(state_dict, rules, expected)


class ReturnsBareParams(FourStrides):
  def convert_torch(self, state_dict):
    return {"conv0": {"kernel": state_dict["conv0.weight"]}}


class ThreeLevels(Backbone):
  def __call__(self, images, *, train):
    return [images[:, ::s, ::s] for s in (4, 8, 16)]


class FlatLevels(Backbone):
  def __call__(self, images, *, train):
    return [images.reshape(images.shape[0], -1)] * 4


class BuildsAnother(Backbone):
  @classmethod
  def from_config(cls, model):
    return FourStrides()


class FiveLevels(Backbone):
  def __call__(self, images, *, train):
    return [images[:, ::s, ::s] for s in (2, 4, 8, 16, 32)]


class NamedLevels(Backbone):
  def __call__(self, images, *, train):
    return {f"c{level}": images[:, ::s, ::s]
            for level, s in enumerate((4, 8, 16, 32), start=1)}


class BatchOfTwo(Backbone):
  def __call__(self, images, *, train):
    return [jnp.concatenate([images, images])[:, ::s, ::s] for s in (4, 8, 16, 32)]


class FiveDims(Backbone):
  def __call__(self, images, *, train):
    return [images[:, ::s, ::s, :, None] for s in (4, 8, 16, 32)]


class ChannelsFirst(FourStrides):
  """FourStrides as a PyTorch port returns its maps: [N, C, h, w]."""

  def __call__(self, images, *, train):
    return [jnp.transpose(x, (0, 3, 1, 2)) for x in super().__call__(images, train=train)]


class FailsToTrace(Backbone):
  def __call__(self, images, *, train):
    raise ValueError("a bug in the backbone")


class NeedsItsDtype(Backbone):
  """Traced only on images of its compute dtype (a kernel of one dtype, say)."""

  def __call__(self, images, *, train):
    if images.dtype != self.dtype:
      raise TypeError(f"images of {images.dtype} for a backbone of {self.dtype}")
    return [images[:, ::s, ::s] for s in (4, 8, 16, 32)]


class ReturnsAnArray(FourStrides):
  def convert_torch(self, state_dict):
    return {"params": state_dict["conv0.weight"]}


class NotABackbone(nn.Module):
  def __call__(self, images, *, train):
    return [images] * 4


def _own_backbone_config(config_path: str, backbone: str = f"{HERE}:FourStrides"):
  config = load_config(config_path, "quick")
  config.model.backbone = backbone
  config.model.backbone_overrides.update(embed_dims=(), depths=(), num_heads=())
  return config


@pytest.mark.parametrize("config_path", ["configs/segformer/synthetic_mitb0.py",
                                         "configs/dtern/synthetic_mitb0.py",
                                         "configs/sdcpc/synthetic_mitb0.py"])
def test_a_backbone_of_ones_own_trains_and_predicts(config_path):
  """`model.backbone` by import path: the method's head reads its features, training reaches its
  parameters (under `params/backbone`) and the predictor answers a frame at its size."""
  config = _own_backbone_config(config_path)
  config.model.dtype = "bfloat16"
  method = get_method(config)
  assert isinstance(method.module.backbone, FourStrides)
  assert method.module.backbone.dtype == jnp.bfloat16
  batch = random_config_batch(config)
  variables = host_filled(jax.eval_shape(method.init, jax.random.PRNGKey(0), batch))
  assert sorted(variables["params"]["backbone"]) == [f"{k}{i}" for k in ("conv", "norm")
                                                       for i in range(4)]
  params = variables.pop("params")
  (loss, _), grads = jax.jit(jax.value_and_grad(method.loss_and_metrics, has_aux=True))(
      params, variables, batch, jax.random.PRNGKey(1))
  assert np.isfinite(loss)
  assert float(jnp.abs(grads["backbone"]["conv0"]["kernel"]).max()) > 0
  predictor = method.predictor({"params": params, **variables})
  frame = np.random.default_rng(0).integers(0, 256, (40, 56, 3), np.uint8)
  answers = predictor.push(frame) + predictor.push(frame) + predictor.flush()
  assert [index for index, _ in answers] == [0, 1]
  assert all(np.asarray(labels).shape == (40, 56) for _, labels in answers)


def _torch_weights_of_four_strides():
  """A state_dict of FourStrides' PyTorch original (modules of its names): conv weights
  [out, in, 3, 3], BatchNorm weight, bias, running statistics and batch count."""
  rng = np.random.default_rng(0)
  state_dict, channels = {}, 3
  for level, width in enumerate((4, 8, 8, 8)):
    state_dict[f"conv{level}.weight"] = rng.standard_normal((width, channels, 3, 3), np.float32)
    for name in ("weight", "bias", "running_mean", "running_var"):
      state_dict[f"norm{level}.{name}"] = rng.uniform(0.5, 1.5, width).astype(np.float32)
    state_dict[f"norm{level}.num_batches_tracked"] = np.array(7)
    channels = width
  return state_dict


def test_a_backbone_of_ones_own_reads_its_pytorch_weights_into_the_methods_backbone():
  """`init.torch_checkpoint` for a backbone of one's own: its `convert_torch` reads the file in
  a layout of its own (no format is detected), and its variables go under `backbone` in both
  collections, transposed as PyTorch's conv kernels need. One that returns anything but
  collections of variables is named."""
  state_dict = _torch_weights_of_four_strides()
  method = get_method(_own_backbone_config("configs/segformer/synthetic_mitb0.py",
                                           f"{HERE}:ReadsTorch"))
  variables = init_from.convert_state_dict(state_dict, method)
  assert sorted(variables) == ["batch_stats", "params"]
  assert all(sorted(tree) == ["backbone"] for tree in variables.values())
  np.testing.assert_array_equal(variables["params"]["backbone"]["conv1"]["kernel"],
                                state_dict["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["batch_stats"]["backbone"]["norm3"]["var"],
                                state_dict["norm3.running_var"])
  method = get_method(_own_backbone_config("configs/segformer/synthetic_mitb0.py",
                                           f"{HERE}:ReturnsBareParams"))
  with pytest.raises(SetupError, match=r"ReturnsBareParams.convert_torch returned dict with keys "
                                       r"\['conv0'\]: it returns the backbone's variables by "
                                       r"collection, \{'params': \{...\}, ...\}"):
    init_from.convert_state_dict(state_dict, method)


@pytest.mark.parametrize("backbone, error, expected", [
    (f"{HERE}:NotABackbone", NotASubclass,
     r"model.backbone '.*:NotABackbone' is .* not a subclass of vssjax.methods.backbones.Backbone"),
    (f"{HERE}:Missing", SetupError, r"module 'tests.methods.test_backbones' has no attribute"),
    (f"{HERE}:ThreeLevels", SetupError,
     r"model.backbone '.*:ThreeLevels' given images \(1, 64, 64, 3\) returned a list of 3: a "
     r"backbone returns four feature maps"),
    (f"{HERE}:FlatLevels", SetupError,
     r"returned an array of shape \(1, 12288\) as feature map 1: each is \[N, h, w, C\]"),
    (f"{HERE}:BuildsAnother", SetupError,
     r"BuildsAnother.from_config returned FourStrides, not a BuildsAnother"),
    (f"{HERE}:FiveLevels", SetupError,
     r"returned a list of 5: a backbone returns four feature maps"),
    (f"{HERE}:NamedLevels", SetupError,
     r"returned a dict: a backbone returns four feature maps, finest first"),
    (f"{HERE}:BatchOfTwo", SetupError, r"returned an array of shape \(2, 16, 16, 3\) as feature "
                                       r"map 1: each is \[N, h, w, C\] for the N images"),
    (f"{HERE}:FiveDims", SetupError,
     r"returned an array of shape \(1, 16, 16, 3, 1\) as feature map 1: each is \[N, h, w, C\]"),
    # It trained, the head's widths those of its maps' last axis, and failed at the evaluation.
    (f"{HERE}:ChannelsFirst", SetupError,
     r"returned feature map 1 of shape \(1, 4, 16, 16\) for 64x64 images and \(1, 4, 32, 32\) "
     r"for 128x128: each map is \[N, h, w, C\], its channels C the same at every image size, h "
     r"and w growing with the image \(a PyTorch port's \[N, C, h, w\] maps need a transpose\)"),
])
def test_a_backbone_of_ones_own_that_breaks_the_contract_is_named(backbone, error, expected):
  with pytest.raises(error, match=expected):
    get_method(_own_backbone_config("configs/segformer/synthetic_mitb0.py", backbone))


def test_a_backbone_of_ones_own_that_fails_to_trace_is_named_in_its_error():
  """The backbone's own error (a bug in its `__call__`) is raised as it is, with a note naming the
  field and the image it was checked on: it surfaces as the method is built, not in a trace."""
  with pytest.raises(ValueError, match="a bug in the backbone") as raised:
    get_method(_own_backbone_config("configs/segformer/synthetic_mitb0.py",
                                    f"{HERE}:FailsToTrace"))
  assert (f"(while checking model.backbone '{HERE}:FailsToTrace' on an image of (1, 64, 64, 3))"
          in raised.value.__notes__)


def test_a_backbone_of_ones_own_is_checked_on_images_of_the_compute_dtype():
  """The check traces the backbone as the run does, on images of `model.dtype`: traced on float32
  images, a bf16 backbone that reads its input's dtype was refused for what it never runs."""
  config = _own_backbone_config("configs/segformer/synthetic_mitb0.py", f"{HERE}:NeedsItsDtype")
  config.model.dtype = "bfloat16"
  assert isinstance(get_method(config).module.backbone, NeedsItsDtype)


def test_a_backbone_of_ones_own_in_a_module_of_its_own_is_taken(tmp_path, monkeypatch):
  """An import path whose module is a single file on the path (`my_backbone:Net`, no package)
  names a backbone of one's own too, not an unknown built-in name."""
  (tmp_path / "my_backbone.py").write_text(
      f"from {HERE} import FourStrides\n\n\nclass Net(FourStrides):\n  pass\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  method = get_method(_own_backbone_config("configs/segformer/synthetic_mitb0.py",
                                           "my_backbone:Net"))
  assert type(method.module.backbone).__name__ == "Net"


def test_build_backbone_takes_a_backbone_of_ones_own_only_for_the_methods_that_take_one():
  """`build_backbone` for a method without the `OWN` family (a new one built on it) refuses an
  import path, naming the method: it would build the backbone and fail deep in the head."""
  model = _own_backbone_config("configs/segformer/synthetic_mitb0.py").model
  with pytest.raises(SetupError, match=r"Mine takes one of \['b0', .*'b5'\]; Mine takes no "
                                       "backbone of one's own"):
    build_backbone(model, "Mine", ("mit",))
  assert isinstance(build_backbone(model, "Mine", ("mit", OWN)), FourStrides)


def test_pytorch_weights_of_a_backbone_of_ones_own_are_refused_where_a_whole_model_is_needed():
  """`python -m vssjax.convert` (whole_model) of a backbone's own weights would save a workdir
  whose head is untrained and say to evaluate it, as for ImageNet MiT or ResNet files."""
  method = get_method(_own_backbone_config("configs/segformer/synthetic_mitb0.py",
                                           f"{HERE}:ReadsTorch"))
  with pytest.raises(SetupError, match=r"^backbone weights only \(an ImageNet classification "
                                       r"checkpoint\?\), no segmentation head"):
    init_from.convert_state_dict(_torch_weights_of_four_strides(), method, whole_model=True)


def test_convert_torch_returning_arrays_for_a_collection_is_named():
  """A collection must be a tree of variables: `{'params': array}` is named as the method's
  mistake, not an AttributeError when the arrays are swapped into the model."""
  method = get_method(_own_backbone_config("configs/segformer/synthetic_mitb0.py",
                                           f"{HERE}:ReturnsAnArray"))
  with pytest.raises(SetupError, match=r"ReturnsAnArray.convert_torch returned dict with keys "
                                       r"\['params'\]: it returns the backbone's variables by"):
    init_from.convert_state_dict(_torch_weights_of_four_strides(), method)


def test_a_mit_setting_for_a_backbone_of_ones_own_is_refused_not_ignored():
  config = _own_backbone_config("configs/dtern/synthetic_mitb0.py")
  config.model.drop_path_rate = 0.2
  with pytest.raises(SetupError, match=r"model.drop_path_rate=0.2 is a MiT setting, and "
                                       rf"model.backbone '{HERE}:FourStrides' is not a MiT"):
    get_method(config)
  config = load_config("configs/dtern/synthetic_mitb0.py", "quick")  # its overrides kept
  config.model.backbone = f"{HERE}:FourStrides"
  with pytest.raises(SetupError, match=r"model.backbone_overrides.depths=\(1, 1, 1, 1\) is a "
                                       r"MiT setting"):
    get_method(config)


@pytest.mark.parametrize("config_path, method", [("configs/dcfm/synthetic_mitb0.py", "DCFM"),
                                                 ("configs/etc/synthetic_psp18.py", "ETC")])
def test_a_method_that_takes_no_backbone_of_ones_own_says_so(config_path, method):
  config = load_config(config_path, "quick")
  config.model.backbone = f"{HERE}:FourStrides"
  with pytest.raises(SetupError, match=rf"{method} takes one of \[.*\]; {method} takes no "
                                       r"backbone of one's own \(a method takes one where it "
                                       r"builds its backbone with build_backbone\(model, name, "
                                       r"\(\.\.\., OWN\)\), docs/extending.md\)"):
    get_method(config)


def test_released_weights_and_the_torch_reference_are_refused_for_a_backbone_of_ones_own():
  """A whole released model's converter reads MiT keys the backbone does not have, an ImageNet
  MiT file fills only a MiT, and transformers has no such SegFormer to time."""
  method = get_method(_own_backbone_config("configs/segformer/synthetic_mitb0.py"))
  whole = {"segformer.encoder.patch_embeddings.0.proj.weight": np.zeros((4, 3, 7, 7)),
           "decode_head.classifier.weight": np.zeros((9, 32, 1, 1))}
  with pytest.raises(SetupError, match=r"a whole segformer model's checkpoint, but "
                                       r"model.backbone='.*:FourStrides' is a backbone of one's"):
    init_from.convert_state_dict(whole, method, "hf")
  with pytest.raises(SetupError, match=r"FourStrides \(model.backbone\) converts no PyTorch "
                                       r"weights: give it a `convert_torch\(self, state_dict\)`"):
    init_from.convert_state_dict({"segformer.encoder.patch_embeddings.0.proj.weight":
                                  np.zeros((4, 3, 7, 7))}, method)
  assert not bench_torch.has_reference(method)
  assert bench_torch.has_reference(get_method(load_config("configs/segformer/synthetic_mitb0.py",
                                                          "quick")))


@pytest.mark.parametrize("config_path, backbone, expected", [
    ("configs/segformer/synthetic_mitb0.py", "r50",
     r"SegFormer takes one of \['b0', .*'b5'\] or a Backbone of one's own by import path"),
    ("configs/dtern/synthetic_mitb0.py", "b9", r"DTERN takes one of \['b0', .*'b5'\] or"),
    ("configs/sdcpc/cityscapes_r101.py", "r34",
     r"SD-CPC takes one of \['b0', .*'b5', 'r18', 'r50', 'r101'\] or"),
    ("configs/dcfm/synthetic_mitb0.py", "mobilenet_v2", r"DCFM takes one of \['b0', .*'r101'\]"),
    ("configs/etc/synthetic_psp18.py", "b1", r"ETC takes one of \['r18', .*'mobilenet_v2'\]"),
])
def test_a_backbone_the_method_does_not_take_is_refused_naming_the_choices(config_path, backbone,
                                                                           expected):
  config = load_config(config_path, "quick")
  config.model.backbone = backbone
  with pytest.raises(SetupError, match=rf"model.backbone='{backbone}': {expected}"):
    get_method(config)


def test_attention_impl_reaches_every_attention_call(monkeypatch):
  """`model.attention_impl` is passed to the attention of every MiT block. The method is built as
  on a GPU, past the check of `test_cudnn_attention_is_refused_...`; the calls are recorded (and
  computed with XLA's attention, which any backend runs)."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.model.dtype = "bfloat16"  # cuDNN's fused attention takes fp16/bf16 only
  frames = jnp.zeros((1, 32, 32, 3), jnp.bfloat16)
  default = get_method(config).module
  variables = jax.eval_shape(lambda: default.init(jax.random.PRNGKey(0), frames, train=False))
  config.model.attention_impl = "cudnn"
  with parallel.compiling_for("gpu"):
    module = get_method(config).module
  attention, implementations = mit.dot_product_attention, []

  def recording_attention(*args, implementation, **kwargs):
    implementations.append(implementation)
    return attention(*args, implementation="xla", **kwargs)

  monkeypatch.setattr(mit, "dot_product_attention", recording_attention)
  jax.eval_shape(lambda v: default.apply(v, frames, train=False), variables)
  blocks = len(implementations)
  assert blocks == sum(config.model.backbone_overrides.depths) and set(implementations) == {"xla"}
  jax.eval_shape(lambda v: module.apply(v, frames, train=False), variables)
  assert implementations[blocks:] == ["cudnn"] * blocks


@pytest.mark.parametrize("config_path", ["configs/segformer/synthetic_mitb0.py",
                                         "configs/dcfm/synthetic_mitb0.py"])
def test_cudnn_attention_is_refused_where_it_cannot_run(config_path):
  """Off an NVIDIA GPU, or with float32 queries, cuDNN's attention raised a bare RuntimeError /
  NotImplementedError from inside the first trace; every MiT method now refuses the setting as it
  is built, naming it."""
  config = load_config(config_path, "quick")
  config.model.update(attention_impl="cudnn", dtype="bfloat16")
  with parallel.compiling_for("cpu"):
    with pytest.raises(SetupError, match=r"attention_impl='cudnn' .* NVIDIA GPUs; .* 'cpu'"):
      get_method(config)
  with parallel.compiling_for("gpu"):
    get_method(config)
    config.model.dtype = "float32"
    with pytest.raises(SetupError, match=r"bf16 attention only, and model.dtype is 'float32'"):
      get_method(config)
    config.model.attention_impl = "flash"
    with pytest.raises(SetupError, match=r"'xla' or 'cudnn', got 'flash'"):
      get_method(config)


def test_an_unknown_depthwise_conv_or_drop_path_rate_is_refused_naming_it():
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.model.dwconv_impl = "fft"
  with pytest.raises(SetupError, match=r"model.dwconv_impl must be .* got 'fft'"):
    get_method(config)
  config.model.dwconv_impl = "auto"
  config.model.drop_path_rate = 1.0  # every residual branch dropped: trained, but to nothing
  with pytest.raises(SetupError, match=r"model.drop_path_rate=1.0: a probability in \[0, 1\)"):
    get_method(config)


@pytest.mark.parametrize("config_path", ["configs/segformer/synthetic_mitb0.py",
                                         "configs/dtern/synthetic_mitb0.py"])
def test_scan_blocks_reaches_the_backbone_of_a_mit_method(config_path):
  """`model.scan_blocks` scans the blocks of the training loss's backbone (the loss's rounds are
  a scan too, hence a count). That scanned blocks have the unrolled ones' parameters, outputs and
  gradients is tests/models/test_mit.py's."""
  config = load_config(config_path, "quick")
  config.model.backbone_overrides = dict(embed_dims=(8, 16, 24, 32), depths=(2, 2, 1, 2),
                                         num_heads=(1, 2, 3, 4))  # the quick one's: 1 a stage
  batch = random_config_batch(config)
  scans = []
  for scan in (False, True):
    config.model.scan_blocks = scan
    method = get_method(config)
    assert method.module.backbone.scan_blocks == scan
    variables = host_filled(jax.eval_shape(method.init, jax.random.PRNGKey(0), batch))
    params = variables.pop("params")
    jaxpr = jax.make_jaxpr(method.loss_and_metrics)(params, variables, batch,
                                                    jax.random.PRNGKey(1))
    scans.append(str(jaxpr).count(" scan["))
  assert scans[1] > scans[0]


@pytest.mark.parametrize("config_path", ["configs/etc/synthetic_psp18.py",
                                         "configs/dcfm/camvid_r50.py"])
@pytest.mark.parametrize("field, value", [("scan_blocks", True), ("attention_impl", "cudnn"),
                                          ("drop_path_rate", 0.2)])
def test_a_mit_setting_on_another_backbone_is_refused_not_ignored(config_path, field, value):
  config = load_config(config_path, "quick")
  config.model[field] = value
  with pytest.raises(SetupError, match=rf"model.{field}={value!r} is a MiT setting, and "
                                       rf"model.backbone '{config.model.backbone}' is not a MiT"):
    get_method(config)


@pytest.mark.parametrize("config_path", ["configs/etc/synthetic_psp18.py",
                                         "configs/dcfm/camvid_r50.py",
                                         "configs/sdcpc/cityscapes_r101.py"])
def test_backbone_overrides_on_another_backbone_are_refused_not_ignored(config_path):
  """Their quick variants leave them empty: only a MiT shrinks by them."""
  config = load_config(config_path, "quick")
  assert not any(config.model.backbone_overrides.values())
  get_method(config)
  config.model.backbone_overrides.depths = (1, 1, 1, 1)
  with pytest.raises(SetupError, match=r"model.backbone_overrides.depths=\(1, 1, 1, 1\) is a MiT "
                                       rf"setting, and model.backbone '{config.model.backbone}'"):
    get_method(config)


@pytest.mark.parametrize("config_path, network", [
    ("configs/etc/synthetic_psp18.py", "ETC's PSPNet on 'r18'"),
    ("configs/etc/camvid_mobilenet.py", "ETC's PSPNet on 'mobilenet_v2'"),
    ("configs/dcfm/camvid_r50.py", "DCFM on 'r50'")])
def test_a_depthwise_conv_form_is_refused_where_no_layer_takes_it(config_path, network):
  """MobileNetV2's depth-wise convs are strided or dilated grouped convs always; ResNets have
  none. SD-CPC on a ResNet keeps the setting: its head's Mix-FFN has one."""
  config = load_config(config_path, "quick")
  config.model.dwconv_impl = "shifted"
  with pytest.raises(SetupError, match=rf"model.dwconv_impl='shifted' picks .* and {network} "
                                       r"has none: leave it at 'auto'"):
    get_method(config)


@pytest.mark.parametrize("config_path", [
    "configs/segformer/synthetic_mitb0.py", "configs/dtern/synthetic_mitb0.py",
    "configs/sdcpc/synthetic_mitb0.py", "configs/sdcpc/cityscapes_r101.py",
    "configs/dcfm/synthetic_mitb0.py", "configs/dcfm/camvid_r50.py",
    "configs/etc/synthetic_psp18.py", "configs/etc/camvid_mobilenet.py"])
def test_remat_reaches_the_backbone_blocks_of_every_method(config_path):
  """`model.remat` rematerialises the training loss's backbone blocks, whichever the method and
  the backbone family (the blocks train as kept ones: tests/models/test_layers.py)."""
  config = load_config(config_path, "quick")
  batch = random_config_batch(config)

  def rematerialised(remat):
    config.model.remat = remat
    method = get_method(config)
    variables = host_filled(jax.eval_shape(method.init, jax.random.PRNGKey(0), batch))
    params = variables.pop("params")
    jaxpr = jax.make_jaxpr(method.loss_and_metrics)(params, variables, batch,
                                                    jax.random.PRNGKey(1))
    return len(re.findall(r" (?:remat2|checkpoint)\[", str(jaxpr)))  # by jax version
  assert rematerialised("") == 0
  assert rematerialised("nothing_saveable") > 0


def test_an_unknown_remat_policy_or_one_for_a_backbone_of_ones_own_is_refused():
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.model.remat = "everything_saveable"
  with pytest.raises(SetupError, match=r"model.remat='everything_saveable': '' \(keep every "
                                       r"activation\) or a jax.checkpoint_policies name, one of "
                                       r"\['nothing_saveable', "):
    get_method(config)
  config = _own_backbone_config("configs/segformer/synthetic_mitb0.py")
  config.model.remat = "nothing_saveable"
  with pytest.raises(SetupError, match=rf"model.remat='nothing_saveable' rematerialises the "
                                       rf"blocks of the built-in backbones, and model.backbone "
                                       rf"'{HERE}:FourStrides' is one's own: wrap its blocks in "
                                       r"flax.linen.remat"):
    get_method(config)
