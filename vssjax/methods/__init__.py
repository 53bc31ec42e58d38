"""Methods, chosen by `config.method.name`: a short name below, or the import path
"package.module:ClassName" of a `Method` subclass of one's own (docs/extending.md)."""

from __future__ import annotations

import traceback

import jax

from vssjax import plugins
from vssjax.configs_lib import ConfigDict
from vssjax.errors import SetupError
from vssjax.methods.base import Method

# name -> "module:class"; imported lazily so one method's dependencies never slow another's start.
_REGISTRY = {
    "segformer": "vssjax.methods.segformer:SegFormerMethod",
    "dtern": "vssjax.methods.dtern:DTERNMethod",
    "sdcpc": "vssjax.methods.sdcpc:SDCPCMethod",
    "dcfm": "vssjax.methods.dcfm:DCFMMethod",
    "etc": "vssjax.methods.etc:ETCMethod",
}


def get_method(config: ConfigDict) -> Method:
  """The method of `config`. Sets JAX's float32 matmul precision from
  `config.model.matmul_precision` first, so every program of the method is traced with it, and
  again once the method is built: one that builds another (ETC's teacher, from the teacher's own
  config) would otherwise leave the other's precision for its own programs."""
  precision = config.model.matmul_precision
  set_matmul_precision(precision)
  method_class = plugins.resolve_class(config.method.name, _REGISTRY, Method, "method.name")
  try:
    method = method_class(config)
  except AttributeError as error:
    field = _missing_config_field(error)
    if field is None:
      raise
    name = config.method.name
    configs = f"configs/{name}/" if name in _REGISTRY else "docs/extending.md"
    raise SetupError(
        f"method.name={name!r}: this config has no field {field}, which the method reads: start "
        f"from a config written for the method ({configs}), which sets its fields") from None
  set_matmul_precision(precision)
  return method


def _missing_config_field(error: AttributeError) -> str | None:
  """The field name when `error` is a ConfigDict's for a field it lacks (a config of one method
  run with `--config.method.name` of another: the AttributeError "'cam_kernels'"); None for any
  other AttributeError, which is a bug to show whole."""
  frames = traceback.extract_tb(error.__traceback__)
  if not frames or "ml_collections" not in frames[-1].filename:
    return None
  if not isinstance(error.__context__, KeyError) or not error.__context__.args:
    return None
  return str(error.__context__.args[0])


def set_matmul_precision(precision: str) -> None:
  """Process-wide `jax_default_matmul_precision`; '' = JAX's default for the platform."""
  try:
    jax.config.update("jax_default_matmul_precision", precision or None)
  except ValueError as error:
    raise SetupError(f"model.matmul_precision={precision!r}: {error}") from error
