"""The `config.model` settings every method reads the same way: which backbone family
`model.backbone` names, the compute dtype, the depth-wise conv and attention implementations, and
the MiT backbone they configure.

Each method builds its own network around the backbone (an all-MLP head, a video head, a PSPNet);
what a backbone name means, and which settings apply to it, is decided here once, so that a
setting is refused the same way whichever method it is given to.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vssjax.configs_lib import ConfigDict, base_config
from vssjax.errors import SetupError
from vssjax.models.mit import MIT_VARIANTS, mit, MixTransformer
from vssjax.models.resnet import RESNET_NAMES

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MOBILENET_V2 = "mobilenet_v2"
# The names `model.backbone` takes, per family; a method takes one or more families.
FAMILIES = {"mit": tuple(MIT_VARIANTS), "resnet": tuple(RESNET_NAMES),
            "mobilenet_v2": (MOBILENET_V2,)}


def backbone_family(model: ConfigDict, method: str, families: tuple[str, ...]) -> str:
  """The family of `model.backbone` ('mit', 'resnet' or 'mobilenet_v2'), one of the `families`
  `method` takes. A name outside them, or a MiT setting changed on another family (it would be
  ignored without a word), is a SetupError naming the field."""
  for family in families:
    if model.backbone in FAMILIES[family]:
      if family != "mit":
        _refuse_mit_settings(model)
      return family
  names = [name for family in families for name in FAMILIES[family]]
  raise SetupError(f"model.backbone={model.backbone!r}: {method} takes one of {names}")


def compute_dtype(model: ConfigDict):
  if model.dtype not in COMPUTE_DTYPES:
    raise SetupError(f"model.dtype must be one of {sorted(COMPUTE_DTYPES)}, got {model.dtype!r}")
  return COMPUTE_DTYPES[model.dtype]


def resolve_dwconv_impl(model: ConfigDict) -> str:
  """`model.dwconv_impl` resolved for this run's devices: 'shifted' or 'grouped', the form of the
  depth-wise convs of MiT's Mix-FFN and of the DTERN and SD-CPC heads, whatever the backbone
  (MobileNetV2's strided and dilated ones are grouped convs always; a network with none of these
  refuses the setting, `refuse_dwconv_impl`). 'auto' picks the shifted multiply-adds on CPU,
  where XLA runs grouped convs ~30x slower (notes §6), and the grouped conv elsewhere: on an
  H200 it beat the shifted form in both directions (MiT-B1 bf16 at 480x480, batch 16: forward 3018
  against 2687 frames/s, training step 615 against 459; docs/benchmarks_device.md)."""
  impl = model.dwconv_impl
  if impl not in ("auto", "shifted", "grouped"):
    raise SetupError(f"model.dwconv_impl must be 'auto', 'shifted' or 'grouped', got {impl!r}")
  if impl == "auto":
    return "shifted" if jax.default_backend() == "cpu" else "grouped"
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
             scan_blocks=model.scan_blocks, **overrides)


def _attention_impl(model: ConfigDict) -> str:
  """`model.attention_impl`, refused where cuDNN's fused attention cannot run: it needs an NVIDIA
  GPU and bf16 queries, and `jax.nn.dot_product_attention` would otherwise raise deep inside the
  first trace, with no word of the setting."""
  impl = model.attention_impl
  if impl not in ("xla", "cudnn"):
    raise SetupError(f"model.attention_impl must be 'xla' or 'cudnn', got {impl!r}")
  if impl == "cudnn" and jax.default_backend() != "gpu":
    raise SetupError(f"model.attention_impl='cudnn' is cuDNN's fused attention, for NVIDIA GPUs; "
                     f"this run's devices are {jax.default_backend()!r}: use 'xla'")
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
