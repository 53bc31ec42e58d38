"""The `config.model` settings every method reads the same way: which backbone family
`model.backbone` names, the compute dtype, the depth-wise conv and attention implementations, and
the MiT backbone they configure; and `Backbone`, the base of a backbone of one's own.

Each method builds its own network around the backbone (an all-MLP head, a video head, a PSPNet);
what a backbone name means, and which settings apply to it, is decided here once, so that a
setting is refused the same way whichever method it is given to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp
import numpy as np

from vssjax import parallel
from vssjax.configs_lib import ConfigDict, base_config
from vssjax.errors import SetupError
from vssjax.models.layers import REMAT_POLICIES
from vssjax.models.mit import MIT_VARIANTS, mit, MixTransformer
from vssjax.models.resnet import RESNET_NAMES, resnet
from vssjax.plugins import resolve_class

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MOBILENET_V2 = "mobilenet_v2"
# The names `model.backbone` takes, per family; a method takes one or more families.
FAMILIES = {"mit": tuple(MIT_VARIANTS), "resnet": tuple(RESNET_NAMES),
            "mobilenet_v2": (MOBILENET_V2,)}


# The family of a `Backbone` of one's own, which `model.backbone` names by import path: for the
# methods whose heads read nothing of their backbone but its four feature maps (not DCFM, whose
# encoder splits its backbone's first stage, nor ETC, whose PSPNet dilates a ResNet).
OWN = "own"
# The side of the images `build_backbone` checks a backbone of one's own on: 32 times 2, so that
# the coarsest of MiT's strides leaves 2x2 features.
_CHECK_SIZE = 64


class Backbone(nn.Module):
  """The base of a backbone of one's own, which `model.backbone` names by import path,
  "package.module:ClassName", for the methods that take the `OWN` family: SegFormer, DTERN and
  SD-CPC (docs/extending.md).

  `__call__(images, *, train)` takes normalised images [N, H, W, 3] in the compute dtype and
  returns four feature maps [N, h_i, w_i, C_i], finest first: the heads were designed for MiT's
  strides 4, 8, 16 and 32 (they resize the levels to the finest, so others run too) and take
  their input widths C_i from the features. `train` switches dropout and stochastic depth (the
  `dropout` rng) and BatchNorm's batch statistics (the `batch_stats` collection), as for MiT.

  `from_config(model)` builds it from `config.model`; the default passes the compute dtype. A
  backbone with settings of its own reads them from fields its config adds to `c.model`.
  `convert_torch(state_dict)` reads the pretrained weights of its PyTorch original, which
  `init.torch_checkpoint` then starts training from.
  """
  dtype: Dtype = jnp.float32

  @classmethod
  def from_config(cls, model: ConfigDict) -> Backbone:
    return cls(dtype=compute_dtype(model))

  def convert_torch(self, state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """This backbone's variables, `{'params': ...}` (and `batch_stats`, ...) of this module
    alone, from the state_dict (numpy arrays) of `init.torch_checkpoint`'s file: the method
    places them under its backbone, checked shape by shape against the model's. The rules of
    `vssjax.convert.common` do the work and name every key that does not fit (docs/extending.md).
    A backbone without it loads no PyTorch weights."""
    raise SetupError(
        f"{type(self).__name__} (model.backbone) converts no PyTorch weights: give it a "
        "`convert_torch(self, state_dict)` method (docs/extending.md, \"A backbone of your "
        "own\"), or start from a vssjax run that trained it (init.workdir)")


def build_backbone(model: ConfigDict, method: str, families: tuple[str, ...]) -> nn.Module:
  """The backbone `model.backbone` names for `method`: a built-in one of `families` ('mit' or
  'resnet'), or, with `OWN` among them, a `Backbone` of one's own by import path, checked on a
  small image as it is built (what it returns, or a setting of MiT's changed for it, is a
  SetupError naming the field, not a failure deep in the head's first trace)."""
  if OWN in families and _is_import_path(model.backbone):
    return _own_backbone(model)
  family = backbone_family(model, method, families)
  if family == "mit":
    return build_mit(model, method)
  if family == "resnet":
    return resnet(RESNET_NAMES[model.backbone], dtype=compute_dtype(model),
                  remat=remat_policy_name(model))
  raise ValueError(f"build_backbone builds MiT and ResNet backbones, not {family!r} ones")


def backbone_family(model: ConfigDict, method: str, families: tuple[str, ...]) -> str:
  """The built-in family of `model.backbone` ('mit', 'resnet' or 'mobilenet_v2'), one of the
  `families` `method` takes. A name outside them, or a MiT setting changed on another family (it
  would be ignored without a word), is a SetupError naming the field."""
  built_in = [family for family in families if family != OWN]
  for family in built_in:
    if model.backbone in FAMILIES[family]:
      if family != "mit":
        _refuse_mit_settings(model)
      return family
  names = [name for family in built_in for name in FAMILIES[family]]
  if OWN in families:
    also = " or a Backbone of one's own by import path ('package.module:ClassName')"
  elif _is_import_path(model.backbone):
    also = (f"; {method} takes no backbone of one's own (a method takes one where it builds its "
            "backbone with build_backbone(model, name, (..., OWN)), docs/extending.md)")
  else:
    also = ""
  raise SetupError(f"model.backbone={model.backbone!r}: {method} takes one of {names}{also}")


def _is_import_path(name: str) -> bool:
  return ":" in name


def _own_backbone(model: ConfigDict) -> Backbone:
  """The user's `Backbone` subclass that `model.backbone` names, built and checked."""
  cls = resolve_class(model.backbone, {}, Backbone, "model.backbone")
  _refuse_mit_settings(model)
  if model.remat:
    raise SetupError(f"model.remat={model.remat!r} rematerialises the blocks of the built-in "
                     f"backbones, and model.backbone {model.backbone!r} is one's own: wrap its "
                     "blocks in flax.linen.remat, and leave model.remat at ''")
  backbone = cls.from_config(model)
  if not isinstance(backbone, cls):
    raise SetupError(f"model.backbone {model.backbone!r}: {cls.__qualname__}.from_config "
                     f"returned {type(backbone).__qualname__}, not a {cls.__qualname__}")
  _check_features(backbone, model)
  return backbone


def _check_features(backbone: Backbone, model: ConfigDict) -> None:
  """Traces `backbone` on images of two sizes (shapes only, no computation) and checks that it
  returns what the heads read: four feature maps [1, h, w, C], their channels C the same at
  both sizes and their h, w growing with the image. A PyTorch port's [N, C, h, w] maps pass a
  check at one size, and a head sized by them trains at the crop, then fails at evaluation."""
  small = _traced_features(backbone, model, _CHECK_SIZE)
  large = _traced_features(backbone, model, 2 * _CHECK_SIZE)
  for level, (at_small, at_large) in enumerate(zip(small, large), start=1):
    if at_small.shape[3] != at_large.shape[3] or at_small.shape[1:3] == at_large.shape[1:3]:
      raise SetupError(
          f"model.backbone {model.backbone!r} returned feature map {level} of shape "
          f"{tuple(at_small.shape)} for {_CHECK_SIZE}x{_CHECK_SIZE} images and "
          f"{tuple(at_large.shape)} for {2 * _CHECK_SIZE}x{2 * _CHECK_SIZE}: each map is "
          "[N, h, w, C], its channels C the same at every image size, h and w growing with the "
          "image (a PyTorch port's [N, C, h, w] maps need a transpose)")


def _traced_features(backbone: Backbone, model: ConfigDict, size: int) -> Sequence[Any]:
  """The shapes of `backbone`'s output on one `size`x`size` image, checked to be four maps
  [1, h, w, C]."""
  images = jax.ShapeDtypeStruct((1, size, size, 3), compute_dtype(model))
  try:
    features = jax.eval_shape(
        lambda x: backbone.init_with_output(jax.random.key(0), x, train=False)[0], images)
  except Exception as e:
    e.add_note(f"(while checking model.backbone {model.backbone!r} on an image of "
               f"{images.shape})")
    raise
  where = f"model.backbone {model.backbone!r} given images {images.shape} returned"
  if not (isinstance(features, Sequence) and len(features) == 4):
    raise SetupError(f"{where} {_describe(features)}: a backbone returns four feature maps, "
                     "finest first (vssjax.methods.backbones.Backbone)")
  for level, feature in enumerate(features, start=1):
    shape = getattr(feature, "shape", None)
    if shape is None or len(shape) != 4 or shape[0] != 1:
      raise SetupError(f"{where} {_describe(feature)} as feature map {level}: each is "
                       "[N, h, w, C] for the N images")
  return features


def _describe(value) -> str:
  if hasattr(value, "shape"):
    return f"an array of shape {tuple(value.shape)}"
  if isinstance(value, Sequence) and not isinstance(value, str):
    return f"a {type(value).__name__} of {len(value)}"
  return f"a {type(value).__name__}"


def compute_dtype(model: ConfigDict):
  if model.dtype not in COMPUTE_DTYPES:
    raise SetupError(f"model.dtype must be one of {sorted(COMPUTE_DTYPES)}, got {model.dtype!r}")
  return COMPUTE_DTYPES[model.dtype]


def resolve_dwconv_impl(model: ConfigDict) -> str:
  """`model.dwconv_impl` resolved for the devices the programs are for (`parallel.target_platform`):
  'shifted' or 'grouped', the form of the depth-wise convs of MiT's Mix-FFN and of the DTERN and
  SD-CPC heads, whatever the backbone (MobileNetV2's strided and dilated ones are grouped convs
  always; a network with none of these refuses the setting, `refuse_dwconv_impl`). 'auto' picks
  the shifted multiply-adds on CPU, where XLA runs grouped convs ~30x slower (notes §6), and the
  grouped conv elsewhere: on an H200 it beat the shifted form in both directions (MiT-B1 bf16 at
  480x480, batch 16: forward 3018 against 2687 frames/s, training step 615 against 459;
  docs/benchmarks_device.md)."""
  impl = model.dwconv_impl
  if impl not in ("auto", "shifted", "grouped"):
    raise SetupError(f"model.dwconv_impl must be 'auto', 'shifted' or 'grouped', got {impl!r}")
  if impl == "auto":
    return "shifted" if parallel.target_platform() == "cpu" else "grouped"
  return impl


def refuse_dwconv_impl(model: ConfigDict, network: str) -> None:
  """Refuses `model.dwconv_impl` changed from 'auto' for a `network` without the depth-wise convs
  it picks the form of: it would be ignored without a word."""
  default = base_config().model.dwconv_impl
  if model.dwconv_impl != default:
    raise SetupError(f"model.dwconv_impl={model.dwconv_impl!r} picks the form of the depth-wise "
                     f"convs of MiT and the DTERN and SD-CPC heads, and {network} has none: "
                     f"leave it at {default!r}")


def build_mit(model: ConfigDict, method: str) -> MixTransformer:
  """The MiT backbone of `model.backbone` ('b0'..'b5'), with any non-empty `backbone_overrides`;
  `method` names the method in the error of a backbone that is not a MiT."""
  backbone_family(model, method, ("mit",))
  overrides = {k: tuple(v) for k, v in model.backbone_overrides.items() if v}
  if not 0.0 <= model.drop_path_rate < 1.0:
    raise SetupError(f"model.drop_path_rate={model.drop_path_rate}: a probability in [0, 1)")
  return mit(model.backbone, drop_path_rate=model.drop_path_rate, dtype=compute_dtype(model),
             dwconv_impl=resolve_dwconv_impl(model), attention_impl=_attention_impl(model),
             scan_blocks=model.scan_blocks, remat=remat_policy_name(model), **overrides)


def remat_policy_name(model: ConfigDict) -> str:
  """`model.remat`: '' or one of `layers.REMAT_POLICIES`, checked as the method is built."""
  if model.remat and model.remat not in REMAT_POLICIES:
    raise SetupError(f"model.remat={model.remat!r}: '' (keep every activation) or a "
                     f"jax.checkpoint_policies name, one of {list(REMAT_POLICIES)}")
  return model.remat


def _attention_impl(model: ConfigDict) -> str:
  """`model.attention_impl`, refused where cuDNN's fused attention cannot run: it needs an NVIDIA
  GPU and bf16 queries, and `jax.nn.dot_product_attention` would otherwise raise deep inside the
  first trace, with no word of the setting."""
  impl = model.attention_impl
  if impl not in ("xla", "cudnn"):
    raise SetupError(f"model.attention_impl must be 'xla' or 'cudnn', got {impl!r}")
  if impl == "cudnn" and parallel.target_platform() != "gpu":
    raise SetupError(f"model.attention_impl='cudnn' is cuDNN's fused attention, for NVIDIA GPUs; "
                     f"this run's devices are {parallel.target_platform()!r}: use 'xla'")
  if impl == "cudnn" and model.dtype != "bfloat16":
    raise SetupError(f"model.attention_impl='cudnn' runs bf16 attention only, and model.dtype is "
                     f"{model.dtype!r}: set model.dtype='bfloat16', or use 'xla'")
  return impl


def _refuse_mit_settings(model: ConfigDict) -> None:
  """Refuses the MiT-only settings changed from their defaults where the backbone is another (a
  ResNet, MobileNetV2): they would be ignored without a word."""
  defaults = base_config().model
  for field in ("scan_blocks", "attention_impl", "drop_path_rate"):
    default = defaults[field]
    if model[field] != default:
      raise SetupError(f"model.{field}={model[field]!r} is a MiT setting, and model.backbone "
                       f"{model.backbone!r} is not a MiT: leave it at {default!r}")
  for name, value in model.backbone_overrides.items():
    if value:
      raise SetupError(f"model.backbone_overrides.{name}={tuple(value)} is a MiT setting, and "
                       f"model.backbone {model.backbone!r} is not a MiT: leave it at ()")
