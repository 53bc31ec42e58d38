"""Methods, chosen by `config.method.name`."""

from __future__ import annotations

import importlib

from vssjax.configs_lib import ConfigDict
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
  name = config.method.name
  if name not in _REGISTRY:
    raise ValueError(f"unknown method.name {name!r}; known: {sorted(_REGISTRY)}")
  module_name, class_name = _REGISTRY[name].split(":")
  return getattr(importlib.import_module(module_name), class_name)(config)
